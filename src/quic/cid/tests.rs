use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

/// A short-header (1-RTT) datagram to `dcid`: first byte with the form bit clear and the fixed
/// bit set, then the DCID, then payload bytes.
fn short_header(dcid: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0x40 | 0x1f];
    d.extend_from_slice(dcid);
    d.extend_from_slice(payload);
    d
}

/// A long-header (Initial) datagram: form and fixed bits, version 1, DCID and SCID with their
/// lengths, then payload bytes.
fn long_header(dcid: &[u8], scid: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0xc0];
    d.extend_from_slice(&1u32.to_be_bytes());
    d.push(dcid.len() as u8);
    d.extend_from_slice(dcid);
    d.push(scid.len() as u8);
    d.extend_from_slice(scid);
    d.extend_from_slice(payload);
    d
}

fn counts() -> Vec<ShardCount> {
    [1, 2, 3, 4, 7, 64, 255, 256]
        .into_iter()
        .map(|n| ShardCount::new(n).unwrap())
        .collect()
}

#[test]
fn every_shard_round_trips_through_short_and_long_headers() {
    for shard in 0..=255u8 {
        let cid = ShardCid::random(shard);
        assert_eq!(cid.shard(), shard);
        assert_eq!(cid_shard(cid.as_bytes()), Some(shard));
        let peer = ShardCid::random(shard.wrapping_add(1));
        for d in [
            short_header(cid.as_bytes(), b"payload"),
            long_header(cid.as_bytes(), peer.as_bytes(), &[0; 1200]),
        ] {
            assert_eq!(dcid_shard_byte(&d), Some(shard), "{d:02x?}");
            for n in counts() {
                assert_eq!(owner(&d, n), Some(usize::from(shard) % n.get()));
            }
            // quiche reads the same DCID where the layout says it is.
            let hdr = quiche::Header::from_slice(&mut d.clone(), CID_LEN).unwrap();
            assert_eq!(hdr.dcid.as_ref(), cid.as_bytes());
        }
    }
}

#[test]
fn shard_count_bounds() {
    assert_eq!(ShardCount::new(0), None);
    assert_eq!(ShardCount::new(MAX_SHARDS + 1), None);
    assert_eq!(ShardCount::new(MAX_SHARDS).map(ShardCount::get), Some(256));
    assert_eq!(ShardCount::ONE.owner(255), 0);
    assert_eq!(ShardCount::new(3).unwrap().owner(4), 1);
}

#[test]
fn unreadable_datagrams_have_no_owner() {
    let n = ShardCount::new(4).unwrap();
    assert_eq!(owner(&[], n), None);
    // A short header needs its first DCID byte.
    assert_eq!(owner(&[0x40], n), None);
    assert_eq!(owner(&[0x40, 7], n), Some(3));
    // A long header needs the version, a non-empty DCID and its first byte.
    assert_eq!(owner(&[0xc0, 0, 0, 0, 1, 20], n), None);
    assert_eq!(owner(&[0xc0, 0, 0, 0, 1, 0, 9, 9, 9], n), None);
    assert_eq!(owner(&[0xc0, 0, 0, 0, 1, 1, 9], n), Some(1));
}

fn client_config() -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    c.set_application_protos(&[crate::quic::ALPN]).unwrap();
    c.verify_peer(false);
    c
}

/// What the dialer sends with `DialCids`: quiche writes our DCID and SCID into the Initial, the
/// acceptor's rule reads shard `i` and maps it to `i mod n`; after a Retry whose SCID the
/// acceptor's shard `s` issued, the dialer's next Initial is addressed to `s`.
#[test]
fn quiche_initials_carry_the_chosen_shards_through_a_retry() {
    let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    for dialer_shard in [0u8, 1, 5, 200, 255] {
        let mut config = client_config();
        let cids = DialCids::new(dialer_shard);
        let mut conn = quiche::connect_with_dcid(
            Some("peer"),
            &cids.scid.to_connection_id(),
            &cids.dcid.to_connection_id(),
            local,
            peer,
            &mut config,
        )
        .unwrap();
        let mut out = [0u8; 1500];
        let (len, _) = conn.send(&mut out).unwrap();
        let initial = &mut out[..len];
        for n in counts() {
            assert_eq!(
                owner(initial, n),
                Some(usize::from(dialer_shard) % n.get()),
                "{n:?}"
            );
        }
        let hdr = quiche::Header::from_slice(initial, CID_LEN).unwrap();
        assert_eq!(hdr.ty, quiche::Type::Initial);
        assert_eq!(hdr.dcid.as_ref(), cids.dcid.as_bytes());
        // The acceptor learns the dialer's shard from the Initial's SCID.
        assert_eq!(cid_shard(&hdr.scid), Some(dialer_shard));

        // The acceptor's shard (say 3 of 4) answers with a Retry from a CID of its own.
        let acceptor_shard = 3u8;
        let retry_scid = ShardCid::random(acceptor_shard);
        let mut retry = [0u8; 512];
        let rlen = quiche::retry(
            &hdr.scid,
            &hdr.dcid,
            &retry_scid.to_connection_id(),
            b"token",
            hdr.version,
            &mut retry,
        )
        .unwrap();
        let info = quiche::RecvInfo {
            from: peer,
            to: local,
        };
        conn.recv(&mut retry[..rlen], info).unwrap();
        let (len, _) = conn.send(&mut out).unwrap();
        let second = &mut out[..len];
        let n4 = ShardCount::new(4).unwrap();
        assert_eq!(owner(second, n4), Some(usize::from(acceptor_shard)));
        let hdr = quiche::Header::from_slice(second, CID_LEN).unwrap();
        assert_eq!(hdr.dcid.as_ref(), retry_scid.as_bytes());
    }
}

#[test]
fn cids_are_random_apart_from_the_shard_byte() {
    let a = ShardCid::random(9);
    let b = ShardCid::random(9);
    assert_ne!(a, b);
    assert_eq!(a.as_bytes().len(), CID_LEN);
    let d = DialCids::new(9);
    assert_ne!(d.scid, d.dcid);
    assert!(format!("{a:?}").starts_with("ShardCid(shard 9, "));
}

/// The rule written out a second time, as the module doc's table states it.
fn model(d: &[u8]) -> Option<u8> {
    if d.is_empty() {
        None
    } else if d[0] & 0x80 == 0 {
        (d.len() >= 2).then(|| d[1])
    } else {
        (d.len() >= 7 && d[5] != 0).then(|| d[6])
    }
}

proptest! {
    #[test]
    fn any_bytes_read_by_the_documented_rule(d in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(dcid_shard_byte(&d), model(&d));
    }

    #[test]
    fn truncated_datagrams_never_name_a_wrong_shard(
        shard in any::<u8>(),
        long in any::<bool>(),
        cut in 0usize..40,
        n in 1usize..=MAX_SHARDS,
    ) {
        let cid = ShardCid::random(shard);
        let d = if long {
            long_header(cid.as_bytes(), cid.as_bytes(), &[1, 2, 3])
        } else {
            short_header(cid.as_bytes(), &[1, 2, 3])
        };
        let prefix = &d[..cut.min(d.len())];
        let needed = if long { LONG_DCID_OFFSET + 1 } else { SHORT_DCID_OFFSET + 1 };
        let n = ShardCount::new(n).unwrap();
        let expected = (prefix.len() >= needed).then(|| usize::from(shard) % n.get());
        prop_assert_eq!(owner(prefix, n), expected);
    }
}
