//! The serde model of the TOML file: exactly what users write, nothing resolved yet.
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting. Optional keys are `Option`s; their defaults live in one place,
//! the runtime types' constructors in `mod.rs`.

use serde::Deserialize;

use super::endpoint::{IdSpec, SocketMode};
use super::units::{ByteSize, DurationValue};
use super::{CongestionControl, LogFormat};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub node: String,
    pub log_level: Option<String>,
    pub stats_interval: Option<DurationValue>,
    pub drain_timeout: Option<DurationValue>,
    // Operations (issue 10): how logs are written.
    pub log_format: Option<LogFormat>,
    pub quic: FileQuic,
    #[serde(default)]
    pub relay: FileRelay,
    #[serde(default)]
    pub peers: Vec<FilePeer>,
    #[serde(default)]
    pub links: Vec<FileLink>,
    #[serde(default)]
    pub routes: Vec<FileRoute>,

    // Shards of the thread-per-core engine.
    pub shards: Option<u64>,
    pub cpus: Option<Vec<u64>>,

    // The admin endpoint (metrics, health, readiness).
    pub admin: Option<FileAdmin>,

    // The I/O backend.
    pub io: Option<super::IoMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAdmin {
    pub listen: String,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileQuic {
    pub listen: String,
    pub cert: String,
    pub key: String,
    pub ca: String,
    pub idle_timeout: Option<DurationValue>,
    pub keepalive_interval: Option<DurationValue>,
    pub connect_timeout: Option<DurationValue>,
    pub redial_min: Option<DurationValue>,
    pub redial_max: Option<DurationValue>,
    pub max_udp_payload: Option<u64>,
    pub initial_stream_window: Option<ByteSize>,
    pub max_stream_window: Option<ByteSize>,
    pub initial_connection_window: Option<ByteSize>,
    pub max_connection_window: Option<ByteSize>,
    pub max_streams: Option<u64>,
    pub congestion_control: Option<CongestionControl>,
    pub gso: Option<bool>,
    pub gro: Option<bool>,
    pub steering: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRelay {
    pub max_frame: Option<ByteSize>,
    pub buffer_size: Option<ByteSize>,
    pub stall_timeout: Option<DurationValue>,
    pub stall_budget: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePeer {
    pub name: String,
    pub connect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLink {
    pub peer: String,
    pub listen: String,
    pub route: String,
    // Operations (issue 10): who may use the endpoint (see `endpoint.rs`).
    pub socket_mode: Option<SocketMode>,
    pub socket_owner: Option<IdSpec>,
    pub socket_group: Option<IdSpec>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRoute {
    pub name: String,
    pub connect: String,
}
