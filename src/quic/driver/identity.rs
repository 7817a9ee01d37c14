//! The peer's identity from its certificate, and a closed connection's reason, for logs.

use std::collections::HashSet;

use super::{Conn, Direction};
use crate::quic::codes::describe_close;
use crate::quic::tls::certificate_names;

pub(super) fn verify_identity(c: &Conn, allowed: &HashSet<String>) -> Result<String, String> {
    let Some(der) = c.quic.peer_cert() else {
        return Err("no certificate presented".to_string());
    };
    let names = certificate_names(der);
    match (&c.peer, c.direction) {
        (Some(expected), Direction::Outgoing) => {
            if names.iter().any(|n| n == expected) {
                Ok(expected.clone())
            } else {
                Err(format!(
                    "dialed peer {expected:?} but its certificate names {names:?}"
                ))
            }
        }
        _ => names
            .iter()
            .find(|n| allowed.contains(*n))
            .cloned()
            .ok_or_else(|| {
                format!("certificate names {names:?}, none of which is a configured peer")
            }),
    }
}

pub(super) fn close_reason(c: &Conn) -> String {
    if let Some(e) = c.quic.peer_error() {
        format!("closed by peer: {}", describe_close(e))
    } else if let Some(e) = c.quic.local_error() {
        format!("closed here: {}", describe_close(e))
    } else if c.quic.is_timed_out() {
        if c.is_established() {
            "idle timeout: no packets from the peer".to_string()
        } else {
            "handshake timed out: no answer from the peer".to_string()
        }
    } else {
        "closed".to_string()
    }
}
