//! RawSocket codec costs: the relay's zero-copy scanner and the endpoints' decoder over 1 MiB of
//! back-to-back frames (small and large), and the 4-byte header and handshake parsers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rlinkd::rawsocket::{
    ClientHandshake, Decoder, FrameHeader, FrameScanner, LengthReading, Run, MAX_PAYLOAD,
};

const STREAM_LEN: usize = 1 << 20;

/// About 1 MiB of messages whose frames (header + payload) are `frame_len` bytes each.
fn stream(frame_len: usize) -> Vec<u8> {
    let payload = frame_len - 4;
    let mut out = Vec::with_capacity(STREAM_LEN + frame_len);
    let mut seed = 0u8;
    while out.len() + frame_len <= STREAM_LEN {
        out.extend_from_slice(&FrameHeader::message(payload as u32).encode());
        out.extend((0..payload).map(|i| seed.wrapping_add(i as u8)));
        seed = seed.wrapping_add(1);
    }
    out
}

/// What the relay does: scan, forward (here: count) runs until the buffer is consumed.
fn scan_all(input: &[u8]) -> usize {
    let mut scanner = FrameScanner::new(MAX_PAYLOAD, LengthReading::Crossbar);
    let mut pos = 0;
    let mut forwarded = 0;
    loop {
        match scanner.scan(&input[pos..]).expect("valid stream") {
            Run::Forward(n) => {
                forwarded += n;
                pos += n;
            }
            Run::Discard(n) => pos += n,
            Run::NeedMore => break,
        }
    }
    assert_eq!(pos, input.len());
    forwarded
}

/// What an endpoint does: copy into the decoder, take every frame out (one allocation each).
fn decode_all(input: &[u8]) -> usize {
    let mut decoder = Decoder::new(MAX_PAYLOAD, LengthReading::Crossbar);
    decoder.push(input);
    let mut frames = 0;
    while let Some(frame) = decoder.next_raw_frame().expect("valid stream") {
        black_box(&frame.payload);
        frames += 1;
    }
    frames
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("rawsocket");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (label, frame_len) in [("256B", 256usize), ("64KiB", 64 << 10)] {
        let input = stream(frame_len);
        let frames = input.len() / frame_len;
        assert_eq!(scan_all(&input), input.len());
        assert_eq!(decode_all(&input), frames);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("scanner/{label}"), |b| {
            b.iter(|| scan_all(black_box(&input)))
        });
        g.bench_function(format!("decoder/{label}"), |b| {
            b.iter(|| decode_all(black_box(&input)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("rawsocket-header");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_header/encode", |b| {
        b.iter(|| FrameHeader::message(black_box(1350)).encode())
    });
    let prefix = FrameHeader::message(1350).encode();
    g.bench_function("frame_header/parse", |b| {
        b.iter(|| FrameHeader::parse(black_box(&prefix), LengthReading::Crossbar))
    });
    let hs = [0x7F, 0xF2, 0x00, 0x00];
    assert!(ClientHandshake::parse(&hs).is_ok());
    g.bench_function("client_handshake/parse", |b| {
        b.iter(|| ClientHandshake::parse(black_box(&hs)))
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
