//! The benchmark's rlink clients: one mio loop driving many links. A link connects, sends the
//! RawSocket handshake a Crossbar rlink sends (`7f f3 00 00`: CBOR, 16 MiB), then either streams
//! frames (written in batches, as a router's transport buffer flushes them) or does request/echo
//! round trips, verifying every echoed byte.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use boring::ssl::SslConnector;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::payload::{monotonic_ns, push_frame, Verifier};
use super::stream::BenchStream;
use crate::addr::LocalAddr;

/// The handshake every benchmark link sends.
pub const CLIENT_HANDSHAKE: [u8; 4] = [0x7f, 0xf3, 0, 0];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Write frames of `frame` bytes continuously, `batch` bytes per write, while sending is on.
    Stream { frame: usize, batch: usize },
    /// One request of `frame` bytes at a time; each echo is verified and timed; `rounds` requests
    /// (`u64::MAX`: until sending is switched off).
    Rpc { frame: usize, rounds: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshake,
    Open,
    Closed,
}

pub struct Link {
    s: BenchStream,
    phase: Phase,
    mode: LinkMode,
    started: Instant,
    /// Connect to handshake reply.
    pub open_time: Option<Duration>,
    /// Connect to first echoed frame.
    pub first_echo: Option<Duration>,
    hs_got: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    seq: u64,
    pub sent_frames: u64,
    pub sent_bytes: u64,
    pub echo: Verifier,
    rpc_in_flight: Option<u64>,
    pub rpc_done: u64,
    pub error: Option<String>,
    writable: bool,
}

pub struct Client {
    poll: Poll,
    events: Events,
    pub links: Slab<Link>,
    addr: LocalAddr,
    tls: Option<SslConnector>,
    sending: bool,
    /// Round-trip times of RPC requests (ns).
    pub rtt: Histogram<u64>,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(addr: LocalAddr, tls: Option<SslConnector>) -> io::Result<Client> {
        Ok(Client {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            links: Slab::new(),
            addr,
            tls,
            sending: true,
            rtt: Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other)?,
            buf: vec![0; 256 << 10],
        })
    }

    /// Starts one link; it connects and handshakes as the loop runs.
    pub fn open(&mut self, mode: LinkMode) -> io::Result<usize> {
        let mut s = BenchStream::connect(&self.addr, self.tls.as_ref())?;
        let key = self.links.vacant_key();
        self.poll.registry().register(
            &mut s,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.links.insert(Link {
            s,
            phase: Phase::Connecting,
            mode,
            started: Instant::now(),
            open_time: None,
            first_echo: None,
            hs_got: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            seq: 0,
            sent_frames: 0,
            sent_bytes: 0,
            echo: Verifier::default(),
            rpc_in_flight: None,
            rpc_done: 0,
            error: None,
            writable: true,
        });
        self.service(key);
        Ok(key)
    }

    pub fn set_mode(&mut self, key: usize, mode: LinkMode) {
        if let Some(l) = self.links.get_mut(key) {
            l.mode = mode;
        }
        self.service(key);
    }

    /// Switches sending on or off for every link (in-flight requests still complete).
    pub fn set_sending(&mut self, on: bool) {
        self.sending = on;
        if on {
            let keys: Vec<usize> = self.links.iter().map(|(k, _)| k).collect();
            for k in keys {
                self.service(k);
            }
        }
    }

    pub fn is_open(&self, key: usize) -> bool {
        self.links.get(key).is_some_and(|l| l.phase == Phase::Open)
    }

    pub fn open_count(&self) -> usize {
        self.links
            .iter()
            .filter(|(_, l)| l.phase == Phase::Open)
            .count()
    }

    pub fn failed(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|(_, l)| l.error.clone())
            .collect()
    }

    /// Closes every link.
    pub fn close_all(&mut self) {
        for (_, mut l) in std::mem::take(&mut self.links) {
            self.poll.registry().deregister(&mut l.s).ok();
        }
    }

    /// Runs the loop until `done` says so or `timeout` passes. Returns whether `done` held.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Client) -> bool,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.turn(Some((deadline - now).min(Duration::from_millis(50))))?;
        }
    }

    /// Runs the loop for `d`.
    pub fn run_for(&mut self, d: Duration) -> io::Result<()> {
        self.run_until(d, |_| false).map(|_| ())
    }

    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let keys: Vec<(usize, bool)> = self
            .events
            .iter()
            .map(|e| (e.token().0, e.is_writable()))
            .collect();
        for (k, w) in keys {
            if w {
                if let Some(l) = self.links.get_mut(k) {
                    l.writable = true;
                }
            }
            self.service(k);
        }
        Ok(())
    }

    fn service(&mut self, key: usize) {
        let sending = self.sending;
        let Some(l) = self.links.get_mut(key) else {
            return;
        };
        if let Err(e) = service_link(l, sending, &mut self.buf, &mut self.rtt) {
            if l.error.is_none() && l.phase != Phase::Closed {
                l.error = Some(e.to_string());
            }
            l.phase = Phase::Closed;
        }
    }
}

fn service_link(
    l: &mut Link,
    sending: bool,
    buf: &mut [u8],
    rtt: &mut Histogram<u64>,
) -> io::Result<()> {
    if l.phase == Phase::Closed {
        return Ok(());
    }
    if l.phase == Phase::Connecting {
        if !l.s.handshake()? {
            return Ok(());
        }
        l.out.extend_from_slice(&CLIENT_HANDSHAKE);
        l.phase = Phase::Handshake;
    }
    loop {
        let mut progress = false;
        // Queue new output.
        if l.phase == Phase::Open && sending && l.out_pos == l.out.len() {
            l.out.clear();
            l.out_pos = 0;
            match l.mode {
                LinkMode::Stream { frame, batch } => {
                    while l.out.len() < batch {
                        push_frame(&mut l.out, l.seq, frame);
                        l.seq += 1;
                        l.sent_frames += 1;
                        l.sent_bytes += frame as u64;
                    }
                }
                LinkMode::Rpc { frame, rounds } => {
                    if l.rpc_in_flight.is_none() && l.rpc_done < rounds {
                        push_frame(&mut l.out, l.seq, frame);
                        l.seq += 1;
                        l.sent_frames += 1;
                        l.sent_bytes += frame as u64;
                        l.rpc_in_flight = Some(monotonic_ns());
                    }
                }
            }
        }
        // Write.
        while l.writable && l.out_pos < l.out.len() {
            match l.s.write(&l.out[l.out_pos..]) {
                Ok(0) => return Err(io::Error::other("connection closed while writing")),
                Ok(n) => {
                    l.out_pos += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => l.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Read.
        match l.s.read(buf) {
            Ok(0) => return Err(io::Error::other("closed by the other end")),
            Ok(n) => {
                progress = true;
                let mut data = &buf[..n];
                if l.phase == Phase::Handshake {
                    let take = (4 - l.hs_got.len()).min(data.len());
                    l.hs_got.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if l.hs_got.len() == 4 {
                        if l.hs_got[0] != 0x7f || l.hs_got[1] & 0x0f == 0 {
                            return Err(io::Error::other(format!(
                                "handshake refused: {:02x?}",
                                l.hs_got
                            )));
                        }
                        l.phase = Phase::Open;
                        l.open_time = Some(l.started.elapsed());
                    }
                }
                if !data.is_empty() {
                    let done = l.echo.feed(data);
                    if let Some(e) = l.echo.error {
                        return Err(io::Error::other(format!("echo verification failed: {e:?}")));
                    }
                    if done > 0 && l.first_echo.is_none() {
                        l.first_echo = Some(l.started.elapsed());
                    }
                    l.echo.clear_latencies();
                    if done > 0 {
                        if let Some(sent) = l.rpc_in_flight.take() {
                            rtt.record(monotonic_ns().saturating_sub(sent).max(1)).ok();
                            l.rpc_done += 1;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if !progress {
            return Ok(());
        }
    }
}
