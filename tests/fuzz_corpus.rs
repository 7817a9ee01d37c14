//! Runs every fuzz target body (src/fuzzing.rs) on its committed seed corpus in
//! fuzz/corpus/<target>/, so the invariants the fuzzers check hold in every CI run, and a crash
//! the fuzzer found stays fixed once its input is committed there.

use std::path::Path;

use rlinkd::fuzzing;

fn run_corpus(target: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // A failing seed names itself; the panic message says which invariant broke.
        let result = std::panic::catch_unwind(|| assert!(fuzzing::run(target, &data)));
        assert!(result.is_ok(), "{target}: seed {} fails", file.display());
    }
}

#[test]
fn scanner_seeds() {
    run_corpus("scanner");
}

#[test]
fn decoder_seeds() {
    run_corpus("decoder");
}

#[test]
fn preamble_seeds() {
    run_corpus("preamble");
}

#[test]
fn config_seeds() {
    run_corpus("config");
}

/// The documented config files are in the config corpus and accepted, so the fuzzer starts
/// from files that reach the validation rules (a seed that is refused at once explores little).
#[test]
fn config_seeds_include_accepted_files() {
    for name in [
        "docs_config_example.toml",
        "readme_node_a.toml",
        "node_b_accepts_only.toml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/config")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("seed");
        assert!(!fuzzing::needs_name_lookup(&text), "{name}");
        let parsed = rlinkd::config::NodeConfig::from_toml_str(&text, Path::new("/etc/rlinkd"));
        assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
    }
}

#[test]
fn every_target_has_a_corpus() {
    for t in fuzzing::TARGETS {
        assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(t)
            .is_dir());
    }
}
