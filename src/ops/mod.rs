//! Running rlinkd as a service: user and group names for endpoint sockets ([`ids`]) and the
//! permissions of Unix link endpoints ([`endpoint`]).

pub mod endpoint;
pub mod ids;
