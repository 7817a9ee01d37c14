#!/usr/bin/env bash
# The second command of the README and what CI runs (.ci/run): installs what is missing, checks
# formatting and lints, runs every Rust test (unit, property, in-memory QUIC, loopback integration
# with real rlinkd processes) and the end-to-end test with a real Crossbar cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
started=$(date +%s)

bash scripts/deps.sh
echo "== format and lints"
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
echo "== Rust tests"
cargo build --release
# Every test bounds its own waits; this bound turns a hang nobody foresaw into a failure.
# The integration tests run twice: every node with 1 shard, then with 2 (one connection per
# shard pair, steering, hand-overs).
RLINKD_TEST_SHARDS=1 timeout --kill-after=30 1500 cargo test --release
echo "== integration tests again, 2 shards per node"
RLINKD_TEST_SHARDS=2 timeout --kill-after=30 1200 cargo test --release --test '*'
echo "== a few integration tests on the io_uring backend (io = \"uring\"), 2 shards per node"
RLINKD_TEST_IO=uring RLINKD_TEST_SHARDS=2 timeout --kill-after=30 600 \
    cargo test --release --test uring --test relay --test shards --test drain
echo "== Crossbar end-to-end"
bash scripts/crossbar-e2e.sh target/release/rlinkd
echo "all tests passed in $(( $(date +%s) - started )) s"
