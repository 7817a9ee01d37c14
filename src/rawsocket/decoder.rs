//! An incremental full-frame decoder for endpoints and tests (the relay uses the zero-copy
//! [`super::FrameScanner`] instead).
//!
//! Push bytes as they arrive with [`Decoder::push`], then call [`Decoder::next_frame`] until it
//! returns `Ok(None)`. Every frame kind is returned; what to do with PING/PONG is the caller's
//! business.

use super::frame::{FrameError, FrameHeader, LengthReading, HEADER_LEN};

/// Consumed bytes are dropped from the front of the buffer once there are this many.
const COMPACT_AT: usize = 64 * 1024;

/// A decoded frame with the prefix exactly as received (so it can be written back verbatim,
/// e.g. Twisted's `01 00 00 00`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The parsed prefix.
    pub header: FrameHeader,
    /// The prefix octets as received.
    pub prefix: [u8; HEADER_LEN],
    /// The payload, `header.len` bytes.
    pub payload: Vec<u8>,
}

/// Buffers a RawSocket byte stream and cuts it into frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    limit: u32,
    reading: LengthReading,
    failed: Option<FrameError>,
}

impl Decoder {
    /// A decoder failing any frame whose payload exceeds `limit` bytes.
    pub fn new(limit: u32, reading: LengthReading) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            limit,
            reading,
            failed: None,
        }
    }

    /// Changes the limit; it applies from the next frame on.
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= COMPACT_AT) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame as (header, payload), `Ok(None)` if more bytes are needed.
    /// After an error the decoder stays failed and returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Vec<u8>)>, FrameError> {
        Ok(self.next_raw_frame()?.map(|f| (f.header, f.payload)))
    }

    /// Like [`Decoder::next_frame`], keeping the prefix octets as received.
    pub fn next_raw_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let Some(prefix) = rest
            .get(..HEADER_LEN)
            .and_then(|s| <[u8; HEADER_LEN]>::try_from(s).ok())
        else {
            return Ok(None);
        };
        let header = match FrameHeader::parse_with_limit(&prefix, self.reading, self.limit) {
            Ok(h) => h,
            Err(e) => {
                self.failed = Some(e);
                return Err(e);
            }
        };
        let end = HEADER_LEN + header.len as usize;
        let Some(payload) = rest.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += end;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(Frame {
            header,
            prefix,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rawsocket::testutil::{arb_stream, split_points, Piece};
    use crate::rawsocket::{FrameKind, MAX_PAYLOAD};
    use proptest::prelude::*;

    fn decode_split(
        stream: &[u8],
        cuts: &[usize],
        reading: LengthReading,
    ) -> Result<Vec<(FrameHeader, Vec<u8>)>, FrameError> {
        let mut d = Decoder::new(MAX_PAYLOAD, reading);
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
            d.push(&stream[prev..c]);
            prev = c;
            while let Some(f) = d.next_frame()? {
                out.push(f);
            }
        }
        assert_eq!(d.buffered(), 0);
        Ok(out)
    }

    #[test]
    fn frames_one_byte_at_a_time() {
        let mut stream = vec![0, 0, 0, 3, b'a', b'b', b'c', 1, 0, 0, 1, 9, 0, 0, 0, 0];
        stream.extend_from_slice(&[2, 0, 0, 0]);
        let cuts: Vec<usize> = (0..stream.len()).collect();
        let frames = decode_split(&stream, &cuts, LengthReading::Spec).unwrap();
        assert_eq!(
            frames,
            vec![
                (FrameHeader::message(3), b"abc".to_vec()),
                (FrameHeader::ping(1), vec![9]),
                (FrameHeader::message(0), vec![]),
                (FrameHeader::pong(0), vec![]),
            ]
        );
    }

    #[test]
    fn both_16_mib_prefixes() {
        let payload = vec![0x5Au8; MAX_PAYLOAD as usize];
        for prefix in [[8u8, 0, 0, 0], [1, 0, 0, 0]] {
            let mut d = Decoder::new(MAX_PAYLOAD, LengthReading::Crossbar);
            d.push(&prefix);
            d.push(&payload[..1000]);
            assert_eq!(d.next_raw_frame(), Ok(None));
            d.push(&payload[1000..]);
            let f = d.next_raw_frame().unwrap().unwrap();
            assert_eq!(f.header, FrameHeader::message(MAX_PAYLOAD));
            assert_eq!(f.prefix, prefix);
            assert!(f.payload == payload);
        }
        let mut d = Decoder::new(MAX_PAYLOAD, LengthReading::Spec);
        d.push(&[1, 0, 0, 0]);
        assert_eq!(d.next_frame(), Ok(Some((FrameHeader::ping(0), vec![]))));
    }

    #[test]
    fn oversize_fails_and_stays_failed() {
        let mut d = Decoder::new(1024, LengthReading::Crossbar);
        d.push(&[0, 0, 4, 0]);
        d.push(&[0; 1024]);
        assert!(d.next_frame().unwrap().is_some());
        d.push(&[0, 0, 4, 1]);
        let e = FrameError::TooLarge {
            len: 1025,
            limit: 1024,
        };
        assert_eq!(d.next_frame(), Err(e));
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(e));
        let mut d = Decoder::new(1024, LengthReading::Crossbar);
        d.push(&[0x40, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::ReservedBits(0x40)));
        let mut d = Decoder::new(MAX_PAYLOAD, LengthReading::Crossbar);
        d.set_limit(10);
        d.push(&[0, 0, 0, 11]);
        assert!(d.next_frame().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_split_gives_the_same_frames(
            (pieces, stream) in arb_stream(),
            cuts in split_points(),
            reading in prop_oneof![Just(LengthReading::Spec), Just(LengthReading::Crossbar)],
        ) {
            let mut cuts: Vec<usize> =
                cuts.iter().map(|f| (f * stream.len() as f64) as usize).collect();
            cuts.sort_unstable();
            let frames = decode_split(&stream, &cuts, reading).unwrap();
            let expected: Vec<(FrameHeader, Vec<u8>)> = pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Message(m) => (FrameHeader::message(m.len() as u32), m),
                    Piece::Control(h, m) => (h, m),
                })
                .collect();
            prop_assert_eq!(frames.len(), expected.len());
            prop_assert!(frames == expected);
            prop_assert!(frames.iter().all(|(h, _)| h.kind != FrameKind::Message || h.len <= MAX_PAYLOAD));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), limit in any::<u32>()) {
            let mut d = Decoder::new(limit, LengthReading::Crossbar);
            for chunk in bytes.chunks(7) {
                d.push(chunk);
                while let Ok(Some(_)) = d.next_frame() {}
            }
        }
    }
}
