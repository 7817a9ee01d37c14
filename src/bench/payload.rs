//! The frames the benchmark sends and how both ends verify them.
//!
//! A payload is `seq` (u64 LE, per link, from 0) + `sent_at` (u64 LE, CLOCK_MONOTONIC ns, shared
//! by every process on the host) + filler bytes that are a fixed function of their position.
//! The receiver checks the sequence (nothing lost, duplicated or reordered on a link), compares the
//! filler byte for byte, and measures one-way latency from `sent_at`.

use std::sync::OnceLock;

/// Bytes of `seq` + `sent_at` at the start of every payload.
pub const PAYLOAD_HEADER: usize = 16;
/// Largest payload the benchmark sends.
pub const MAX_PAYLOAD: usize = 1 << 16;

/// The filler: byte `i` of every payload (from `PAYLOAD_HEADER` on) is `FILLER[i]`.
pub fn filler() -> &'static [u8] {
    static F: OnceLock<Vec<u8>> = OnceLock::new();
    F.get_or_init(|| {
        (0..MAX_PAYLOAD)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect()
    })
}

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes on one host).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local `ts`.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Appends one whole RawSocket frame (prefix + payload of `len` bytes, `len >= 16`) to `out`.
pub fn push_frame(out: &mut Vec<u8>, seq: u64, len: usize) {
    let len = len.clamp(PAYLOAD_HEADER, MAX_PAYLOAD);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&monotonic_ns().to_le_bytes());
    out.extend_from_slice(&filler()[PAYLOAD_HEADER..len]);
}

/// What went wrong on a verified stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    Sequence { expected: u64, got: u64 },
    Content { at: usize },
    Oversize(u32),
}

/// Walks one direction of a link's RawSocket frames (after the handshake) incrementally and checks
/// every byte.
#[derive(Debug, Default)]
pub struct Verifier {
    header: [u8; 4],
    header_have: usize,
    remaining: usize,
    pos: usize,
    head: [u8; PAYLOAD_HEADER],
    pub next_seq: u64,
    pub frames: u64,
    pub payload_bytes: u64,
    /// One-way latencies (ns) of frames completed since the last `take_latencies`.
    latencies: Vec<u64>,
    pub error: Option<VerifyError>,
}

impl Verifier {
    /// Feeds received bytes. Returns the number of frames completed by them.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let before = self.frames;
        while !data.is_empty() && self.error.is_none() {
            if self.remaining == 0 && self.header_have < 4 {
                let n = (4 - self.header_have).min(data.len());
                self.header[self.header_have..self.header_have + n].copy_from_slice(&data[..n]);
                self.header_have += n;
                data = &data[n..];
                if self.header_have == 4 {
                    let len = u32::from_be_bytes(self.header);
                    if len as usize > MAX_PAYLOAD || (len as usize) < PAYLOAD_HEADER {
                        self.error = Some(VerifyError::Oversize(len));
                        return self.frames - before;
                    }
                    self.remaining = len as usize;
                    self.pos = 0;
                }
                continue;
            }
            let n = self.remaining.min(data.len());
            let chunk = &data[..n];
            // Header bytes of the payload.
            if self.pos < PAYLOAD_HEADER {
                let h = (PAYLOAD_HEADER - self.pos).min(n);
                self.head[self.pos..self.pos + h].copy_from_slice(&chunk[..h]);
            }
            // Filler bytes.
            let start = self.pos.max(PAYLOAD_HEADER);
            let end = self.pos + n;
            if start < end {
                let got = &chunk[start - self.pos..];
                if got != &filler()[start..end] {
                    let at = got
                        .iter()
                        .zip(&filler()[start..end])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    self.error = Some(VerifyError::Content { at: start + at });
                    return self.frames - before;
                }
            }
            self.pos += n;
            self.remaining -= n;
            self.payload_bytes += n as u64;
            data = &data[n..];
            if self.remaining == 0 {
                self.header_have = 0;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&self.head[..8]);
                let seq = u64::from_le_bytes(seq);
                if seq != self.next_seq {
                    self.error = Some(VerifyError::Sequence {
                        expected: self.next_seq,
                        got: seq,
                    });
                    return self.frames - before;
                }
                let mut at = [0u8; 8];
                at.copy_from_slice(&self.head[8..16]);
                self.latencies
                    .push(monotonic_ns().saturating_sub(u64::from_le_bytes(at)));
                self.next_seq += 1;
                self.frames += 1;
            }
        }
        self.frames - before
    }

    pub fn take_latencies(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.latencies)
    }

    /// Drops collected latencies without returning them (throughput phases that only count).
    pub fn clear_latencies(&mut self) {
        self.latencies.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_frames_across_any_split() {
        let mut stream = Vec::new();
        for (seq, len) in [16usize, 17, 1000, 65_536, 256].iter().enumerate() {
            push_frame(&mut stream, seq as u64, *len);
        }
        for chunk in [1usize, 3, 7, 4096, 1 << 20] {
            let mut v = Verifier::default();
            for c in stream.chunks(chunk) {
                v.feed(c);
            }
            assert_eq!(v.error, None);
            assert_eq!(v.frames, 5);
            assert_eq!(v.take_latencies().len(), 5);
        }
    }

    #[test]
    fn detects_loss_and_corruption() {
        let mut a = Vec::new();
        push_frame(&mut a, 0, 100);
        push_frame(&mut a, 2, 100);
        let mut v = Verifier::default();
        v.feed(&a);
        assert_eq!(
            v.error,
            Some(VerifyError::Sequence {
                expected: 1,
                got: 2
            })
        );

        let mut b = Vec::new();
        push_frame(&mut b, 0, 100);
        b[4 + 50] ^= 1;
        let mut v = Verifier::default();
        v.feed(&b);
        assert_eq!(v.error, Some(VerifyError::Content { at: 50 }));
    }
}
