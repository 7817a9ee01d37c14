//! Who may use a link endpoint: the mode, owner and group of a Unix socket (`socket_mode`,
//! `socket_owner`, `socket_group`), and `allow_remote` for a TCP endpoint that is not on
//! loopback. A link endpoint carries whatever connects to it to a peer router with this node's
//! identity, so by default only loopback and the socket's owner and group can reach it.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{ConfigError, LinkConfig};
use crate::addr::LocalAddr;

/// The mode a Unix link endpoint gets when `socket_mode` is not set: owner and group may
/// connect (connecting needs write permission), others may not.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Permission bits for a Unix socket file, `"0660"` (octal text) or an integer (TOML `0o660`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketMode(pub u32);

const MODE_HINT: &str =
    "write the permission bits in octal as a string, e.g. \"0660\", or as 0o660";

impl std::str::FromStr for SocketMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SocketMode, String> {
        let t = s.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        if digits.is_empty()
            || digits.len() > 4
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(format!("invalid socket mode {s:?}: {MODE_HINT}"));
        }
        // At most 4 octal digits: fits in u32.
        let mode = u32::from_str_radix(digits, 8).unwrap_or(u32::MAX);
        SocketMode::checked(mode.into()).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl SocketMode {
    /// Permission bits only: set-user-id, set-group-id and sticky mean nothing on a socket.
    fn checked(mode: u64) -> Result<SocketMode, String> {
        if mode > 0o777 {
            return Err(format!(
                "{mode:#o} is not a set of permission bits (0 ..= 0o777); {MODE_HINT}"
            ));
        }
        Ok(SocketMode(mode as u32))
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SocketMode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a socket mode such as \"0660\" or 0o660")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SocketMode, E> {
                SocketMode::checked(v).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SocketMode, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("socket mode {v} is negative; {MODE_HINT}")))?;
                self.visit_u64(v)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketMode, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A user or group as written: a name (`"rlinkd"`) or a numeric id (`998` or `"998"`).
/// Names are looked up on the host by `check` and `run`, not when the file is parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdSpec(pub String);

impl fmt::Display for IdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user or group name, or a numeric id")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdSpec, E> {
                u32::try_from(v)
                    .map(|id| IdSpec(id.to_string()))
                    .map_err(|_| E::custom(format!("id {v} is above {}", u32::MAX)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdSpec, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("id must not be negative, got {v}")))?;
                self.visit_u64(v)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdSpec, E> {
                if v.is_empty() {
                    return Err(E::custom("must not be empty"));
                }
                Ok(IdSpec(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The mode, owner and group a Unix link endpoint's socket file gets after bind. `None` keeps
/// the default (mode [`DEFAULT_SOCKET_MODE`], owner and group of the rlinkd process).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketAccess {
    pub mode: Option<SocketMode>,
    pub owner: Option<IdSpec>,
    pub group: Option<IdSpec>,
}

impl SocketAccess {
    /// The mode the socket gets.
    pub fn mode(&self) -> u32 {
        self.mode.map_or(DEFAULT_SOCKET_MODE, |m| m.0)
    }
}

/// Whether `ip` only reaches this host (127.0.0.0/8, ::1, and ::ffff:127.x.y.z).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The rules of one `[[links]]` entry about who may reach its endpoint.
pub(crate) fn validate_link(i: usize, l: &LinkConfig) -> Result<(), ConfigError> {
    match &l.listen {
        LocalAddr::Tcp(a) => {
            for (key, set) in [
                ("socket_mode", l.socket.mode.is_some()),
                ("socket_owner", l.socket.owner.is_some()),
                ("socket_group", l.socket.group.is_some()),
            ] {
                if set {
                    return Err(ConfigError::invalid(
                        format!("links[{i}].{key}"),
                        format!(
                            "only for unix: endpoints; {} is a TCP endpoint, which has no \
                             file permissions",
                            l.listen
                        ),
                    ));
                }
            }
            if !is_loopback(a.ip()) && !l.allow_remote {
                return Err(ConfigError::invalid(
                    format!("links[{i}].listen"),
                    format!(
                        "{} is not a loopback address: anyone who can reach it could open links \
                         to peer {:?} as this node; use a loopback or unix: endpoint, or set \
                         allow_remote = true on this link if a firewall keeps others out",
                        l.listen, l.peer
                    ),
                ));
            }
        }
        LocalAddr::Unix(_) => {
            if l.allow_remote {
                return Err(ConfigError::invalid(
                    format!("links[{i}].allow_remote"),
                    "only for tcp: endpoints; a unix: endpoint is never remote (use \
                     socket_mode, socket_owner and socket_group)",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes_parse_as_octal_text_or_integers() {
        assert_eq!("0660".parse::<SocketMode>(), Ok(SocketMode(0o660)));
        assert_eq!("600".parse::<SocketMode>(), Ok(SocketMode(0o600)));
        assert_eq!("0o770".parse::<SocketMode>(), Ok(SocketMode(0o770)));
        for bad in ["", "rw-rw----", "0668", "04660", "1777", "0x1b6", "-660"] {
            let e = bad.parse::<SocketMode>().unwrap_err();
            assert!(e.contains("\"0660\""), "{bad}: {e}");
        }
        assert_eq!(SocketMode(0o660).to_string(), "0660");
        assert_eq!(SocketMode(0o7).to_string(), "0007");
    }

    #[test]
    fn loopback_includes_mapped_addresses() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
