//! Fuzz target bodies: one function per target, each asserting the parser's invariants by
//! panicking. The cargo-fuzz targets in `fuzz/` are one-line calls of these, and
//! `tests/fuzz_corpus.rs` runs the same functions on the committed seed corpora, so what the
//! fuzzer checks is also checked in every CI run.
//!
//! Inputs are raw wire bytes (a seed is a capture of what a peer sends), never a structured
//! encoding, so a seed file can be read and written with a hex editor.

use std::path::Path;

use crate::config::NodeConfig;
use crate::quic::preamble;
use crate::rawsocket::{
    realm_from_hello, ClientHandshake, Decoder, Frame, FrameError, FrameHeader, FrameKind,
    FrameScanner, LengthReading, RouterReply, Run, CAPTURE_LEN, HANDSHAKE_LEN, HEADER_LEN, MAGIC,
    MAX_PAYLOAD, MAX_REALM_LEN,
};

/// The names of the targets, as in `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 4] = ["scanner", "decoder", "preamble", "config"];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "scanner" => scanner(data),
        "decoder" => decoder(data),
        "preamble" => preamble(data),
        "config" => config(data),
        _ => return false,
    }
    true
}

/// Scanner target. `data` is what a client writes on a link: an optional 4-octet handshake
/// (when the first octet is `0x7F`, which as a frame prefix would be refused anyway) then
/// frames. For both length readings and three chunkings (whole, one octet at a time, and
/// pseudo-random cuts) the scanner must consume the same bytes with the same verdicts, and
/// agree with the [`Decoder`]: it forwards exactly the message frames, drops exactly the
/// PING/PONG frames, fails with the same error at the same place, and counts what it saw.
pub fn scanner(data: &[u8]) {
    let (hs, stream) = split_handshake(data);
    let limit = hs.map_or(MAX_PAYLOAD, |h| h.max_len.bytes());
    for reading in [LengthReading::Spec, LengthReading::Crossbar] {
        let expected = decode_whole(stream, reading, limit);
        for cuts in chunkings(stream) {
            let got = scan_chunked(stream, &cuts, reading, limit);
            check_scan_against_decode(stream, (reading, limit), &got, &expected);
            if let (Some(h), Some(prefix)) = (hs, got.first_prefix.as_deref()) {
                if let Some(realm) = realm_from_hello(h.serializer, prefix) {
                    assert!(realm.len() <= MAX_REALM_LEN);
                }
            }
        }
    }
}

/// Decoder target. Same input as [`scanner`]. Every chunking yields the same frames and the
/// same final error; the frames' prefixes and payloads are exactly the consumed bytes; each
/// header re-encodes to a prefix that parses back to it; a message never exceeds the limit.
pub fn decoder(data: &[u8]) {
    let (hs, stream) = split_handshake(data);
    let limit = hs.map_or(MAX_PAYLOAD, |h| h.max_len.bytes());
    for reading in [LengthReading::Spec, LengthReading::Crossbar] {
        let whole = decode_whole(stream, reading, limit);
        let mut wire = Vec::new();
        for f in &whole.frames {
            assert!(f.header.len <= limit);
            assert_eq!(f.payload.len(), f.header.len as usize);
            wire.extend_from_slice(&f.prefix);
            wire.extend_from_slice(&f.payload);
            let canonical = f
                .header
                .try_encode()
                .expect("a decoded header is encodable");
            let again = FrameHeader::parse(&canonical, LengthReading::Spec);
            assert_eq!(again, Ok(f.header), "canonical prefix {canonical:02x?}");
        }
        assert_eq!(
            wire,
            stream[..whole.consumed],
            "frames are the consumed bytes"
        );
        for cuts in chunkings(stream).into_iter().skip(1) {
            assert_eq!(decode_chunked(stream, &cuts, reading, limit), whole);
        }
    }
}

/// Preamble target. A decoded preamble re-encodes to the same octets, every prefix of it is
/// "need more" with the right `bytes_wanted`, errors are final (more bytes do not change
/// them), and any route name of 1 to 255 octets round-trips through encode and decode.
pub fn preamble(data: &[u8]) {
    match preamble::decode(data) {
        Ok(Some((route, n))) => {
            assert_eq!(n, preamble::HEADER_LEN + route.len());
            assert!(n <= data.len() && n <= preamble::MAX_LEN);
            assert_eq!(preamble::encode(&route).as_deref(), Ok(&data[..n]));
            assert_eq!(preamble::bytes_wanted(&data[..n]), 0);
            for cut in 0..n {
                assert_eq!(preamble::decode(&data[..cut]), Ok(None), "prefix {cut}");
                assert!(preamble::bytes_wanted(&data[..cut]) > 0);
            }
        }
        Ok(None) => {
            // Feeding exactly the wanted bytes reaches a decision within MAX_LEN octets.
            let mut more = data.to_vec();
            while preamble::decode(&more) == Ok(None) {
                let wanted = preamble::bytes_wanted(&more);
                assert!(wanted > 0 && more.len() + wanted <= preamble::MAX_LEN);
                more.resize(more.len() + wanted, b'a');
            }
        }
        Err(e) => {
            let mut more = data.to_vec();
            more.extend_from_slice(&[0; 8]);
            assert_eq!(preamble::decode(&more), Err(e));
        }
    }
    let route = String::from_utf8_lossy(data);
    match preamble::encode(&route) {
        Ok(wire) => {
            assert_eq!(
                preamble::decode(&wire),
                Ok(Some((route.to_string(), wire.len())))
            );
        }
        Err(_) => assert!(route.is_empty() || route.len() > 255),
    }
}

/// Config target. `data` is a config file. Parsing never panics; an accepted config validates
/// again, parses to the same value a second time and renders its summary (`rlinkd check`).
/// Files naming a host to resolve are skipped: a fuzzer must not send DNS queries.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if needs_name_lookup(text) {
        return;
    }
    let base = Path::new("/etc/rlinkd");
    let Ok(cfg) = NodeConfig::from_toml_str(text, base) else {
        return;
    };
    if let Err(e) = cfg.validate() {
        panic!("an accepted config fails validate(): {e}");
    }
    let _ = cfg.summary();
    let again = NodeConfig::from_toml_str(text, base).map_err(|e| e.to_string());
    assert_eq!(again.as_ref(), Ok(&cfg));
}

/// True when some string value of `text` (parsed as TOML) is a `host:port` (optionally
/// `tcp:host:port`) whose host is a name, which the config parser would resolve.
pub fn needs_name_lookup(text: &str) -> bool {
    fn walk(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => {
                let s = s.strip_prefix("tcp:").unwrap_or(s);
                s.parse::<std::net::SocketAddr>().is_err()
                    && s.rsplit_once(':')
                        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
            }
            toml::Value::Array(a) => a.iter().any(walk),
            toml::Value::Table(t) => t.values().any(walk),
            _ => false,
        }
    }
    text.parse::<toml::Table>()
        .is_ok_and(|t| t.values().any(walk))
}

/// Splits off a leading client handshake. The handshake octets are checked on the way: both
/// parsers accept what `encode` writes, and a valid one encodes back to the same octets.
fn split_handshake(data: &[u8]) -> (Option<ClientHandshake>, &[u8]) {
    let Some(octets) = data
        .get(..HANDSHAKE_LEN)
        .and_then(|s| <&[u8; HANDSHAKE_LEN]>::try_from(s).ok())
        .filter(|o| o[0] == MAGIC)
    else {
        return (None, data);
    };
    let rest = &data[HANDSHAKE_LEN..];
    if let Ok(reply) = RouterReply::parse(octets) {
        assert_eq!(RouterReply::parse(&reply.encode()), Ok(reply));
    }
    match ClientHandshake::parse(octets) {
        Ok(h) => {
            assert_eq!(&h.encode(), octets);
            assert!(h.max_len.bytes() <= MAX_PAYLOAD);
            (Some(h), rest)
        }
        Err(_) => (None, rest),
    }
}

/// Cut positions: none, after every octet, and cuts from a generator seeded by the input.
fn chunkings(stream: &[u8]) -> Vec<Vec<usize>> {
    let every: Vec<usize> = (1..stream.len()).collect();
    let mut seed = stream.iter().fold(0x9E37_79B9_7F4A_7C15u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    }) | 1;
    let mut cuts = Vec::new();
    let mut at = 0usize;
    loop {
        // xorshift64: enough to vary the cuts, and reproducible from the input alone.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        at += 1 + (seed % 23) as usize;
        if at >= stream.len() {
            break;
        }
        cuts.push(at);
    }
    vec![Vec::new(), every, cuts]
}

/// What a decoder made of a whole stream.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<Frame>,
    /// Octets taken by `frames`.
    consumed: usize,
    error: Option<FrameError>,
    /// Octets pushed and not returned as frames.
    buffered: usize,
}

fn decode_whole(stream: &[u8], reading: LengthReading, limit: u32) -> Decoded {
    decode_chunked(stream, &[], reading, limit)
}

fn decode_chunked(stream: &[u8], cuts: &[usize], reading: LengthReading, limit: u32) -> Decoded {
    let mut d = Decoder::new(limit, reading);
    let mut frames = Vec::new();
    let mut error = None;
    let mut prev = 0;
    'feed: for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        d.push(&stream[prev..end]);
        prev = end;
        loop {
            match d.next_raw_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    // Errors are final: the next call repeats it whatever follows.
                    assert_eq!(d.next_raw_frame(), Err(e));
                    break 'feed;
                }
            }
        }
    }
    let consumed = frames
        .iter()
        .map(|f| HEADER_LEN + f.payload.len())
        .sum::<usize>();
    Decoded {
        frames,
        consumed,
        error,
        buffered: if error.is_some() { 0 } else { d.buffered() },
    }
}

/// What a scanner did with a stream.
#[derive(Debug)]
struct Scanned {
    forwarded: Vec<u8>,
    discarded: usize,
    /// Octets consumed (forwarded or discarded).
    consumed: usize,
    error: Option<FrameError>,
    messages: u64,
    message_bytes: u64,
    pings: u64,
    pongs: u64,
    at_boundary: bool,
    first_prefix: Option<Vec<u8>>,
}

/// Feeds `stream` to a scanner in chunks ending at `cuts`, keeping unconsumed octets in front
/// of the next chunk as the relay does.
fn scan_chunked(stream: &[u8], cuts: &[usize], reading: LengthReading, limit: u32) -> Scanned {
    let mut s = FrameScanner::new(limit, reading);
    let mut forwarded = Vec::new();
    let mut discarded = 0;
    let mut error = None;
    let mut start = 0;
    'feed: for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        loop {
            match s.scan(&stream[start..end]) {
                Ok(Run::Forward(n)) => {
                    assert!(n > 0 && start + n <= end);
                    forwarded.extend_from_slice(&stream[start..start + n]);
                    start += n;
                }
                Ok(Run::Discard(n)) => {
                    assert!(n > 0 && start + n <= end);
                    discarded += n;
                    start += n;
                }
                Ok(Run::NeedMore) => {
                    assert!(end == start || (s.at_frame_boundary() && end - start < HEADER_LEN));
                    break;
                }
                Err(e) => {
                    assert_eq!(s.scan(&stream[start..end]), Err(e));
                    assert_eq!(s.error(), Some(e));
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    Scanned {
        forwarded,
        discarded,
        consumed: start,
        error,
        messages: s.messages(),
        message_bytes: s.message_bytes(),
        pings: s.pings(),
        pongs: s.pongs(),
        at_boundary: s.at_frame_boundary(),
        first_prefix: s.first_message_prefix().map(<[u8]>::to_vec),
    }
}

/// The scanner's view must be the decoder's: complete frames, then either the decoder's error
/// at the next header, or a trailing partial frame (its header parsed, part of its payload
/// consumed) or fewer than 4 octets of a header left unconsumed.
fn check_scan_against_decode(
    stream: &[u8],
    (reading, limit): (LengthReading, u32),
    got: &Scanned,
    want: &Decoded,
) {
    let mut forwarded = Vec::new();
    let (mut discarded, mut messages, mut message_bytes) = (0usize, 0u64, 0u64);
    let (mut pings, mut pongs) = (0u64, 0u64);
    let mut first: Option<Vec<u8>> = None;
    let mut capture = |payload: &[u8], complete: bool| {
        if first.is_none() && (complete || payload.len() >= CAPTURE_LEN) {
            first = Some(payload[..payload.len().min(CAPTURE_LEN)].to_vec());
        }
    };
    let count = |kind: FrameKind, pings: &mut u64, pongs: &mut u64| match kind {
        FrameKind::Ping => *pings += 1,
        FrameKind::Pong => *pongs += 1,
        FrameKind::Message => {}
    };
    for f in &want.frames {
        count(f.header.kind, &mut pings, &mut pongs);
        if f.header.kind == FrameKind::Message {
            forwarded.extend_from_slice(&f.prefix);
            forwarded.extend_from_slice(&f.payload);
            messages += 1;
            message_bytes += f.payload.len() as u64;
            capture(&f.payload, true);
        } else {
            discarded += HEADER_LEN + f.payload.len();
        }
    }
    let tail = &stream[want.consumed..];
    let mut boundary = true;
    if want.error.is_none() && tail.len() >= HEADER_LEN {
        // A partial frame: the scanner passes on what it has of it.
        let prefix = <[u8; HEADER_LEN]>::try_from(&tail[..HEADER_LEN]).expect("4 octets");
        let header = FrameHeader::parse_with_limit(&prefix, reading, limit)
            .expect("the decoder accepted this header");
        let (kind, len) = (header.kind, header.len);
        count(kind, &mut pings, &mut pongs);
        let body = &tail[HEADER_LEN..];
        assert!(
            body.len() < len as usize,
            "a complete frame was left in the tail"
        );
        if kind == FrameKind::Message {
            forwarded.extend_from_slice(tail);
            message_bytes += body.len() as u64;
            capture(body, false);
        } else {
            discarded += tail.len();
        }
        boundary = false;
    }
    assert_eq!(
        got.error, want.error,
        "scanner and decoder disagree on the error"
    );
    assert!(
        got.forwarded == forwarded,
        "forwarded bytes differ from the decoded messages"
    );
    assert_eq!(got.discarded, discarded);
    assert_eq!(
        (got.messages, got.message_bytes, got.pings, got.pongs),
        (messages, message_bytes, pings, pongs)
    );
    assert_eq!(got.first_prefix, first);
    if want.error.is_none() {
        assert_eq!(got.at_boundary, boundary);
        assert_eq!(
            got.consumed,
            want.consumed + if boundary { 0 } else { tail.len() }
        );
        assert_eq!(want.buffered, tail.len());
    } else {
        assert_eq!(got.consumed, want.consumed);
    }
}
