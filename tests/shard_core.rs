//! The shard core in memory: cores joined by the seeded lossy network of `common/lossy.rs`,
//! local sockets replaced by in-memory byte pipes, route targets by scripted routers, no
//! processes and no sockets. quiche reads the wall clock itself, so the clock is the wall clock
//! plus a skew a test may advance to reach the core's own deadlines sooner.
//!
//! What is tested here is what users rely on from a node pair: links open and close in every
//! order and nothing is left behind; a restarted peer replaces its dead connection; a peer that
//! goes away is redialed when it comes back; a drain delivers whole frames and FINs, then closes
//! the connections with Shutdown; and all of it through loss.

#[path = "common/lossy.rs"]
mod lossy;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lossy::LossyWire;
use rlinkd::addr::LocalAddr;
use rlinkd::config::NodeConfig;
use rlinkd::io::uring::local_recv::Received;
use rlinkd::io::{LocalConn, LocalIo};
use rlinkd::shard::core::{LocalEvent, ShardCore};

// ---------------------------------------------------------------------------------------------
// In-memory local connections

/// Bytes a pipe holds towards the test end before the core's writes are refused (backpressure).
const PIPE_CAP: usize = 256 << 10;

#[derive(Default)]
struct PipeState {
    /// Written by the test end, read by the core.
    to_core: VecDeque<u8>,
    /// Written by the core, read by the test end.
    to_test: VecDeque<u8>,
    /// The test end shut down its write side: the core reads EOF after `to_core`.
    test_write_closed: bool,
    /// The test end is gone: the core's writes fail.
    test_gone: bool,
    /// The core shut down its write side.
    core_write_closed: bool,
    /// The core dropped its side (the link ended).
    core_dropped: bool,
    /// The test end did something the core has not been told about.
    news: bool,
    /// Reads go "on a ring" (as on io_uring): the relay lends room, which is filled when it
    /// takes the read's result (see [`RING_READS`]).
    ring_reads: bool,
    /// The room lent for the read in flight, and how many bytes it may take.
    lent: Option<(bytes::BytesMut, usize)>,
}

thread_local! {
    /// Connections made while this is set read on a simulated ring.
    static RING_READS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

type Shared = Rc<RefCell<PipeState>>;

/// The core's side of a pipe.
pub struct MemConn(Shared);

impl LocalConn for MemConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.0.borrow_mut();
        if st.to_core.is_empty() {
            return if st.test_write_closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(st.to_core.len());
        for (b, v) in buf.iter_mut().zip(st.to_core.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut st = self.0.borrow_mut();
        if st.test_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = bytes.len().min(PIPE_CAP.saturating_sub(st.to_test.len()));
        if n == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        st.to_test.extend(&bytes[..n]);
        Ok(n)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.borrow_mut().core_write_closed = true;
        Ok(())
    }

    fn finish_connect(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    fn reads_on_ring(&self) -> bool {
        self.0.borrow().ring_reads
    }

    fn peer_shut_down(&self) -> bool {
        self.0.borrow().test_write_closed
    }

    fn recv_into(&mut self, room: bytes::BytesMut, len: usize) {
        self.0.borrow_mut().lent = Some((room, len));
    }

    fn recv_busy(&self) -> bool {
        self.0.borrow().lent.is_some()
    }

    /// The read completes when its result is asked for, with everything there is up to the
    /// length it was given when it was armed (possibly before the node began draining).
    fn take_received(&mut self) -> Option<Received> {
        let mut st = self.0.borrow_mut();
        let (mut room, len) = st.lent.take()?;
        if !st.to_core.is_empty() {
            let n = len.min(st.to_core.len());
            room.extend(st.to_core.drain(..n));
            return Some(Received::Data(room, len));
        }
        if st.test_write_closed {
            return Some(Received::End);
        }
        st.lent = Some((room, len));
        None
    }
}

impl Drop for MemConn {
    fn drop(&mut self) {
        self.0.borrow_mut().core_dropped = true;
    }
}

/// The test's side of a pipe: a client of a link endpoint, or a router's accepted connection.
#[derive(Clone)]
pub struct End(Shared);

impl End {
    fn pair() -> (End, MemConn) {
        let st: Shared = Rc::new(RefCell::new(PipeState {
            news: true,
            ring_reads: RING_READS.with(|r| r.get()),
            ..PipeState::default()
        }));
        (End(st.clone()), MemConn(st))
    }

    fn write(&self, bytes: &[u8]) {
        let mut st = self.0.borrow_mut();
        assert!(!st.test_write_closed, "write after shutdown");
        st.to_core.extend(bytes);
        st.news = true;
    }

    /// Everything the core has written so far.
    fn read(&self) -> Vec<u8> {
        let mut st = self.0.borrow_mut();
        st.news = true;
        st.to_test.drain(..).collect()
    }

    fn shutdown_write(&self) {
        let mut st = self.0.borrow_mut();
        st.test_write_closed = true;
        st.news = true;
    }

    /// Closes both directions (what the core has not read stays readable, like a socket's
    /// receive queue; later writes by the core fail).
    fn close(&self) {
        let mut st = self.0.borrow_mut();
        st.test_write_closed = true;
        st.test_gone = true;
        st.news = true;
    }

    /// The core has ended its write side, or dropped the connection.
    fn eof(&self) -> bool {
        let st = self.0.borrow();
        st.to_test.is_empty() && (st.core_write_closed || st.core_dropped)
    }

    fn dropped_by_core(&self) -> bool {
        self.0.borrow().core_dropped
    }
}

/// Route targets: a connect makes a pipe whose test end waits in the target's queue.
type Accepted = Rc<RefCell<VecDeque<End>>>;

/// The [`LocalIo`] of an in-memory core.
pub struct MemIo {
    /// Clients queued at each link endpoint.
    pending: Vec<VecDeque<MemConn>>,
    targets: Vec<(LocalAddr, Accepted)>,
    watched: Vec<(usize, Shared)>,
    endpoints_closed: bool,
}

impl LocalIo for MemIo {
    type Conn = MemConn;

    fn accept(&mut self, endpoint: usize) -> io::Result<MemConn> {
        if self.endpoints_closed {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.pending
            .get_mut(endpoint)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    fn connect(&mut self, target: &LocalAddr) -> io::Result<MemConn> {
        let Some((_, queue)) = self.targets.iter().find(|(a, _)| a == target) else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        let (end, conn) = End::pair();
        queue.borrow_mut().push_back(end);
        Ok(conn)
    }

    fn watch(&mut self, conn: &mut MemConn, link: usize) -> io::Result<()> {
        self.watched.push((link, conn.0.clone()));
        Ok(())
    }

    fn unwatch(&mut self, conn: &mut MemConn) {
        self.watched.retain(|(_, s)| !Rc::ptr_eq(s, &conn.0));
    }

    fn close_endpoints(&mut self) {
        self.endpoints_closed = true;
        self.pending.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted routers

const HANDSHAKE: [u8; 4] = [0x7F, 0xF2, 0, 0];

fn frame(payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![0, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    f.extend_from_slice(payload);
    f
}

fn frames(count: usize, size: usize, seed: u8) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            let p: Vec<u8> = (0..size)
                .map(|j| (j as u8).wrapping_mul(31) ^ (i as u8) ^ seed)
                .collect();
            frame(&p)
        })
        .collect()
}

/// One connection a router accepted: what it received (after the handshake) and how far it is.
struct RouterConn {
    end: End,
    received: Vec<u8>,
    replied: bool,
    echoed: usize,
    saw_eof: bool,
}

/// A router behind a route: replies to the handshake (unless told to hold it), echoes what it
/// receives, and ends its side when the client's side has ended.
struct Router {
    accepted: Accepted,
    conns: Vec<RouterConn>,
    reply: bool,
    echo: bool,
}

impl Router {
    fn new() -> Router {
        Router {
            accepted: Rc::new(RefCell::new(VecDeque::new())),
            conns: Vec::new(),
            reply: true,
            echo: true,
        }
    }

    fn serve(&mut self) {
        while let Some(end) = self.accepted.borrow_mut().pop_front() {
            self.conns.push(RouterConn {
                end,
                received: Vec::new(),
                replied: false,
                echoed: 0,
                saw_eof: false,
            });
        }
        for c in &mut self.conns {
            if c.end.dropped_by_core() && c.saw_eof {
                continue;
            }
            c.received.extend(c.end.read());
            if !c.replied && self.reply && c.received.len() >= 4 {
                assert_eq!(
                    c.received[..4],
                    HANDSHAKE,
                    "the client handshake crosses verbatim"
                );
                c.end.write(&HANDSHAKE);
                c.replied = true;
            }
            let write_closed = c.end.0.borrow().test_write_closed;
            if c.replied && self.echo && !write_closed && c.received.len() > 4 + c.echoed {
                c.end.write(&c.received[4 + c.echoed..]);
                c.echoed = c.received.len() - 4;
            }
            if c.replied && !c.saw_eof && c.end.eof() {
                c.saw_eof = true;
                if !write_closed {
                    c.end.shutdown_write();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The world: cores, the wire, routers, a clock

struct Node {
    core: ShardCore<MemIo>,
    addr: SocketAddr,
    alive: bool,
    stopped: bool,
}

struct World {
    _certs: tempfile::TempDir,
    certs: std::path::PathBuf,
    nodes: Vec<Node>,
    wire: LossyWire,
    /// Packets to an address where no core runs draw an ICMP port unreachable (a process that
    /// died on this host); without it they vanish (a host that went away).
    icmp: bool,
    skew: Duration,
    router: Router,
    buf: Vec<u8>,
    log: Arc<Mutex<Vec<u8>>>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

const ROUTE_TARGET: &str = "tcp:127.0.0.1:9001";
const A_ADDR: &str = "10.255.0.1:4433";
const B_ADDR: &str = "10.255.0.2:4433";

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl World {
    fn new(seed: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        rlinkd::cert::generate(dir.path(), &["a".into(), "b".into()]).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(log.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        World {
            certs: dir.path().to_path_buf(),
            _certs: dir,
            nodes: Vec::new(),
            wire: LossyWire::new(seed),
            icmp: true,
            skew: Duration::ZERO,
            router: Router::new(),
            buf: vec![0; 65_536],
            log,
            _log_guard: guard,
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.skew
    }

    /// Node `name` at `addr`. `dials`: the peer's address if this node dials it. Node a has link
    /// endpoint 0 to route "echo" on b; node b has route "echo" to the scripted router.
    fn add(&mut self, name: &str, addr: &str, peer: &str, dials: Option<&str>) -> usize {
        let connect = dials.map_or(String::new(), |d| format!("connect = \"{d}\"\n"));
        let extra = if name == "a" {
            format!(
                "[[links]]\npeer = \"{peer}\"\nlisten = \"tcp:127.0.0.1:7001\"\nroute = \"echo\"\n"
            )
        } else {
            format!("[[routes]]\nname = \"echo\"\nconnect = \"{ROUTE_TARGET}\"\n")
        };
        let toml = format!(
            "node = \"{name}\"\nstats_interval = \"0s\"\ndrain_timeout = \"10s\"\n\
             [quic]\nlisten = \"{addr}\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\nca = \"ca.pem\"\n\
             idle_timeout = \"3s\"\nkeepalive_interval = \"500ms\"\nconnect_timeout = \"3s\"\n\
             redial_min = \"50ms\"\nredial_max = \"300ms\"\n\
             [[peers]]\nname = \"{peer}\"\n{connect}\n{extra}"
        );
        let cfg = NodeConfig::from_toml_str(&toml, &self.certs).expect("config");
        let io = MemIo {
            pending: (0..cfg.links.len()).map(|_| VecDeque::new()).collect(),
            targets: vec![(ROUTE_TARGET.parse().unwrap(), self.router.accepted.clone())],
            watched: Vec::new(),
            endpoints_closed: false,
        };
        let addr: SocketAddr = addr.parse().unwrap();
        let now = self.now();
        let mut core = ShardCore::new(cfg, addr, io).expect("core");
        core.start(now);
        self.nodes.push(Node {
            core,
            addr,
            alive: true,
            stopped: false,
        });
        self.nodes.len() - 1
    }

    /// A client connects to node `n`'s link endpoint 0.
    fn client(&mut self, n: usize) -> End {
        let (end, conn) = End::pair();
        let now = self.now();
        let core = &mut self.nodes[n].core;
        core.io_mut().pending[0].push_back(conn);
        core.on_endpoint_readable(0, now);
        end
    }

    /// A process that dies: nothing more in or out.
    fn kill(&mut self, n: usize) {
        self.nodes[n].alive = false;
    }

    fn step(&mut self) {
        let now = self.now();
        for node in self.nodes.iter_mut().filter(|n| n.alive && !n.stopped) {
            let news: Vec<(usize, bool)> = node
                .core
                .io()
                .watched
                .iter()
                .filter_map(|(k, s)| {
                    let mut st = s.borrow_mut();
                    // Reads on the ring hear of a half-close only by reading it (a link's
                    // socket leaves the epoll set on io_uring): no `read_closed` for them.
                    let closed = st.test_write_closed && !st.ring_reads;
                    std::mem::take(&mut st.news).then_some((*k, closed))
                })
                .collect();
            for (key, closed) in news {
                node.core.on_local_event(
                    key,
                    LocalEvent {
                        readable: true,
                        read_closed: closed,
                        writable: true,
                    },
                );
            }
            node.core.service(now);
            while let Some(b) = node.core.poll_transmit(&mut self.buf, 16, now) {
                self.wire
                    .send(node.addr, b.to, &self.buf[..b.len], b.segment_size);
            }
            node.stopped = node.core.after_transmit(now);
        }
        for mut d in self.wire.take() {
            let to = self
                .nodes
                .iter_mut()
                .find(|n| n.addr == d.to && n.alive && !n.stopped);
            match to {
                Some(n) => n.core.on_datagram(&mut d.bytes, d.from, now),
                None if self.icmp => {
                    if let Some(from) = self
                        .nodes
                        .iter_mut()
                        .find(|n| n.addr == d.from && n.alive && !n.stopped)
                    {
                        from.core.on_port_unreachable(d.to);
                    }
                }
                None => {}
            }
        }
        self.router.serve();
    }

    /// Steps until `done` or `limit` (wall time); sleeps a little when nothing moves.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut World) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.step();
            if done(self) {
                return true;
            }
            let busy = self.nodes.iter().any(|n| n.core.has_work());
            if self.wire.is_empty() && !busy {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        false
    }

    fn wait(&mut self, limit: Duration, what: &str, done: impl FnMut(&mut World) -> bool) {
        if !self.run_until(limit, done) {
            panic!("{what} within {limit:?}\n--- log ---\n{}", self.log_text());
        }
    }

    fn connected(&mut self, a: usize, b: usize) {
        self.wait(Duration::from_secs(10), "not connected", |w| {
            w.nodes[a].core.peer_conn("b").is_some() && w.nodes[b].core.peer_conn("a").is_some()
        });
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    fn links(&self, n: usize) -> usize {
        self.nodes[n].core.links_open()
    }
}

/// Nodes a (dials) and b (accepts, route "echo" to the router), connected.
fn pair(seed: u64, loss: f64) -> World {
    let mut w = World::new(seed);
    w.wire.loss = loss;
    w.add("a", A_ADDR, "b", Some(B_ADDR));
    w.add("b", B_ADDR, "a", None);
    w.connected(0, 1);
    w
}

/// Sends `bytes` through a link opened on `client` and waits for their echo.
fn echo(w: &mut World, client: &End, bytes: &[u8]) -> Vec<u8> {
    client.write(bytes);
    let mut got = Vec::new();
    let want = bytes.len();
    w.wait(Duration::from_secs(30), "no echo", |_| {
        got.extend(client.read());
        got.len() >= want
    });
    got
}

fn open_link(w: &mut World) -> End {
    let c = w.client(0);
    c.write(&HANDSHAKE);
    let mut got = Vec::new();
    w.wait(Duration::from_secs(10), "no handshake reply", |_| {
        got.extend(c.read());
        got.len() >= 4
    });
    assert_eq!(got, HANDSHAKE);
    c
}

fn no_links_left(w: &mut World) {
    w.wait(Duration::from_secs(10), "links left open", |w| {
        w.links(0) == 0 && w.links(1) == 0
    });
}

// ---------------------------------------------------------------------------------------------
// Link open and close in every order

#[test]
fn client_closes_first_then_the_router() {
    let mut w = pair(1, 0.0);
    let c = open_link(&mut w);
    let data = frames(20, 1000, 1);
    assert_eq!(echo(&mut w, &c, &data), data);
    c.shutdown_write();
    // The FIN crosses: the router sees EOF, ends its side, and the client sees EOF.
    w.wait(Duration::from_secs(10), "client saw no EOF", |_| c.eof());
    no_links_left(&mut w);
    assert!(w.router.conns[0].saw_eof);
    for n in [0, 1] {
        let s = w.nodes[n].core.stats();
        assert_eq!((s.links_opened, s.links_closed, s.links_failed), (1, 1, 0));
    }
}

#[test]
fn router_closes_first_then_the_client() {
    let mut w = pair(2, 0.0);
    let c = open_link(&mut w);
    let data = frames(5, 300, 2);
    assert_eq!(echo(&mut w, &c, &data), data);
    w.router.conns[0].end.shutdown_write();
    w.wait(Duration::from_secs(10), "client saw no EOF", |_| c.eof());
    // The other half still works: the client's bytes reach the router after its FIN.
    let more = frame(b"after the router's FIN");
    c.write(&more);
    w.wait(
        Duration::from_secs(10),
        "half-closed link lost bytes",
        |w| w.router.conns[0].received.ends_with(&more),
    );
    assert_eq!(w.links(0), 1, "a half-closed link stays open");
    c.shutdown_write();
    no_links_left(&mut w);
    assert_eq!(w.nodes[0].core.stats().links_failed, 0);
    assert_eq!(w.nodes[1].core.stats().links_failed, 0);
}

#[test]
fn both_ends_close_at_once() {
    let mut w = pair(3, 0.0);
    let c = open_link(&mut w);
    let data = frames(3, 100, 3);
    assert_eq!(echo(&mut w, &c, &data), data);
    c.shutdown_write();
    w.router.conns[0].end.shutdown_write();
    no_links_left(&mut w);
    assert!(c.eof());
    assert_eq!(w.nodes[0].core.stats().links_failed, 0);
    assert_eq!(w.nodes[1].core.stats().links_failed, 0);
}

#[test]
fn a_client_that_leaves_before_its_handshake_or_before_the_stream_opens_leaves_nothing() {
    let mut w = World::new(4);
    w.add("a", A_ADDR, "b", Some(B_ADDR));
    // No handshake at all.
    let c1 = w.client(0);
    c1.close();
    // A handshake, but the peer is not connected yet: the link waits for it, then its client
    // goes.
    let c2 = w.client(0);
    c2.write(&HANDSHAKE);
    w.run_until(Duration::from_millis(50), |_| false);
    assert_eq!(w.links(0), 1, "the link waits for its peer");
    c2.close();
    w.wait(Duration::from_secs(5), "links left open", |w| {
        w.links(0) == 0
    });
    assert!(c1.dropped_by_core() && c2.dropped_by_core());
    assert_eq!(w.nodes[0].core.stats().links_failed, 0);
    // Then the peer comes up and nothing crosses for those links.
    w.add("b", B_ADDR, "a", None);
    w.connected(0, 1);
    w.run_until(Duration::from_millis(200), |_| false);
    assert!(w.router.conns.is_empty());
}

#[test]
fn a_link_waiting_for_its_peer_opens_when_the_peer_comes_up() {
    let mut w = World::new(5);
    w.add("a", A_ADDR, "b", Some(B_ADDR));
    let c = w.client(0);
    c.write(&HANDSHAKE);
    let first = frame(b"pipelined with the handshake");
    c.write(&first);
    w.run_until(Duration::from_millis(100), |_| false);
    w.add("b", B_ADDR, "a", None);
    let mut got = Vec::new();
    let want = 4 + first.len();
    w.wait(Duration::from_secs(10), "no reply", |_| {
        got.extend(c.read());
        got.len() >= want
    });
    assert_eq!(&got[..4], HANDSHAKE);
    assert_eq!(&got[4..], first);
}

#[test]
fn a_link_whose_peer_never_comes_is_closed_at_connect_timeout() {
    let mut w = World::new(13);
    w.add("a", A_ADDR, "b", Some(B_ADDR));
    let c = w.client(0);
    c.write(&HANDSHAKE);
    w.run_until(Duration::from_millis(100), |_| false);
    assert_eq!(w.links(0), 1, "the link waits for its peer");
    // The core's own deadline, reached on the virtual clock (connect_timeout is 3 s).
    w.skew += Duration::from_secs(3);
    w.wait(Duration::from_secs(5), "link not closed", |_| {
        c.dropped_by_core()
    });
    assert_eq!(w.nodes[0].core.stats().links_failed, 1);
    assert!(w.log_text().contains("peer b not reachable within 3s"));
}

#[test]
fn a_client_that_closes_before_the_routers_handshake_reply_still_gets_its_answer() {
    let mut w = pair(6, 0.0);
    w.router.reply = false;
    let c = w.client(0);
    c.write(&HANDSHAKE);
    let f = frame(b"held until the router's limit is known");
    c.write(&f);
    c.shutdown_write();
    w.wait(Duration::from_secs(10), "router got no connection", |w| {
        w.router
            .conns
            .first()
            .is_some_and(|r| r.received.len() >= 4)
    });
    // Held on b until the router answers: nothing after the handshake reaches it yet.
    w.run_until(Duration::from_millis(100), |_| false);
    assert_eq!(w.router.conns[0].received, HANDSHAKE);
    w.router.reply = true;
    let mut got = Vec::new();
    w.wait(Duration::from_secs(10), "no answer and EOF", |_| {
        got.extend(c.read());
        c.eof()
    });
    assert_eq!(&got[..4], HANDSHAKE);
    assert_eq!(&got[4..], f);
    no_links_left(&mut w);
}

#[test]
fn a_client_gone_while_bytes_flow_to_it_ends_that_half_only() {
    let mut w = pair(7, 0.0);
    let c = open_link(&mut w);
    let data = frames(2, 100, 7);
    assert_eq!(echo(&mut w, &c, &data), data);
    // The client closes both directions with a frame unread on its way: the router's next
    // echo finds it gone (STOP_SENDING LocalAbort), but what it sent first still arrives.
    let last = frame(b"sent just before closing");
    c.write(&last);
    c.close();
    w.wait(Duration::from_secs(10), "last frame lost", |w| {
        w.router.conns[0].received.ends_with(&last)
    });
    no_links_left(&mut w);
}

#[test]
fn many_links_cross_intact_through_loss() {
    let mut w = pair(8, 0.05);
    let clients: Vec<End> = (0..8).map(|_| open_link(&mut w)).collect();
    let datas: Vec<Vec<u8>> = (0..8).map(|i| frames(40, 1500, i as u8)).collect();
    for (c, d) in clients.iter().zip(&datas) {
        c.write(d);
    }
    let mut got = vec![Vec::new(); 8];
    w.wait(Duration::from_secs(60), "transfer through loss", |_| {
        for (g, c) in got.iter_mut().zip(&clients) {
            g.extend(c.read());
        }
        got.iter().zip(&datas).all(|(g, d)| g.len() >= d.len())
    });
    assert!(got == datas, "bytes differ");
    assert!(w.wire.dropped > 0, "the network dropped nothing");
    for c in &clients {
        c.shutdown_write();
    }
    no_links_left(&mut w);
    assert_eq!(w.nodes[0].core.stats().links_failed, 0);
}

// ---------------------------------------------------------------------------------------------
// Peer replacement and redial

#[test]
fn a_restarted_peer_replaces_its_dead_connection_and_new_links_work() {
    // b dials a; b's process vanishes without a trace (no close, no ICMP), and a new b with the
    // same identity dials from another address.
    let mut w = World::new(9);
    w.icmp = false;
    w.add("a", A_ADDR, "b", None);
    w.add("b", B_ADDR, "a", Some(A_ADDR));
    w.connected(0, 1);
    let old = w.nodes[0].core.peer_conn("b").unwrap();
    let c = open_link(&mut w);
    let data = frames(3, 200, 9);
    assert_eq!(echo(&mut w, &c, &data), data);

    w.kill(1);
    w.add("b", "10.255.0.3:4433", "a", Some(A_ADDR));
    w.wait(Duration::from_secs(10), "not replaced", |w| {
        w.nodes[0].core.peer_conn("b").is_some_and(|n| n != old)
    });
    assert_eq!(w.nodes[0].core.driver().stats().superseded, 1);
    // The old connection's link is closed, so its router reconnects.
    w.wait(Duration::from_secs(10), "old link left open", |_| c.eof());
    assert!(c.dropped_by_core());
    // New links work over the new connection.
    let c2 = open_link(&mut w);
    assert_eq!(echo(&mut w, &c2, &data), data);
    assert!(w.log_text().contains("did not answer a liveness probe"));
}

#[test]
fn a_peer_that_goes_away_is_redialed_when_it_comes_back() {
    let mut w = pair(10, 0.0);
    let c = open_link(&mut w);
    let data = frames(3, 200, 10);
    assert_eq!(echo(&mut w, &c, &data), data);

    // b's process dies: its port answers with ICMP port unreachable, a's link closes and a
    // redials on its backoff while b is away.
    w.kill(1);
    w.wait(Duration::from_secs(10), "link left open", |_| c.eof());
    assert_eq!(w.nodes[0].core.peer_conn("b"), None);
    w.run_until(Duration::from_millis(500), |_| false);
    assert!(
        w.log_text().contains("cannot reach peer"),
        "no failed redial logged"
    );
    // b comes back at the same address.
    w.add("b", B_ADDR, "a", None);
    w.connected(0, 2);
    let c2 = open_link(&mut w);
    assert_eq!(echo(&mut w, &c2, &data), data);
}

// ---------------------------------------------------------------------------------------------
// Drain

#[test]
fn a_drain_delivers_whole_frames_then_fins_and_closes_with_shutdown() {
    for (seed, loss) in [(11, 0.0), (12, 0.05)] {
        let mut w = pair(seed, loss);
        let c = open_link(&mut w);
        let idle = open_link(&mut w);
        let whole = frames(10, 1000, 11);
        assert_eq!(echo(&mut w, &c, &whole), whole);
        // A frame in progress when the drain begins: its first half is in.
        let cut = frame(&[0x5a; 3000]);
        c.write(&cut[..1500]);
        w.run_until(Duration::from_millis(50), |_| false);
        let now = w.now();
        w.nodes[0].core.begin_drain(now);
        // The rest of that frame arrives, and more after it: the frame is completed and
        // relayed; what follows it is read and dropped.
        c.write(&cut[1500..]);
        c.write(&frame(b"after the drain began"));
        let got = drained_echo(&mut w, &c);
        assert!(idle.eof());
        assert_whole_frames_only(&w, &got, &whole, &cut);
        assert!(w.router.conns[0].saw_eof, "the router saw the FIN");
        let s = w.nodes[0].core.stats();
        assert_eq!(s.links_failed, 0, "a drain fails no link");
        // b hears of the drain at once (no new links towards a), then the connection close
        // with Shutdown, and its links end cleanly.
        w.wait(Duration::from_secs(10), "b still connected", |w| {
            w.nodes[1].core.driver().conn_ids().is_empty() && w.links(1) == 0
        });
        assert_eq!(w.nodes[1].core.peer_conn("a"), None);
        assert_eq!(w.nodes[1].core.stats().links_failed, 0);
        let log = w.log_text();
        assert!(
            log.contains("drained: every link delivered what was accepted"),
            "{log}"
        );
        assert!(
            log.contains("peer connection lost")
                && log.contains("reason=closed by peer: shutdown (app 0x0)"),
            "{log}"
        );
        assert!(log.contains("peer announced its drain"), "{log}");
    }
}

/// On io_uring a link's read may be parked, with room for many bytes, when the drain begins. If
/// the frame in progress then lacks part of its header, the read that completes it brings its
/// payload and more: the payload goes through (the header just read says how long it is), what
/// follows is dropped.
#[test]
fn a_read_parked_before_the_drain_delivers_the_frame_its_header_began() {
    RING_READS.with(|r| r.set(true));
    let mut w = pair(21, 0.0);
    let c = open_link(&mut w);
    let whole = frames(3, 500, 21);
    assert_eq!(echo(&mut w, &c, &whole), whole);
    // Two bytes of the next frame's header are in; the link's next read is parked.
    let cut = frame(&[0x6b; 700]);
    c.write(&cut[..2]);
    w.run_until(Duration::from_millis(50), |_| false);
    let now = w.now();
    w.nodes[0].core.begin_drain(now);
    let mut rest = cut[2..].to_vec();
    rest.extend(frame(b"after the drain began"));
    c.write(&rest);
    let got = drained_echo(&mut w, &c);
    RING_READS.with(|r| r.set(false));
    assert_whole_frames_only(&w, &got, &whole, &cut);
    assert_eq!(w.nodes[0].core.stats().links_failed, 0);
}

/// A client that wrote its last frames and half-closed before the drain began loses none of
/// them, though most are still unread in its socket: on io_uring, where no readiness event tells
/// of the half-close, the drain asks the socket (`LocalConn::peer_shut_down`) and reads it to its
/// end. It used to cut such a client at a frame boundary (`tests/drain.rs`'s half-close test,
/// under valgrind).
#[test]
fn a_client_half_closed_before_the_drain_is_read_to_its_end_on_the_ring() {
    RING_READS.with(|r| r.set(true));
    let mut w = pair(31, 0.0);
    let c = open_link(&mut w);
    let first = frames(3, 500, 31);
    assert_eq!(echo(&mut w, &c, &first), first);
    // 40 frames of 4,000 bytes, far more than one read's room, then the half-close; the drain
    // begins before the node has read them.
    let last = frames(40, 4000, 32);
    c.write(&last);
    c.shutdown_write();
    let now = w.now();
    w.nodes[0].core.begin_drain(now);
    let got = drained_echo(&mut w, &c);
    RING_READS.with(|r| r.set(false));
    assert!(
        got == last,
        "every frame sent before the half-close came back: {} of {} bytes",
        got.len(),
        last.len()
    );
    let expected = [&first[..], &last[..]].concat();
    assert!(
        w.router.conns[0].received[4..] == expected[..],
        "the router got every frame"
    );
    assert_eq!(w.nodes[0].core.stats().links_failed, 0);
}

/// Runs until node a's drain has stopped it; what `c` received meanwhile, after which it saw
/// the end.
fn drained_echo(w: &mut World, c: &End) -> Vec<u8> {
    let mut got = Vec::new();
    w.wait(Duration::from_secs(30), "drain did not finish", |w| {
        got.extend(c.read());
        w.nodes[0].stopped
    });
    got.extend(c.read());
    assert!(c.eof(), "the client saw the end");
    got
}

/// A drain that began inside frame `cut`, after the frames `whole`, delivered whole frames only:
/// the router got `whole` then `cut`, and the client the echo of `cut` and nothing after it.
fn assert_whole_frames_only(w: &World, got: &[u8], whole: &[u8], cut: &[u8]) {
    assert!(
        got == cut,
        "the echo of the frame in progress, nothing after: {} bytes, {} expected",
        got.len(),
        cut.len()
    );
    let expected = [whole, cut].concat();
    let r = &w.router.conns[0];
    assert!(
        r.received[4..] == expected[..],
        "the router got whole frames only: {} bytes, {} expected",
        r.received.len() - 4,
        expected.len()
    );
}

/// A node with no link and no connection left (its peer stopped first, as in a rolling restart)
/// stops in the turn its drain begins: there is no close to send, so nothing may keep it
/// waiting for `SHUTDOWN_GRACE` (it did: the loop slept until that deadline, 0.5 s of the 1 s
/// an idle node has to exit after SIGTERM).
#[test]
fn a_node_without_links_or_connections_stops_in_the_turn_its_drain_begins() {
    let mut w = pair(14, 0.0);
    let now = w.now();
    w.nodes[0].core.begin_drain(now);
    w.wait(Duration::from_secs(10), "a did not stop", |w| {
        w.nodes[0].stopped && w.nodes[1].core.driver().conn_ids().is_empty()
    });
    let now = w.now();
    w.nodes[1].core.begin_drain(now);
    w.step();
    assert!(
        w.nodes[1].stopped,
        "b kept running after the turn its drain began\n{}",
        w.log_text()
    );
}
