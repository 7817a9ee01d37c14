//! Cross-field rules a parsed config must satisfy. Each error names the key at fault.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use tracing_subscriber::filter::{Directive, LevelFilter};

use super::loops::{is_local_ip, reaches};
use super::units::{format_duration, ByteSize};
use super::{ConfigError, NodeConfig};
use crate::quic::cid::MAX_SHARDS;
use crate::shard::placement::MAX_CPUS;

/// The rule for node, peer and route names: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
/// Node names also become certificate SAN DNS names and file names (`NODE.pem`).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; names may use only A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// The RawSocket frame length field is 24 bits.
const MAX_FRAME_LIMIT: u32 = 16 << 20;
/// Every timer is at most a day: far from `Instant` overflow (a year-long `connect_timeout`
/// used to panic the node on its first router connection), and anything longer is a typo.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Timers below a millisecond cannot be honoured (the event loop and quiche's idle timeout
/// count milliseconds; an idle timeout of 0 ms would mean "never").
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// A stats line more often than once a second would flood the log.
pub const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);
/// A flow-control window is memory a peer may make this node hold per stream or connection;
/// 1 GiB covers a 100 Gbit/s path with 80 ms of round trip.
pub const MAX_WINDOW: u64 = 1 << 30;
/// Each link holds a file descriptor on each node; the kernel's default `nr_open` is 2^20.
pub const MAX_STREAMS: u64 = 1_000_000;

impl NodeConfig {
    /// Checks every rule that involves more than one value or a range. `load` and
    /// `from_toml_str` call this; call it yourself on a config built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        name("node", &self.node)?;
        validate_log_filter(&self.log_level).map_err(|m| ConfigError::invalid("log_level", m))?;
        if let Some(d) = self.stats_interval {
            duration_in(
                "stats_interval",
                d,
                MIN_STATS_INTERVAL,
                MAX_DURATION,
                "or \"0s\" (off)",
            )?;
        }
        self.validate_quic()?;
        self.validate_relay()?;
        self.validate_shards()?;
        self.validate_admin()?;

        if self.peers.is_empty() {
            return Err(ConfigError::invalid(
                "peers",
                "at least one [[peers]] entry is required",
            ));
        }
        let mut peer_names = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let key = format!("peers[{i}].name");
            name(&key, &p.name)?;
            if p.name == self.node {
                return Err(ConfigError::invalid(
                    key,
                    format!("{:?} is this node's own name", p.name),
                ));
            }
            if !peer_names.insert(p.name.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("peer {:?} is listed more than once", p.name),
                ));
            }
        }

        let mut listens = HashMap::new();
        for (i, l) in self.links.iter().enumerate() {
            if !peer_names.contains(l.peer.as_str()) {
                return Err(ConfigError::invalid(
                    format!("links[{i}].peer"),
                    format!("no peer named {:?} in [[peers]]", l.peer),
                ));
            }
            name(&format!("links[{i}].route"), &l.route)?;
            super::endpoint::validate_link(i, l)?;
            if let Some(first) = listens.insert(&l.listen, i) {
                return Err(ConfigError::invalid(
                    format!("links[{i}].listen"),
                    format!(
                        "{} is already the listen address of links[{first}]",
                        l.listen
                    ),
                ));
            }
        }

        let mut route_names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}].name");
            name(&key, &r.name)?;
            if !route_names.insert(r.name.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("route {:?} is listed more than once", r.name),
                ));
            }
            if let Some(link) = self
                .links
                .iter()
                .position(|l| reaches(&l.listen, &r.connect, &is_local_ip))
            {
                return Err(loop_error(i, &r.connect, link, &self.links[link].listen));
            }
        }
        Ok(())
    }

    fn validate_quic(&self) -> Result<(), ConfigError> {
        let q = &self.quic;
        for (key, d) in [
            ("quic.idle_timeout", q.idle_timeout),
            ("quic.keepalive_interval", q.keepalive_interval),
            ("quic.connect_timeout", q.connect_timeout),
            ("quic.redial_min", q.redial_min),
            ("quic.redial_max", q.redial_max),
        ] {
            duration_in(key, d, MIN_DURATION, MAX_DURATION, "")?;
        }
        if q.keepalive_interval >= q.idle_timeout {
            return Err(ConfigError::invalid(
                "quic.keepalive_interval",
                format!(
                    "{} must be shorter than quic.idle_timeout ({}), or idle connections time out between keepalives",
                    format_duration(q.keepalive_interval),
                    format_duration(q.idle_timeout)
                ),
            ));
        }
        if q.redial_max < q.redial_min {
            return Err(ConfigError::invalid(
                "quic.redial_max",
                format!(
                    "{} is below quic.redial_min ({})",
                    format_duration(q.redial_max),
                    format_duration(q.redial_min)
                ),
            ));
        }
        if !(1200..=65527).contains(&q.max_udp_payload) {
            return Err(ConfigError::invalid(
                "quic.max_udp_payload",
                format!(
                    "{} is outside 1200..=65527 (QUIC minimum to UDP maximum)",
                    q.max_udp_payload
                ),
            ));
        }
        let windows = [
            ("quic.initial_stream_window", q.initial_stream_window),
            ("quic.max_stream_window", q.max_stream_window),
            (
                "quic.initial_connection_window",
                q.initial_connection_window,
            ),
            ("quic.max_connection_window", q.max_connection_window),
        ];
        for (key, w) in windows {
            if w == 0 || w > MAX_WINDOW {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{} is outside 1 B ..= {} (memory a peer may make this node hold)",
                        ByteSize(w),
                        ByteSize(MAX_WINDOW)
                    ),
                ));
            }
        }
        let at_least = |key: &str, v: u64, other: &str, min: u64| {
            if v < min {
                Err(ConfigError::invalid(
                    key,
                    format!("{} is below {other} ({})", ByteSize(v), ByteSize(min)),
                ))
            } else {
                Ok(())
            }
        };
        at_least(
            "quic.max_stream_window",
            q.max_stream_window,
            "quic.initial_stream_window",
            q.initial_stream_window,
        )?;
        at_least(
            "quic.max_connection_window",
            q.max_connection_window,
            "quic.initial_connection_window",
            q.initial_connection_window,
        )?;
        at_least(
            "quic.max_connection_window",
            q.max_connection_window,
            "quic.max_stream_window",
            q.max_stream_window,
        )?;
        if q.max_streams == 0 || q.max_streams > MAX_STREAMS {
            return Err(ConfigError::invalid(
                "quic.max_streams",
                format!(
                    "{} is outside 1..={MAX_STREAMS} (each link holds a file descriptor)",
                    q.max_streams
                ),
            ));
        }
        Ok(())
    }

    fn validate_relay(&self) -> Result<(), ConfigError> {
        let r = &self.relay;
        if !(512..=MAX_FRAME_LIMIT).contains(&r.max_frame) {
            return Err(ConfigError::invalid(
                "relay.max_frame",
                format!(
                    "{} is outside 512 B ..= 16 MiB (the RawSocket limit)",
                    ByteSize(r.max_frame.into())
                ),
            ));
        }
        if let Some(why) = super::relay_buffer_out_of_range(r.buffer_size as u64) {
            return Err(ConfigError::invalid("relay.buffer_size", why));
        }
        let day = std::time::Duration::from_secs(86_400);
        if !(std::time::Duration::from_millis(100)..=day).contains(&r.stall_timeout) {
            return Err(ConfigError::invalid(
                "relay.stall_timeout",
                format!(
                    "{} is outside 100ms ..= 1 day",
                    format_duration(r.stall_timeout)
                ),
            ));
        }
        if self.drain_timeout > std::time::Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "drain_timeout",
                format!("{} is above 1 hour", format_duration(self.drain_timeout)),
            ));
        }
        // Links holding credit must never be allowed all of it: the others would stop.
        let q = &self.quic;
        if r.stall_budget >= q.initial_connection_window {
            return Err(ConfigError::invalid(
                "relay.stall_budget",
                format!(
                    "{} must be below quic.initial_connection_window ({}), so the links that \
                     keep up always have credit left",
                    ByteSize(r.stall_budget),
                    ByteSize(q.initial_connection_window)
                ),
            ));
        }
        Ok(())
    }
}

impl NodeConfig {
    /// The admin endpoint stays on loopback unless `admin.allow_remote` says otherwise.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let Some(a) = &self.admin else { return Ok(()) };
        if !a.listen.ip().to_canonical().is_loopback() && !a.allow_remote {
            return Err(ConfigError::invalid(
                "admin.listen",
                format!(
                    "{} is not a loopback address: the metrics name this node's peers, routes                      and endpoints; use 127.0.0.1 or [::1], or set admin.allow_remote = true                      if a firewall or proxy guards it",
                    a.listen
                ),
            ));
        }
        if a.listen == self.quic.listen {
            return Err(ConfigError::invalid(
                "admin.listen",
                "is the QUIC address (quic.listen): give the admin endpoint its own port",
            ));
        }
        Ok(())
    }

    fn validate_shards(&self) -> Result<(), ConfigError> {
        let s = &self.shards;
        if let Some(n) = s.count {
            if !(1..=MAX_SHARDS).contains(&n) {
                return Err(ConfigError::invalid(
                    "shards",
                    format!("{n} is outside 1..={MAX_SHARDS} (one byte of a connection ID names the shard)"),
                ));
            }
        }
        let Some(cpus) = &s.cpus else { return Ok(()) };
        if cpus.is_empty() {
            return Err(ConfigError::invalid(
                "cpus",
                "lists no CPU; omit it to use the CPUs of the process's affinity mask",
            ));
        }
        if cpus.len() > MAX_SHARDS {
            return Err(ConfigError::invalid(
                "cpus",
                format!(
                    "lists {} CPUs, one per shard, and a node has at most {MAX_SHARDS} shards",
                    cpus.len()
                ),
            ));
        }
        for (i, &cpu) in cpus.iter().enumerate() {
            let key = format!("cpus[{i}]");
            if cpu >= MAX_CPUS {
                return Err(ConfigError::invalid(
                    key,
                    format!("CPU {cpu} is beyond the {MAX_CPUS} CPUs rlinkd can pin to"),
                ));
            }
            if let Some(first) = cpus[..i].iter().position(|&c| c == cpu) {
                return Err(ConfigError::invalid(
                    key,
                    format!("CPU {cpu} is already cpus[{first}]; each shard gets its own CPU"),
                ));
            }
        }
        if let Some(n) = s.count.filter(|&n| n != cpus.len()) {
            return Err(ConfigError::invalid(
                "cpus",
                format!(
                    "lists {} CPUs but shards = {n}; give one CPU per shard, or omit shards",
                    cpus.len()
                ),
            ));
        }
        Ok(())
    }
}

fn duration_in(
    key: &str,
    d: Duration,
    min: Duration,
    max: Duration,
    or: &str,
) -> Result<(), ConfigError> {
    if d < min || d > max {
        let or = if or.is_empty() {
            String::new()
        } else {
            format!(" {or}")
        };
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} is outside {} ..= {}{or}",
                format_duration(d),
                format_duration(min),
                format_duration(max)
            ),
        ));
    }
    Ok(())
}

pub(crate) fn loop_error(
    route: usize,
    target: &crate::addr::LocalAddr,
    link: usize,
    listen: &crate::addr::LocalAddr,
) -> ConfigError {
    ConfigError::invalid(
        format!("routes[{route}].connect"),
        format!(
            "{target} reaches links[{link}].listen ({listen}), this node's own link endpoint: \
             streams would loop back into rlinkd"
        ),
    )
}

/// Checks a tracing `EnvFilter` string the way `rlinkd run` installs it, and more strictly:
/// every comma-separated directive must name a level, alone (`info`) or after a target
/// (`rlinkd=debug`). A bare word such as `inf` is valid `EnvFilter` syntax, but it means "the
/// target `inf` at every level", which silences the node; it is refused here. So is a filter
/// that gives no level to all of rlinkd's own lines (a bare level or `rlinkd=level`, without a
/// span or field filter): `EnvFilter` turns off whatever no directive names, so `quiche=trace`
/// or `[{peer=b}]=debug` alone would hide the node's errors too.
pub fn validate_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: &str = "off, error, warn, info, debug or trace";
    if filter.trim().is_empty() {
        return Err(format!(
            "must not be empty; use a level ({LEVELS}) or directives such as \"rlinkd=debug,info\""
        ));
    }
    let mut covers_rlinkd = false;
    for d in filter.split(',').map(str::trim) {
        if d.is_empty() {
            return Err(format!("{filter:?} has an empty directive"));
        }
        if LevelFilter::from_str(d).is_ok() {
            covers_rlinkd = true;
            continue;
        }
        if d.split_once('=').is_some_and(|(t, _)| t.trim() == "rlinkd") {
            covers_rlinkd = true;
        }
        // A span or field filter (`target[span{field=value}]=level`) holds `=` inside brackets;
        // the level is after the last `=` that follows them.
        let tail_from = d.rfind(']').map_or(0, |i| i + 1);
        let level = d[tail_from..].rsplit_once('=').map(|(_, l)| l);
        match level {
            Some(l) if LevelFilter::from_str(l.trim()).is_ok() => {}
            Some(l) => return Err(format!("{d:?}: {l:?} is not a level; use {LEVELS}")),
            None => {
                return Err(format!(
                    "{d:?} is not a level; use {LEVELS}, or target=level (e.g. \"rlinkd=debug\")"
                ))
            }
        }
        Directive::from_str(d).map_err(|e| format!("{d:?}: {e}"))?;
    }
    if !covers_rlinkd {
        return Err(format!(
            "{filter:?} gives rlinkd's own lines no level, so the node would log none of them, \
             errors included; add one, alone or as rlinkd=level (e.g. \"{filter},warn\")"
        ));
    }
    Ok(())
}

fn name(key: &str, value: &str) -> Result<(), ConfigError> {
    validate_name(value).map_err(|m| ConfigError::invalid(key, m))
}
