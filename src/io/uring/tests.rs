//! The io_uring engine on loopback: provided buffers come back and the receive survives running
//! out of them, GRO buffers are split by segment size, GSO batches leave whole, a refused GSO
//! batch is resent datagram by datagram, an ICMP port unreachable is reported without ending
//! reception, the watched descriptor is reported, and teardown with operations in flight
//! waits for their completions. Skipped (with the reason) where the kernel cannot run the engine.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::engine::RECV_BUFFERS;
use super::{Completion, Token, UringError, UringIo};
use crate::io::udp::UdpSocket;
use crate::io::{DatagramIo, RecvMeta, Transmit};

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Datagram(Vec<u8>, SocketAddr),
    Unreachable(SocketAddr),
    Watched,
    LocalSent {
        link: usize,
        id: u64,
        res: i32,
        bufs: Vec<bytes::Bytes>,
    },
    LocalReceived {
        link: usize,
        id: u64,
        res: i32,
        buf: bytes::BytesMut,
    },
}

fn loopback(gso: bool, gro: bool) -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0".parse().unwrap(), gso, gro).unwrap()
}

/// An engine on a fresh loopback socket, or `None` (test skipped) where io_uring cannot run.
fn engine(gso: bool, gro: bool, watch: Option<i32>) -> Option<UringIo> {
    match UringIo::new(loopback(gso, gro), watch) {
        Ok(io) => Some(io),
        Err(e @ (UringError::Setup(_) | UringError::Missing(_) | UringError::BufRing(_))) => {
            eprintln!("skipped: io_uring backend cannot run here: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Waits and reaps until `done` holds for what was seen, or 5 s pass.
fn reap_until(io: &mut UringIo, seen: &mut Vec<Seen>, done: impl Fn(&[Seen]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(seen) && Instant::now() < deadline {
        io.wait(Some(Duration::from_millis(10))).unwrap();
        io.reap(&mut |c| match c {
            Completion::Datagram { data, from } => seen.push(Seen::Datagram(data.to_vec(), from)),
            Completion::PortUnreachable(a) => seen.push(Seen::Unreachable(a)),
            Completion::Watched => seen.push(Seen::Watched),
            Completion::LocalSent {
                link,
                id,
                res,
                bufs,
            } => seen.push(Seen::LocalSent {
                link,
                id,
                res,
                bufs,
            }),
            Completion::LocalReceived { link, id, res, buf } => {
                seen.push(Seen::LocalReceived { link, id, res, buf })
            }
        });
    }
}

/// Waits and reaps for `d` (submits what is queued and collects what completes meanwhile).
fn reap_for(io: &mut UringIo, seen: &mut Vec<Seen>, d: Duration) {
    let deadline = Instant::now() + d;
    reap_until(io, seen, |_| Instant::now() >= deadline);
}

fn datagrams(seen: &[Seen]) -> Vec<&[u8]> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Datagram(d, _) => Some(&d[..]),
            _ => None,
        })
        .collect()
}

fn recv_blocking(sock: &mut UdpSocket, buf: &mut [u8]) -> RecvMeta {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sock.recv(buf) {
            Ok(m) => return m,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn tokens_round_trip() {
    for t in [
        Token::Recv,
        Token::Send(0),
        Token::Send(31),
        Token::Watch,
        Token::Cancel,
        Token::LocalSend(0),
        Token::LocalSend(u32::MAX),
        Token::LocalRecv(7),
    ] {
        assert_eq!(Token::from_user_data(t.to_user_data()), Some(t));
    }
    assert_eq!(Token::from_user_data(0), None);
    assert_eq!(Token::from_user_data(u64::MAX), None);
}

/// Three times as many datagrams as provided buffers, all queued before the first reap: the
/// receive runs dry (ENOBUFS), is re-armed once the buffers are back, and every datagram
/// arrives intact and in order.
#[test]
fn buffers_come_back_and_the_receive_survives_running_dry() {
    let Some(mut rx) = engine(false, false, None) else {
        return;
    };
    let mut tx = loopback(false, false);
    let count = RECV_BUFFERS as usize * 3;
    for i in 0..count {
        let payload = vec![(i % 251) as u8; 100 + i];
        tx.send(&Transmit {
            to: rx.local_addr(),
            contents: &payload,
            segment_size: payload.len(),
        })
        .unwrap();
    }
    let mut seen = Vec::new();
    reap_until(&mut rx, &mut seen, |s| datagrams(s).len() >= count);
    let got = datagrams(&seen);
    assert_eq!(got.len(), count);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.len(), 100 + i, "datagram {i}");
        assert!(d.iter().all(|&b| b == (i % 251) as u8), "datagram {i}");
    }
    assert!(seen
        .iter()
        .all(|s| matches!(s, Seen::Datagram(_, from) if *from == tx.local_addr())));
    assert_eq!(rx.stats().datagrams_received, count as u64);
    let (_, enobufs, _) = rx.ring_counters();
    assert!(
        enobufs > 0,
        "the ring never ran dry: the re-arm path was not exercised"
    );
}

/// A GSO batch arrives as one GRO buffer (where the kernel coalesces) and is handed out as the
/// datagrams that were sent.
#[test]
fn a_gro_buffer_is_split_by_segment_size() {
    let Some(mut rx) = engine(false, true, None) else {
        return;
    };
    let mut tx = loopback(true, false);
    let payload: Vec<u8> = (0..10 * 1200 + 100).map(|i| (i % 253) as u8).collect();
    tx.send(&Transmit {
        to: rx.local_addr(),
        contents: &payload,
        segment_size: 1200,
    })
    .unwrap();
    let mut seen = Vec::new();
    reap_until(&mut rx, &mut seen, |s| datagrams(s).len() >= 11);
    let got = datagrams(&seen);
    let lens: Vec<usize> = got.iter().map(|d| d.len()).collect();
    let mut want = vec![1200; 10];
    want.push(100);
    assert_eq!(lens, want);
    assert_eq!(got.concat(), payload);
    if rx.gro() && tx.max_gso_segments() > 1 {
        assert_eq!(rx.stats().recv_calls, 1, "one GRO buffer expected");
    }
}

/// A batch queued on the ring leaves as one GSO send and arrives whole.
#[test]
fn a_batch_leaves_as_one_gso_send() {
    let Some(mut tx) = engine(true, false, None) else {
        return;
    };
    let mut rx = loopback(false, false);
    let payload: Vec<u8> = (0..5 * 1000 + 10).map(|i| (i % 241) as u8).collect();
    let buf = tx.send_buffer().unwrap();
    buf[..payload.len()].copy_from_slice(&payload);
    tx.send(rx.local_addr(), payload.len(), 1000);
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    let mut seen = Vec::new();
    reap_for(&mut tx, &mut seen, Duration::from_millis(50));
    while got.len() < payload.len() {
        let m = recv_blocking(&mut rx, &mut buf);
        got.extend_from_slice(&buf[..m.len]);
    }
    assert_eq!(got, payload);
    let s = tx.stats();
    assert_eq!(s.datagrams_sent, 6);
    assert_eq!(s.bytes_sent, payload.len() as u64);
    if tx.max_gso_segments() > 1 {
        assert_eq!(s.send_calls, 1);
    }
    assert_eq!(tx.in_flight(), 1, "only the receive is left in flight");
}

/// A zero-copy batch arrives whole, and its slot stays the kernel's until the notification.
#[test]
fn a_zero_copy_batch_arrives_and_its_slot_waits_for_the_notification() {
    let Some(mut tx) = engine(true, false, None) else {
        return;
    };
    if !tx.set_zero_copy_from(Some(0)) {
        eprintln!("skipped: no SENDMSG_ZC on this kernel");
        return;
    }
    let mut rx = loopback(false, false);
    let payload: Vec<u8> = (0..3 * 1000).map(|i| (i % 239) as u8).collect();
    let buf = tx.send_buffer().unwrap();
    buf[..payload.len()].copy_from_slice(&payload);
    tx.send(rx.local_addr(), payload.len(), 1000);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tx.in_flight() > 1 && Instant::now() < deadline {
        reap_for(&mut tx, &mut seen, Duration::from_millis(10));
    }
    assert_eq!(tx.in_flight(), 1, "the notification released the slot");
    assert_eq!(tx.zero_copy_sends(), 1);
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let m = recv_blocking(&mut rx, &mut buf);
        got.extend_from_slice(&buf[..m.len]);
    }
    assert_eq!(got, payload);
    assert_eq!(tx.stats().datagrams_sent, 3);
}

/// More segments than the kernel takes in one GSO send: refused, resent datagram by datagram,
/// and the socket sends one datagram per call from then on.
#[test]
fn a_refused_gso_batch_is_resent_one_datagram_at_a_time() {
    let Some(mut tx) = engine(true, false, None) else {
        return;
    };
    if tx.max_gso_segments() == 1 {
        eprintln!("skipped: no GSO on this kernel");
        return;
    }
    let mut rx = loopback(false, false);
    let payload: Vec<u8> = (0..200 * 100).map(|i| (i / 100) as u8).collect();
    let buf = tx.send_buffer().unwrap();
    buf[..payload.len()].copy_from_slice(&payload);
    tx.send(rx.local_addr(), payload.len(), 100);
    let mut seen = Vec::new();
    reap_for(&mut tx, &mut seen, Duration::from_millis(100));
    assert_eq!(tx.max_gso_segments(), 1);
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let m = recv_blocking(&mut rx, &mut buf);
        assert_eq!(m.len, 100);
        got.extend_from_slice(&buf[..m.len]);
    }
    assert_eq!(got, payload);
    assert_eq!(tx.stats().gso_fallbacks, 1);
}

/// A datagram to a closed port draws an ICMP port unreachable: it is reported, and the
/// multishot receive (which the socket error ended) is re-armed and still receives.
#[test]
fn port_unreachable_is_reported_and_reception_goes_on() {
    let Some(mut io) = engine(false, false, None) else {
        return;
    };
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let buf = io.send_buffer().unwrap();
    buf[..5].copy_from_slice(b"hello");
    io.send(closed, 5, 5);
    let mut seen = Vec::new();
    reap_until(&mut io, &mut seen, |s| {
        s.contains(&Seen::Unreachable(closed))
    });
    assert!(seen.contains(&Seen::Unreachable(closed)), "{seen:?}");

    let mut tx = loopback(false, false);
    tx.send(&Transmit {
        to: io.local_addr(),
        contents: b"still here",
        segment_size: 10,
    })
    .unwrap();
    reap_until(&mut io, &mut seen, |s| !datagrams(s).is_empty());
    assert_eq!(datagrams(&seen), vec![&b"still here"[..]]);
}

/// The watched descriptor's readiness is reported (the shard's mio `Poll` in production).
#[test]
fn the_watched_descriptor_is_reported() {
    let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let Some(mut io) = engine(false, false, Some(b.as_raw_fd())) else {
        return;
    };
    let mut seen = Vec::new();
    reap_for(&mut io, &mut seen, Duration::from_millis(100));
    assert!(!seen.contains(&Seen::Watched), "not readable yet");
    a.write_all(b"x").unwrap();
    reap_until(&mut io, &mut seen, |s| s.contains(&Seen::Watched));
    assert!(seen.contains(&Seen::Watched));
}

/// Teardown with the receive, the poll and sends in flight: everything is cancelled and its
/// last completion reaped before the memory goes.
#[test]
fn shutdown_waits_for_every_operation_in_flight() {
    let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let Some(mut io) = engine(true, true, Some(b.as_raw_fd())) else {
        return;
    };
    let rx = loopback(false, false);
    let mut queued = 0;
    while let Some(buf) = io.send_buffer() {
        buf[..1200 * 8].fill(7);
        io.send(rx.local_addr(), 1200 * 8, 1200);
        queued += 1;
    }
    assert!(queued > 1);
    // The sends are queued, the receive and the poll armed: nothing has completed.
    assert_eq!(io.in_flight(), queued + 2);
    assert!(io.shutdown(), "every operation completed");
    assert_eq!(io.in_flight(), 0);
}

/// Each wait is one `io_uring_enter`, counted as such and nothing else; a whole send and receive
/// round trip on the ring makes no other counted call.
#[test]
fn every_enter_is_counted_and_the_ring_makes_no_other_counted_call() {
    use crate::io::syscalls::{self, Syscall};
    let Some(mut io) = engine(true, true, None) else {
        return;
    };
    let mut peer = loopback(false, false);
    let before = syscalls::current();
    let enters = io.ring_counters().0;
    let buf = io.send_buffer().unwrap();
    buf[..100].fill(7);
    io.send(peer.local_addr(), 100, 100);
    io.wait(Some(Duration::ZERO)).unwrap();
    io.reap(&mut |_| {});
    let mut rx = vec![0u8; 2048];
    assert_eq!(recv_blocking(&mut peer, &mut rx).len, 100);
    let after = syscalls::current();
    let ring_enters = io.ring_counters().0 - enters;
    assert!(ring_enters >= 1);
    assert_eq!(
        after.get(Syscall::IoUringEnter) - before.get(Syscall::IoUringEnter),
        ring_enters
    );
    // The peer's receive is a plain socket's recvmsg; the engine made no other call.
    let others = (after.total() - before.total())
        - ring_enters
        - (after.get(Syscall::UdpRecvmsg) - before.get(Syscall::UdpRecvmsg));
    assert_eq!(others, 0);
}

/// Counts the ERROR events logged on this thread while it is installed (teardown logs one when
/// it leaks memory the kernel may still use).
struct ErrorCount(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorCount {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// `UringIo` dropped (not shut down first: the path of a shard that ends on an error or a
/// panic) while the kernel holds its memory: the multishot receive armed and picking provided
/// buffers for datagrams that keep arriving from another thread, the poll armed, and every
/// send slot submitted (zero-copy ones too where the kernel has them, whose slots stay the
/// kernel's until the notification). The drop must wait for every last completion, free
/// nothing early and log no leak; afterwards the kernel holds no reference to the socket, so
/// its port can be bound again at once (a request still in flight would keep it bound).
#[test]
fn dropping_with_the_receive_armed_and_sends_submitted_waits_for_every_completion() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;

    let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let Some(mut io) = engine(true, true, Some(b.as_raw_fd())) else {
        return;
    };
    let zero_copy = io.set_zero_copy_from(Some(4096));
    let addr = io.local_addr();
    // Datagrams without pause until told to stop (at most 10 s), so the kernel is writing
    // provided buffers while the engine tears down.
    let stop = Arc::new(AtomicBool::new(false));
    let blaster = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let payload = [0x5au8; 1200];
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if s.send_to(&payload, addr).is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
            sent
        })
    };
    // Wait until datagrams arrive: the receive is armed and filling buffers.
    let mut seen = Vec::new();
    reap_until(&mut io, &mut seen, |s| datagrams(s).len() >= 16);
    assert!(datagrams(&seen).len() >= 16, "no datagram arrived");

    // Every slot: GSO batches of 8 KiB (zero-copy where available) and single datagrams of
    // 1 KiB, to a socket that never reads.
    let rx = loopback(false, false);
    let mut queued = 0;
    while let Some(buf) = io.send_buffer() {
        let len = if queued % 2 == 0 { 1200 * 7 } else { 1000 };
        buf[..len].fill(queued as u8);
        io.send(rx.local_addr(), len, 1200);
        queued += 1;
    }
    assert!(queued > 1);
    // One enter submits them: from here the kernel owns every slot, the receive's msghdr and
    // the buffers it lends, and nothing is reaped before the drop.
    io.wait(Some(Duration::ZERO)).unwrap();
    assert!(
        io.in_flight() >= queued + 2,
        "sends {queued}, in flight {}",
        io.in_flight()
    );
    if zero_copy {
        assert!(io.zero_copy_sends() > 0);
    }

    let errors = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(ErrorCount(Arc::clone(&errors)));
    tracing::subscriber::with_default(subscriber, || drop(io));
    stop.store(true, Ordering::SeqCst);
    let sent = blaster.join().unwrap();
    assert!(sent > 0);
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "teardown logged an error (operations left in flight, memory leaked)"
    );
    // Nothing on the ring holds the socket any more: its port is free at once.
    std::net::UdpSocket::bind(addr).expect("the port is free right after the drop");
}

/// A connected Unix socket pair: the link's end (non-blocking, as the node's) and the local
/// program's.
fn unix_pair() -> (
    std::rc::Rc<crate::io::local::LocalStream>,
    std::os::unix::net::UnixStream,
) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let a = crate::io::local::LocalStream::Unix(mio::net::UnixStream::from_std(a));
    (std::rc::Rc::new(a), b)
}

#[test]
fn local_sends_leave_with_the_enter_in_order_and_a_full_socket_keeps_the_rest() {
    use super::local_send::{LocalOutbox, RingWriter};
    use bytes::Bytes;
    use std::io::Read;
    let Some(mut io) = engine(false, false, None) else {
        return;
    };
    let outbox = LocalOutbox::shared(1 << 20);
    io.set_local_outbox(outbox.clone());
    let (sock, mut peer) = unix_pair();
    let mut w = RingWriter::new(outbox.clone(), 3);
    let mut seen = Vec::new();
    // Writes until the socket is full; each completion goes back to the writer.
    let chunk = Bytes::from(vec![7u8; 64 << 10]);
    let mut accepted = 0usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        accepted += w.write(&sock, &chunk).unwrap();
        reap_until(&mut io, &mut seen, |s| !s.is_empty());
        for s in seen.drain(..) {
            if let Seen::LocalSent {
                link,
                id,
                res,
                bufs,
            } = s
            {
                assert_eq!(link, 3);
                assert!(w.on_sent(id, res, bufs).is_some());
            }
        }
        if w.unsent() > 0 {
            break;
        }
    }
    assert!(w.unsent() > 0, "the socket never filled");
    assert!(io.local_sends() >= 2);
    // The rest goes again at once, parked: it completes only once the reader makes room.
    assert!(w.resume(&sock));
    reap_for(&mut io, &mut seen, Duration::from_millis(100));
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::LocalSent { .. })),
        "a parked send waits for room: {seen:?}"
    );
    // The reader takes everything: not one byte is lost or reordered.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w.flushed() && Instant::now() < deadline {
        while let Ok(n) = peer.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
        reap_until(&mut io, &mut seen, |s| !s.is_empty());
        for s in seen.drain(..) {
            if let Seen::LocalSent { id, res, bufs, .. } = s {
                w.on_sent(id, res, bufs);
                // What the socket did not take goes again (the connection does this).
                w.resume(&sock);
            }
        }
    }
    assert!(w.flushed());
    while got.len() < accepted {
        let n = peer.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), accepted);
    assert!(got.iter().all(|&b| b == 7));
}

#[test]
fn a_local_send_to_a_closed_peer_reports_broken_pipe_and_teardown_waits_for_sends() {
    use super::local_send::{LocalOutbox, RingWriter};
    use bytes::Bytes;
    let Some(mut io) = engine(false, false, None) else {
        return;
    };
    let outbox = LocalOutbox::shared(1 << 20);
    io.set_local_outbox(outbox.clone());
    let (sock, peer) = unix_pair();
    drop(peer);
    let mut w = RingWriter::new(outbox.clone(), 0);
    let b = Bytes::from_static(b"late");
    assert_eq!(w.write(&sock, &b).unwrap(), 4);
    let mut seen = Vec::new();
    reap_until(&mut io, &mut seen, |s| !s.is_empty());
    let Some(Seen::LocalSent { id, res, bufs, .. }) = seen.pop() else {
        panic!("no completion: {seen:?}");
    };
    assert_eq!(res, -libc::EPIPE);
    w.on_sent(id, res, bufs);
    assert_eq!(
        w.write(&sock, &b).unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
    // A send queued and never waited for: teardown submits nothing new, cancels what is in
    // flight and sees every completion.
    let (sock2, _peer2) = unix_pair();
    let mut w2 = RingWriter::new(outbox.clone(), 1);
    w2.write(&sock2, &b).unwrap();
    io.wait(Some(Duration::ZERO)).unwrap();
    assert!(io.shutdown());
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn a_links_writes_of_a_turn_leave_as_one_gathered_send_in_order() {
    use super::local_send::{LocalOutbox, RingWriter};
    use bytes::Bytes;
    use std::io::Read;
    let Some(mut io) = engine(false, false, None) else {
        return;
    };
    let outbox = LocalOutbox::shared(1 << 20);
    io.set_local_outbox(outbox.clone());
    let (sock, mut peer) = unix_pair();
    let mut w = RingWriter::new(outbox.clone(), 2);
    let parts: Vec<Bytes> = (0..5u8)
        .map(|i| Bytes::from(vec![i; 1000 + i as usize]))
        .collect();
    for p in &parts {
        assert_eq!(w.write(&sock, p).unwrap(), p.len());
    }
    let mut seen = Vec::new();
    reap_until(&mut io, &mut seen, |s| !s.is_empty());
    assert_eq!(
        io.local_sends(),
        1,
        "one request for the turn's five writes"
    );
    let total: usize = parts.iter().map(Bytes::len).sum();
    let Some(Seen::LocalSent { id, res, bufs, .. }) = seen.pop() else {
        panic!("no completion: {seen:?}");
    };
    assert_eq!((res as usize, bufs.len()), (total, 5));
    w.on_sent(id, res, bufs);
    assert!(w.flushed());
    let mut got = vec![0u8; total];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, parts.concat());
}

#[test]
fn a_parked_local_read_brings_bytes_into_the_lent_room_and_a_dropped_reader_cancels_it() {
    use super::local_recv::{Received, RingReader};
    use super::local_send::LocalOutbox;
    use bytes::BytesMut;
    use std::io::Write;
    let Some(mut io) = engine(false, false, None) else {
        return;
    };
    let outbox = LocalOutbox::shared(1 << 20);
    io.set_local_outbox(outbox.clone());
    let (sock, mut peer) = unix_pair();
    let mut r = RingReader::new(outbox.clone(), 5);
    // Room lent from a block that already holds bytes: the read joins them without a copy.
    let mut block = BytesMut::with_capacity(4096);
    block.extend_from_slice(b"head:");
    let room = block.split_off(block.len());
    r.arm(&sock, room, 100);
    let mut seen = Vec::new();
    reap_for(&mut io, &mut seen, Duration::from_millis(50));
    assert!(seen.is_empty(), "parked until the peer writes: {seen:?}");
    assert_eq!(io.in_flight(), 1 + 1, "the read and the QUIC receive");
    peer.write_all(b"hello").unwrap();
    reap_until(&mut io, &mut seen, |s| !s.is_empty());
    let Some(Seen::LocalReceived { link, id, res, buf }) = seen.pop() else {
        panic!("no completion: {seen:?}");
    };
    assert_eq!((link, res), (5, 5));
    assert!(r.on_received(id, res, buf));
    let Some(Received::Data(chunk, 100)) = r.take() else {
        panic!("no data");
    };
    let at = block.as_ptr() as usize + block.len();
    assert_eq!(chunk.as_ptr() as usize, at, "read where it was lent");
    block.unsplit(chunk);
    assert_eq!(&block[..], b"head:hello");
    // A read parked when its link ends is cancelled: its completion comes, nothing is left.
    r.arm(&sock, BytesMut::with_capacity(64), 64);
    reap_for(&mut io, &mut seen, Duration::from_millis(20));
    drop(r);
    reap_until(&mut io, &mut seen, |s| !s.is_empty());
    assert!(
        matches!(seen.pop(), Some(Seen::LocalReceived { res, .. }) if res == -libc::ECANCELED),
        "cancelled"
    );
    assert_eq!(io.in_flight(), 1);
    // Teardown with a read parked: cancelled, every completion seen.
    let mut r2 = RingReader::new(outbox.clone(), 6);
    r2.arm(&sock, BytesMut::with_capacity(64), 64);
    io.wait(Some(Duration::ZERO)).unwrap();
    assert!(io.shutdown());
    assert_eq!(io.in_flight(), 0);
}
