//! Writes to local connections on the ring: what a link hands its socket leaves as a `SEND` in
//! the shard's next `io_uring_enter`, with every other link's writes and the QUIC socket's
//! datagrams, instead of one `write(2)` per link.
//!
//! The link's relay stays synchronous ([`crate::relay::link`] asks "how many bytes did the socket
//! take?"): a [`RingWriter`] answers "all of them" and keeps a share of the bytes (a [`Bytes`] of
//! the relay's block: no copy) in a [`QueuedSend`] that the engine turns into a `SEND` and owns
//! until its completion. One send per connection is in flight at a time, so the bytes reach the
//! socket in order. Until the turn's enter takes it, that send gathers the link's further writes
//! of the turn (up to `relay.buffer_size` bytes, one iovec per buffer: a `SENDMSG`), so a link
//! that the turn's datagrams feed several times still costs one request; what arrives once it is
//! on the ring waits in the relay and leaves with the next send.
//!
//! A send carries `MSG_DONTWAIT`: the kernel tries it once, at submission, and completes it with
//! what the socket took (or `EAGAIN`), so the turn's enter need not wait for it. What a full
//! socket did not take goes again at once as a *parked* send (no `MSG_DONTWAIT`): the kernel
//! completes it when the reader has made room, so no readiness event is needed for it (the
//! link's socket is not in the shard's epoll set: see [`crate::shard::conn`]). A writer dropped
//! with a send still parked (its link failed) has it cancelled. Nothing the writer has accepted
//! is dropped before the connection's end: the link
//! finishes only once its writer is [`RingWriter::flushed`], and a `shutdown(SHUT_WR)` asked for
//! meanwhile waits for the last byte. The bytes it holds count as the link's
//! ([`RingWriter::unsent`]) for the stall rules.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use bytes::{Buf, Bytes};

use super::local_recv::QueuedRecv;
use crate::io::local::LocalStream;

/// A send's bytes: shares of the relay's blocks, in the order they go (one iovec each).
pub type SendBufs = Vec<Bytes>;

/// Most buffers one send gathers: far below `UIO_MAXIOV` (1024), and more than a turn brings a
/// link (each buffer is up to a relay block, at most `relay.buffer_size`).
pub const MAX_GATHER: usize = 64;

/// A write the engine has yet to put on the ring (or has in flight).
pub struct QueuedSend {
    /// The link the connection belongs to, and the writer's send: completions find their writer
    /// by both (a link number is reused once its link ends; a send id never is).
    pub link: usize,
    pub id: u64,
    /// The connection: shared, so its descriptor stays open until the send completes even if the
    /// link ends first.
    pub sock: Rc<LocalStream>,
    /// The bytes: shares of the relay's blocks, kept alive by the request until it completes.
    pub bufs: SendBufs,
    /// Parked: the kernel waits for room rather than answering `EAGAIN` (the rest of a send the
    /// full socket cut short).
    pub wait: bool,
}

impl QueuedSend {
    /// Bytes the send carries.
    pub fn len(&self) -> usize {
        self.bufs.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a writer's queued send sits in the outbox: the turn it was queued in and its index
/// there (it is the writer's own only while the outbox is in that turn).
#[derive(Clone, Copy)]
struct Queued {
    id: u64,
    turn: u64,
    index: usize,
}

/// The shard's queue of local sends, filled by the links' writers during a turn and emptied onto
/// the ring before the turn's `io_uring_enter`.
pub struct LocalOutbox {
    queue: Vec<QueuedSend>,
    /// Reads queued this turn ([`super::local_recv`]).
    recvs: Vec<QueuedRecv>,
    /// Parked requests (reads, parked sends) whose connection's link has ended: cancelled by
    /// the next enter.
    cancels: Vec<u64>,
    next_id: u64,
    /// Incremented each time the engine takes the queue: a writer's send of an earlier turn is
    /// on the ring and takes no more bytes.
    turn: u64,
    /// The most bytes one send gathers (`relay.buffer_size`).
    gather_limit: usize,
}

pub type SharedOutbox = Rc<RefCell<LocalOutbox>>;

impl LocalOutbox {
    /// An outbox whose sends gather at most `gather_limit` bytes each (`relay.buffer_size`:
    /// a link then holds at most that much on the ring, besides its relay buffer).
    pub fn shared(gather_limit: usize) -> SharedOutbox {
        Rc::new(RefCell::new(LocalOutbox {
            queue: Vec::new(),
            recvs: Vec::new(),
            cancels: Vec::new(),
            next_id: 0,
            turn: 0,
            gather_limit: gather_limit.max(1),
        }))
    }

    /// Sends queued from now on gather at most `limit` bytes (a reload's `relay.buffer_size`).
    pub fn set_gather_limit(&mut self, limit: usize) {
        self.gather_limit = limit.max(1);
    }

    /// A new request id (sends and reads share them).
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Queues `bufs` for `sock` (link `link`), parked if `wait`.
    fn queue(&mut self, link: usize, sock: &Rc<LocalStream>, bufs: SendBufs, wait: bool) -> Queued {
        let id = self.next_id();
        let index = self.queue.len();
        self.queue.push(QueuedSend {
            link,
            id,
            sock: Rc::clone(sock),
            bufs,
            wait,
        });
        Queued {
            id,
            turn: self.turn,
            index,
        }
    }

    /// Adds as much of `bytes` as fits to send `at`, if it is still queued (not yet on the
    /// ring); how many bytes it took.
    fn gather(&mut self, at: Queued, bytes: &Bytes) -> usize {
        if at.turn != self.turn {
            return 0;
        }
        let limit = self.gather_limit;
        let Some(q) = self.queue.get_mut(at.index).filter(|q| q.id == at.id) else {
            return 0;
        };
        if q.bufs.len() >= MAX_GATHER {
            return 0;
        }
        let n = limit.saturating_sub(q.len()).min(bytes.len());
        if n > 0 {
            q.bufs.push(bytes.slice(..n));
        }
        n
    }

    /// Queues a read.
    pub(super) fn queue_recv(&mut self, recv: QueuedRecv) {
        self.recvs.push(recv);
    }

    /// Asks for parked request `id` to be cancelled (its link has ended).
    pub(super) fn cancel(&mut self, id: u64) {
        self.cancels.push(id);
    }

    /// Every send queued since the last call, in order.
    pub fn take(&mut self) -> std::vec::Drain<'_, QueuedSend> {
        self.turn += 1;
        self.queue.drain(..)
    }

    /// Every read queued since the last call.
    pub fn take_recvs(&mut self) -> std::vec::Drain<'_, QueuedRecv> {
        self.recvs.drain(..)
    }

    /// The parked requests to cancel.
    pub fn take_cancels(&mut self) -> std::vec::Drain<'_, u64> {
        self.cancels.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.recvs.is_empty() && self.cancels.is_empty()
    }
}

/// One connection's writes through the ring (see the module's documentation).
pub struct RingWriter {
    outbox: SharedOutbox,
    link: usize,
    /// The send in flight (queued or on the ring).
    in_flight: Option<Queued>,
    /// Bytes a send did not get into the socket (it was full): they go first, parked.
    rest: SendBufs,
    /// `shutdown(SHUT_WR)` was asked for while bytes were still on their way.
    shutdown_pending: bool,
    /// A send failed: reported by the next write.
    error: Option<io::Error>,
    /// Bytes accepted that are not in the socket yet (on the ring or in `rest`).
    unsent: usize,
    /// Bytes that went into the socket.
    sent: u64,
}

/// What the writer wants done after a completion.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterSend {
    Nothing,
    /// The last bytes are in: do the `shutdown(SHUT_WR)` that waited for them.
    Shutdown,
}

impl RingWriter {
    pub fn new(outbox: SharedOutbox, link: usize) -> RingWriter {
        RingWriter {
            outbox,
            link,
            in_flight: None,
            rest: SendBufs::new(),
            shutdown_pending: false,
            error: None,
            unsent: 0,
            sent: 0,
        }
    }

    /// Takes `bytes`: all of them when no send is on its way; as many as the send still queued
    /// for this turn gathers (up to the outbox's limit); else none, `Ok(0)`, as a full socket
    /// answers. A failed earlier send is reported here (`BrokenPipe` and the like: the local
    /// end has gone).
    pub fn write(&mut self, sock: &Rc<LocalStream>, bytes: &Bytes) -> io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.in_flight.is_none() && !self.resume(sock) {
            self.unsent += bytes.len();
            self.send(sock, vec![bytes.clone()]);
            return Ok(bytes.len());
        }
        // A send is on its way (perhaps the rest's, just queued): it may gather these bytes.
        let Some(at) = self.in_flight else {
            return Ok(0);
        };
        if self.error.is_some() {
            return Ok(0);
        }
        let n = self.outbox.borrow_mut().gather(at, bytes);
        self.unsent += n;
        Ok(n)
    }

    /// Sends the rest a full socket left, parked until the socket has room, if nothing is in
    /// flight. The relay may have nothing more to write, so the connection calls this itself
    /// after a completion: the rest never waits for new bytes. True if a send is on its way.
    pub fn resume(&mut self, sock: &Rc<LocalStream>) -> bool {
        if self.in_flight.is_some() {
            return true;
        }
        if self.rest.is_empty() || self.error.is_some() {
            return false;
        }
        let rest = std::mem::take(&mut self.rest);
        self.in_flight = Some(self.outbox.borrow_mut().queue(self.link, sock, rest, true));
        true
    }

    fn send(&mut self, sock: &Rc<LocalStream>, bufs: SendBufs) {
        self.in_flight = Some(self.outbox.borrow_mut().queue(self.link, sock, bufs, false));
    }

    /// Send `id` completed with `res` (bytes sent, or `-errno`); `bufs` are what it carried.
    /// `None` if it is not this writer's send (a completion for an earlier link of the same
    /// number).
    pub fn on_sent(&mut self, id: u64, res: i32, mut bufs: SendBufs) -> Option<AfterSend> {
        if self.in_flight.map(|q| q.id) != Some(id) {
            return None;
        }
        self.in_flight = None;
        if res >= 0 {
            let mut n = res as usize;
            self.sent += n as u64;
            self.unsent = self.unsent.saturating_sub(n);
            // What the socket did not take goes first once it has room.
            bufs.retain_mut(|b| {
                let k = n.min(b.len());
                b.advance(k);
                n -= k;
                !b.is_empty()
            });
            self.rest = bufs;
        } else if -res == libc::EAGAIN || -res == libc::EINTR || -res == libc::ECANCELED {
            // Full, interrupted, or cancelled by a shard that is stopping: all of it goes again.
            self.rest = bufs;
        } else {
            // What `write(2)` would have said; what was not sent is the local end's loss (it has
            // gone or failed).
            self.rest = SendBufs::new();
            self.unsent = 0;
            self.error = Some(io::Error::from_raw_os_error(-res));
        }
        if self.shutdown_pending && self.flushed() {
            self.shutdown_pending = false;
            return Some(AfterSend::Shutdown);
        }
        Some(AfterSend::Nothing)
    }

    /// The link asks for `shutdown(SHUT_WR)`: true if it may happen now, false if it waits for
    /// the bytes on their way (it happens when they are in: [`AfterSend::Shutdown`]).
    pub fn shutdown_now(&mut self) -> bool {
        if self.flushed() {
            return true;
        }
        self.shutdown_pending = true;
        false
    }

    /// Every byte accepted is in the socket (or the socket failed, which the next write says).
    pub fn flushed(&self) -> bool {
        self.in_flight.is_none() && (self.rest.is_empty() || self.error.is_some())
    }

    /// Bytes accepted but not yet in the socket (on the ring, or about to go again).
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// Bytes that went into the socket (the link's stall rules count it as the reader's progress).
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl Drop for RingWriter {
    /// A send still on the ring may be parked until a reader that will never read makes room:
    /// it is cancelled (its bytes were the ended link's).
    fn drop(&mut self) {
        if let Some(q) = self.in_flight {
            self.outbox.borrow_mut().cancel(q.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected Unix socket of our own, to stand for a link's connection.
    fn sock() -> (Rc<LocalStream>, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let s = LocalStream::Unix(mio::net::UnixStream::from_std(a));
        (Rc::new(s), b)
    }

    fn take_one(outbox: &SharedOutbox) -> QueuedSend {
        let mut q: Vec<_> = outbox.borrow_mut().take().collect();
        assert_eq!(q.len(), 1);
        q.pop().unwrap()
    }

    fn joined(bufs: &SendBufs) -> Vec<u8> {
        bufs.concat()
    }

    #[test]
    fn a_turns_writes_gather_into_one_send_and_the_rest_of_a_partial_send_goes_parked_first() {
        let outbox = LocalOutbox::shared(1 << 20);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 7);
        assert_eq!(w.write(&s, &Bytes::from_static(b"hello")).unwrap(), 5);
        assert!(!w.flushed());
        // Until the enter takes it, the send gathers the turn's next writes.
        assert_eq!(w.write(&s, &Bytes::from_static(b" world")).unwrap(), 6);
        let q = take_one(&outbox);
        assert_eq!((q.link, q.bufs.len(), q.wait), (7, 2, false));
        assert_eq!(joined(&q.bufs), b"hello world");
        // On the ring: a write waits for its completion.
        assert_eq!(w.write(&s, &Bytes::from_static(b"next")).unwrap(), 0);
        // The socket took 7 bytes, the first buffer and part of the second: the rest goes
        // again at once, parked until the socket has room, before anything new.
        assert_eq!(w.on_sent(q.id, 7, q.bufs), Some(AfterSend::Nothing));
        assert!(!w.flushed());
        assert_eq!(w.unsent(), 4);
        assert!(outbox.borrow().is_empty(), "the connection resumes it");
        // The rest goes without any new bytes to write (the relay may have none), and a write
        // of the same turn joins it.
        assert!(w.resume(&s));
        assert_eq!(w.write(&s, &Bytes::from_static(b"next")).unwrap(), 4);
        let q = take_one(&outbox);
        assert!(q.wait);
        assert_eq!(joined(&q.bufs), b"orldnext");
        assert_eq!(w.on_sent(q.id, 8, q.bufs), Some(AfterSend::Nothing));
        assert!(w.flushed());
        assert_eq!((w.sent(), w.unsent()), (15, 0));
    }

    #[test]
    fn a_writer_dropped_with_a_send_on_the_ring_cancels_it() {
        let outbox = LocalOutbox::shared(1 << 20);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 7);
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        let q = take_one(&outbox);
        drop(w);
        assert_eq!(
            outbox.borrow_mut().take_cancels().collect::<Vec<_>>(),
            [q.id]
        );
    }

    #[test]
    fn a_send_gathers_no_more_than_the_limit() {
        let outbox = LocalOutbox::shared(10);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        // The first write of a turn is taken whole (the relay's buffer bounds it).
        assert_eq!(w.write(&s, &Bytes::from_static(b"abcdefgh")).unwrap(), 8);
        assert_eq!(w.write(&s, &Bytes::from_static(b"ijkl")).unwrap(), 2);
        assert_eq!(w.write(&s, &Bytes::from_static(b"kl")).unwrap(), 0);
        assert_eq!(w.unsent(), 10);
        let q = take_one(&outbox);
        assert_eq!(joined(&q.bufs), b"abcdefghij");
    }

    /// A reload's `relay.buffer_size` bounds the sends gathered after it.
    #[test]
    fn a_reloaded_limit_bounds_the_next_sends() {
        let outbox = LocalOutbox::shared(10);
        outbox.borrow_mut().set_gather_limit(4);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        assert_eq!(w.write(&s, &Bytes::from_static(b"ab")).unwrap(), 2);
        assert_eq!(w.write(&s, &Bytes::from_static(b"cdef")).unwrap(), 2);
        assert_eq!(joined(&take_one(&outbox).bufs), b"abcd");
    }

    #[test]
    fn eagain_keeps_everything_and_a_stale_completion_is_ignored() {
        let outbox = LocalOutbox::shared(1 << 20);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        let q = take_one(&outbox);
        assert_eq!(w.on_sent(q.id + 100, 3, q.bufs.clone()), None);
        assert_eq!(
            w.on_sent(q.id, -libc::EAGAIN, q.bufs),
            Some(AfterSend::Nothing)
        );
        assert_eq!(w.unsent(), 3);
        assert!(!w.flushed());
    }

    #[test]
    fn shutdown_waits_for_the_bytes_on_their_way() {
        let outbox = LocalOutbox::shared(1 << 20);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        assert!(w.shutdown_now(), "nothing on its way: at once");
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        assert!(!w.shutdown_now());
        let q = take_one(&outbox);
        assert_eq!(w.on_sent(q.id, 3, q.bufs), Some(AfterSend::Shutdown));
        assert!(w.flushed());
    }

    #[test]
    fn a_failed_send_is_the_next_writes_error() {
        let outbox = LocalOutbox::shared(1 << 20);
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        let q = take_one(&outbox);
        w.on_sent(q.id, -libc::EPIPE, q.bufs);
        assert!(w.flushed());
        assert_eq!(w.unsent(), 0);
        let e = w.write(&s, &Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
