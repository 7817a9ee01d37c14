//! The buffers quiche keeps stream data in until the peer acknowledges it.
//!
//! With [`StreamBufs`] a connection's stream buffers are [`Bytes`]: the relay hands quiche the
//! bytes it read from a local socket as slices of the block they were read into
//! (`stream_send_zc`, see `crate::relay::pipe::Pipe::drain_shared`), so they are not copied
//! on the way in; quiche copies them once, into the packet it seals. Bytes given by slice
//! (`stream_send`: the preamble, the control stream, a FIN) are copied into a new buffer as
//! with quiche's default factory.

use bytes::Bytes;

/// quiche's buffer factory for rlinkd's connections: stream buffers are [`Bytes`].
#[derive(Clone, Debug, Default)]
pub struct StreamBufs;

impl quiche::BufFactory for StreamBufs {
    type Buf = Bytes;
    type DgramBuf = Vec<u8>;

    fn buf_from_slice(buf: &[u8]) -> Bytes {
        Bytes::copy_from_slice(buf)
    }

    fn dgram_buf_from_slice(buf: &[u8]) -> Vec<u8> {
        buf.to_vec()
    }
}

/// A connection as rlinkd runs it.
pub type QuicConn = quiche::Connection<StreamBufs>;
