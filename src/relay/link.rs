//! A relayed rlink: a local socket (a router or an rlink client on this host) and the QUIC stream
//! that carries it to the peer node.

use std::io::{self, Read, Write};
use std::time::Instant;

use super::pipe::{Fill, Handshake, Opening, Pipe, PipeError};
use crate::io::local::LocalStream;
use crate::quic::driver::ConnId;
use crate::rawsocket::{realm_from_hello, HandshakeError, RouterReply, Serializer};

/// Which end of the rlink this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A router dialed one of this node's link endpoints; this node opens the stream.
    Dialer { peer: String, route: String },
    /// A stream arrived from a peer; this node dialed the route's target.
    Acceptor { peer: String, route: String },
}

impl Role {
    pub fn peer(&self) -> &str {
        match self {
            Role::Dialer { peer, .. } | Role::Acceptor { peer, .. } => peer,
        }
    }

    pub fn route(&self) -> &str {
        match self {
            Role::Dialer { route, .. } | Role::Acceptor { route, .. } => route,
        }
    }
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkEnd {
    #[error("closed by both ends")]
    Finished,
    #[error("local connection failed: {0}")]
    Local(io::Error),
    #[error("client sent a bad handshake: {0}")]
    ClientHandshake(HandshakeError),
    #[error("{0}")]
    Protocol(PipeError),
    #[error("stream reset by peer: {}", crate::quic::codes::StreamCode::describe(*.0))]
    PeerReset(u64),
    #[error("peer stopped reading: {}", crate::quic::codes::StreamCode::describe(*.0))]
    PeerStopped(u64),
    #[error("QUIC stream error: {0}")]
    Quic(quiche::Error),
}

/// The quiche stream a link is carried on, borrowed for one pump.
pub struct StreamRef<'a> {
    pub quic: &'a mut quiche::Connection,
    pub id: u64,
}

pub struct Link {
    pub role: Role,
    pub sock: LocalStream,
    /// Connection and stream, once the stream is open.
    pub stream: Option<(ConnId, u64)>,
    /// Local -> stream.
    pub from_local: Pipe,
    /// Stream -> local.
    pub to_local: Pipe,
    /// A TCP connect to the route's target is in progress (acceptor side).
    pub connecting: bool,
    /// When a link that waits (for its peer, its handshake, its route connect) gives up.
    pub deadline: Option<Instant>,
    pub opened: Instant,
    fin_sent: bool,
    /// The last pump queued stream data or a FIN (the node sends without delaying the ACK).
    pub wrote_stream: bool,
    /// The local socket may have bytes to read. Cleared by a read that returned less than it
    /// asked for (the socket was empty: with edge-triggered readiness, new bytes bring a new
    /// event), set again by the node on a readable event.
    pub local_readable: bool,
    /// The peer of the local socket has shut down its side (an event said so): read until EOF
    /// whatever the read sizes, since no further event will come.
    pub local_read_closed: bool,
    local_write_closed: bool,
    max_frame: u32,
    serializer: Option<Serializer>,
    realm: Option<String>,
    /// The first message towards the router has been looked at for a realm.
    realm_checked: bool,
    /// A client handshake was checked and the link may open its stream.
    client_ready: bool,
}

/// Counters of one link, for logs and the stats line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub to_router_frames: u64,
    pub to_router_bytes: u64,
    pub to_client_frames: u64,
    pub to_client_bytes: u64,
}

impl Link {
    pub fn new(role: Role, sock: LocalStream, buffer: usize, max_frame: u32, now: Instant) -> Link {
        let (from_local, to_local) = match role {
            Role::Dialer { .. } => (Opening::ClientRequest, Opening::RouterReply),
            Role::Acceptor { .. } => (Opening::RouterReply, Opening::ClientRequest),
        };
        Link {
            role,
            sock,
            stream: None,
            from_local: Pipe::new(buffer, from_local, max_frame),
            to_local: Pipe::new(buffer, to_local, max_frame),
            connecting: false,
            deadline: None,
            opened: now,
            fin_sent: false,
            wrote_stream: false,
            local_readable: true,
            local_read_closed: false,
            local_write_closed: false,
            max_frame,
            serializer: None,
            realm: None,
            realm_checked: false,
            client_ready: false,
        }
    }

    /// The client's handshake has been checked: a dialer may open its stream.
    pub fn client_ready(&self) -> bool {
        self.client_ready
    }

    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    pub fn counters(&self) -> LinkCounters {
        let (to_router, to_client) = self.directions();
        LinkCounters {
            to_router_frames: to_router.scanner().messages(),
            to_router_bytes: to_router.scanner().message_bytes(),
            to_client_frames: to_client.scanner().messages(),
            to_client_bytes: to_client.scanner().message_bytes(),
        }
    }

    fn directions(&self) -> (&Pipe, &Pipe) {
        match self.role {
            Role::Dialer { .. } => (&self.from_local, &self.to_local),
            Role::Acceptor { .. } => (&self.to_local, &self.from_local),
        }
    }

    fn to_router_mut(&mut self) -> &mut Pipe {
        match self.role {
            Role::Dialer { .. } => &mut self.from_local,
            Role::Acceptor { .. } => &mut self.to_local,
        }
    }

    fn to_client_mut(&mut self) -> &mut Pipe {
        match self.role {
            Role::Dialer { .. } => &mut self.to_local,
            Role::Acceptor { .. } => &mut self.from_local,
        }
    }

    fn on_handshake(&mut self, hs: Handshake) {
        match hs {
            Handshake::Client(c) => {
                // The client's limit bounds what travels towards it.
                self.serializer = Some(c.serializer);
                let limit = c.max_len.bytes().min(self.max_frame);
                self.to_client_mut().set_limit(limit);
                self.client_ready = true;
            }
            Handshake::Router(RouterReply::Accepted { max_len, .. }) => {
                let limit = max_len.bytes().min(self.max_frame);
                self.to_router_mut().set_limit(limit);
            }
            Handshake::Router(RouterReply::Rejected { .. }) => {}
        }
    }

    fn note_realm(&mut self) {
        if self.realm_checked {
            return;
        }
        let Some(ser) = self.serializer else { return };
        let (to_router, _) = self.directions();
        if let Some(hello) = to_router.first_message() {
            self.realm = realm_from_hello(ser, hello);
            self.realm_checked = true;
        }
    }

    /// Moves bytes both ways until neither side can make progress. `stream` is `None` while the
    /// stream is not open (only the local side is read then). `Ok(true)` when the link is done.
    pub fn pump(&mut self, mut stream: Option<StreamRef<'_>>) -> Result<bool, LinkEnd> {
        if self.connecting {
            return Ok(false);
        }
        loop {
            let mut progress = false;

            // Local -> stream.
            if self.local_readable {
                let (sock, readable) = (&mut self.sock, &mut self.local_readable);
                let closing = self.local_read_closed;
                progress |= self
                    .from_local
                    .fill(|buf| {
                        let fill = read_local(sock, buf)?;
                        let short = !matches!(fill, Fill::Data(n) if n == buf.len());
                        if short && !(closing && matches!(fill, Fill::Data(_))) {
                            *readable = false;
                        }
                        Ok(fill)
                    })
                    .map_err(LinkEnd::Local)?;
            }
            match self.from_local.check() {
                Ok(Some(hs)) => self.on_handshake(hs),
                Ok(None) => {}
                Err(PipeError::Handshake(e)) if matches!(self.role, Role::Dialer { .. }) => {
                    return Err(LinkEnd::ClientHandshake(e))
                }
                Err(e) => return Err(LinkEnd::Protocol(e)),
            }

            let Some(s) = stream.as_mut() else {
                // No stream yet: a client that leaves before it opens is simply done.
                return Ok(self.from_local.source_ended());
            };
            let taken = self.from_local.drain(|b| stream_send(s, b))?;
            progress |= taken > 0;
            self.wrote_stream |= taken > 0;
            if self.from_local.is_finished() && !self.fin_sent {
                match s.quic.stream_send(s.id, &[], true) {
                    Ok(_) => {
                        self.fin_sent = true;
                        self.wrote_stream = true;
                        progress = true;
                    }
                    Err(quiche::Error::Done) => {}
                    Err(e) => return Err(stream_error(e)),
                }
            }

            // Stream -> local.
            progress |= self.to_local.fill(|buf| stream_recv(s, buf))?;
            match self.to_local.check() {
                Ok(Some(hs)) => self.on_handshake(hs),
                Ok(None) => {}
                Err(e) => return Err(LinkEnd::Protocol(e)),
            }
            let sock = &mut self.sock;
            let written = self
                .to_local
                .drain(|b| write_local(sock, b))
                .map_err(LinkEnd::Local)?;
            progress |= written > 0;
            if self.to_local.is_finished() && !self.local_write_closed {
                self.local_write_closed = true;
                // The peer side finished: pass the half-close on. A socket already gone is fine.
                self.sock.shutdown_write().ok();
            }

            self.note_realm();
            if self.fin_sent && self.local_write_closed {
                return Ok(true);
            }
            if !progress {
                return Ok(false);
            }
        }
    }
}

/// What a quiche stream error means for the link.
fn stream_error(e: quiche::Error) -> LinkEnd {
    match e {
        quiche::Error::StreamStopped(code) => LinkEnd::PeerStopped(code),
        quiche::Error::StreamReset(code) => LinkEnd::PeerReset(code),
        e => LinkEnd::Quic(e),
    }
}

fn stream_send(s: &mut StreamRef<'_>, bytes: &[u8]) -> Result<usize, LinkEnd> {
    match s.quic.stream_send(s.id, bytes, false) {
        Ok(n) => Ok(n),
        Err(quiche::Error::Done) => Ok(0),
        Err(e) => Err(stream_error(e)),
    }
}

fn stream_recv(s: &mut StreamRef<'_>, buf: &mut [u8]) -> Result<Fill, LinkEnd> {
    match s.quic.stream_recv(s.id, buf) {
        Ok((n, true)) => Ok(Fill::Last(n)),
        Ok((n, false)) => Ok(Fill::Data(n)),
        Err(quiche::Error::Done) => Ok(Fill::Blocked),
        // The stream was collected: both directions finished earlier.
        Err(quiche::Error::InvalidStreamState(_)) => Ok(Fill::End),
        Err(e) => Err(stream_error(e)),
    }
}

fn read_local(sock: &mut LocalStream, buf: &mut [u8]) -> io::Result<Fill> {
    loop {
        return match sock.read(buf) {
            Ok(0) => Ok(Fill::End),
            Ok(n) => Ok(Fill::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

fn write_local(sock: &mut LocalStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        return match sock.write(bytes) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}
