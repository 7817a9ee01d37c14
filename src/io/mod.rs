//! I/O backends. Everything that touches a socket lives here; the QUIC driver (`crate::quic`) and
//! the relay's state machines never do.
//!
//! The seams:
//! - [`DatagramIo`]: receive a (possibly GRO-coalesced) buffer with its segment size, send a
//!   (possibly GSO) batch of equal-sized datagrams. The portable backend is [`udp::UdpSocket`]
//!   on mio; the io_uring engine implements the same trait. [`steer`] binds one socket per shard
//!   on the QUIC port and steers datagrams to their shard by connection ID.
//! - [`LocalConn`] and [`LocalIo`]: the local RawSocket connections (routers, rlink clients) as
//!   the shard core (`crate::shard::core`) sees them. The core decides; a backend owns the
//!   descriptors and reports readiness. The mio backend implements them over
//!   [`local::LocalStream`] and [`local::LocalListener`]; the in-memory tests over byte pipes.
//! - [`syscalls`]: what the backends count of the system calls they make, per kind.

pub mod cmsg;
pub mod local;
pub mod steer;
pub mod syscalls;
pub mod udp;
pub mod uring;

use std::io;
use std::net::SocketAddr;

use crate::addr::LocalAddr;

/// One receive: `len` bytes from `from`, made of datagrams of `segment_size` bytes each (the last
/// may be shorter). Without GRO, `segment_size == len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    pub from: SocketAddr,
    pub len: usize,
    pub segment_size: usize,
}

impl RecvMeta {
    /// Number of datagrams in this receive.
    pub fn segments(&self) -> usize {
        if self.segment_size == 0 {
            0
        } else {
            self.len.div_ceil(self.segment_size)
        }
    }
}

/// One send: `contents` split into datagrams of `segment_size` bytes (the last may be shorter),
/// all to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    pub to: SocketAddr,
    pub contents: &'a [u8],
    pub segment_size: usize,
}

/// Counters every datagram backend keeps, reported in the stats line and by `rlinkd bench`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramStats {
    pub send_calls: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub recv_calls: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    /// Sends that failed with an error other than WouldBlock (the datagrams are dropped and QUIC
    /// loss recovery resends them).
    pub send_errors: u64,
    /// Times GSO was switched off at run time because the kernel refused a segmented send.
    pub gso_fallbacks: u64,
}

/// The datagram side of an I/O backend.
pub trait DatagramIo {
    fn local_addr(&self) -> SocketAddr;
    /// Largest number of datagrams one [`Transmit`] may carry (1 without GSO).
    fn max_gso_segments(&self) -> usize;
    /// Receives one buffer. `Err(WouldBlock)` when nothing is queued.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<RecvMeta>;
    /// Sends one batch whole. `Err(WouldBlock)` means nothing was sent: retry when writable.
    fn send(&mut self, transmit: &Transmit<'_>) -> io::Result<()>;
    fn stats(&self) -> DatagramStats;
    /// The next error the network reported about a datagram we sent (an ICMP error queued on
    /// the socket), if the backend sees them. `Ok(None)` when there is none.
    fn recv_error(&mut self) -> io::Result<Option<SendError>> {
        Ok(None)
    }
}

/// An ICMP error about a datagram this socket sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendError {
    /// Where the datagram was going.
    pub to: SocketAddr,
    /// The error as errno (ECONNREFUSED for "port unreachable").
    pub errno: i32,
    /// ICMP or ICMPv6 "port unreachable": nothing listens at `to` any more.
    pub port_unreachable: bool,
}

/// A local connection, non-blocking: the relay reads and writes it while the backend says it may
/// have news (`crate::shard::core::ShardCore::on_local_event`).
pub trait LocalConn {
    /// Reads into `buf`: `Ok(0)` at end of input, `Err(WouldBlock)` when nothing is there now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Reads at most `max` bytes, appended to `buf` (its spare capacity holds them: the relay
    /// reserves before it asks); [`LocalConn::read`]'s results. The default zeroes the room
    /// first; a socket reads straight into the spare capacity.
    fn read_buf(&mut self, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
        let len = buf.len();
        buf.resize(len + max, 0);
        let r = self.read(&mut buf[len..]);
        buf.truncate(len + *r.as_ref().unwrap_or(&0));
        r
    }
    /// Writes from `bytes`; `Err(WouldBlock)` when nothing fits now. BrokenPipe, ConnectionReset
    /// and NotConnected mean the local end has closed its side.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Ends the write side (the local end reads EOF after what was written).
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// After a writable event on a connection still connecting (a TCP route target): `Ok(true)`
    /// when connected, `Ok(false)` when still in progress, `Err` when the connect failed.
    fn finish_connect(&mut self) -> io::Result<bool>;

    /// True when [`LocalConn::write_shared`] keeps the bytes it takes (a completion backend's
    /// writer): the relay then hands it shares of its blocks rather than slices to copy.
    fn shares_writes(&self) -> bool {
        false
    }
    /// Writes from a share of the relay's block, which the connection may keep until the bytes
    /// are in the socket; [`LocalConn::write`]'s results. The default copies.
    fn write_shared(&mut self, bytes: &bytes::Bytes) -> io::Result<usize> {
        self.write(bytes)
    }
    /// The backend reports the connection writable.
    fn on_writable(&mut self) {}
    /// A completion backend's send `id` ended with `res` (bytes sent, or `-errno`), carrying
    /// `bufs`: true if it was this connection's (the link then runs again).
    fn on_sent(&mut self, _id: u64, _res: i32, _bufs: Vec<bytes::Bytes>) -> bool {
        false
    }
    /// Every byte the connection took is in the socket (a link ends only then: nothing it
    /// accepted is lost).
    fn flushed(&self) -> bool {
        true
    }
    /// Bytes the connection has put into the socket itself, for a connection that keeps what
    /// it takes ([`LocalConn::shares_writes`]): its progress is the reader's. 0 otherwise.
    fn bytes_sent(&self) -> u64 {
        0
    }
    /// Bytes in the kernel's send queue that the reader has not taken (a writer, on either
    /// backend, hears of room only once a Unix socket has drained to a quarter of its buffer, so
    /// a slow reader's progress shows here first). `None`: cannot tell.
    fn queued_in_kernel(&self) -> Option<u64> {
        None
    }
    /// Whether the other end has already shut down its write side, asked of the kernel (a
    /// backend whose reads bring no readiness events has no other way to know before it reads
    /// the end). `false`: not shut down, or cannot tell.
    fn peer_shut_down(&self) -> bool {
        false
    }
    /// True when reads complete on the backend's ring: the relay lends room
    /// ([`LocalConn::recv_into`]) and later takes what arrived ([`LocalConn::take_received`])
    /// instead of calling [`LocalConn::read_buf`] when told the socket is readable.
    fn reads_on_ring(&self) -> bool {
        false
    }
    /// Reads at most `len` bytes into `room`'s spare capacity, on the ring.
    fn recv_into(&mut self, _room: bytes::BytesMut, _len: usize) {}
    /// A read is on the ring, or its result waits to be taken: lend no room now.
    fn recv_busy(&self) -> bool {
        false
    }
    /// What the last read on the ring brought, once.
    fn take_received(&mut self) -> Option<crate::io::uring::local_recv::Received> {
        None
    }
    /// A completion backend's read `id` ended with `res` (bytes read into `buf`, or `-errno`):
    /// true if it was this connection's (the link then runs again).
    fn on_received(&mut self, _id: u64, _res: i32, _buf: bytes::BytesMut) -> bool {
        false
    }
}

/// The local side of a backend, as the shard core drives it: link endpoints (listeners the
/// backend owns, known by their index in the configuration's `links`), route connects, and which
/// connections the backend must watch.
///
/// The core owns every accepted or connected [`LocalConn`] (in its link table) and says when it
/// takes one on and when it lets it go, so a readiness backend (mio) registers and deregisters
/// descriptors there, and a completion backend (io_uring) starts and cancels its operations.
pub trait LocalIo {
    type Conn: LocalConn;
    /// Accepts one connection on link endpoint `endpoint`; `Err(WouldBlock)` when none waits.
    /// EMFILE, ENFILE, ENOBUFS and ENOMEM mean "not now": the core tries again on a timer.
    fn accept(&mut self, endpoint: usize) -> io::Result<Self::Conn>;
    /// Starts a non-blocking connect to a route's target. A Unix target with a full accept
    /// backlog answers `Err(WouldBlock)`: the core tries again until `connect_timeout`.
    fn connect(&mut self, target: &LocalAddr) -> io::Result<Self::Conn>;
    /// The core keeps `conn` as link `link`: report its readiness for that link from now on.
    /// An error refuses the link.
    fn watch(&mut self, conn: &mut Self::Conn, link: usize) -> io::Result<()>;
    /// A writable event came for `conn` (link `link`) before its connect finished: report the
    /// next one too (a backend that reports only the first must arm it again).
    fn watch_again(&mut self, _conn: &mut Self::Conn, _link: usize) {}
    /// The core is about to drop `conn`: report nothing more about it.
    fn unwatch(&mut self, conn: &mut Self::Conn);
    /// The node is stopping: close every link endpoint (Unix socket files go with them).
    fn close_endpoints(&mut self);
}
