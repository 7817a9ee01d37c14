//! Live BoringSSL connections on loopback: the keys `KtlsKeys::from_ssl` produces protect records
//! the peer's user-space TLS accepts (checked without the kernel), and `install` either carries
//! data or reports a kernel without TLS.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

use boring::aead::{AeadCtx, Algorithm};
use boring::ssl::{
    SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode, SslVersion,
};

use super::*;

const APPLICATION_DATA: u8 = 0x17;
const TAG_LEN: usize = 16;

fn contexts(dir: &Path, prepared: bool) -> (SslConnector, SslAcceptor) {
    crate::cert::generate(dir, &["router".to_string()]).unwrap();
    let mut c = SslConnector::builder(SslMethod::tls()).unwrap();
    c.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    c.set_ca_file(dir.join("ca.pem")).unwrap();
    c.set_verify(SslVerifyMode::PEER);
    let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    a.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    a.set_max_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    a.set_certificate_chain_file(dir.join("router.pem"))
        .unwrap();
    a.set_private_key_file(dir.join("router.key"), SslFiletype::PEM)
        .unwrap();
    if prepared {
        prepare_context(&mut c).unwrap();
        prepare_context(&mut a).unwrap();
    }
    (c.build(), a.build())
}

/// A finished TLS 1.3 connection: (client, server).
fn connected(c: &SslConnector, a: SslAcceptor) -> (SslStream<TcpStream>, SslStream<TcpStream>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        a.accept(s).unwrap()
    });
    let tcp = TcpStream::connect(addr).unwrap();
    let client = c.connect("router", tcp).unwrap();
    let server = server.join().unwrap();
    for s in [client.get_ref(), server.get_ref()] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    (client, server)
}

fn algorithm(s: Suite) -> Algorithm {
    match s {
        Suite::Aes128GcmSha256 => Algorithm::aes_128_gcm(),
        Suite::Aes256GcmSha384 => Algorithm::aes_256_gcm(),
        Suite::Chacha20Poly1305Sha256 => Algorithm::chacha20_poly1305(),
    }
}

/// RFC 8446 §5.3: the IV XORed with the big-endian sequence number, left-padded to 12 bytes.
fn nonce(k: &TrafficKeys, seq: u64) -> [u8; IV_LEN] {
    let mut n = k.iv;
    for (b, s) in n[IV_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    n
}

/// A TLS 1.3 application-data record for `data` under `k` with sequence number `seq`: what the
/// kernel's TX path would put on the wire.
fn seal(k: &TrafficKeys, seq: u64, data: &[u8]) -> Vec<u8> {
    let mut body = data.to_vec();
    body.push(APPLICATION_DATA); // TLSInnerPlaintext.type, no padding
    let len = u16::try_from(body.len() + TAG_LEN).unwrap();
    let mut record = vec![APPLICATION_DATA, 0x03, 0x03];
    record.extend_from_slice(&len.to_be_bytes());
    let mut ctx = AeadCtx::new_default_tag(&algorithm(k.suite), &k.key).unwrap();
    let mut tag = [0u8; TAG_LEN];
    ctx.seal_in_place_mut(&nonce(k, seq), &mut body, &mut tag, &record)
        .unwrap();
    record.extend_from_slice(&body);
    record.extend_from_slice(&tag);
    record
}

/// Reads one record from `tcp` and opens it with `k` at `seq`, as the kernel's RX path would:
/// returns (inner content type, content).
fn open(tcp: &mut TcpStream, k: &TrafficKeys, seq: u64) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    tcp.read_exact(&mut header).unwrap();
    assert_eq!(header[..3], [APPLICATION_DATA, 0x03, 0x03], "outer header");
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).unwrap();
    let tag = body.split_off(len - TAG_LEN);
    let mut ctx = AeadCtx::new_default_tag(&algorithm(k.suite), &k.key).unwrap();
    ctx.open_in_place_mut(&nonce(k, seq), &mut body, &tag, &header)
        .expect("record authenticates under the derived keys");
    let end = body.iter().rposition(|&b| b != 0).expect("content type");
    let kind = body[end];
    body.truncate(end);
    (kind, body)
}

#[test]
fn derived_keys_protect_records_the_peer_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (c, a) = contexts(dir.path(), true);
    let (mut client, mut server) = connected(&c, a);

    let ck = KtlsKeys::from_stream(&client).unwrap();
    let sk = KtlsKeys::from_stream(&server).unwrap();
    assert_eq!(ck.tx, sk.rx, "client TX is server RX");
    assert_eq!(ck.rx, sk.tx, "server TX is client RX");
    assert_eq!((ck.tx.seq, ck.rx.seq), (0, 0));
    let id = client.ssl().current_cipher().unwrap().protocol_id();
    assert_eq!(ck.tx.suite.protocol_id(), id);

    // Client -> server: records built as the kernel would, read by BoringSSL on the server.
    for (seq, msg) in [(0, &b"first record"[..]), (1, &b"second record"[..])] {
        client.get_mut().write_all(&seal(&ck.tx, seq, msg)).unwrap();
        let mut got = vec![0u8; msg.len()];
        server.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }

    // Server -> client: BoringSSL's first record after the handshake is application data at
    // sequence 0, which also shows no NewSessionTicket was sent.
    server.write_all(b"pong").unwrap();
    server.write_all(b"pong 2").unwrap();
    let tcp = client.get_mut();
    assert_eq!(open(tcp, &ck.rx, 0), (APPLICATION_DATA, b"pong".to_vec()));
    assert_eq!(open(tcp, &ck.rx, 1), (APPLICATION_DATA, b"pong 2".to_vec()));
}

#[test]
fn secrets_are_handed_out_once_and_only_when_prepared() {
    let dir = tempfile::tempdir().unwrap();
    let (c, a) = contexts(dir.path(), true);
    let (client, _server) = connected(&c, a);
    KtlsKeys::from_stream(&client).unwrap();
    assert!(matches!(
        KtlsKeys::from_stream(&client),
        Err(KtlsError::NoSecrets)
    ));

    let dir = tempfile::tempdir().unwrap();
    let (c, a) = contexts(dir.path(), false);
    let (client, server) = connected(&c, a);
    for s in [client.ssl(), server.ssl()] {
        let e = KtlsKeys::from_ssl(s).unwrap_err();
        assert!(matches!(e, KtlsError::NotPrepared), "{e:?}");
        assert!(e.is_recoverable());
    }
}

/// The real thing where the kernel has TLS; elsewhere, the clean refusal the bench relies on.
#[test]
fn install_either_round_trips_or_reports_not_in_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (c, a) = contexts(dir.path(), true);
    let (client, server) = connected(&c, a);
    let ck = KtlsKeys::from_stream(&client).unwrap();
    let sk = KtlsKeys::from_stream(&server).unwrap();
    let mut client = client.into_inner();
    let mut server = server.into_inner();
    match install(client.as_raw_fd(), &ck) {
        Ok(()) => {
            install(server.as_raw_fd(), &sk).unwrap();
            assert!(ktls_available().is_ok());
            install::round_trip(&mut client, &mut server, b"over kTLS").unwrap();
            install::round_trip(&mut server, &mut client, b"and back").unwrap();
        }
        Err(KtlsError::NotInKernel) => {
            let why = ktls_available().unwrap_err();
            assert!(why.reason.contains("CONFIG_TLS"), "{why}");
            assert!(status().starts_with("ktls: unavailable (kernel without TLS"));
            assert!(KtlsError::NotInKernel.is_recoverable());
            eprintln!("kTLS not in this kernel: install path not exercised ({why})");
        }
        Err(e) => panic!("install failed without a clear reason: {e}"),
    }
}
