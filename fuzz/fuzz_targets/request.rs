//! Fuzz target: `sessionauth::fuzzing::request` (see `src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionauth::fuzzing::request(data));
