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
# The whole integration suite runs on both I/O backends, each with every node on 1 shard and
# on 2 (one connection per shard pair, steering, hand-overs): 2 to 2.5 minutes a pass on 2
# cores. The first pass (mio, 1 shard) also runs the unit and doc tests. Test files that
# start no node through tests/common (in-memory QUIC and shard-core tests, fuzz seeds) run in
# every pass too: they take about 5 s, and an explicit list of the others would silently leave
# out the next test file added.
RLINKD_TEST_SHARDS=1 timeout --kill-after=30 1500 cargo test --release
for combo in "mio 2" "uring 1" "uring 2"; do
    read -r io shards <<<"$combo"
    echo "== integration tests, io = \"$io\", $shards shard(s) per node"
    RLINKD_TEST_IO=$io RLINKD_TEST_SHARDS=$shards timeout --kill-after=30 1200 \
        cargo test --release --test '*'
done
echo "== Crossbar end-to-end"
bash scripts/crossbar-e2e.sh target/release/rlinkd
echo "all tests passed in $(( $(date +%s) - started )) s"
