//! Local RawSocket connections (routers on this host) over Unix or TCP sockets, non-blocking,
//! registered with mio.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

    /// Bytes written to the socket that its reader has not taken yet (`SIOCOUTQ`; for TCP, not
    /// yet acknowledged by the peer).
    pub fn queued_in_kernel(&self) -> io::Result<u64> {
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int through the pointer, which points at `n` for the
        // call's duration; the descriptor is this socket's.
        let r = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n.max(0) as u64)
    }

    /// Whether the other end has shut down its write side (or closed): `poll` with
    /// `POLLRDHUP` and no wait. Bytes it wrote before may still be in the socket.
    pub fn peer_shut_down(&self) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the call's duration and the count says one; the
        // descriptor is this socket's; a zero timeout never blocks.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
    }

    /// Sets TCP_NODELAY: frames are written whole and should leave at once.
    pub fn tune(&self) {
        if let LocalStream::Tcp(s) = self {
            s.set_nodelay(true).ok();
        }
    }

    /// The socket, for calls that need only a shared reference (`&LocalStream` reads and writes).
    fn sock_ref(&self) -> socket2::SockRef<'_> {
        match self {
            LocalStream::Tcp(s) => socket2::SockRef::from(s),
            LocalStream::Unix(s) => socket2::SockRef::from(s),
        }
    }

    /// `recv(2)` into `buf`: `read`'s results.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.sock_ref()).read(buf)
    }

    /// `send(2)` from `bytes` (`MSG_NOSIGNAL`): `write`'s results.
    pub fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        (&*self.sock_ref()).write(bytes)
    }

    /// Receives at most `max` bytes straight into `buf`'s spare capacity (no zeroing first),
    /// appending them; `read`'s results.
    pub fn recv_into_spare(&self, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        let max = max.min(spare.len());
        let n = self.sock_ref().recv(&mut spare[..max])?;
        debug_assert!(n <= max);
        // SAFETY: recv(2) wrote `n` bytes (at most `max`, within the spare capacity) at the
        // buffer's end, so the first `len + n` bytes are initialised.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

impl AsRawFd for LocalStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            LocalStream::Tcp(s) => s.as_raw_fd(),
            LocalStream::Unix(s) => s.as_raw_fd(),
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

/// A listening link endpoint. A Unix listener removes its socket file when dropped, if the file
/// is still the socket it created.
#[derive(Debug)]
pub enum LocalListener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

impl LocalListener {
    /// Binds `addr`. For a Unix path, [`prepare_socket_path`] decides what may be there first:
    /// nothing (its folder must exist), or a stale socket, which is replaced.
    pub fn bind(addr: &LocalAddr) -> io::Result<LocalListener> {
        match addr {
            LocalAddr::Tcp(a) => Ok(LocalListener::Tcp(TcpListener::bind(*a)?)),
            LocalAddr::Unix(p) => {
                prepare_socket_path(p)?;
                let l = UnixListener::bind(p)?;
                let file = SocketFile::created_at(p)?;
                Ok(LocalListener::Unix(l, file))
            }
        }
    }

    /// Accepts one connection; `Err(WouldBlock)` when none is queued.
    pub fn accept(&self) -> io::Result<LocalStream> {
        match self {
            LocalListener::Tcp(l) => l.accept().map(|(s, _)| LocalStream::Tcp(s)),
            LocalListener::Unix(l, _) => l.accept().map(|(s, _)| LocalStream::Unix(s)),
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
            LocalListener::Unix(l, _) => l.register(registry, token, interests),
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
            LocalListener::Unix(l, _) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            LocalListener::Tcp(l) => l.deregister(registry),
            LocalListener::Unix(l, _) => l.deregister(registry),
        }
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let LocalListener::Unix(_, file) = self {
            file.remove();
        }
    }
}

/// A link endpoint's listeners for `shards` shards, `[i]` for shard `i`. TCP: one listener per
/// shard on the same port (SO_REUSEPORT; the kernel spreads connections by hash), the first
/// taking the port when the address says 0. Unix: one listener, shard 0's, which hands
/// connections to the shards in turn (a Unix socket has no reuseport group).
pub fn bind_for_shards(addr: &LocalAddr, shards: usize) -> io::Result<Vec<Option<LocalListener>>> {
    let LocalAddr::Tcp(tcp) = addr else {
        let mut v: Vec<Option<LocalListener>> = (0..shards).map(|_| None).collect();
        v[0] = Some(LocalListener::bind(addr)?);
        return Ok(v);
    };
    if shards == 1 {
        return Ok(vec![Some(LocalListener::bind(addr)?)]);
    }
    if tcp.port() != 0 {
        // A plain bind fails on a port anyone listens on; without this check a second rlinkd
        // with the same config would join the group (same user) and take connections.
        drop(TcpListener::bind(*tcp)?);
    }
    let mut at = *tcp;
    let mut out = Vec::with_capacity(shards);
    for _ in 0..shards {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        let l = TcpListener::from_std(socket.into());
        at = l.local_addr()?;
        out.push(Some(LocalListener::Tcp(l)));
    }
    Ok(out)
}

/// What is at a Unix socket path before rlinkd binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketPath {
    /// Nothing, and its folder exists: `bind` will create the socket.
    Free,
    /// A socket file (live or stale: [`prepare_socket_path`] tells them apart).
    Socket,
}

/// The rule for what may be at a path rlinkd is about to bind, without touching anything:
/// nothing (in an existing folder) or a socket file. A regular file, a directory, a symbolic
/// link (even to a socket) or anything else is an error, because it is not ours to delete; a
/// missing folder is an error too, because rlinkd does not choose the mode and owner of folders
/// that decide who may connect (create it, e.g. with systemd `RuntimeDirectory=`).
pub fn check_socket_path(path: &Path) -> io::Result<SocketPath> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(SocketPath::Socket),
        Ok(meta) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is {}, not a socket; rlinkd replaces only a stale socket file and leaves this \
                 alone (move it away or choose another path)",
                path.display(),
                describe(meta.file_type())
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(SocketPath::Free),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "directory {} does not exist; rlinkd does not create it (its mode \
                         decides who may connect): create it first",
                        dir.display()
                    ),
                )),
                Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
            }
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Makes `path` ready for `bind` under the rule of [`check_socket_path`]; the one side effect
/// is removing a stale socket: a socket file on which connecting is refused (nobody listens).
/// A live socket (it accepts, or its backlog is full) gives `AddrInUse`, so two processes never
/// steal each other's endpoint.
pub fn prepare_socket_path(path: &Path) -> io::Result<()> {
    if check_socket_path(path)? == SocketPath::Free {
        return Ok(());
    }
    if socket_is_live(path)? {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a live listener", path.display()),
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Connects without blocking: a listener with a full backlog would make a blocking connect wait.
fn socket_is_live(path: &Path) -> io::Result<bool> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    match sock.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Ok(false),
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => Ok(true),
            _ => Err(io::Error::new(
                e.kind(),
                format!(
                    "{}: cannot tell whether this socket is in use ({e}); leaving it alone",
                    path.display()
                ),
            )),
        },
    }
}

fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device or other special file"
    }
}

/// The socket file a listener created, identified by device and inode, so that it is removed
/// only while it is still that file (never a file someone put there after us).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Records the socket `bind` just created at `path`.
    pub fn created_at(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still our socket; otherwise (or if it is gone) does nothing.
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.file_type().is_socket() && meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Both listeners (the node's, and the built-in routers' in `endpoints`) share one rule.
    fn bind_both(path: &Path) -> [io::Result<()>; 2] {
        let addr = LocalAddr::Unix(path.to_path_buf());
        [
            LocalListener::bind(&addr).map(drop),
            crate::endpoints::LocalListener::bind(&addr).map(drop),
        ]
    }

    fn assert_refused(path: &Path, kind: io::ErrorKind, needle: &str) {
        for (which, r) in ["io::local", "endpoints"].iter().zip(bind_both(path)) {
            let e = r.expect_err(which);
            assert_eq!(e.kind(), kind, "{which}: {e}");
            assert!(e.to_string().contains(needle), "{which}: {e}");
        }
    }

    #[test]
    fn a_regular_file_at_the_path_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        std::fs::write(&path, "precious").unwrap();
        assert_refused(
            &path,
            io::ErrorKind::AlreadyExists,
            "a regular file, not a socket",
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[test]
    fn a_symlink_at_the_path_is_left_alone_even_to_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("b.sock");
        symlink(&target, &link).unwrap();
        assert_refused(&link, io::ErrorKind::AlreadyExists, "a symbolic link");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let link2 = dir.path().join("c.sock");
        symlink(&stale, &link2).unwrap();
        assert_refused(&link2, io::ErrorKind::AlreadyExists, "a symbolic link");
        assert!(std::fs::symlink_metadata(&link2).unwrap().is_symlink());
        assert!(stale.exists());

        let dangling = dir.path().join("d.sock");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert_refused(&dangling, io::ErrorKind::AlreadyExists, "a symbolic link");
    }

    #[test]
    fn a_directory_at_the_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b.sock");
        std::fs::create_dir(&sub).unwrap();
        assert_refused(&sub, io::ErrorKind::AlreadyExists, "a directory");
        assert!(sub.is_dir());
    }

    #[test]
    fn a_missing_folder_is_an_error_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/rlinkd/b.sock");
        assert_refused(&path, io::ErrorKind::NotFound, "does not exist");
        assert!(!dir.path().join("run").exists());
        assert_eq!(
            check_socket_path(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert_refused(
            &file.join("b.sock"),
            io::ErrorKind::NotADirectory,
            "Not a directory",
        );
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert_eq!(check_socket_path(&path).unwrap(), SocketPath::Socket);
        let addr = LocalAddr::Unix(path.clone());
        let l = LocalListener::bind(&addr).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(l);
        assert!(!path.exists(), "the listener removes its own socket file");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let l = crate::endpoints::LocalListener::bind(&addr).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(l);

        let live = LocalListener::bind(&LocalAddr::Unix(path.clone())).unwrap();
        assert_refused(&path, io::ErrorKind::AddrInUse, "in use");
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn a_live_listener_with_a_full_backlog_is_not_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let sock =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        sock.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
        sock.listen(0).unwrap();
        // Fill the backlog with non-blocking connects until the kernel says EAGAIN.
        let mut queued = Vec::new();
        for _ in 0..64 {
            let c =
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            c.set_nonblocking(true).unwrap();
            let full = c.connect(&socket2::SockAddr::unix(&path).unwrap()).is_err();
            queued.push(c);
            if full {
                break;
            }
        }
        assert_refused(&path, io::ErrorKind::AddrInUse, "in use");
        assert!(path.exists());
    }

    #[test]
    fn a_socket_file_replaced_by_someone_else_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let l = LocalListener::bind(&LocalAddr::Unix(path.clone())).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(l);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }
}
