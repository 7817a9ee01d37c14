//! The 4-octet RawSocket opening handshake, both directions.
//!
//! Client -> router: `0x7F, LLLL SSSS, 0x00, 0x00`; router -> client: either the same shape
//! (accepted, `LLLL` being the router's own receive limit) or `0x7F, EEEE 0000, 0, 0` (error).

/// First octet of every handshake, in both directions.
pub const MAGIC: u8 = 0x7F;
/// Length of a handshake (and of a handshake reply) in octets.
pub const HANDSHAKE_LEN: usize = 4;

/// WAMP serializer announced in the low nibble of handshake octet 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Serializer {
    /// `1`: JSON.
    Json = 1,
    /// `2`: MessagePack.
    MsgPack = 2,
    /// `3`: CBOR (what Crossbar rlinks use).
    Cbor = 3,
    /// `4`: UBJSON.
    Ubjson = 4,
    /// `5`: FlatBuffers.
    FlatBuffers = 5,
}

impl Serializer {
    /// All serializers, in code order.
    pub const ALL: [Serializer; 5] = [
        Serializer::Json,
        Serializer::MsgPack,
        Serializer::Cbor,
        Serializer::Ubjson,
        Serializer::FlatBuffers,
    ];

    /// The serializer for a nibble value, `None` for 0 (illegal) and 6..=15 (reserved).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Serializer::Json),
            2 => Some(Serializer::MsgPack),
            3 => Some(Serializer::Cbor),
            4 => Some(Serializer::Ubjson),
            5 => Some(Serializer::FlatBuffers),
            _ => None,
        }
    }

    /// The nibble value written on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Lower-case name as used in Crossbar configuration (`"cbor"`, `"msgpack"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::MsgPack => "msgpack",
            Serializer::Cbor => "cbor",
            Serializer::Ubjson => "ubjson",
            Serializer::FlatBuffers => "flatbuffers",
        }
    }
}

/// A maximum message length as announced in a handshake: 2^(exponent + 9) bytes, exponent 0..=15
/// (512 B ... 16 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxLen(u8);

impl MaxLen {
    /// 512 bytes (exponent 0).
    pub const MIN: MaxLen = MaxLen(0);
    /// 16 MiB = 2^24 bytes (exponent 15), what Crossbar's rlink client announces.
    pub const MAX: MaxLen = MaxLen(15);

    /// `None` unless `exp <= 15`.
    pub const fn new(exp: u8) -> Option<MaxLen> {
        if exp <= 15 {
            Some(MaxLen(exp))
        } else {
            None
        }
    }

    /// The 4-bit exponent written on the wire.
    pub const fn exponent(self) -> u8 {
        self.0
    }

    /// The limit in bytes: 2^(exponent + 9).
    pub const fn bytes(self) -> u32 {
        1u32 << (self.0 as u32 + 9)
    }

    /// The largest limit not above `n` bytes; [`MaxLen::MIN`] when `n < 512`.
    pub fn from_bytes_floor(n: u32) -> MaxLen {
        let mut exp = 15u8;
        while exp > 0 && MaxLen(exp).bytes() > n {
            exp -= 1;
        }
        MaxLen(exp)
    }
}

impl Default for MaxLen {
    /// 16 MiB, the largest limit.
    fn default() -> Self {
        MaxLen::MAX
    }
}

/// Why a handshake (or a router's reply) is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Octet 0 is not 0x7F: not a RawSocket peer; the connection is simply closed.
    #[error("first handshake octet is {0:#04x}, not the RawSocket magic 0x7f")]
    BadMagic(u8),
    /// Serializer nibble 0 (illegal) or 6..=15 (reserved).
    #[error("serializer code {0} is not supported")]
    UnsupportedSerializer(u8),
    /// Octets 2-3 of a client handshake are not zero.
    #[error("reserved handshake octets are not zero")]
    ReservedBitsUsed,
}

impl HandshakeError {
    /// The error code a router sends back before closing, or `None` when it should just close
    /// (bad magic: the peer does not speak RawSocket).
    pub fn reply_code(&self) -> Option<ErrorCode> {
        match self {
            HandshakeError::BadMagic(_) => None,
            HandshakeError::UnsupportedSerializer(_) => Some(ErrorCode::SerializerUnsupported),
            HandshakeError::ReservedBitsUsed => Some(ErrorCode::ReservedBitsUsed),
        }
    }
}

/// Error codes of a router's handshake error reply (high nibble of octet 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// `1`: serializer unsupported.
    SerializerUnsupported = 1,
    /// `2`: maximum message length unacceptable.
    MaxLenUnacceptable = 2,
    /// `3`: use of reserved bits (unsupported feature).
    ReservedBitsUsed = 3,
    /// `4`: maximum connection count reached.
    MaxConnectionCount = 4,
}

impl ErrorCode {
    /// The code for a nibble value, `None` for 0 and 5..=15 (not defined by the spec).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ErrorCode::SerializerUnsupported),
            2 => Some(ErrorCode::MaxLenUnacceptable),
            3 => Some(ErrorCode::ReservedBitsUsed),
            4 => Some(ErrorCode::MaxConnectionCount),
            _ => None,
        }
    }

    /// The nibble value written on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The 4 octets a router sends to refuse a handshake: `[0x7F, code << 4, 0, 0]`.
pub fn error_reply(code: ErrorCode) -> [u8; HANDSHAKE_LEN] {
    [MAGIC, code.code() << 4, 0, 0]
}

/// The handshake a client (an rlink dialer) sends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientHandshake {
    /// Largest message the client is willing to receive.
    pub max_len: MaxLen,
    /// Serializer the client wants to speak.
    pub serializer: Serializer,
}

impl ClientHandshake {
    /// Validates a client handshake: magic first, then the reserved octets 2-3, then the
    /// serializer nibble (so the reported error is deterministic when several rules fail).
    pub fn parse(octets: &[u8; HANDSHAKE_LEN]) -> Result<Self, HandshakeError> {
        let [magic, b1, b2, b3] = *octets;
        if magic != MAGIC {
            return Err(HandshakeError::BadMagic(magic));
        }
        if b2 != 0 || b3 != 0 {
            return Err(HandshakeError::ReservedBitsUsed);
        }
        let code = b1 & 0x0F;
        let serializer =
            Serializer::from_code(code).ok_or(HandshakeError::UnsupportedSerializer(code))?;
        Ok(ClientHandshake {
            max_len: MaxLen(b1 >> 4),
            serializer,
        })
    }

    /// The 4 octets on the wire.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        [MAGIC, (self.max_len.0 << 4) | self.serializer.code(), 0, 0]
    }
}

/// A router's answer to a [`ClientHandshake`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouterReply {
    /// The router accepts; `max_len` is the largest message it will receive.
    Accepted {
        /// Largest message the router accepts.
        max_len: MaxLen,
        /// Serializer, normally echoing the client's.
        serializer: Serializer,
    },
    /// The router refuses with the error nibble `code` (kept raw, 0..=15; see
    /// [`RouterReply::error_code`]).
    Rejected {
        /// The high nibble of octet 1. Only its low 4 bits are encoded.
        code: u8,
    },
}

impl RouterReply {
    /// Parses a router's reply. The magic is checked; a low nibble of 0 in octet 1 means an
    /// error reply (any code kept); otherwise the serializer must be 1..=5. Octets 2-3 are not
    /// checked: Crossbar neither sets nor checks them, and rlinkd relays, not polices, replies.
    pub fn parse(octets: &[u8; HANDSHAKE_LEN]) -> Result<Self, HandshakeError> {
        let [magic, b1, _, _] = *octets;
        if magic != MAGIC {
            return Err(HandshakeError::BadMagic(magic));
        }
        let low = b1 & 0x0F;
        if low == 0 {
            return Ok(RouterReply::Rejected { code: b1 >> 4 });
        }
        let serializer =
            Serializer::from_code(low).ok_or(HandshakeError::UnsupportedSerializer(low))?;
        Ok(RouterReply::Accepted {
            max_len: MaxLen(b1 >> 4),
            serializer,
        })
    }

    /// The 4 octets on the wire (octets 2-3 zero).
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        match *self {
            RouterReply::Accepted {
                max_len,
                serializer,
            } => [MAGIC, (max_len.0 << 4) | serializer.code(), 0, 0],
            RouterReply::Rejected { code } => [MAGIC, (code & 0x0F) << 4, 0, 0],
        }
    }

    /// For a rejection with a code the spec defines, that code.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match *self {
            RouterReply::Rejected { code } => ErrorCode::from_code(code),
            RouterReply::Accepted { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serializer_codes_and_names() {
        for s in Serializer::ALL {
            assert_eq!(Serializer::from_code(s.code()), Some(s));
        }
        assert_eq!(Serializer::Cbor.code(), 3);
        assert_eq!(Serializer::MsgPack.name(), "msgpack");
        assert_eq!(Serializer::from_code(0), None);
        for c in 6..=255u8 {
            assert_eq!(Serializer::from_code(c), None);
        }
    }

    #[test]
    fn max_len_bytes_and_floor() {
        assert_eq!(MaxLen::new(0).unwrap().bytes(), 512);
        assert_eq!(MaxLen::new(11).unwrap().bytes(), 1 << 20);
        assert_eq!(MaxLen::new(15).unwrap().bytes(), 1 << 24);
        assert_eq!(MaxLen::new(16), None);
        assert_eq!(MaxLen::default(), MaxLen::MAX);
        assert_eq!(MaxLen::from_bytes_floor(0), MaxLen::MIN);
        assert_eq!(MaxLen::from_bytes_floor(511), MaxLen::MIN);
        assert_eq!(MaxLen::from_bytes_floor(512), MaxLen::MIN);
        assert_eq!(MaxLen::from_bytes_floor(1023).exponent(), 0);
        assert_eq!(MaxLen::from_bytes_floor(1024).exponent(), 1);
        assert_eq!(MaxLen::from_bytes_floor((1 << 24) - 1).exponent(), 14);
        assert_eq!(MaxLen::from_bytes_floor(1 << 24), MaxLen::MAX);
        assert_eq!(MaxLen::from_bytes_floor(u32::MAX), MaxLen::MAX);
        for e in 0..=15 {
            let m = MaxLen::new(e).unwrap();
            assert_eq!(MaxLen::from_bytes_floor(m.bytes()), m);
            assert_eq!(m.exponent(), e);
        }
    }

    #[test]
    fn crossbar_rlink_client_handshake() {
        let hs = ClientHandshake::parse(&[0x7F, 0xF3, 0, 0]).unwrap();
        assert_eq!(hs.max_len, MaxLen::MAX);
        assert_eq!(hs.serializer, Serializer::Cbor);
        assert_eq!(hs.encode(), [0x7F, 0xF3, 0, 0]);
    }

    #[test]
    fn client_handshake_rules_in_order() {
        assert_eq!(
            ClientHandshake::parse(&[0x7E, 0xF3, 0, 0]),
            Err(HandshakeError::BadMagic(0x7E))
        );
        // Bad magic wins over everything else.
        assert_eq!(
            ClientHandshake::parse(&[0x00, 0xF0, 1, 1]),
            Err(HandshakeError::BadMagic(0))
        );
        assert_eq!(
            ClientHandshake::parse(&[0x7F, 0xF3, 1, 0]),
            Err(HandshakeError::ReservedBitsUsed)
        );
        assert_eq!(
            ClientHandshake::parse(&[0x7F, 0xF3, 0, 0x80]),
            Err(HandshakeError::ReservedBitsUsed)
        );
        // Reserved bits are checked before the serializer.
        assert_eq!(
            ClientHandshake::parse(&[0x7F, 0xF0, 0, 1]),
            Err(HandshakeError::ReservedBitsUsed)
        );
        assert_eq!(
            ClientHandshake::parse(&[0x7F, 0xF0, 0, 0]),
            Err(HandshakeError::UnsupportedSerializer(0))
        );
        for s in 6..=15u8 {
            assert_eq!(
                ClientHandshake::parse(&[0x7F, 0x20 | s, 0, 0]),
                Err(HandshakeError::UnsupportedSerializer(s))
            );
        }
    }

    #[test]
    fn reply_codes() {
        assert_eq!(HandshakeError::BadMagic(1).reply_code(), None);
        assert_eq!(
            HandshakeError::UnsupportedSerializer(9).reply_code(),
            Some(ErrorCode::SerializerUnsupported)
        );
        assert_eq!(
            HandshakeError::ReservedBitsUsed.reply_code(),
            Some(ErrorCode::ReservedBitsUsed)
        );
        assert_eq!(
            error_reply(ErrorCode::SerializerUnsupported),
            [0x7F, 0x10, 0, 0]
        );
        assert_eq!(
            error_reply(ErrorCode::MaxLenUnacceptable),
            [0x7F, 0x20, 0, 0]
        );
        assert_eq!(error_reply(ErrorCode::ReservedBitsUsed), [0x7F, 0x30, 0, 0]);
        assert_eq!(
            error_reply(ErrorCode::MaxConnectionCount),
            [0x7F, 0x40, 0, 0]
        );
        for c in 1..=4u8 {
            assert_eq!(ErrorCode::from_code(c).unwrap().code(), c);
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(5), None);
    }

    #[test]
    fn router_reply_rules() {
        assert_eq!(
            RouterReply::parse(&[0x7F, 0xB3, 0, 0]),
            Ok(RouterReply::Accepted {
                max_len: MaxLen::new(11).unwrap(),
                serializer: Serializer::Cbor
            })
        );
        // Octets 2-3 are not checked on a reply.
        assert!(matches!(
            RouterReply::parse(&[0x7F, 0xB3, 0xFF, 0x01]),
            Ok(RouterReply::Accepted { .. })
        ));
        assert_eq!(
            RouterReply::parse(&[0x80, 0xB3, 0, 0]),
            Err(HandshakeError::BadMagic(0x80))
        );
        for code in 0..=15u8 {
            let r = RouterReply::parse(&[0x7F, code << 4, 9, 9]).unwrap();
            assert_eq!(r, RouterReply::Rejected { code });
            assert_eq!(r.encode(), [0x7F, code << 4, 0, 0]);
            assert_eq!(r.error_code(), ErrorCode::from_code(code));
        }
        assert_eq!(
            RouterReply::parse(&error_reply(ErrorCode::MaxConnectionCount))
                .unwrap()
                .error_code(),
            Some(ErrorCode::MaxConnectionCount)
        );
        for s in 6..=15u8 {
            assert_eq!(
                RouterReply::parse(&[0x7F, 0xF0 | s, 0, 0]),
                Err(HandshakeError::UnsupportedSerializer(s))
            );
        }
    }

    proptest! {
        #[test]
        fn client_handshake_round_trips(exp in 0u8..=15, ser in 1u8..=5) {
            let hs = ClientHandshake {
                max_len: MaxLen::new(exp).unwrap(),
                serializer: Serializer::from_code(ser).unwrap(),
            };
            prop_assert_eq!(ClientHandshake::parse(&hs.encode()), Ok(hs));
            let reply = RouterReply::Accepted { max_len: hs.max_len, serializer: hs.serializer };
            prop_assert_eq!(RouterReply::parse(&reply.encode()), Ok(reply));
        }

        #[test]
        fn parse_accepts_exactly_the_encodings(octets in any::<[u8; 4]>()) {
            if let Ok(hs) = ClientHandshake::parse(&octets) {
                prop_assert_eq!(hs.encode(), octets);
            }
            if let Ok(r) = RouterReply::parse(&octets) {
                let e = r.encode();
                prop_assert_eq!(&e[..2], &octets[..2]);
            }
        }
    }
}
