//! QUIC between rlinkd nodes: a sans-I/O driver over quiche ([`driver::QuicDriver`]), the stream
//! preamble that names a route ([`preamble`]), the wire's error codes ([`codes`]), the
//! connection-level notices of the control stream ([`control`]), the admission
//! of incoming handshakes ([`admission`]), the mutual TLS 1.3 setup ([`tls`]) and the
//! connection-ID layout that names each connection's shard ([`cid`]), and the buffers quiche
//! keeps stream data in ([`bufs`]).
//!
//! One QUIC connection per node pair carries every rlink between them, one bidirectional stream
//! per rlink. `docs/PROTOCOL.md` is the reference for what crosses the wire.

pub mod admission;
pub mod bufs;
pub mod cid;
pub mod codes;
pub mod control;
pub mod driver;
pub mod preamble;
pub mod tls;

/// ALPN protocol identifier of rlinkd's QUIC connections; bumps with an incompatible change.
pub const ALPN: &[u8] = b"rlinkd/1";
