# Cross-check of rlinkd's system-call counters against strace -c on one node.
# Usage: drive.py IO (mio|uring) NODE (a|b) SECONDS
import json, os, re, signal, socket, subprocess, sys, time, urllib.request
IO, WHO, SECS = sys.argv[1], sys.argv[2], float(sys.argv[3])
SCOPE = sys.argv[4] if len(sys.argv) > 4 else "process"   # or "shard": the shard thread only
D = "/tmp/sysx/x"
BIN = "/work/wt-sys/target/release/rlinkd"
ADMIN = {"a": 39101, "b": 39102}
for n in "ab":
    open(f"{D}/{n}.toml", "w").write(open(f"{D}/{n}.toml.in").read().replace('"IO"', f'"{IO}"'))
for f in ("router.sock", "a-to-b.sock", "sink.bytes"):
    try: os.unlink(f"{D}/{f}")
    except FileNotFoundError: pass
procs = []
def start(args, log):
    p = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    procs.append(p); return p
def metrics(n):
    body = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[n]}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        m = re.match(r'rlinkd_syscalls_total\{shard="\d+",call="(\w+)"\} (\d+)', line)
        if m: out[m[1]] = out.get(m[1], 0) + int(m[2])
    return out
def ready(n):
    try: return urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[n]}/readyz", timeout=2).status == 200
    except Exception: return False
def sink_bytes():
    try: return int(open(f"{D}/sink.bytes").read())
    except Exception: return 0
try:
    start(["python3", f"{D}/sink.py", f"{D}/router.sock", f"{D}/sink.bytes"], f"{D}/sink.log")
    while not os.path.exists(f"{D}/router.sock"): time.sleep(0.05)
    nb = start([BIN, "run", "--config", f"{D}/b.toml"], f"{D}/b.log")
    na = start([BIN, "run", "--config", f"{D}/a.toml"], f"{D}/a.log")
    t = time.time()
    while not ready("a"):
        assert time.time() - t < 10, "a not ready"; time.sleep(0.05)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(f"{D}/a-to-b.sock")
    c.sendall(bytes([0x7f, 0xf2, 0, 0]))
    assert len(c.recv(4)) == 4
    frame = bytes([0, 1, 0, 0]) + bytes(65536)       # 64 KiB payload, 4-byte header
    c.sendall(frame)
    while sink_bytes() < len(frame): time.sleep(0.01)
    time.sleep(0.5)
    pid = (na if WHO == "a" else nb).pid
    tasks = len(os.listdir(f"/proc/{pid}/task"))
    if SCOPE == "shard":
        tid = next(t for t in os.listdir(f"/proc/{pid}/task")
                   if open(f"/proc/{pid}/task/{t}/comm").read().strip() == "rlinkd-shard-0")
        target = ["-p", tid]
    else:
        target = ["-f", "-p", str(pid)]
    extra = os.environ.get("STRACE_ARGS", "-c").split()
    st = subprocess.Popen(["strace", *extra, *target, "-o", f"{D}/strace-{IO}-{WHO}.txt"],
                          stderr=subprocess.PIPE, text=True)
    # strace 5.x+: one line "Process N attached with M threads".
    line = st.stderr.readline()
    assert "attached" in line, line
    attach_line = line.strip()
    time.sleep(0.2)
    c0, t0 = metrics(WHO), time.time()
    base = sink_bytes()
    batch = frame * 16
    sent = 0
    end = time.time() + SECS
    while time.time() < end:
        c.sendall(batch); sent += len(batch)
    while sink_bytes() - base < sent: time.sleep(0.01)
    t_sent = time.time()
    time.sleep(0.2)
    c1, t1 = metrics(WHO), time.time()
    st.send_signal(signal.SIGINT); st.wait()
    delta = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
    res = {"io": IO, "node": WHO, "payload_bytes": sent, "window_s": round(t1 - t0, 3),
           "send_s": round(t_sent - t0, 3), "threads": tasks, "scope": SCOPE, "attach": attach_line,
           "counted_total": sum(delta.values()), "counted": {k: v for k, v in delta.items() if v}}
    print(json.dumps(res, indent=1))
    print(open(f"{D}/strace-{IO}-{WHO}.txt").read())
finally:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try: p.wait(timeout=5)
        except Exception: p.kill()
