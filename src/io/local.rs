//! Local RawSocket connections (routers on this host) over Unix or TCP sockets, non-blocking,
//! registered with mio.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::Path;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::addr::LocalAddr;

/// A connected local socket.
#[derive(Debug)]
pub enum LocalStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl LocalStream {
    /// Starts a non-blocking connect. For TCP the result is known when the socket turns
    /// writable ([`LocalStream::finish_connect`]); a Unix connect completes or fails at once.
    pub fn connect(addr: &LocalAddr) -> io::Result<LocalStream> {
        match addr {
            LocalAddr::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                Ok(LocalStream::Tcp(s))
            }
            LocalAddr::Unix(p) => Ok(LocalStream::Unix(UnixStream::connect(p)?)),
        }
    }

    /// After a writable event on a connecting socket: Ok(true) when connected, Ok(false) when
    /// still in progress, Err when the connect failed.
    pub fn finish_connect(&self) -> io::Result<bool> {
        let (err, peer) = match self {
            LocalStream::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            LocalStream::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = err {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.shutdown(Shutdown::Write),
            LocalStream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Stops reading: a Unix peer's further writes fail (EPIPE), a TCP peer's are discarded.
    pub fn shutdown_read(&self) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.shutdown(Shutdown::Read),
            LocalStream::Unix(s) => s.shutdown(Shutdown::Read),
        }
    }

    /// Sets TCP_NODELAY: frames are written whole and should leave at once.
    pub fn tune(&self) {
        if let LocalStream::Tcp(s) = self {
            s.set_nodelay(true).ok();
        }
    }
}

impl Read for LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => s.read(buf),
            LocalStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => s.write(buf),
            LocalStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for LocalStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.register(registry, token, interests),
            LocalStream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.reregister(registry, token, interests),
            LocalStream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.deregister(registry),
            LocalStream::Unix(s) => s.deregister(registry),
        }
    }
}

/// A listening link endpoint.
#[derive(Debug)]
pub enum LocalListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl LocalListener {
    /// Binds `addr`. A Unix socket file left by an earlier run is removed first, but only if
    /// nothing accepts on it (so two nodes cannot steal each other's endpoint).
    pub fn bind(addr: &LocalAddr) -> io::Result<LocalListener> {
        match addr {
            LocalAddr::Tcp(a) => Ok(LocalListener::Tcp(TcpListener::bind(*a)?)),
            LocalAddr::Unix(p) => {
                remove_stale_socket(p)?;
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Ok(LocalListener::Unix(UnixListener::bind(p)?))
            }
        }
    }

    /// Accepts one connection; `Err(WouldBlock)` when none is queued.
    pub fn accept(&self) -> io::Result<LocalStream> {
        match self {
            LocalListener::Tcp(l) => l.accept().map(|(s, _)| LocalStream::Tcp(s)),
            LocalListener::Unix(l) => l.accept().map(|(s, _)| LocalStream::Unix(s)),
        }
    }
}

impl Source for LocalListener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            LocalListener::Tcp(l) => l.register(registry, token, interests),
            LocalListener::Unix(l) => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            LocalListener::Tcp(l) => l.reregister(registry, token, interests),
            LocalListener::Unix(l) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            LocalListener::Tcp(l) => l.deregister(registry),
            LocalListener::Unix(l) => l.deregister(registry),
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another process", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}
