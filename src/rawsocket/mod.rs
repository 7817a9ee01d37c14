//! WAMP RawSocket codec: handshake, frame prefix, a zero-copy scanner for the relay, a full
//! decoder for endpoints, and HELLO realm extraction. Pure: no I/O, no clocks.
//!
//! # Wire format
//! - Handshake, 4 octets each way: client `7F LS 00 00` (`L` = exponent of the largest message
//!   the client receives, 2^(L+9) bytes; `S` = serializer), router `7F LS 00 00` (accepted, `L`
//!   = the router's own limit) or `7F E0 00 00` (error `E`). See [`handshake`].
//! - Frames: `RRRR XTTT` + 24-bit length + payload; type 0 message, 1 PING, 2 PONG. See
//!   [`frame`], including how Twisted's `01 00 00 00` prefix for a 2^24-byte message is read
//!   ([`LengthReading`]).
//!
//! # Which piece to use
//! - The relay forwards bytes untouched: [`FrameScanner`] says which byte ranges of a buffer are
//!   regular messages (forward) and which are PING/PONG (drop), validating headers against the
//!   receiver's limit, counting, and capturing the start of the first message (HELLO) so that
//!   [`realm_from_hello`] can name the realm.
//! - Endpoints and tests that need whole messages use [`Decoder`].

pub mod decoder;
pub mod frame;
pub mod handshake;
pub mod realm;
pub mod scanner;

pub use decoder::{Decoder, Frame};
pub use frame::{FrameError, FrameHeader, FrameKind, LengthReading, HEADER_LEN, MAX_PAYLOAD};
pub use handshake::{
    error_reply, ClientHandshake, ErrorCode, HandshakeError, MaxLen, RouterReply, Serializer,
    HANDSHAKE_LEN, MAGIC,
};
pub use realm::{realm_from_hello, MAX_REALM_LEN};
pub use scanner::{FrameScanner, Run, CAPTURE_LEN};

/// Stream generators shared by the scanner and decoder property tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::{FrameHeader, MAX_PAYLOAD};
    use proptest::prelude::*;

    /// One frame of a generated stream.
    #[derive(Clone, Debug)]
    pub(crate) enum Piece {
        Message(Vec<u8>),
        /// A PING or PONG (never an empty PING: its prefix `01 00 00 00` reads as a 16 MiB
        /// message with `LengthReading::Crossbar`; that case has its own unit tests).
        Control(FrameHeader, Vec<u8>),
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)))
            .collect()
    }

    fn arb_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            2 => Just(0usize),
            6 => 1usize..64,
            3 => 64usize..4096,
            1 => 60_000usize..300_000,
        ]
    }

    fn arb_piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            6 => (arb_len(), any::<u8>()).prop_map(|(n, s)| Piece::Message(payload(n, s))),
            1 => (1usize..40, any::<u8>())
                .prop_map(|(n, s)| Piece::Control(FrameHeader::ping(n as u32), payload(n, s))),
            1 => (0usize..40, any::<u8>())
                .prop_map(|(n, s)| Piece::Control(FrameHeader::pong(n as u32), payload(n, s))),
        ]
    }

    /// Frames and the byte stream they make.
    pub(crate) fn arb_stream() -> impl Strategy<Value = (Vec<Piece>, Vec<u8>)> {
        proptest::collection::vec(arb_piece(), 0..30).prop_map(|pieces| {
            let mut stream = Vec::new();
            for p in &pieces {
                let (h, body) = match p {
                    Piece::Message(m) => (FrameHeader::message(m.len() as u32), m),
                    Piece::Control(h, m) => (*h, m),
                };
                assert!(h.len <= MAX_PAYLOAD);
                stream.extend_from_slice(&h.encode());
                stream.extend_from_slice(body);
            }
            (pieces, stream)
        })
    }

    /// Cut positions as fractions of the stream length (scaled and sorted by the test).
    pub(crate) fn split_points() -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(0.0f64..=1.0, 0..40)
    }
}
