#!/usr/bin/env bash
# Runs one cargo-fuzz target for a bounded time on the stable toolchain.
#   scripts/fuzz.sh TARGET SECONDS [extra libFuzzer flags]
# TARGET: scanner, decoder, preamble or config (bodies in src/fuzzing.rs). Needs cargo-fuzz
# (`cargo install cargo-fuzz`). The committed seeds in fuzz/corpus/TARGET/ are read, never
# written: new inputs go to $FUZZ_WORK/TARGET/corpus, crashes to $FUZZ_WORK/TARGET/artifacts/.
# Reproduce a crash: scripts/fuzz.sh TARGET 0 path/to/crash-file
# Environment: FUZZ_WORK (default fuzz/work), FUZZ_SANITIZER (default none: the parsers are safe
# Rust, and without ASan a run gets about twice the executions; use "address" to check unsafe code).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags]}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags]}
shift 2
case "$target" in scanner|decoder|preamble|config) ;; *) echo "unknown target $target" >&2; exit 2;; esac
work=${FUZZ_WORK:-$ROOT/fuzz/work}/$target
mkdir -p "$work/corpus" "$work/artifacts"

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov passes); stable accepts them this way.
export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own target directory; reuse the BoringSSL the main release build made
# instead of building it again (none of the targets calls it, but the crate links it).
bssl=$(ls -d "$ROOT"/target/release/build/boring-sys-*/out/build 2>/dev/null | while read -r d; do
    [ -f "$d/libssl.a" ] && echo "$d"; done | head -1)
if [ -n "$bssl" ] && [ -z "${BORING_BSSL_PATH:-}" ]; then
    export BORING_BSSL_PATH=$bssl
    BORING_BSSL_INCLUDE_PATH=$(cd "$bssl/../boringssl/include" && pwd)
    export BORING_BSSL_INCLUDE_PATH
fi

cd "$ROOT/fuzz"
flags=(-s "${FUZZ_SANITIZER:-none}" --debug-assertions)
cargo fuzz build "${flags[@]}" "$target"
dict=()
[ -f "$ROOT/fuzz/$target.dict" ] && dict=(-dict="$ROOT/fuzz/$target.dict")
if [ "$#" -gt 0 ] && [ -f "$1" ]; then
    # Reproduce: run the given files once.
    exec cargo fuzz run "${flags[@]}" "$target" "$@"
fi
# -timeout: an input taking more than 10 s is reported as a hang, not waited for.
exec cargo fuzz run "${flags[@]}" "$target" "$work/corpus" "$ROOT/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "${dict[@]}" "$@"
