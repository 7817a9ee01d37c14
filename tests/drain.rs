//! Stopping loses nothing that was accepted: SIGTERM drains (no new links, every link delivers
//! what the node has read, ends with a FIN, the socket files go), a second signal stops at once,
//! and SIGHUP / SIGUSR1 never kill the node.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FRAME: usize = 64 << 10;

/// Every frame the client sends, in order: frame k is `pattern(FRAME, k)`.
fn stream_of_frames(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * (FRAME + 4));
    for k in 0..n {
        v.extend(frame(&pattern(FRAME, k as u64)));
    }
    v
}

#[test]
fn a_link_half_closed_before_sigterm_loses_no_byte() {
    let EchoPair {
        env,
        router,
        a,
        b,
        ep,
    } = echo_pair(&[]);
    let node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    // 32 MiB of frames, written then half-closed by a thread while this one reads the echoes.
    const FRAMES: usize = 512;
    let sent = stream_of_frames(FRAMES);
    let c = RawConn::connect(&ep);
    c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(c.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    let w = c.stream.try_clone().unwrap();
    let writer = {
        let sent = sent.clone();
        thread::spawn(move || {
            (&w).write_all(&sent).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let reader = thread::spawn(move || c.read_until_closed(Duration::from_secs(60)));
    writer.join().unwrap();
    // The client has half-closed; stop node a while most of it is still on its way.
    node_a.signal(libc::SIGTERM);
    let (got, ended) = reader.join().unwrap().expect("the link ends");
    assert_eq!(ended, Ended::Eof, "the link ends with a clean close");
    assert_eq!(
        got.len(),
        sent.len(),
        "echoes lost ({} of {} bytes)",
        got.len(),
        sent.len()
    );
    assert!(got == sent, "echoes differ from what was sent");
    let status = node_a.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "node a did not exit cleanly within drain_timeout: {status:?}"
    );
    if let rlinkd::addr::LocalAddr::Unix(p) = &ep {
        assert!(
            !p.exists(),
            "the link endpoint's socket file was left behind"
        );
    }
    assert_eq!(router.stats().echoed, FRAMES as u64);
    expect_log(&node_a, "drained", Duration::from_secs(1));
}

/// A router behind node b that answers the handshake and then reads everything (as Crossbar
/// does, whatever it writes): the bytes it received, and whether its connection ended cleanly.
struct SinkSetup {
    env: Env,
    _router: ScriptedRouter,
    received: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    a: rlinkd::cluster::NodePlan,
    b: rlinkd::cluster::NodePlan,
    ep: rlinkd::addr::LocalAddr,
}

fn sink_setup() -> SinkSetup {
    let env = Env::new(&["a", "b"]);
    let received = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let (r, d) = (Arc::clone(&received), Arc::clone(&ended));
    let router = ScriptedRouter::start(env.unix("sink.sock"), move |mut conn| {
        use std::io::Read;
        let mut hs = [0u8; 4];
        if conn.read_exact(&mut hs).is_err() || conn.write_all(&[0x7f, 0xf3, 0, 0]).is_err() {
            return;
        }
        conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                d.store(true, Ordering::SeqCst);
                return;
            }
            r.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    let (mut a, mut b) = pair(&[]);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "sink".into()));
    b.routes.push(("sink".into(), router.addr.clone()));
    SinkSetup {
        env,
        _router: router,
        received,
        ended,
        a,
        b,
        ep,
    }
}

/// A client that writes 64 KiB frames without end from a thread; once it reads the end of the
/// link it finishes the frame in progress and closes (as Crossbar does on end-of-file). Returns
/// the connection, the stop flag, the bytes written and the thread.
fn endless_writer(
    ep: &rlinkd::addr::LocalAddr,
) -> (
    RawConn,
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    thread::JoinHandle<()>,
) {
    let c = RawConn::connect(ep);
    c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(c.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let w = c.stream.try_clone().unwrap();
    let writer = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        thread::spawn(move || {
            let f = frame(&pattern(FRAME, 5));
            while !stop.load(Ordering::SeqCst) {
                if (&w).write_all(&f).is_err() {
                    break;
                }
                written.fetch_add(f.len() as u64, Ordering::SeqCst);
            }
            w.shutdown(std::net::Shutdown::Write).ok();
        })
    };
    (c, stop, written, writer)
}

/// The node that delivers to the router stops while the client is busy: the router still gets
/// every byte the client sent before it saw the end of the link, and the node exits well within
/// `drain_timeout`.
#[test]
fn sigterm_at_the_routers_node_on_a_busy_link_delivers_every_byte_to_the_router() {
    let SinkSetup {
        env,
        _router,
        received,
        ended,
        a,
        b,
        ep,
    } = sink_setup();
    let mut node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let (c, stop, written, writer) = endless_writer(&ep);
    assert!(wait_until(Duration::from_secs(20), || received
        .load(Ordering::SeqCst)
        > 8 << 20));
    let stopped_at = Instant::now();
    node_b.signal(libc::SIGTERM);
    let (got, how) = c
        .read_until_closed(Duration::from_secs(30))
        .expect("the client sees the link end");
    assert!(got.is_empty() && how == Ended::Eof, "a clean end: {how:?}");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    drop(c);
    let status = node_b.wait_exit(Duration::from_secs(12));
    assert!(
        status.is_some_and(|s| s.success()),
        "node b did not exit within drain_timeout: {status:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || ended.load(Ordering::SeqCst)),
        "the router's connection did not end cleanly"
    );
    let (w, r) = (
        written.load(Ordering::SeqCst),
        received.load(Ordering::SeqCst),
    );
    eprintln!(
        "drained in {:?}: client wrote {w} bytes, router received {r}",
        stopped_at.elapsed()
    );
    assert_eq!(r, w, "bytes the client wrote never reached the router");
}

/// The node that holds the client stops while the client is busy: it reads to the end of the
/// frame in progress and no further, so the router receives whole frames only, everything it
/// read arrives, and the node exits well within `drain_timeout`.
#[test]
fn sigterm_at_the_clients_node_on_a_busy_link_cuts_no_frame() {
    let SinkSetup {
        env,
        _router,
        received,
        ended,
        a,
        b,
        ep,
    } = sink_setup();
    let node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let (c, stop, written, writer) = endless_writer(&ep);
    assert!(wait_until(Duration::from_secs(20), || received
        .load(Ordering::SeqCst)
        > 8 << 20));
    node_a.signal(libc::SIGTERM);
    let status = node_a.wait_exit(Duration::from_secs(12));
    stop.store(true, Ordering::SeqCst);
    assert!(
        status.is_some_and(|s| s.success()),
        "node a did not exit within drain_timeout: {status:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || ended.load(Ordering::SeqCst)),
        "the router's connection did not end cleanly"
    );
    writer.join().unwrap();
    drop(c);
    let r = received.load(Ordering::SeqCst);
    eprintln!(
        "router received {r} bytes ({} frames) of {} written",
        r / (FRAME as u64 + 4),
        written.load(Ordering::SeqCst)
    );
    assert_eq!(r % (FRAME as u64 + 4), 0, "the router got a cut frame");
    assert!(r <= written.load(Ordering::SeqCst));
}

#[test]
fn a_second_signal_stops_at_once_and_sighup_sigusr1_do_not_kill() {
    let EchoPair {
        env,
        router: _router,
        mut a,
        b,
        ep,
    } = echo_pair(&[]);
    a.top_extra.push("drain_timeout = \"60s\"".into());
    let node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    node_a.signal(libc::SIGHUP);
    node_a.signal(libc::SIGUSR1);
    expect_log(&node_a, "reloaded: nothing changed", IO_WAIT);
    expect_log(&node_a, "stats peers=", IO_WAIT);
    thread::sleep(Duration::from_millis(300));
    assert!(node_a.is_running(), "SIGHUP or SIGUSR1 killed the node");
    assert_link_works(&ep);

    // A client stuck in the middle of a frame keeps its link (and the drain) open...
    let held = RawConn::connect(&ep);
    held.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(held.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    let mut partial = rlinkd::rawsocket::FrameHeader::message(1000)
        .encode()
        .to_vec();
    partial.extend([1u8; 10]);
    held.write(&partial).unwrap();
    thread::sleep(Duration::from_millis(200));
    node_a.signal(libc::SIGTERM);
    expect_log(&node_a, "draining", IO_WAIT);
    thread::sleep(Duration::from_millis(500));
    assert!(node_a.is_running(), "the drain ended before its link did");
    // ...until a second signal.
    node_a.signal(libc::SIGTERM);
    let status = node_a.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "a second SIGTERM did not stop the node at once: {status:?}"
    );
    drop(held);
}

/// A draining node tells its peer (the DRAINING notice): a link opened towards it meanwhile is
/// closed at once on the peer's side, with the reason in its log, instead of waiting for a
/// connection until `connect_timeout`; the draining node never sees its stream.
#[test]
fn a_link_towards_a_draining_node_closes_at_once_with_the_reason() {
    let EchoPair {
        env,
        router: _router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&["connect_timeout = \"10s\""]);
    b.top_extra.push("drain_timeout = \"60s\"".into());
    a.top_extra.push("drain_timeout = \"60s\"".into());
    let mut node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    // A client that never closes keeps its link, and so node b's drain, open.
    let held = RawConn::connect(&ep);
    held.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(held.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    node_b.signal(libc::SIGTERM);
    expect_log(&node_b, "draining", IO_WAIT);
    // Every shard of a hears it on its own connection.
    assert!(
        wait_until(IO_WAIT, || count_lines(
            &node_a,
            &["peer announced its drain"]
        ) >= node_shards()),
        "node a did not hear of b's drain on every connection"
    );

    let started = std::time::Instant::now();
    let c = RawConn::connect(&ep);
    c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    let (got, _) = c
        .read_until_closed(Duration::from_secs(8))
        .expect("the new link is closed");
    let took = started.elapsed();
    assert!(got.is_empty(), "the router answered a draining node's link");
    assert!(
        took < Duration::from_secs(3),
        "closed after {took:?}: that is the connect_timeout, not the notice"
    );
    expect_log(&node_a, "peer b is draining", IO_WAIT);
    assert_eq!(
        count_lines(&node_b, &["refused stream: node stopping"]),
        0,
        "node a opened a stream towards the draining node"
    );
    assert!(node_b.is_running(), "the held link should keep b draining");
    node_b.signal(libc::SIGTERM);
    node_b.wait_exit(Duration::from_secs(10));
    drop(held);
}

/// The product's bound: with nothing in flight, SIGTERM ends the process within 1 s (service
/// managers and rolling deploys wait for it). On both backends, whatever `RLINKD_TEST_IO` says
/// (the suite's run on either backend then checks both): an idle pair, connected on every
/// shard, no link; the dialer gets SIGTERM first (its peer still up), then the acceptor (its
/// peer gone). Each exit time is printed, so the margin shows in the test output.
#[test]
fn an_idle_node_exits_within_one_second_of_sigterm_on_both_backends() {
    const BOUND: Duration = Duration::from_secs(1);
    for io in ["mio", "uring"] {
        let env = Env::new(&["a", "b"]);
        let (mut a, mut b) = pair(&[]);
        for p in [&mut a, &mut b] {
            p.top_extra.push(format!("io = {io:?}"));
        }
        let mut node_b = env.start(&b);
        let mut node_a = env.start(&a);
        if io == "uring" && (!runs_on_uring(&node_a) || !runs_on_uring(&node_b)) {
            continue;
        }
        expect_connected(&node_a, &node_b);
        for node in [&mut node_a, &mut node_b] {
            let signalled = Instant::now();
            node.signal(libc::SIGTERM);
            let status = node.wait_exit(Duration::from_secs(15));
            let took = signalled.elapsed();
            eprintln!(
                "io = {io}: node {} exited {took:?} after SIGTERM",
                node.name
            );
            assert!(
                status.is_some_and(|s| s.success()),
                "io = {io}: node {} did not exit cleanly after SIGTERM: {status:?}",
                node.name
            );
            assert!(
                took < BOUND,
                "io = {io}: idle node {} took {took:?} to exit after SIGTERM (bound {BOUND:?})",
                node.name
            );
        }
    }
}
