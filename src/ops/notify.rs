//! systemd's readiness protocol (`sd_notify`): a datagram of `KEY=VALUE` lines sent to the Unix
//! socket named by `$NOTIFY_SOCKET`.
//!
//! A unit with `Type=notify` counts the service as started only when `READY=1` arrives, so units
//! ordered after rlinkd (the routers) start once every link endpoint exists. `STOPPING=1` tells
//! systemd a stop is under way (the node drains), `RELOADING=1` that a reload started (systemd
//! 253 and later also want `MONOTONIC_USEC`, the monotonic clock at that moment, to match the
//! `READY=1` that ends it). Without `$NOTIFY_SOCKET` (not started by systemd) every call does
//! nothing.
//!
//! The protocol is one `sendto` per message, so it is written here instead of pulling in a crate.
//! The variable is read here, not in `config/`: it is the service manager's side channel, not part
//! of the node's configuration, and it is the same for every command.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::OnceLock;

/// Where notifications go: `$NOTIFY_SOCKET`, a path (`/run/systemd/notify`) or an abstract
/// socket name (`@...`).
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, `Ok(None)` when it is unset or empty.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(Path::new(&v)).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `target`: an absolute path, or `@name` for the abstract namespace.
    pub fn new(target: &Path) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = target.as_os_str().as_bytes();
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        } else if bytes.starts_with(b"/") {
            SocketAddr::from_pathname(target)?
        } else {
            // systemd only ever sets these two forms; anything else is not its socket.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={} is neither an absolute path nor @abstract",
                    target.display()
                ),
            ));
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends `state`, newline-separated `KEY=VALUE` assignments, in one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// The process's notifier, opened on first use; `None` without `$NOTIFY_SOCKET` or when it
/// cannot be used (logged once).
fn global() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER
        .get_or_init(|| match Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; systemd will not hear from rlinkd");
                None
            }
        })
        .as_ref()
}

/// Whether `$NOTIFY_SOCKET` names a usable socket (rlinkd runs under a `Type=notify` unit).
pub fn enabled() -> bool {
    global().is_some()
}

fn notify(state: &str) {
    if let Some(n) = global() {
        // A lost notification must not stop the node; systemd's start timeout will say it.
        if let Err(e) = n.send(state) {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }
}

/// Every endpoint is bound: the node is ready for routers. `status` is shown by
/// `systemctl status`.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// The node started to stop (drain). Call once, at the start of the drain.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining");
}

/// A reload started; send [`ready`] when it is done.
pub fn reloading() {
    notify(&reloading_message(monotonic_usec()));
}

/// `RELOADING=1` with the monotonic clock in microseconds, which systemd 253 and later use to
/// match the reload with the `READY=1` that ends it (older versions ignore it).
fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with
/// (`Instant` uses the same clock on Linux but does not expose its value).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer, which is a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A STATUS value ends at the newline, which would start the next assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(&path).unwrap();
        n.send("READY=1\nSTATUS=x").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=x");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rlinkd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(Path::new(&format!("@{name}"))).unwrap();
        n.send("STOPPING=1").unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_target() {
        assert!(Notifier::new(Path::new("notify.sock")).is_err());
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let m = reloading_message(monotonic_usec());
        let usec: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(m.starts_with("RELOADING=1\n") && usec > 0, "{m}");
        assert_eq!(one_line("a\nb"), "a b");
    }
}
