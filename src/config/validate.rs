//! Cross-field rules a parsed config must satisfy. Each error names the key at fault.

use std::collections::{HashMap, HashSet};

use super::units::{format_duration, ByteSize};
use super::{ConfigError, NodeConfig};

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

/// QUIC variable-length integers stop at 2^62 - 1 (RFC 9000 section 16).
const VARINT_MAX: u64 = (1 << 62) - 1;
/// RFC 9000 section 4.6: a stream count above 2^60 cannot be encoded as a stream ID.
const MAX_STREAMS_LIMIT: u64 = 1 << 60;
/// The RawSocket frame length field is 24 bits.
const MAX_FRAME_LIMIT: u32 = 16 << 20;

impl NodeConfig {
    /// Checks every rule that involves more than one value or a range. `load` and
    /// `from_toml_str` call this; call it yourself on a config built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        name("node", &self.node)?;
        if self.log_level.trim().is_empty() {
            return Err(ConfigError::invalid(
                "log_level",
                "must not be empty (e.g. \"info\" or \"rlinkd=debug,info\")",
            ));
        }
        self.validate_quic()?;
        self.validate_relay()?;

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
            if let Some(link) = listens.get(&r.connect) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].connect"),
                    format!("{} is the listen address of links[{link}]: streams would loop back into rlinkd", r.connect),
                ));
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
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than 0s"));
            }
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
            if w == 0 || w > VARINT_MAX {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} must be between 1 B and 2^62 - 1 B", ByteSize(w)),
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
        if q.max_streams == 0 || q.max_streams > MAX_STREAMS_LIMIT {
            return Err(ConfigError::invalid(
                "quic.max_streams",
                format!("{} is outside 1..=2^60", q.max_streams),
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
        if !(4 << 10..=16 << 20).contains(&r.buffer_size) {
            return Err(ConfigError::invalid(
                "relay.buffer_size",
                format!(
                    "{} is outside 4 KiB ..= 16 MiB",
                    ByteSize(r.buffer_size as u64)
                ),
            ));
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
        // Stalled links must never hold so much of a connection's credit that the others stop:
        // leave at least 8 stream windows free for them.
        let q = &self.quic;
        let free = q.initial_connection_window.saturating_sub(r.stall_budget);
        if r.stall_budget < q.max_stream_window || free < q.max_stream_window.saturating_mul(8) {
            return Err(ConfigError::invalid(
                "relay.stall_budget",
                format!(
                    "{} must be at least quic.max_stream_window ({}) and leave 8 stream windows of \
                     quic.initial_connection_window ({}) free",
                    ByteSize(r.stall_budget),
                    ByteSize(q.max_stream_window),
                    ByteSize(q.initial_connection_window)
                ),
            ));
        }
        Ok(())
    }
}

fn name(key: &str, value: &str) -> Result<(), ConfigError> {
    validate_name(value).map_err(|m| ConfigError::invalid(key, m))
}
