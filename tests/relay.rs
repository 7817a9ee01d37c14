//! Relaying: rlinks carry the handshake and every frame byte for byte, many links share one
//! QUIC connection in both directions, and a router's refusal reaches the client.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use rlinkd::endpoints::{ClientError, EchoRouter, RawSocketClient, RouterBehaviour, RouterOptions};
use rlinkd::rawsocket::{ErrorCode, MaxLen, RouterReply, Serializer};

/// What the EchoRouter answers to a client handshake with `serializer`, given its own limit.
fn accepted(max_len: MaxLen, serializer: Serializer) -> [u8; 4] {
    RouterReply::Accepted {
        max_len,
        serializer,
    }
    .encode()
}

/// Sends `frames` (whole encoded frames) through `conn` from a writer thread and checks that the
/// same bytes come back, frame by frame.
fn echo_raw_frames(conn: &RawConn, frames: Vec<Vec<u8>>, what: &str) {
    let writer = conn.stream.try_clone().expect("clone stream");
    let all = Arc::new(frames);
    let to_send = Arc::clone(&all);
    let sender = thread::spawn(move || -> std::io::Result<()> {
        use std::io::Write;
        for f in to_send.iter() {
            (&writer).write_all(f)?;
        }
        Ok(())
    });
    for f in all.iter() {
        let len = f.len() - 4;
        let got = conn
            .read_exact(f.len(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{what}: echo of a {len}-byte frame: {e}"));
        assert_eq!(
            got[..4],
            f[..4],
            "{what}: prefix of the {len}-byte frame changed"
        );
        if got != *f {
            let at = got.iter().zip(f.iter()).position(|(a, b)| a != b);
            panic!("{what}: payload of the {len}-byte frame differs at offset {at:?}");
        }
    }
    sender
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("{what}: writing frames: {e}"));
}

#[test]
fn frames_of_every_size_cross_byte_exact_over_unix_and_tcp_legs() {
    let env = Env::new(&["a", "b"]);
    // Routers behind node b: one on TCP, one on a Unix socket, one with a 1 MiB limit.
    // On port 0: a port picked free and bound later can be taken in between (CI saw
    // AddrInUse once: another test's connection got it as its ephemeral port).
    let any_port = rlinkd::addr::LocalAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let r_tcp = EchoRouter::start(&any_port, RouterOptions::default()).unwrap();
    let r_unix = EchoRouter::start(&env.unix("r-unix.sock"), RouterOptions::default()).unwrap();
    let small = RouterOptions {
        max_len: MaxLen::new(11).unwrap(),
        ..RouterOptions::default()
    };
    let r_small = EchoRouter::start(&env.unix("r-small.sock"), small).unwrap();

    let (mut a, mut b) = pair(&[]);
    // Client on a Unix endpoint -> router on TCP; client on TCP -> router on a Unix socket.
    let unix_to_tcp = env.unix("a-unix.sock");
    let tcp_to_unix = free_tcp();
    let to_small = env.unix("a-small.sock");
    a.links
        .push(("b".into(), unix_to_tcp.clone(), "tcp-router".into()));
    a.links
        .push(("b".into(), tcp_to_unix.clone(), "unix-router".into()));
    a.links.push(("b".into(), to_small.clone(), "small".into()));
    b.routes
        .push(("tcp-router".into(), r_tcp.local_addr().clone()));
    b.routes
        .push(("unix-router".into(), r_unix.local_addr().clone()));
    b.routes
        .push(("small".into(), r_small.local_addr().clone()));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    const X: usize = 1 << 24; // 16 MiB: only the X bit of the prefix carries it
    for (endpoint, what) in [
        (&unix_to_tcp, "unix client -> tcp router"),
        (&tcp_to_unix, "tcp client -> unix router"),
    ] {
        let conn = RawConn::connect(endpoint);
        // MessagePack, 16 MiB: the reply must be the router's own octets, untouched.
        conn.write(&[0x7f, 0xf2, 0, 0]).unwrap();
        let reply = conn.read_exact(4, IO_WAIT).expect("handshake reply");
        assert_eq!(
            reply,
            accepted(MaxLen::MAX, Serializer::MsgPack),
            "{what}: handshake reply"
        );

        let mut frames: Vec<Vec<u8>> = [0usize, 1, 1024, 64 << 10, 1 << 20, X]
            .iter()
            .enumerate()
            .map(|(i, &n)| frame(&pattern(n, i as u64)))
            .collect();
        assert_eq!(frames[5][..4], [0x08, 0, 0, 0], "spec X-bit prefix");
        // Twisted/Crossbar write a 2^24-byte message as a u32 length: `01 00 00 00`. rlinkd
        // reads that prefix as a 16 MiB message and relays it untouched.
        let mut twisted = vec![0x01, 0, 0, 0];
        twisted.extend(pattern(X, 99));
        frames.push(twisted);
        echo_raw_frames(&conn, frames, what);
        conn.shutdown();
    }

    // A router with a 1 MiB limit: its reply says so (`7f b3`), and a 1 MiB frame still crosses.
    let conn = RawConn::connect(&to_small);
    conn.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    let reply = conn.read_exact(4, IO_WAIT).expect("handshake reply");
    assert_eq!(
        reply,
        [0x7f, 0xb3, 0, 0],
        "reply of a router with a 1 MiB limit"
    );
    echo_raw_frames(&conn, vec![frame(&pattern(1 << 20, 7))], "1 MiB router");
    conn.shutdown();

    // The framed client agrees: every echo matches and the reply is the router's.
    let (mut c, reply) = RawSocketClient::connect(&unix_to_tcp, hs(15), IO_WAIT).unwrap();
    assert_eq!(reply.encode(), accepted(MaxLen::MAX, Serializer::Cbor));
    echo_on(&mut c, &[pattern(0, 1), pattern(X, 2), pattern(3, 3)]).unwrap();
    drop(c);

    assert!(r_tcp.stats().frames >= 8 && r_unix.stats().frames >= 7);
    assert_eq!(r_tcp.stats().frame_errors + r_unix.stats().frame_errors, 0);
}

/// One client's work: open a link, echo frames of sizes that depend on `i`, close cleanly.
fn busy_link(addr: &rlinkd::addr::LocalAddr, i: usize, start: &Barrier) -> Result<(), String> {
    let conn = RawSocketClient::connect(addr, hs(15), Duration::from_secs(30));
    // Every thread reaches the barrier exactly once, connected or not, so none waits forever.
    start.wait();
    let (mut c, _) = conn.map_err(|e| format!("link {i}: connect: {e}"))?;
    let sizes = [i % 300, 0, 1 + (i * 7919) % 40_000, 65_536 + i % 13, 5];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| pattern(n, (i * 10 + k) as u64))
        .collect();
    echo_on(&mut c, &payloads).map_err(|e| format!("link {i}: {e}"))?;
    // Clean close: half-close, then the router's end of stream comes back through both nodes.
    c.shutdown_write()
        .map_err(|e| format!("link {i}: shutdown: {e}"))?;
    match c.recv() {
        Err(ClientError::Closed) => Ok(()),
        Ok(m) => Err(format!(
            "link {i}: unexpected {}-byte message at close",
            m.len()
        )),
        Err(e) => Err(format!("link {i}: close: {e}")),
    }
}

/// Node `a` has a link endpoint to `b` and `b` one to `a`, each side's router echoes; `N`
/// clients on each side at once echo frames of varied sizes, then all close cleanly. Returns the
/// nodes, still running, for more checks.
fn two_hundred_links_each_way(
    env: &Env,
    (mut a, mut b): (rlinkd::cluster::NodePlan, rlinkd::cluster::NodePlan),
) -> (rlinkd::cluster::NodeProcess, rlinkd::cluster::NodeProcess) {
    const N: usize = 200;
    let router_a = EchoRouter::start(&env.unix("router-a.sock"), RouterOptions::default()).unwrap();
    let router_b = EchoRouter::start(&env.unix("router-b.sock"), RouterOptions::default()).unwrap();
    let a_to_b = env.unix("a-to-b.sock");
    let b_to_a = env.unix("b-to-a.sock");
    a.links.push(("b".into(), a_to_b.clone(), "echo".into()));
    a.routes
        .push(("echo".into(), router_a.local_addr().clone()));
    b.links.push(("a".into(), b_to_a.clone(), "echo".into()));
    b.routes
        .push(("echo".into(), router_b.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let start = Arc::new(Barrier::new(2 * N));
    let handles: Vec<_> = (0..2 * N)
        .map(|i| {
            let addr = if i % 2 == 0 {
                a_to_b.clone()
            } else {
                b_to_a.clone()
            };
            let start = Arc::clone(&start);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || busy_link(&addr, i, &start))
                .expect("spawn client thread")
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| match h.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("client thread panicked".into()),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} links failed, first ones: {:#?}",
        errors.len(),
        2 * N,
        &errors[..errors.len().min(10)]
    );

    for (r, name) in [(&router_a, "router a"), (&router_b, "router b")] {
        let s = r.stats();
        assert_eq!(s.connections, N as u64, "{name}: connections");
        assert_eq!(s.frames, 5 * N as u64, "{name}: frames");
        assert_eq!(s.echoed, 5 * N as u64, "{name}: echoed");
    }
    // Every link ended cleanly on both nodes: one "out" and one "in" end per link per node.
    for node in [&node_a, &node_b] {
        let clean = &["link ", "closed by both ends"];
        let closed = wait_until(Duration::from_secs(20), || {
            count_lines(node, clean) >= 2 * N
        });
        assert!(
            closed,
            "node {}: {} of {} link ends closed cleanly",
            node.name,
            count_lines(node, clean),
            2 * N
        );
        let failed =
            count_lines(node, &["WARN", "link out "]) + count_lines(node, &["WARN", "link in "]);
        assert_eq!(failed, 0, "node {}: a link failed", node.name);
    }
    assert!(wait_until(Duration::from_secs(10), || router_a
        .stats()
        .active
        == 0
        && router_b.stats().active == 0));
    assert!(node_a.is_running() && node_b.is_running());
    (node_a, node_b)
}

#[test]
fn two_hundred_links_each_way_at_once() {
    let env = Env::new(&["a", "b"]);
    two_hundred_links_each_way(&env, pair(&[]));
}

/// Both nodes with the default `gso = true` and a stats line every second, to check for
/// datagrams cut apart on the way (regression: a leftover UDP_SEGMENT socket option cut every
/// datagram sent without a cmsg at 1200 bytes) and for GSO being switched off by an EINVAL send
/// (regression: batches of more than UDP_MAX_SEGMENTS small packets).
fn gso_pair() -> (rlinkd::cluster::NodePlan, rlinkd::cluster::NodePlan) {
    let (mut a, mut b) = pair(&[]);
    a.top_extra.push("stats_interval = \"1s\"".into());
    b.top_extra.push("stats_interval = \"1s\"".into());
    (a, b)
}

fn assert_datagrams_intact(nodes: [&rlinkd::cluster::NodeProcess; 2]) {
    for node in nodes {
        let (unparsable, unknown) = dropped_datagrams(node).expect("metrics");
        assert_eq!(
            (unparsable, unknown),
            (0, 0),
            "node {}: datagrams from its peer dropped as (unparsable, unknown connection)",
            node.name
        );
        assert_eq!(
            count_lines(node, &["kernel refused a GSO send"]),
            0,
            "node {}: GSO was switched off by an EINVAL send",
            node.name
        );
    }
}

#[test]
fn two_hundred_links_each_way_at_once_with_gso() {
    let env = Env::new(&["a", "b"]);
    let (node_a, node_b) = two_hundred_links_each_way(&env, gso_pair());
    assert_datagrams_intact([&node_a, &node_b]);
}

#[test]
fn lone_full_size_datagrams_cross_intact_with_gso() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("r.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = gso_pair();
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let mut c = client(&ep, hs(15));
    // One frame at a time: each crosses in one datagram of more than 1200 bytes, sent alone.
    for (i, n) in [1100usize, 1300, 1400, 1300, 1350].into_iter().enumerate() {
        echo_on(&mut c, &[pattern(n, i as u64)]).unwrap();
    }
    assert_datagrams_intact([&node_a, &node_b]);
}

#[test]
fn router_refusal_reaches_the_client() {
    let env = Env::new(&["a", "b"]);
    let refuse = RouterOptions {
        reply: RouterBehaviour::Reject(ErrorCode::MaxConnectionCount),
        ..RouterOptions::default()
    };
    let r_refuse = EchoRouter::start(&env.unix("r-refuse.sock"), refuse).unwrap();
    let r_echo = EchoRouter::start(&env.unix("r-echo.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(&[]);
    let to_refuse = env.unix("a-refuse.sock");
    let to_echo = env.unix("a-echo.sock");
    a.links.push(("b".into(), to_refuse.clone(), "full".into()));
    a.links.push(("b".into(), to_echo.clone(), "echo".into()));
    b.routes
        .push(("full".into(), r_refuse.local_addr().clone()));
    b.routes.push(("echo".into(), r_echo.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    match RawSocketClient::connect(&to_refuse, hs(15), IO_WAIT) {
        Err(ClientError::Rejected(4)) => {}
        Err(e) => panic!("expected the router's refusal (code 4), got {e}"),
        Ok(_) => panic!("expected the router's refusal (code 4), got an accepted handshake"),
    }

    // Raw: exactly the router's 4 error octets, then the connection closes.
    let conn = RawConn::connect(&to_refuse);
    conn.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    let (bytes, ended) = conn
        .read_until_closed(Duration::from_secs(10))
        .expect("connection closed after the refusal");
    assert_eq!(
        bytes,
        [0x7f, 0x40, 0, 0],
        "error reply relayed untouched ({ended:?})"
    );
    assert_eq!(r_refuse.stats().rejected, 2);

    assert_link_works(&to_echo);
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn half_close_delivers_everything_sent_before_it() {
    let EchoPair {
        env,
        router,
        a,
        b,
        ep,
    } = echo_pair(&[]);
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    // The client sends frames and half-closes at once; the router echoes what it read, then
    // sees the end and closes: every echo must arrive before the end of stream. The echoes are
    // read while the writer writes: a client that wrote 2.5 MB without reading, against a
    // router that blocks on its writes, would deadlock on any transport once the buffers in
    // between are full. Reads time out (IO_WAIT), so a stall fails instead of hanging.
    let mut c = client(&ep, hs(15));
    let payloads: Vec<Vec<u8>> = (0..20).map(|k| pattern(1000 * k * k, k as u64)).collect();
    let (mut tx, mut rx) = c.split();
    let to_send = payloads.clone();
    let writer = std::thread::spawn(move || {
        for p in &to_send {
            tx.send(p).unwrap();
        }
        tx.shutdown_write().unwrap();
    });
    for (k, p) in payloads.iter().enumerate() {
        let got = rx
            .recv()
            .unwrap_or_else(|e| panic!("echo {k} after half-close: {e}"));
        assert!(got == *p, "echo {k} differs");
    }
    match rx.recv() {
        Err(ClientError::Closed) => {}
        other => panic!("expected the end of stream, got {other:?}"),
    }
    writer.join().unwrap();
    assert!(wait_until(Duration::from_secs(10), || count_lines(
        &node_a,
        &["link out", "closed by both ends"]
    ) == 1));
    assert_eq!(router.stats().echoed, 20);
    c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(5, 5)]).unwrap();
}

#[test]
fn links_beyond_the_stream_limit_wait_for_a_free_stream() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    // Node b lets a open 4 streams at a time; 24 links come at once.
    let (mut a, mut b) = pair(&["max_streams = 4", "connect_timeout = \"20s\""]);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let handles: Vec<_> = (0..24u64)
        .map(|i| {
            let ep = ep.clone();
            thread::spawn(move || -> Result<(), String> {
                let (mut c, _) = RawSocketClient::connect(&ep, hs(15), Duration::from_secs(30))
                    .map_err(|e| format!("link {i}: connect: {e}"))?;
                echo_on(&mut c, &[pattern(1000, i), pattern(20_000, i + 100)])
                    .map_err(|e| format!("link {i}: {e}"))?;
                thread::sleep(Duration::from_millis(100));
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().expect("client thread").err())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(router.stats().connections, 24);
    assert!(node_a.is_running() && node_b.is_running());
}
