//! Writes to local connections on the ring: what a link hands its socket leaves as a `SEND` in
//! the shard's next `io_uring_enter`, with every other link's writes and the QUIC socket's
//! datagrams, instead of one `write(2)` per link.
//!
//! The link's relay stays synchronous ([`crate::relay::link`] asks "how many bytes did the socket
//! take?"): a [`RingWriter`] answers "all of them" and keeps a share of the bytes (a [`Bytes`] of
//! the relay's block: no copy) in a [`QueuedSend`] that the engine turns into a `SEND` and owns
//! until its completion. One send per connection is in flight at a time, so the bytes reach the
//! socket in order; what arrives meanwhile waits in the relay and leaves with the next send, so
//! a turn gathers a link's writes into one.
//!
//! Sends carry `MSG_DONTWAIT`: the kernel tries them once, at submission, and completes with what
//! the socket took (or `EAGAIN`), rather than parking them until the socket has room. A full
//! socket therefore never holds a request (and the connection's descriptor) on the ring; the
//! writer keeps the unsent rest and waits for the backend's writable readiness, as a `write(2)`
//! caller would. Nothing the writer has accepted is dropped before the connection's end: the link
//! finishes only once its writer is [`RingWriter::flushed`], and a `shutdown(SHUT_WR)` asked for
//! meanwhile waits for the last byte.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use bytes::Bytes;

use crate::io::local::LocalStream;

/// A write the engine has yet to put on the ring (or has in flight).
pub struct QueuedSend {
    /// The link the connection belongs to, and the writer's send: completions find their writer
    /// by both (a link number is reused once its link ends; a send id never is).
    pub link: usize,
    pub id: u64,
    /// The connection: shared, so its descriptor stays open until the send completes even if the
    /// link ends first.
    pub sock: Rc<LocalStream>,
    /// The bytes: shared with the relay's block, kept alive by the request until it completes.
    pub bytes: Bytes,
}

/// The shard's queue of local sends, filled by the links' writers during a turn and emptied onto
/// the ring before the turn's `io_uring_enter`.
#[derive(Default)]
pub struct LocalOutbox {
    queue: Vec<QueuedSend>,
    next_id: u64,
}

pub type SharedOutbox = Rc<RefCell<LocalOutbox>>;

impl LocalOutbox {
    pub fn shared() -> SharedOutbox {
        Rc::new(RefCell::new(LocalOutbox::default()))
    }

    /// Queues `bytes` for `sock` (link `link`); the send's id.
    fn queue(&mut self, link: usize, sock: &Rc<LocalStream>, bytes: Bytes) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.queue.push(QueuedSend {
            link,
            id,
            sock: Rc::clone(sock),
            bytes,
        });
        id
    }

    /// Everything queued since the last call, in order.
    pub fn take(&mut self) -> std::vec::Drain<'_, QueuedSend> {
        self.queue.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// One connection's writes through the ring (see the module's documentation).
pub struct RingWriter {
    outbox: SharedOutbox,
    link: usize,
    /// The send in flight (queued or on the ring): its id.
    in_flight: Option<u64>,
    /// Bytes a send did not get into the socket (it was full): they go first, once it is writable.
    rest: Bytes,
    /// The socket was full: no send until the backend reports it writable.
    wait_writable: bool,
    /// `shutdown(SHUT_WR)` was asked for while bytes were still on their way.
    shutdown_pending: bool,
    /// A send failed: reported by the next write.
    error: Option<io::Error>,
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
            rest: Bytes::new(),
            wait_writable: false,
            shutdown_pending: false,
            error: None,
            sent: 0,
        }
    }

    /// Takes `bytes` (all of them) if no send is on its way, else none: `Ok(0)`, as a full socket
    /// answers. A failed earlier send is reported here (`BrokenPipe` and the like: the local end
    /// has gone).
    pub fn write(&mut self, sock: &Rc<LocalStream>, bytes: &Bytes) -> io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.in_flight.is_some() || self.wait_writable || bytes.is_empty() {
            return Ok(0);
        }
        if self.resume(sock) {
            return Ok(0);
        }
        self.send(sock, bytes.clone());
        Ok(bytes.len())
    }

    /// Sends the rest a full socket left, if it may go now (nothing in flight, no wait for
    /// room). The relay may have nothing more to write, so the connection calls this itself
    /// after a completion and when the socket turns writable: the rest never waits for new
    /// bytes. True if a send is on its way.
    pub fn resume(&mut self, sock: &Rc<LocalStream>) -> bool {
        if self.in_flight.is_some() {
            return true;
        }
        if self.wait_writable || self.rest.is_empty() || self.error.is_some() {
            return false;
        }
        let rest = std::mem::take(&mut self.rest);
        self.send(sock, rest);
        true
    }

    fn send(&mut self, sock: &Rc<LocalStream>, bytes: Bytes) {
        let id = self.outbox.borrow_mut().queue(self.link, sock, bytes);
        self.in_flight = Some(id);
    }

    /// Send `id` completed with `res` (bytes sent, or `-errno`); `bytes` are what it carried.
    /// False if it is not this writer's send (a completion for an earlier link of the same
    /// number).
    pub fn on_sent(&mut self, id: u64, res: i32, bytes: Bytes) -> Option<AfterSend> {
        if self.in_flight != Some(id) {
            return None;
        }
        self.in_flight = None;
        if res >= 0 {
            let n = (res as usize).min(bytes.len());
            self.sent += n as u64;
            if n < bytes.len() {
                // The socket took part: the rest goes first once it has room.
                self.rest = bytes.slice(n..);
                self.wait_writable = true;
            }
        } else if -res == libc::EAGAIN || -res == libc::EINTR {
            self.rest = bytes;
            self.wait_writable = -res == libc::EAGAIN;
        } else {
            // What `write(2)` would have said; what was not sent is the local end's loss (it has
            // gone or failed).
            self.rest = Bytes::new();
            self.error = Some(io::Error::from_raw_os_error(-res));
        }
        if self.shutdown_pending && self.flushed() {
            self.shutdown_pending = false;
            return Some(AfterSend::Shutdown);
        }
        Some(AfterSend::Nothing)
    }

    /// The backend reports the socket writable: a rest waiting for room may go.
    pub fn on_writable(&mut self) {
        self.wait_writable = false;
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

    /// Bytes accepted but not yet in the socket.
    pub fn unsent(&self) -> usize {
        self.rest.len()
    }

    pub fn sent(&self) -> u64 {
        self.sent
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

    #[test]
    fn one_send_in_flight_and_the_rest_of_a_partial_send_goes_first() {
        let outbox = LocalOutbox::shared();
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 7);
        let a = Bytes::from_static(b"hello world");
        assert_eq!(w.write(&s, &a).unwrap(), 11);
        assert!(!w.flushed());
        // A second write waits for the first.
        assert_eq!(w.write(&s, &Bytes::from_static(b"next")).unwrap(), 0);
        let q = take_one(&outbox);
        assert_eq!((q.link, &q.bytes[..]), (7, &b"hello world"[..]));
        // The socket took 5 bytes: the rest waits for writable, then goes before anything new.
        assert_eq!(w.on_sent(q.id, 5, q.bytes), Some(AfterSend::Nothing));
        assert!(!w.flushed());
        assert_eq!(w.unsent(), 6);
        assert_eq!(w.write(&s, &Bytes::from_static(b"next")).unwrap(), 0);
        assert!(
            outbox.borrow().is_empty(),
            "no send before the socket has room"
        );
        w.on_writable();
        // The rest goes without any new bytes to write (the relay may have none).
        assert!(w.resume(&s));
        assert_eq!(w.write(&s, &Bytes::from_static(b"next")).unwrap(), 0);
        let q = take_one(&outbox);
        assert_eq!(&q.bytes[..], b" world");
        assert_eq!(w.on_sent(q.id, 6, q.bytes), Some(AfterSend::Nothing));
        assert!(w.flushed());
        assert_eq!(w.sent(), 11);
        assert_eq!(w.write(&s, &Bytes::from_static(b"next")).unwrap(), 4);
    }

    #[test]
    fn eagain_keeps_everything_and_a_stale_completion_is_ignored() {
        let outbox = LocalOutbox::shared();
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        let q = take_one(&outbox);
        assert_eq!(w.on_sent(q.id + 100, 3, q.bytes.clone()), None);
        assert_eq!(
            w.on_sent(q.id, -libc::EAGAIN, q.bytes),
            Some(AfterSend::Nothing)
        );
        assert_eq!(w.unsent(), 3);
        assert!(!w.flushed());
    }

    #[test]
    fn shutdown_waits_for_the_bytes_on_their_way() {
        let outbox = LocalOutbox::shared();
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        assert!(w.shutdown_now(), "nothing on its way: at once");
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        assert!(!w.shutdown_now());
        let q = take_one(&outbox);
        assert_eq!(w.on_sent(q.id, 3, q.bytes), Some(AfterSend::Shutdown));
        assert!(w.flushed());
    }

    #[test]
    fn a_failed_send_is_the_next_writes_error() {
        let outbox = LocalOutbox::shared();
        let (s, _peer) = sock();
        let mut w = RingWriter::new(outbox.clone(), 1);
        w.write(&s, &Bytes::from_static(b"abc")).unwrap();
        let q = take_one(&outbox);
        w.on_sent(q.id, -libc::EPIPE, q.bytes);
        assert!(w.flushed());
        let e = w.write(&s, &Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
