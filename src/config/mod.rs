//! Node configuration: the TOML file model, its typed units, validation, and the validated
//! runtime types the rest of rlinkd uses.
//!
//! `NodeConfig::load` reads a file, resolves relative paths against the file's folder, checks
//! every rule in `validate.rs` and that the certificate files exist. The file format is
//! documented key by key in `docs/CONFIG.md`. This module is the only place that reads the
//! node's settings from the environment (`RUST_LOG`, see [`NodeConfig::log_filter`]);
//! `NOTIFY_SOCKET`, systemd's channel rather than a setting, is read by `crate::ops::notify`.

mod endpoint;
mod file;
mod loops;
mod summary;
pub mod units;
mod validate;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::addr::LocalAddr;
use file::FileConfig;
use units::DurationValue;

pub use endpoint::{IdSpec, SocketAccess, SocketMode, DEFAULT_SOCKET_MODE};

pub use validate::{
    validate_log_filter, validate_name, MAX_DURATION, MAX_STREAMS, MAX_WINDOW, MIN_DURATION,
    MIN_STATS_INTERVAL,
};

/// Why a configuration could not be used. `Display` names the file or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the format; `message` is toml's, with the
    /// line, column and key.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A value is well-formed but not allowed; `key` is its path, e.g. `links[1].peer`.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A validated node configuration. Paths are absolute when it came from [`NodeConfig::load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's name; equal to the CN and SAN DNS name in its certificate.
    pub node: String,
    /// A tracing `EnvFilter` directive; `RUST_LOG` overrides it (see [`NodeConfig::log_filter`]).
    pub log_level: String,
    /// How often a stats line is logged; `None` when the file says `"0s"`.
    pub stats_interval: Option<Duration>,
    /// How long a stopping node (SIGTERM/SIGINT) keeps relaying what it accepted before it
    /// resets the links left.
    pub drain_timeout: Duration,
    /// How log lines are written (`log_format`).
    pub log_format: LogFormat,
    pub quic: QuicSettings,
    pub relay: RelaySettings,
    pub peers: Vec<PeerConfig>,
    pub links: Vec<LinkConfig>,
    pub routes: Vec<RouteConfig>,
    /// `shards` and `cpus`.
    pub shards: ShardSettings,
    /// `[admin]`: the metrics and health endpoint; `None` (the default) serves none.
    pub admin: Option<AdminSettings>,
    /// `io`: which I/O backend the shards run on.
    pub io: IoMode,
    /// The config file this came from (empty for [`NodeConfig::from_toml_str`]).
    pub source: PathBuf,
}

/// QUIC transport settings. Defaults are in [`QuicSettings::new`] and `docs/CONFIG.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicSettings {
    /// UDP address the node listens on and dials from.
    pub listen: SocketAddr,
    /// This node's certificate (PEM), key (PEM) and the cluster CA (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// A peer silent for this long is declared lost.
    pub idle_timeout: Duration,
    /// PING interval on an idle connection; below `idle_timeout`.
    pub keepalive_interval: Duration,
    /// A router connection to a link whose peer is unreachable is closed after this.
    pub connect_timeout: Duration,
    /// First redial delay; it doubles with jitter up to `redial_max`.
    pub redial_min: Duration,
    pub redial_max: Duration,
    /// Largest UDP payload sent (quiche `max_send_udp_payload_size`).
    pub max_udp_payload: usize,
    pub initial_stream_window: u64,
    pub max_stream_window: u64,
    pub initial_connection_window: u64,
    pub max_connection_window: u64,
    /// Concurrent bidirectional streams (links) a peer may open on one connection.
    pub max_streams: u64,
    pub congestion_control: CongestionControl,
    /// Use UDP GSO on send / GRO on receive when the kernel supports them (probed at run time).
    pub gso: bool,
    pub gro: bool,
    /// With several shards, steer datagrams to their shard's socket in the kernel (a BPF program
    /// reads the shard from the connection ID); `false` leaves the spreading to the kernel's
    /// address hash and the shards hand strays over (slower; for tests and diagnosis).
    pub steering: bool,
}

pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl QuicSettings {
    /// Settings with every optional key at its default.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf, ca: PathBuf) -> QuicSettings {
        QuicSettings {
            listen,
            cert,
            key,
            ca,
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            redial_min: Duration::from_millis(200),
            redial_max: Duration::from_secs(10),
            // 1500-byte path MTU minus IPv6 (40) and UDP (8) headers.
            max_udp_payload: 1452,
            // A stream window is what one stalled link can hold of the connection's credit:
            // auto-tuned from 1 MiB up to 4 MiB (one link's bulk throughput on a loaded 2-core
            // box rose from about 600 to 750-800 MB/s), bounded for isolation. See
            // docs/ARCHITECTURE.md "Flow control is isolation".
            initial_stream_window: 1 << 20,
            max_stream_window: 4 << 20,
            initial_connection_window: 128 << 20,
            max_connection_window: 128 << 20,
            max_streams: 100_000,
            congestion_control: CongestionControl::Cubic,
            gso: true,
            gro: true,
            steering: true,
        }
    }
}

/// Congestion controller, by quiche's name for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionControl {
    #[default]
    Cubic,
    Reno,
    Bbr2,
}

impl CongestionControl {
    /// The name quiche's `Config::set_cc_algorithm_name` accepts.
    pub fn name(&self) -> &'static str {
        match self {
            CongestionControl::Cubic => "cubic",
            CongestionControl::Reno => "reno",
            CongestionControl::Bbr2 => "bbr2",
        }
    }
}

/// The `relay.buffer_size` values a configuration may set.
pub const RELAY_BUFFER_RANGE: std::ops::RangeInclusive<usize> = 4 << 10..=16 << 20;

/// Why `bytes` is not a `relay.buffer_size`, or None when it is one.
pub fn relay_buffer_out_of_range(bytes: u64) -> Option<String> {
    let r = RELAY_BUFFER_RANGE;
    (!usize::try_from(bytes).is_ok_and(|n| r.contains(&n))).then(|| {
        let b = |n: usize| units::ByteSize(n as u64);
        format!(
            "{} is outside {} ..= {}",
            units::ByteSize(bytes),
            b(*r.start()),
            b(*r.end())
        )
    })
}

/// RawSocket relay settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySettings {
    /// Largest RawSocket frame payload accepted, 512 B ..= 16 MiB.
    pub max_frame: u32,
    /// Read buffer per local connection, [`RELAY_BUFFER_RANGE`].
    pub buffer_size: usize,
    /// A link whose local socket has taken no byte for this long while bytes wait for it is
    /// reset with `Stalled` (0x07).
    pub stall_timeout: Duration,
    /// Bytes that links holding connection credit (their relay buffer full, more unread in
    /// quiche) may hold together; past it the longest-holding links are reset. Default: half of
    /// `quic.initial_connection_window`.
    pub stall_budget: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            max_frame: 16 << 20,
            buffer_size: 64 << 10,
            stall_timeout: Duration::from_secs(30),
            stall_budget: 64 << 20,
        }
    }
}

/// How many shards run and where (`shards`, `cpus`). Whether the CPUs are in the process's
/// affinity mask is checked when the node starts (`shard::placement`), not here: the mask
/// belongs to the process that runs, not to the host `rlinkd check` runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSettings {
    /// `shards`; `None`: as many as `cpus` lists, else one per CPU of the affinity mask.
    pub count: Option<usize>,
    /// `cpus`: shard `i` runs on `cpus[i]`; `None`: the affinity mask's CPUs in order.
    pub cpus: Option<Vec<usize>>,
}

/// The admin endpoint (`[admin]`): `/metrics`, `/healthz`, `/readyz` over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// `listen`: a loopback address unless `allow_remote` is set.
    pub listen: SocketAddr,
    /// `allow_remote`: serve on a non-loopback address (the metrics name peers, routes and
    /// endpoints: keep them off the network unless something in front guards them).
    pub allow_remote: bool,
}

/// The I/O backend (`io`). Whatever is chosen, a shard whose kernel lacks something the
/// io_uring backend needs runs on mio, and says why in the log.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// mio for now (io_uring cost more CPU per byte in the benchmark; docs/ARCHITECTURE.md);
    /// the probe still runs, so the log says whether io_uring would work.
    #[default]
    Auto,
    /// io_uring; mio only if the kernel cannot run it (logged as a warning).
    Uring,
    /// mio (epoll) only.
    Mio,
}

impl IoMode {
    pub const ALL: [IoMode; 3] = [IoMode::Auto, IoMode::Uring, IoMode::Mio];

    pub fn name(&self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Mio => "mio",
        }
    }
}

/// Another node. Without `connect` this node only accepts that peer's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub connect: Option<SocketAddr>,
}

/// A local endpoint a router dials to reach `route` on node `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub peer: String,
    pub listen: LocalAddr,
    pub route: String,
    /// Mode, owner and group of a Unix endpoint's socket file (refused on TCP endpoints).
    pub socket: SocketAccess,
    /// A TCP endpoint on an address other than loopback is refused unless this is set.
    pub allow_remote: bool,
}

/// How log lines are written: `text` for people (the default), `json` (one object per line,
/// fields as keys) for log collectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn name(&self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where streams arriving for route `name` are delivered on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub connect: LocalAddr,
}

impl NodeConfig {
    /// Reads, parses and validates the file at `path`, then checks what it names on this host
    /// ([`NodeConfig::check_files`]). Relative paths in the file are resolved against its folder.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let source = std::path::absolute(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let text = std::fs::read_to_string(&source).map_err(|e| ConfigError::Io {
            path: source.clone(),
            source: e,
        })?;
        let base = source.parent().unwrap_or(Path::new("/")).to_path_buf();
        let config = Self::parse(&text, &source, &base)?;
        config.check_files()?;
        Ok(config)
    }

    /// Parses and validates TOML text; relative paths are resolved against `base_dir`. Does not
    /// look at the file system; `source` is left empty.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<NodeConfig, ConfigError> {
        let mut config = Self::parse(text, Path::new("<config>"), base_dir)?;
        config.source = PathBuf::new();
        Ok(config)
    }

    /// Checks what the configuration names on this host, as `rlinkd check` and `rlinkd run`
    /// both do: `quic.cert`, `quic.key` and `quic.ca` are readable files, the certificate is
    /// valid now, names this node and was issued by the CA, the key is its key and private,
    /// every Unix link endpoint can be created without deleting anything but a stale socket and
    /// its owner and group exist, and no route reaches a link endpoint through a symbolic link.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.check_readable()?;
        self.certificate_report()?;
        self.check_link_paths()?;
        self.check_link_access()?;
        self.check_route_paths()
    }

    fn check_readable(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("quic.cert", &self.quic.cert),
            ("quic.key", &self.quic.key),
            ("quic.ca", &self.quic.ca),
        ] {
            // Opening (not just stat) catches unreadable files, e.g. a key owned by another user.
            let is_file = std::fs::File::open(path)
                .and_then(|f| f.metadata())
                .map(|m| m.is_file());
            match is_file {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!("{}: not a regular file", path.display());
                    return Err(ConfigError::invalid(key, message));
                }
                Err(e) => {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{}: {e}", path.display()),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The certificate, key and CA (`crate::cert::check`): a node started with another node's
    /// certificate, a key that is not its key or a certificate the CA did not issue would be
    /// refused by every peer, or worse, taken for another node. Returns what the certificate
    /// says, with warnings (an expiry within 30 days) for `check` to print and `run` to log.
    pub fn certificate_report(&self) -> Result<crate::cert::check::CertificateReport, ConfigError> {
        crate::cert::check::check(&self.node, &self.quic)
            .map_err(|e| ConfigError::invalid(e.key, e.message))
    }

    /// Owners and groups of Unix link endpoints must exist on this host (they are applied when
    /// `run` binds).
    fn check_link_access(&self) -> Result<(), ConfigError> {
        for (i, l) in self.links.iter().enumerate() {
            crate::ops::endpoint::resolve(&l.socket)
                .map_err(|e| ConfigError::invalid(format!("links[{i}].{}", e.key), e.message))?;
        }
        Ok(())
    }

    /// Nothing but a stale socket may be at a Unix link endpoint, and its folder must exist
    /// (see `docs/CONFIG.md`); the same rule `rlinkd run` applies when it binds.
    fn check_link_paths(&self) -> Result<(), ConfigError> {
        for (i, l) in self.links.iter().enumerate() {
            if let LocalAddr::Unix(p) = &l.listen {
                crate::io::local::check_socket_path(p).map_err(|e| {
                    ConfigError::invalid(format!("links[{i}].listen"), e.to_string())
                })?;
            }
        }
        Ok(())
    }

    /// `validate` compares Unix paths as text; here symbolic links are followed too.
    fn check_route_paths(&self) -> Result<(), ConfigError> {
        for (i, r) in self.routes.iter().enumerate() {
            let LocalAddr::Unix(target) = &r.connect else {
                continue;
            };
            let target = loops::resolved(target);
            for (j, l) in self.links.iter().enumerate() {
                if let LocalAddr::Unix(listen) = &l.listen {
                    if loops::resolved(listen) == target {
                        return Err(validate::loop_error(i, &r.connect, j, &l.listen));
                    }
                }
            }
        }
        Ok(())
    }

    /// The tracing filter to install: `RUST_LOG` when set and not empty, else `log_level`.
    /// `RUST_LOG` follows the rule of `log_level` ([`validate_log_filter`]), so that neither can
    /// silence the node by accident.
    pub fn log_filter(&self) -> Result<String, ConfigError> {
        match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => validate_log_filter(&v)
                .map(|()| v)
                .map_err(|m| ConfigError::invalid("RUST_LOG (environment)", m)),
            _ => Ok(self.log_level.clone()),
        }
    }

    /// `RLINKD_URING_WAIT_CAP` (a duration, e.g. `10ms`): the longest an io_uring shard waits
    /// in one `io_uring_enter`, and the shard yields its thread between turns. Not for
    /// production: for running the node under valgrind, whose 3.19 does not treat
    /// `io_uring_enter` as a blocking system call and keeps its global lock through the wait,
    /// so no other thread (signals, supervisor, admin) runs while a shard waits. With it, the
    /// room each local read on the ring is given is zeroed first: valgrind cannot see the
    /// kernel's writes through the ring and would take the bytes read for uninitialised.
    /// Unset, empty or not a duration: no cap (an invalid value is named in a warning).
    pub fn uring_wait_cap(&self) -> Option<Duration> {
        let v = std::env::var("RLINKD_URING_WAIT_CAP").ok()?;
        if v.trim().is_empty() {
            return None;
        }
        match humantime::parse_duration(v.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("RLINKD_URING_WAIT_CAP={v:?} ignored: {e}");
                None
            }
        }
    }

    fn parse(text: &str, source: &Path, base: &Path) -> Result<NodeConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let config = resolve(file, source, base)?;
        config.validate()?;
        Ok(config)
    }
}

/// Turns the file model into runtime types: applies defaults, resolves addresses and paths.
/// Errors here are about single values; cross-field rules are in `validate.rs`.
fn resolve(file: FileConfig, source: &Path, base: &Path) -> Result<NodeConfig, ConfigError> {
    let q = file.quic;
    let mut quic = QuicSettings::new(
        socket_addr("quic.listen", &q.listen)?,
        base.join(&q.cert),
        base.join(&q.key),
        base.join(&q.ca),
    );
    let dur = |v: Option<DurationValue>, default: Duration| v.map_or(default, |d| d.0);
    quic.idle_timeout = dur(q.idle_timeout, quic.idle_timeout);
    quic.keepalive_interval = dur(q.keepalive_interval, quic.keepalive_interval);
    quic.connect_timeout = dur(q.connect_timeout, quic.connect_timeout);
    quic.redial_min = dur(q.redial_min, quic.redial_min);
    quic.redial_max = dur(q.redial_max, quic.redial_max);
    if let Some(n) = q.max_udp_payload {
        // Out-of-range values are reported by validate(); saturate rather than wrap.
        quic.max_udp_payload = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let size = |v: Option<units::ByteSize>, default: u64| v.map_or(default, |s| s.0);
    quic.initial_stream_window = size(q.initial_stream_window, quic.initial_stream_window);
    quic.max_stream_window = size(q.max_stream_window, quic.max_stream_window);
    quic.initial_connection_window =
        size(q.initial_connection_window, quic.initial_connection_window);
    quic.max_connection_window = size(q.max_connection_window, quic.max_connection_window);
    quic.max_streams = q.max_streams.unwrap_or(quic.max_streams);
    quic.congestion_control = q.congestion_control.unwrap_or(quic.congestion_control);
    quic.gso = q.gso.unwrap_or(quic.gso);
    quic.gro = q.gro.unwrap_or(quic.gro);
    quic.steering = q.steering.unwrap_or(quic.steering);

    let mut relay = RelaySettings::default();
    if let Some(s) = file.relay.max_frame {
        relay.max_frame = u32::try_from(s.0).map_err(|_| {
            ConfigError::invalid(
                "relay.max_frame",
                format!("{s} is above the RawSocket limit of 16 MiB"),
            )
        })?;
    }
    if let Some(s) = file.relay.buffer_size {
        relay.buffer_size = usize::try_from(s.0).unwrap_or(usize::MAX);
    }
    relay.stall_timeout = dur(file.relay.stall_timeout, relay.stall_timeout);
    // By default half the connection window: the other half always stays for links that keep up.
    relay.stall_budget = size(file.relay.stall_budget, quic.initial_connection_window / 2);

    let peers = file
        .peers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let connect = match p.connect {
                Some(a) => Some(socket_addr(&format!("peers[{i}].connect"), &a)?),
                None => None,
            };
            Ok(PeerConfig {
                name: p.name,
                connect,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let links = file
        .links
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            Ok(LinkConfig {
                peer: l.peer,
                listen: local_addr(&format!("links[{i}].listen"), &l.listen, base)?,
                route: l.route,
                socket: SocketAccess {
                    mode: l.socket_mode,
                    owner: l.socket_owner,
                    group: l.socket_group,
                },
                allow_remote: l.allow_remote.unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let routes = file
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RouteConfig {
                name: r.name,
                connect: local_addr(&format!("routes[{i}].connect"), &r.connect, base)?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;

    // Out-of-range values are reported by validate(); saturate rather than wrap.
    let index = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let shards = ShardSettings {
        count: file.shards.map(index),
        cpus: file.cpus.map(|c| c.into_iter().map(index).collect()),
    };

    let admin = match file.admin {
        Some(a) => Some(AdminSettings {
            listen: socket_addr("admin.listen", &a.listen)?,
            allow_remote: a.allow_remote.unwrap_or(false),
        }),
        None => None,
    };

    Ok(NodeConfig {
        node: file.node,
        log_level: file
            .log_level
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
        stats_interval: match file.stats_interval {
            None => Some(DEFAULT_STATS_INTERVAL),
            Some(d) if d.0.is_zero() => None,
            Some(d) => Some(d.0),
        },
        drain_timeout: dur(file.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
        log_format: file.log_format.unwrap_or_default(),
        quic,
        relay,
        peers,
        links,
        routes,
        shards,
        admin,
        io: file.io.unwrap_or_default(),
        source: source.to_path_buf(),
    })
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| ConfigError::invalid(key, format!("{text:?} resolves to no address"))),
        Err(e) => Err(ConfigError::invalid(
            key,
            format!("{text:?} is not a host:port address ({e})"),
        )),
    }
}

fn local_addr(key: &str, text: &str, base: &Path) -> Result<LocalAddr, ConfigError> {
    text.parse::<LocalAddr>()
        .map(|a| a.relative_to(base))
        .map_err(|e| ConfigError::invalid(key, e.to_string()))
}

#[cfg(test)]
mod tests;
