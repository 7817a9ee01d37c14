//! A non-blocking benchmark connection: plain TCP or Unix (RawSocket as routers speak it today) or
//! TLS 1.3 over TCP with BoringSSL (the `tls` baseline).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use boring::ssl::{
    HandshakeError, MidHandshakeSslStream, SslAcceptor, SslConnector, SslFiletype, SslMethod,
    SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use mio::event::Source;
use mio::net::TcpStream;

use crate::addr::LocalAddr;
use crate::io::local::LocalStream;
use crate::ktls;

/// Certificate name the benchmark router presents on `tls`.
pub const ROUTER_NAME: &str = "router";

pub enum BenchStream {
    Plain(LocalStream),
    TlsHandshaking(Option<MidHandshakeSslStream<TcpStream>>),
    Tls(SslStream<TcpStream>),
    /// TLS 1.3 whose record layer runs in the kernel: plain reads and writes on the socket.
    Ktls(TcpStream),
}

/// TLS set-up for the `tls` transport, from certificates made by `rlinkd cert`.
pub fn tls_connector(ca: &Path) -> io::Result<SslConnector> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(io::Error::other)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(io::Error::other)?;
    b.set_ca_file(ca).map_err(io::Error::other)?;
    b.set_verify(SslVerifyMode::PEER);
    if ktls::ktls_available().is_ok() {
        ktls::prepare_context(&mut b).map_err(io::Error::other)?;
    }
    Ok(b.build())
}

pub fn tls_acceptor(cert: &Path, key: &Path) -> io::Result<SslAcceptor> {
    // mozilla_modern disables TLS 1.3 in boring; intermediate_v5 with 1.3 pinned is what we want.
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(io::Error::other)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(io::Error::other)?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(io::Error::other)?;
    b.set_certificate_chain_file(cert)
        .map_err(io::Error::other)?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(io::Error::other)?;
    // The bench never resumes sessions; no tickets keeps TLS settings identical on hosts with
    // and without kTLS (kTLS needs the first record after the handshake to be application data).
    b.set_options(SslOptions::NO_TICKET);
    if ktls::ktls_available().is_ok() {
        ktls::prepare_context(&mut b).map_err(io::Error::other)?;
    }
    Ok(b.build())
}

fn tls_result(
    r: Result<SslStream<TcpStream>, HandshakeError<TcpStream>>,
) -> io::Result<BenchStream> {
    match r {
        Ok(s) => offload(s),
        Err(HandshakeError::WouldBlock(mid)) => Ok(BenchStream::TlsHandshaking(Some(mid))),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// Hands a just-finished TLS connection to the kernel when kTLS works here, else keeps it in
/// user space (also when this connection can't be offloaded but the socket is still intact).
fn offload(s: SslStream<TcpStream>) -> io::Result<BenchStream> {
    if ktls::ktls_available().is_err() {
        return Ok(BenchStream::Tls(s));
    }
    let installed = ktls::KtlsKeys::from_stream(&s)
        .and_then(|keys| ktls::install(s.get_ref().as_raw_fd(), &keys));
    match installed {
        Ok(()) => Ok(BenchStream::Ktls(s.into_inner())),
        Err(e) if e.is_recoverable() => {
            tracing::warn!("kTLS not installed, staying in user space: {e}");
            Ok(BenchStream::Tls(s))
        }
        Err(e) => Err(io::Error::other(e)),
    }
}

impl BenchStream {
    /// Starts connecting to `addr`, with TLS when `tls` is given (TCP only).
    pub fn connect(addr: &LocalAddr, tls: Option<&SslConnector>) -> io::Result<BenchStream> {
        match (addr, tls) {
            (LocalAddr::Tcp(a), Some(c)) => {
                let s = TcpStream::connect(*a)?;
                s.set_nodelay(true)?;
                let ssl = c
                    .configure()
                    .map_err(io::Error::other)?
                    .into_ssl(ROUTER_NAME)
                    .map_err(io::Error::other)?;
                tls_result(ssl.connect(s))
            }
            (_, Some(_)) => Err(io::Error::other("TLS needs a TCP address")),
            (a, None) => {
                let s = LocalStream::connect(a)?;
                s.tune();
                Ok(BenchStream::Plain(s))
            }
        }
    }

    /// Wraps an accepted connection, starting the server side of TLS when `tls` is given.
    pub fn accepted(sock: LocalStream, tls: Option<&SslAcceptor>) -> io::Result<BenchStream> {
        sock.tune();
        match (sock, tls) {
            (LocalStream::Tcp(s), Some(a)) => tls_result(a.accept(s)),
            (_, Some(_)) => Err(io::Error::other("TLS needs TCP")),
            (s, None) => Ok(BenchStream::Plain(s)),
        }
    }

    /// Drives a TLS handshake; true once the stream carries data.
    pub fn handshake(&mut self) -> io::Result<bool> {
        if let BenchStream::TlsHandshaking(mid) = self {
            let Some(m) = mid.take() else {
                return Err(io::Error::other("TLS handshake failed"));
            };
            *self = tls_result(m.handshake())?;
        }
        Ok(!matches!(self, BenchStream::TlsHandshaking(_)))
    }

    fn tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            BenchStream::TlsHandshaking(Some(m)) => Some(m.get_mut()),
            BenchStream::Tls(s) => Some(s.get_mut()),
            BenchStream::Ktls(s) => Some(s),
            _ => None,
        }
    }
}

impl Read for BenchStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BenchStream::Plain(s) => s.read(buf),
            BenchStream::Tls(s) => s.read(buf),
            BenchStream::Ktls(s) => s.read(buf),
            BenchStream::TlsHandshaking(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for BenchStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BenchStream::Plain(s) => s.write(buf),
            BenchStream::Tls(s) => s.write(buf),
            BenchStream::Ktls(s) => s.write(buf),
            BenchStream::TlsHandshaking(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for BenchStream {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        match self {
            BenchStream::Plain(s) => s.register(r, t, i),
            other => other
                .tcp()
                .ok_or_else(|| io::Error::other("no socket"))?
                .register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        match self {
            BenchStream::Plain(s) => s.reregister(r, t, i),
            other => other
                .tcp()
                .ok_or_else(|| io::Error::other("no socket"))?
                .reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            BenchStream::Plain(s) => s.deregister(r),
            other => other
                .tcp()
                .ok_or_else(|| io::Error::other("no socket"))?
                .deregister(r),
        }
    }
}
