//! The portable datagram backend: a non-blocking UDP socket registered with mio, sending with
//! `sendmsg` + `UDP_SEGMENT` (GSO) and receiving with `recvmsg` + `UDP_GRO`.
//!
//! GSO is probed by setting the option and switched off for this socket at run time when the
//! kernel refuses a segmented send with EIO or EINVAL (the batch is then resent datagram by
//! datagram). Errors other than WouldBlock are counted and logged at most once a minute; they
//! never reach the caller, because QUIC recovers lost datagrams.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::cmsg::{self, CmsgBuf, UDP_GRO, UDP_SEGMENT};
use super::syscalls::{self, Syscall};
use super::{DatagramIo, DatagramStats, RecvMeta, SendError, Transmit};

/// The kernel's limit on segments in one GSO send (UDP_MAX_SEGMENTS).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO send over IPv4 (65,535 - IP and UDP headers).
pub const MAX_GSO_BYTES: usize = 65_507;
/// Socket buffer size asked for (forced as root); bulk QUIC on loopback drops datagrams with the
/// 208 KiB default.
const SOCKET_BUFFER: usize = 8 << 20;

/// What the kernel let this socket do, decided when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpCapabilities {
    pub gso: bool,
    pub gro: bool,
}

pub struct UdpSocket {
    io: mio::net::UdpSocket,
    local: SocketAddr,
    gso_segments: usize,
    gro: bool,
    stats: DatagramStats,
    last_error_log: Option<Instant>,
}

impl UdpSocket {
    /// Binds `addr` and enables what is asked for and available: GSO when `want_gso`, GRO when
    /// `want_gro`.
    pub fn bind(addr: SocketAddr, want_gso: bool, want_gro: bool) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(false).ok();
        }
        socket.bind(&SockAddr::from(addr))?;
        Self::from_bound(socket, want_gso, want_gro)
    }

    /// Makes a bound UDP socket (e.g. a shard's socket of a reuseport group, `io::steer`) a
    /// datagram backend: non-blocking, large buffers, GSO/GRO as for [`UdpSocket::bind`].
    pub fn from_bound(socket: Socket, want_gso: bool, want_gro: bool) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        set_buffer_sizes(&socket);
        // Probe GSO by setting the option, then clear it: a non-zero UDP_SEGMENT socket option
        // would segment every later send that carries no cmsg of its own.
        let gso = want_gso
            && set_int_option(&socket, libc::SOL_UDP, UDP_SEGMENT, 1200).is_ok()
            && set_int_option(&socket, libc::SOL_UDP, UDP_SEGMENT, 0).is_ok();
        let gro = want_gro && set_int_option(&socket, libc::SOL_UDP, UDP_GRO, 1).is_ok();
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("UDP socket has no IP address"))?;
        // Queue ICMP errors (e.g. port unreachable when a peer process dies) for recv_error.
        set_int_option(&socket, libc::SOL_IP, libc::IP_RECVERR, 1).ok();
        if local.is_ipv6() {
            set_int_option(&socket, libc::SOL_IPV6, libc::IPV6_RECVERR, 1).ok();
        }
        // SAFETY: `into_raw_fd` hands over sole ownership of a valid open UDP socket.
        let std_socket = unsafe { std::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
        Ok(UdpSocket {
            io: mio::net::UdpSocket::from_std(std_socket),
            local,
            gso_segments: if gso { MAX_GSO_SEGMENTS } else { 1 },
            gro,
            stats: DatagramStats::default(),
            last_error_log: None,
        })
    }

    pub fn capabilities(&self) -> UdpCapabilities {
        UdpCapabilities {
            gso: self.gso_segments > 1,
            gro: self.gro,
        }
    }

    /// The mio source, to register with a `Poll`.
    pub fn source(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.io
    }

    fn sendmsg(
        &self,
        transmit: &Transmit<'_>,
        segment_size: Option<u16>,
        contents: &[u8],
    ) -> io::Result<()> {
        let addr = SockAddr::from(transmit.to);
        let mut iov = libc::iovec {
            iov_base: contents.as_ptr() as *mut libc::c_void,
            iov_len: contents.len(),
        };
        let mut control = CmsgBuf::default();
        // SAFETY: msghdr is plain data; every pointer field is set below or left null.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(size) = segment_size {
            msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = cmsg::encode_udp_segment(&mut control, size) as _;
        }
        syscalls::count(Syscall::UdpSendmsg);
        // SAFETY: `msg` points to `addr`, `iov` (over `contents`) and `control`, all alive until
        // sendmsg returns; the kernel only reads them.
        let rc = unsafe { libc::sendmsg(self.io.as_raw_fd(), &msg, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One `recvmsg` into `data` with `flags`; `parse` reads the result (length, the filled
    /// msghdr with its control messages, the address) while the buffers it points to are alive.
    fn recvmsg_with<T>(
        &self,
        data: &mut [u8],
        flags: libc::c_int,
        parse: impl FnOnce(usize, &libc::msghdr, &libc::sockaddr_storage) -> T,
    ) -> io::Result<T> {
        // SAFETY: sockaddr_storage and msghdr are plain data, valid when zeroed.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = CmsgBuf::default();
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = &mut storage as *mut _ as *mut libc::c_void;
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.0.len() as _;
        syscalls::count(if flags & libc::MSG_ERRQUEUE != 0 {
            Syscall::UdpErrqueue
        } else {
            Syscall::UdpRecvmsg
        });
        // SAFETY: every pointer in `msg` refers to a live local (`storage`, `iov` over `data`,
        // `control`) of the length given; the kernel writes within those lengths.
        let rc = unsafe { libc::recvmsg(self.io.as_raw_fd(), &mut msg, flags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(parse(rc as usize, &msg, &storage))
    }

    fn log_error(&mut self, what: &str, err: &io::Error) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_error_log = Some(now);
            tracing::warn!(error = %err, "UDP {what} failed (further errors counted, logged at most once a minute)");
        }
    }
}

impl DatagramIo for UdpSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn max_gso_segments(&self) -> usize {
        self.gso_segments
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (len, segment_size, from) = self.recvmsg_with(buf, 0, |len, msg, storage| {
            // SAFETY: `msg` was just filled by recvmsg and its control buffer is alive.
            let segment = unsafe { cmsg::decode_gro_segment(msg) }.unwrap_or(len);
            (len, segment, sockaddr_to_std(storage))
        })?;
        let from = from.ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
        let meta = RecvMeta {
            from,
            len,
            segment_size: segment_size.max(1),
        };
        self.stats.recv_calls += 1;
        self.stats.datagrams_received += meta.segments() as u64;
        self.stats.bytes_received += len as u64;
        Ok(meta)
    }

    fn send(&mut self, transmit: &Transmit<'_>) -> io::Result<()> {
        let contents = transmit.contents;
        let segments = contents.len().div_ceil(transmit.segment_size.max(1));
        let use_gso = segments > 1 && self.gso_segments > 1;
        if segments > 1 && !use_gso {
            return self.send_one_by_one(transmit);
        }
        let segment = use_gso.then_some(transmit.segment_size as u16);
        match self.sendmsg(transmit, segment, contents) {
            Ok(()) => {
                self.stats.send_calls += 1;
                self.stats.datagrams_sent += segments as u64;
                self.stats.bytes_sent += contents.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e)
                if use_gso && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) =>
            {
                tracing::warn!(error = %e, "kernel refused a GSO send: sending one datagram per call from now on");
                self.gso_segments = 1;
                self.stats.gso_fallbacks += 1;
                self.send_one_by_one(transmit)
            }
            Err(e) => {
                self.stats.send_errors += 1;
                self.log_error("send", &e);
                Ok(())
            }
        }
    }

    fn stats(&self) -> DatagramStats {
        self.stats
    }

    fn recv_error(&mut self) -> io::Result<Option<SendError>> {
        let mut data = [0u8; 64];
        let report = self.recvmsg_with(&mut data, libc::MSG_ERRQUEUE, |_, msg, storage| {
            // SAFETY: `msg` was just filled by recvmsg(MSG_ERRQUEUE) and its control buffer is
            // alive.
            let ee = unsafe { cmsg::decode_extended_err(msg) }?;
            let to = sockaddr_to_std(storage)?;
            let port_unreachable = (ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                && ee.ee_type == 3
                && ee.ee_code == 3)
                || (ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6 && ee.ee_type == 1 && ee.ee_code == 4);
            Some(SendError {
                to,
                errno: ee.ee_errno as i32,
                port_unreachable,
            })
        });
        match report {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl UdpSocket {
    /// Sends a batch without GSO. A WouldBlock part-way drops the rest of the batch: QUIC treats
    /// it as loss, which is rare (8 MiB socket buffer) and cheaper than tracking a partial batch.
    fn send_one_by_one(&mut self, transmit: &Transmit<'_>) -> io::Result<()> {
        let mut first = true;
        for chunk in transmit.contents.chunks(transmit.segment_size.max(1)) {
            match self.sendmsg(transmit, None, chunk) {
                Ok(()) => {
                    self.stats.send_calls += 1;
                    self.stats.datagrams_sent += 1;
                    self.stats.bytes_sent += chunk.len() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && first => return Err(e),
                Err(e) => {
                    self.stats.send_errors += 1;
                    self.log_error("send", &e);
                    return Ok(());
                }
            }
            first = false;
        }
        Ok(())
    }
}

/// Asks for [`SOCKET_BUFFER`] bytes of receive and send buffer (forced when the process may,
/// i.e. has CAP_NET_ADMIN), reads back what the kernel granted, logs it, and warns when the
/// kernel capped a buffer: without privileges it allows at most `net.core.rmem_max` /
/// `net.core.wmem_max`, and a small receive buffer drops datagrams under load.
fn set_buffer_sizes(socket: &Socket) {
    for (force, normal) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int_option(
            socket,
            libc::SOL_SOCKET,
            force,
            SOCKET_BUFFER as libc::c_int,
        )
        .is_err()
        {
            set_int_option(
                socket,
                libc::SOL_SOCKET,
                normal,
                SOCKET_BUFFER as libc::c_int,
            )
            .ok();
        }
    }
    // Linux reports twice the size it grants (the other half is its bookkeeping allowance).
    let granted = |r: io::Result<usize>| r.map(|n| n / 2).unwrap_or(0);
    let (recv, send) = (
        granted(socket.recv_buffer_size()),
        granted(socket.send_buffer_size()),
    );
    tracing::info!(
        recv_buffer = recv,
        send_buffer = send,
        asked = SOCKET_BUFFER,
        "UDP socket buffers"
    );
    for (what, got, sysctl) in [
        ("receive", recv, "net.core.rmem_max"),
        ("send", send, "net.core.wmem_max"),
    ] {
        if got < SOCKET_BUFFER {
            tracing::warn!(
                "UDP {what} buffer is {got} bytes, below the {SOCKET_BUFFER} asked: the kernel \
                 caps it at {sysctl}; raise it (sysctl -w {sysctl}={SOCKET_BUFFER}) or datagrams \
                 may be dropped under load"
            );
        }
    }
}

fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is large enough for.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_blocking(sock: &mut UdpSocket, buf: &mut [u8]) -> RecvMeta {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match sock.recv(buf) {
                Ok(m) => return m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    #[test]
    fn gso_batch_arrives_whole_with_gro_or_as_datagrams_without() {
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), true, true).unwrap();
        let mut b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), true, true).unwrap();
        let payload: Vec<u8> = (0..10 * 1200 + 100).map(|i| (i % 251) as u8).collect();
        a.send(&Transmit {
            to: b.local_addr(),
            contents: &payload,
            segment_size: 1200,
        })
        .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let mut segments = 0;
        while got.len() < payload.len() {
            let meta = recv_blocking(&mut b, &mut buf);
            assert_eq!(meta.from, a.local_addr());
            assert!(meta.segment_size == 1200 || meta.len <= 1200);
            segments += meta.segments();
            got.extend_from_slice(&buf[..meta.len]);
        }
        assert_eq!(got, payload);
        assert_eq!(segments, 11);
        assert_eq!(a.stats().datagrams_sent, 11);
    }

    #[test]
    fn without_gso_a_batch_is_sent_datagram_by_datagram() {
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap();
        let mut b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap();
        assert_eq!(a.max_gso_segments(), 1);
        let payload = vec![7u8; 3000];
        a.send(&Transmit {
            to: b.local_addr(),
            contents: &payload,
            segment_size: 1400,
        })
        .unwrap();
        let mut buf = vec![0u8; 65_536];
        let lens: Vec<usize> = (0..3)
            .map(|_| recv_blocking(&mut b, &mut buf).len)
            .collect();
        assert_eq!(lens, vec![1400, 1400, 200]);
        assert_eq!(a.stats().send_calls, 3);
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;
    use crate::io::syscalls::{self, Syscall};

    /// Every call is counted, WouldBlock included (the kernel was entered), each under its kind;
    /// a batch without GSO is one sendmsg per datagram.
    #[test]
    fn every_socket_call_is_counted_would_block_included() {
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap();
        let mut b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap();
        let before = syscalls::current();
        let mut buf = vec![0u8; 65_536];
        let e = b.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(b.recv_error().unwrap(), None);
        a.send(&Transmit {
            to: b.local_addr(),
            contents: &[1u8; 3000],
            segment_size: 1400,
        })
        .unwrap();
        let after = syscalls::current();
        let grew = |c| after.get(c) - before.get(c);
        assert_eq!(grew(Syscall::UdpRecvmsg), 1);
        assert_eq!(grew(Syscall::UdpErrqueue), 1);
        assert_eq!(grew(Syscall::UdpSendmsg), 3);
        assert_eq!(after.total() - before.total(), 5);
        // DatagramStats still counts successful calls only.
        assert_eq!((a.stats().send_calls, b.stats().recv_calls), (3, 0));
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    /// A single datagram bigger than the GSO probe size leaves as one datagram.
    #[test]
    fn a_single_large_datagram_is_not_segmented() {
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), true, false).unwrap();
        let mut b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap();
        let payload = vec![9u8; 1452];
        a.send(&Transmit {
            to: b.local_addr(),
            contents: &payload,
            segment_size: 1452,
        })
        .unwrap();
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match b.recv(&mut buf) {
                Ok(m) => {
                    assert_eq!(m.len, 1452, "the datagram was split");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// More segments than the kernel takes in one GSO send: the batch must still arrive whole,
    /// datagram by datagram, and GSO is switched off for the socket.
    #[test]
    fn a_refused_gso_batch_is_resent_one_datagram_at_a_time() {
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), true, false).unwrap();
        let mut b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap();
        if a.max_gso_segments() == 1 {
            eprintln!("skipped: no GSO on this kernel");
            return;
        }
        let payload: Vec<u8> = (0..200 * 100).map(|i| (i / 100) as u8).collect();
        a.send(&Transmit {
            to: b.local_addr(),
            contents: &payload,
            segment_size: 100,
        })
        .unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < payload.len() && Instant::now() < deadline {
            match b.recv(&mut buf) {
                Ok(m) => {
                    assert_eq!(m.len, 100);
                    got.extend_from_slice(&buf[..m.len]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payload);
        assert_eq!(a.max_gso_segments(), 1);
        assert_eq!(a.stats().gso_fallbacks, 1);
    }
}
