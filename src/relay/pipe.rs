//! One direction of a relayed rlink: a buffer that bytes enter from a source (a local socket or a
//! QUIC stream) and leave to a sink (the other one), checked on the way.
//!
//! The first four bytes are the RawSocket handshake octets of that direction (the client's
//! request towards the router, the router's reply towards the client). They are parsed and
//! passed on untouched. After them the frame scanner validates every frame header against the
//! receiver's announced limit and counts frames; payload bytes are never interpreted or
//! re-encoded. PING/PONG frames are dropped: rlinkd never relays RawSocket PING to a router
//! (Crossbar closes the connection on one); keepalive is QUIC's job.

use crate::rawsocket::{
    ClientHandshake, FrameError, FrameScanner, LengthReading, RouterReply, Run, HANDSHAKE_LEN,
    HEADER_LEN,
};

/// First size of a pipe's buffer; it grows 4x at a time up to the configured buffer size.
pub const INITIAL_BUFFER: usize = 4096;

/// Which handshake octets open this direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Client -> router: the client's handshake request.
    ClientRequest,
    /// Router -> client: the router's reply.
    RouterReply,
}

/// The handshake octets a pipe has just let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Client(ClientHandshake),
    Router(RouterReply),
}

#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("bad RawSocket handshake: {0}")]
    Handshake(#[from] crate::rawsocket::HandshakeError),
    #[error("bad RawSocket frame: {0}")]
    Frame(#[from] FrameError),
}

/// What a source read produced.
pub enum Fill {
    Data(usize),
    /// The source has no more bytes, ever (EOF or FIN).
    End,
    /// These bytes, and then the end (a QUIC stream's last bytes arrive with its FIN).
    Last(usize),
    /// Nothing now; the source will signal.
    Blocked,
}

pub struct Pipe {
    /// Grows from [`INITIAL_BUFFER`] to `capacity` only when it fills up: an idle link (most of
    /// them, with many realms) costs a few KiB, a busy one gets the full buffer.
    buf: Vec<u8>,
    capacity: usize,
    /// First byte not yet given to the sink.
    start: usize,
    /// Bytes `start..ready` are checked and may go to the sink.
    ready: usize,
    /// Bytes `ready..end` are not checked yet.
    end: usize,
    /// Bytes to send before anything in `buf` (the stream preamble).
    prefix: Vec<u8>,
    prefix_sent: usize,
    opening: Option<Opening>,
    scanner: FrameScanner,
    source_ended: bool,
    bytes_in: u64,
    /// Frames after the handshake octets wait, unchecked, until [`Pipe::set_limit`] gives the
    /// receiver's limit (see [`Pipe::hold_frames_until_limit`]).
    hold: bool,
}

impl Pipe {
    pub fn new(capacity: usize, opening: Opening, limit: u32) -> Pipe {
        Pipe {
            buf: Vec::new(),
            capacity: capacity.max(64),
            start: 0,
            ready: 0,
            end: 0,
            prefix: Vec::new(),
            prefix_sent: 0,
            opening: Some(opening),
            scanner: FrameScanner::new(limit, LengthReading::Crossbar),
            source_ended: false,
            bytes_in: 0,
            hold: false,
        }
    }

    /// Frames after the handshake octets are neither checked nor passed on until the receiver's
    /// limit is known ([`Pipe::set_limit`]). The node that delivers to a router holds the frames a
    /// client pipelined with its handshake until the router's reply says how large a frame it
    /// accepts: a frame over that limit must never reach it.
    pub fn hold_frames_until_limit(&mut self) {
        self.hold = true;
    }

    /// Drops every byte not yet given to the sink and reads the source no more (the source was
    /// aborted: a stream reset by the peer).
    pub fn abort(&mut self) {
        self.start = 0;
        self.ready = 0;
        self.end = 0;
        self.prefix_sent = self.prefix.len();
        self.source_ended = true;
    }

    /// Reads the source no more: what it gave so far still goes to the sink.
    pub fn end_source(&mut self) {
        self.source_ended = true;
    }

    /// How many more source bytes end the frame in progress: 0 when the bytes so far end
    /// exactly at a frame end (stopping here cuts no frame in two), `None` while that is not
    /// known (handshake octets not in yet, frames held, or a failed stream).
    pub fn bytes_to_frame_end(&self) -> Option<usize> {
        if self.opening.is_some() || self.hold || self.scanner.error().is_some() {
            return None;
        }
        if let Some(remaining) = self.scanner.payload_remaining() {
            return Some(remaining as usize);
        }
        // Between frames: the buffer may end with the first bytes of the next header.
        match self.end - self.ready {
            0 => Some(0),
            partial => Some(HEADER_LEN.saturating_sub(partial)),
        }
    }

    /// No free space is left, even after compaction and growth: the source is not read.
    pub fn is_full(&self) -> bool {
        self.end - self.start >= self.capacity
    }

    /// Bytes of memory the buffer holds (it grows to `relay.buffer_size` on links that fill it).
    pub fn memory(&self) -> usize {
        self.buf.len() + self.prefix.len()
    }

    /// Bytes in the buffer, checked or not, that have not gone to the sink yet.
    pub fn buffered(&self) -> usize {
        self.end - self.start + (self.prefix.len() - self.prefix_sent)
    }

    /// Checked bytes wait for the sink.
    pub fn has_pending(&self) -> bool {
        self.start < self.ready || self.prefix_sent < self.prefix.len()
    }

    /// Bytes to go out before the relayed ones (used once, for the stream preamble).
    pub fn set_prefix(&mut self, prefix: Vec<u8>) {
        self.prefix = prefix;
        self.prefix_sent = 0;
    }

    /// Largest frame the receiver of this direction accepts.
    pub fn set_limit(&mut self, limit: u32) {
        self.scanner.set_limit(limit);
        self.hold = false;
    }

    pub fn scanner(&self) -> &FrameScanner {
        &self.scanner
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    pub fn source_ended(&self) -> bool {
        self.source_ended
    }

    /// Everything the source gave has gone to the sink.
    pub fn is_empty(&self) -> bool {
        self.start == self.end && self.prefix_sent == self.prefix.len()
    }

    /// The source has ended and everything it gave has gone to the sink.
    pub fn is_finished(&self) -> bool {
        self.source_ended && self.is_empty()
    }

    /// Reads once from `source` into free space. Returns true if bytes arrived or the source
    /// ended. Does nothing when the buffer is full (backpressure: the source is not read until the
    /// sink takes bytes).
    pub fn fill<E>(
        &mut self,
        source: impl FnOnce(&mut [u8]) -> Result<Fill, E>,
    ) -> Result<bool, E> {
        self.fill_at_most(usize::MAX, source)
    }

    /// [`Pipe::fill`], reading at most `max` bytes (a draining node reads only to the end of
    /// the frame in progress).
    pub fn fill_at_most<E>(
        &mut self,
        max: usize,
        source: impl FnOnce(&mut [u8]) -> Result<Fill, E>,
    ) -> Result<bool, E> {
        if max == 0 {
            return Ok(false);
        }
        if self.source_ended {
            return Ok(false);
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.ready -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.capacity {
            let grown =
                (self.buf.len() * 4).clamp(INITIAL_BUFFER.min(self.capacity), self.capacity);
            self.buf.resize(grown, 0);
        }
        if self.end == self.buf.len() {
            return Ok(false);
        }
        let room = (self.buf.len() - self.end).min(max);
        match source(&mut self.buf[self.end..self.end + room])? {
            Fill::Data(0) | Fill::Blocked => Ok(false),
            Fill::Data(n) => {
                let filled_all = self.end + n == self.buf.len() && n == room;
                self.end += n;
                self.bytes_in += n as u64;
                if filled_all && self.buf.len() < self.capacity {
                    // The source had at least as much as there was room for: a busy link. Grow
                    // now, since the sink usually empties the buffer before it is ever full.
                    let grown = (self.buf.len() * 4).min(self.capacity);
                    self.buf.resize(grown, 0);
                }
                Ok(true)
            }
            Fill::End => {
                self.source_ended = true;
                Ok(true)
            }
            Fill::Last(n) => {
                self.end += n;
                self.bytes_in += n as u64;
                self.source_ended = true;
                Ok(true)
            }
        }
    }

    /// Checks newly arrived bytes. Returns the handshake octets when they have just been checked.
    pub fn check(&mut self) -> Result<Option<Handshake>, PipeError> {
        let mut handshake = None;
        if let Some(opening) = self.opening {
            if self.end - self.ready < HANDSHAKE_LEN {
                return Ok(None);
            }
            let mut hs = [0u8; HANDSHAKE_LEN];
            hs.copy_from_slice(&self.buf[self.ready..self.ready + HANDSHAKE_LEN]);
            handshake = Some(match opening {
                Opening::ClientRequest => Handshake::Client(ClientHandshake::parse(&hs)?),
                Opening::RouterReply => Handshake::Router(RouterReply::parse(&hs)?),
            });
            self.ready += HANDSHAKE_LEN;
            self.opening = None;
        }
        if self.hold {
            return Ok(handshake);
        }
        while self.ready < self.end {
            match self.scanner.scan(&self.buf[self.ready..self.end])? {
                Run::Forward(n) => self.ready += n,
                Run::Discard(n) => {
                    if self.start == self.ready {
                        self.start += n;
                        self.ready += n;
                    } else {
                        // Checked bytes wait before the dropped frame: cut it out in place
                        // (PING/PONG are rare; the scanner has already consumed them).
                        self.buf.copy_within(self.ready + n..self.end, self.ready);
                        self.end -= n;
                    }
                }
                Run::NeedMore => break,
            }
        }
        Ok(handshake)
    }

    /// Gives checked bytes to `sink`, which returns how many it took (0 when it is full). Returns
    /// the number of bytes taken.
    pub fn drain<E>(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut taken = 0;
        // A sink that takes less than offered is full: asking again would only cost a call.
        while self.prefix_sent < self.prefix.len() {
            let offered = self.prefix.len() - self.prefix_sent;
            let n = sink(&self.prefix[self.prefix_sent..])?;
            self.prefix_sent += n;
            taken += n;
            if n < offered {
                return Ok(taken);
            }
        }
        while self.start < self.ready {
            let offered = self.ready - self.start;
            let n = sink(&self.buf[self.start..self.ready])?;
            self.start += n;
            taken += n;
            if n < offered {
                break;
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.ready = 0;
            self.end = 0;
        }
        Ok(taken)
    }

    /// The first message's leading bytes (a HELLO on the client-to-router direction).
    pub fn first_message(&self) -> Option<&[u8]> {
        self.scanner.first_message_prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rawsocket::FrameHeader;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = FrameHeader::message(payload.len() as u32).encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Pushes `input` through a pipe in chunks of `chunk` with a sink taking at most `sink_max` at a
    /// time, returning what came out.
    fn run(input: &[u8], chunk: usize, sink_max: usize, cap: usize) -> Vec<u8> {
        let mut pipe = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let took_in = pipe
                .fill::<std::io::Error>(|buf| {
                    if pos == input.len() {
                        return Ok(Fill::End);
                    }
                    let n = chunk.min(buf.len()).min(input.len() - pos);
                    buf[..n].copy_from_slice(&input[pos..pos + n]);
                    pos += n;
                    Ok(Fill::Data(n))
                })
                .unwrap();
            pipe.check().unwrap();
            let took_out = pipe
                .drain::<std::io::Error>(|b| {
                    let n = b.len().min(sink_max);
                    out.extend_from_slice(&b[..n]);
                    Ok(n)
                })
                .unwrap();
            if pipe.is_finished() {
                return out;
            }
            assert!(took_in || took_out > 0, "pipe stalled");
        }
    }

    #[test]
    fn relays_handshake_and_frames_verbatim_through_any_chunking() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        for len in [0usize, 1, 100, 1000, 70_000] {
            input.extend(frame(&vec![len as u8; len]));
        }
        for (chunk, sink, cap) in [
            (1, 1, 64),
            (3, 7, 64),
            (4096, 100_000, 65_536),
            (65_536, 1, 100),
        ] {
            assert_eq!(
                run(&input, chunk, sink, cap),
                input,
                "chunk {chunk} sink {sink} cap {cap}"
            );
        }
    }

    #[test]
    fn ping_and_pong_frames_are_dropped() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        input.extend(frame(b"one"));
        input.extend(FrameHeader::ping(3).encode());
        input.extend(b"abc");
        input.extend(frame(b"two"));
        let mut expected = vec![0x7f, 0xf3, 0, 0];
        expected.extend(frame(b"one"));
        expected.extend(frame(b"two"));
        assert_eq!(run(&input, 5, 2, 64), expected);
    }

    #[test]
    fn bad_handshake_and_oversize_frames_are_errors() {
        let mut p = Pipe::new(64, Opening::ClientRequest, 16);
        p.fill::<std::io::Error>(|b| {
            b[..4].copy_from_slice(&[0x7f, 0x00, 0, 0]);
            Ok(Fill::Data(4))
        })
        .unwrap();
        assert!(matches!(p.check(), Err(PipeError::Handshake(_))));

        let mut p = Pipe::new(64, Opening::RouterReply, 16);
        let mut bytes = vec![0x7f, 0xf3, 0, 0];
        bytes.extend(FrameHeader::message(17).encode());
        p.fill::<std::io::Error>(|b| {
            b[..bytes.len()].copy_from_slice(&bytes);
            Ok(Fill::Data(bytes.len()))
        })
        .unwrap();
        assert!(matches!(
            p.check(),
            Err(PipeError::Frame(FrameError::TooLarge { .. }))
        ));
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;
    use crate::rawsocket::FrameHeader;

    #[test]
    fn counts_every_frame_and_captures_the_first() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        let hello: Vec<u8> = [&[0x83u8, 0x01, 0x66][..], b"realm1", &[0xa0]].concat();
        for p in [&hello[..], b"", b"x"] {
            input.extend(FrameHeader::message(p.len() as u32).encode());
            input.extend_from_slice(p);
        }
        let mut pipe = Pipe::new(1024, Opening::ClientRequest, 1 << 24);
        pipe.fill::<std::io::Error>(|b| {
            b[..input.len()].copy_from_slice(&input);
            Ok(Fill::Data(input.len()))
        })
        .unwrap();
        pipe.check().unwrap();
        assert_eq!(pipe.scanner().messages(), 3);
        assert_eq!(pipe.scanner().message_bytes(), hello.len() as u64 + 1);
        assert_eq!(pipe.first_message(), Some(&hello[..]));
    }
}
