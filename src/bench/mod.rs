//! `rlinkd bench`: QUIC rlinks measured against the TCP, Unix-socket and TLS rlinks routers use
//! today and against the TLS sidecar pairs (HAProxy, stunnel) users would deploy instead, on one
//! machine, in one run.
//!
//! Every (workload, transport) cell runs `--rounds` times, transports interleaved ([`plan`],
//! [`round_order`]), each run in a fresh environment: a router emulator process ([`router`]), for
//! `quic` two `rlinkd run` processes between it and the clients, for `haproxy` and `stunnel` two
//! relay processes ([`peers`]), and the clients in this process ([`client`]). Each run verifies
//! what arrived (sequence numbers and every payload byte) and a failed verification fails the
//! run. CPU, memory and sockets come from /proc for every process ([`procs`]), the machine's
//! steal and outside load from /proc/stat ([`load`]); [`summary`] turns rounds into medians,
//! ranges and ratios.

pub mod client;
pub mod env;
pub mod load;
pub mod payload;
pub mod peers;
pub mod plan;
pub mod plots;
pub mod procs;
pub mod report;
pub mod router;
pub mod stream;
pub mod summary;
pub mod targets;
pub mod targets_io;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use plan::{plan, round_order, Mtu, Plan, Variant, PAYLOAD_1500, PAYLOAD_9000};

use env::{Env, EnvOptions};
use procs::ProcCost;
use router::{Percentiles, RouterMode};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RawSocket over TCP, client to router directly.
    Tcp,
    /// RawSocket over a Unix socket, directly.
    Uds,
    /// RawSocket over TLS 1.3 on TCP (BoringSSL), directly.
    Tls,
    /// client -> HAProxy a (TCP mode, plain in, TLS out) -> HAProxy b (TLS in, plain out) -> router.
    Haproxy,
    /// client -> stunnel a (plain in, TLS out) -> stunnel b (TLS in, plain out) -> router.
    Stunnel,
    /// client -> rlinkd a -> QUIC -> rlinkd b -> router.
    Quic,
}

impl Transport {
    pub const ALL: [Transport; 6] = [
        Transport::Tcp,
        Transport::Uds,
        Transport::Tls,
        Transport::Haproxy,
        Transport::Stunnel,
        Transport::Quic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Uds => "uds",
            Transport::Tls => "tls",
            Transport::Haproxy => "haproxy",
            Transport::Stunnel => "stunnel",
            Transport::Quic => "quic",
        }
    }

    /// A TLS sidecar pair: the relays users would deploy instead of rlinkd.
    pub fn is_peer(self) -> bool {
        matches!(self, Transport::Haproxy | Transport::Stunnel)
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 64 KiB frames on 1 link into a sink.
    Bulk,
    /// 256 B frames on 64 links into a sink.
    Events,
    /// 128 B request/echo on 1 link (latency).
    Rpc,
    /// 128 B request/echo on 64 links (latency under concurrency).
    #[value(name = "rpc64")]
    Rpc64,
    /// Many links opened over one node pair: time, memory per link, then one request on each.
    Realms,
    /// One link's reader stops; the others must keep their goodput.
    Stall,
    /// Time from connect to first echo for a new link on a connected node pair.
    Open,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Bulk,
        Workload::Events,
        Workload::Rpc,
        Workload::Rpc64,
        Workload::Realms,
        Workload::Stall,
        Workload::Open,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Bulk => "bulk",
            Workload::Events => "events",
            Workload::Rpc => "rpc",
            Workload::Rpc64 => "rpc64",
            Workload::Realms => "realms",
            Workload::Stall => "stall",
            Workload::Open => "open",
        }
    }
}

/// `rlinkd bench` options.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Workloads to run (default: all): bulk, events, rpc, rpc64, realms, stall, open.
    #[arg(long, value_delimiter = ',')]
    pub workload: Vec<Workload>,
    /// Transports to compare (default: all): tcp, uds, tls, haproxy, stunnel, quic.
    #[arg(long, value_delimiter = ',')]
    pub transport: Vec<Transport>,
    /// Measured time of each throughput/latency run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Runs of every (workload, transport) cell, transports interleaved (forward, reverse,
    /// forward order); the table shows the median and min..max.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub rounds: u32,
    /// Path MTU of the quic transport: 1500 (1,452-byte UDP payload) or 9000 (8,952). Default:
    /// bulk and events at both, the other workloads at 1500.
    #[arg(long, value_delimiter = ',')]
    pub mtu: Vec<Mtu>,
    /// Links opened by the realms workload.
    #[arg(long, default_value_t = 10_000)]
    pub realms_links: usize,
    /// New links opened one after another by the open workload.
    #[arg(long, default_value_t = 200)]
    pub open_rounds: usize,
    /// Local legs (client to relay a, relay b to router) of quic, haproxy and stunnel: unix or tcp.
    #[arg(long, default_value = "unix")]
    pub quic_leg: String,
    /// Largest UDP payload rlinkd sends, instead of --mtu (65527: loopback-size packets, a
    /// loopback-only figure, not a network path).
    #[arg(long)]
    pub udp_payload: Option<usize>,
    /// Shards per rlinkd node (quic only), e.g. `1,2` to compare them in one run; each quic cell
    /// runs once per count. Default: the nodes' own default (one shard per CPU they may use).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=256))]
    pub shards: Vec<u64>,
    /// I/O backend of the rlinkd nodes (quic only), e.g. `mio,uring` to compare them in one run;
    /// each quic cell runs once per backend. Default: the nodes' own default (`auto`).
    #[arg(long, value_delimiter = ',', hide = true, value_parser = parse_io)]
    pub io: Vec<crate::config::IoMode>,
    /// Run rlinkd without UDP GSO/GRO (one datagram per system call), to measure what they bring.
    #[arg(long)]
    pub no_gso: bool,
    /// `relay.buffer_size` of both rlinkd nodes (quic only), e.g. `512KiB`: the most bytes a
    /// link reads at a time and holds for its sink. Default: the nodes' own default (64 KiB).
    #[arg(long, value_name = "SIZE", conflicts_with = "report")]
    pub relay_buffer: Option<crate::config::units::ByteSize>,
    /// Measure nothing: print the table (and, with --plot, the charts) of a run saved with --json.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Write all results as JSON here (and the peers' configs into `peer-configs/` beside it).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG charts into this folder.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Working folder (certificates, configs, sockets, node logs).
    #[arg(long, default_value = "build/bench")]
    pub dir: PathBuf,
}

/// The figures of one (workload, transport) run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub workload: Workload,
    pub transport: Transport,
    /// Round of this run (0-based) in its cell.
    #[serde(default)]
    pub round: usize,
    /// quic only: the largest UDP payload rlinkd sent (1452 at a 1,500-byte MTU, 8952 at 9,000).
    #[serde(default)]
    pub udp_payload: Option<usize>,
    /// quic only: shards per node when the run set them (`--shards`).
    #[serde(default)]
    pub shards: Option<usize>,
    /// quic only: the nodes' I/O backend when the run set it (`--io`).
    #[serde(default)]
    pub io: Option<crate::config::IoMode>,
    pub links: usize,
    pub frame_bytes: usize,
    pub seconds: f64,
    pub frames: u64,
    pub payload_bytes: u64,
    pub goodput_mb_s: f64,
    pub frames_per_s: f64,
    pub latency: Option<Percentiles>,
    pub latency_kind: String,
    pub processes: Vec<ProcCost>,
    /// The machine during the measured phase: steal and CPU used outside this run.
    #[serde(default)]
    pub load: Option<load::Load>,
    /// quic only: datagrams per sendmsg (GSO) and per recvmsg (GRO), per node.
    pub datagrams_per_send: BTreeMap<String, f64>,
    pub datagrams_per_receive: BTreeMap<String, f64>,
    /// quic only: user-space copies of each payload byte inside rlinkd (sending + receiving node).
    pub relay_copies_per_byte: Option<f64>,
    /// quic only: system calls of both rlinkd nodes per GB of payload over the measured phase,
    /// as their backends count them (`rlinkd_syscalls_total`), in all and by call.
    #[serde(default)]
    pub syscalls_per_gb: Option<f64>,
    #[serde(default)]
    pub syscalls_per_gb_by_call: BTreeMap<String, f64>,
    /// tls only: whether the record layer ran in the kernel (kTLS) or in user space, and why.
    pub tls_offload: Option<String>,
    pub extra: workloads::Extra,
    pub verified: bool,
    pub verification: String,
}

use std::collections::BTreeMap;

impl RunResult {
    fn new(
        workload: Workload,
        transport: Transport,
        links: usize,
        frame_bytes: usize,
    ) -> RunResult {
        RunResult {
            workload,
            transport,
            round: 0,
            udp_payload: None,
            shards: None,
            io: None,
            links,
            frame_bytes,
            seconds: 0.0,
            frames: 0,
            payload_bytes: 0,
            goodput_mb_s: 0.0,
            frames_per_s: 0.0,
            latency: None,
            latency_kind: String::new(),
            processes: Vec::new(),
            load: None,
            datagrams_per_send: BTreeMap::new(),
            datagrams_per_receive: BTreeMap::new(),
            relay_copies_per_byte: None,
            syscalls_per_gb: None,
            syscalls_per_gb_by_call: BTreeMap::new(),
            tls_offload: None,
            extra: BTreeMap::new(),
            verified: false,
            verification: String::new(),
        }
    }

    pub fn variant(&self) -> Variant {
        Variant {
            transport: self.transport,
            udp_payload: self.udp_payload,
            shards: self.shards,
            io: self.io,
        }
    }

    /// Sum of CPU s/GB of the processes `which` selects; None when none of them has a figure.
    fn cpu_s_per_gb_of(&self, which: impl Fn(&ProcCost) -> bool) -> Option<f64> {
        let v: Vec<f64> = self
            .processes
            .iter()
            .filter(|p| which(p))
            .filter_map(|p| p.cpu_s_per_gb)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }

    /// CPU s/GB of every process of the path.
    pub fn all_cpu_s_per_gb(&self) -> Option<f64> {
        self.cpu_s_per_gb_of(|_| true)
    }

    /// CPU s/GB of the relay pair (rlinkd, HAProxy or stunnel a + b); None on direct transports.
    pub fn pair_cpu_s_per_gb(&self) -> Option<f64> {
        self.cpu_s_per_gb_of(ProcCost::is_relay)
    }

    /// CPU s/GB of the endpoints: the clients and the router emulator.
    pub fn endpoints_cpu_s_per_gb(&self) -> Option<f64> {
        self.cpu_s_per_gb_of(|p| !p.is_relay())
    }

    /// CPU microseconds of the relay pair per frame delivered (per round trip for rpc and rpc64,
    /// per link for realms and open).
    pub fn pair_cpu_us_per_frame(&self) -> Option<f64> {
        let relays: Vec<f64> = self
            .processes
            .iter()
            .filter(|p| p.is_relay())
            .map(|p| p.cpu_s)
            .collect();
        (!relays.is_empty() && self.frames > 0)
            .then(|| relays.iter().sum::<f64>() / self.frames as f64 * 1e6)
    }
}

/// Where the peers' configs of a run are kept with its results: `peer-configs/` beside the
/// `--json` file, else in the `--plot` folder.
fn peer_configs_dir(args: &BenchArgs) -> Option<PathBuf> {
    if let Some(j) = &args.json {
        let parent = j.parent().filter(|p| !p.as_os_str().is_empty());
        return Some(parent.unwrap_or(Path::new(".")).join("peer-configs"));
    }
    args.plot.as_ref().map(|d| d.join("peer-configs"))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(why) = args
        .relay_buffer
        .and_then(|b| crate::config::relay_buffer_out_of_range(b.0))
    {
        anyhow::bail!("--relay-buffer {why} (relay.buffer_size)");
    }
    if let Some(path) = &args.report {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let saved = report::Report::from_json(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        print!("{}", report::table(&saved));
        if let Some(d) = &args.plot {
            report::plot(&saved, d)?;
            println!("charts written to {}", d.display());
        }
        return Ok(());
    }
    let nofile = peers::raise_nofile();
    let workloads = if args.workload.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workload.clone()
    };
    let transports = if args.transport.is_empty() {
        Transport::ALL.to_vec()
    } else {
        args.transport.clone()
    };
    if args.relay_buffer.is_some() && !transports.contains(&Transport::Quic) {
        anyhow::bail!(
            "--relay-buffer sets the rlinkd nodes' relay.buffer_size, and this run has no quic \
             transport (--transport quic)"
        );
    }
    let quic_leg_unix = match args.quic_leg.as_str() {
        "unix" => true,
        "tcp" => false,
        other => anyhow::bail!("--quic-leg must be unix or tcp, not {other}"),
    };
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let certs = dir.join("certs");
    if !certs.join("router.pem").exists() {
        std::fs::remove_dir_all(&certs).ok();
        crate::cert::generate(&certs, &["a".into(), "b".into(), "router".into()])
            .context("certificates")?;
    }
    let machine = report::Machine::read();
    let relays: Vec<peers::RelayInfo> = transports
        .iter()
        .filter_map(|&t| peers::Relay::of(t))
        .map(|r| peers::detect(r, machine.cores))
        .collect();
    let mut skipped: Vec<report::Skipped> = relays
        .iter()
        .filter_map(|r| {
            r.skipped().map(|reason| report::Skipped {
                transport: r.transport,
                workload: None,
                reason,
            })
        })
        .collect();
    if workloads.contains(&Workload::Realms) {
        skipped.extend(realms_beyond_capacity(&relays, args.realms_links, nofile));
    }
    let configs_dir = peer_configs_dir(&args);
    let exe = std::env::current_exe()?;
    let opts = EnvOptions {
        exe: &exe,
        dir: &dir,
        certs: &certs,
        quic_leg_unix,
        gso: !args.no_gso,
        relay_buffer: args.relay_buffer.map(|b| b.0),
        relays: &relays,
    };
    let shards: Vec<usize> = args.shards.iter().map(|&n| n as usize).collect();
    let plan = plan(
        &workloads,
        &transports,
        &args.mtu,
        args.udp_payload,
        &shards,
        &args.io,
    );
    let rounds = args.rounds as usize;
    let cells: usize = plan.iter().map(|(_, v)| v.len()).sum();
    println!(
        "rlinkd bench: {} workloads, {cells} cells x {rounds} rounds, {:?} each, local legs {}, quic at {}",
        plan.len(),
        args.duration,
        args.quic_leg,
        match (args.udp_payload, args.mtu.is_empty()) {
            (Some(n), _) if n > PAYLOAD_9000 =>
                format!("{n}-byte UDP payload (loopback only, not a network path)"),
            (Some(n), _) => format!("{n}-byte UDP payload"),
            (None, false) => format!(
                "MTU {}",
                args.mtu
                    .iter()
                    .map(|m| format!("{} ({} B UDP payload)", if *m == Mtu::Jumbo { 9000 } else { 1500 }, m.udp_payload()))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            (None, true) => "MTU 1500 (1452 B UDP payload), bulk and events also at 9000 (8952 B)".into(),
        }
    );
    println!(
        "machine: {} cores, {}, kernel {}",
        machine.cores, machine.cpu, machine.kernel
    );
    if let Some(line) = report::relay_buffer_line(args.relay_buffer.map(|b| b.0)) {
        println!("{line}");
    }
    for r in &relays {
        match &r.binary {
            Some(b) => println!("{}: {b}, {}", r.transport.name(), r.version),
            None => println!(
                "{}: {}",
                r.transport.name(),
                r.skipped().unwrap_or_default()
            ),
        }
    }
    println!();

    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut saved_configs = Vec::new();
    for (w, variants) in &plan {
        for round in 0..rounds {
            for v in round_order(variants, round) {
                if skipped
                    .iter()
                    .any(|s| s.transport == v.transport && s.workload.is_none_or(|sw| sw == *w))
                {
                    continue;
                }
                eprint!(
                    "  {:<7} {:<12} round {}/{rounds} ... ",
                    w.name(),
                    v.label(),
                    round + 1
                );
                match run_one(*w, v, round, &args, &opts) {
                    Ok((r, configs)) => {
                        let load = r
                            .load
                            .as_ref()
                            .map(|l| {
                                format!(
                                    " (others {:.0} % of the machine{})",
                                    l.others_share() * 100.0,
                                    if l.flagged() { ", FLAGGED" } else { "" }
                                )
                            })
                            .unwrap_or_default();
                        eprintln!(
                            "{}{load}",
                            if r.verified {
                                "verified"
                            } else {
                                "VERIFICATION FAILED"
                            }
                        );
                        if !r.verified {
                            failures.push(format!(
                                "{} {} round {}: {}",
                                w.name(),
                                v.label(),
                                round + 1,
                                r.verification
                            ));
                        }
                        if let Some(d) = &configs_dir {
                            peers::save_configs(&configs, d)
                                .with_context(|| format!("writing {}", d.display()))?;
                            if !configs.is_empty() {
                                saved_configs = configs;
                            }
                        }
                        results.push(r);
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e:#}");
                        failures.push(format!(
                            "{} {} round {}: {e:#}",
                            w.name(),
                            v.label(),
                            round + 1
                        ));
                    }
                }
            }
        }
    }
    let rows = summary::rows(&results);
    let targets = report::targets(&rows, &skipped);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let full = report::Report {
        date: report::today(),
        command,
        machine,
        args: format!("{args:?}"),
        rounds,
        relay_buffer: args.relay_buffer.map(|b| b.0),
        relays,
        peer_configs: configs_dir
            .filter(|_| !saved_configs.is_empty())
            .map(|d| d.display().to_string()),
        skipped,
        planned: plan
            .iter()
            .map(|(w, v)| (*w, v.iter().map(|v| v.transport).collect()))
            .collect(),
        results,
        targets,
        failures: failures.clone(),
    };
    print!("{}", report::table(&full));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&full)?)?;
        println!("JSON written to {}", path.display());
    }
    if let Some(d) = &args.plot {
        report::plot(&full, d)?;
        println!("charts written to {}", d.display());
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Peer relays that cannot carry the realms workload's links with the open-file limit the bench
/// got: each link holds two sockets in each relay. Their realms row says so instead of failing
/// after a minute of half-open links.
fn realms_beyond_capacity(
    relays: &[peers::RelayInfo],
    links: usize,
    nofile: u64,
) -> Vec<report::Skipped> {
    relays
        .iter()
        .filter(|r| r.binary.is_some())
        .filter_map(|r| {
            let relay = peers::Relay::of(r.transport)?;
            let cap = peers::capacity(relay, nofile);
            (cap < links as u64).then(|| report::Skipped {
                transport: r.transport,
                workload: Some(Workload::Realms),
                reason: format!(
                    "skipped: {links} links hold {} sockets in each {} relay (2 per link); with \
                     this machine's open-file limit of {nofile} it admits {cap} (rlinkd holds 1 per \
                     link); a smaller --realms-links runs it",
                    2 * links,
                    relay.name()
                ),
            })
        })
        .collect()
}

/// Runs one cell once; returns its figures and the relay configs it ran with (peers only).
fn run_one(
    w: Workload,
    v: Variant,
    round: usize,
    args: &BenchArgs,
    opts: &EnvOptions<'_>,
) -> anyhow::Result<(RunResult, Vec<PathBuf>)> {
    let mode = match w {
        Workload::Bulk | Workload::Events | Workload::Stall => RouterMode::Sink,
        _ => RouterMode::Echo,
    };
    let mut env = Env::start(v, mode, opts)?;
    let mut r = match w {
        Workload::Bulk | Workload::Events => workloads::streaming(&mut env, w, args.duration)?,
        Workload::Rpc => workloads::rpc(&mut env, 1, args.duration)?,
        Workload::Rpc64 => workloads::rpc(&mut env, 64, args.duration)?,
        Workload::Realms => workloads::realms(&mut env, args.realms_links)?,
        Workload::Stall => workloads::stall(&mut env, args.duration)?,
        Workload::Open => workloads::open(&mut env, args.open_rounds)?,
    };
    r.round = round;
    r.udp_payload = v.udp_payload;
    r.shards = v.shards;
    r.io = v.io;
    let t = v.transport;
    if t == Transport::Tls {
        r.tls_offload = Some(crate::ktls::status());
    }
    if t == Transport::Quic {
        let nodes = env.stop_nodes();
        r.relay_copies_per_byte = copies_per_byte(nodes.iter().map(|(_, f)| f));
        for (node, f) in nodes {
            if f.send_calls > 0 {
                r.datagrams_per_send
                    .insert(node.clone(), f.datagrams_sent as f64 / f.send_calls as f64);
            }
            if f.receive_calls > 0 {
                r.datagrams_per_receive
                    .insert(node, f.datagrams_received as f64 / f.receive_calls as f64);
            }
        }
    }
    let configs = env.stop_relays();
    Ok((r, configs))
}

/// User-space copies of a relayed byte inside rlinkd, both nodes together, as the nodes counted
/// them (`rlinkd_copied_bytes_total`): every node's copied bytes over the bytes relayed (each
/// relayed byte crosses both nodes; the node that counted the most is the reference). Relayed
/// bytes are the messages with their frame headers; the few bytes of handshakes, stream
/// preambles and PING frames are copied but not counted as relayed. `None` before any byte is
/// relayed.
fn copies_per_byte<'a>(nodes: impl IntoIterator<Item = &'a env::NodeFigures>) -> Option<f64> {
    let (mut copied, mut relayed) = (0u64, 0u64);
    for f in nodes {
        copied += f.copied_bytes;
        relayed = relayed.max(f.link_bytes);
    }
    (relayed > 0).then(|| copied as f64 / relayed as f64)
}

/// `--io` values: the configuration's names for the I/O backends.
fn parse_io(s: &str) -> Result<crate::config::IoMode, String> {
    crate::config::IoMode::ALL
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| format!("{s:?}: expected auto, uring or mio"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_per_byte_adds_the_nodes_copies_over_the_bytes_relayed_once() {
        let a = env::NodeFigures {
            copied_bytes: 1_000,
            link_bytes: 1_000,
            ..Default::default()
        };
        let b = env::NodeFigures {
            copied_bytes: 2_100,
            link_bytes: 990,
            ..Default::default()
        };
        assert_eq!(copies_per_byte([&a, &b]), Some(3.1));
        assert_eq!(copies_per_byte([&env::NodeFigures::default()]), None);
    }

    #[test]
    fn peer_configs_go_beside_the_json() {
        let mut args = <BenchArgsParser as clap::Parser>::parse_from(["x"]).args;
        assert_eq!(peer_configs_dir(&args), None);
        args.json = Some("perf/results/run/bench.json".into());
        assert_eq!(
            peer_configs_dir(&args),
            Some(PathBuf::from("perf/results/run/peer-configs"))
        );
        args.json = Some("out.json".into());
        assert_eq!(
            peer_configs_dir(&args),
            Some(PathBuf::from("./peer-configs"))
        );
        // The defaults the documentation states.
        let d = <BenchArgsParser as clap::Parser>::parse_from(["x"]).args;
        assert_eq!(d.rounds, 3);
        assert_eq!(d.duration, Duration::from_secs(1));
        assert!(d.mtu.is_empty() && d.udp_payload.is_none());
    }

    /// Where the open-file limit stops a relay short of the realms links, its row says why.
    #[test]
    fn realms_beyond_a_relays_file_limit_is_skipped_with_the_reason() {
        let relays = vec![
            peers::RelayInfo {
                transport: Transport::Haproxy,
                binary: Some("/usr/sbin/haproxy".into()),
                version: String::new(),
                threads: String::new(),
            },
            peers::RelayInfo {
                transport: Transport::Stunnel,
                binary: None,
                version: String::new(),
                threads: String::new(),
            },
        ];
        let s = realms_beyond_capacity(&relays, 10_000, 20_000);
        assert_eq!(
            s.len(),
            1,
            "a relay that is not installed is skipped for that already"
        );
        assert_eq!(s[0].transport, Transport::Haproxy);
        assert_eq!(s[0].workload, Some(Workload::Realms));
        assert!(
            s[0].reason
                .starts_with("skipped: 10000 links hold 20000 sockets"),
            "{}",
            s[0].reason
        );
        assert!(realms_beyond_capacity(&relays, 10_000, 1 << 16).is_empty());
        assert!(realms_beyond_capacity(&relays, 5_000, 20_000).is_empty());
    }

    #[derive(clap::Parser)]
    struct BenchArgsParser {
        #[command(flatten)]
        args: BenchArgs,
    }
}
