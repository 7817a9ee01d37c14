//! [`RawSocketClient`]: a blocking RawSocket client (handshake, send, receive), splittable into
//! a sender and a receiver so one thread can write while another reads.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use super::stream::LocalStream;
use crate::addr::LocalAddr;
use crate::rawsocket::{
    ClientHandshake, Decoder, FrameError, FrameHeader, FrameKind, HandshakeError, LengthReading,
    RouterReply, HANDSHAKE_LEN, MAX_PAYLOAD,
};

/// Payloads up to this size are copied behind their prefix and written with one syscall.
const COALESCE: usize = 16 * 1024;
const READ_BUF: usize = 64 * 1024;

/// A RawSocket protocol violation seen by the client.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The router's handshake reply is malformed.
    #[error("bad handshake reply: {0}")]
    Handshake(#[from] HandshakeError),
    /// A received frame is malformed or over the client's limit.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The payload to send does not fit in a frame (more than 2^24 bytes).
    #[error("payload of {0} bytes does not fit in a RawSocket frame")]
    PayloadTooLarge(usize),
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An I/O error other than a timeout or end of stream.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
    /// The router closed the connection (end of stream, possibly mid-frame).
    #[error("connection closed by the router")]
    Closed,
    /// The read timeout expired.
    #[error("timed out")]
    Timeout,
    /// The router refused the handshake with this error nibble.
    #[error("router rejected the handshake with error code {0}")]
    Rejected(u8),
    /// The router broke the protocol, or the request cannot be encoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            io::ErrorKind::UnexpectedEof => ClientError::Closed,
            _ => ClientError::Io(e),
        }
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Protocol(ProtocolError::Frame(e))
    }
}

/// The sending half of a client.
#[derive(Debug)]
pub struct ClientSender {
    stream: LocalStream,
    scratch: Vec<u8>,
}

/// The receiving half of a client.
#[derive(Debug)]
pub struct ClientReceiver {
    stream: LocalStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

/// A connected, handshaken RawSocket client.
#[derive(Debug)]
pub struct RawSocketClient {
    tx: ClientSender,
    rx: ClientReceiver,
    reply: RouterReply,
}

impl RawSocketClient {
    /// Connects, sends `hs`, and reads the router's reply, waiting at most `timeout` (non-zero)
    /// for the connection and for the reply. `timeout` stays the read timeout of
    /// [`RawSocketClient::recv`]. A refusal is `Err(ClientError::Rejected(code))`, so the reply
    /// returned is always [`RouterReply::Accepted`]. Received frames are limited to
    /// `hs.max_len` and read with [`LengthReading::Crossbar`].
    pub fn connect(
        addr: &LocalAddr,
        hs: ClientHandshake,
        timeout: Duration,
    ) -> Result<(RawSocketClient, RouterReply), ClientError> {
        let stream = LocalStream::connect_timeout(addr, timeout).map_err(ClientError::Io)?;
        stream.set_read_timeout(Some(timeout))?;
        (&stream).write_all(&hs.encode())?;
        let mut octets = [0u8; HANDSHAKE_LEN];
        (&stream).read_exact(&mut octets)?;
        let reply = RouterReply::parse(&octets).map_err(ProtocolError::Handshake)?;
        if let RouterReply::Rejected { code } = reply {
            return Err(ClientError::Rejected(code));
        }
        let tx = ClientSender {
            stream: stream.try_clone()?,
            scratch: Vec::new(),
        };
        let rx = ClientReceiver {
            stream,
            decoder: Decoder::new(hs.max_len.bytes(), LengthReading::Crossbar),
            buf: vec![0u8; READ_BUF],
        };
        Ok((RawSocketClient { tx, rx, reply }, reply))
    }

    /// The router's (accepting) handshake reply.
    pub fn reply(&self) -> RouterReply {
        self.reply
    }

    /// Sends one regular message.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.tx.send(payload)
    }

    /// Sends one frame of any kind (e.g. a PING, to test how a peer reacts).
    pub fn send_frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), ClientError> {
        self.tx.send_frame(kind, payload)
    }

    /// Writes raw bytes as they are (hand-made frames, split frames, garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.tx.send_raw(bytes)
    }

    /// The next regular message's payload. See [`ClientReceiver::recv`].
    pub fn recv(&mut self) -> Result<Vec<u8>, ClientError> {
        self.rx.recv()
    }

    /// The next frame of any kind. See [`ClientReceiver::recv_frame`].
    pub fn recv_frame(&mut self) -> Result<(FrameHeader, Vec<u8>), ClientError> {
        self.rx.recv_frame()
    }

    /// Changes the read timeout (`None`: wait forever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.rx.set_read_timeout(timeout)
    }

    /// Half-closes the connection: the router sees end of stream, replies can still arrive.
    pub fn shutdown_write(&self) -> Result<(), ClientError> {
        self.tx.shutdown_write()
    }

    /// Splits into a sender and a receiver, usable from two threads.
    pub fn split(self) -> (ClientSender, ClientReceiver) {
        (self.tx, self.rx)
    }
}

impl ClientSender {
    /// Sends one regular message (prefix `08 00 00 00` for exactly 2^24 bytes).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.send_frame(FrameKind::Message, payload)
    }

    /// Sends one frame of `kind` with `payload`.
    pub fn send_frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), ClientError> {
        let too_large = || ProtocolError::PayloadTooLarge(payload.len());
        let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
        if len > MAX_PAYLOAD {
            return Err(too_large().into());
        }
        let header = FrameHeader { kind, len };
        let prefix = header.try_encode().map_err(|_| too_large())?;
        let mut w = &self.stream;
        if payload.len() <= COALESCE {
            self.scratch.clear();
            self.scratch.extend_from_slice(&prefix);
            self.scratch.extend_from_slice(payload);
            w.write_all(&self.scratch)?;
        } else {
            w.write_all(&prefix)?;
            w.write_all(payload)?;
        }
        Ok(())
    }

    /// Writes raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        (&self.stream).write_all(bytes)?;
        Ok(())
    }

    /// Half-closes the connection (the router sees end of stream).
    pub fn shutdown_write(&self) -> Result<(), ClientError> {
        self.stream.shutdown(Shutdown::Write)?;
        Ok(())
    }
}

impl ClientReceiver {
    /// The next regular message's payload; PING/PONG frames are skipped (this client never
    /// answers a PING). Waits at most the read timeout for each read: on `Timeout` the partial
    /// frame stays buffered and `recv` can be called again.
    pub fn recv(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            let (header, payload) = self.recv_frame()?;
            if header.kind == FrameKind::Message {
                return Ok(payload);
            }
        }
    }

    /// The next frame of any kind.
    pub fn recv_frame(&mut self) -> Result<(FrameHeader, Vec<u8>), ClientError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            let n = match (&self.stream).read(&mut self.buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.decoder.push(self.buf.get(..n).unwrap_or_default());
        }
    }

    /// Changes the read timeout (`None`: wait forever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        Ok(())
    }
}
