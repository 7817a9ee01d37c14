//! kTLS: can the `tls` upper-layer protocol be attached to a TCP socket? Tried on a connected
//! loopback pair, since the kernel only accepts `TCP_ULP` on an established socket. `ENOENT`
//! means no `tls` module (`CONFIG_TLS` unset or the module not loadable).

use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use serde::Serialize;

use super::Support;

/// `TCP_ULP` (linux/tcp.h).
const TCP_ULP: libc::c_int = 31;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KtlsReport {
    /// `setsockopt(SOL_TCP, TCP_ULP, "tls")` on a connected loopback socket.
    pub tcp_ulp_tls: Support,
    /// `/proc/sys/net/ipv4/tcp_available_ulp`, when readable.
    pub available_ulp: Option<String>,
}

impl KtlsReport {
    pub fn available(&self) -> bool {
        self.tcp_ulp_tls.is_yes()
    }
}

pub fn detect() -> KtlsReport {
    let available_ulp = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .ok()
        .map(|s| s.trim().to_string());
    let tcp_ulp_tls = match attach_tls_ulp() {
        Ok(()) => Support::Yes,
        Err(e) => classify(&e),
    };
    KtlsReport {
        tcp_ulp_tls,
        available_ulp,
    }
}

/// The verdict for a `TCP_ULP` failure.
pub fn classify(e: &io::Error) -> Support {
    match e.raw_os_error() {
        Some(libc::ENOENT) => {
            Support::No("ENOENT: no kernel TLS module (CONFIG_TLS unset or not loadable)".into())
        }
        Some(libc::ENOPROTOOPT) => Support::No("ENOPROTOOPT: kernel without TCP_ULP".into()),
        Some(libc::EEXIST) => Support::Unknown("EEXIST: a ULP is already attached".into()),
        _ => Support::Unknown(format!("setsockopt(TCP_ULP): {e}")),
    }
}

fn attach_tls_ulp() -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    let name = b"tls";
    // SAFETY: passes a pointer to a live 3-byte buffer and its length; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_TCP,
            TCP_ULP,
            name.as_ptr() as *const libc::c_void,
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enoent_means_no_tls_module() {
        let s = classify(&io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(s, Support::No(ref why) if why.contains("CONFIG_TLS")));
    }

    #[test]
    fn probe_gives_a_verdict_without_error() {
        let r = detect();
        // Either answer is fine; an unexplained failure is not.
        assert!(
            matches!(r.tcp_ulp_tls, Support::Yes | Support::No(_)),
            "{:?}",
            r.tcp_ulp_tls
        );
    }
}
