//! One direction of a relayed rlink: a buffer that bytes enter from a source (a local socket or a
//! QUIC stream) and leave to a sink (the other one), checked on the way.
//!
//! The first four bytes are the RawSocket handshake octets of that direction (the client's
//! request towards the router, the router's reply towards the client). They are parsed and
//! passed on untouched. After them the frame scanner validates every frame header against the
//! receiver's announced limit and counts frames; payload bytes are never interpreted or
//! re-encoded. PING/PONG frames are dropped: rlinkd never relays RawSocket PING to a router
//! (Crossbar closes the connection on one); keepalive is QUIC's job.

use bytes::{Buf, Bytes, BytesMut};

use crate::rawsocket::{
    ClientHandshake, FrameError, FrameScanner, LengthReading, RouterReply, Run, HANDSHAKE_LEN,
    HEADER_LEN,
};

/// First size of a pipe's buffer; it grows 4x at a time up to the configured buffer size.
pub const INITIAL_BUFFER: usize = 4096;

/// Smallest read worth a system call: a block with less room left is replaced first.
const MIN_ROOM: usize = 1024;

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

/// A direction's bytes on their way, in the one allocation they were read into.
///
/// `buf` holds what has not gone to the sink: `..ready` checked, `ready..` not yet; the source
/// appends to its spare capacity. A sink that copies (a local socket's `write`) takes checked
/// bytes from the front ([`Pipe::drain`]); a sink that keeps buffers (quiche's `stream_send_zc`)
/// gets them split off as a [`Bytes`] sharing the allocation ([`Pipe::drain_shared`]), so a
/// byte read from a local socket reaches quiche without a copy.
pub struct Pipe {
    buf: BytesMut,
    /// Bytes of the allocation `buf` lives in (its front may already have gone to the sink).
    block_bytes: usize,
    /// Bytes `..ready` of `buf` are checked and may go to the sink.
    ready: usize,
    /// Checked bytes split off for a sharing sink that has taken only part of them.
    held: Bytes,
    /// Bytes to send before anything else (the stream preamble).
    prefix: Bytes,
    /// The most bytes waiting for the sink, checked or not (`relay.buffer_size`).
    capacity: usize,
    /// Size of the next block: grows from [`INITIAL_BUFFER`] when reads fill the block, up to
    /// `capacity`: an idle link (most of them, with many realms) costs a few KiB, a busy one
    /// reads `relay.buffer_size` at a time.
    block: usize,
    opening: Option<Opening>,
    scanner: FrameScanner,
    source_ended: bool,
    bytes_in: u64,
    /// Bytes the sink took (the prefix's included).
    bytes_out: u64,
    /// Bytes moved within memory to make room (the unsent rest of a block into a new one).
    copied: u64,
    /// Bytes of an incomplete frame header the source ended with (dropped).
    cut_at_end: u64,
    /// Frames after the handshake octets wait, unchecked, until [`Pipe::set_limit`] gives the
    /// receiver's limit (see [`Pipe::hold_frames_until_limit`]).
    hold: bool,
}

impl Pipe {
    pub fn new(capacity: usize, opening: Opening, limit: u32) -> Pipe {
        let capacity = capacity.max(64);
        Pipe {
            buf: BytesMut::new(),
            block_bytes: 0,
            ready: 0,
            held: Bytes::new(),
            prefix: Bytes::new(),
            capacity,
            block: INITIAL_BUFFER.min(capacity),
            opening: Some(opening),
            scanner: FrameScanner::new(limit, LengthReading::Crossbar),
            source_ended: false,
            bytes_in: 0,
            bytes_out: 0,
            copied: 0,
            cut_at_end: 0,
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
        self.buf = BytesMut::new();
        self.block_bytes = 0;
        self.ready = 0;
        self.held = Bytes::new();
        self.prefix = Bytes::new();
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
        match self.buf.len() - self.ready {
            0 => Some(0),
            partial => Some(HEADER_LEN.saturating_sub(partial)),
        }
    }

    /// Source bytes that have not gone to the sink (the prefix is not the source's).
    fn unsent(&self) -> usize {
        self.held.len() + self.buf.len()
    }

    /// As many bytes as `relay.buffer_size` wait for the sink: the source is not read.
    pub fn is_full(&self) -> bool {
        self.unsent() >= self.capacity
    }

    /// The source is not read until the sink takes bytes: the pipe is full, or its block has
    /// no room worth a read while more than [`MIN_ROOM`] of its bytes wait for the sink. Room
    /// would mean moving those bytes (a copy of up to a block, `relay.buffer_size`, for a read
    /// of about a kilobyte), so the source waits instead; once the sink has taken all but
    /// [`MIN_ROOM`] of them, the rest moves and the whole block is room again. (A copying sink
    /// takes bytes from the block's front and leaves no room behind them.)
    pub fn takes_no_more(&self) -> bool {
        self.is_full() || (self.room_is_short() && self.buf.len() > MIN_ROOM)
    }

    /// The block's spare capacity is too small for a read worth its system call.
    fn room_is_short(&self) -> bool {
        self.buf.capacity() - self.buf.len() < MIN_ROOM.min(self.block)
    }

    /// Bytes of memory the pipe holds: its block (the whole allocation, bytes already sent from
    /// its front included) and the preamble. Earlier blocks that quiche still holds slices of
    /// until the peer acknowledges them are not counted here; each is at most one block.
    pub fn memory(&self) -> usize {
        self.block_bytes + self.prefix.len()
    }

    /// Bytes, checked or not, that have not gone to the sink yet.
    pub fn buffered(&self) -> usize {
        self.unsent() + self.prefix.len()
    }

    /// Checked bytes wait for the sink.
    pub fn has_pending(&self) -> bool {
        self.ready > 0 || !self.held.is_empty() || !self.prefix.is_empty()
    }

    /// Bytes to go out before the relayed ones (used once, for the stream preamble).
    pub fn set_prefix(&mut self, prefix: Vec<u8>) {
        self.prefix = Bytes::from(prefix);
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

    /// Bytes the sink took, the prefix's included.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Bytes this pipe copied within memory (compaction into a new block).
    pub fn bytes_copied(&self) -> u64 {
        self.copied
    }

    pub fn source_ended(&self) -> bool {
        self.source_ended
    }

    /// Everything the source gave has gone to the sink.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.held.is_empty() && self.prefix.is_empty()
    }

    /// The source has ended and everything it gave has gone to the sink.
    pub fn is_finished(&self) -> bool {
        self.source_ended && self.is_empty()
    }

    /// Reads once from `source`, which appends at most the given number of bytes to the buffer's
    /// spare capacity (that many fit without reallocating). Returns true if bytes arrived or the
    /// source ended. Does nothing when the pipe is full (backpressure: the source is not read
    /// until the sink takes bytes).
    pub fn fill<E>(
        &mut self,
        source: impl FnOnce(&mut BytesMut, usize) -> Result<Fill, E>,
    ) -> Result<bool, E> {
        self.fill_at_most(usize::MAX, source)
    }

    /// [`Pipe::fill`], reading at most `max` bytes (a draining node reads only to the end of
    /// the frame in progress).
    pub fn fill_at_most<E>(
        &mut self,
        max: usize,
        source: impl FnOnce(&mut BytesMut, usize) -> Result<Fill, E>,
    ) -> Result<bool, E> {
        if max == 0 || self.source_ended || self.takes_no_more() {
            return Ok(false);
        }
        if self.room_is_short() {
            self.new_block();
        }
        let room = (self.buf.capacity() - self.buf.len())
            .min(self.capacity - self.unsent())
            .min(max);
        let before = self.buf.len();
        let fill = source(&mut self.buf, room)?;
        debug_assert!(
            self.buf.capacity() - before >= room,
            "the source reallocated"
        );
        match fill {
            Fill::Data(0) | Fill::Blocked => Ok(false),
            Fill::Data(n) => {
                debug_assert_eq!(self.buf.len(), before + n);
                self.bytes_in += n as u64;
                if n == room {
                    self.grow_if_filled();
                }
                Ok(true)
            }
            Fill::End => {
                self.source_ended = true;
                Ok(true)
            }
            Fill::Last(n) => {
                debug_assert_eq!(self.buf.len(), before + n);
                self.bytes_in += n as u64;
                self.source_ended = true;
                Ok(true)
            }
        }
    }

    /// Lends the room the next read may fill (at most `max` bytes) to a source that fills it
    /// later, on its own (a read on the ring): the block's spare capacity, split off so the
    /// source owns it while the kernel writes it; its size is the second value. `None` when
    /// nothing should be read now: full, ended, `max` 0, or so nearly full that the read would
    /// bring a few bytes at the cost of a request (or need the block's unsent bytes copied to a
    /// new one): the sink takes them first, and the caller lends again after it has. Give the
    /// room back with [`Pipe::give_back`] before lending again: nothing else of the pipe reads
    /// into the block meanwhile.
    pub fn lend(&mut self, max: usize) -> Option<(BytesMut, usize)> {
        if max == 0 || self.source_ended || self.takes_no_more() {
            return None;
        }
        let unsent = self.unsent();
        if unsent > 0 && self.capacity - unsent < MIN_ROOM.min(self.capacity) {
            return None;
        }
        if self.room_is_short() {
            self.new_block();
        }
        let room = (self.buf.capacity() - self.buf.len())
            .min(self.capacity - self.unsent())
            .min(max);
        let len = self.buf.len();
        Some((self.buf.split_off(len), room))
    }

    /// Takes back room lent by [`Pipe::lend`] (`lent` bytes of it offered), holding what the
    /// source read into it. It joins the block where it was split off (no copy); only if the
    /// block's end moved meanwhile (a dropped PING cut out of it) are the bytes copied, and
    /// counted.
    pub fn give_back(&mut self, chunk: BytesMut, lent: usize) {
        let n = chunk.len();
        let contiguous =
            self.buf.is_empty() || self.buf.as_ptr().wrapping_add(self.buf.len()) == chunk.as_ptr();
        if !contiguous {
            self.copied += n as u64;
        }
        self.buf.unsplit(chunk);
        self.bytes_in += n as u64;
        if n > 0 && n == lent {
            self.grow_if_filled();
        }
    }

    /// After a read that took all the room it was given: if it filled the block, the source had
    /// at least as much as the block held (a busy link), so the next block is 4 x larger, up to
    /// `capacity`.
    fn grow_if_filled(&mut self) {
        if self.buf.len() == self.buf.capacity() {
            self.block = self.block.saturating_mul(4).min(self.capacity);
        }
    }

    /// Room for reading: the block's unsent bytes (a partial header, or checked bytes a slow
    /// sink has not taken) move to the front of a block of `self.block` bytes (or a little more
    /// when they fill it). That is the same
    /// block when nothing else holds it (a copying sink), else a new one (a sharing sink still
    /// holds slices of the old block: it is freed when the last goes).
    fn new_block(&mut self) {
        let unsent = self.buf.len();
        // The rest of a block (not a block more: growing in place would double the allocation,
        // front already sent included).
        let want = self.block.saturating_sub(unsent).max(MIN_ROOM);
        if unsent > 0 || self.buf.capacity() > 0 {
            // Nothing else holds the allocation: its unsent bytes move to its front.
            if self.buf.try_reclaim(want) {
                self.copied += unsent as u64;
                return;
            }
        }
        // A sharing sink still holds slices of it (or it is too small): a new block, freed
        // or reused by the allocator when the last slice goes.
        let mut fresh = BytesMut::with_capacity(unsent + want);
        fresh.extend_from_slice(&self.buf);
        self.copied += unsent as u64;
        self.block_bytes = fresh.capacity();
        self.buf = fresh;
    }

    /// Checks newly arrived bytes. Returns the handshake octets when they have just been checked.
    pub fn check(&mut self) -> Result<Option<Handshake>, PipeError> {
        let mut handshake = None;
        if let Some(opening) = self.opening {
            if self.buf.len() - self.ready < HANDSHAKE_LEN {
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
        while self.ready < self.buf.len() {
            match self.scanner.scan(&self.buf[self.ready..])? {
                Run::Forward(n) => self.ready += n,
                Run::Discard(n) => {
                    // Cut the dropped bytes out in place, so their room is read into again
                    // (advancing past them would leave it dead in a block a sharing sink may
                    // keep alive: a stream of tiny messages each followed by a large PING would
                    // pin a block per message). What follows them, usually nothing, moves.
                    let end = self.buf.len();
                    self.buf.copy_within(self.ready + n..end, self.ready);
                    self.buf.truncate(end - n);
                    self.copied += (end - self.ready - n) as u64;
                }
                Run::NeedMore => break,
            }
        }
        if self.source_ended && !self.hold && self.ready < self.buf.len() {
            // The source ended inside a frame header (or the handshake octets): those bytes
            // can never be completed nor checked. They are dropped so the direction can finish
            // (its FIN sent, the link closed) instead of waiting forever for the rest.
            self.cut_at_end += (self.buf.len() - self.ready) as u64;
            self.buf.truncate(self.ready);
        }
        Ok(handshake)
    }

    /// Bytes dropped because the source ended inside a frame header.
    pub fn cut_at_end(&self) -> u64 {
        self.cut_at_end
    }

    /// Gives checked bytes to `sink`, which copies them and returns how many it took (0 when it
    /// is full). Returns the number of bytes taken.
    pub fn drain<E>(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut taken = 0;
        // A sink that takes less than offered is full: asking again would only cost a call.
        for part in [Part::Prefix, Part::Held, Part::Ready] {
            let offered = self.part(part).len();
            if offered == 0 {
                continue;
            }
            let n = sink(self.part(part))?;
            self.consume(part, n);
            taken += n;
            if n < offered {
                break;
            }
        }
        self.bytes_out += taken as u64;
        Ok(taken)
    }

    /// Gives checked bytes to `sink` as buffers it may keep (they share the pipe's blocks): it
    /// returns how many bytes of the buffer it took (0 when it is full); the rest stays here
    /// and is offered again next time. Returns the number of bytes taken.
    pub fn drain_shared<E>(
        &mut self,
        mut sink: impl FnMut(&Bytes) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut taken = 0;
        if !self.prefix.is_empty() {
            let offered = self.prefix.len();
            let n = sink(&self.prefix)?;
            self.prefix.advance(n);
            self.bytes_out += n as u64;
            taken += n;
            if n < offered {
                return Ok(taken);
            }
        }
        loop {
            if self.held.is_empty() {
                if self.ready == 0 {
                    return Ok(taken);
                }
                self.held = self.buf.split_to(self.ready).freeze();
                self.ready = 0;
            }
            let offered = self.held.len();
            let n = sink(&self.held)?;
            self.held.advance(n);
            self.bytes_out += n as u64;
            taken += n;
            if n < offered {
                return Ok(taken);
            }
        }
    }

    fn part(&self, part: Part) -> &[u8] {
        match part {
            Part::Prefix => &self.prefix,
            Part::Held => &self.held,
            Part::Ready => &self.buf[..self.ready],
        }
    }

    fn consume(&mut self, part: Part, n: usize) {
        match part {
            Part::Prefix => self.prefix.advance(n),
            Part::Held => self.held.advance(n),
            Part::Ready => {
                self.buf.advance(n);
                self.ready -= n;
            }
        }
    }

    /// The first message's leading bytes (a HELLO on the client-to-router direction).
    pub fn first_message(&self) -> Option<&[u8]> {
        self.scanner.first_message_prefix()
    }
}

/// Where checked bytes wait, in the order they go to the sink.
#[derive(Clone, Copy)]
enum Part {
    Prefix,
    Held,
    Ready,
}

/// Appends up to `max` bytes from `bytes` to `buf`, as a source of tests and the fuzzer does.
#[cfg(test)]
pub fn append(buf: &mut BytesMut, max: usize, bytes: &[u8]) -> usize {
    let n = max.min(bytes.len());
    buf.extend_from_slice(&bytes[..n]);
    n
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

    /// One read from a source that has `input[*pos..]` ready at once, then ends; returns the
    /// room the pipe offered (0 when it did not read).
    fn read_all_ready(pipe: &mut Pipe, input: &[u8], pos: &mut usize) -> usize {
        let mut offered = 0;
        pipe.fill::<std::io::Error>(|buf, room| {
            offered = room;
            if *pos == input.len() {
                return Ok(Fill::End);
            }
            let n = append(buf, room, &input[*pos..]);
            *pos += n;
            Ok(Fill::Data(n))
        })
        .unwrap();
        offered
    }

    /// Pushes `input` through a pipe of capacity `cap` in chunks of `chunk`, emptying it with
    /// `drain` (which returns the bytes it took) until it is finished; returns the pipe.
    fn push_through(
        input: &[u8],
        chunk: usize,
        cap: usize,
        drain: impl FnMut(&mut Pipe) -> usize,
    ) -> Pipe {
        let pipe = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
        push_through_pipe(pipe, input, chunk, drain)
    }

    /// [`push_through`] with a pipe set up by the caller.
    fn push_through_pipe(
        mut pipe: Pipe,
        input: &[u8],
        chunk: usize,
        mut drain: impl FnMut(&mut Pipe) -> usize,
    ) -> Pipe {
        let mut pos = 0;
        loop {
            let took_in = pipe
                .fill::<std::io::Error>(|buf, room| {
                    if pos == input.len() {
                        return Ok(Fill::End);
                    }
                    let n = append(buf, chunk.min(room), &input[pos..]);
                    pos += n;
                    Ok(Fill::Data(n))
                })
                .unwrap();
            pipe.check().unwrap();
            let took_out = drain(&mut pipe);
            if pipe.is_finished() {
                return pipe;
            }
            assert!(took_in || took_out > 0, "pipe stalled");
        }
    }

    /// Frames read into lent room (a read on the ring) come out whole and in order, through a
    /// sharing sink, and join their block where they were read: nothing is copied.
    #[test]
    fn lent_room_holds_what_a_ring_read_brings_and_joins_its_block_without_a_copy() {
        let mut input = vec![0x7f, 0xf2, 0, 0];
        for i in 0..200u32 {
            input.extend(frame(&i.to_be_bytes().repeat(1 + i as usize % 50)));
        }
        let mut pipe = Pipe::new(64 << 10, Opening::ClientRequest, 1 << 24);
        let (mut out, mut pos) = (Vec::new(), 0);
        while pos < input.len() || !pipe.is_empty() {
            if let Some((mut room, len)) = pipe.lend(usize::MAX) {
                assert!(room.is_empty() && len <= room.capacity());
                // The kernel writes the room later; up to 700 bytes at a time here.
                let n = len.min(700).min(input.len() - pos);
                room.extend_from_slice(&input[pos..pos + n]);
                pos += n;
                pipe.give_back(room, len);
            }
            pipe.check().unwrap();
            pipe.drain_shared::<()>(|b| {
                out.extend_from_slice(b);
                Ok(b.len())
            })
            .unwrap();
        }
        assert_eq!(out, input);
        assert_eq!(pipe.bytes_in(), input.len() as u64);
        // Blocks are replaced as they fill, never compacted: the sink shares them.
        assert_eq!(pipe.bytes_copied(), 0);
    }

    /// A full pipe lends nothing; nor does one whose source ended.
    #[test]
    fn nothing_is_lent_when_full_or_ended() {
        let mut pipe = Pipe::new(64, Opening::ClientRequest, 1 << 24);
        let (mut room, len) = pipe.lend(usize::MAX).unwrap();
        assert_eq!(len, 64);
        room.extend_from_slice(&[0u8; 64]);
        pipe.give_back(room, len);
        assert!(pipe.is_full() && pipe.lend(usize::MAX).is_none());
        let mut pipe = Pipe::new(64, Opening::ClientRequest, 1 << 24);
        assert_eq!(pipe.lend(10).map(|(_, n)| n), Some(10));
        let mut pipe = Pipe::new(64, Opening::ClientRequest, 1 << 24);
        pipe.end_source();
        assert!(pipe.lend(usize::MAX).is_none());
    }

    /// Pushes `input` through a pipe in chunks of `chunk` with a copying sink taking at most
    /// `sink_max` at a time, returning what came out.
    fn run(input: &[u8], chunk: usize, sink_max: usize, cap: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let pipe = push_through(input, chunk, cap, |p| {
            p.drain::<std::io::Error>(|b| {
                let n = b.len().min(sink_max);
                out.extend_from_slice(&b[..n]);
                Ok(n)
            })
            .unwrap()
        });
        assert_eq!(pipe.bytes_out(), out.len() as u64, "bytes out not counted");
        out
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

    /// [`run`] with a sharing sink that keeps every buffer it is given (as quiche does until
    /// the peer acknowledges), taking at most `sink_max` bytes of each; returns what came out
    /// and the pipe's compaction copies.
    fn run_shared(input: &[u8], chunk: usize, sink_max: usize, cap: usize) -> (Vec<u8>, u64) {
        let pipe = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
        let (kept, pipe) = keep_all(pipe, input, chunk, sink_max);
        let out = kept.concat();
        assert_eq!(pipe.bytes_out(), out.len() as u64, "bytes out not counted");
        (out, pipe.bytes_copied())
    }

    #[test]
    fn a_sharing_sink_gets_the_bytes_verbatim_and_they_stay_intact_while_it_keeps_them() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        for len in [0usize, 1, 100, 1000, 70_000, 3] {
            input.extend(frame(&vec![len as u8 ^ 0x5a; len]));
        }
        for (chunk, sink, cap) in [
            (1, 1, 64),
            (3, 7, 64),
            (4096, 100_000, 65_536),
            (65_536, 1000, 100),
            (100_000, 100_000, 65_536),
        ] {
            let (out, copied) = run_shared(&input, chunk, sink, cap);
            assert_eq!(out, input, "chunk {chunk} sink {sink} cap {cap}");
            // Only a header cut by a block's end, or bytes the sink left, move to a new block.
            assert!(copied < input.len() as u64 / 2, "copied {copied}");
        }
    }

    /// Pushes `input` through `pipe` with a sharing sink that keeps every slice and takes at
    /// most `sink_max` a turn, reading `chunk` bytes a turn. Returns the slices the sink kept.
    fn keep_all(pipe: Pipe, input: &[u8], chunk: usize, sink_max: usize) -> (Vec<Bytes>, Pipe) {
        let mut kept = Vec::new();
        let pipe = push_through_pipe(pipe, input, chunk, |p| {
            p.drain_shared::<std::io::Error>(|b| {
                let n = b.len().min(sink_max);
                kept.push(b.slice(..n));
                Ok(n)
            })
            .unwrap()
        });
        (kept, pipe)
    }

    #[test]
    fn random_chunks_sinks_pings_and_a_prefix_come_out_verbatim() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut below = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for round in 0..300 {
            let mut input = vec![0x7f, 0xf3, 0, 0];
            let mut want = input.clone();
            for _ in 0..below(30) + 1 {
                let len = [5, 200, 5_000, 70_000][below(4)];
                let len = below(len);
                let payload = vec![(round + len) as u8; len];
                if below(4) == 0 && len > 0 {
                    input.extend(FrameHeader::ping(len as u32).encode());
                    input.extend(&payload);
                } else {
                    input.extend(frame(&payload));
                    want.extend(frame(&payload));
                }
            }
            let cap = [64, 100, 4096, 65_536, 1 << 20][below(5)];
            let chunk = [1, 3, 100, 1500, 65_536][below(5)];
            let sink_max = [1, 5, 1000, usize::MAX][below(4)];
            let prefix: Vec<u8> = (0..below(20) as u8).collect();
            let mut pipe = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
            pipe.set_prefix(prefix.clone());
            let (kept, pipe) = keep_all(pipe, &input, chunk, sink_max);
            let ctx = format!("round {round}: cap {cap} chunk {chunk} sink {sink_max}");
            let mut expected = prefix;
            expected.extend(want);
            assert!(kept.concat() == expected, "{ctx}: bytes differ");
            assert_eq!(pipe.bytes_out(), expected.len() as u64, "{ctx}");
        }
    }

    /// Tiny messages each followed by a large PING: the PINGs are cut out in place, so the
    /// messages a sharing sink keeps sit together in a block or two, not one block each.
    #[test]
    fn dropped_pings_leave_no_dead_room_for_a_sharing_sink_to_pin() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        for i in 0..100u8 {
            input.extend(frame(&[i]));
            input.extend(FrameHeader::ping(100_000).encode());
            input.extend(vec![0u8; 100_000]);
        }
        let pipe = Pipe::new(1 << 20, Opening::ClientRequest, 1 << 24);
        let (kept, _) = keep_all(pipe, &input, 65_536, usize::MAX);
        // Slices that do not follow the previous one in memory start another block.
        let blocks = 1 + kept
            .windows(2)
            .filter(|w| w[0].as_ptr().wrapping_add(w[0].len()) != w[1].as_ptr())
            .count();
        assert!(blocks <= 3, "100 kept messages span {blocks} blocks");
    }

    /// A busy link (a source that always has more than the block holds) reads ever larger
    /// blocks up to `relay.buffer_size`, 1 MiB here, past the 64 KiB a block was once capped at;
    /// a link whose reads never fill the block keeps the first, small one.
    #[test]
    fn reads_grow_to_the_buffer_size_on_a_busy_link_only() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        while input.len() < 8 << 20 {
            input.extend(frame(&[9u8; 60_000]));
        }
        let cap = 1 << 20;
        let mut busy = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
        let (mut pos, mut largest, mut out) = (0, 0, 0);
        while !busy.is_finished() {
            largest = largest.max(read_all_ready(&mut busy, &input, &mut pos));
            busy.check().unwrap();
            // A sharing sink (quiche) that takes everything checked.
            out += busy
                .drain_shared::<std::io::Error>(|b| Ok(b.len()))
                .unwrap();
        }
        assert_eq!(out, input.len());
        assert!(largest > 64 << 10, "largest read {largest}");
        assert!(
            largest <= cap,
            "largest read {largest} over the buffer size"
        );

        let mut idle = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
        let mut messages = vec![0x7f, 0xf3, 0, 0];
        for _ in 0..1000 {
            messages.extend(frame(b"hello"));
        }
        for piece in messages.chunks(100) {
            idle.fill::<std::io::Error>(|buf, room| Ok(Fill::Data(append(buf, room, piece))))
                .unwrap();
            idle.check().unwrap();
            idle.drain_shared::<std::io::Error>(|b| Ok(b.len()))
                .unwrap();
        }
        assert!(
            idle.memory() <= INITIAL_BUFFER,
            "idle link holds {}",
            idle.memory()
        );
    }

    /// A copying sink (a local socket's `write`) slower than its source: the bytes it has not
    /// taken are not moved to make room for each read (a large block would be copied over and
    /// over, once measured at 30 bytes copied per byte relayed with a 16 MiB buffer); the source
    /// waits until the sink has taken all but a kilobyte of them.
    #[test]
    fn a_slow_copying_sink_does_not_make_the_pipe_copy_its_block() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        while input.len() < 16 << 20 {
            input.extend(frame(&[5u8; 65_000]));
        }
        for cap in [64 << 10, 1 << 20, 16 << 20] {
            let mut pipe = Pipe::new(cap, Opening::ClientRequest, 1 << 24);
            let (mut pos, mut out) = (0, Vec::with_capacity(input.len()));
            while !pipe.is_finished() {
                // The source has everything at once; the sink takes 16 KiB per turn.
                read_all_ready(&mut pipe, &input, &mut pos);
                pipe.check().unwrap();
                pipe.drain::<std::io::Error>(|b| {
                    let n = b.len().min(16 << 10);
                    out.extend_from_slice(&b[..n]);
                    Ok(n)
                })
                .unwrap();
            }
            assert!(out == input, "buffer {cap}: the bytes changed on the way");
            assert!(
                pipe.bytes_copied() * 100 < input.len() as u64,
                "buffer {cap}: {} bytes copied to relay {}",
                pipe.bytes_copied(),
                input.len()
            );
        }
    }

    /// With a sink slower than its source the pipe's allocation stays within
    /// `relay.buffer_size` (and a read's minimum room), and `memory` reports it.
    #[test]
    fn the_allocation_stays_within_the_buffer_size_and_memory_reports_it() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        while input.len() < 600_000 {
            input.extend(frame(&[7u8; 1000]));
        }
        for cap in [4096, 65_536, 1 << 20] {
            let bound = cap + MIN_ROOM;
            let mut peak = 0;
            let mut out = Vec::new();
            let pipe = push_through(&input, 65_536, cap, |p| {
                let n = p
                    .drain::<std::io::Error>(|b| {
                        let n = b.len().min(100);
                        out.extend_from_slice(&b[..n]);
                        Ok(n)
                    })
                    .unwrap();
                assert!(p.memory() <= bound, "cap {cap}: {} > {bound}", p.memory());
                assert!(
                    p.memory() >= p.buffered(),
                    "cap {cap}: memory under the bytes held"
                );
                peak = peak.max(p.memory());
                n
            });
            assert_eq!(out, input, "cap {cap}");
            assert!(peak > 0);
            // Emptied after a burst: the block is still held and still reported.
            assert!(pipe.memory() >= INITIAL_BUFFER.min(cap), "cap {cap}");
        }
    }

    /// A source that ends inside a frame header: the whole frames go out, the stub is dropped
    /// and the direction finishes (a link waiting for the rest would never end).
    #[test]
    fn a_source_ending_inside_a_frame_header_still_finishes() {
        for cut in 1..HEADER_LEN {
            let mut input = vec![0x7f, 0xf3, 0, 0];
            input.extend(frame(b"whole"));
            let whole = input.clone();
            input.extend(&frame(b"cut")[..cut]);
            let out = run(&input, 3, usize::MAX, 64);
            assert_eq!(out, whole, "cut {cut}");
        }
        let mut pipe = Pipe::new(64, Opening::ClientRequest, 1 << 24);
        pipe.fill::<std::io::Error>(|b, room| {
            Ok(Fill::Last(append(b, room, &[0x7f, 0xf3, 0, 0, 0])))
        })
        .unwrap();
        pipe.check().unwrap();
        assert_eq!(pipe.cut_at_end(), 1);
        pipe.drain::<std::io::Error>(|b| Ok(b.len())).unwrap();
        assert!(pipe.is_finished());
    }

    #[test]
    fn a_sharing_sink_copies_nothing_when_frames_fit_the_blocks() {
        let mut input = vec![0x7f, 0xf3, 0, 0];
        input.extend(frame(&[1u8; 60]));
        let (out, copied) = run_shared(&input, 1 << 20, usize::MAX, 65_536);
        assert_eq!(out, input);
        assert_eq!(copied, 0);
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
        p.fill::<std::io::Error>(|b, room| Ok(Fill::Data(append(b, room, &[0x7f, 0x00, 0, 0]))))
            .unwrap();
        assert!(matches!(p.check(), Err(PipeError::Handshake(_))));

        let mut p = Pipe::new(64, Opening::RouterReply, 16);
        let mut bytes = vec![0x7f, 0xf3, 0, 0];
        bytes.extend(FrameHeader::message(17).encode());
        p.fill::<std::io::Error>(|b, room| Ok(Fill::Data(append(b, room, &bytes))))
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
        pipe.fill::<std::io::Error>(|b, room| Ok(Fill::Data(append(b, room, &input))))
            .unwrap();
        pipe.check().unwrap();
        assert_eq!(pipe.scanner().messages(), 3);
        assert_eq!(pipe.scanner().message_bytes(), hello.len() as u64 + 1);
        assert_eq!(pipe.first_message(), Some(&hello[..]));
    }
}
