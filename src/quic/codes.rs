//! Application error codes carried by RESET_STREAM / STOP_SENDING (per link) and by
//! CONNECTION_CLOSE (per node pair). Written down in docs/PROTOCOL.md; mapped from internal errors
//! here and nowhere else.

/// Why a stream (one rlink) was reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum StreamCode {
    /// The stream's preamble names a route the receiving node does not have.
    UnknownRoute = 0x01,
    /// The receiving node could not connect to the route's target (refused, missing socket,
    /// timeout).
    RouteUnreachable = 0x02,
    /// The preamble is malformed or of an unsupported version.
    BadPreamble = 0x03,
    /// A RawSocket rule was broken on this link (bad handshake, reserved bits, frame over the
    /// announced limit).
    RawSocketViolation = 0x04,
    /// The local connection on the sending node failed (reset by the router or client, I/O error).
    LocalAbort = 0x05,
    /// The sending node is shutting down.
    Shutdown = 0x06,
    /// The local socket on the sending node took no byte for `relay.stall_timeout` while bytes
    /// waited for it (or stalled links exceeded `relay.stall_budget`): the link was reset so it
    /// cannot hold the connection's flow-control credit.
    Stalled = 0x07,
    /// A reload removed what the link depends on from the sending node's configuration: its
    /// route (acceptor) or its link endpoint (dialer: no endpoint leads to its peer and route
    /// any more).
    Removed = 0x08,
}

impl StreamCode {
    /// The code's name in metrics labels (`reason` of `rlinkd_links_closed_total`).
    pub fn metric_name(self) -> &'static str {
        match self {
            StreamCode::UnknownRoute => "unknown_route",
            StreamCode::RouteUnreachable => "route_unreachable",
            StreamCode::BadPreamble => "bad_preamble",
            StreamCode::RawSocketViolation => "rawsocket_violation",
            StreamCode::LocalAbort => "local_abort",
            StreamCode::Shutdown => "shutdown",
            StreamCode::Stalled => "stalled",
            StreamCode::Removed => "removed",
        }
    }

    pub fn from_code(code: u64) -> Option<StreamCode> {
        Some(match code {
            0x01 => StreamCode::UnknownRoute,
            0x02 => StreamCode::RouteUnreachable,
            0x03 => StreamCode::BadPreamble,
            0x04 => StreamCode::RawSocketViolation,
            0x05 => StreamCode::LocalAbort,
            0x06 => StreamCode::Shutdown,
            0x07 => StreamCode::Stalled,
            0x08 => StreamCode::Removed,
            _ => return None,
        })
    }

    pub fn describe(code: u64) -> String {
        match StreamCode::from_code(code) {
            Some(c) => format!("{c:?} (0x{code:02x})"),
            None => format!("unknown code 0x{code:x}"),
        }
    }
}

/// Why a connection was closed by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ConnCode {
    /// Orderly shutdown of a node.
    Shutdown = 0x00,
    /// The peer's certificate does not name a configured peer.
    UnknownPeer = 0x10,
    /// A newer connection from the same peer replaced this one: this one did not answer a
    /// liveness probe.
    Superseded = 0x11,
    /// The peer is already connected (in this direction) and its connection answered a
    /// liveness probe: two processes hold the same identity.
    DuplicateIdentity = 0x12,
    /// A reload removed this peer from the closing node's configuration.
    PeerRemoved = 0x13,
}

/// Names of the TLS alerts a failed handshake reports (QUIC carries them as 0x100 + alert).
pub fn tls_alert_name(alert: u8) -> &'static str {
    match alert {
        10 => "unexpected_message",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        109 => "missing_extension",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "other",
    }
}

/// A readable account of a CONNECTION_CLOSE, for logs. The reason phrase is the peer's (an
/// unauthenticated one, during a handshake): it is quoted and escaped, so it cannot forge a
/// line or a field of the log.
pub fn describe_close(err: &quiche::ConnectionError) -> String {
    let reason = if err.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", crate::logsafe::EscapedBytes(&err.reason))
    };
    if err.is_app {
        let name = match err.error_code {
            0x00 => "shutdown",
            0x10 => "certificate does not name a configured peer",
            0x11 => "superseded by a newer connection",
            0x12 => "duplicate identity: this peer is already connected",
            0x13 => "peer removed from the configuration by a reload",
            _ => "application error",
        };
        format!("{name} (app 0x{:x}){reason}", err.error_code)
    } else if (0x100..0x200).contains(&err.error_code) {
        let alert = (err.error_code - 0x100) as u8;
        format!("TLS alert {alert} {}{reason}", tls_alert_name(alert))
    } else {
        format!("transport error 0x{:x}{reason}", err.error_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_codes_round_trip() {
        for c in [
            StreamCode::UnknownRoute,
            StreamCode::RouteUnreachable,
            StreamCode::BadPreamble,
            StreamCode::RawSocketViolation,
            StreamCode::LocalAbort,
            StreamCode::Shutdown,
            StreamCode::Stalled,
            StreamCode::Removed,
        ] {
            assert_eq!(StreamCode::from_code(c as u64), Some(c));
        }
        assert_eq!(StreamCode::from_code(0), None);
        assert!(StreamCode::describe(0x99).contains("unknown"));
    }

    #[test]
    fn tls_alerts_are_named() {
        let e = quiche::ConnectionError {
            is_app: false,
            error_code: 0x100 + 48,
            reason: vec![],
        };
        assert_eq!(describe_close(&e), "TLS alert 48 unknown_ca");
    }

    #[test]
    fn a_peer_reason_cannot_forge_a_log_line() {
        let e = quiche::ConnectionError {
            is_app: true,
            error_code: 0,
            reason: b"bye\n2026-12-01T00:00:00Z  INFO forged peer=x\x1b[2K\xff".to_vec(),
        };
        let d = describe_close(&e);
        assert_eq!(
            d,
            "shutdown (app 0x0): \"bye\\n2026-12-01T00:00:00Z  INFO forged peer=x\\u{1b}[2K\\xff\""
        );
        assert!(!d.contains(['\n', '\r', '\x1b']));
    }
}
