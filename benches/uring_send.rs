//! io_uring sends: `SENDMSG` (the kernel copies the payload) against `SENDMSG_ZC` (it sends from
//! the slot's pages and notifies when it is done with them), for GSO batches of 1 to 44
//! datagrams of 1,452 bytes (the data-center packet size), on loopback.
//!
//! The figure is the sending thread's CPU time (user + system, `CLOCK_THREAD_CPUTIME_ID`) per
//! batch, not wall time: on loopback the receive path runs in the sender's system calls too, as
//! it would for rlinkd's shard. A receiver thread drains the socket (8 MiB buffer) so sends are
//! not dropped for a full queue. Each iteration fills every send slot, submits, and waits for
//! every completion (and, zero-copy, every notification).
//!
//! Run: `cargo bench --bench uring_send`. Loopback only: there is no NIC here, and the kernel
//! copies zero-copy pages anyway when it delivers them locally, so this measures the fixed cost
//! of zero-copy (page pinning, notifications), not its gain on a real device.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rlinkd::io::udp::UdpSocket;
use rlinkd::io::uring::{UringError, UringIo};

const PACKET: usize = 1452;

fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain data; clock_gettime writes one into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A thread that reads and discards datagrams on a loopback socket until stopped.
fn receiver() -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    s.set_recv_buffer_size(8 << 20).ok();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let s: StdUdp = s.into();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !flag.load(Ordering::Relaxed) {
            let _ = s.recv(&mut buf);
        }
    });
    (addr, stop, t)
}

/// Fills every free send slot with a batch of `segments` datagrams, submits them and waits for
/// every completion. Returns the batches sent.
fn round(io: &mut UringIo, to: SocketAddr, segments: usize) -> u64 {
    let len = segments * PACKET;
    let mut sent = 0;
    while let Some(buf) = io.send_buffer() {
        buf[..len].fill(0x5a);
        io.send(to, len, PACKET);
        sent += 1;
    }
    while io.in_flight() > 1 {
        io.wait(Some(Duration::from_millis(100))).unwrap();
        io.reap(&mut |_| {});
    }
    sent
}

fn sends(c: &mut Criterion) {
    let (to, stop, rx) = receiver();
    let mut group = c.benchmark_group("uring_send");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    for segments in [1usize, 4, 16, 44] {
        for zero_copy in [false, true] {
            let udp = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), true, false).unwrap();
            let mut io = match UringIo::new(udp, None) {
                Ok(io) => io,
                Err(e @ (UringError::Setup(_) | UringError::Missing(_))) => {
                    eprintln!("skipped: {e}");
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            if zero_copy && !io.set_zero_copy_from(Some(0)) {
                eprintln!("skipped zero-copy: no SENDMSG_ZC");
                continue;
            }
            let batches_per_round = round(&mut io, to, segments);
            group.throughput(Throughput::Bytes(
                batches_per_round * (segments * PACKET) as u64,
            ));
            let name = if zero_copy { "sendmsg_zc" } else { "sendmsg" };
            group.bench_function(BenchmarkId::new(name, segments), |b| {
                b.iter_custom(|iters| {
                    let start = thread_cpu();
                    for _ in 0..iters {
                        round(&mut io, to, segments);
                    }
                    thread_cpu() - start
                })
            });
        }
    }
    group.finish();
    stop.store(true, Ordering::Relaxed);
    rx.join().unwrap();
}

criterion_group!(benches, sends);
criterion_main!(benches);
