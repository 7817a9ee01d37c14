#!/usr/bin/env python3
"""Helpers for scripts/crossbar-e2e.sh (run with the Crossbar venv's python).

Subcommands:
  freeports N                 print N distinct free ports (free for both TCP and UDP on 127.0.0.1)
  keys CBDIR NODE_ID [...]    create Crossbar node keys (key.priv/key.pub) in each CBDIR, print the public keys (hex)
  config OUT NODE PARAMS      write a Crossbar node config (OUT = .../.crossbar/config.json)
  check --sub EP --pub EP --label L [--timeout S]
                              subscriber+callee on --sub, publisher+caller on --pub; prints PASS/FAIL lines
  rlinks-ready LOG            print the number of "rlink remote session ready" lines in a Crossbar log

Endpoints (EP) are "tcp:HOST:PORT" or "unix:/path".
"""

import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys
import time
import uuid

# ---------------------------------------------------------------------------
# ports


def free_ports(n):
    ports, socks = [], []
    try:
        while len(ports) < n:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                t.close()
                u.close()
                continue
            socks += [t, u]
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


# ---------------------------------------------------------------------------
# keys


def make_keys(cbdir, node_id):
    os.makedirs(cbdir, exist_ok=True)
    os.environ["CROSSBAR_NODE_ID"] = node_id
    os.environ["CROSSBAR_NODE_CLUSTER_IP"] = "127.0.0.1"
    # Crossbar's own key code, so the files are exactly what `crossbar start` expects
    from crossbar.common.key import _maybe_generate_node_key, _read_node_key

    _maybe_generate_node_key(cbdir)
    pub = _read_node_key(cbdir, private=False)
    return pub["hex"]


# ---------------------------------------------------------------------------
# Crossbar config


def endpoint(spec, listening):
    kind, _, rest = spec.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        ep = {"type": "tcp", "port": int(port)}
        ep["interface" if listening else "host"] = host
        return ep
    if kind == "unix":
        return {"type": "unix", "path": rest}
    raise SystemExit("bad endpoint spec: %r" % spec)


FULL = {"call": True, "register": True, "publish": True, "subscribe": True}


def role(name):
    return {
        "name": name,
        "permissions": [
            {
                "uri": "",
                "match": "prefix",
                "allow": FULL,
                "disclose": {"caller": True, "publisher": True},
                "cache": True,
            }
        ],
    }


def node_config(p):
    """p: dict with client_listen, rlink_listen, rlink_dial (endpoint specs), authorized_keys, peer."""
    return {
        "$schema": "https://raw.githubusercontent.com/crossbario/crossbar/master/crossbar.json",
        "version": 2,
        "controller": {},
        "workers": [
            {
                "type": "router",
                "realms": [
                    {
                        "name": "realm1",
                        "roles": [role("anonymous"), role("rlink")],
                        "rlinks": [
                            {
                                "id": "to-" + p["peer"],
                                "realm": "realm1",
                                "forward_local_events": True,
                                "forward_remote_events": False,
                                "forward_local_invocations": True,
                                "forward_remote_invocations": False,
                                "transport": {
                                    "type": "rawsocket",
                                    "serializer": "cbor",
                                    "endpoint": endpoint(p["rlink_dial"], False),
                                    "url": "rs://localhost",
                                },
                            }
                        ],
                    }
                ],
                "transports": [
                    {
                        "id": "clients",
                        "type": "rawsocket",
                        "endpoint": endpoint(p["client_listen"], True),
                        "serializers": ["cbor", "msgpack", "json"],
                    },
                    {
                        "id": "rlinks",
                        "type": "rawsocket",
                        "endpoint": endpoint(p["rlink_listen"], True),
                        "serializers": ["cbor", "msgpack", "json"],
                        # answered as 7f b3 00 00 (CBOR, 1 MiB) to the rlink's 7f f3 00 00
                        "options": {"max_message_size": 1048576},
                        "auth": {
                            "cryptosign": {
                                "type": "static",
                                "principals": {
                                    "rlink": {
                                        "realm": "realm1",
                                        "role": "rlink",
                                        "authorized_keys": p["authorized_keys"],
                                    }
                                },
                            }
                        },
                    },
                ],
            }
        ],
    }


# ---------------------------------------------------------------------------
# client checks


def client_transport(spec):
    return {
        "type": "rawsocket",
        "url": "rs://localhost",
        "serializer": "cbor",
        "endpoint": endpoint(spec, False),
    }


async def join(spec, name):
    from autobahn.asyncio.component import Component

    loop = asyncio.get_running_loop()
    joined = loop.create_future()
    t = client_transport(spec)
    t["max_retries"] = 3
    comp = Component(transports=[t], realm="realm1")

    @comp.on_join
    async def _joined(session, details):
        if not joined.done():
            joined.set_result(session)

    @comp.on_connectfailure
    def _failed(comp_, exc):
        if not joined.done():
            joined.set_exception(RuntimeError("%s: connect to %s failed: %s" % (name, spec, exc)))

    done = comp.start(loop)
    try:
        session = await asyncio.wait_for(joined, 15)
    except asyncio.TimeoutError:
        raise RuntimeError("%s: could not join realm1 at %s within 15 s" % (name, spec))
    return comp, session, done


async def leave(comp, session):
    try:
        if session.is_attached():
            session.leave()
        await asyncio.wait_for(comp.stop(), 5)
    except Exception:
        pass


async def run_check(args):
    from autobahn.wamp.exception import ApplicationError
    from autobahn.wamp.types import PublishOptions

    label = args.label
    tag = uuid.uuid4().hex[:12]
    topic = "e2e.%s.topic" % tag
    proc = "e2e.%s.proc" % tag
    deadline = time.monotonic() + args.timeout
    results = []  # (name, ok, detail)

    big = os.urandom(args.big // 2).hex()  # args.big characters
    big_sha = hashlib.sha256(big.encode()).hexdigest()

    got_small = asyncio.Event()
    got_big = asyncio.Event()
    seen = {"small": 0, "big": 0, "bad": 0}
    calls_seen = {"n": 0}

    def on_event(kind, seq, payload=None, sha=None):
        if kind == "small":
            seen["small"] += 1
            got_small.set()
        elif kind == "big":
            if payload is not None and hashlib.sha256(payload.encode()).hexdigest() == sha == big_sha:
                seen["big"] += 1
                got_big.set()
            else:
                seen["bad"] += 1

    def on_call(a, b, payload=None):
        calls_seen["n"] += 1
        return {"sum": a + b, "echo_sha": hashlib.sha256((payload or "").encode()).hexdigest(), "tag": tag}

    sub_comp = pub_comp = sub_sess = pub_sess = None
    try:
        sub_comp, sub_sess, _ = await join(args.sub, "subscriber/callee")
        await sub_sess.subscribe(on_event, topic)
        await sub_sess.register(on_call, proc)
        pub_comp, pub_sess, _ = await join(args.pub, "publisher/caller")

        # --- events: publish until the subscriber on the other node sees one
        seq = 0
        ok = False
        while time.monotonic() < deadline:
            seq += 1
            try:
                await asyncio.wait_for(
                    pub_sess.publish(topic, "small", seq, options=PublishOptions(acknowledge=True)), 5
                )
            except Exception as e:  # keep trying until the deadline
                print("  [%s] publish failed (retrying): %r" % (label, e), flush=True)
            try:
                await asyncio.wait_for(got_small.wait(), 0.5)
                ok = True
                break
            except asyncio.TimeoutError:
                pass
        if not ok:
            results.append(("event %s" % label, False, "no event arrived within %ss (%d published)" % (args.timeout, seq)))
        else:
            # a larger event, checked byte for byte (spans many QUIC packets / RawSocket reads)
            try:
                await asyncio.wait_for(
                    pub_sess.publish(topic, "big", 0, big, big_sha, options=PublishOptions(acknowledge=True)), 10
                )
                await asyncio.wait_for(got_big.wait(), max(1.0, min(10.0, deadline - time.monotonic())))
                results.append(
                    ("event %s" % label, True, "after %d publish(es); %d-byte event intact" % (seq, len(big)))
                )
            except Exception as e:
                results.append(
                    ("event %s" % label, False, "small event arrived but %d-byte event did not (bad=%d): %r"
                     % (len(big), seen["bad"], e))
                )

        # --- calls: call until the callee on the other node answers
        attempts = 0
        last = None
        ok = False
        call_deadline = time.monotonic() + args.timeout
        while time.monotonic() < call_deadline:
            attempts += 1
            try:
                res = await asyncio.wait_for(pub_sess.call(proc, 20, 22, payload=big), 10)
                if (
                    isinstance(res, dict)
                    and res.get("sum") == 42
                    and res.get("echo_sha") == big_sha
                    and res.get("tag") == tag
                ):
                    ok = True
                    results.append(
                        ("call %s" % label, True, "after %d attempt(s); result correct (callee invoked %d time(s))"
                         % (attempts, calls_seen["n"]))
                    )
                else:
                    results.append(("call %s" % label, False, "wrong result: %r" % (res,)))
                    ok = True  # stop retrying; it's a definite failure
                break
            except ApplicationError as e:
                last = e
                if e.error != "wamp.error.no_such_procedure":
                    print("  [%s] call error (retrying): %s" % (label, e), flush=True)
            except Exception as e:
                last = e
                print("  [%s] call failed (retrying): %r" % (label, e), flush=True)
            await asyncio.sleep(0.5)
        if not ok:
            results.append(("call %s" % label, False, "no result within %ss (%d attempts, last: %s)" % (args.timeout, attempts, last)))
    except Exception as e:
        results.append(("setup %s" % label, False, str(e)))
    finally:
        for comp, sess in ((pub_comp, pub_sess), (sub_comp, sub_sess)):
            if comp is not None:
                await leave(comp, sess)

    failed = 0
    for name, ok, detail in results:
        print("%s %s: %s" % ("PASS" if ok else "FAIL", name, detail), flush=True)
        failed += 0 if ok else 1
    return failed


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("freeports")
    p.add_argument("n", type=int)
    p = sp.add_parser("keys")
    p.add_argument("cbdir_and_node_id", nargs="+", help="CBDIR NODE_ID [CBDIR NODE_ID ...]")
    p = sp.add_parser("config")
    p.add_argument("out")
    p.add_argument("params", help="JSON object")
    p = sp.add_parser("check")
    p.add_argument("--sub", required=True)
    p.add_argument("--pub", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--big", type=int, default=200000, help="size of the large event/call payload (chars)")
    p = sp.add_parser("rlinks-ready")
    p.add_argument("log")
    args = ap.parse_args()

    if args.cmd == "freeports":
        print(" ".join(str(x) for x in free_ports(args.n)))
    elif args.cmd == "keys":
        pairs = args.cbdir_and_node_id
        if len(pairs) % 2:
            raise SystemExit("keys: expected CBDIR NODE_ID pairs")
        hexes = [make_keys(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
        for h in hexes:
            print(h)
    elif args.cmd == "config":
        cfg = node_config(json.loads(args.params))
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
    elif args.cmd == "check":
        import txaio

        txaio.use_asyncio()
        failed = asyncio.run(run_check(args))
        sys.exit(1 if failed else 0)
    elif args.cmd == "rlinks-ready":
        try:
            with open(args.log, errors="replace") as f:
                print(sum(1 for line in f if "rlink remote session ready" in line))
        except FileNotFoundError:
            print(0)


if __name__ == "__main__":
    main()
