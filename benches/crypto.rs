//! Per-core AEAD cost through BoringSSL's `EVP_AEAD` (the interface quiche uses for QUIC packet
//! protection), in place with a detached tag: no allocation per operation. Sizes: one
//! data-center QUIC packet (1,350 B) and one TLS record (16 KiB). Plus QUIC header protection:
//! one AES-128-ECB block per packet.
//!
//! Which AES-GCM code BoringSSL runs depends on the CPU (see `rlinkd::probe::cpu`); it is printed
//! at start. Compare paths with `OPENSSL_ia32cap`, which BoringSSL applies over CPUID, e.g.
//! `OPENSSL_ia32cap='~0:~0x60000000000'` clears VAES and VPCLMULQDQ (leaf 7 ECX bits 9 and 10).

use std::hint::black_box;
use std::time::Duration;

use boring::aead::{AeadCtx, Algorithm};
use boring::symm::{Cipher, Crypter, Mode};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SIZES: [(&str, usize); 2] = [("1350B", 1350), ("16KiB", 16 << 10)];
/// A short-header QUIC packet's associated data (the header) is about this long.
const AAD: [u8; 13] = [0x40; 13];

fn report_cpu_path() {
    let cpu = rlinkd::probe::cpu::detect();
    eprintln!(
        "crypto bench: CPU {}; BoringSSL AES-GCM path per CPU flags: {}{}",
        cpu.model_name.as_deref().unwrap_or("unknown"),
        cpu.aes_gcm_path.describe(),
        match &cpu.openssl_ia32cap {
            Some(v) => format!(" (but OPENSSL_ia32cap={v} is set and overrides CPUID)"),
            None => String::new(),
        }
    );
    let vaes512 = cpu.aes_gcm_path == rlinkd::probe::AesGcmPath::VaesAvx512;
    eprintln!(
        "crypto bench: VAES/AVX-512 AES-GCM should be active: {}",
        match (vaes512, cpu.openssl_ia32cap.is_some()) {
            (v, false) => v.to_string(),
            (_, true) => "depends on OPENSSL_ia32cap (CPU flags alone say {vaes512})"
                .replace("{vaes512}", &vaes512.to_string()),
        }
    );
}

fn aeads(c: &mut Criterion) {
    report_cpu_path();
    let algorithms = [
        ("aes-128-gcm", Algorithm::aes_128_gcm()),
        ("aes-256-gcm", Algorithm::aes_256_gcm()),
        ("chacha20-poly1305", Algorithm::chacha20_poly1305()),
    ];
    let mut g = c.benchmark_group("aead");
    g.sample_size(15)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (name, alg) in &algorithms {
        let key: Vec<u8> = (0..alg.key_length() as u8).collect();
        let nonce = vec![7u8; alg.nonce_len()];
        let mut ctx = AeadCtx::new_default_tag(alg, &key).expect("AEAD key");
        for (label, size) in SIZES {
            let mut buf = vec![0x5au8; size];
            let mut tag = vec![0u8; alg.max_overhead()];
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(format!("{name}/seal/{label}"), |b| {
                b.iter(|| {
                    ctx.seal_in_place_mut(&nonce, black_box(&mut buf), &mut tag, &AAD)
                        .expect("seal")
                        .len()
                })
            });

            // Open must authenticate: seal a fixed plaintext once, then decrypt a fresh copy of
            // the ciphertext each time (the copy is made in criterion's untimed setup).
            let plain = vec![0x5au8; size];
            let mut sealed = plain.clone();
            let tag_len = ctx
                .seal_in_place_mut(&nonce, &mut sealed, &mut tag, &AAD)
                .expect("seal")
                .len();
            let tag = tag[..tag_len].to_vec();
            let mut work = sealed.clone();
            ctx.open_in_place_mut(&nonce, &mut work, &tag, &AAD)
                .expect("open");
            assert_eq!(work, plain);
            g.bench_function(format!("{name}/open/{label}"), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |work| {
                        ctx.open_in_place_mut(&nonce, black_box(work), &tag, &AAD)
                            .expect("open")
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();

    // QUIC header protection: AES-128-ECB of the 16-byte sample, once per packet sent and
    // received. quiche calls AES_ecb_encrypt directly; the `boring` crate offers only the EVP
    // interface, so this is an upper bound (EVP dispatch adds a little per call).
    let mut g = c.benchmark_group("quic-header-protection");
    g.sample_size(15)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let hp_key = [0x11u8; 16];
    let mut crypter =
        Crypter::new(Cipher::aes_128_ecb(), Mode::Encrypt, &hp_key, None).expect("ECB key");
    crypter.pad(false);
    let sample = [0x22u8; 16];
    let mut mask = [0u8; 32];
    g.throughput(Throughput::Elements(1));
    g.bench_function("aes-128-ecb/1-block", |b| {
        b.iter(|| crypter.update(black_box(&sample), &mut mask).expect("ECB"))
    });
    g.finish();
}

criterion_group!(benches, aeads);
criterion_main!(benches);
