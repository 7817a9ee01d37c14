//! Running rlinkd as a service: systemd readiness notifications ([`notify`]), user and group
//! names for endpoint sockets ([`ids`]), the permissions of Unix link endpoints
//! ([`endpoint`]), and what `--version` reports ([`version`]).

pub mod endpoint;
pub mod ids;
pub mod notify;
pub mod version;
