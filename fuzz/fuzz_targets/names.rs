#![no_main]
//! See chatroom_fuzzing::names.

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzzing::names(data));
