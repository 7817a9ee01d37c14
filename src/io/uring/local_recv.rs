//! Reads from local connections on the ring: a link's next read is a `RECV` parked on the ring
//! until its router (or client) writes, into room its relay buffer lends ([`crate::relay::pipe`]'s
//! `lend`): the kernel writes straight into the block the bytes then go to quiche from, and no
//! readiness event (`epoll_wait`) nor `read(2)` is needed for them.
//!
//! One read per connection is on the ring at a time. The room belongs to the request until its
//! completion (a split-off `BytesMut` of the relay's block: the block cannot be freed or moved
//! while the kernel may write it), then the link takes it back and it joins its block again.
//! A reader dropped with a read still parked (its link ended) has it cancelled; the completion
//! (cancelled, or bytes that raced the cancel) finds no reader and is dropped with the room.

use std::io;
use std::rc::Rc;

use bytes::BytesMut;

use super::local_send::SharedOutbox;
use crate::io::local::LocalStream;

/// A read the engine has yet to put on the ring (or has parked there).
pub struct QueuedRecv {
    pub link: usize,
    pub id: u64,
    /// The connection, shared so its descriptor stays open while the read is parked.
    pub sock: Rc<LocalStream>,
    /// The room: empty, its spare capacity lent by the relay.
    pub buf: BytesMut,
    /// How many bytes the read may bring (at most the spare capacity).
    pub len: usize,
}

/// One connection's reads through the ring.
pub struct RingReader {
    outbox: SharedOutbox,
    link: usize,
    /// The read on the ring: its id and how many bytes it was offered.
    in_flight: Option<(u64, usize)>,
    /// A completed read not yet taken by the relay: its result and room.
    done: Option<(i32, BytesMut, usize)>,
}

/// What a completed read brought, for the relay.
pub enum Received {
    /// Bytes in the room, and how many bytes the read was offered (none when it was
    /// interrupted: the room goes back and the next read goes on the ring).
    Data(BytesMut, usize),
    /// The other end has shut down its side: nothing more will come.
    End,
    /// The read failed (the connection is broken).
    Failed(io::Error),
}

impl RingReader {
    pub fn new(outbox: SharedOutbox, link: usize) -> RingReader {
        RingReader {
            outbox,
            link,
            in_flight: None,
            done: None,
        }
    }

    /// A read is on the ring, or its result waits for the relay: lend no room now.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || self.done.is_some()
    }

    /// Queues a read of at most `len` bytes into `room`'s spare capacity.
    pub fn arm(&mut self, sock: &Rc<LocalStream>, room: BytesMut, len: usize) {
        debug_assert!(!self.busy() && room.is_empty() && len <= room.capacity());
        let mut outbox = self.outbox.borrow_mut();
        let id = outbox.next_id();
        outbox.queue_recv(QueuedRecv {
            link: self.link,
            id,
            sock: Rc::clone(sock),
            buf: room,
            len,
        });
        self.in_flight = Some((id, len));
    }

    /// Read `id` completed with `res` (bytes read, or `-errno`; `buf` holds them). False if it
    /// is not this reader's (an earlier link of the same number).
    pub fn on_received(&mut self, id: u64, res: i32, buf: BytesMut) -> bool {
        match self.in_flight {
            Some((mine, lent)) if mine == id => {
                self.in_flight = None;
                self.done = Some((res, buf, lent));
                true
            }
            _ => false,
        }
    }

    /// The completed read's result, once.
    pub fn take(&mut self) -> Option<Received> {
        let (res, buf, lent) = self.done.take()?;
        Some(match res {
            0 => Received::End,
            n if n > 0 => Received::Data(buf, lent),
            e if -e == libc::EINTR || -e == libc::EAGAIN => Received::Data(buf, lent),
            e => Received::Failed(io::Error::from_raw_os_error(-e)),
        })
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        if let Some((id, _)) = self.in_flight {
            self.outbox.borrow_mut().cancel(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::uring::local_send::LocalOutbox;

    #[test]
    fn a_read_is_queued_once_its_result_taken_once_and_a_dropped_reader_cancels_it() {
        let outbox = LocalOutbox::shared(1 << 16);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let sock = Rc::new(LocalStream::Unix(mio::net::UnixStream::from_std(a)));
        let mut r = RingReader::new(outbox.clone(), 4);
        r.arm(&sock, BytesMut::with_capacity(100), 64);
        assert!(r.busy());
        let mut q: Vec<_> = outbox.borrow_mut().take_recvs().collect();
        let q = q.pop().unwrap();
        assert_eq!((q.link, q.len), (4, 64));
        assert!(!r.on_received(q.id + 1, 3, BytesMut::new()), "not its read");
        let mut buf = q.buf;
        buf.extend_from_slice(b"abc");
        assert!(r.on_received(q.id, 3, buf));
        assert!(matches!(r.take(), Some(Received::Data(b, 64)) if &b[..] == b"abc"));
        assert!(r.take().is_none() && !r.busy());
        // EOF, then a parked read dropped with its link.
        r.arm(&sock, BytesMut::with_capacity(10), 10);
        let id = outbox.borrow_mut().take_recvs().next().unwrap().id;
        r.on_received(id, 0, BytesMut::new());
        assert!(matches!(r.take(), Some(Received::End)));
        r.arm(&sock, BytesMut::with_capacity(10), 10);
        let id = outbox.borrow_mut().take_recvs().next().unwrap().id;
        drop(r);
        assert_eq!(outbox.borrow_mut().take_cancels().collect::<Vec<_>>(), [id]);
    }
}
