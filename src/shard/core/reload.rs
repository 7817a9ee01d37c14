//! A reload (SIGHUP) as one shard applies it: the new configuration's peers, routes, link
//! endpoints and settings take effect without touching the links that still have a place in it.
//! The node has checked the new configuration and bound the new endpoints' listeners first
//! (`shard::runtime`); the backend has moved its listeners to the new endpoint indices.
//!
//! What happens to what is already there (docs/OPERATIONS.md, "Reload"):
//! - a removed peer: its connections close with `PeerRemoved` (0x13) and its links with them;
//!   links waiting for it close with `Removed` (0x08);
//! - a removed route: links delivering to it are reset with `Removed` (0x08), streams waiting for
//!   its target too;
//! - a removed link endpoint: its listener closes; its links are reset with `Removed` unless
//!   another endpoint still leads to the same peer and route (an endpoint that moved keeps its
//!   links);
//! - a peer, route or endpoint whose settings changed (a peer's `connect`, a route's target, an
//!   endpoint's route): links already open keep what they were opened with, new ones use the
//!   new settings; so do new connections (certificate, key, CA, transport settings) and new
//!   links (relay settings). Timers (`connect_timeout`, `drain_timeout`, redial, stall rules)
//!   apply from now on.

use std::collections::HashSet;

use super::*;
use crate::quic::codes::{ConnCode, StreamCode};
use crate::relay::link::Role;

/// What a shard changed, for the node's reload summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Links reset because what they depend on was removed.
    pub links_closed: usize,
    /// Connections closed because their peer was removed.
    pub conns_closed: usize,
}

impl<L: LocalIo> ShardCore<L> {
    /// Applies `cfg`, a validated configuration that differs from the running one only in what
    /// a reload may change. `quic_config` is the TLS and transport configuration for new
    /// connections (`None`: keep the current one).
    pub fn reload(
        &mut self,
        cfg: NodeConfig,
        quic_config: Option<quiche::Config>,
        now: Instant,
    ) -> ReloadReport {
        let mut report = ReloadReport::default();
        self.reload_peers(&cfg, now, &mut report);
        self.reload_routes(&cfg, &mut report);
        self.reload_endpoints(&cfg, &mut report);
        if let Some(q) = quic_config {
            self.driver.set_config(q);
        }
        self.driver
            .set_allowed_peers(cfg.peers.iter().map(|p| p.name.clone()));
        self.driver.set_keepalive(cfg.quic.keepalive_interval);
        self.stalls
            .set_limits(cfg.relay.stall_timeout, cfg.relay.stall_budget);
        // The metrics follow the endpoints to their new numbers.
        let map = self.totals.remap(&self.cfg, &cfg);
        for (_, link) in self.links.iter_mut() {
            link.endpoint = link.endpoint.and_then(|i| map.get(i).copied().flatten());
        }
        self.cfg = cfg;
        report
    }

    /// Peers: kept ones keep their connections, links and backoff (a changed `connect` is used
    /// by the next dial); removed ones are closed; new ones are dialed.
    fn reload_peers(&mut self, cfg: &NodeConfig, now: Instant, report: &mut ReloadReport) {
        let mut old: HashMap<String, Peer> = std::mem::take(&mut self.peers)
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let q = &cfg.quic;
        let mut dial = Vec::new();
        for (i, pc) in cfg.peers.iter().enumerate() {
            let p = match old.remove(&pc.name) {
                Some(mut p) => {
                    if p.connect != pc.connect && p.dialing.is_none() && p.redial_at.is_none() {
                        // Not dialing now: a newly given address is dialed at once.
                        dial.push(i);
                    }
                    p.connect = pc.connect;
                    p
                }
                None => {
                    dial.push(i);
                    Peer::new(
                        pc.name.clone(),
                        pc.connect,
                        Backoff::new(q.redial_min, q.redial_max),
                    )
                }
            };
            self.peers.push(p);
        }
        self.peer_index = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        for (name, _) in old {
            let why = format!("peer {name} removed from the configuration");
            report.links_closed += self.fail_links_where(&why, |role| role.peer() == name);
            for cid in self.driver.conns_of(&name) {
                self.driver
                    .close(cid, ConnCode::PeerRemoved, "peer removed");
                report.conns_closed += 1;
            }
            tracing::info!(peer = %name, "peer removed: its connections close");
        }
        if self.stopping.is_none() {
            for i in dial {
                let p = &self.peers[i];
                let connected = !p.conns.is_empty() || p.dialing.is_some();
                if p.connect.is_some() && !connected {
                    self.dial(i, now);
                }
            }
        }
    }

    /// Routes: links and waiting streams of a removed route are reset with `Removed`.
    fn reload_routes(&mut self, cfg: &NodeConfig, report: &mut ReloadReport) {
        let routes: HashMap<String, LocalAddr> = cfg
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.connect.clone()))
            .collect();
        let removed: HashSet<String> = self
            .routes
            .keys()
            .filter(|r| !routes.contains_key(*r))
            .cloned()
            .collect();
        self.routes = routes;
        if removed.is_empty() {
            return;
        }
        let waiting: Vec<(ConnId, u64)> = self
            .pending_routes
            .iter()
            .filter(|(_, p)| removed.contains(&p.route))
            .map(|(k, _)| *k)
            .collect();
        for (cid, sid) in waiting {
            if let Some(p) = self.pending_routes.remove(&(cid, sid)) {
                tracing::info!(peer = %p.peer, route = %p.route, "link refused: route removed from the configuration");
                self.driver.reset_stream(cid, sid, StreamCode::Removed);
                self.driver.note_data_queued(cid);
            }
        }
        for route in removed {
            let why = format!("route {route} removed from the configuration");
            report.links_closed += self.fail_links_where(
                &why,
                |role| matches!(role, Role::Acceptor { route: r, .. } if *r == route),
            );
        }
    }

    /// Link endpoints: links whose peer and route no endpoint leads to any more are reset with
    /// `Removed` (a link does not know which endpoint accepted it, and one that moved to another
    /// address keeps its links).
    fn reload_endpoints(&mut self, cfg: &NodeConfig, report: &mut ReloadReport) {
        let kept: HashSet<(&str, &str)> = cfg
            .links
            .iter()
            .map(|l| (l.peer.as_str(), l.route.as_str()))
            .collect();
        let gone: Vec<(String, String)> = self
            .cfg
            .links
            .iter()
            .filter(|l| !kept.contains(&(l.peer.as_str(), l.route.as_str())))
            .map(|l| (l.peer.clone(), l.route.clone()))
            .collect();
        for (peer, route) in gone {
            let why = format!(
                "link endpoint for peer {peer} route {route} removed from the configuration"
            );
            report.links_closed += self.fail_links_where(&why, |role| {
                matches!(role, Role::Dialer { peer: p, route: r } if *p == peer && *r == route)
            });
        }
    }

    /// Resets with `Removed` every link whose role `pred` selects; how many.
    fn fail_links_where(&mut self, why: &str, pred: impl Fn(&Role) -> bool) -> usize {
        let keys: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| pred(&l.role))
            .map(|(k, _)| k)
            .collect();
        for &key in &keys {
            self.fail_link(key, StreamCode::Removed, why);
        }
        keys.len()
    }
}
