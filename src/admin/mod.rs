//! The admin endpoint (`[admin] listen`): `/metrics` (OpenMetrics text), `/healthz` (the process
//! answers) and `/readyz` (503 until every listener is bound and every dialed peer is connected,
//! and while draining). It runs on its own thread and asks the node for a [`NodeSnapshot`] per
//! request, so nothing on the shards' hot path exists for it.

pub mod metrics;
pub mod snapshot;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

pub use snapshot::NodeSnapshot;

/// What the endpoint reads from: the node (its shards) or, in tests, a fixed value.
pub trait AdminSource: Send + Sync + 'static {
    /// Every shard's figures; called on the admin thread for each `/metrics` request.
    fn snapshot(&self) -> NodeSnapshot;
    /// Whether the node takes traffic now, and if not, why.
    fn readiness(&self) -> Readiness;
}

/// The body of `/readyz`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub draining: bool,
    /// Link endpoints and the QUIC socket not bound yet.
    pub listeners_unbound: Vec<String>,
    /// Peers this node dials that have no established connection.
    pub peers_not_connected: Vec<String>,
}

impl Readiness {
    /// Ready when nothing is missing and the node is not draining.
    pub fn new(
        draining: bool,
        listeners_unbound: Vec<String>,
        peers_not_connected: Vec<String>,
    ) -> Readiness {
        Readiness {
            ready: !draining && listeners_unbound.is_empty() && peers_not_connected.is_empty(),
            draining,
            listeners_unbound,
            peers_not_connected,
        }
    }
}

/// The running endpoint; dropping it stops the thread.
pub struct AdminServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves from `source` on a thread of its own.
    pub fn start(addr: SocketAddr, source: Arc<dyn AdminSource>) -> io::Result<AdminServer> {
        let server = tiny_http::Server::http(addr).map_err(io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("admin endpoint bound to a non-IP address"))?;
        let server = Arc::new(server);
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("rlinkd-admin".into())
            .spawn(move || serve(&s, source.as_ref()))?;
        Ok(AdminServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The bound address (the port, when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

fn serve(server: &tiny_http::Server, source: &dyn AdminSource) {
    for req in server.incoming_requests() {
        let (status, content_type, body) = respond(req.method(), req.url(), source);
        let header = tiny_http::Header::from_bytes("Content-Type", content_type)
            .expect("a fixed ASCII header");
        let resp = tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header);
        if let Err(e) = req.respond(resp) {
            tracing::debug!(error = %e, "admin: cannot answer a request");
        }
    }
}

/// (status, content type, body) for a request: pure, so the routes are tested without sockets.
pub fn respond(
    method: &tiny_http::Method,
    url: &str,
    source: &dyn AdminSource,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return (405, TEXT, "only GET\n".into());
    }
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => (
            200,
            metrics::CONTENT_TYPE,
            metrics::encode_snapshot(&source.snapshot()),
        ),
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/readyz" => {
            let r = source.readiness();
            let body = serde_json::to_string(&r).unwrap_or_default() + "\n";
            (if r.ready { 200 } else { 503 }, JSON, body)
        }
        _ => (
            404,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Mutex;

    struct Fixed(Mutex<Readiness>);

    impl AdminSource for Fixed {
        fn snapshot(&self) -> NodeSnapshot {
            NodeSnapshot {
                node: "a".into(),
                ..Default::default()
            }
        }
        fn readiness(&self) -> Readiness {
            self.0.lock().unwrap().clone()
        }
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn routes_answer_with_their_status_and_readyz_names_what_is_missing() {
        let src = Arc::new(Fixed(Mutex::new(Readiness::new(
            false,
            vec![],
            vec!["b".into()],
        ))));
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), src.clone()).unwrap();
        let addr = server.local_addr();
        let r = get(addr, "/readyz");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("\"peers_not_connected\":[\"b\"]"), "{r}");
        *src.0.lock().unwrap() = Readiness::new(false, vec![], vec![]);
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        *src.0.lock().unwrap() = Readiness::new(true, vec![], vec![]);
        let r = get(addr, "/readyz");
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("\"draining\":true"),
            "{r}"
        );
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics");
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("application/openmetrics-text"), "{m}");
        assert!(m.contains("rlinkd_shards{node=\"a\"} 0"), "{m}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        // Dropping it joins the serving thread (tiny_http closes its listener on its own time).
        drop(server);
    }
}
