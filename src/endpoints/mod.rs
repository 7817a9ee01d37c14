//! Built-in RawSocket endpoints with blocking std I/O and threads: an [`EchoRouter`] standing in
//! for a Crossbar router, and a [`RawSocketClient`] standing in for an rlink dialer. Used by the
//! demo, the integration tests and the benchmark; not by the relay's data path.

pub mod client;
pub mod router;
pub mod stream;

pub use client::{ClientError, ClientReceiver, ClientSender, ProtocolError, RawSocketClient};
pub use router::{EchoRouter, RouterBehaviour, RouterMode, RouterOptions, RouterStats};
pub use stream::{LocalListener, LocalStream};

#[cfg(test)]
mod tests;
