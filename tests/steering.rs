//! Packet steering on loopback: a group of shard sockets shares one port, crafted QUIC
//! datagrams for every shard are sent at it from another socket, and each must arrive at its
//! shard's socket (with the steering program) or be recognisable for hand-off (without it).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rlinkd::io::steer::{self, Steering, SteeringProgram};
use rlinkd::quic::cid::{self, DialCids, ShardCid, ShardCount};
use socket2::Socket;

/// A real Initial from quiche, addressed as dialer shard `shard` would address it.
fn initial(shard: u8, to: SocketAddr) -> Vec<u8> {
    let mut config = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    config
        .set_application_protos(&[rlinkd::quic::ALPN])
        .unwrap();
    let cids = DialCids::new(shard);
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut conn = quiche::connect_with_dcid(
        Some("peer"),
        &cids.scid.to_connection_id(),
        &cids.dcid.to_connection_id(),
        from,
        to,
        &mut config,
    )
    .unwrap();
    let mut out = vec![0u8; 1500];
    let (len, _) = conn.send(&mut out).unwrap();
    out.truncate(len);
    out
}

/// A 1-RTT (short header) packet to a CID of `shard`; only its header matters to steering.
fn short_header(shard: u8) -> Vec<u8> {
    let mut d = vec![0x41];
    d.extend_from_slice(ShardCid::random(shard).as_bytes());
    d.extend_from_slice(&[0xab; 40]);
    d
}

/// Sends each datagram from one client socket (so all share one 4-tuple, as a peer's
/// connections do) and collects what each group socket received, waiting at most 5 s.
fn exchange(sockets: &[Socket], to: SocketAddr, datagrams: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let sockets: Vec<UdpSocket> = sockets
        .iter()
        .map(|s| UdpSocket::from(s.try_clone().unwrap()))
        .collect();
    for s in &sockets {
        s.set_nonblocking(true).unwrap();
    }
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        client.send_to(d, to).unwrap();
    }
    let mut received: Vec<Vec<Vec<u8>>> = vec![Vec::new(); sockets.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while received.iter().map(Vec::len).sum::<usize>() < datagrams.len() {
        assert!(Instant::now() < deadline, "datagrams lost: {received:?}");
        let mut idle = true;
        for (i, s) in sockets.iter().enumerate() {
            match s.recv(&mut buf) {
                Ok(n) => {
                    idle = false;
                    received[i].push(buf[..n].to_vec());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv on socket {i}: {e}"),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    received
}

/// Initials and short-header packets for shard bytes 0 .. 2n (so the modulo wraps), plus
/// runts without a readable owner.
fn traffic(n: usize, to: SocketAddr) -> Vec<Vec<u8>> {
    let mut ds = Vec::new();
    for shard in 0..(2 * n) as u8 {
        ds.push(initial(shard, to));
        ds.push(short_header(shard));
    }
    ds
}

fn assert_steered(n: usize, received: &[Vec<Vec<u8>>]) {
    let shards = ShardCount::new(n).unwrap();
    for (socket, datagrams) in received.iter().enumerate() {
        for d in datagrams {
            if let Some(owner) = cid::owner(d, shards) {
                assert_eq!(
                    owner,
                    socket,
                    "datagram {:02x?} on socket {socket}",
                    &d[..8]
                );
            }
        }
    }
    for (socket, datagrams) in received.iter().enumerate() {
        let owned = datagrams
            .iter()
            .filter(|d| cid::owner(d, shards).is_some())
            .count();
        // Every shard gets 2 shard bytes x (Initial + short header).
        assert_eq!(owned, 4, "socket {socket}");
    }
}

#[test]
fn the_program_delivers_every_datagram_to_its_shards_socket() {
    for n in [2usize, 4] {
        let group =
            steer::bind_group("127.0.0.1:0".parse().unwrap(), ShardCount::new(n).unwrap()).unwrap();
        assert!(
            matches!(group.steering, Steering::Kernel),
            "{:?}",
            group.steering
        );
        assert_eq!(group.sockets.len(), n);
        let mut ds = traffic(n, group.local);
        // Runts: no owner, the kernel's hash picks a socket; they must still arrive.
        ds.push(vec![0x40]);
        ds.push(vec![0xc0, 0, 0, 0, 1, 0, 0]);
        let received = exchange(&group.sockets, group.local, &ds);
        assert_steered(n, &received);
        let runts = received.iter().flatten().filter(|d| d.len() <= 7).count();
        assert_eq!(runts, 2);
    }
}

/// The program belongs to the group: attached through the last socket, it steers for all.
#[test]
fn attaching_through_any_socket_steers_the_whole_group() {
    let n = 4;
    let (sockets, local) = steer::bind_reuseport("127.0.0.1:0".parse().unwrap(), n).unwrap();
    SteeringProgram::new(ShardCount::new(n).unwrap())
        .attach(&sockets[n - 1])
        .unwrap();
    let received = exchange(&sockets, local, &traffic(n, local));
    assert_steered(n, &received);
}

/// The program attached to the first socket before it is bound (what `bind_group` does, so a
/// starting node's group never spreads by hash) comes with the group that socket founds.
#[test]
fn a_program_attached_before_the_first_bind_steers_the_group() {
    use socket2::{Domain, Protocol, SockAddr, Type};
    let n = 3;
    let new = || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s
    };
    let first = new();
    SteeringProgram::new(ShardCount::new(n).unwrap())
        .attach(&first)
        .expect("a program on an unbound SO_REUSEPORT socket");
    first
        .bind(&SockAddr::from(
            "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        ))
        .unwrap();
    let local = first.local_addr().unwrap().as_socket().unwrap();
    let mut sockets = vec![first];
    for _ in 1..n {
        let s = new();
        s.bind(&SockAddr::from(local)).unwrap();
        sockets.push(s);
    }
    let received = exchange(&sockets, local, &traffic(n, local));
    assert_steered(n, &received);
}

/// Without the program the kernel hashes the 4-tuple: one peer's datagrams all reach one socket,
/// whatever their connection. The user-space reader names each one's owner, and the strays
/// are the ones a shard must hand over.
#[test]
fn without_the_program_strays_are_recognised_for_hand_off() {
    let n = 4;
    let shards = ShardCount::new(n).unwrap();
    let (sockets, local) = steer::bind_reuseport("127.0.0.1:0".parse().unwrap(), n).unwrap();
    let ds = traffic(n, local);
    let received = exchange(&sockets, local, &ds);
    let busy: Vec<usize> = (0..n).filter(|&i| !received[i].is_empty()).collect();
    assert_eq!(busy.len(), 1, "one 4-tuple, one socket: {busy:?}");
    let mut handed: HashMap<usize, usize> = HashMap::new();
    for (socket, datagrams) in received.iter().enumerate() {
        for d in datagrams {
            let owner = cid::owner(d, shards).expect("every test datagram has an owner");
            if owner != socket {
                *handed.entry(owner).or_default() += 1;
            }
        }
    }
    // Everything for the other three shards is handed over, 4 datagrams each; nothing is lost.
    assert_eq!(handed.values().sum::<usize>(), 12, "{handed:?}");
    assert!(handed.values().all(|&c| c == 4));
    assert!(!handed.contains_key(&busy[0]));
}

#[test]
fn a_port_held_by_another_socket_is_refused() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = steer::bind_group(addr, ShardCount::new(2).unwrap()).unwrap_err();
    assert!(matches!(err, steer::SteerError::InUse { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()));

    // A running group holds its port too: a second node with the same config cannot join it.
    drop(taken);
    let group = steer::bind_group(addr, ShardCount::new(2).unwrap()).unwrap();
    assert_eq!(group.local, addr);
    let err = steer::bind_group(addr, ShardCount::new(2).unwrap()).unwrap_err();
    assert!(matches!(err, steer::SteerError::InUse { .. }), "{err}");
}
