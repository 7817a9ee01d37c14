//! Stream I/O on a driver's connection. Callers (the shard core, the relay) reach a stream only
//! through [`StreamRef`] and the few connection-level calls below, so every quiche call stays in
//! the driver: nothing outside it holds the `quiche::Connection`.

use super::{Conn, ConnId, QuicDriver};
use crate::quic::codes::StreamCode;

/// One stream of one connection, borrowed for a short while (one pump of a link).
pub struct StreamRef<'a> {
    quic: &'a mut crate::quic::bufs::QuicConn,
    id: u64,
}

impl StreamRef<'_> {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues bytes (and the FIN when `fin`); quiche's `stream_send`.
    #[inline]
    pub fn send(&mut self, bytes: &[u8], fin: bool) -> Result<usize, quiche::Error> {
        self.quic.stream_send(self.id, bytes, fin)
    }

    /// Queues `bytes` without copying them: quiche keeps a clone of the buffer (it shares the
    /// allocation) until the peer acknowledges it; quiche's `stream_send_zc`. Returns how many
    /// bytes it took: the caller keeps the rest (quiche drops what it refuses with `Done`).
    #[inline]
    pub fn send_shared(&mut self, bytes: &bytes::Bytes, fin: bool) -> Result<usize, quiche::Error> {
        self.quic
            .stream_send_zc(self.id, bytes.clone(), fin)
            .map(|(n, _rest)| n)
    }

    /// Reads received bytes in order; quiche's `stream_recv`: `(bytes, fin)`.
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error> {
        self.quic.stream_recv(self.id, buf)
    }

    /// Appends at most `max` received bytes to `buf`, which has that much spare capacity;
    /// quiche's `stream_recv_buf`: `(bytes, fin)`.
    #[inline]
    pub fn recv_buf(
        &mut self,
        buf: &mut bytes::BytesMut,
        max: usize,
    ) -> Result<(usize, bool), quiche::Error> {
        use bytes::BufMut;
        self.quic.stream_recv_buf(self.id, buf.limit(max))
    }

    /// quiche's `stream_capacity`: also how a stopped (`StreamStopped`) or collected
    /// (`InvalidStreamState`) send half shows.
    #[inline]
    pub fn capacity(&mut self) -> Result<usize, quiche::Error> {
        self.quic.stream_capacity(self.id)
    }

    /// Ends one half with `code`: `Read` sends STOP_SENDING, `Write` sends RESET_STREAM.
    pub fn shutdown(&mut self, half: quiche::Shutdown, code: u64) -> Result<(), quiche::Error> {
        self.quic.stream_shutdown(self.id, half, code)
    }

    /// Bytes received and not read yet.
    pub fn readable_len(&self) -> usize {
        self.quic.stream_readable_len(self.id, usize::MAX)
    }
}

impl Conn {
    /// The stream `id` (quiche creates it on first use).
    #[inline]
    pub fn stream(&mut self, id: u64) -> StreamRef<'_> {
        StreamRef {
            quic: &mut self.quic,
            id,
        }
    }

    /// The next stream with bytes (or its end) to read; each is reported once per news.
    pub fn next_readable_stream(&mut self) -> Option<u64> {
        self.quic.stream_readable_next()
    }

    /// The next stream that gained send capacity (or was stopped by the peer).
    pub fn next_writable_stream(&mut self) -> Option<u64> {
        self.quic.stream_writable_next()
    }
}

impl QuicDriver {
    /// The stream `id` of `conn`, if the connection exists.
    #[inline]
    pub fn stream(&mut self, conn: ConnId, id: u64) -> Option<StreamRef<'_>> {
        self.conns.get_mut(&conn).map(|c| c.stream(id))
    }

    /// Resets both halves of a stream with `code` (STOP_SENDING and RESET_STREAM). The caller
    /// says whether to send at once ([`QuicDriver::note_data_queued`]).
    pub fn reset_stream(&mut self, conn: ConnId, id: u64, code: StreamCode) {
        if let Some(mut s) = self.stream(conn, id) {
            s.shutdown(quiche::Shutdown::Read, code as u64).ok();
            s.shutdown(quiche::Shutdown::Write, code as u64).ok();
        }
    }

    /// Whether quiche still knows the stream: it collects one once both halves are complete (the
    /// peer acknowledged our last bytes). An error means collected (`InvalidStreamState`) or
    /// stopped by the peer: nothing left to deliver either way.
    pub fn stream_in_use(&mut self, conn: ConnId, id: u64) -> bool {
        self.conns
            .get_mut(&conn)
            .is_some_and(|c| !c.quic.is_closed() && c.quic.stream_capacity(id).is_ok())
    }

    /// Bytes received on a stream and not read yet (0 for an unknown stream).
    pub fn stream_readable_len(&self, conn: ConnId, id: u64) -> usize {
        self.conns
            .get(&conn)
            .map_or(0, |c| c.quic.stream_readable_len(id, usize::MAX))
    }
}
