//! UDP GSO and GRO, tested the way rlinkd uses them: through [`crate::io::udp::UdpSocket`], with a
//! real segmented send between two loopback sockets.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Support;
use crate::io::udp::UdpSocket;
use crate::io::{DatagramIo, RecvMeta, Transmit};

/// Segment size of the test send (a data-center QUIC packet).
const SEGMENT: usize = 1350;
/// Segments in the test send.
const SEGMENTS: usize = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UdpReport {
    /// `setsockopt(UDP_SEGMENT)` accepted.
    pub gso_option: Support,
    /// A 2-segment GSO send was accepted and both datagrams arrived intact.
    pub gso_send: Support,
    /// `setsockopt(UDP_GRO)` accepted.
    pub gro_option: Support,
    /// The GSO send arrived as one read carrying a `UDP_GRO` segment-size cmsg.
    pub gro_coalesced: Support,
}

pub fn detect() -> UdpReport {
    let mut report = UdpReport {
        gso_option: Support::Unknown("not tested".into()),
        gso_send: Support::Unknown("not tested".into()),
        gro_option: Support::Unknown("not tested".into()),
        gro_coalesced: Support::Unknown("not tested".into()),
    };
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let (mut tx, mut rx) = match (
        UdpSocket::bind(any, true, false),
        UdpSocket::bind(any, false, true),
    ) {
        (Ok(tx), Ok(rx)) => (tx, rx),
        (Err(e), _) | (_, Err(e)) => {
            let why = format!("loopback UDP socket: {e}");
            report.gso_option = Support::Unknown(why.clone());
            report.gro_option = Support::Unknown(why);
            return report;
        }
    };
    report.gso_option = yes_if(tx.capabilities().gso, "setsockopt(UDP_SEGMENT) refused");
    report.gro_option = yes_if(rx.capabilities().gro, "setsockopt(UDP_GRO) refused");

    let payload: Vec<u8> = (0..SEGMENT * SEGMENTS).map(|i| (i % 251) as u8).collect();
    let sent = tx.send(&Transmit {
        to: rx.local_addr(),
        contents: &payload,
        segment_size: SEGMENT,
    });
    if let Err(e) = sent {
        report.gso_send = Support::No(format!("send: {e}"));
        return report;
    }
    if !report.gso_option.is_yes() || tx.stats().gso_fallbacks > 0 {
        report.gso_send = Support::No(format!(
            "sent as {} separate datagrams",
            tx.stats().send_calls
        ));
    }
    let mut got = Vec::new();
    let mut reads: Vec<RecvMeta> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < payload.len() {
        match recv_within(&mut rx, &mut buf, Duration::from_secs(1)) {
            Ok(meta) => {
                got.extend_from_slice(&buf[..meta.len]);
                reads.push(meta);
            }
            Err(e) => {
                let why = format!("after {} of {} bytes: {e}", got.len(), payload.len());
                report.gso_send = Support::No(why.clone());
                report.gro_coalesced = Support::Unknown(why);
                return report;
            }
        }
    }
    if got != payload {
        report.gso_send = Support::No("datagrams arrived corrupted".into());
        return report;
    }
    if report.gso_send == Support::Unknown("not tested".into()) {
        report.gso_send = Support::Yes;
    }
    report.gro_coalesced = match reads.as_slice() {
        [one] if one.segment_size == SEGMENT && one.len == payload.len() => Support::Yes,
        _ if !report.gro_option.is_yes() => Support::No("UDP_GRO not set".into()),
        _ => Support::No(format!(
            "arrived as {} reads (segment sizes {:?})",
            reads.len(),
            reads.iter().map(|r| r.segment_size).collect::<Vec<_>>()
        )),
    };
    report
}

fn yes_if(ok: bool, why_not: &str) -> Support {
    if ok {
        Support::Yes
    } else {
        Support::No(why_not.into())
    }
}

fn recv_within(rx: &mut UdpSocket, buf: &mut [u8], limit: Duration) -> io::Result<RecvMeta> {
    let deadline = Instant::now() + limit;
    loop {
        match rx.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "nothing arrived"))
            }
            other => return other,
        }
    }
}
