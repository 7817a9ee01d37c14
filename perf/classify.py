#!/usr/bin/env python3
"""Where rlinkd's CPU goes: assign every perf sample to one cost bucket.

Input: `perf script -F comm,pid,tid,time,period,event,ip,sym,dso` output (one block per sample,
leaf frame first). Output: a table per rlinkd process and combined (bucket, samples, share), the
top leaf functions, the user-space payload copy sites, and the same as JSON.

Buckets are tested in this order; the first that matches takes the sample (see perf/README.md):

  1 crypto           any frame is AEAD seal/open or header protection (BoringSSL or quiche::crypto)
  2 kernel-local     any kernel frame of a Unix or TCP socket (the local legs to router/clients)
  3 kernel-udp       any kernel frame of the UDP/IP path (udp_*, ip_*, net_rx, loopback, GRO/GSO)
  4 event-loop       epoll/mio polling, and any other syscall/scheduler/timer kernel time
  5 relay-copies     a memcpy/memmove leaf called for payload (quiche stream buffers, STREAM frame
                     parsing, rlinkd relay buffers), or a leaf owned by rlinkd itself
  6 allocator        malloc/free and the page faults/munmap they cause
  7 quiche           the innermost owner is quiche (packet assembly, frames, recovery, streams)
  8 other            everything else (std helpers whose caller is unknown, [unknown] stacks)

Usage: classify.py PERF_SCRIPT_TXT [--names PID=NAME,...] [--json OUT] [--top N]
"""

import argparse
import collections
import json
import re
import sys

BUCKETS = [
    ("crypto", "crypto (AEAD seal/open, header protection)"),
    ("kernel-local", "kernel local sockets (unix/tcp legs)"),
    ("kernel-udp", "kernel UDP/IP (send/recv, loopback, GSO/GRO)"),
    ("event-loop", "event loop / syscall overhead (epoll, sched, timers)"),
    ("relay-copies", "relay and payload copies (rlinkd, memcpy)"),
    ("allocator", "allocator (malloc/free, page faults)"),
    ("quiche", "quiche (packets, frames, recovery, streams)"),
    ("other", "other"),
]

# 1. Crypto: BoringSSL AEAD and AES/GHASH kernels, header protection (AES-ECB mask), and the quiche
# functions that exist only to call them. quiche::packet::{encrypt,decrypt}_pkt/_hdr are included:
# their own time is nonce/AAD setup and the header-protection XOR, i.e. part of protecting a packet.
CRYPTO = re.compile(
    r"EVP_AEAD|^aead_|aes_gcm|aesni_gcm|^aes_hw_|^vpaes_|^AES_|_aes_|CRYPTO_gcm128|^gcm_|ghash|"
    r"vaes|chacha20|ChaCha20|poly1305|Poly1305|CRYPTO_ctr128|"
    r"^quiche::crypto::|^quiche::packet::(encrypt|decrypt)_(pkt|hdr)|HeaderProtectionKey"
)
# 2. Kernel local sockets: the Unix (and TCP, with --quic-leg tcp) legs to clients and router.
LOCAL = re.compile(r"^unix_|^__unix_|^tcp_|^__tcp_|^tcp4_|^inet_stream|^inet_recvmsg|^sk_stream_")
# 3. Kernel UDP/IP: the QUIC datagrams on loopback.
UDP = re.compile(
    r"udp|^ip_|^__ip_|^ip4_|^ipv4_|^__netif|^netif_|^net_rx|^__napi|^napi_|^process_backlog|"
    r"loopback|^__dev_queue_xmit|^dev_hard_start_xmit|^validate_xmit|skb_segment|_gro_|^gro_|"
    r"_gso_|^__skb_gso|^dev_gro|^__sys_sendmsg|^__sys_recvmsg|^___sys_sendmsg|^___sys_recvmsg|"
    r"^do_recvmmsg|^__sys_sendmmsg|^fib_|^nf_|^rt_|^dst_"
)
# 4. Event loop: polling and other time in the kernel that is not a socket path.
EVENT = re.compile(r"epoll|ep_poll|^mio::poll|^mio::sys::unix::selector|^do_epoll")
MEMCPY = re.compile(r"mem(move|cpy|set)|__memcpy|__memmove|copy_user")
# Callers whose memcpy moves payload bytes (what zero-copy buffers would remove).
PAYLOAD_COPY_CALLER = re.compile(
    r"^quiche::stream::|^<?quiche::stream::|quiche::buffers|^quiche::frame::parse_stream_frame|"
    r"^<?quiche::frame::Frame>?::from_bytes|^rlinkd::"
)
ALLOC = re.compile(
    r"^(__libc_)?(malloc|free|calloc|realloc|cfree)$|^_int_(malloc|free|realloc)|^malloc_|"
    r"^tcache_|^__rust_(alloc|dealloc|realloc)|^alloc::alloc::|^sysmalloc|^systrim|^unlink_chunk|"
    r"^__munmap|^__mmap|^exc_page_fault|^do_anonymous_page|^handle_mm_fault|^__x64_sys_munmap|"
    r"^__x64_sys_madvise|^__madvise|^_?mi_|^<mimalloc::MiMalloc"
)
SYSCALL = re.compile(r"^do_syscall_64|^entry_SYSCALL|^__x64_sys_|^__vdso_|^asm_sysvec|^syscall_exit")
# Innermost user-space owner.
OWNERS = [
    (re.compile(r"^<?quiche::|^<quiche::|^octets::|^<octets::"), "quiche"),
    (re.compile(r"^<?rlinkd::|^<rlinkd::"), "relay-copies"),
    (re.compile(r"^<?mio::"), "event-loop"),
]

HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+[\d.]+:\s+(\d+)\s+\S+:\s*$")
FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")


def parse(path):
    """Yields (pid, period, [(sym, dso)] leaf first)."""
    pid, period, frames = None, 1, []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if pid is not None:
                    yield pid, period, frames
                pid, frames = None, []
                continue
            if pid is None:
                m = HEADER.match(line)
                if m:
                    pid, period = int(m.group(2)), int(m.group(4))
                continue
            m = FRAME.match(line)
            if m:
                sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(2))
                frames.append((sym, m.group(3)))
    if pid is not None:
        yield pid, period, frames


def is_kernel(dso):
    return dso.startswith("[kernel") or dso.endswith(".ko") or dso.startswith("[bpf")


def classify(frames):
    syms = [s for s, _ in frames]
    kern = [s for s, d in frames if is_kernel(d)]
    if any(CRYPTO.search(s) for s in syms):
        return "crypto"
    if any(LOCAL.search(s) for s in kern):
        return "kernel-local"
    if any(UDP.search(s) for s in kern):
        return "kernel-udp"
    if any(EVENT.search(s) for s in syms):
        return "event-loop"
    user = [(s, d) for s, d in frames if not is_kernel(d)]
    if user and MEMCPY.search(user[0][0]):
        caller = next((s for s, d in user[1:] if "libc" not in d), "")
        if PAYLOAD_COPY_CALLER.search(caller):
            return "relay-copies"
    if any(ALLOC.search(s) for s in syms):
        return "allocator"
    if kern and any(SYSCALL.search(s) for s in kern) or any(s.startswith("__vdso") for s in syms):
        return "event-loop"
    for s, _ in user:
        for rx, bucket in OWNERS:
            if rx.search(s):
                return bucket
    return "other"


CIPHER = re.compile(r"aes_gcm_(enc|dec)_update|aesni_gcm_|gcm_ghash|gcm_gmult|chacha20_|poly1305_")


def centre(frames, bucket):
    """A finer cost centre inside the bucket, to say where to optimise."""
    syms = [s for s, _ in frames]
    kern = [s for s, d in frames if is_kernel(d)]
    if bucket == "crypto":
        if CIPHER.search(syms[0]):
            return "crypto: AES-GCM cipher + GHASH kernels"
        return "crypto: per-packet AEAD setup/tag + header protection"
    if bucket in ("kernel-local", "kernel-udp"):
        what = "unix/tcp leg" if bucket == "kernel-local" else "UDP"
        if any(re.search(r"sendmsg|sendto|sendmmsg|_write|write_iter", s) for s in kern):
            return f"kernel {what} send" + (" (+ loopback delivery)" if bucket == "kernel-udp" else "")
        if any(re.search(r"recvmsg|recvfrom|recvmmsg|_read|read_iter", s) for s in kern):
            return f"kernel {what} receive"
        return f"kernel {what} other"
    if bucket == "event-loop":
        if any(EVENT.search(s) for s in syms):
            return "epoll wait/ctl"
        if any(s.startswith("__vdso") for s in syms):
            return "clock_gettime (vdso)"
        return "scheduler and other syscalls"
    if bucket == "relay-copies":
        site = copy_site(frames)
        if site:
            return "copy in " + site.split(" <- ")[0]
        return "rlinkd relay/node code"
    if bucket == "allocator":
        site = alloc_site(frames)
        return "malloc/free for " + (site.split(" <- ")[0] if site else "?")
    if bucket == "quiche":
        q = next((s for s, d in frames if not is_kernel(d) and re.search(r"quiche::|octets::", s)
                  and not re.match(r"^(alloc|core)::", s)), syms[0])
        return "quiche: " + short(q)
    return "other: " + short(syms[0])


def copy_site(frames):
    """'callee <- caller' for a memcpy-leaf sample, else None."""
    user = [(s, d) for s, d in frames if not is_kernel(d)]
    if not user or not MEMCPY.search(user[0][0]) or any(is_kernel(d) for _, d in frames[:1]):
        return None
    callers = [s for s, d in user[1:] if "libc" not in d]
    return short(callers[0]) + (" <- " + short(callers[1]) if len(callers) > 1 else "")


def alloc_site(frames):
    """'caller <- its caller' of the first user frame that is not the allocator or libc."""
    user = [s for s, d in frames
            if not is_kernel(d) and "libc" not in d and not ALLOC.search(s)
            and not s.startswith(("core::ptr::drop_in_place", "alloc::raw_vec", "<alloc::"))]
    if not user:
        return None
    return short(user[0]) + (" <- " + short(user[1]) if len(user) > 1 else "")


def short(sym):
    """A readable name: `<T as Trait>::f` becomes `T::f`, generic arguments are dropped."""
    m = re.match(r"^<(.+?) as .+>::([^:]+)$", sym)
    if m:
        sym = m.group(1) + "::" + m.group(2)
    sym = re.sub(r"<[^<>]*>", "", sym)  # drop one level of generics
    sym = re.sub(r"<[^<>]*>", "", sym)
    return sym[:90]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("script", help="perf script output")
    ap.add_argument("--names", default="", help="PID=NAME,... (e.g. 123=rlinkd-a,124=rlinkd-b)")
    ap.add_argument("--json", help="write the result as JSON here")
    ap.add_argument("--top", type=int, default=15, help="leaf functions to list")
    a = ap.parse_args()
    names = dict(kv.split("=", 1) for kv in a.names.split(",") if "=" in kv)

    per = collections.defaultdict(collections.Counter)  # process -> bucket -> samples
    leaves = collections.Counter()  # (bucket, leaf) -> samples
    copies = collections.Counter()
    allocs = collections.Counter()
    centres = collections.Counter()
    truncated = 0
    total = 0
    for pid, _period, frames in parse(a.script):
        if not frames:
            continue
        proc = names.get(str(pid), f"pid {pid}")
        b = classify(frames)
        per[proc][b] += 1
        per["combined"][b] += 1
        leaves[(b, short(frames[0][0]))] += 1
        centres[centre(frames, b)] += 1
        total += 1
        if b == "relay-copies":
            site = copy_site(frames)
            if site:
                copies[site] += 1
        if b == "allocator":
            site = alloc_site(frames)
            allocs[site or "(no user frame)"] += 1
        if not any(s in ("main", "__libc_start_main", "_start", "__libc_start_call_main")
                   or s.endswith("::main") for s, _ in frames):
            truncated += 1

    if total == 0:
        sys.exit("no samples in " + a.script)

    out = {"samples": total, "stacks_not_reaching_main": truncated, "processes": {},
           "top_leaf_functions": [], "cost_centres": [], "payload_copy_sites": [],
           "allocator_sites": []}
    procs = sorted(k for k in per if k != "combined") + ["combined"]
    for p in procs:
        n = sum(per[p].values())
        print(f"\n{p}: {n} samples")
        print(f"  {'bucket':<52} {'samples':>8} {'share':>7}")
        rows = []
        for key, label in BUCKETS:
            c = per[p][key]
            rows.append({"bucket": key, "label": label, "samples": c, "share": c / n})
            print(f"  {label:<52} {c:>8} {100 * c / n:>6.1f}%")
        out["processes"][p] = {"samples": n, "buckets": rows}

    print(f"\ntop {a.top} cost centres (bucket refined by call site, both processes):")
    for name, c in centres.most_common(a.top):
        print(f"  {100 * c / total:>5.1f}%  {name}")
        out["cost_centres"].append({"centre": name, "samples": c, "share": c / total})

    print(f"\ntop {a.top} leaf functions (self time, both processes):")
    for (b, leaf), c in leaves.most_common(a.top):
        print(f"  {100 * c / total:>5.1f}%  {b:<13} {leaf}")
        out["top_leaf_functions"].append({"bucket": b, "function": leaf, "samples": c,
                                          "share": c / total})
    if copies:
        n = sum(copies.values())
        print(f"\nuser-space payload copies (memcpy/memmove leaf), {100 * n / total:.1f}% in all:")
        for site, c in copies.most_common(8):
            print(f"  {100 * c / total:>5.1f}%  {site}")
            out["payload_copy_sites"].append({"site": site, "samples": c, "share": c / total})
    if allocs:
        n = sum(allocs.values())
        print(f"\nallocator samples by caller, {100 * n / total:.1f}% in all:")
        for site, c in allocs.most_common(8):
            print(f"  {100 * c / total:>5.1f}%  {site}")
            out["allocator_sites"].append({"site": site, "samples": c, "share": c / total})
    print(f"\nstacks not reaching main (truncated or [unknown]): {truncated} of {total} "
          f"({100 * truncated / total:.1f}%)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
