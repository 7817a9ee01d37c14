#!/usr/bin/env bash
# Where rlinkd's CPU goes: profile both rlinkd processes of a quic `rlinkd bench` run.
#
#   perf/profile.sh WORKLOAD [--udp-payload N] [--no-gso] [--quic-leg unix|tcp] [--io mio|uring]
#                            [--shards N]
#
# Runs `rlinkd bench --workload WORKLOAD --transport quic --duration 8s --rounds 1 --mtu 1500`
# (--udp-payload overrides the MTU), and while it measures,
# `perf record -e cpu-clock -g --call-graph dwarf` on both `rlinkd run` children for RECORD_S
# seconds. Writes into build/perf/WORKLOAD/ (WORKLOAD-IO/ with --io): perf.data, perf.script.txt, stacks.folded,
# classify.txt + classify.json (perf/classify.py), flamegraph.svg, bench.txt (the bench's own
# table: it must say "verified"), pids.txt.
#
# Environment: RLINKD (binary, default target/release/rlinkd), DURATION (bench, default 8s),
# RECORD_S (default 5), FREQ (default 999), STACK (dwarf stack bytes copied per sample, default
# 32768: quiche::Connection::recv and rlinkd's QuicDriver::recv have 16 KiB frames, and 8 KiB stops
# the unwind there), MINWIDTH (flamegraph --minwidth in pixels, default 0.1).
set -euo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
WORKLOAD=$1
shift
EXTRA=()
IO=""
while [ $# -gt 0 ]; do
    case $1 in
        --udp-payload) EXTRA+=(--udp-payload "$2"); shift 2 ;;
        --udp-payload=*) EXTRA+=("$1"); shift ;;
        --no-gso) EXTRA+=(--no-gso); shift ;;
        --quic-leg) EXTRA+=(--quic-leg "$2"); shift 2 ;;
        --quic-leg=*) EXTRA+=("$1"); shift ;;
        --io) EXTRA+=(--io "$2"); IO=$2; shift 2 ;;
        --shards) EXTRA+=(--shards "$2"); shift 2 ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RLINKD=${RLINKD:-target/release/rlinkd}
DURATION=${DURATION:-8s}
RECORD_S=${RECORD_S:-5}
FREQ=${FREQ:-999}
STACK=${STACK:-32768}
MINWIDTH=${MINWIDTH:-0.1}
OUT=build/perf/$WORKLOAD${IO:+-$IO}
TOOLS=build/tools

# perf: Debian's linux-perf (works for any kernel version, without matching linux-tools).
if ! command -v perf >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y linux-perf >/dev/null || { apt-get update >/dev/null && apt-get install -y linux-perf >/dev/null; }
    else
        echo "perf is missing: install linux-perf (Debian) or linux-tools (Ubuntu)" >&2
        exit 1
    fi
fi
# inferno (Rust port of FlameGraph; Debian has no FlameGraph package): into build/tools.
export PATH="$ROOT/$TOOLS/bin:$PATH"
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
    echo "installing inferno into $TOOLS (cargo install, about 1.5 minutes)" >&2
    cargo install inferno --locked --root "$TOOLS" >/dev/null
fi
if [ ! -x "$RLINKD" ]; then
    cargo build --release
fi

rm -rf "$OUT"
mkdir -p "$OUT"

# A bench folder of its own, so a concurrent `rlinkd bench` in build/bench is not disturbed.
# One run of one quic process pair: one round, one MTU.
"$RLINKD" bench --workload "$WORKLOAD" --transport quic --duration "$DURATION" --rounds 1 --mtu 1500 \
    --dir "$OUT/bench" --json "$OUT/bench.json" "${EXTRA[@]}" >"$OUT/bench.txt" 2>&1 &
BENCH=$!
trap 'kill $BENCH 2>/dev/null || true' EXIT

# Both nodes: children of the bench named rlinkd with `run --config DIR/{a,b}.toml`.
declare -A NAME=()
for _ in $(seq 1 100); do
    NAME=()
    for p in $(pgrep -P "$BENCH" 2>/dev/null || true); do
        cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null || true)
        case $cmd in
            *" run --config "*/a.toml*) NAME[$p]=rlinkd-a ;;
            *" run --config "*/b.toml*) NAME[$p]=rlinkd-b ;;
        esac
    done
    [ ${#NAME[@]} -eq 2 ] && break
    kill -0 $BENCH 2>/dev/null || { cat "$OUT/bench.txt" >&2; echo "bench ended before both nodes started" >&2; exit 1; }
    sleep 0.1
done
[ ${#NAME[@]} -eq 2 ] || { echo "did not find both rlinkd nodes under bench pid $BENCH" >&2; exit 1; }
PIDS=$(IFS=,; echo "${!NAME[*]}")
NAMES=$(for p in "${!NAME[@]}"; do printf '%s=%s,' "$p" "${NAME[$p]}"; done)
NAMES=${NAMES%,}
echo "$NAMES" >"$OUT/pids.txt"

# The nodes connect, the client opens its links, then the measured phase starts: skip ~1.5 s.
sleep 1.5
echo "perf record: $RECORD_S s on $NAMES ($FREQ Hz cpu-clock, dwarf $STACK B)" >&2
# -m: a larger ring buffer (8 MiB) so dwarf samples are not lost when perf falls behind.
perf record -e cpu-clock -F "$FREQ" -g --call-graph "dwarf,$STACK" -m 2048 -p "$PIDS" \
    -o "$OUT/perf.data" -- sleep "$RECORD_S" 2>"$OUT/perf-record.log" >/dev/null
wait $BENCH || { cat "$OUT/bench.txt" >&2; echo "bench failed" >&2; exit 1; }
trap - EXIT
# The bench exits non-zero when a run fails verification; say so in the output anyway.
grep -q "NOT VERIFIED" "$OUT/bench.txt" && { echo "bench run not verified" >&2; exit 1; }

perf script -i "$OUT/perf.data" --no-inline -F comm,pid,tid,time,period,event,ip,sym,dso \
    >"$OUT/perf.script.txt" 2>"$OUT/perf-script.log"
python3 perf/classify.py "$OUT/perf.script.txt" --names "$NAMES" --json "$OUT/classify.json" \
    | tee "$OUT/classify.txt"

# Folded stacks with the process as root frame (rlinkd-a / rlinkd-b), kernel frames marked _[k].
inferno-collapse-perf --pid --all "$OUT/perf.script.txt" >"$OUT/stacks.raw.folded"
sed_args=()
for p in "${!NAME[@]}"; do sed_args+=(-e "s/^rlinkd-$p;/${NAME[$p]};/" -e "s/^rlinkd-$p\/[0-9]*;/${NAME[$p]};/"); done
sed "${sed_args[@]}" "$OUT/stacks.raw.folded" >"$OUT/stacks.folded"
rm -f "$OUT/stacks.raw.folded"
# The quic row: "quic [Nsh] [io] MTU MB/s frames/s ...".
GOODPUT=$(awk '$1 == "quic" { for (i = 2; i < NF; i++) if ($i == 1500 || $i == 9000) { print $(i + 1) " MB/s, " $(i + 2) " frames/s"; exit } }' "$OUT/bench.txt")
inferno-flamegraph --minwidth "$MINWIDTH" --width 1600 --hash \
    --title "rlinkd $WORKLOAD over quic: both rlinkd processes, $RECORD_S s cpu-clock" \
    --subtitle "bench ${EXTRA[*]:-default 1452 B UDP payload}; $GOODPUT while profiled" \
    "$OUT/stacks.folded" >"$OUT/flamegraph.svg"

echo
grep -E "^  (quic|bulk|events)|verified|FAILED" "$OUT/bench.txt" | head -5 || true
echo "written: $OUT/{perf.data,perf.script.txt,stacks.folded,classify.txt,classify.json,flamegraph.svg}"
