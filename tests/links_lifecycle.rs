//! Links always end: churned links leave nothing behind, a route target that never answers or
//! whose backlog is full is handled within `connect_timeout`, a listener out of descriptors
//! recovers by itself, and a frame over the router's limit never reaches it.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rlinkd::addr::LocalAddr;
use rlinkd::cluster::NodeProcess;
use rlinkd::endpoints::{EchoRouter, RouterOptions};
use rlinkd::rawsocket::{FrameHeader, MaxLen};

const STATS: &str = "stats_interval = \"200ms\"";

/// An echo pair with a short stats interval, both nodes started and connected: (env, router,
/// node a, node b, a's link endpoint).
fn connected_echo_pair() -> (Env, EchoRouter, NodeProcess, NodeProcess, LocalAddr) {
    let EchoPair {
        env,
        router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&[]);
    a.top_extra.push(STATS.into());
    b.top_extra.push(STATS.into());
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    (env, router, node_a, node_b, ep)
}

/// Connect, send the handshake, close: as fast as possible from several threads. Every link
/// must end on both nodes and every descriptor come back.
#[test]
fn handshake_then_close_churn_leaves_no_link_and_no_descriptor() {
    let (_env, _router, node_a, node_b, ep) = connected_echo_pair();
    assert_link_works(&ep);
    expect_no_links(&node_a, IO_WAIT);
    expect_no_links(&node_b, IO_WAIT);
    let base = (node_a.fd_count().unwrap(), node_b.fd_count().unwrap());

    const CYCLES: usize = 5000;
    const THREADS: usize = 8;
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ep, done) = (ep.clone(), Arc::clone(&done));
            thread::spawn(move || {
                while done.fetch_add(1, Ordering::SeqCst) < CYCLES && Instant::now() < deadline {
                    let c = RawConn::connect(&ep);
                    c.write(&[0x7f, 0xf3, 0, 0]).ok();
                    drop(c);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let started = Instant::now();
    expect_no_links(&node_a, Duration::from_secs(20));
    expect_no_links(&node_b, Duration::from_secs(20));
    let back = wait_until(Duration::from_secs(10), || {
        node_a.fd_count().unwrap() <= base.0 && node_b.fd_count().unwrap() <= base.1
    });
    let fds = |n: &rlinkd::cluster::NodeProcess| {
        std::fs::read_dir(format!("/proc/{}/fd", n.pid().unwrap()))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| format!("{:?}", std::fs::read_link(e.path()).unwrap_or_default()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert!(
        back,
        "descriptors not back to the baseline {base:?}: a {:?}, b {:?}; links open: a {:?}, b {:?}",
        fds(&node_a),
        fds(&node_b),
        links_open(&node_a),
        links_open(&node_b)
    );
    eprintln!(
        "{CYCLES} cycles: links and descriptors back to baseline {:?} after the last cycle",
        started.elapsed()
    );
    assert_link_works(&ep);
}

/// A router that accepts and never answers the handshake: after `connect_timeout` the client,
/// both nodes' links and the router's connection are closed.
#[test]
fn a_route_target_that_never_answers_is_closed_after_connect_timeout() {
    let env = Env::new(&["a", "b"]);
    // Only connect_timeout is short: a lost connection must not be what closes the links.
    let (mut a, mut b) = pair(&["connect_timeout = \"1s\""]);
    a.top_extra.push(STATS.into());
    b.top_extra.push(STATS.into());
    let ep = env.unix("a.sock");
    let saw_eof = Arc::new(AtomicUsize::new(0));
    let eofs = Arc::clone(&saw_eof);
    let silent = ScriptedRouter::start(env.unix("silent.sock"), move |mut conn: UnixStream| {
        // Read everything, answer nothing; count the end of the connection rlinkd closes.
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                eofs.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    });
    a.links.push(("b".into(), ep.clone(), "silent".into()));
    b.routes.push(("silent".into(), silent.addr.clone()));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let clients: Vec<RawConn> = (0..5)
        .map(|_| {
            let c = RawConn::connect(&ep);
            c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
            c
        })
        .collect();
    for c in &clients {
        let (got, _) = c
            .read_until_closed(Duration::from_secs(10))
            .expect("client closed after connect_timeout (1 s)");
        assert!(got.is_empty(), "no reply may reach the client: {got:02x?}");
    }
    expect_no_links(&node_a, Duration::from_secs(5));
    expect_no_links(&node_b, Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(5), || saw_eof.load(Ordering::SeqCst)
            == 5),
        "the silent router's connections were not closed ({} of 5)",
        saw_eof.load(Ordering::SeqCst)
    );
    // The acceptor, next to the router, times it out and resets the stream.
    expect_log(&node_b, "did not answer the handshake", IO_WAIT);
}

/// A Unix route target whose accept queue is full refuses connects with EAGAIN; rlinkd tries
/// again until `connect_timeout` instead of failing the links at once.
#[test]
fn a_full_unix_backlog_at_the_route_target_delays_links_instead_of_failing_them() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(&[]);
    let ep = env.unix("a.sock");
    // The route target: a listener with a backlog of 1 that starts accepting only after 1 s,
    // then relays each connection to the echo router.
    let target = env.path("narrow.sock");
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    sock.bind(&socket2::SockAddr::unix(&target).unwrap())
        .unwrap();
    sock.listen(1).unwrap();
    let listener: std::os::unix::net::UnixListener = sock.into();
    let echo_path = match router.local_addr() {
        rlinkd::addr::LocalAddr::Unix(p) => p.clone(),
        _ => unreachable!(),
    };
    let acceptor = thread::spawn(move || {
        thread::sleep(Duration::from_secs(1));
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        let mut accepted = 0;
        while Instant::now() < end && accepted < 20 {
            match listener.accept() {
                Ok((conn, _)) => {
                    accepted += 1;
                    conn.set_nonblocking(false).unwrap();
                    let up = UnixStream::connect(&echo_path).unwrap();
                    let (mut c1, mut u1) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
                    thread::spawn(move || {
                        std::io::copy(&mut c1, &mut u1).ok();
                        u1.shutdown(std::net::Shutdown::Write).ok();
                    });
                    let (mut c2, mut u2) = (conn, up);
                    thread::spawn(move || {
                        std::io::copy(&mut u2, &mut c2).ok();
                        c2.shutdown(std::net::Shutdown::Write).ok();
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    a.links.push(("b".into(), ep.clone(), "narrow".into()));
    b.routes
        .push(("narrow".into(), rlinkd::addr::LocalAddr::Unix(target)));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let results: Vec<Result<(), String>> = (0..20)
        .map(|_| {
            let ep = ep.clone();
            thread::spawn(move || try_link(&ep, Duration::from_secs(20)))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 20 links failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        count_lines(&node_b, &["route target unreachable"]) == 0,
        "a link failed as unreachable"
    );
    acceptor.join().unwrap();
}

/// A node out of descriptors cannot accept; once links close, the clients queued meanwhile are
/// served without another client arriving to wake the listener.
#[test]
fn a_listener_out_of_descriptors_serves_queued_clients_once_descriptors_free_up() {
    let EchoPair {
        env,
        router: _router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&[]);
    // Room for the node's own descriptors (about 20 with 2 shards; the io_uring backend adds a
    // ring per shard) and at least the 30 clients served below.
    a.fd_limit = Some(52);
    a.top_extra.push(STATS.into());
    b.top_extra.push(STATS.into());
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    assert_link_works(&ep);

    // More clients than node a has descriptors for: the last ones wait in the accept queue.
    let clients: Vec<RawConn> = (0..60)
        .map(|_| {
            let c = RawConn::connect(&ep);
            c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
            c
        })
        .collect();
    // Node a runs out of descriptors (every accepted client holds one).
    assert!(
        wait_until(IO_WAIT, || node_a.fd_count().unwrap_or(0) >= 50),
        "node a did not reach its descriptor limit: {:?}",
        node_a.fd_count()
    );
    let (served, queued) = clients.split_at(30);
    for c in served {
        assert_eq!(c.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    }
    // Free descriptors by closing the served clients; nothing else happens on the listener.
    for c in served {
        c.shutdown();
    }
    for (i, c) in queued.iter().enumerate() {
        let reply = c.read_exact(4, Duration::from_secs(15));
        assert_eq!(
            reply,
            Ok(vec![0x7f, 0xf3, 0, 0]),
            "queued client {i} was not served"
        );
    }
    let msg = find_line(&node_a, &["cannot accept"]).expect("the condition is logged");
    assert!(
        count_lines(&node_a, &["cannot accept"]) < 20,
        "the condition must be logged at most once a second: {msg}"
    );
}

/// Frames a client pipelines with its handshake are held until the router's reply gives its
/// limit: a frame over it never reaches the router, and the client's link is closed.
#[test]
fn a_pipelined_frame_over_the_routers_limit_never_reaches_it() {
    let env = Env::new(&["a", "b"]);
    let opts = RouterOptions {
        max_len: MaxLen::MIN,
        ..RouterOptions::default()
    };
    let router = EchoRouter::start(&env.unix("router.sock"), opts).unwrap();
    let (mut a, mut b) = pair(&[]);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let c = RawConn::connect(&ep);
    let mut bytes = vec![0x7f, 0xf3, 0, 0];
    bytes.extend(FrameHeader::message(100_000).encode());
    bytes.extend(vec![7u8; 100_000]);
    c.write(&bytes).unwrap();
    let (got, _) = c
        .read_until_closed(IO_WAIT)
        .expect("the client's link is closed");
    // The router's reply (limit 512 B) may arrive before the close; nothing else may.
    assert!(
        got.len() <= 4,
        "unexpected bytes: {:02x?}",
        &got[..got.len().min(16)]
    );
    let s = router.stats();
    assert_eq!(
        (s.frames, s.dropped_oversize, s.frame_errors),
        (0, 0, 0),
        "the oversized frame reached the router: {s:?}"
    );
    (&c.stream).flush().ok();

    // A frame within the limit still crosses.
    let mut ok = client(&ep, hs(15));
    echo_on(&mut ok, &[vec![1u8; 500]]).unwrap();
}

/// A router that refuses the handshake: its error reply reaches the client, the frames the
/// client pipelined never reach the router, and the link ends on both nodes.
#[test]
fn a_refusing_router_ends_the_link_on_both_nodes() {
    use rlinkd::endpoints::RouterBehaviour;
    use rlinkd::rawsocket::ErrorCode;
    let env = Env::new(&["a", "b"]);
    let opts = RouterOptions {
        reply: RouterBehaviour::Reject(ErrorCode::MaxConnectionCount),
        ..RouterOptions::default()
    };
    let router = EchoRouter::start(&env.unix("router.sock"), opts).unwrap();
    let (mut a, mut b) = pair(&[]);
    a.top_extra.push(STATS.into());
    b.top_extra.push(STATS.into());
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    for _ in 0..5 {
        let c = RawConn::connect(&ep);
        let mut bytes = vec![0x7f, 0xf3, 0, 0];
        bytes.extend(frame(&pattern(1000, 1)));
        c.write(&bytes).unwrap();
        let (got, _) = c.read_until_closed(IO_WAIT).expect("the link ends");
        assert_eq!(
            got,
            [0x7f, 0x40, 0, 0],
            "the router's refusal reaches the client"
        );
    }
    expect_no_links(&node_a, Duration::from_secs(10));
    expect_no_links(&node_b, Duration::from_secs(10));
    assert_eq!(router.stats().frames, 0);
}

/// A client that closes in the middle of a frame header (after the handshake and the router's
/// reply, 1 to 3 bytes of the next header): the partial header can never be completed, so the
/// link must still end on both nodes.
#[test]
fn a_client_closing_inside_a_frame_header_leaves_no_link() {
    let (_env, _router, node_a, node_b, ep) = connected_echo_pair();
    for cut in 1..=3 {
        let c = RawConn::connect(&ep);
        c.write(&hs(15).encode()).unwrap();
        c.read_exact(4, IO_WAIT).unwrap();
        let f = frame(&pattern(100, cut as u64));
        c.write(&f[..cut]).unwrap();
        drop(c);
    }
    expect_no_links(&node_a, Duration::from_secs(10));
    expect_no_links(&node_b, Duration::from_secs(10));
}
