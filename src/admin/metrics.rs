//! `/metrics`: a node snapshot in the OpenMetrics text format (which Prometheus scrapes), encoded
//! by `prometheus-client` into a registry built for the one scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::snapshot::NodeSnapshot;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter<u64>>;
type Gauges = Family<Labels, Gauge<i64>>;
type FloatGauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// A metric family registered under its name, help text included.
fn counters(r: &mut Registry, name: &str, help: &str) -> Counters {
    let f = Counters::default();
    r.register(name, help, f.clone());
    f
}

fn gauges(r: &mut Registry, name: &str, help: &str) -> Gauges {
    let f = Gauges::default();
    r.register(name, help, f.clone());
    f
}

fn float_gauges(r: &mut Registry, name: &str, help: &str) -> FloatGauges {
    let f = FloatGauges::default();
    r.register(name, help, f.clone());
    f
}

/// Label pairs, values escaped as the text format requires (`\\`, `\"`, `\n`):
/// prometheus-client writes them as given, and route names and socket paths come from configs.
fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), escape(v)))
        .collect()
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The whole exposition for one scrape.
pub fn encode_snapshot(snap: &NodeSnapshot) -> String {
    let mut r = Registry::with_prefix("rlinkd");
    let shards = gauges(
        &mut r,
        "shards",
        "Shards (event loops, one per core) of this node",
    );
    let draining = gauges(
        &mut r,
        "draining",
        "1 while the node drains before it stops",
    );
    let node = labels(&[("node", &snap.node)]);
    shards
        .get_or_create(&node)
        .set(clamp(snap.shards.len() as u64));
    draining.get_or_create(&node).set(i64::from(snap.draining));

    let peer_up = gauges(
        &mut r,
        "peer_up",
        "1 when some shard holds an established connection to the peer",
    );
    for (peer, up) in snap.peers_up() {
        peer_up
            .get_or_create(&labels(&[("peer", peer)]))
            .set(i64::from(up));
    }
    let conns = gauges(
        &mut r,
        "peer_connections",
        "Established connections to the peer, per shard",
    );
    let rtt = float_gauges(
        &mut r,
        "peer_rtt_seconds",
        "Smoothed RTT of the shard's connection to the peer",
    );
    let cwnd = gauges(
        &mut r,
        "peer_congestion_window_bytes",
        "Congestion window of the shard's connection to the peer",
    );
    let p_sent = counters(&mut r, "peer_packets_sent", "QUIC packets sent to the peer");
    let p_recv = counters(
        &mut r,
        "peer_packets_received",
        "QUIC packets received from the peer",
    );
    let p_lost = counters(
        &mut r,
        "peer_packets_lost",
        "QUIC packets to the peer declared lost",
    );
    let p_retx = counters(
        &mut r,
        "peer_packets_retransmitted",
        "QUIC packets to the peer that carried retransmitted data",
    );
    let b_sent = counters(
        &mut r,
        "peer_sent_bytes",
        "Bytes of QUIC packets sent to the peer",
    );
    let b_recv = counters(
        &mut r,
        "peer_received_bytes",
        "Bytes of QUIC packets received from the peer",
    );

    let open = gauges(
        &mut r,
        "links_open",
        "Links open, per link endpoint or route and shard",
    );
    let opened = counters(&mut r, "links_opened", "Links opened");
    let closed = counters(&mut r, "links_closed", "Links closed, by reason");
    let frames = counters(
        &mut r,
        "link_frames",
        "RawSocket frames relayed, by direction (to_router, to_client)",
    );
    let bytes = counters(
        &mut r,
        "link_bytes",
        "Payload bytes of the RawSocket messages relayed (frame headers not counted)",
    );

    let d_sent = counters(&mut r, "datagrams_sent", "UDP datagrams sent");
    let sends = counters(
        &mut r,
        "udp_send_calls",
        "UDP send system calls (one GSO batch each)",
    );
    let d_recv = counters(&mut r, "datagrams_received", "UDP datagrams received");
    let recvs = counters(
        &mut r,
        "udp_receive_calls",
        "UDP receive system calls (one GRO buffer each)",
    );
    let per_send = float_gauges(
        &mut r,
        "datagrams_per_send",
        "Datagrams per UDP send call since start",
    );
    let per_recv = float_gauges(
        &mut r,
        "datagrams_per_receive",
        "Datagrams per UDP receive call since start",
    );
    let dropped = counters(
        &mut r,
        "datagrams_dropped",
        "UDP datagrams dropped, by reason",
    );
    let handed = counters(
        &mut r,
        "datagrams_handed_over",
        "Datagrams that reached another shard's socket and were handed to their owner",
    );
    let refused = counters(
        &mut r,
        "peers_refused",
        "Incoming connections refused, by reason",
    );
    let hs_err = counters(
        &mut r,
        "handshake_errors",
        "Incoming QUIC handshakes that failed or timed out",
    );
    let buffers = gauges(&mut r, "buffer_bytes", "Bytes of relay buffers held");
    let copied = counters(
        &mut r,
        "copied_bytes",
        "Bytes copied in user space on the QUIC path, by copy (into_packets, out_of_packets, \
         out_of_quiche, compaction, handover)",
    );
    let retries = counters(
        &mut r,
        "handshake_retries_sent",
        "Initials answered with a Retry (address validation)",
    );
    let waiting = gauges(
        &mut r,
        "route_connects_waiting",
        "Streams whose route connect waits for a retry (router backlog full)",
    );
    let stalled = gauges(
        &mut r,
        "links_stalled",
        "Links whose local socket takes no byte while bytes wait for it",
    );
    let holding = gauges(
        &mut r,
        "links_holding_credit",
        "Links holding flow-control credit (relay.stall_budget)",
    );
    let syscalls = counters(
        &mut r,
        "syscalls",
        "System calls the shard made on the data path, by call",
    );

    for s in &snap.shards {
        let shard = s.shard.to_string();
        for p in &s.peers {
            let l = labels(&[("peer", &p.name), ("shard", &shard)]);
            conns.get_or_create(&l).set(clamp(p.connections));
            if let Some(v) = p.rtt {
                rtt.get_or_create(&l).set(v.as_secs_f64());
            }
            if let Some(v) = p.cwnd {
                cwnd.get_or_create(&l).set(clamp(v));
            }
            p_sent.get_or_create(&l).inc_by(p.packets_sent);
            p_recv.get_or_create(&l).inc_by(p.packets_received);
            p_lost.get_or_create(&l).inc_by(p.packets_lost);
            p_retx.get_or_create(&l).inc_by(p.packets_retransmitted);
            b_sent.get_or_create(&l).inc_by(p.bytes_sent);
            b_recv.get_or_create(&l).inc_by(p.bytes_received);
        }
        for e in &s.endpoints {
            let (kind, name) = e.endpoint.labels();
            let l = labels(&[("kind", kind), ("endpoint", &name), ("shard", &shard)]);
            open.get_or_create(&l).set(clamp(e.links_open));
            opened.get_or_create(&l).inc_by(e.links_opened);
            for (reason, n) in &e.links_closed {
                let mut l = l.clone();
                l.push(("reason".into(), escape(reason)));
                closed.get_or_create(&l).inc_by(*n);
            }
            for (dir, f, b) in [
                ("to_router", e.frames_to_router, e.bytes_to_router),
                ("to_client", e.frames_to_client, e.bytes_to_client),
            ] {
                let mut l = l.clone();
                l.push(("direction".into(), dir.into()));
                frames.get_or_create(&l).inc_by(f);
                bytes.get_or_create(&l).inc_by(b);
            }
        }
        let n = &s.node;
        let l = labels(&[("shard", &shard)]);
        d_sent.get_or_create(&l).inc_by(n.datagrams_sent);
        sends.get_or_create(&l).inc_by(n.send_calls);
        d_recv.get_or_create(&l).inc_by(n.datagrams_received);
        recvs.get_or_create(&l).inc_by(n.receive_calls);
        if n.send_calls > 0 {
            per_send
                .get_or_create(&l)
                .set(n.datagrams_sent as f64 / n.send_calls as f64);
        }
        if n.receive_calls > 0 {
            per_recv
                .get_or_create(&l)
                .set(n.datagrams_received as f64 / n.receive_calls as f64);
        }
        for (reason, v) in &n.datagrams_dropped {
            let mut l = l.clone();
            l.push(("reason".into(), reason.to_string()));
            dropped.get_or_create(&l).inc_by(*v);
        }
        for (reason, v) in &n.peers_refused {
            let mut l = l.clone();
            l.push(("reason".into(), reason.to_string()));
            refused.get_or_create(&l).inc_by(*v);
        }
        handed.get_or_create(&l).inc_by(n.datagrams_handed_over);
        hs_err.get_or_create(&l).inc_by(n.handshake_errors);
        buffers.get_or_create(&l).set(clamp(n.buffer_bytes));
        for (copy, v) in n.copied.by_copy() {
            let mut l = l.clone();
            l.push(("copy".into(), copy.into()));
            copied.get_or_create(&l).inc_by(v);
        }
        retries.get_or_create(&l).inc_by(n.retries_sent);
        waiting.get_or_create(&l).set(clamp(n.routes_waiting));
        stalled.get_or_create(&l).set(clamp(n.links_stalled));
        holding.get_or_create(&l).set(clamp(n.links_holding_credit));
        for (call, v) in n.syscalls.iter() {
            let mut l = l.clone();
            l.push(("call".into(), call.name().into()));
            syscalls.get_or_create(&l).inc_by(v);
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::snapshot::*;
    use super::*;
    use crate::io::syscalls::Syscall;

    #[test]
    fn a_snapshot_becomes_labelled_families_with_help_and_an_eof() {
        let mut s = ShardSnapshot {
            shard: 1,
            ..Default::default()
        };
        s.peers.push(PeerSnapshot {
            name: "b".into(),
            connections: 1,
            rtt: Some(Duration::from_micros(250)),
            cwnd: Some(13_500),
            packets_sent: 10,
            ..Default::default()
        });
        let mut e = EndpointSnapshot::new(Endpoint::Link {
            index: 0,
            listen: "unix:/run/rlinkd/b.sock".into(),
        });
        e.links_open = 2;
        e.links_closed.insert("clean", 3);
        e.frames_to_router = 40;
        s.endpoints.push(e);
        s.node.datagrams_sent = 30;
        s.node.send_calls = 3;
        s.node.datagrams_dropped.insert("unparsable", 1);
        s.node.copied.out_of_quiche = 4096;
        s.node.syscalls.set(Syscall::IoUringEnter, 7);
        let text = encode_snapshot(&NodeSnapshot {
            node: "a".into(),
            shards: vec![s],
            draining: false,
        });
        for want in [
            "# HELP rlinkd_peer_up ",
            "rlinkd_peer_up{peer=\"b\"} 1",
            "rlinkd_peer_connections{peer=\"b\",shard=\"1\"} 1",
            "rlinkd_peer_rtt_seconds{peer=\"b\",shard=\"1\"} 0.00025",
            "rlinkd_peer_packets_sent_total{peer=\"b\",shard=\"1\"} 10",
            "rlinkd_links_open{kind=\"link\",endpoint=\"links[0] unix:/run/rlinkd/b.sock\",shard=\"1\"} 2",
            "rlinkd_links_closed_total{kind=\"link\",endpoint=\"links[0] unix:/run/rlinkd/b.sock\",shard=\"1\",reason=\"clean\"} 3",
            "rlinkd_link_frames_total{kind=\"link\",endpoint=\"links[0] unix:/run/rlinkd/b.sock\",shard=\"1\",direction=\"to_router\"} 40",
            "rlinkd_datagrams_per_send{shard=\"1\"} 10.0",
            "rlinkd_datagrams_dropped_total{shard=\"1\",reason=\"unparsable\"} 1",
            "rlinkd_copied_bytes_total{shard=\"1\",copy=\"out_of_quiche\"} 4096",
            "rlinkd_copied_bytes_total{shard=\"1\",copy=\"into_packets\"} 0",
            "rlinkd_draining{node=\"a\"} 0",
            "# HELP rlinkd_syscalls ",
            "rlinkd_syscalls_total{shard=\"1\",call=\"io_uring_enter\"} 7",
            "rlinkd_syscalls_total{shard=\"1\",call=\"epoll_wait\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn label_values_from_configs_are_escaped() {
        let mut s = ShardSnapshot::default();
        s.endpoints.push(EndpointSnapshot::new(Endpoint::Route {
            name: "we\"ird\nname".into(),
        }));
        let text = encode_snapshot(&NodeSnapshot {
            node: "a".into(),
            shards: vec![s],
            draining: false,
        });
        assert!(!text.contains("we\"ird"), "{text}");
        assert!(text.contains(r#"endpoint="we\"ird\nname""#), "{text}");
        assert!(text.lines().all(|l| !l.starts_with("name")), "{text}");
    }
}
