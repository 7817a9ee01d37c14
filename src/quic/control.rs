//! Connection-level notices between nodes, on a unidirectional stream (the *control stream*):
//! pure code, no I/O. Today there is one notice, DRAINING: "this node is stopping; open no new
//! stream on this connection". See docs/PROTOCOL.md, "Control stream".
//!
//! ```text
//! +------+------+---------+--------+
//! | 0x52 | 0x43 | version | notice |   then FIN
//! | 'R'  | 'C'  |  0x01   |  0x01  |
//! +------+------+---------+--------+
//! ```
//!
//! Why a stream rather than a frame of its own: QUIC has no application-level connection signal
//! short of closing, and a stream is delivered reliably and in order with everything else.
//! A node allows its peer one unidirectional stream (`initial_max_streams_uni`); builds from
//! before the notice allowed none, so a node never sends it to them (the stream cannot be
//! opened) and they never see it.

/// Bytes of every notice.
pub const LEN: usize = 4;
pub const MAGIC: [u8; 2] = *b"RC";
pub const VERSION: u8 = 1;

/// What a control stream says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The sending node has begun its drain: it refuses new streams on this connection, and the
    /// links already on it end as they finish. Sent once per connection.
    Draining,
}

impl Notice {
    pub fn encode(self) -> [u8; LEN] {
        let code = match self {
            Notice::Draining => 0x01,
        };
        [MAGIC[0], MAGIC[1], VERSION, code]
    }
}

/// Why a control stream was not understood. A receiver ignores such a stream (a newer peer may
/// send notices this build does not know).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("not an rlinkd control stream")]
    BadMagic,
    #[error("unsupported control stream version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown notice 0x{0:02x}")]
    UnknownNotice(u8),
}

/// Reads a notice from the first [`LEN`] bytes of a control stream.
pub fn decode(bytes: &[u8; LEN]) -> Result<Notice, ControlError> {
    if bytes[..2] != MAGIC {
        return Err(ControlError::BadMagic);
    }
    if bytes[2] != VERSION {
        return Err(ControlError::UnsupportedVersion(bytes[2]));
    }
    match bytes[3] {
        0x01 => Ok(Notice::Draining),
        n => Err(ControlError::UnknownNotice(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_round_trips_and_strangers_are_refused() {
        assert_eq!(decode(&Notice::Draining.encode()), Ok(Notice::Draining));
        assert_eq!(decode(b"RL\x01\x01"), Err(ControlError::BadMagic));
        assert_eq!(
            decode(b"RC\x02\x01"),
            Err(ControlError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode(b"RC\x01\x7f"),
            Err(ControlError::UnknownNotice(0x7f))
        );
    }
}
