#![no_main]
//! See chatroom_fuzzing::driver.

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzzing::driver(data));
