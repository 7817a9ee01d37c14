//! RawSocket rule breakers: bad client handshakes at a link endpoint, frames over the receiver's
//! announced limit in either direction. Each is refused or closed on its own; other links on the
//! same nodes keep working and the peer router never sees a bad client.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rlinkd::addr::LocalAddr;
use rlinkd::cluster::{NodePlan, NodeProcess};
use rlinkd::endpoints::{EchoRouter, RouterOptions};
use rlinkd::rawsocket::MaxLen;

/// Nodes a -> b with one echo route; `a.sock` on node a reaches it.
struct Echo {
    router: EchoRouter,
    endpoint: LocalAddr,
    a: NodeProcess,
    b: NodeProcess,
}

fn echo_cluster(
    env: &Env,
    quic: &[&str],
    extra: impl FnOnce(&mut NodePlan, &mut NodePlan),
) -> Echo {
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(quic);
    let endpoint = env.unix("a.sock");
    a.links.push(("b".into(), endpoint.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    extra(&mut a, &mut b);
    let nb = env.start(&b);
    let na = env.start(&a);
    expect_connected(&na, &nb);
    Echo {
        router,
        endpoint,
        a: na,
        b: nb,
    }
}

#[test]
fn bad_client_handshakes_are_answered_or_closed_and_harm_no_other_link() {
    let env = Env::new(&["a", "b"]);
    let mut c = echo_cluster(&env, &["connect_timeout = \"2s\""], |_, _| {});
    // A link opened before the bad clients, kept open through them.
    let mut before = client(&c.endpoint, hs(15));
    echo_on(&mut before, &[pattern(10, 1)]).unwrap();

    let mut garbage = pattern(1000, 5);
    garbage[0] = 0x42;
    let cases: [(&str, Vec<u8>, &[u8]); 7] = [
        ("reserved bits", vec![0x7f, 0xf3, 0, 1], &[0x7f, 0x30, 0, 0]),
        ("serializer 0", vec![0x7f, 0xf0, 0, 0], &[0x7f, 0x10, 0, 0]),
        ("serializer 7", vec![0x7f, 0xf7, 0, 0], &[0x7f, 0x10, 0, 0]),
        ("serializer 15", vec![0x7f, 0x2f, 0, 0], &[0x7f, 0x10, 0, 0]),
        ("bad magic", vec![0x00, 0xf3, 0, 0], &[]),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: rlinkd\r\n\r\n".to_vec(),
            &[],
        ),
        ("random bytes", garbage, &[]),
    ];
    for (what, sent, reply) in cases {
        let conn = RawConn::connect(&c.endpoint);
        conn.write(&sent).unwrap();
        let (got, ended) = conn
            .read_until_closed(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, reply, "{what}: bytes before the close ({ended:?})");
    }

    // A client that sends half a handshake and then nothing is closed after connect_timeout.
    let conn = RawConn::connect(&c.endpoint);
    conn.write(&[0x7f, 0xf3]).unwrap();
    let (got, _) = conn
        .read_until_closed(Duration::from_secs(15))
        .expect("half a handshake: closed after connect_timeout");
    assert!(got.is_empty(), "half a handshake: got {got:02x?}");
    expect_log(
        &c.a,
        "no RawSocket handshake from the client within",
        Duration::from_secs(5),
    );

    // Node a refused them itself: none reached node b's router.
    assert_eq!(c.router.stats().connections, 1, "router saw a bad client");
    assert_eq!(c.router.stats().bad_handshakes, 0);
    assert!(count_lines(&c.a, &["client sent a bad handshake"]) >= 4);

    echo_on(&mut before, &[pattern(70_000, 2), pattern(3, 3)]).unwrap();
    assert_link_works(&c.endpoint);
    assert!(c.a.is_running() && c.b.is_running());
}

#[test]
fn split_and_glued_handshakes_are_accepted() {
    // Crossbar accepts both; rlinkd must relay them.
    let env = Env::new(&["a", "b"]);
    let c = echo_cluster(&env, &[], |_, _| {});

    // One octet at a time, with pauses.
    let conn = RawConn::connect(&c.endpoint);
    for b in [0x7f, 0xf3, 0, 0] {
        conn.write(&[b]).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(conn.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    let f = frame(&pattern(300, 1));
    conn.write(&f).unwrap();
    assert_eq!(conn.read_exact(f.len(), IO_WAIT).unwrap(), f);

    // Handshake and two messages in one write.
    let conn = RawConn::connect(&c.endpoint);
    let (f1, f2) = (frame(&pattern(5, 2)), frame(&pattern(2000, 3)));
    let mut glued = vec![0x7f, 0xf2, 0, 0];
    glued.extend_from_slice(&f1);
    glued.extend_from_slice(&f2);
    conn.write(&glued).unwrap();
    let mut want = vec![0x7f, 0xf2, 0, 0];
    want.extend_from_slice(&f1);
    want.extend_from_slice(&f2);
    assert_eq!(conn.read_exact(want.len(), IO_WAIT).unwrap(), want);
}

/// A router that accepts any handshake with a 16 MiB limit, waits for one frame from the client
/// and then sends `reply_len` bytes of payload in one frame, whatever the client's limit.
struct RogueRouter {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    /// Connections that saw their end (EOF or error) after the frame was sent.
    closed: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl RogueRouter {
    fn start(path: std::path::PathBuf, reply_len: usize) -> RogueRouter {
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicU64::new(0));
        let (s, cl) = (Arc::clone(&stop), Arc::clone(&closed));
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let cl = Arc::clone(&cl);
                thread::spawn(move || {
                    conn.set_nonblocking(false).ok();
                    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
                    let mut hs = [0u8; 4];
                    let mut prefix = [0u8; 4];
                    if conn.read_exact(&mut hs).is_err()
                        || conn.write_all(&[0x7f, 0xf3, 0, 0]).is_err()
                        || conn.read_exact(&mut prefix).is_err()
                    {
                        return;
                    }
                    let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
                    if conn.read_exact(&mut payload).is_err()
                        || conn.write_all(&frame(&pattern(reply_len, 9))).is_err()
                    {
                        return;
                    }
                    let mut sink = [0u8; 1024];
                    loop {
                        match conn.read(&mut sink) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                            Err(_) => break,
                        }
                    }
                    cl.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RogueRouter {
            path,
            stop,
            closed,
            handle: Some(handle),
        }
    }
}

impl Drop for RogueRouter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().ok();
        }
        std::fs::remove_file(&self.path).ok();
    }
}

#[test]
fn frames_over_the_receivers_limit_close_only_their_link() {
    let env = Env::new(&["a", "b"]);
    let rogue = RogueRouter::start(env.path("rogue.sock"), 1024);
    let small_opts = RouterOptions {
        max_len: MaxLen::MIN, // 512 B
        ..RouterOptions::default()
    };
    let small = EchoRouter::start(&env.unix("small.sock"), small_opts).unwrap();
    let to_rogue = env.unix("a-rogue.sock");
    let to_small = env.unix("a-small.sock");
    let (rogue_path, small_addr) = (
        LocalAddr::Unix(rogue.path.clone()),
        small.local_addr().clone(),
    );
    let mut c = echo_cluster(&env, &[], |a, b| {
        a.links.push(("b".into(), to_rogue.clone(), "rogue".into()));
        a.links.push(("b".into(), to_small.clone(), "small".into()));
        b.routes.push(("rogue".into(), rogue_path));
        b.routes.push(("small".into(), small_addr));
    });
    let mut bystander = client(&c.endpoint, hs(15));
    echo_on(&mut bystander, &[pattern(100, 1)]).unwrap();

    // Towards the client: it announced 512 B (exponent 0); the router sends 1 KiB anyway.
    let conn = RawConn::connect(&to_rogue);
    conn.write(&[0x7f, 0x03, 0, 0]).unwrap();
    assert_eq!(conn.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    conn.write(&frame(&pattern(10, 1))).unwrap();
    let (got, _) = conn
        .read_until_closed(Duration::from_secs(10))
        .expect("link with an oversized frame towards the client is closed");
    assert!(
        got.is_empty(),
        "{} bytes of the oversized frame reached the client",
        got.len()
    );
    assert!(
        wait_until(Duration::from_secs(10), || rogue
            .closed
            .load(Ordering::SeqCst)
            == 1),
        "the router's connection of the failed link was not closed"
    );

    // Towards the router: it announced 512 B; exactly 512 B passes, 513 B closes the link.
    let mut c512 = client(&to_small, hs(15));
    assert_eq!(c512.reply().encode(), [0x7f, 0x03, 0, 0]);
    echo_on(&mut c512, &[pattern(512, 1)]).unwrap();
    c512.send(&pattern(513, 2)).unwrap();
    expect_client_closed(&mut c512, Duration::from_secs(10))
        .expect("link with an oversized frame towards the router is closed");
    assert_eq!(
        small.stats().frames,
        1,
        "the oversized frame reached the router"
    );
    assert_eq!(small.stats().frame_errors, 0);
    assert!(
        wait_until(Duration::from_secs(10), || small.stats().active == 0),
        "the router's connection of the failed link was not closed"
    );
    // Both refusals are logged as RawSocket violations with the sizes.
    assert!(
        find_line(&c.a, &["exceeds the limit"]).is_some()
            || find_line(&c.b, &["exceeds the limit"]).is_some()
    );

    echo_on(&mut bystander, &[pattern(70_000, 2)]).unwrap();
    assert_link_works(&c.endpoint);
    let mut c2 = client(&to_small, hs(15));
    echo_on(&mut c2, &[pattern(500, 3)]).unwrap();
    assert!(c.a.is_running() && c.b.is_running());
}

#[test]
fn ping_and_pong_never_reach_the_router_and_bad_prefixes_close_the_link() {
    use rlinkd::rawsocket::{FrameHeader, FrameKind};
    let env = Env::new(&["a", "b"]);
    let mut c = echo_cluster(&env, &[], |_, _| {});

    // Crossbar closes a connection on a PING: rlinkd drops PING/PONG frames from the client and
    // relays the messages around them.
    let mut cl = client(&c.endpoint, hs(15));
    cl.send(&pattern(10, 1)).unwrap();
    cl.send_frame(FrameKind::Ping, b"are you there").unwrap();
    cl.send_frame(FrameKind::Pong, b"yes").unwrap();
    cl.send(&pattern(20, 2)).unwrap();
    assert_eq!(cl.recv().unwrap(), pattern(10, 1));
    assert_eq!(cl.recv().unwrap(), pattern(20, 2));
    let s = c.router.stats();
    assert_eq!((s.closed_on_ping, s.frames), (0, 2), "router stats {s:?}");
    echo_on(&mut cl, &[pattern(3000, 3)]).unwrap();

    // Reserved bits, a reserved frame type, the X bit with a length: the link is closed.
    let mut reserved_type = FrameHeader::message(3).encode();
    reserved_type[0] |= 0x03;
    for (what, prefix) in [
        ("reserved bits", [0x10, 0, 0, 3]),
        ("reserved type 3", reserved_type),
        ("X bit with a length", [0x08, 0, 0, 3]),
    ] {
        let mut bad = client(&c.endpoint, hs(15));
        echo_on(&mut bad, &[pattern(5, 4)]).unwrap();
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(b"abc");
        bad.send_raw(&bytes).unwrap();
        expect_client_closed(&mut bad, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert_eq!(
        c.router.stats().frame_errors,
        0,
        "a bad prefix reached the router"
    );
    assert!(count_lines(&c.a, &["WARN", "link out", "bad RawSocket frame"]) >= 3);

    echo_on(&mut cl, &[pattern(100, 5)]).unwrap();
    assert_link_works(&c.endpoint);
    assert!(c.a.is_running() && c.b.is_running());
}

/// A realm is the client's to choose: one with a newline and a fake log line in it is logged
/// escaped, on one line, and forges nothing.
#[test]
fn a_realm_cannot_forge_a_log_line() {
    let EchoPair {
        env,
        router: _router,
        a,
        b,
        ep,
    } = echo_pair(&[]);
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let forged = "2026-01-01T00:00:00.000000Z  WARN forged: peer refused";
    let realm = format!("realm1\n{forged}\u{1b}[2J");
    // CBOR [1, realm, {}]: a WAMP HELLO.
    let mut hello = vec![0x83, 0x01, 0x78, realm.len() as u8];
    hello.extend_from_slice(realm.as_bytes());
    hello.push(0xa0);
    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[hello]).unwrap();
    drop(c);
    for node in [&node_a, &node_b] {
        expect_log(node, "realm=\"realm1\\n", IO_WAIT);
        let log = node.log_text();
        assert!(
            !log.lines().any(|l| l.starts_with(forged)),
            "node {} logged a forged line",
            node.name
        );
        assert!(
            !log.contains('\u{1b}'),
            "node {} logged an escape sequence",
            node.name
        );
    }
}
