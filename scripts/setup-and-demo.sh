#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds rlinkd (release) and runs the
# demo: two rlinkd nodes on loopback, a built-in RawSocket echo router behind node b and a client
# in front of node a; it prints what crossed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/deps.sh
cargo build --release
exec target/release/rlinkd demo --dir build/demo "$@"
