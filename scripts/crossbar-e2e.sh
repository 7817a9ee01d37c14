#!/usr/bin/env bash
# End-to-end test: a real two-node Crossbar.io cluster whose rlinks run through rlinkd.
#
#   scripts/crossbar-e2e.sh [--direct] [RLINKD_BINARY]
#
#   RLINKD_BINARY  path to rlinkd (default: target/release/rlinkd under the repo root)
#   --direct       no rlinkd: the Crossbar rlinks dial each other's rlink listeners directly
#                  (validates the Crossbar configs, keys, roles and clients)
#
# Topology (rlinkd mode); every rlink is a plain WAMP RawSocket (CBOR) connection:
#
#   Crossbar A --rlink "to-b"--> unix:run/a-to-b.sock  rlinkd A ==QUIC==> rlinkd B --tcp--> Crossbar B rlink listener
#   Crossbar B --rlink "to-a"--> tcp:127.0.0.1:LINK_B  rlinkd B ==QUIC==> rlinkd A --unix--> Crossbar A rlink listener
#
# Checks (autobahn clients, scripts/crossbar_e2e.py): subscriber+callee on one node, publisher+caller
# on the other; events and calls must cross, in both directions; then rlinkd A is killed and
# restarted (SIGTERM, then again after a SIGKILL), the rlinks must come back by themselves, and
# the checks run again each time.
#
# Work dir build/crossbar-e2e/ (configs, certs, logs/) is wiped at the start and kept afterwards.
# Needs: python3 (with venv), PyPI access on the first run (build/venv-crossbar is reused).
# Environment: CHECK_TIMEOUT (s, default 30), RLINK_TIMEOUT (s, default 45), GLOBAL_TIMEOUT (s,
#              default 480), RUST_LOG (rlinkd, default info),
#              CROSSBAR_VERSION (default 26.10.1; falls back to the latest if that does not install).
set -euo pipefail

SCRIPT_START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=rlinkd
RLINKD=""
for arg in "$@"; do
    case "$arg" in
        --direct) MODE=direct ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "crossbar-e2e: unknown option $arg" >&2; exit 2 ;;
        *) RLINKD=$arg ;;
    esac
done
RLINKD=${RLINKD:-$ROOT/target/release/rlinkd}
case "$RLINKD" in /*) ;; *) RLINKD=$PWD/$RLINKD ;; esac

WORK=$ROOT/build/crossbar-e2e
VENV=$ROOT/build/venv-crossbar
PY=$VENV/bin/python
HELPER=$ROOT/scripts/crossbar_e2e.py
CHECK_TIMEOUT=${CHECK_TIMEOUT:-30}
RLINK_TIMEOUT=${RLINK_TIMEOUT:-45}
CROSSBAR_VERSION=${CROSSBAR_VERSION:-26.10.1}
GLOBAL_TIMEOUT=${GLOBAL_TIMEOUT:-480}   # cap before cleanup starts; cleanup adds < 60 s

PASSED=0
FAILED=0
FAILURES=()
declare -A PIDS=()   # name -> pid (each started with setsid: pid == process group id)
declare -A LOGS=()   # name -> log file
WATCHDOG=""

log() { echo "crossbar-e2e: $*"; }
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); echo "FAIL $*"; }
elapsed() { echo $(( $(date +%s) - SCRIPT_START )); }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --- process handling -------------------------------------------------------------------------

# is_alive PID: true while the process exists and is not a zombie
is_alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# start_bg NAME LOGFILE CMD...: start CMD in its own session / process group
start_bg() {
    local name=$1 logfile=$2; shift 2
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    PIDS[$name]=$pid
    LOGS[$name]=$logfile
    log "started $name (pid $pid): $*"
}

# stop_bg NAME [GRACE [SIGNAL]]: signal (default TERM) the process group, SIGKILL after GRACE s, reap
stop_bg() {
    local name=$1 grace=${2:-10} sig=${3:-TERM}
    local pid=${PIDS[$name]:-}
    [ -n "$pid" ] || return 0
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < grace * 10; i++)); do
        is_alive "$pid" || break
        sleep 0.1
    done
    if is_alive "$pid"; then
        log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # what is left of the group (e.g. Crossbar worker processes)
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

show_logs() {
    local name f
    for name in crossbar-a crossbar-b; do
        f=${LOGS[$name]:-}
        [ -n "$f" ] && [ -f "$f" ] || continue
        echo "----- $f: rlink / error lines (last 40) -----"
        grep -aiE 'rlink|error|exception|traceback|warn|fail' "$f" | grep -av "x_cb_node" | tail -n 40 | cut -c1-400
        echo "----- tail of $f -----"
        tail -n 25 "$f" | cut -c1-400
    done
    # including the logs of rlinkd A before its restarts
    for f in "$WORK"/logs/rlinkd-a.[0-9].log "${LOGS[rlinkd-a]:-}" "${LOGS[rlinkd-b]:-}"; do
        [ -n "$f" ] && [ -f "$f" ] || continue
        echo "----- tail of $f -----"
        tail -n 60 "$f" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400
    done
    if [ -s "$WORK/logs/checks.stderr" ]; then
        echo "----- tail of $WORK/logs/checks.stderr -----"
        tail -n 30 "$WORK/logs/checks.stderr"
    fi
    echo "----- end of logs -----"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local name
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
        show_logs   # while everything still runs: the logs show the failing state, not the shutdown
    fi
    # Crossbar first (so it does not log reconnect noise about the relays), then rlinkd
    for name in crossbar-a crossbar-b rlinkd-a rlinkd-b; do
        [ -n "${PIDS[$name]:-}" ] && stop_bg "$name" 8
    done
    for name in "${!PIDS[@]}"; do stop_bg "$name" 5; done
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ]; then
        FAILED=$((FAILED + 1))
        FAILURES+=("script aborted (exit status $rc)")
        echo "FAIL script aborted (exit status $rc)"
    fi
    if [ "$FAILED" -ne 0 ]; then
        log "failures:"
        local f
        for f in "${FAILURES[@]}"; do echo "  - $f"; done
        log "logs: $WORK/logs"
    fi
    [ -n "$WATCHDOG" ] && kill -- "-$WATCHDOG" 2>/dev/null
    log "mode $MODE, $(elapsed) s"
    echo "crossbar-e2e: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && exit 0
    exit 1
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (global timeout ${GLOBAL_TIMEOUT}s?)"; exit 124' TERM

# global watchdog: after GLOBAL_TIMEOUT seconds SIGTERM the script and the `timeout` commands it
# is waiting on (bash runs the TERM trap only once the foreground command returns)
setsid bash -c '
    sleep "$1"; kill -TERM "$2"
    for f in /proc/[0-9]*/stat; do
        read -r p c s pp _ <"$f" 2>/dev/null || continue
        [ "$pp" = "$2" ] && [ "$c" = "(timeout)" ] && kill -TERM "$p"
    done' watchdog "$GLOBAL_TIMEOUT" "$$" >/dev/null 2>&1 </dev/null &
WATCHDOG=$!

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s; 0 if it succeeded in time
wait_for() {
    local secs=$1 what=$2; shift 2
    local end=$(( $(date +%s) + secs ))
    while [ "$(date +%s)" -lt "$end" ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "timed out after ${secs}s waiting for $what"
    return 1
}

proc_alive() { is_alive "${PIDS[$1]}"; }
# tcp_listening PORT...: every PORT has a listening socket on 127.0.0.1 (no connection is made:
# a probe connection to an rlinkd link endpoint would itself open a link)
tcp_listening() {
    local p
    for p in "$@"; do
        grep -q ":$(printf '%04X' "$p") 00000000:0000 0A" /proc/net/tcp || return 1
    done
}

# --- 1. Crossbar venv -------------------------------------------------------------------------

if [ -x "$VENV/bin/crossbar" ] && "$PY" -c 'import crossbar, autobahn' >/dev/null 2>&1; then
    log "using existing venv $VENV ($("$PY" -c 'import crossbar; print(crossbar.__version__)' 2>/dev/null || echo '?'))"
else
    log "creating venv $VENV and installing crossbar (a NumPy traceback during install is harmless)"
    mkdir -p "$ROOT/build"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    if ! timeout 420 "$VENV/bin/pip" install --disable-pip-version-check -q "crossbar==$CROSSBAR_VERSION"; then
        log "crossbar==$CROSSBAR_VERSION did not install; trying the latest crossbar"
        timeout 420 "$VENV/bin/pip" install --disable-pip-version-check -q crossbar
    fi
    "$PY" -c 'import crossbar, autobahn' || { fail "crossbar venv: import crossbar/autobahn failed"; exit 1; }
fi
CROSSBAR=$VENV/bin/crossbar

# --- 2. work dir, ports, keys, configs, certs ----------------------------------------------------------

rm -rf "$WORK"
mkdir -p "$WORK/run" "$WORK/logs" "$WORK/a/.crossbar" "$WORK/b/.crossbar"
RUN=$WORK/run
if [ ${#RUN} -gt 80 ]; then
    log "work dir path too long for Unix socket paths (${#RUN} > 80 chars): $RUN"
    fail "setup: Unix socket path too long"
    exit 1
fi

read -r P_CLIENT_A P_CLIENT_B P_RLINK_B P_QUIC_A P_QUIC_B P_LINK_B < <(timeout 20 "$PY" "$HELPER" freeports 6)
log "ports: clients A=$P_CLIENT_A B=$P_CLIENT_B, crossbar B rlink listener=$P_RLINK_B, quic A=$P_QUIC_A B=$P_QUIC_B, rlinkd B link=$P_LINK_B"

# node keys, made by Crossbar's own key code (crossbar.common.key), before the first start
{ read -r KEY_A; read -r KEY_B; } < <(timeout 60 "$PY" "$HELPER" keys "$WORK/a/.crossbar" node-a "$WORK/b/.crossbar" node-b | tail -n 2)
[[ "$KEY_A" =~ ^[0-9a-f]{64}$ && "$KEY_B" =~ ^[0-9a-f]{64}$ ]] || { fail "setup: node keys ($KEY_A / $KEY_B)"; exit 1; }
log "node keys: A=$KEY_A B=$KEY_B"

# Crossbar's own rlink listeners: A on a Unix socket, B on TCP
A_RLINK_LISTEN="unix:$RUN/a-rlink.sock"
B_RLINK_LISTEN="tcp:127.0.0.1:$P_RLINK_B"
if [ "$MODE" = direct ]; then
    A_DIALS=$B_RLINK_LISTEN
    B_DIALS=$A_RLINK_LISTEN
else
    A_DIALS="unix:$RUN/a-to-b.sock"          # rlinkd A's link endpoint
    B_DIALS="tcp:127.0.0.1:$P_LINK_B"        # rlinkd B's link endpoint
fi
KEYS_JSON="[\"$KEY_A\", \"$KEY_B\"]"
timeout 30 "$PY" "$HELPER" config "$WORK/a/.crossbar/config.json" \
    "{\"peer\": \"b\", \"client_listen\": \"tcp:127.0.0.1:$P_CLIENT_A\", \"rlink_listen\": \"$A_RLINK_LISTEN\", \"rlink_dial\": \"$A_DIALS\", \"authorized_keys\": $KEYS_JSON}"
timeout 30 "$PY" "$HELPER" config "$WORK/b/.crossbar/config.json" \
    "{\"peer\": \"a\", \"client_listen\": \"tcp:127.0.0.1:$P_CLIENT_B\", \"rlink_listen\": \"$B_RLINK_LISTEN\", \"rlink_dial\": \"$B_DIALS\", \"authorized_keys\": $KEYS_JSON}"
for n in a b; do
    if ! timeout 60 "$CROSSBAR" check --cbdir "$WORK/$n/.crossbar" >"$WORK/logs/crossbar-check-$n.log" 2>&1; then
        cat "$WORK/logs/crossbar-check-$n.log"
        fail "setup: crossbar check of node $n's config"
        exit 1
    fi
done
log "crossbar configs written and checked"

start_rlinkd() {   # start_rlinkd a|b
    start_bg "rlinkd-$1" "$WORK/logs/rlinkd-$1.log" env RUST_LOG="${RUST_LOG:-info}" RUST_BACKTRACE=1 NO_COLOR=1 \
        "$RLINKD" run --config "$WORK/rlinkd-$1.toml"
}

if [ "$MODE" = rlinkd ]; then
    if [ ! -x "$RLINKD" ]; then
        fail "setup: rlinkd binary not found or not executable: $RLINKD"
        exit 1
    fi
    timeout 60 "$RLINKD" cert --dir "$WORK/certs" a b >"$WORK/logs/rlinkd-cert.log" 2>&1 \
        || { cat "$WORK/logs/rlinkd-cert.log"; fail "setup: rlinkd cert"; exit 1; }
    for f in ca.pem a.pem a.key b.pem b.key; do
        [ -s "$WORK/certs/$f" ] || { fail "setup: rlinkd cert did not write certs/$f"; exit 1; }
    done
    cat >"$WORK/rlinkd-a.toml" <<EOF
node = "a"

[quic]
listen = "127.0.0.1:$P_QUIC_A"
cert = "certs/a.pem"
key = "certs/a.key"
ca = "certs/ca.pem"

[[peers]]
name = "b"
connect = "127.0.0.1:$P_QUIC_B"

# Crossbar A's rlink "to-b" dials this
[[links]]
peer = "b"
listen = "unix:$RUN/a-to-b.sock"
route = "router"

# streams from b (Crossbar B's rlink "to-a") go to Crossbar A's rlink listener
[[routes]]
name = "router"
connect = "$A_RLINK_LISTEN"
EOF
    cat >"$WORK/rlinkd-b.toml" <<EOF
node = "b"

[quic]
listen = "127.0.0.1:$P_QUIC_B"
cert = "certs/b.pem"
key = "certs/b.key"
ca = "certs/ca.pem"

# accepted only (a connects)
[[peers]]
name = "a"

# Crossbar B's rlink "to-a" dials this
[[links]]
peer = "a"
listen = "tcp:127.0.0.1:$P_LINK_B"
route = "router"

# streams from a (Crossbar A's rlink "to-b") go to Crossbar B's rlink listener
[[routes]]
name = "router"
connect = "$B_RLINK_LISTEN"
EOF
    for n in a b; do
        if ! timeout 30 "$RLINKD" check --config "$WORK/rlinkd-$n.toml" >"$WORK/logs/rlinkd-check-$n.log" 2>&1; then
            cat "$WORK/logs/rlinkd-check-$n.log"
            fail "setup: rlinkd check --config rlinkd-$n.toml"
            exit 1
        fi
    done

    # --- 3. start rlinkd B (accepting side) then A ----------------------------------------------
    start_rlinkd b
    start_rlinkd a
    if ! wait_for 15 "rlinkd link endpoints" eval "[ -S '$RUN/a-to-b.sock' ] && tcp_listening $P_LINK_B"; then
        proc_alive rlinkd-a || log "rlinkd A exited"
        proc_alive rlinkd-b || log "rlinkd B exited"
        fail "rlinkd: link endpoints did not come up (unix $RUN/a-to-b.sock, tcp 127.0.0.1:$P_LINK_B)"
        exit 1
    fi
    log "rlinkd A and B are listening"
fi

# --- 4. start Crossbar A and B ----------------------------------------------------------------

for n in a b; do
    start_bg "crossbar-$n" "$WORK/logs/crossbar-$n.log" env CROSSBAR_NODE_ID="node-$n" \
        "$CROSSBAR" start --cbdir "$WORK/$n/.crossbar" --color false --loglevel info \
        --shutdownafter $((GLOBAL_TIMEOUT + 30))
done
if ! wait_for 60 "Crossbar client listeners" tcp_listening "$P_CLIENT_A" "$P_CLIENT_B"; then
    fail "crossbar: nodes did not come up (client ports $P_CLIENT_A, $P_CLIENT_B)"
    exit 1
fi
log "Crossbar nodes up after $(elapsed) s"

# rlinks_ready NAME: how many times the rlink of Crossbar NAME has joined the other node
rlinks_ready() { timeout 10 "$PY" "$HELPER" rlinks-ready "${LOGS[$1]}" 2>/dev/null || echo 0; }

# wait_rlinks LABEL MIN_A MIN_B: wait until both rlinks joined (count > MIN); PASS/FAIL
wait_rlinks() {
    local label=$1 min_a=$2 min_b=$3
    local t0 end
    t0=$(now_ms)
    end=$(( $(date +%s) + RLINK_TIMEOUT ))
    local ra rb
    while :; do
        ra=$(rlinks_ready crossbar-a); rb=$(rlinks_ready crossbar-b)
        if [ "$ra" -gt "$min_a" ] && [ "$rb" -gt "$min_b" ]; then
            local ms=$(( $(now_ms) - t0 ))
            pass "rlinks $label: both joined after $((ms / 1000)).$(( (ms % 1000) / 100 )) s"
            return 0
        fi
        if [ "$(date +%s)" -ge "$end" ]; then
            fail "rlinks $label: not both joined within ${RLINK_TIMEOUT}s (A->B joins: $ra, need > $min_a; B->A joins: $rb, need > $min_b)"
            return 1
        fi
        for n in crossbar-a crossbar-b rlinkd-a rlinkd-b; do
            if [ -n "${PIDS[$n]:-}" ] && ! is_alive "${PIDS[$n]}"; then
                fail "rlinks $label: $n exited"
                return 1
            fi
        done
        sleep 0.5
    done
}

# run_check LABEL SUB_EP PUB_EP
CHECK_NO=0
run_check() {
    local label=$1 sub=$2 pub=$3 rc=0
    CHECK_NO=$((CHECK_NO + 1))
    local out=$WORK/logs/check-$CHECK_NO.out
    log "check $label: subscriber+callee on $sub, publisher+caller on $pub"
    # not in $(...): the watchdog must find this `timeout` as a child of the script
    timeout $((CHECK_TIMEOUT * 2 + 60)) "$PY" "$HELPER" check --sub "$sub" --pub "$pub" \
        --label "$label" --timeout "$CHECK_TIMEOUT" >"$out" 2>>"$WORK/logs/checks.stderr" || rc=$?
    grep -v '^PASS \|^FAIL ' "$out" || true
    local line
    while IFS= read -r line; do
        case "$line" in
            PASS\ *) pass "${line#PASS }" ;;
            FAIL\ *) fail "${line#FAIL }" ;;
        esac
    done <"$out"
    if ! grep -q '^PASS \|^FAIL ' "$out"; then
        fail "check $label: client exited with status $rc and no result (see $WORK/logs/checks.stderr)"
    elif [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
        fail "check $label: client exited with status $rc"
    fi
}

CLIENT_A="tcp:127.0.0.1:$P_CLIENT_A"
CLIENT_B="tcp:127.0.0.1:$P_CLIENT_B"

# --- 5. checks --------------------------------------------------------------------------------

wait_rlinks "at start" 0 0 || true
run_check "B->A" "$CLIENT_A" "$CLIENT_B"
run_check "A->B" "$CLIENT_B" "$CLIENT_A"

# --- 6. restart rlinkd A, the rlinks must come back ---------------------------------------------

# restart_rlinkd_a SIGNAL LABEL: stop rlinkd A with SIGNAL, start it again, wait for both rlinks
# to rejoin, then check both directions again
RESTART_NO=0
restart_rlinkd_a() {
    local sig=$1 label=$2 ra rb
    RESTART_NO=$((RESTART_NO + 1))
    ra=$(rlinks_ready crossbar-a); rb=$(rlinks_ready crossbar-b)
    log "$label: SIG$sig to rlinkd A (pid ${PIDS[rlinkd-a]}), then start it again"
    stop_bg rlinkd-a 10 "$sig"
    mv "$WORK/logs/rlinkd-a.log" "$WORK/logs/rlinkd-a.$RESTART_NO.log"
    sleep 1
    start_rlinkd a
    wait_rlinks "after $label" "$ra" "$rb" || true
    run_check "B->A after $label" "$CLIENT_A" "$CLIENT_B"
    run_check "A->B after $label" "$CLIENT_B" "$CLIENT_A"
}

if [ "$MODE" = rlinkd ]; then
    # graceful: rlinkd A closes its QUIC connection, so rlinkd B drops Crossbar B's rlink at once
    restart_rlinkd_a TERM "rlinkd A restart"
    # crash: rlinkd B only learns from the QUIC idle timeout (or from A's new connection)
    restart_rlinkd_a KILL "rlinkd A crash (SIGKILL)"
else
    log "direct mode: no relay to restart"
fi

for n in crossbar-a crossbar-b rlinkd-a rlinkd-b; do
    if [ -n "${PIDS[$n]:-}" ] && ! is_alive "${PIDS[$n]}"; then
        fail "$n exited during the test"
    fi
done
exit 0
