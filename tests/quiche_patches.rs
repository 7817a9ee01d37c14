//! The vendored quiche's fixes (vendor/README.md) that are easiest to show on two bare quiche
//! connections, without rlinkd's driver around them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const CLIENT: &str = "127.0.0.1:4001";
const SERVER: &str = "127.0.0.1:4002";

fn config(certs: &Path) -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    c.set_application_protos(&[rlinkd::quic::ALPN]).unwrap();
    let path = |f: &str| certs.join(f).to_str().unwrap().to_string();
    c.load_cert_chain_from_pem_file(&path("b.pem")).unwrap();
    c.load_priv_key_from_pem_file(&path("b.key")).unwrap();
    c.verify_peer(false);
    c.set_max_idle_timeout(10_000);
    c.set_initial_max_data(1 << 20);
    c.set_initial_max_stream_data_bidi_local(1 << 16);
    c.set_initial_max_stream_data_bidi_remote(1 << 16);
    c.set_initial_max_streams_bidi(16);
    c
}

/// A client and a server connection (not yet past their first flight), with the certificate
/// directory they were made from.
fn new_pair() -> (tempfile::TempDir, quiche::Connection, quiche::Connection) {
    let certs = tempfile::tempdir().unwrap();
    rlinkd::cert::generate(certs.path(), &["a".into(), "b".into()]).unwrap();
    let (c_addr, s_addr): (SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let client = quiche::connect(
        Some("b"),
        &quiche::ConnectionId::from_ref(&[1; 16]),
        c_addr,
        s_addr,
        &mut config(certs.path()),
    )
    .unwrap();
    let server = quiche::accept(
        &quiche::ConnectionId::from_ref(&[2; 16]),
        None,
        s_addr,
        c_addr,
        &mut config(certs.path()),
    )
    .unwrap();
    (certs, client, server)
}

/// Everything `from` has to send now; delivered to `to` unless `to` is `None` (lost).
fn flight(from: &mut quiche::Connection, to: Option<&mut quiche::Connection>) -> usize {
    let mut buf = [0u8; 1500];
    let mut datagrams = Vec::new();
    loop {
        match from.send(&mut buf) {
            Ok((n, info)) => datagrams.push((buf[..n].to_vec(), info)),
            Err(quiche::Error::Done) => break,
            Err(e) => panic!("send: {e}"),
        }
        assert!(datagrams.len() < 100, "send never said Done");
    }
    let count = datagrams.len();
    if let Some(to) = to {
        for (mut d, info) in datagrams {
            let recv = quiche::RecvInfo {
                from: info.from,
                to: info.to,
            };
            // A datagram the receiver cannot use yet is its business, not this test's.
            to.recv(&mut d, recv).ok();
        }
    }
    count
}

/// Patch 3: a dialer that closes its connection (an application close) after its handshake
/// completed but before the handshake was confirmed, while a probe is due in the Handshake
/// space (its Finished was lost), wrote ACK-only Handshake packets for as long as it was asked
/// to send: `send` never returned `Done` and the close never left. A shard's send loop spun on
/// it (found by `tests/shard_core.rs`'s drain test hanging in CI).
#[test]
fn a_close_before_the_handshake_is_confirmed_ends_instead_of_acking_forever() {
    let (_certs, mut client, mut server) = new_pair();
    flight(&mut client, Some(&mut server));
    flight(&mut server, Some(&mut client));
    assert!(
        client.is_established(),
        "the client's handshake is complete"
    );
    // The client's Finished is lost: the server never confirms the handshake.
    assert!(flight(&mut client, None) > 0);
    // The Handshake space's probe timer fires.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if client.timeout().is_some_and(|t| t.is_zero()) {
            break;
        }
        std::thread::sleep(client.timeout().unwrap_or(Duration::from_millis(5)));
    }
    client.on_timeout();
    assert!(!client.is_closed() && client.is_established());

    client.close(true, 0x1, b"going away").unwrap();
    let mut buf = [0u8; 1500];
    let mut sent = 0;
    loop {
        match client.send(&mut buf) {
            Ok(_) => sent += 1,
            Err(quiche::Error::Done) => break,
            Err(e) => panic!("send: {e}"),
        }
        assert!(
            sent < 20,
            "still sending after {sent} packets: the close never ends"
        );
    }
    assert!(
        client.is_draining(),
        "the close frame left ({sent} packets), so the connection drains"
    );
}

/// Patch 4 stops `send` from re-entering the TLS stack once the handshake is complete, on the
/// grounds that post-handshake messages come in CRYPTO frames and are processed on arrival.
/// This is the message that would be lost if that were wrong: the server's session ticket,
/// sent after the handshake, must still reach the client's TLS stack while both keep sending.
#[test]
fn a_session_ticket_sent_after_the_handshake_still_reaches_the_client() {
    let (_certs, mut client, mut server) = new_pair();
    for _ in 0..4 {
        flight(&mut client, Some(&mut server));
        flight(&mut server, Some(&mut client));
    }
    assert!(client.is_established() && server.is_established());
    assert!(
        client.session().is_some(),
        "the client's TLS stack took the server's post-handshake session ticket"
    );
    // Data still flows both ways afterwards.
    client.stream_send(0, b"ping", true).unwrap();
    flight(&mut client, Some(&mut server));
    let mut buf = [0u8; 16];
    assert_eq!(server.stream_recv(0, &mut buf).unwrap(), (4, true));
    server.stream_send(0, b"pong", true).unwrap();
    flight(&mut server, Some(&mut client));
    assert_eq!(client.stream_recv(0, &mut buf).unwrap(), (4, true));
}
