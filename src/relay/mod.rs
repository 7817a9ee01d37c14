//! Relaying: one local RawSocket connection <-> one QUIC stream. [`pipe::Pipe`] is one direction
//! (buffer, handshake octets, frame checks); [`link::Link`] pairs two pipes with a local socket
//! and a stream and moves bytes until both directions are done.
//!
//! Backpressure is QUIC's per-stream flow control: a pipe stops reading its source while its
//! buffer is full, so a router that stops reading stalls its own stream and nothing else.

pub mod link;
pub mod pipe;
