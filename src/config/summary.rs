//! The human-readable summary `rlinkd check` prints: what the node will do, with every
//! effective setting, so a reader can confirm defaults without opening the docs.

use std::fmt::Write;

use super::units::{format_duration, ByteSize};
use super::NodeConfig;

impl NodeConfig {
    /// A multi-line description of the effective configuration.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_summary(&mut s);
        s
    }

    fn write_summary(&self, s: &mut String) -> std::fmt::Result {
        let q = &self.quic;
        if self.source.as_os_str().is_empty() {
            writeln!(s, "node {}", self.node)?;
        } else {
            writeln!(s, "node {} (from {})", self.node, self.source.display())?;
        }
        writeln!(s, "quic listen {} (udp)", q.listen)?;
        writeln!(s, "  cert {}", q.cert.display())?;
        writeln!(s, "  key  {}", q.key.display())?;
        writeln!(s, "  ca   {}", q.ca.display())?;

        writeln!(s, "peers ({}):", self.peers.len())?;
        for p in &self.peers {
            match p.connect {
                Some(a) => writeln!(s, "  {} dial {a}", p.name)?,
                None => writeln!(s, "  {} accept only", p.name)?,
            }
        }
        writeln!(s, "links ({}):", self.links.len())?;
        for l in &self.links {
            write!(s, "  {} -> {}/{}", l.listen, l.peer, l.route)?;
            match &l.listen {
                crate::addr::LocalAddr::Unix(_) => {
                    let or_process = |v: &Option<super::IdSpec>| {
                        v.as_ref()
                            .map_or("rlinkd's".to_string(), ToString::to_string)
                    };
                    writeln!(
                        s,
                        " (mode {:04o}, owner {}, group {})",
                        l.socket.mode(),
                        or_process(&l.socket.owner),
                        or_process(&l.socket.group)
                    )?;
                }
                crate::addr::LocalAddr::Tcp(_) if l.allow_remote => writeln!(s, " (allow_remote)")?,
                crate::addr::LocalAddr::Tcp(_) => writeln!(s)?,
            }
        }
        writeln!(s, "routes ({}):", self.routes.len())?;
        for r in &self.routes {
            writeln!(s, "  {} -> {}", r.name, r.connect)?;
        }

        writeln!(
            s,
            "timeouts: idle {}, keepalive {}, connect {}, redial {} .. {}",
            format_duration(q.idle_timeout),
            format_duration(q.keepalive_interval),
            format_duration(q.connect_timeout),
            format_duration(q.redial_min),
            format_duration(q.redial_max),
        )?;
        writeln!(
            s,
            "windows: stream {} .. {}, connection {} .. {}, max streams {}",
            ByteSize(q.initial_stream_window),
            ByteSize(q.max_stream_window),
            ByteSize(q.initial_connection_window),
            ByteSize(q.max_connection_window),
            q.max_streams,
        )?;
        let on = |b: bool| if b { "on" } else { "off" };
        writeln!(
            s,
            "udp: max payload {} B, gso {}, gro {}, congestion control {}",
            q.max_udp_payload,
            on(q.gso),
            on(q.gro),
            q.congestion_control.name(),
        )?;
        writeln!(
            s,
            "relay: max frame {}, buffer {}, stall timeout {}, stall budget {}, drain {}",
            ByteSize(self.relay.max_frame.into()),
            ByteSize(self.relay.buffer_size as u64),
            format_duration(self.relay.stall_timeout),
            ByteSize(self.relay.stall_budget),
            format_duration(self.drain_timeout),
        )?;
        let sh = &self.shards;
        let cpus = |c: &[usize]| c.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        match (sh.count, &sh.cpus) {
            (_, Some(c)) => writeln!(s, "shards: {} on CPUs {}", c.len(), cpus(c))?,
            (Some(n), None) => writeln!(s, "shards: {n} on the affinity mask's CPUs in order")?,
            (None, None) => writeln!(s, "shards: one per CPU of the affinity mask")?,
        }
        match &self.admin {
            Some(a) => writeln!(s, "admin: http://{}/metrics, /healthz, /readyz", a.listen)?,
            None => writeln!(s, "admin: off")?,
        }
        writeln!(s, "io: {}", self.io.name())?;
        let stats = match self.stats_interval {
            Some(d) => format!("every {}", format_duration(d)),
            None => "off".to_string(),
        };
        writeln!(
            s,
            "log: {}, stats {stats}, format {}",
            self.log_level,
            self.log_format.name()
        )
    }
}
