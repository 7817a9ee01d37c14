//! The stats of a shard ([`ShardReport`], taken on request and at the end) and the stats line of
//! `rlinkd run`, which sums every shard's report ([`ShardReport::add`]).

use std::collections::BTreeMap;

use super::{LocalIo, ShardCore};
use crate::io::DatagramStats;
use crate::quic::driver::DriverStats;

/// Links listed one per line under the summary; the rest are counted.
const LINKS_LISTED: usize = 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStats {
    pub links_opened: u64,
    pub links_closed: u64,
    pub links_failed: u64,
    pub route_failures: u64,
    /// Unix route connects refused with EAGAIN (full backlog) and tried again.
    pub route_retries: u64,
    /// Accepts that hit the open-files (or memory) limit.
    pub accept_limited: u64,
    /// Links reset because their local socket stalled.
    pub links_stalled: u64,
}

impl NodeStats {
    fn add(&mut self, o: &NodeStats) {
        self.links_opened += o.links_opened;
        self.links_closed += o.links_closed;
        self.links_failed += o.links_failed;
        self.route_failures += o.route_failures;
        self.route_retries += o.route_retries;
        self.accept_limited += o.accept_limited;
        self.links_stalled += o.links_stalled;
    }
}

/// One shard's figures at one instant (or the sum of several shards'), plain data that crosses
/// threads.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub stats: NodeStats,
    pub driver: DriverStats,
    pub io: DatagramStats,
    /// Datagrams this shard received for another shard and handed over (without steering, or a
    /// GRO buffer that mixed connections).
    pub handed_over: u64,
    /// Strays dropped because their shard's hand-over queue was full.
    pub handoff_dropped: u64,
    pub links_open: usize,
    pub links_stalled_now: usize,
    pub links_holding: usize,
    pub routes_waiting: usize,
    /// Configured peers (by name): whether this shard has an established connection to it.
    pub peers_up: BTreeMap<String, bool>,
    /// The first [`LINKS_LISTED`] links, one line each.
    pub links: Vec<String>,
}

impl ShardReport {
    /// Adds `o` (another shard's report) to this one: counters add up, a peer is up when any
    /// shard has a connection to it.
    pub fn add(&mut self, o: &ShardReport) {
        self.stats.add(&o.stats);
        let (d, od) = (&mut self.driver, &o.driver);
        d.unparsable += od.unparsable;
        d.unknown_connection += od.unknown_connection;
        d.version_negotiations += od.version_negotiations;
        d.retries_sent += od.retries_sent;
        d.invalid_tokens += od.invalid_tokens;
        d.handshakes_refused += od.handshakes_refused;
        d.handshakes_timed_out += od.handshakes_timed_out;
        d.handshakes_failed += od.handshakes_failed;
        d.peers_refused += od.peers_refused;
        d.duplicates_refused += od.duplicates_refused;
        d.superseded += od.superseded;
        d.closed_stream_retransmitted += od.closed_stream_retransmitted;
        let (i, oi) = (&mut self.io, &o.io);
        i.send_calls += oi.send_calls;
        i.datagrams_sent += oi.datagrams_sent;
        i.bytes_sent += oi.bytes_sent;
        i.recv_calls += oi.recv_calls;
        i.datagrams_received += oi.datagrams_received;
        i.bytes_received += oi.bytes_received;
        i.send_errors += oi.send_errors;
        i.gso_fallbacks += oi.gso_fallbacks;
        self.handed_over += o.handed_over;
        self.handoff_dropped += o.handoff_dropped;
        self.links_open += o.links_open;
        self.links_stalled_now += o.links_stalled_now;
        self.links_holding += o.links_holding;
        self.routes_waiting += o.routes_waiting;
        for (peer, up) in &o.peers_up {
            *self.peers_up.entry(peer.clone()).or_insert(false) |= up;
        }
        let room = LINKS_LISTED.saturating_sub(self.links.len());
        self.links.extend(o.links.iter().take(room).cloned());
    }

    /// The sum of `reports`.
    pub fn total<'a>(reports: impl IntoIterator<Item = &'a ShardReport>) -> ShardReport {
        let mut t = ShardReport::default();
        for r in reports {
            t.add(r);
        }
        t
    }

    /// Logs the stats line and the first links.
    pub fn log(&self) {
        let up = self.peers_up.values().filter(|u| **u).count();
        let (io, d) = (&self.io, &self.driver);
        let per = |n: u64, calls: u64| {
            if calls == 0 {
                0.0
            } else {
                n as f64 / calls as f64
            }
        };
        // One event with fields (the same facts in text and JSON logs).
        tracing::info!(
            peers = self.peers_up.len(),
            peers_up = up,
            links_open = self.links_open,
            links_opened = self.stats.links_opened,
            links_closed = self.stats.links_closed,
            links_failed = self.stats.links_failed,
            links_stalled_now = self.links_stalled_now,
            links_holding_credit = self.links_holding,
            links_reset_stalled = self.stats.links_stalled,
            route_retries = self.stats.route_retries,
            routes_waiting = self.routes_waiting,
            accepts_limited = self.stats.accept_limited,
            datagrams_sent = io.datagrams_sent,
            send_calls = io.send_calls,
            datagrams_per_send = per(io.datagrams_sent, io.send_calls),
            datagrams_received = io.datagrams_received,
            receive_calls = io.recv_calls,
            datagrams_per_receive = per(io.datagrams_received, io.recv_calls),
            datagrams_handed_over = self.handed_over,
            dropped_unparsable = d.unparsable,
            dropped_unknown_connection = d.unknown_connection,
            dropped_handoff_queue_full = self.handoff_dropped,
            retries_sent = d.retries_sent,
            invalid_tokens = d.invalid_tokens,
            handshakes_refused_at_limits = d.handshakes_refused,
            handshakes_timed_out = d.handshakes_timed_out,
            handshakes_failed = d.handshakes_failed,
            unknown_peers = d.peers_refused,
            duplicate_identities_refused = d.duplicates_refused,
            connections_superseded = d.superseded,
            "stats"
        );
        for line in &self.links {
            tracing::info!("stats: {line}");
        }
        if self.links_open > self.links.len() {
            tracing::info!(
                more_links = self.links_open - self.links.len(),
                "stats: more links not listed"
            );
        }
    }
}

pub(super) fn report<L: LocalIo>(node: &ShardCore<L>, io: &DatagramStats) -> ShardReport {
    let links = node
        .links
        .iter()
        .take(LINKS_LISTED)
        .map(|(_, link)| {
            let c = link.counters();
            format!(
                "link peer={} route={} realm={} to_router={}f/{}B to_client={}f/{}B",
                link.role.peer(),
                link.role.route(),
                link.realm()
                    .map_or("-".to_string(), |r| crate::logsafe::escaped(r).to_string()),
                c.to_router_frames,
                c.to_router_bytes,
                c.to_client_frames,
                c.to_client_bytes
            )
        })
        .collect();
    ShardReport {
        stats: node.stats,
        driver: node.driver.stats(),
        io: *io,
        handed_over: 0,
        handoff_dropped: 0,
        links_open: node.links.len(),
        links_stalled_now: node.stalls.stalled(),
        links_holding: node.stalls.holding(),
        routes_waiting: node.pending_routes.len(),
        peers_up: node
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.active().is_some()))
            .collect(),
        links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_and_a_peer_is_up_when_any_shard_reaches_it() {
        let mut a = ShardReport {
            links_open: 2,
            ..Default::default()
        };
        a.stats.links_opened = 5;
        a.io.datagrams_sent = 10;
        a.peers_up.insert("b".into(), false);
        a.links.push("link a".into());
        let mut b = ShardReport {
            links_open: 3,
            handed_over: 1,
            ..Default::default()
        };
        b.stats.links_opened = 7;
        b.io.datagrams_sent = 4;
        b.peers_up.insert("b".into(), true);
        b.peers_up.insert("c".into(), false);
        b.links.push("link b".into());
        let t = ShardReport::total([&a, &b]);
        assert_eq!(t.links_open, 5);
        assert_eq!(t.stats.links_opened, 12);
        assert_eq!(t.io.datagrams_sent, 14);
        assert_eq!(t.handed_over, 1);
        assert_eq!(t.peers_up.get("b"), Some(&true));
        assert_eq!(t.peers_up.get("c"), Some(&false));
        assert_eq!(t.links, vec!["link a".to_string(), "link b".to_string()]);
    }
}
