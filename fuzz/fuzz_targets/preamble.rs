#![no_main]
// The body and its invariants live in the library (rlinkd::fuzzing::preamble), where
// tests/fuzz_corpus.rs runs them on fuzz/corpus/preamble/ in every CI run.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rlinkd::fuzzing::preamble(data));
