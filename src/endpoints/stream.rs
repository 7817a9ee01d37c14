//! A local stream or listener that is either TCP or a Unix socket, chosen by a [`LocalAddr`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use crate::addr::LocalAddr;
use crate::io::local::{prepare_socket_path, SocketFile};

/// A connected local stream.
#[derive(Debug)]
pub enum LocalStream {
    /// TCP (with `TCP_NODELAY` set by [`LocalStream::connect`]).
    Tcp(TcpStream),
    /// Unix stream socket.
    Unix(UnixStream),
}

impl LocalStream {
    /// Connects to `addr`.
    pub fn connect(addr: &LocalAddr) -> io::Result<Self> {
        match addr {
            LocalAddr::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Ok(LocalStream::Tcp(s))
            }
            LocalAddr::Unix(p) => Ok(LocalStream::Unix(UnixStream::connect(p)?)),
        }
    }

    /// Connects to `addr`, giving up on TCP after `timeout` (a Unix connect does not wait).
    pub fn connect_timeout(addr: &LocalAddr, timeout: Duration) -> io::Result<Self> {
        match addr {
            LocalAddr::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, timeout)?;
                s.set_nodelay(true)?;
                Ok(LocalStream::Tcp(s))
            }
            LocalAddr::Unix(_) => LocalStream::connect(addr),
        }
    }

    /// See [`TcpStream::set_read_timeout`]; `None` blocks forever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.set_read_timeout(timeout),
            LocalStream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// See [`TcpStream::set_write_timeout`]; `None` blocks forever.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.set_write_timeout(timeout),
            LocalStream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Shuts down the read, write or both halves (also wakes threads blocked on this socket).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.shutdown(how),
            LocalStream::Unix(s) => s.shutdown(how),
        }
    }

    /// Another handle to the same socket.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            LocalStream::Tcp(s) => LocalStream::Tcp(s.try_clone()?),
            LocalStream::Unix(s) => LocalStream::Unix(s.try_clone()?),
        })
    }

    /// Blocking or non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => s.set_nonblocking(nonblocking),
            LocalStream::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }
}

impl Read for LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Read for &LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).read(buf),
            LocalStream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).write(buf),
            LocalStream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).write_vectored(bufs),
            LocalStream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening local socket. A Unix listener removes its socket file when dropped, if the file
/// is still the socket it created.
#[derive(Debug)]
pub enum LocalListener {
    /// TCP listener.
    Tcp(TcpListener),
    /// Unix listener and the socket file it created.
    Unix(UnixListener, SocketFile),
}

impl LocalListener {
    /// Binds `addr`. A Unix path follows the node's rule ([`prepare_socket_path`]): only a
    /// stale socket file is replaced; a live one gives `AddrInUse`, anything else an error.
    pub fn bind(addr: &LocalAddr) -> io::Result<Self> {
        match addr {
            LocalAddr::Tcp(a) => Ok(LocalListener::Tcp(TcpListener::bind(a)?)),
            LocalAddr::Unix(p) => {
                prepare_socket_path(p)?;
                let l = UnixListener::bind(p)?;
                Ok(LocalListener::Unix(l, SocketFile::created_at(p)?))
            }
        }
    }

    /// The bound address (the real port for `tcp:...:0`).
    pub fn local_addr(&self) -> io::Result<LocalAddr> {
        match self {
            LocalListener::Tcp(l) => Ok(LocalAddr::Tcp(l.local_addr()?)),
            LocalListener::Unix(_, f) => Ok(LocalAddr::Unix(f.path().to_path_buf())),
        }
    }

    /// Accepts one connection; the stream is in blocking mode, TCP with `TCP_NODELAY`.
    pub fn accept(&self) -> io::Result<LocalStream> {
        let s = match self {
            LocalListener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                LocalStream::Tcp(s)
            }
            LocalListener::Unix(l, _) => LocalStream::Unix(l.accept()?.0),
        };
        s.set_nonblocking(false)?;
        Ok(s)
    }

    /// Blocking or non-blocking `accept`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            LocalListener::Tcp(l) => l.set_nonblocking(nonblocking),
            LocalListener::Unix(l, _) => l.set_nonblocking(nonblocking),
        }
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let LocalListener::Unix(_, f) = self {
            f.remove();
        }
    }
}
