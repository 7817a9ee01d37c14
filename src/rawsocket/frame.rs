//! The 4-octet frame prefix: `RRRR XTTT` + 24-bit big-endian length.
//!
//! `TTT` is 0 for a regular WAMP message, 1 for PING, 2 for PONG, 3..=7 reserved; `RRRR` are
//! reserved and must be zero; `X` is a 25th length bit, set only for a payload of exactly 2^24
//! bytes (the 24 length bits are then zero).
//!
//! # The `01 00 00 00` decision
//!
//! Twisted/autobahn-python (and so Crossbar) write the prefix of a regular message as a
//! big-endian u32 length, so a payload of exactly 2^24 bytes goes out as `01 00 00 00`. A
//! spec-following peer would read that prefix as an empty PING. Crossbar routers never send a
//! PING (they close the connection when they receive one), so with
//! [`LengthReading::Crossbar`] — what the relay uses — exactly that prefix is read as a regular
//! message of 2^24 bytes. Every other type-1 prefix is still a PING. With
//! [`LengthReading::Spec`] `01 00 00 00` is an empty PING. In both readings `08 00 00 00` (the
//! spec's X-bit form) is a regular message of 2^24 bytes, and it is what [`FrameHeader::encode`]
//! writes for such a message.
//!
//! The X bit is only accepted on a regular message: a PING or PONG carrying it is rejected with
//! [`FrameError::BadLengthBit`] (no real peer sends a 16 MiB PING, and this keeps PING/PONG
//! frames strictly below 2^24 bytes).

/// Largest payload a frame can carry: 2^24 bytes (16 MiB).
pub const MAX_PAYLOAD: u32 = 1 << 24;
/// Length of the frame prefix in octets.
pub const HEADER_LEN: usize = 4;

const X_BIT: u8 = 0x08;
const TYPE_MASK: u8 = 0x07;
const RESERVED_MASK: u8 = 0xF0;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Type 0: a regular WAMP message.
    Message,
    /// Type 1: PING; the peer should answer a PONG with the same payload.
    Ping,
    /// Type 2: PONG.
    Pong,
}

impl FrameKind {
    /// The 3-bit type value on the wire.
    pub fn type_bits(self) -> u8 {
        match self {
            FrameKind::Message => 0,
            FrameKind::Ping => 1,
            FrameKind::Pong => 2,
        }
    }
}

/// How to read the ambiguous prefix `01 00 00 00` (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LengthReading {
    /// As the spec says: an empty PING.
    Spec,
    /// As Twisted/Crossbar write it: a regular message of 2^24 bytes. What the relay uses.
    #[default]
    Crossbar,
}

/// Why a frame prefix (or a frame's size) is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// One of the four reserved high bits of octet 0 is set; carries octet 0.
    #[error("reserved bits set in frame prefix octet {0:#04x}")]
    ReservedBits(u8),
    /// Frame type 3..=7; carries the type.
    #[error("reserved frame type {0}")]
    ReservedType(u8),
    /// The X length bit is set together with non-zero length bits, or on a PING/PONG.
    #[error("frame length bit X set with a non-zero length or on a PING/PONG")]
    BadLengthBit,
    /// The payload is larger than the receiver's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The receiver's limit.
        limit: u32,
    },
}

/// A parsed frame prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Frame type.
    pub kind: FrameKind,
    /// Payload length in bytes, at most [`MAX_PAYLOAD`].
    pub len: u32,
}

impl FrameHeader {
    /// A regular message of `len` payload bytes (`len <= MAX_PAYLOAD` to be encodable).
    pub fn message(len: u32) -> Self {
        FrameHeader {
            kind: FrameKind::Message,
            len,
        }
    }

    /// A PING of `len` payload bytes (`len < MAX_PAYLOAD` to be encodable).
    pub fn ping(len: u32) -> Self {
        FrameHeader {
            kind: FrameKind::Ping,
            len,
        }
    }

    /// A PONG of `len` payload bytes (`len < MAX_PAYLOAD` to be encodable).
    pub fn pong(len: u32) -> Self {
        FrameHeader {
            kind: FrameKind::Pong,
            len,
        }
    }

    /// Parses a frame prefix. Checks, in order: reserved bits, reserved type, the X bit. Does
    /// not check a receiver's limit (see [`FrameHeader::check_limit`]).
    pub fn parse(prefix: &[u8; HEADER_LEN], reading: LengthReading) -> Result<Self, FrameError> {
        let [b0, b1, b2, b3] = *prefix;
        if reading == LengthReading::Crossbar && *prefix == [0x01, 0, 0, 0] {
            return Ok(FrameHeader::message(MAX_PAYLOAD));
        }
        if b0 & RESERVED_MASK != 0 {
            return Err(FrameError::ReservedBits(b0));
        }
        let kind = match b0 & TYPE_MASK {
            0 => FrameKind::Message,
            1 => FrameKind::Ping,
            2 => FrameKind::Pong,
            t => return Err(FrameError::ReservedType(t)),
        };
        let len = u32::from_be_bytes([0, b1, b2, b3]);
        if b0 & X_BIT != 0 {
            if len != 0 || kind != FrameKind::Message {
                return Err(FrameError::BadLengthBit);
            }
            return Ok(FrameHeader::message(MAX_PAYLOAD));
        }
        Ok(FrameHeader { kind, len })
    }

    /// Parses and checks the payload length against `limit`.
    pub fn parse_with_limit(
        prefix: &[u8; HEADER_LEN],
        reading: LengthReading,
        limit: u32,
    ) -> Result<Self, FrameError> {
        let header = FrameHeader::parse(prefix, reading)?;
        header.check_limit(limit)?;
        Ok(header)
    }

    /// `Err(TooLarge)` when the payload is larger than `limit`.
    pub fn check_limit(&self, limit: u32) -> Result<(), FrameError> {
        if self.len > limit {
            Err(FrameError::TooLarge {
                len: self.len,
                limit,
            })
        } else {
            Ok(())
        }
    }

    /// The prefix on the wire, or `Err(TooLarge)` when the length cannot be encoded (above
    /// 2^24 for a message, 2^24 or above for a PING/PONG).
    pub fn try_encode(&self) -> Result<[u8; HEADER_LEN], FrameError> {
        let limit = match self.kind {
            FrameKind::Message => MAX_PAYLOAD,
            FrameKind::Ping | FrameKind::Pong => MAX_PAYLOAD - 1,
        };
        self.check_limit(limit)?;
        if self.len == MAX_PAYLOAD {
            return Ok([X_BIT, 0, 0, 0]);
        }
        let [_, b1, b2, b3] = self.len.to_be_bytes();
        Ok([self.kind.type_bits(), b1, b2, b3])
    }

    /// The prefix on the wire; a 2^24-byte message gets the spec's X-bit form `08 00 00 00`.
    /// The caller keeps `len` encodable (see [`FrameHeader::try_encode`]); an unencodable length
    /// is a bug: debug builds panic, release builds write the low 24 bits.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        match self.try_encode() {
            Ok(prefix) => prefix,
            Err(_) => {
                debug_assert!(false, "unencodable frame header {self:?}");
                let [_, b1, b2, b3] = self.len.to_be_bytes();
                [self.kind.type_bits(), b1, b2, b3]
            }
        }
    }

    /// Header plus payload length in bytes.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOTH: [LengthReading; 2] = [LengthReading::Spec, LengthReading::Crossbar];

    #[test]
    fn plain_types() {
        for r in BOTH {
            assert_eq!(
                FrameHeader::parse(&[0, 0, 0, 0], r),
                Ok(FrameHeader::message(0))
            );
            assert_eq!(
                FrameHeader::parse(&[0, 0x12, 0x34, 0x56], r),
                Ok(FrameHeader::message(0x12_3456))
            );
            assert_eq!(
                FrameHeader::parse(&[0, 0xFF, 0xFF, 0xFF], r),
                Ok(FrameHeader::message(MAX_PAYLOAD - 1))
            );
            assert_eq!(
                FrameHeader::parse(&[1, 0, 0, 5], r),
                Ok(FrameHeader::ping(5))
            );
            assert_eq!(
                FrameHeader::parse(&[2, 0, 0, 0], r),
                Ok(FrameHeader::pong(0))
            );
            assert_eq!(
                FrameHeader::parse(&[2, 0, 1, 0], r),
                Ok(FrameHeader::pong(256))
            );
        }
    }

    #[test]
    fn reserved_types_and_bits() {
        for r in BOTH {
            for t in 3..=7u8 {
                assert_eq!(
                    FrameHeader::parse(&[t, 0, 0, 1], r),
                    Err(FrameError::ReservedType(t))
                );
            }
            for bit in [0x10u8, 0x20, 0x40, 0x80] {
                assert_eq!(
                    FrameHeader::parse(&[bit, 0, 0, 1], r),
                    Err(FrameError::ReservedBits(bit))
                );
                // Reserved bits are reported before a reserved type.
                assert_eq!(
                    FrameHeader::parse(&[bit | 7, 0, 0, 1], r),
                    Err(FrameError::ReservedBits(bit | 7))
                );
            }
        }
    }

    #[test]
    fn x_bit() {
        for r in BOTH {
            assert_eq!(
                FrameHeader::parse(&[0x08, 0, 0, 0], r),
                Ok(FrameHeader::message(MAX_PAYLOAD))
            );
            assert_eq!(
                FrameHeader::parse(&[0x08, 0, 0, 1], r),
                Err(FrameError::BadLengthBit)
            );
            assert_eq!(
                FrameHeader::parse(&[0x08, 0x80, 0, 0], r),
                Err(FrameError::BadLengthBit)
            );
            assert_eq!(
                FrameHeader::parse(&[0x09, 0, 0, 0], r),
                Err(FrameError::BadLengthBit)
            );
            assert_eq!(
                FrameHeader::parse(&[0x0A, 0, 0, 0], r),
                Err(FrameError::BadLengthBit)
            );
            assert_eq!(
                FrameHeader::parse(&[0x0B, 0, 0, 0], r),
                Err(FrameError::ReservedType(3))
            );
        }
    }

    #[test]
    fn twisted_16_mib_prefix() {
        assert_eq!(
            FrameHeader::parse(&[1, 0, 0, 0], LengthReading::Crossbar),
            Ok(FrameHeader::message(MAX_PAYLOAD))
        );
        assert_eq!(
            FrameHeader::parse(&[1, 0, 0, 0], LengthReading::Spec),
            Ok(FrameHeader::ping(0))
        );
        // Only the exact prefix is special: other PINGs stay PINGs.
        assert_eq!(
            FrameHeader::parse(&[1, 0, 0, 1], LengthReading::Crossbar),
            Ok(FrameHeader::ping(1))
        );
        assert_eq!(LengthReading::default(), LengthReading::Crossbar);
    }

    #[test]
    fn limits() {
        let p16 = [0x08, 0, 0, 0];
        assert_eq!(
            FrameHeader::parse_with_limit(&p16, LengthReading::Spec, MAX_PAYLOAD),
            Ok(FrameHeader::message(MAX_PAYLOAD))
        );
        assert_eq!(
            FrameHeader::parse_with_limit(&p16, LengthReading::Spec, MAX_PAYLOAD - 1),
            Err(FrameError::TooLarge {
                len: MAX_PAYLOAD,
                limit: MAX_PAYLOAD - 1
            })
        );
        assert_eq!(
            FrameHeader::parse_with_limit(&[0, 0, 2, 0], LengthReading::Spec, 512),
            Ok(FrameHeader::message(512))
        );
        assert_eq!(
            FrameHeader::parse_with_limit(&[0, 0, 2, 1], LengthReading::Spec, 512),
            Err(FrameError::TooLarge {
                len: 513,
                limit: 512
            })
        );
        assert_eq!(
            FrameHeader::parse_with_limit(&[1, 0, 2, 1], LengthReading::Spec, 512),
            Err(FrameError::TooLarge {
                len: 513,
                limit: 512
            })
        );
    }

    #[test]
    fn encode_forms() {
        assert_eq!(FrameHeader::message(0).encode(), [0, 0, 0, 0]);
        assert_eq!(FrameHeader::message(0x01_0203).encode(), [0, 1, 2, 3]);
        assert_eq!(FrameHeader::message(MAX_PAYLOAD).encode(), [8, 0, 0, 0]);
        assert_eq!(FrameHeader::ping(3).encode(), [1, 0, 0, 3]);
        assert_eq!(FrameHeader::pong(3).encode(), [2, 0, 0, 3]);
        assert!(FrameHeader::message(MAX_PAYLOAD + 1).try_encode().is_err());
        assert!(FrameHeader::ping(MAX_PAYLOAD).try_encode().is_err());
        assert_eq!(FrameHeader::message(7).frame_len(), 11);
    }

    proptest! {
        #[test]
        fn round_trip(kind in 0u8..3, len in 0u32..=MAX_PAYLOAD) {
            let h = match kind {
                0 => FrameHeader::message(len),
                1 => FrameHeader::ping(len.min(MAX_PAYLOAD - 1)),
                _ => FrameHeader::pong(len.min(MAX_PAYLOAD - 1)),
            };
            let e = h.encode();
            prop_assert_eq!(FrameHeader::parse(&e, LengthReading::Spec), Ok(h));
            // A spec encoder never writes 01 00 00 00, so both readings agree except there.
            if e != [1, 0, 0, 0] {
                prop_assert_eq!(FrameHeader::parse(&e, LengthReading::Crossbar), Ok(h));
            }
        }

        #[test]
        fn twisted_u32_prefix_reads_back(len in 0u32..=MAX_PAYLOAD) {
            // What Twisted writes for a regular message: the length as a big-endian u32.
            let e = len.to_be_bytes();
            prop_assert_eq!(
                FrameHeader::parse(&e, LengthReading::Crossbar),
                Ok(FrameHeader::message(len))
            );
        }

        #[test]
        fn never_panics(p in any::<[u8; 4]>(), limit in any::<u32>()) {
            for r in BOTH {
                if let Ok(h) = FrameHeader::parse_with_limit(&p, r, limit) {
                    prop_assert!(h.len <= MAX_PAYLOAD && h.len <= limit);
                }
            }
        }
    }
}
