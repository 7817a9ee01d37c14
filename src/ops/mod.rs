//! Running rlinkd as a service: systemd readiness notifications ([`notify`]), user and group
//! names for endpoint sockets ([`ids`]), the permissions of Unix link endpoints
//! ([`endpoint`]), what `--version` reports ([`version`]), and the log with its reloadable filter
//! ([`log`]).

pub mod endpoint;
pub mod ids;
pub mod log;
pub mod notify;
pub mod version;
