//! The shard's figures for the admin endpoint: per link endpoint and route, links opened, open
//! and closed by reason, frames and bytes each way (closed links' totals kept here, open links'
//! read when asked); per peer, this shard's connections and their transport figures.

use std::collections::HashMap;

use super::*;
use crate::admin::snapshot::{
    CopiedBytes, Endpoint, EndpointSnapshot, NodeCounters, PeerSnapshot, ShardSnapshot,
};
use crate::relay::link::{LinkCounters, Role};

/// Totals of the links that have closed, per link endpoint and per route.
pub(super) struct Totals {
    /// By index in the configuration's `links`.
    endpoints: Vec<EndpointSnapshot>,
    /// By route name.
    routes: HashMap<String, EndpointSnapshot>,
    /// What closed links copied.
    copies: CopiedBytes,
}

impl Totals {
    pub(super) fn new(cfg: &NodeConfig) -> Totals {
        Totals {
            endpoints: cfg
                .links
                .iter()
                .enumerate()
                .map(|(index, l)| {
                    EndpointSnapshot::new(Endpoint::Link {
                        index,
                        listen: l.listen.to_string(),
                    })
                })
                .collect(),
            routes: cfg
                .routes
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        EndpointSnapshot::new(Endpoint::Route {
                            name: r.name.clone(),
                        }),
                    )
                })
                .collect(),
            copies: CopiedBytes::default(),
        }
    }

    /// A reload: link endpoints are renumbered by their place in the new `links` (an endpoint
    /// keeps its totals when its address stays), routes kept by name, new ones start at zero.
    /// Returns, for each old endpoint index, its new one (`None`: removed).
    pub(super) fn remap(&mut self, old: &NodeConfig, new: &NodeConfig) -> Vec<Option<usize>> {
        let map: Vec<Option<usize>> = old
            .links
            .iter()
            .map(|o| new.links.iter().position(|n| n.listen == o.listen))
            .collect();
        let mut fresh = Totals::new(new);
        fresh.copies = self.copies;
        for (i, to) in map.iter().enumerate() {
            if let (Some(to), Some(e)) = (to, self.endpoints.get(i)) {
                let mut e = e.clone();
                e.endpoint = fresh.endpoints[*to].endpoint.clone();
                fresh.endpoints[*to] = e;
            }
        }
        for (name, e) in fresh.routes.iter_mut() {
            if let Some(old) = self.routes.remove(name) {
                *e = old;
            }
        }
        *self = fresh;
        map
    }

    /// Where a link counts: its link endpoint (dialer) or its route (acceptor).
    fn slot<S>(&mut self, link: &Link<S>) -> Option<&mut EndpointSnapshot> {
        match &link.role {
            Role::Dialer { .. } => self.endpoints.get_mut(link.endpoint?),
            Role::Acceptor { route, .. } => self.routes.get_mut(route),
        }
    }

    pub(super) fn opened<S>(&mut self, link: &Link<S>) {
        if let Some(e) = self.slot(link) {
            e.links_opened += 1;
        }
    }

    /// A stream for `route` that never became a link (its target could not be reached).
    pub(super) fn refused(&mut self, route: &str, reason: &'static str) {
        if let Some(e) = self.routes.get_mut(route) {
            e.links_opened += 1;
            *e.links_closed.entry(reason).or_insert(0) += 1;
        }
    }

    pub(super) fn closed<S: LocalConn>(&mut self, link: &Link<S>, reason: &'static str) {
        let c = link.counters();
        self.copies.add(&link.copies());
        if let Some(e) = self.slot(link) {
            *e.links_closed.entry(reason).or_insert(0) += 1;
            add(e, &c);
        }
    }
}

fn add(e: &mut EndpointSnapshot, c: &LinkCounters) {
    e.frames_to_router += c.to_router_frames;
    e.bytes_to_router += c.to_router_bytes;
    e.frames_to_client += c.to_client_frames;
    e.bytes_to_client += c.to_client_bytes;
}

impl<L: LocalIo> ShardCore<L> {
    /// The shard's figures now: closed links' totals plus the open links, the peers' connections
    /// on this shard, and the node counters (`node`, from the backend, gets the driver's and the
    /// links' share added).
    pub fn snapshot(&self, mut node: NodeCounters) -> ShardSnapshot {
        let mut endpoints = self.totals.endpoints.clone();
        let mut routes = self.totals.routes.clone();
        let mut buffers = 0u64;
        let mut copies = self.totals.copies;
        for (_, link) in self.links.iter() {
            buffers += link.buffer_memory() as u64;
            copies.add(&link.copies());
            let slot = match &link.role {
                Role::Dialer { .. } => link.endpoint.and_then(|i| endpoints.get_mut(i)),
                Role::Acceptor { route, .. } => routes.get_mut(route),
            };
            if let Some(e) = slot {
                e.links_open += 1;
                add(e, &link.counters());
            }
        }
        let mut routes: Vec<EndpointSnapshot> = routes.into_values().collect();
        routes.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        endpoints.extend(routes);

        let peers = self
            .peers
            .iter()
            .map(|p| {
                let mut s = PeerSnapshot {
                    name: p.name.clone(),
                    connections: p.conns.len() as u64,
                    ..Default::default()
                };
                for (i, (cid, _, _)) in p.conns.iter().enumerate() {
                    let Some(f) = self.driver.conn(*cid).map(|c| c.figures()) else {
                        continue;
                    };
                    if i + 1 == p.conns.len() {
                        // The connection new links use.
                        s.rtt = f.rtt;
                        s.cwnd = f.cwnd;
                    }
                    s.packets_sent += f.packets_sent;
                    s.packets_received += f.packets_received;
                    s.packets_lost += f.packets_lost;
                    s.packets_retransmitted += f.packets_retransmitted;
                    s.bytes_sent += f.bytes_sent;
                    s.bytes_received += f.bytes_received;
                }
                s
            })
            .collect();

        let d = self.driver.stats();
        for (reason, n) in [
            ("unparsable", d.unparsable),
            ("unknown_connection", d.unknown_connection),
            ("version_negotiation", d.version_negotiations),
        ] {
            *node.datagrams_dropped.entry(reason).or_insert(0) += n;
        }
        for (reason, n) in [
            ("unknown_peer", d.peers_refused),
            ("duplicate_identity", d.duplicates_refused),
            ("handshake_limit", d.handshakes_refused),
            ("invalid_token", d.invalid_tokens),
        ] {
            *node.peers_refused.entry(reason).or_insert(0) += n;
        }
        node.handshake_errors += d.handshakes_failed + d.handshakes_timed_out;
        node.retries_sent += d.retries_sent;
        node.routes_waiting += self.pending_routes.len() as u64;
        node.links_stalled += self.stalls.stalled() as u64;
        node.links_holding_credit += self.stalls.holding() as u64;
        node.buffer_bytes += buffers;
        copies.into_packets += self.driver.stream_bytes_retransmitted();
        node.copied.add(&copies);
        ShardSnapshot {
            shard: usize::from(self.driver.shard()),
            peers,
            endpoints,
            node,
        }
    }
}
