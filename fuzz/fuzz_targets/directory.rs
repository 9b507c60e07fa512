//! Fuzz target: `sessionauth::fuzzing::directory` (see `src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionauth::fuzzing::directory(data));
