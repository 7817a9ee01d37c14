//! Whether a route target is one of this node's own link endpoints, however it is spelled.
//!
//! A route into the node's own link endpoint sends every stream from a peer back into rlinkd,
//! which opens a new stream to the peer, and so on: two nodes created about 6,000 links a second
//! until they ran out of file descriptors. Comparing the addresses as written is not enough:
//! `tcp:0.0.0.0:P` listens on every local address, so `tcp:127.0.0.1:P`, `tcp:localhost:P`, or an
//! interface address reach it; connecting to `0.0.0.0` or `[::]` reaches the loopback address;
//! `unix:/run/x/../x/b.sock` or a symbolic link is the same socket as `unix:/run/x/b.sock`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Component, Path, PathBuf};

use crate::addr::LocalAddr;

/// Whether connecting to `target` would reach a listener bound to `listen`. `is_local` says
/// whether an address belongs to this host (see [`is_local_ip`]).
pub(crate) fn reaches(
    listen: &LocalAddr,
    target: &LocalAddr,
    is_local: &dyn Fn(IpAddr) -> bool,
) -> bool {
    match (listen, target) {
        (LocalAddr::Tcp(l), LocalAddr::Tcp(t)) => tcp_reaches(*l, *t, is_local),
        (LocalAddr::Unix(l), LocalAddr::Unix(t)) => lexical(l) == lexical(t),
        _ => false,
    }
}

fn tcp_reaches(listen: SocketAddr, target: SocketAddr, is_local: &dyn Fn(IpAddr) -> bool) -> bool {
    if listen.port() != target.port() || listen.port() == 0 {
        return false;
    }
    let l = canonical_ip(listen.ip());
    // Linux sends a connect to the unspecified address to the loopback address.
    let t = match canonical_ip(target.ip()) {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match l {
        // 0.0.0.0 accepts on every local IPv4 address.
        IpAddr::V4(a) if a.is_unspecified() => t.is_ipv4() && is_local(t),
        // [::] accepts on every local address of both families (Linux's default dual stack;
        // assuming it also errs on the side of reporting a loop).
        IpAddr::V6(a) if a.is_unspecified() => is_local(t),
        _ => l == t,
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it maps.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is an address of this host: the kernel lets a socket bind only to those (all
/// of 127.0.0.0/8 included), so a bind to port 0 answers exactly, without listing interfaces.
pub(crate) fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind((ip, 0)).is_ok()
}

/// The path with `.` and `..` resolved as text (`..` of the root is the root).
pub(crate) fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The path a socket at `p` really has: symbolic links (also a dangling last component) and
/// `..` are followed through the file system as far as it exists; the rest is taken as text.
pub(crate) fn resolved(p: &Path) -> PathBuf {
    let mut p = lexical(p);
    // A bound on link chains, as the kernel's (40) has.
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(target) => {
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                p = lexical(&dir.join(target));
            }
            Err(_) => break,
        }
    }
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => match std::fs::canonicalize(dir) {
            Ok(dir) => dir.join(name),
            Err(_) => p,
        },
        _ => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> LocalAddr {
        LocalAddr::Tcp(s.parse().unwrap())
    }

    fn unix(s: &str) -> LocalAddr {
        LocalAddr::Unix(s.into())
    }

    /// This host for the tests: loopback plus one interface address.
    fn local(ip: IpAddr) -> bool {
        ip.is_loopback() || ip == "10.1.2.3".parse::<IpAddr>().unwrap()
    }

    #[test]
    fn every_local_spelling_of_a_tcp_endpoint_is_a_loop() {
        for (listen, target) in [
            ("127.0.0.1:7", "127.0.0.1:7"),
            ("127.0.0.1:7", "0.0.0.0:7"),
            ("127.0.0.1:7", "[::ffff:127.0.0.1]:7"),
            ("0.0.0.0:7", "127.0.0.1:7"),
            ("0.0.0.0:7", "127.0.0.2:7"),
            ("0.0.0.0:7", "0.0.0.0:7"),
            ("0.0.0.0:7", "10.1.2.3:7"),
            ("[::]:7", "[::1]:7"),
            ("[::]:7", "127.0.0.1:7"),
            ("[::]:7", "[::]:7"),
            ("[::1]:7", "[::]:7"),
            ("10.1.2.3:7", "10.1.2.3:7"),
        ] {
            assert!(
                reaches(&tcp(listen), &tcp(target), &local),
                "{listen} <- {target}"
            );
        }
    }

    #[test]
    fn other_ports_addresses_and_hosts_are_not_loops() {
        for (listen, target) in [
            ("127.0.0.1:7", "127.0.0.1:8"),
            ("127.0.0.1:7", "127.0.0.2:7"),
            ("127.0.0.1:7", "[::1]:7"),
            ("0.0.0.0:7", "[::1]:7"),
            ("0.0.0.0:7", "10.9.9.9:7"),
            ("[::]:7", "10.9.9.9:7"),
            ("10.1.2.3:7", "127.0.0.1:7"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            assert!(
                !reaches(&tcp(listen), &tcp(target), &local),
                "{listen} <- {target}"
            );
        }
        assert!(!reaches(&tcp("127.0.0.1:7"), &unix("/x"), &local));
    }

    #[test]
    fn unix_paths_are_compared_after_dot_and_dot_dot() {
        assert!(reaches(
            &unix("/run/x/b.sock"),
            &unix("/run/x/./b.sock"),
            &local
        ));
        assert!(reaches(
            &unix("/run/x/b.sock"),
            &unix("/run/y/../x/b.sock"),
            &local
        ));
        assert!(reaches(
            &unix("/run//x/b.sock"),
            &unix("/run/x/b.sock"),
            &local
        ));
        assert!(!reaches(
            &unix("/run/x/b.sock"),
            &unix("/run/x/c.sock"),
            &local
        ));
    }

    #[test]
    fn the_kernel_knows_which_addresses_are_local() {
        assert!(is_local_ip("127.0.0.1".parse().unwrap()));
        assert!(is_local_ip("127.3.4.5".parse().unwrap()));
        assert!(is_local_ip("0.0.0.0".parse().unwrap()));
        // TEST-NET-3 (RFC 5737) is never assigned to a real host.
        assert!(!is_local_ip("203.0.113.77".parse().unwrap()));
    }

    #[test]
    fn resolved_follows_symbolic_links_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("alias")).unwrap();
        // A link to a socket that does not exist yet (the node creates it at run time).
        std::os::unix::fs::symlink("real/b.sock", dir.path().join("b-link.sock")).unwrap();
        let want = std::fs::canonicalize(&real).unwrap().join("b.sock");
        assert_eq!(resolved(&real.join("b.sock")), want);
        assert_eq!(resolved(&dir.path().join("alias/b.sock")), want);
        assert_eq!(resolved(&dir.path().join("b-link.sock")), want);
        assert_eq!(resolved(&dir.path().join("alias/../real/b.sock")), want);
    }
}
