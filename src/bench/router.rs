//! The benchmark's router emulator (`rlinkd bench-router`), a process of its own so its CPU is
//! measured apart from the clients and each rlinkd. It answers the RawSocket handshake, then sinks
//! (verifies and counts) or echoes every frame. Controlled over stdin, one command per line:
//! `stats` (prints one JSON line of [`RouterReport`]), `reset` (clears latency samples and
//! counters), `stall N` / `resume` (stop / restart reading the N-th accepted connection), `quit`.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};
use slab::Slab;

use super::payload::Verifier;
use super::stream::{tls_acceptor, BenchStream};
use crate::addr::LocalAddr;
use crate::io::local::LocalListener;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const BASE: usize = 2;
/// Echo output kept per connection before it stops reading (backpressure).
const ECHO_HIGH_WATER: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum RouterMode {
    Sink,
    Echo,
}

/// Latency summary in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// What the router saw since start (counters) or since the last `reset` (latency).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouterReport {
    pub accepted: u64,
    pub open: u64,
    pub frames: u64,
    pub payload_bytes: u64,
    pub errors: u64,
    /// Payload bytes received per connection, in accept order.
    pub per_conn_bytes: Vec<u64>,
    /// One-way latency, client send to router receive.
    pub latency: Percentiles,
}

struct Conn {
    s: BenchStream,
    index: usize,
    hs: Vec<u8>,
    replied: bool,
    verifier: Verifier,
    out: Vec<u8>,
    out_pos: usize,
    stalled: bool,
}

pub fn run(
    listen: &LocalAddr,
    mode: RouterMode,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> io::Result<()> {
    let acceptor = match &tls {
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    let mut poll = Poll::new()?;
    let mut listener = LocalListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel::<String>();
    {
        let waker = waker.clone();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
                waker.wake().ok();
            }
            tx.send("quit".into()).ok();
            waker.wake().ok();
        });
    }
    println!("ready");
    io::stdout().flush()?;

    let mut conns: Slab<Conn> = Slab::new();
    let mut accepted = 0u64;
    let mut frames_base = 0u64;
    let mut bytes_base = 0u64;
    let mut per_conn: Vec<u64> = Vec::new();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other)?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    let mut to_service: Vec<usize> = Vec::new();
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .or_else(|e| {
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok(sock) => {
                            let Ok(mut s) = BenchStream::accepted(sock, acceptor.as_ref()) else {
                                continue;
                            };
                            let key = conns.vacant_key();
                            if poll
                                .registry()
                                .register(
                                    &mut s,
                                    Token(BASE + key),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_err()
                            {
                                continue;
                            }
                            let index = accepted as usize;
                            accepted += 1;
                            per_conn.push(0);
                            conns.insert(Conn {
                                s,
                                index,
                                hs: Vec::new(),
                                replied: false,
                                verifier: Verifier::default(),
                                out: Vec::new(),
                                out_pos: 0,
                                stalled: false,
                            });
                            to_service.push(key);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                },
                WAKER => {
                    while let Ok(cmd) = rx.try_recv() {
                        let mut words = cmd.split_whitespace();
                        match words.next() {
                            Some("stats") => {
                                let live_frames: u64 =
                                    conns.iter().map(|(_, c)| c.verifier.frames).sum();
                                let live_bytes: u64 =
                                    conns.iter().map(|(_, c)| c.verifier.payload_bytes).sum();
                                let errors = conns
                                    .iter()
                                    .filter(|(_, c)| c.verifier.error.is_some())
                                    .count() as u64;
                                for (_, c) in conns.iter_mut() {
                                    for l in c.verifier.take_latencies() {
                                        hist.record(l.max(1)).ok();
                                    }
                                }
                                let report = RouterReport {
                                    accepted,
                                    open: conns.len() as u64,
                                    frames: frames_base + live_frames,
                                    payload_bytes: bytes_base + live_bytes,
                                    errors,
                                    per_conn_bytes: per_conn.clone(),
                                    latency: Percentiles::from_histogram(&hist),
                                };
                                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                                io::stdout().flush().ok();
                            }
                            Some("reset") => {
                                hist.reset();
                                for (_, c) in conns.iter_mut() {
                                    c.verifier.clear_latencies();
                                }
                            }
                            Some("stall") => {
                                let n: usize =
                                    words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                                for (_, c) in conns.iter_mut() {
                                    if c.index == n {
                                        c.stalled = true;
                                    }
                                }
                            }
                            Some("resume") => {
                                for (k, c) in conns.iter_mut() {
                                    c.stalled = false;
                                    to_service.push(k);
                                }
                            }
                            Some("quit") => return Ok(()),
                            _ => {}
                        }
                    }
                }
                Token(t) => to_service.push(t - BASE),
            }
        }
        to_service.sort_unstable();
        to_service.dedup();
        for key in to_service.drain(..) {
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let closed = service(c, mode, &mut buf, &mut hist);
            if let Some(c) = conns.get(key) {
                per_conn[c.index] = c.verifier.payload_bytes;
            }
            if closed {
                let mut c = conns.remove(key);
                poll.registry().deregister(&mut c.s).ok();
                frames_base += c.verifier.frames;
                bytes_base += c.verifier.payload_bytes;
                for l in c.verifier.take_latencies() {
                    hist.record(l.max(1)).ok();
                }
            }
        }
    }
}

/// Moves what it can on one connection. True when the connection is finished.
fn service(c: &mut Conn, mode: RouterMode, buf: &mut [u8], hist: &mut Histogram<u64>) -> bool {
    match c.s.handshake() {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            eprintln!("bench-router: TLS handshake failed: {e}");
            return true;
        }
    }
    loop {
        let mut progress = false;
        // Write pending echo / handshake reply.
        while c.out_pos < c.out.len() {
            match c.s.write(&c.out[c.out_pos..]) {
                Ok(0) => return true,
                Ok(n) => {
                    c.out_pos += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
        if c.stalled || c.out.len() > ECHO_HIGH_WATER {
            return false;
        }
        match c.s.read(buf) {
            Ok(0) => return c.out_pos == c.out.len(),
            Ok(n) => {
                progress = true;
                let mut data = &buf[..n];
                if !c.replied {
                    let need = 4 - c.hs.len();
                    let take = need.min(data.len());
                    c.hs.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if c.hs.len() == 4 {
                        if c.hs[0] != 0x7f {
                            return true;
                        }
                        c.out
                            .extend_from_slice(&[0x7f, 0xf0 | (c.hs[1] & 0x0f), 0, 0]);
                        c.replied = true;
                    }
                }
                if !data.is_empty() {
                    c.verifier.feed(data);
                    if c.verifier.error.is_some() {
                        return true;
                    }
                    if mode == RouterMode::Echo {
                        c.out.extend_from_slice(data);
                    }
                }
                // Keep latency samples bounded between `stats` calls.
                if c.verifier.frames.is_multiple_of(4096) {
                    for l in c.verifier.take_latencies() {
                        hist.record(l.max(1)).ok();
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
        if !progress {
            return false;
        }
    }
}
