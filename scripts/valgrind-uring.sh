#!/usr/bin/env bash
# The io_uring integration tests with every rlinkd node under valgrind memcheck: tests/uring.rs
# (links echo verified data, ICMP on a dead peer, SIGTERM with traffic on the ring),
# tests/relay.rs (frames of every size, 200 links each way, GSO, half-close, refusals) and
# tests/drain.rs (SIGTERM on busy links), each node on io = "uring". Skipped: the drain test
# that bounds an idle node's exit to 1 s (a product bound, meaningless 20-50 times slower). The test binaries themselves run natively; only the nodes run under
# valgrind (RLINKD_TEST_WRAPPER, prefixed to every node's command line by tests/common). The
# nodes are built with --no-default-features: on glibc's malloc, which memcheck tracks, instead
# of the release binary's mimalloc (rebuilds the rlinkd crate; the next plain build flips back).
#
#   scripts/valgrind-uring.sh                 # the three files, 1 shard per node
#   scripts/valgrind-uring.sh --test uring    # other cargo test arguments replace the default set
#
# Environment: RLINKD_TEST_SHARDS (default 1), RLINKD_TEST_TIME_SCALE (default 10: the shared
# test helpers wait 10 times longer), VALGRIND_OUT (default build/valgrind-uring: one log per
# node process, vg-PID.log). Exit status: non-zero if a test failed or valgrind reported an
# error in any node (a node that exits reports through --error-exitcode, which the tests that
# check the exit status see; nodes killed by the tests are checked in their logs here).
#
# Two things make io_uring and valgrind 3.19 work together (perf/results/valgrind-uring-*.md):
# - RLINKD_URING_WAIT_CAP=10ms: valgrind does not treat io_uring_enter as a blocking system call
#   and keeps its global lock while a shard waits in it, so no other thread (signals,
#   supervisor, admin endpoint) ever runs; the cap bounds each wait and the shard yields its
#   thread between turns. The same setting zeroes the room of each link's read on the ring
#   (heap memory the kernel fills without a system call valgrind sees: unzeroed, every byte
#   read would look uninitialised).
# - Memory the kernel writes through the rings (completions, provided buffers) is written
#   without a system call valgrind sees. It is anonymous or ring mappings that valgrind already
#   counts as defined, so this gives no false "uninitialised" reports; it does mean that what
#   the kernel reads or writes through the rings is not checked at all. scripts/valgrind-uring.supp
#   holds the suppressions (each with its reason); it is passed only if it exists.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }

out=${VALGRIND_OUT:-build/valgrind-uring}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

vg=(valgrind --tool=memcheck --error-exitcode=99 --fair-sched=yes
    --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
    --num-callers=30 "--log-file=$out/vg-%p.log")
supp=scripts/valgrind-uring.supp
if [[ -f $supp ]]; then
    vg+=("--suppressions=$ROOT/$supp")
fi

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then
    args=(--test uring --test relay --test drain)
fi

export RLINKD_TEST_IO=uring
export RLINKD_TEST_SHARDS=${RLINKD_TEST_SHARDS:-1}
export RLINKD_TEST_TIME_SCALE=${RLINKD_TEST_TIME_SCALE:-10}
export RLINKD_URING_WAIT_CAP=10ms
export RLINKD_TEST_WRAPPER="${vg[*]}"

# glibc's malloc, not mimalloc (the default feature): memcheck sees into glibc's heap (invalid
# accesses, uninitialised bytes, leaks) and not into mimalloc's.
cargo build --release --tests --no-default-features
started=$(date +%s)
status=0
# One test at a time: each valgrind'ed node needs a core of its own on a 2-core machine.
timeout --kill-after=30 3000 cargo test --release --no-default-features "${args[@]}" -- --test-threads=1 \
    --skip an_idle_node_exits_within_one_second || status=$?
echo "tests finished in $(( $(date +%s) - started )) s (exit $status)"

# Every error memcheck reports starts with one of these (a killed node never prints its
# summary, but each error is in its log as it happens).
pattern='^==[0-9]+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function|[0-9,]+ bytes in [0-9,]+ blocks are definitely lost|Process terminating|valgrind: Unrecognised instruction)|vex amd64->IR: unhandled'
logs=("$out"/vg-*.log)
errors=0
for log in "${logs[@]}"; do
    [[ -f $log ]] || continue
    n=$(grep -cE "$pattern" "$log" || true)
    if [[ $n -gt 0 ]]; then
        errors=$((errors + n))
        echo "== $log: $n error report(s)"
        grep -E -A12 "$pattern" "$log" | head -60
    fi
done
summaries=$(grep -h "ERROR SUMMARY" "${logs[@]}" 2>/dev/null | sed 's/^==[0-9]*== //' | sort | uniq -c || true)
echo "node processes under valgrind: ${#logs[@]}; with a summary (clean exit):"
echo "${summaries:-  none}"
echo "error reports in the logs: $errors (logs in $out)"
if [[ $errors -gt 0 && $status -eq 0 ]]; then
    status=1
fi
exit "$status"
