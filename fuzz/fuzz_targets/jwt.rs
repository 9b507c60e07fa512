//! Fuzz target: `sessionauth::fuzzing::jwt` (see `src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionauth::fuzzing::jwt(data));
