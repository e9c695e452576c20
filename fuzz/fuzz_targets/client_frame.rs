#![no_main]
//! See chatroom_fuzzing::client_frame.

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzzing::client_frame(data));
