//! [`LinkSocket`]: a link's local connection as the shard core holds it, the same type on both
//! backends. On mio every call is a system call on the socket. On io_uring the relay's writes go
//! through a [`RingWriter`] (a `SEND` on the shard's ring, batched with the turn's other I/O),
//! its reads through a [`RingReader`] (a `RECV` parked on the ring, into room the relay lends),
//! and the socket is shared with the requests in flight, so its descriptor outlives the link
//! until the last of them completes. On io_uring the socket is in the shard's epoll set only
//! until its first writable event (`EPOLLONESHOT`: a route connect's completion); after that
//! nothing about it goes through readiness.

use std::io;
use std::rc::Rc;

use bytes::Bytes;

use crate::io::local::LocalStream;
use crate::io::syscalls::{self, Syscall};
use crate::io::uring::local_recv::{Received, RingReader};
use crate::io::uring::local_send::{AfterSend, RingWriter, SendBufs, SharedOutbox};
use crate::io::LocalConn;

pub struct LinkSocket {
    stream: Rc<LocalStream>,
    /// Writes through the ring (io_uring backend, once the core keeps the connection).
    writer: Option<RingWriter>,
    /// Reads through the ring, likewise.
    reader: Option<RingReader>,
}

impl LinkSocket {
    pub fn new(stream: LocalStream) -> LinkSocket {
        LinkSocket {
            stream: Rc::new(stream),
            writer: None,
            reader: None,
        }
    }

    pub fn stream(&self) -> &LocalStream {
        &self.stream
    }

    /// From now on reads and writes go through `outbox` onto the ring, as link `link`'s.
    pub fn use_ring(&mut self, outbox: SharedOutbox, link: usize) {
        self.writer = Some(RingWriter::new(outbox.clone(), link));
        self.reader = Some(RingReader::new(outbox, link));
    }

    fn shutdown_socket(&self) -> io::Result<()> {
        syscalls::count(Syscall::LocalShutdown);
        self.stream.shutdown_write()
    }
}

impl LocalConn for LinkSocket {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        syscalls::count(Syscall::LocalRead);
        self.stream.recv(buf)
    }

    #[inline]
    fn read_buf(&mut self, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
        syscalls::count(Syscall::LocalRead);
        self.stream.recv_into_spare(buf, max)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.writer.as_ref().is_some_and(|w| !w.flushed()) {
            // A direct write would overtake the bytes on the ring.
            return Ok(0);
        }
        syscalls::count(Syscall::LocalWrite);
        self.stream.send(bytes)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.writer {
            if !w.shutdown_now() {
                // Waits for the bytes on their way (`on_sent` does it then).
                return Ok(());
            }
        }
        self.shutdown_socket()
    }

    fn finish_connect(&mut self) -> io::Result<bool> {
        // SO_ERROR, then the peer's address.
        syscalls::count(Syscall::LocalGetsockopt);
        syscalls::count(Syscall::LocalGetpeername);
        self.stream.finish_connect()
    }

    fn shares_writes(&self) -> bool {
        self.writer.is_some()
    }

    #[inline]
    fn write_shared(&mut self, bytes: &Bytes) -> io::Result<usize> {
        match &mut self.writer {
            Some(w) => w.write(&self.stream, bytes),
            None => self.write(bytes),
        }
    }

    fn on_sent(&mut self, id: u64, res: i32, bufs: SendBufs) -> bool {
        let Some(w) = &mut self.writer else {
            return false;
        };
        match w.on_sent(id, res, bufs) {
            None => false,
            Some(AfterSend::Nothing) => {
                // An interrupted send's bytes go again at once.
                w.resume(&self.stream);
                true
            }
            Some(AfterSend::Shutdown) => {
                // A socket already gone is fine: its end has seen the close.
                self.shutdown_socket().ok();
                true
            }
        }
    }

    fn flushed(&self) -> bool {
        self.writer.as_ref().is_none_or(RingWriter::flushed)
    }

    fn queued_in_kernel(&self) -> Option<u64> {
        syscalls::count(Syscall::LocalIoctl);
        self.stream.queued_in_kernel().ok()
    }

    fn peer_shut_down(&self) -> bool {
        syscalls::count(Syscall::LocalPoll);
        self.stream.peer_shut_down().unwrap_or(false)
    }

    fn bytes_sent(&self) -> u64 {
        self.writer.as_ref().map_or(0, RingWriter::sent)
    }

    fn reads_on_ring(&self) -> bool {
        self.reader.is_some()
    }

    fn recv_into(&mut self, room: bytes::BytesMut, len: usize) {
        if let Some(r) = &mut self.reader {
            r.arm(&self.stream, room, len);
        }
    }

    fn recv_busy(&self) -> bool {
        self.reader.as_ref().is_some_and(RingReader::busy)
    }

    fn take_received(&mut self) -> Option<Received> {
        self.reader.as_mut()?.take()
    }

    fn on_received(&mut self, id: u64, res: i32, buf: bytes::BytesMut) -> bool {
        self.reader
            .as_mut()
            .is_some_and(|r| r.on_received(id, res, buf))
    }
}
