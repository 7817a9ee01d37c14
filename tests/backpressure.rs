//! Backpressure: a link whose client stops reading holds back only its own bytes. Other links
//! on the same QUIC connection keep flowing, and the stalled link loses nothing when its
//! reader comes back.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FRAME: usize = 64 << 10;
/// 64 MiB in 64 KiB frames: more than every buffer between the client and the router.
const FRAMES: usize = 1024;

#[test]
fn a_stalled_reader_does_not_block_other_links_and_loses_nothing() {
    let EchoPair {
        env,
        router,
        a,
        b,
        ep,
    } = echo_pair(&[]);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    // Link 1: the client writes 64 KiB frames from a thread and does not read the echoes.
    let stalled = RawConn::connect(&ep);
    stalled.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(stalled.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    let writer_sock = stalled.stream.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done) = (Arc::clone(&written), Arc::clone(&writer_done));
        thread::spawn(move || -> std::io::Result<()> {
            for k in 0..FRAMES {
                (&writer_sock).write_all(&frame(&pattern(FRAME, k as u64)))?;
                written.fetch_add(1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
            Ok(())
        })
    };
    // Wait until the writer is blocked (no frame accepted for 2 s) or has written everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    loop {
        thread::sleep(Duration::from_millis(100));
        let n = written.load(Ordering::SeqCst);
        if writer_done.load(Ordering::SeqCst) {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writer neither finished nor blocked"
        );
    }
    let parked = written.load(Ordering::SeqCst);
    eprintln!(
        "stalled link: writer {} after {parked} frames ({} MiB)",
        if writer_done.load(Ordering::SeqCst) {
            "finished"
        } else {
            "blocked"
        },
        (parked * FRAME as u64) >> 20
    );

    // Link 2, same nodes, same QUIC connection: 50 x 64 KiB echoes complete meanwhile.
    let started = Instant::now();
    let mut c2 = client(&ep, hs(15));
    for k in 0..50u64 {
        echo_on(&mut c2, &[pattern(FRAME, 10_000 + k)])
            .unwrap_or_else(|e| panic!("link 2, frame {k}, while link 1 is stalled: {e}"));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "link 2 took {took:?}: it waits for link 1"
    );
    drop(c2);

    // Link 1's reader comes back: every echo arrives, in order, intact.
    for k in 0..FRAMES {
        let f = frame(&pattern(FRAME, k as u64));
        let got = stalled
            .read_exact(f.len(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("stalled link, echo {k} after resuming: {e}"));
        assert!(got == f, "stalled link: echo {k} differs");
    }
    writer
        .join()
        .expect("writer thread")
        .expect("writer finished once the reader resumed");
    assert_eq!(router.stats().echoed, (FRAMES + 50) as u64);
    assert_eq!(
        count_lines(&node_a, &["WARN", "link out"]) + count_lines(&node_b, &["WARN", "link in"]),
        0,
        "a link failed"
    );
    assert!(node_a.is_running() && node_b.is_running());
}
