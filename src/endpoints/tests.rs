use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::addr::LocalAddr;
use crate::rawsocket::{ClientHandshake, ErrorCode, FrameKind, MaxLen, RouterReply, Serializer};

const TIMEOUT: Duration = Duration::from_secs(20);

fn hs(max_len: MaxLen) -> ClientHandshake {
    ClientHandshake {
        max_len,
        serializer: Serializer::Cbor,
    }
}

fn unix_addr(dir: &tempfile::TempDir) -> LocalAddr {
    LocalAddr::Unix(dir.path().join("router.sock"))
}

fn tcp_any() -> LocalAddr {
    "tcp:127.0.0.1:0".parse().unwrap()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add((i >> 11) as u8))
        .collect()
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        thread::sleep(Duration::from_millis(5));
    }
}

/// End of stream, or a reset when the router closed with our bytes still unread.
fn closed<T: std::fmt::Debug>(r: Result<T, ClientError>) -> bool {
    match r {
        Err(ClientError::Closed) => true,
        Err(ClientError::Io(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        other => panic!("expected a closed connection, got {other:?}"),
    }
}

const SIZES: [usize; 6] = [0, 1, 1024, 64 * 1024, 1 << 20, 1 << 24];

fn echo_all_sizes(addr: &LocalAddr) {
    let router = EchoRouter::start(addr, RouterOptions::default()).unwrap();
    let (client, reply) =
        RawSocketClient::connect(router.local_addr(), hs(MaxLen::MAX), TIMEOUT).unwrap();
    assert_eq!(
        reply,
        RouterReply::Accepted {
            max_len: MaxLen::MAX,
            serializer: Serializer::Cbor
        }
    );
    let (mut tx, mut rx) = client.split();
    let writer = thread::spawn(move || {
        for size in SIZES {
            tx.send(&payload(size)).unwrap();
        }
        tx
    });
    for size in SIZES {
        let got = rx.recv().unwrap();
        assert_eq!(got.len(), size);
        assert!(got == payload(size), "payload of {size} bytes differs");
    }
    let tx = writer.join().unwrap();
    tx.shutdown_write().unwrap();
    assert!(matches!(rx.recv(), Err(ClientError::Closed)));
    let stats = router.stats();
    assert_eq!(stats.frames, SIZES.len() as u64);
    assert_eq!(stats.echoed, SIZES.len() as u64);
    assert_eq!(stats.bytes, SIZES.iter().sum::<usize>() as u64);
    assert_eq!(stats.connections, 1);
}

#[test]
fn echo_over_unix() {
    let dir = tempfile::tempdir().unwrap();
    echo_all_sizes(&unix_addr(&dir));
}

#[test]
fn echo_over_tcp() {
    echo_all_sizes(&tcp_any());
}

#[test]
fn twisted_16_mib_prefix_is_echoed_verbatim() {
    let router = EchoRouter::start(&tcp_any(), RouterOptions::default()).unwrap();
    let (client, _) =
        RawSocketClient::connect(router.local_addr(), hs(MaxLen::MAX), TIMEOUT).unwrap();
    let (mut tx, rx) = client.split();
    let big = payload(1 << 24);
    let expected = big.clone();
    let writer = thread::spawn(move || {
        tx.send_raw(&[1, 0, 0, 0]).unwrap();
        tx.send_raw(&big).unwrap();
        tx.send(b"after").unwrap();
    });
    // Read the raw echo to check the prefix octets come back unchanged.
    let mut raw = rx;
    let (h, p) = raw.recv_frame().unwrap();
    assert_eq!(h.kind, FrameKind::Message);
    assert!(p == expected);
    assert_eq!(raw.recv().unwrap(), b"after");
    writer.join().unwrap();
    // And byte-level: a second connection reading with a plain socket.
    let mut s = LocalStream::connect(router.local_addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(&hs(MaxLen::MAX).encode()).unwrap();
    s.write_all(&[1, 0, 0, 0]).unwrap();
    let mut reply = [0u8; 8];
    let writer = {
        let mut w = s.try_clone().unwrap();
        thread::spawn(move || w.write_all(&vec![9u8; 1 << 24]).unwrap())
    };
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0x7F, 0xF3, 0, 0, 1, 0, 0, 0]);
    writer.join().unwrap();
}

#[test]
fn rejection_reaches_the_client() {
    for code in [ErrorCode::MaxConnectionCount, ErrorCode::MaxLenUnacceptable] {
        let opts = RouterOptions {
            reply: RouterBehaviour::Reject(code),
            ..RouterOptions::default()
        };
        let router = EchoRouter::start(&tcp_any(), opts).unwrap();
        let r = RawSocketClient::connect(router.local_addr(), hs(MaxLen::MAX), TIMEOUT);
        assert!(
            matches!(r, Err(ClientError::Rejected(c)) if c == code.code()),
            "{r:?}"
        );
        wait_for(|| router.stats().rejected == 1);
    }
}

#[test]
fn bad_handshakes_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let router = EchoRouter::start(&unix_addr(&dir), RouterOptions::default()).unwrap();
    let exchange = |octets: [u8; 4]| {
        let mut s = LocalStream::connect(router.local_addr()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(&octets).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    // Bad magic: closed without a reply.
    assert_eq!(exchange([0x00, 0xF3, 0, 0]), Vec::<u8>::new());
    // Unsupported serializer and reserved bits: error reply, then closed.
    assert_eq!(exchange([0x7F, 0xF7, 0, 0]), vec![0x7F, 0x10, 0, 0]);
    assert_eq!(exchange([0x7F, 0xF3, 0, 1]), vec![0x7F, 0x30, 0, 0]);
    wait_for(|| router.stats().bad_handshakes == 3);
}

#[test]
fn ping_closes_the_connection() {
    let router = EchoRouter::start(&tcp_any(), RouterOptions::default()).unwrap();
    let (mut c, _) =
        RawSocketClient::connect(router.local_addr(), hs(MaxLen::MAX), TIMEOUT).unwrap();
    c.send(b"hello").unwrap();
    assert_eq!(c.recv().unwrap(), b"hello");
    c.send_frame(FrameKind::Ping, b"are you there").unwrap();
    assert!(closed(c.recv()));
    assert_eq!(router.stats().closed_on_ping, 1);
}

#[test]
fn oversize_frames() {
    // Over the router's limit: the connection is closed.
    let opts = RouterOptions {
        max_len: MaxLen::MIN,
        ..RouterOptions::default()
    };
    let router = EchoRouter::start(&tcp_any(), opts).unwrap();
    let (mut c, reply) =
        RawSocketClient::connect(router.local_addr(), hs(MaxLen::MAX), TIMEOUT).unwrap();
    assert!(matches!(reply, RouterReply::Accepted { max_len, .. } if max_len == MaxLen::MIN));
    c.send(&payload(512)).unwrap();
    assert_eq!(c.recv().unwrap(), payload(512));
    c.send(&payload(513)).unwrap();
    assert!(closed(c.recv()));
    assert_eq!(router.stats().frame_errors, 1);

    // Over the client's limit: not echoed (like Crossbar's sender), the connection stays.
    let router = EchoRouter::start(&tcp_any(), RouterOptions::default()).unwrap();
    let (mut c, _) =
        RawSocketClient::connect(router.local_addr(), hs(MaxLen::MIN), TIMEOUT).unwrap();
    c.send(&payload(1000)).unwrap();
    c.send(b"small").unwrap();
    assert_eq!(c.recv().unwrap(), b"small");
    assert_eq!(router.stats().dropped_oversize, 1);

    // Nothing else comes back.
    let mut s = c.split().1;
    assert!(s.set_read_timeout(Some(Duration::from_millis(50))).is_ok());
    assert!(matches!(s.recv(), Err(ClientError::Timeout)));
}

#[test]
fn sink_counts_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RouterOptions {
        mode: RouterMode::Sink,
        ..RouterOptions::default()
    };
    let router = EchoRouter::start(&unix_addr(&dir), opts).unwrap();
    let (mut c, _) =
        RawSocketClient::connect(router.local_addr(), hs(MaxLen::MAX), TIMEOUT).unwrap();
    let mut total = 0;
    for i in 0..200 {
        let p = payload(i * 37);
        total += p.len() as u64;
        c.send(&p).unwrap();
    }
    // A frame split across writes.
    c.send_raw(&[0, 0]).unwrap();
    thread::sleep(Duration::from_millis(20));
    c.send_raw(&[0, 2, 7]).unwrap();
    c.send_raw(&[8]).unwrap();
    wait_for(|| router.stats().frames == 201);
    assert_eq!(router.stats().bytes, total + 2);
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    assert!(matches!(c.recv(), Err(ClientError::Timeout)));
}

#[test]
fn stop_closes_connections_and_the_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unix_addr(&dir);
    let mut router = EchoRouter::start(&addr, RouterOptions::default()).unwrap();
    let (mut c, _) = RawSocketClient::connect(&addr, hs(MaxLen::MAX), TIMEOUT).unwrap();
    c.send(b"x").unwrap();
    assert_eq!(c.recv().unwrap(), b"x");
    assert_eq!(router.stats().active, 1);
    router.stop();
    assert!(closed(c.recv()));
    assert_eq!(router.stats().active, 0);
    let LocalAddr::Unix(path) = &addr else {
        unreachable!()
    };
    assert!(!path.exists());
    router.stop(); // idempotent
    drop(router);
}

#[test]
fn stale_socket_file_is_replaced_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unix_addr(&dir);
    let LocalAddr::Unix(path) = &addr else {
        unreachable!()
    };
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    assert!(path.exists());
    let router = EchoRouter::start(&addr, RouterOptions::default()).unwrap();
    let e = EchoRouter::start(&addr, RouterOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let (mut c, _) = RawSocketClient::connect(&addr, hs(MaxLen::MAX), TIMEOUT).unwrap();
    c.send(b"still mine").unwrap();
    assert_eq!(c.recv().unwrap(), b"still mine");
    drop(router);
}

#[test]
fn tcp_port_zero_reports_the_real_port() {
    let router = EchoRouter::start(&tcp_any(), RouterOptions::default()).unwrap();
    let LocalAddr::Tcp(a) = router.local_addr() else {
        panic!("not tcp")
    };
    assert_ne!(a.port(), 0);
}
