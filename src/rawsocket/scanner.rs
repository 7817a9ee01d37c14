//! A zero-copy frame scanner for the relay: it tells the caller which bytes of a stream to
//! forward and which to drop, without buffering or copying payload.
//!
//! The caller owns the buffer. It calls [`FrameScanner::scan`] with the bytes it has not yet
//! forwarded or dropped, acts on the returned [`Run`], advances its buffer by the run's length,
//! and calls again until [`Run::NeedMore`]. Then it reads more bytes, keeping any unconsumed
//! tail (at most 3 bytes of an incomplete header) in front of them.

use super::frame::{FrameError, FrameHeader, FrameKind, LengthReading, HEADER_LEN};

/// How many payload bytes of the first regular message are captured (a HELLO on a router link,
/// to read its realm for logs and stats).
pub const CAPTURE_LEN: usize = 512;

/// What to do with the next bytes of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Forward the next `n > 0` bytes: headers and payload of regular messages, possibly many
    /// frames, possibly ending inside a payload.
    Forward(usize),
    /// Drop the next `n > 0` bytes: (part of) one PING or PONG frame, header included. rlinkd
    /// never relays RawSocket PING/PONG: Crossbar closes a connection on PING.
    Discard(usize),
    /// Nothing can be decided on these bytes: input empty, or fewer than 4 bytes of a header.
    /// Keep them and call again with more.
    NeedMore,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header,
    Payload { remaining: u32, kind: FrameKind },
    Failed(FrameError),
}

/// Walks a RawSocket byte stream frame by frame (one direction of one connection).
#[derive(Debug)]
pub struct FrameScanner {
    limit: u32,
    reading: LengthReading,
    state: State,
    messages: u64,
    message_bytes: u64,
    pings: u64,
    pongs: u64,
    capture: Vec<u8>,
    capture_done: bool,
    seen_message: bool,
}

impl FrameScanner {
    /// A scanner failing any frame whose payload exceeds `limit` bytes (the receiver's
    /// announced limit; use [`super::MAX_PAYLOAD`] until it is known).
    pub fn new(limit: u32, reading: LengthReading) -> Self {
        FrameScanner {
            limit,
            reading,
            state: State::Header,
            messages: 0,
            message_bytes: 0,
            pings: 0,
            pongs: 0,
            capture: Vec::new(),
            capture_done: false,
            seen_message: false,
        }
    }

    /// Changes the limit; it applies from the next frame header on.
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Classifies the start of `input`. See [`Run`]. A header error is returned when the bad
    /// header is at the start of `input`: if good bytes precede it they come first as a
    /// `Forward`. After an error the scanner is failed and returns the same error forever.
    pub fn scan(&mut self, input: &[u8]) -> Result<Run, FrameError> {
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        let mut pos = 0usize;
        let mut discarding = false;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Header => {
                    let Some(prefix) = input
                        .get(pos..pos + HEADER_LEN)
                        .and_then(|s| <&[u8; HEADER_LEN]>::try_from(s).ok())
                    else {
                        break;
                    };
                    let header =
                        match FrameHeader::parse_with_limit(prefix, self.reading, self.limit) {
                            Ok(h) => h,
                            Err(e) if pos == 0 => {
                                self.state = State::Failed(e);
                                return Err(e);
                            }
                            // Forward the good frames first; the error comes on the next call.
                            Err(_) => break,
                        };
                    match header.kind {
                        FrameKind::Message => {
                            pos += HEADER_LEN;
                            self.start_message(header.len);
                        }
                        FrameKind::Ping | FrameKind::Pong => {
                            if pos > 0 {
                                break;
                            }
                            if header.kind == FrameKind::Ping {
                                self.pings += 1;
                            } else {
                                self.pongs += 1;
                            }
                            pos = HEADER_LEN;
                            discarding = true;
                            if header.len == 0 {
                                return Ok(Run::Discard(pos));
                            }
                            self.state = State::Payload {
                                remaining: header.len,
                                kind: header.kind,
                            };
                        }
                    }
                }
                State::Payload { remaining, kind } => {
                    let avail = input.len().saturating_sub(pos);
                    if avail == 0 {
                        break;
                    }
                    let take = avail.min(remaining as usize);
                    let rest = remaining - take as u32;
                    if kind == FrameKind::Message {
                        self.message_bytes += take as u64;
                        if let Some(chunk) = input.get(pos..pos + take) {
                            self.capture_payload(chunk);
                        }
                        pos += take;
                        if rest == 0 {
                            self.state = State::Header;
                            self.finish_message();
                        } else {
                            self.state = State::Payload {
                                remaining: rest,
                                kind,
                            };
                            break;
                        }
                    } else {
                        pos += take;
                        self.state = if rest == 0 {
                            State::Header
                        } else {
                            State::Payload {
                                remaining: rest,
                                kind,
                            }
                        };
                        return Ok(Run::Discard(pos));
                    }
                }
            }
        }
        Ok(if pos == 0 {
            Run::NeedMore
        } else if discarding {
            Run::Discard(pos)
        } else {
            Run::Forward(pos)
        })
    }

    fn start_message(&mut self, len: u32) {
        if len == 0 {
            self.state = State::Header;
            self.finish_message();
        } else {
            self.state = State::Payload {
                remaining: len,
                kind: FrameKind::Message,
            };
        }
    }

    fn capture_payload(&mut self, chunk: &[u8]) {
        if self.capture_done || self.seen_message {
            return;
        }
        let room = CAPTURE_LEN.saturating_sub(self.capture.len());
        let n = room.min(chunk.len());
        self.capture
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        if self.capture.len() >= CAPTURE_LEN {
            self.capture_done = true;
        }
    }

    fn finish_message(&mut self) {
        self.messages += 1;
        if !self.seen_message {
            self.seen_message = true;
            self.capture_done = true;
        }
    }

    /// Completed regular messages.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Payload bytes of regular messages scanned so far, including a partial one.
    pub fn message_bytes(&self) -> u64 {
        self.message_bytes
    }

    /// PING frames seen (counted at their header).
    pub fn pings(&self) -> u64 {
        self.pings
    }

    /// PONG frames seen (counted at their header).
    pub fn pongs(&self) -> u64 {
        self.pongs
    }

    /// True when everything consumed so far ends exactly at a frame end (the caller may still
    /// hold up to 3 bytes of the next header). False after an error.
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Header)
    }

    /// Payload bytes still to come in the frame being scanned; `None` between frames (or after
    /// an error).
    pub fn payload_remaining(&self) -> Option<u32> {
        match self.state {
            State::Payload { remaining, .. } => Some(remaining),
            _ => None,
        }
    }

    /// The error the scanner failed with, if any.
    pub fn error(&self) -> Option<FrameError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The first up to [`CAPTURE_LEN`] payload bytes of the first regular message, once that
    /// message is complete or that many bytes have been seen.
    pub fn first_message_prefix(&self) -> Option<&[u8]> {
        self.capture_done.then_some(self.capture.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rawsocket::testutil::{arb_stream, split_points, Piece};
    use crate::rawsocket::MAX_PAYLOAD;
    use proptest::prelude::*;

    /// Feeds `stream` in chunks ending at `cuts`, like a caller with a carry-over buffer.
    fn scan_all(
        scanner: &mut FrameScanner,
        stream: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, usize, usize), FrameError> {
        let mut forwarded = Vec::new();
        let mut discarded = 0;
        let mut runs = 0;
        let mut start = 0; // first byte not yet consumed
        for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
            loop {
                match scanner.scan(&stream[start..end])? {
                    Run::Forward(n) => {
                        assert!(n > 0 && start + n <= end);
                        forwarded.extend_from_slice(&stream[start..start + n]);
                        start += n;
                    }
                    Run::Discard(n) => {
                        assert!(n > 0 && start + n <= end);
                        discarded += n;
                        start += n;
                    }
                    Run::NeedMore => {
                        assert!(end - start < HEADER_LEN);
                        break;
                    }
                }
                runs += 1;
            }
        }
        assert_eq!(start, stream.len());
        Ok((forwarded, discarded, runs))
    }

    #[test]
    fn empty_and_short_input_need_more() {
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        assert_eq!(s.scan(&[]), Ok(Run::NeedMore));
        assert_eq!(s.scan(&[0, 0, 0]), Ok(Run::NeedMore));
        assert!(s.at_frame_boundary());
        assert_eq!(s.scan(&[0, 0, 0, 2, 9]), Ok(Run::Forward(5)));
        assert!(!s.at_frame_boundary());
        assert_eq!(s.scan(&[]), Ok(Run::NeedMore));
        assert_eq!(s.scan(&[9]), Ok(Run::Forward(1)));
        assert!(s.at_frame_boundary());
        assert_eq!(s.messages(), 1);
        assert_eq!(s.message_bytes(), 2);
        assert_eq!(s.first_message_prefix(), Some(&[9u8, 9][..]));
    }

    #[test]
    fn one_run_for_many_small_frames() {
        let mut stream = Vec::new();
        for _ in 0..250 {
            stream.extend_from_slice(&[0, 0, 1, 0]);
            stream.extend_from_slice(&[7u8; 256]);
        }
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        assert_eq!(s.scan(&stream), Ok(Run::Forward(stream.len())));
        assert_eq!(s.messages(), 250);
    }

    #[test]
    fn stops_before_ping_and_discards_it() {
        let stream = [0, 0, 0, 1, 0xAA, 1, 0, 0, 2, 5, 6, 0, 0, 0, 0];
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        assert_eq!(s.scan(&stream), Ok(Run::Forward(5)));
        assert_eq!(s.scan(&stream[5..]), Ok(Run::Discard(6)));
        assert_eq!(s.scan(&stream[11..]), Ok(Run::Forward(4)));
        assert_eq!((s.pings(), s.pongs(), s.messages()), (1, 0, 2));
        // A PONG split in the middle of its payload.
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        assert_eq!(s.scan(&[2, 0, 0, 3, 1]), Ok(Run::Discard(5)));
        assert_eq!(s.scan(&[2, 3, 0, 0]), Ok(Run::Discard(2)));
        assert_eq!(s.scan(&[0, 0, 0, 0]), Ok(Run::Forward(4)));
        assert_eq!(s.pongs(), 1);
        assert_eq!(s.first_message_prefix(), Some(&[][..]));
        // A PING header alone is dropped at once; its payload follows as another Discard.
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        assert_eq!(s.scan(&[1, 0, 0, 3]), Ok(Run::Discard(4)));
        assert_eq!(s.scan(&[7, 7, 7, 0]), Ok(Run::Discard(3)));
        assert_eq!(s.scan(&[0]), Ok(Run::NeedMore));
    }

    #[test]
    fn every_byte_split() {
        let mut stream = vec![0, 0, 0, 3, b'a', b'b', b'c', 1, 0, 0, 2, 8, 9, 0, 0, 0, 0];
        stream.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 1, b'z']);
        let cuts: Vec<usize> = (0..stream.len()).collect();
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Spec);
        let (fwd, discarded, _) = scan_all(&mut s, &stream, &cuts).unwrap();
        assert_eq!(
            fwd,
            [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 1, b'z']
        );
        assert_eq!(discarded, 10);
        assert_eq!(
            (s.messages(), s.message_bytes(), s.pings(), s.pongs()),
            (3, 4, 1, 1)
        );
    }

    #[test]
    fn ambiguous_prefix_by_reading() {
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Spec);
        assert_eq!(s.scan(&[1, 0, 0, 0, 0, 0, 0, 0]), Ok(Run::Discard(4)));
        assert_eq!(s.pings(), 1);
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        assert_eq!(s.scan(&[1, 0, 0, 0, 0, 0]), Ok(Run::Forward(6)));
        assert!(!s.at_frame_boundary());
        let payload = vec![0u8; MAX_PAYLOAD as usize - 2];
        assert_eq!(s.scan(&payload), Ok(Run::Forward(payload.len())));
        assert!(s.at_frame_boundary());
        assert_eq!(s.messages(), 1);
        assert_eq!(s.message_bytes(), u64::from(MAX_PAYLOAD));
    }

    #[test]
    fn oversize_and_sticky_errors() {
        let mut s = FrameScanner::new(512, LengthReading::Crossbar);
        let mut stream = vec![0, 0, 2, 0];
        stream.extend_from_slice(&[1u8; 512]);
        stream.extend_from_slice(&[0, 0, 2, 1]);
        assert_eq!(s.scan(&stream), Ok(Run::Forward(516)));
        let err = FrameError::TooLarge {
            len: 513,
            limit: 512,
        };
        assert_eq!(s.scan(&stream[516..]), Err(err));
        assert_eq!(s.scan(&[0, 0, 0, 0]), Err(err));
        assert_eq!(s.error(), Some(err));
        assert!(!s.at_frame_boundary());
        // 16 MiB is fine at the default limit, one byte less is too small.
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Spec);
        assert_eq!(s.scan(&[8, 0, 0, 0]), Ok(Run::Forward(4)));
        let mut s = FrameScanner::new(MAX_PAYLOAD - 1, LengthReading::Spec);
        assert!(matches!(
            s.scan(&[8, 0, 0, 0]),
            Err(FrameError::TooLarge { .. })
        ));
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Spec);
        assert_eq!(
            s.scan(&[0x13, 0, 0, 0]),
            Err(FrameError::ReservedBits(0x13))
        );
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Spec);
        s.set_limit(4);
        assert_eq!(s.limit(), 4);
        assert!(s.scan(&[1, 0, 0, 5]).is_err());
    }

    #[test]
    fn capture_stops_at_512() {
        let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        assert_eq!(s.scan(&[0, 0, 0x03, 0xE8]), Ok(Run::Forward(4)));
        assert_eq!(s.scan(&payload[..300]), Ok(Run::Forward(300)));
        assert_eq!(s.first_message_prefix(), None);
        assert_eq!(s.scan(&payload[300..]), Ok(Run::Forward(700)));
        assert_eq!(s.first_message_prefix(), Some(&payload[..512]));
        assert_eq!(s.scan(&[0, 0, 0, 1, 42]), Ok(Run::Forward(5)));
        assert_eq!(s.first_message_prefix(), Some(&payload[..512]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_split_forwards_the_same_bytes(
            (pieces, stream) in arb_stream(),
            cuts in split_points(),
            reading in prop_oneof![Just(LengthReading::Spec), Just(LengthReading::Crossbar)],
        ) {
            let cuts: Vec<usize> = {
                let mut c: Vec<usize> = cuts.iter().map(|f| (f * stream.len() as f64) as usize).collect();
                c.sort_unstable();
                c
            };
            let mut s = FrameScanner::new(MAX_PAYLOAD, reading);
            let (fwd, discarded, _) = scan_all(&mut s, &stream, &cuts).unwrap();
            let mut expected = Vec::new();
            let mut exp_disc = 0;
            let mut msgs = 0u64;
            let mut bytes = 0u64;
            let mut first = None;
            for p in &pieces {
                match p {
                    Piece::Message(payload) => {
                        expected.extend_from_slice(&FrameHeader::message(payload.len() as u32).encode());
                        expected.extend_from_slice(payload);
                        msgs += 1;
                        bytes += payload.len() as u64;
                        first.get_or_insert_with(|| payload[..payload.len().min(CAPTURE_LEN)].to_vec());
                    }
                    Piece::Control(h, _) => exp_disc += h.frame_len() as usize,
                }
            }
            prop_assert_eq!(fwd, expected);
            prop_assert_eq!(discarded, exp_disc);
            prop_assert_eq!(s.messages(), msgs);
            prop_assert_eq!(s.message_bytes(), bytes);
            prop_assert_eq!(s.first_message_prefix().map(<[u8]>::to_vec), first);
            prop_assert!(s.at_frame_boundary());
        }

        #[test]
        fn whole_buffer_gives_one_forward_per_message_stretch((pieces, stream) in arb_stream()) {
            let mut s = FrameScanner::new(MAX_PAYLOAD, LengthReading::Spec);
            let (_, _, runs) = scan_all(&mut s, &stream, &[]).unwrap();
            // Each control frame is one Discard and splits at most one extra Forward.
            let controls = pieces.iter().filter(|p| matches!(p, Piece::Control(..))).count();
            prop_assert!(runs <= 2 * controls + 1);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), limit in any::<u32>()) {
            let mut s = FrameScanner::new(limit, LengthReading::Crossbar);
            let mut at = 0;
            while let Ok(run) = s.scan(&bytes[at..]) {
                match run {
                    Run::Forward(n) | Run::Discard(n) => at += n,
                    Run::NeedMore => break,
                }
            }
            prop_assert!(at <= bytes.len());
        }
    }
}
