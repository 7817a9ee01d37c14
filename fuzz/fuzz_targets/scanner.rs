#![no_main]
// The body and its invariants live in the library (rlinkd::fuzzing::scanner), where
// tests/fuzz_corpus.rs runs them on fuzz/corpus/scanner/ in every CI run.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rlinkd::fuzzing::scanner(data));
