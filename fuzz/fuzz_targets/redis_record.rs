//! Fuzz target: `sessionauth::fuzzing::redis_record` (see `src/fuzzing.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionauth::fuzzing::redis_record(data));
