//! [`EchoRouter`]: a minimal RawSocket "router" that answers the handshake like Crossbar and
//! echoes (or swallows) messages. For the demo, integration tests and benchmarks.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::stream::{LocalListener, LocalStream};
use crate::addr::LocalAddr;
use crate::rawsocket::{
    error_reply, ClientHandshake, Decoder, ErrorCode, FrameKind, FrameScanner, LengthReading,
    MaxLen, RouterReply, Run, HANDSHAKE_LEN,
};

/// How long the accept loop sleeps when no connection is pending; bounds `stop()` latency.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// Read buffer per connection.
const READ_BUF: usize = 64 * 1024;

/// How the router answers a valid client handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterBehaviour {
    /// Accept, echoing the client's serializer with the router's own `max_len`.
    Accept,
    /// Refuse with this error code, then close.
    Reject(ErrorCode),
}

/// What the router does with the regular messages it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterMode {
    /// Write every message back verbatim (same prefix octets, same payload). Like Crossbar's
    /// sender, a message larger than the client's announced limit is dropped, not sent.
    Echo,
    /// Count messages and drop them (zero-copy, via [`FrameScanner`]).
    Sink,
}

/// [`EchoRouter`] settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterOptions {
    /// Largest message the router accepts, announced in its reply. Default 16 MiB.
    pub max_len: MaxLen,
    /// Accept or reject handshakes. Default accept.
    pub reply: RouterBehaviour,
    /// Echo or sink. Default echo.
    pub mode: RouterMode,
    /// How `01 00 00 00` is read. Default [`LengthReading::Crossbar`], like Crossbar itself.
    pub reading: LengthReading,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            max_len: MaxLen::MAX,
            reply: RouterBehaviour::Accept,
            mode: RouterMode::Echo,
            reading: LengthReading::Crossbar,
        }
    }
}

/// A snapshot of an [`EchoRouter`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections currently open.
    pub active: u64,
    /// Handshakes that did not parse.
    pub bad_handshakes: u64,
    /// Valid handshakes refused because of [`RouterBehaviour::Reject`].
    pub rejected: u64,
    /// Regular messages received.
    pub frames: u64,
    /// Payload bytes of regular messages received.
    pub bytes: u64,
    /// Messages written back (echo mode).
    pub echoed: u64,
    /// Messages not echoed because they exceed the client's limit.
    pub dropped_oversize: u64,
    /// Connections closed because the client sent a PING or PONG (as Crossbar does).
    pub closed_on_ping: u64,
    /// Connections closed because of a bad frame (reserved bits, over the limit, ...).
    pub frame_errors: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bad_handshakes: AtomicU64,
    rejected: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    echoed: AtomicU64,
    dropped_oversize: AtomicU64,
    closed_on_ping: AtomicU64,
    frame_errors: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Shared {
    opts: RouterOptions,
    stop: AtomicBool,
    counters: Counters,
    /// A second handle on every open connection, so `stop()` can shut them down.
    conns: Mutex<HashMap<u64, LocalStream>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A RawSocket router stand-in: one accept thread, one thread per connection. Stopped by
/// [`EchoRouter::stop`] or on drop, which closes every connection and joins every thread.
pub struct EchoRouter {
    addr: LocalAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl EchoRouter {
    /// Binds `listen` (removing a stale Unix socket file first) and starts accepting.
    pub fn start(listen: &LocalAddr, opts: RouterOptions) -> io::Result<EchoRouter> {
        let listener = LocalListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            handles: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("echo-router-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(EchoRouter {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> &LocalAddr {
        &self.addr
    }

    /// Current counters.
    pub fn stats(&self) -> RouterStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouterStats {
            connections: get(&c.connections),
            active: lock(&self.shared.conns).len() as u64,
            bad_handshakes: get(&c.bad_handshakes),
            rejected: get(&c.rejected),
            frames: get(&c.frames),
            bytes: get(&c.bytes),
            echoed: get(&c.echoed),
            dropped_oversize: get(&c.dropped_oversize),
            closed_on_ping: get(&c.closed_on_ping),
            frame_errors: get(&c.frame_errors),
        }
    }

    /// Stops accepting, closes every connection and joins all threads. Idempotent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        // The accept thread is gone, so no connection can register any more.
        for s in lock(&self.shared.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let handles = std::mem::take(&mut *lock(&self.shared.handles));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for EchoRouter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: LocalListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock, or a transient failure such as EMFILE: wait and retry.
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        bump(&shared.counters.connections, 1);
        let id = next_id;
        next_id += 1;
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        lock(&shared.conns).insert(id, handle);
        let s = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("echo-router-conn".into())
            .spawn(move || {
                serve(&stream, &s);
                let _ = stream.shutdown(Shutdown::Write);
                // Drop the registry's handle too, or the socket would stay open.
                lock(&s.conns).remove(&id);
            });
        let mut handles = lock(&shared.handles);
        handles.retain(|h| !h.is_finished());
        match spawned {
            Ok(h) => handles.push(h),
            Err(_) => {
                lock(&shared.conns).remove(&id);
            }
        }
    }
    // `listener` drops here, removing a Unix socket file.
}

fn serve(stream: &LocalStream, shared: &Shared) {
    let opts = &shared.opts;
    let c = &shared.counters;
    let mut octets = [0u8; HANDSHAKE_LEN];
    let mut rd = stream;
    if rd.read_exact(&mut octets).is_err() {
        return;
    }
    let client = match ClientHandshake::parse(&octets) {
        Ok(h) => h,
        Err(e) => {
            bump(&c.bad_handshakes, 1);
            if let Some(code) = e.reply_code() {
                let _ = (&*stream).write_all(&error_reply(code));
            }
            return;
        }
    };
    if let RouterBehaviour::Reject(code) = opts.reply {
        bump(&c.rejected, 1);
        let _ = (&*stream).write_all(&error_reply(code));
        return;
    }
    let reply = RouterReply::Accepted {
        max_len: opts.max_len,
        serializer: client.serializer,
    };
    if (&*stream).write_all(&reply.encode()).is_err() {
        return;
    }
    let _ = match opts.mode {
        RouterMode::Echo => echo(stream, opts, client.max_len.bytes(), c),
        RouterMode::Sink => sink(stream, opts, c),
    };
}

fn echo(
    stream: &LocalStream,
    opts: &RouterOptions,
    peer_limit: u32,
    c: &Counters,
) -> io::Result<()> {
    let mut decoder = Decoder::new(opts.max_len.bytes(), opts.reading);
    let mut buf = vec![0u8; READ_BUF];
    let mut out = BufWriter::with_capacity(READ_BUF, stream);
    let mut rd = stream;
    loop {
        let n = match rd.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        decoder.push(buf.get(..n).unwrap_or_default());
        loop {
            let frame = match decoder.next_raw_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    bump(&c.frame_errors, 1);
                    return Ok(());
                }
            };
            if frame.header.kind != FrameKind::Message {
                bump(&c.closed_on_ping, 1);
                return Ok(());
            }
            bump(&c.frames, 1);
            bump(&c.bytes, u64::from(frame.header.len));
            if frame.header.len > peer_limit {
                bump(&c.dropped_oversize, 1);
                continue;
            }
            out.write_all(&frame.prefix)?;
            out.write_all(&frame.payload)?;
            bump(&c.echoed, 1);
        }
        out.flush()?;
    }
}

fn sink(stream: &LocalStream, opts: &RouterOptions, c: &Counters) -> io::Result<()> {
    let mut scanner = FrameScanner::new(opts.max_len.bytes(), opts.reading);
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0usize; // bytes of an incomplete header kept at the front
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let mut rd = stream;
    loop {
        let n = match rd.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = filled + n;
        let mut at = 0;
        loop {
            match scanner.scan(buf.get(at..end).unwrap_or_default()) {
                Ok(Run::Forward(k)) => at += k,
                Ok(Run::Discard(_)) => {
                    bump(&c.closed_on_ping, 1);
                    return Ok(());
                }
                Ok(Run::NeedMore) => break,
                Err(_) => {
                    bump(&c.frame_errors, 1);
                    return Ok(());
                }
            }
        }
        buf.copy_within(at..end, 0);
        filled = end - at;
        bump(&c.frames, scanner.messages() - msgs);
        bump(&c.bytes, scanner.message_bytes() - bytes);
        msgs = scanner.messages();
        bytes = scanner.message_bytes();
    }
}
