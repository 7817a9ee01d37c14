//! The node's side of a reload (SIGHUP): read and check the configuration file again as `rlinkd
//! run` would (every rule, the certificate, key and CA), refuse what only a restart can change,
//! build the TLS configuration once to know it works, and bind the new link endpoints. Only when
//! all of that succeeded do the shards get the new configuration (`ShardMsg::Reload`); a failure
//! leaves the configuration in force untouched (the listeners bound meanwhile close again).
//!
//! A reload applies all of the new file or none of it.

use std::fmt::Write as _;

use crate::addr::LocalAddr;
use crate::config::{ConfigError, NodeConfig};
use crate::io::local::{bind_for_shards, LocalListener};

/// Why a reload was refused; the configuration in force stays. `Display` names the key.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the node was not started from a configuration file")]
    NoFile,
    #[error("the node is stopping")]
    Stopping,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{key}: changing it needs a restart (in force: {in_force}, in the file: {in_file})")]
    NeedsRestart {
        key: &'static str,
        in_force: String,
        in_file: String,
    },
    #[error("quic.cert, quic.key, quic.ca: {0}")]
    Tls(#[from] crate::quic::tls::TlsSetupError),
    #[error("links[{index}].listen: cannot bind {addr}: {source}")]
    Listen {
        index: usize,
        addr: LocalAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Access(String),
}

/// A checked reload, ready for the shards.
pub struct ReloadPlan {
    pub cfg: NodeConfig,
    /// `[shard][endpoint]`: listeners bound for the endpoints new in `cfg.links`.
    pub listeners: Vec<Vec<Option<LocalListener>>>,
    /// What changes, for the log.
    pub summary: String,
}

/// The keys a running node cannot change: its identity, the sockets and threads it started
/// with, and the logging set up at start.
fn restart_only(old: &NodeConfig, new: &NodeConfig) -> Result<(), ReloadError> {
    fn check<T: PartialEq + std::fmt::Debug>(
        key: &'static str,
        old: &T,
        new: &T,
    ) -> Result<(), ReloadError> {
        if old == new {
            return Ok(());
        }
        Err(ReloadError::NeedsRestart {
            key,
            in_force: format!("{old:?}"),
            in_file: format!("{new:?}"),
        })
    }
    check("node", &old.node, &new.node)?;
    check("quic.listen", &old.quic.listen, &new.quic.listen)?;
    check("shards", &old.shards.count, &new.shards.count)?;
    check("cpus", &old.shards.cpus, &new.shards.cpus)?;
    check("quic.gso", &old.quic.gso, &new.quic.gso)?;
    check("quic.gro", &old.quic.gro, &new.quic.gro)?;
    check("quic.steering", &old.quic.steering, &new.quic.steering)?;
    check("log_format", &old.log_format, &new.log_format)?;
    check("admin", &old.admin, &new.admin)?;
    check("io", &old.io, &new.io)?;
    Ok(())
}

/// Reads `old.source` again and prepares the reload for `shards` shards.
pub fn plan(old: &NodeConfig, shards: usize) -> Result<ReloadPlan, ReloadError> {
    if old.source.as_os_str().is_empty() {
        return Err(ReloadError::NoFile);
    }
    let cfg = NodeConfig::load(&old.source)?;
    restart_only(old, &cfg)?;
    // Each shard builds its own from the same files; this one proves they make one.
    drop(crate::quic::tls::quiche_config(&cfg.quic)?);

    let mut listeners: Vec<Vec<Option<LocalListener>>> = (0..shards)
        .map(|_| Vec::with_capacity(cfg.links.len()))
        .collect();
    {
        // New sockets start as mode 0600 and get their configured mode below (as at start).
        let _umask = crate::ops::endpoint::PrivateUmask::set();
        for (index, l) in cfg.links.iter().enumerate() {
            let per_shard = if old.links.iter().any(|o| o.listen == l.listen) {
                (0..shards).map(|_| None).collect()
            } else {
                bind_for_shards(&l.listen, shards).map_err(|source| ReloadError::Listen {
                    index,
                    addr: l.listen.clone(),
                    source,
                })?
            };
            for (s, listener) in per_shard.into_iter().enumerate() {
                listeners[s].push(listener);
            }
        }
    }
    // Every Unix endpoint, kept ones too: a changed socket_mode, owner or group applies now.
    crate::ops::endpoint::apply_all(&cfg.links).map_err(ReloadError::Access)?;
    let summary = summary(old, &cfg);
    Ok(ReloadPlan {
        cfg,
        listeners,
        summary,
    })
}

/// "peers +c -x; routes ...; link endpoints ...; settings ..." for what differs.
fn summary(old: &NodeConfig, new: &NodeConfig) -> String {
    let mut out = String::new();
    let mut diff = |what: &str, old: Vec<String>, new: Vec<String>| {
        let added: Vec<&String> = new.iter().filter(|n| !old.contains(n)).collect();
        let removed: Vec<&String> = old.iter().filter(|o| !new.contains(o)).collect();
        if !added.is_empty() || !removed.is_empty() {
            let _ = write!(out, "{what} added {added:?} removed {removed:?}; ");
        }
    };
    let peers = |c: &NodeConfig| c.peers.iter().map(|p| p.name.clone()).collect();
    let routes = |c: &NodeConfig| c.routes.iter().map(|r| r.name.clone()).collect();
    let links = |c: &NodeConfig| c.links.iter().map(|l| l.listen.to_string()).collect();
    diff("peers", peers(old), peers(new));
    diff("routes", routes(old), routes(new));
    diff("link endpoints", links(old), links(new));
    let changed = |a: bool, name: &str, out: &mut String| {
        if a {
            let _ = write!(out, "{name} changed; ");
        }
    };
    // Only when no entry came or went (that is said above).
    changed(
        old.peers.len() == new.peers.len() && old.peers != new.peers,
        "peer settings",
        &mut out,
    );
    changed(
        old.routes.len() == new.routes.len() && old.routes != new.routes,
        "route settings",
        &mut out,
    );
    changed(
        old.links.len() == new.links.len() && old.links != new.links,
        "link endpoint settings",
        &mut out,
    );
    changed(
        old.quic != new.quic,
        "quic settings (new connections)",
        &mut out,
    );
    changed(
        old.relay != new.relay,
        "relay settings (new links)",
        &mut out,
    );
    changed(
        old.drain_timeout != new.drain_timeout || old.stats_interval != new.stats_interval,
        "timers",
        &mut out,
    );
    changed(old.log_level != new.log_level, "log_level", &mut out);
    if out.is_empty() {
        "nothing changed".to_string()
    } else {
        out.trim_end_matches("; ").to_string()
    }
}
