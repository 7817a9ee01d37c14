//! Local RawSocket endpoint addresses: `unix:/path` or `tcp:host:port`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a router connects to rlinkd (a link endpoint) or where rlinkd connects to a router
/// (a route target). Written `unix:/path/to.sock` or `tcp:127.0.0.1:19090`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LocalAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Why a local address string could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("expected `unix:/path` or `tcp:host:port`, got `{0}`")]
    MissingScheme(String),
    #[error("`{0}` is not host:port that resolves to an address")]
    BadTcp(String),
    #[error("unix socket path is empty")]
    EmptyPath,
}

impl LocalAddr {
    /// Resolves relative Unix paths against `base` (the config file's folder).
    pub fn relative_to(self, base: &Path) -> LocalAddr {
        match self {
            LocalAddr::Unix(p) if p.is_relative() => LocalAddr::Unix(base.join(p)),
            other => other,
        }
    }
}

impl FromStr for LocalAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddrError::EmptyPath);
            }
            Ok(LocalAddr::Unix(PathBuf::from(path)))
        } else if let Some(hostport) = s.strip_prefix("tcp:") {
            hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .map(LocalAddr::Tcp)
                .ok_or_else(|| AddrError::BadTcp(hostport.to_string()))
        } else {
            Err(AddrError::MissingScheme(s.to_string()))
        }
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Tcp(a) => write!(f, "tcp:{a}"),
            LocalAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            "tcp:127.0.0.1:80".parse::<LocalAddr>().unwrap(),
            LocalAddr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/x.sock".parse::<LocalAddr>().unwrap(),
            LocalAddr::Unix("/run/x.sock".into())
        );
        assert!(matches!(
            "127.0.0.1:80".parse::<LocalAddr>(),
            Err(AddrError::MissingScheme(_))
        ));
        assert_eq!("unix:".parse::<LocalAddr>(), Err(AddrError::EmptyPath));
        assert!(matches!(
            "tcp:nohost".parse::<LocalAddr>(),
            Err(AddrError::BadTcp(_))
        ));
    }

    #[test]
    fn relative_unix_paths_follow_the_config_file() {
        let a: LocalAddr = "unix:run/b.sock".parse().unwrap();
        assert_eq!(
            a.relative_to(Path::new("/etc/rlinkd")),
            LocalAddr::Unix("/etc/rlinkd/run/b.sock".into())
        );
    }
}
