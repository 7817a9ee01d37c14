//! The workloads of `rlinkd bench`. Each runs in a fresh [`Env`], measures one phase, verifies
//! what arrived and returns a [`RunResult`].

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::client::{Client, LinkMode};
use super::env::{Env, Snapshot};
use super::load::Load;
use super::procs::cost;
use super::router::{Percentiles, RouterReport};
use super::{RunResult, Workload};

/// Bytes per write in streaming workloads: about what a router's transport flushes at once.
const BULK_BATCH: usize = 256 << 10;
const EVENTS_BATCH: usize = 8 << 10;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

fn client(env: &Env) -> io::Result<Client> {
    Client::new(env.client_addr.clone(), env.tls.clone())
}

fn open_links(c: &mut Client, n: usize, mode: LinkMode) -> io::Result<Vec<usize>> {
    // Waves, so listen backlogs never overflow.
    let mut keys = Vec::with_capacity(n);
    while keys.len() < n {
        let wave = (n - keys.len()).min(256);
        for _ in 0..wave {
            keys.push(c.open(mode)?);
        }
        let want = keys.len();
        if !c.run_until(OPEN_TIMEOUT, |c| {
            c.open_count() >= want || !c.failed().is_empty()
        })? || !c.failed().is_empty()
        {
            return Err(io::Error::other(format!(
                "links did not open: {} of {want} open; {:?}",
                c.open_count(),
                c.failed().first()
            )));
        }
    }
    Ok(keys)
}

fn router_wait(env: &mut Env, c: &mut Client, want_frames: u64) -> io::Result<RouterReport> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        c.run_for(Duration::from_millis(20))?;
        let r = env.router.stats()?;
        if r.frames >= want_frames || r.errors > 0 || Instant::now() >= deadline {
            return Ok(r);
        }
    }
}

fn verify_sink(r: &RouterReport, c: &Client) -> (bool, String) {
    let sent_frames: u64 = c.links.iter().map(|(_, l)| l.sent_frames).sum();
    let sent_bytes: u64 = c.links.iter().map(|(_, l)| l.sent_bytes).sum();
    let ok = r.errors == 0
        && r.frames == sent_frames
        && r.payload_bytes == sent_bytes
        && c.failed().is_empty();
    let note = format!(
        "router received {} of {} frames, {} of {} payload bytes, every byte compared, {} sequence/content errors{}",
        r.frames,
        sent_frames,
        r.payload_bytes,
        sent_bytes,
        r.errors,
        c.failed().first().map(|e| format!(", link error: {e}")).unwrap_or_default()
    );
    (ok, note)
}

/// bulk and events: links stream frames into a sink router for `d`; goodput counts what the
/// router received, timed until it has everything that was sent.
pub fn streaming(env: &mut Env, w: Workload, d: Duration) -> io::Result<RunResult> {
    let (links, frame, batch) = match w {
        Workload::Bulk => (1, 64 << 10, BULK_BATCH),
        _ => (64, 256, EVENTS_BATCH),
    };
    let mut c = client(env)?;
    c.set_sending(false);
    open_links(&mut c, links, LinkMode::Stream { frame, batch })?;
    env.router.command("reset")?;
    let before = env.sample_all();
    let started = Instant::now();
    c.set_sending(true);
    c.run_for(d)?;
    c.set_sending(false);
    let sent_frames: u64 = c.links.iter().map(|(_, l)| l.sent_frames).sum();
    let r = router_wait(env, &mut c, sent_frames)?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = env.sample_all();
    let (verified, note) = verify_sink(&r, &c);
    let mut res = RunResult::new(w, env.transport, links, frame);
    res.finish_throughput(elapsed, r.frames, r.payload_bytes);
    res.latency = Some(r.latency.clone());
    res.latency_kind = "one-way, client write to router read".into();
    res.costs(&before, &after, r.payload_bytes);
    res.verify(verified, note);
    Ok(res)
}

/// rpc: closed-loop 128-byte request/echo on `links` links for `d`; latency is the round trip.
pub fn rpc(env: &mut Env, links: usize, d: Duration) -> io::Result<RunResult> {
    let frame = 128;
    let mut c = client(env)?;
    c.set_sending(false);
    open_links(
        &mut c,
        links,
        LinkMode::Rpc {
            frame,
            rounds: u64::MAX,
        },
    )?;
    // Warm up, then measure.
    c.set_sending(true);
    c.run_for(Duration::from_millis(300))?;
    c.rtt.reset();
    let done_before: u64 = c.links.iter().map(|(_, l)| l.rpc_done).sum();
    let before = env.sample_all();
    let started = Instant::now();
    c.run_for(d)?;
    c.set_sending(false);
    c.run_until(Duration::from_secs(10), |c| {
        c.links.iter().all(|(_, l)| l.sent_frames == l.echo.frames)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = env.sample_all();
    let done: u64 = c.links.iter().map(|(_, l)| l.rpc_done).sum::<u64>() - done_before;
    let echoed: u64 = c.links.iter().map(|(_, l)| l.echo.frames).sum();
    let sent: u64 = c.links.iter().map(|(_, l)| l.sent_frames).sum();
    let verified = echoed == sent && c.failed().is_empty() && done > 0;
    let note = format!(
        "{echoed} of {sent} requests echoed back, every byte compared{}",
        c.failed()
            .first()
            .map(|e| format!("; {e}"))
            .unwrap_or_default()
    );
    let w = if links == 1 {
        Workload::Rpc
    } else {
        Workload::Rpc64
    };
    let mut res = RunResult::new(w, env.transport, links, frame);
    // Goodput counts request and response payload.
    res.finish_throughput(elapsed, done, done * 2 * frame as u64);
    res.latency = Some(Percentiles::from_histogram(&c.rtt));
    res.latency_kind = "round trip, request to verified echo".into();
    res.costs(&before, &after, done * 2 * frame as u64);
    res.verify(verified, note);
    Ok(res)
}

/// realms: opens `n` links over the node pair, measures the time to open them all and the memory
/// each costs, then sends one request on every link and verifies every echo.
pub fn realms(env: &mut Env, n: usize) -> io::Result<RunResult> {
    let frame = 128;
    let mut c = client(env)?;
    c.set_sending(false);
    let before = env.sample_all();
    let started = Instant::now();
    let keys = open_links(&mut c, n, LinkMode::Rpc { frame, rounds: 1 })?;
    let open_s = started.elapsed().as_secs_f64();
    // Let the far side settle (acceptor connections to the router), then read memory.
    c.run_for(Duration::from_millis(500))?;
    let opened = env.sample_all();
    let traffic_started = Instant::now();
    c.set_sending(true);
    c.run_until(Duration::from_secs(60), |c| {
        c.links.iter().all(|(_, l)| l.rpc_done >= 1) || !c.failed().is_empty()
    })?;
    let traffic_s = traffic_started.elapsed().as_secs_f64();
    let after = env.sample_all();
    let done = c.links.iter().filter(|(_, l)| l.rpc_done >= 1).count();
    let r = env.router.stats()?;
    let verified = done == keys.len() && c.failed().is_empty() && r.errors == 0;
    let note = format!("{done} of {} links echoed their request, every byte compared; router accepted {} connections", keys.len(), r.accepted);
    let mut res = RunResult::new(Workload::Realms, env.transport, n, frame);
    res.finish_throughput(traffic_s, done as u64, done as u64 * 2 * frame as u64);
    res.latency = Some(Percentiles::from_histogram(&c.rtt));
    res.latency_kind = "round trip of the first request on each link, all links at once".into();
    res.costs(&before, &after, done as u64 * 2 * frame as u64);
    res.extra.insert("open_all_s".into(), open_s);
    for ((name, b), (_, o)) in before.procs.iter().zip(&opened.procs) {
        let per_link_kb = (o.rss_kb as f64 - b.rss_kb as f64) / n as f64;
        res.extra
            .insert(format!("rss_kb_per_link_{name}"), per_link_kb);
    }
    res.verify(verified, note);
    c.close_all();
    Ok(res)
}

/// stall: 8 links into a sink router. Phase 1: links 1-7 stream, link 0 idle. Phase 2: link 0
/// streams too but the router stops reading it. The other links' goodput and latency must hold.
pub fn stall(env: &mut Env, d: Duration) -> io::Result<RunResult> {
    let (frame, batch) = (16 << 10, 64 << 10);
    let mut c = client(env)?;
    c.set_sending(false);
    // Link 0 first, so it is the router's connection 0.
    let first = open_links(&mut c, 1, LinkMode::Rpc { frame, rounds: 0 })?[0];
    open_links(&mut c, 7, LinkMode::Stream { frame, batch })?;
    let phase = d / 2;
    let others = |r: &RouterReport| r.per_conn_bytes.iter().skip(1).sum::<u64>();

    env.router.command("reset")?;
    let r0 = env.router.stats()?;
    let before = env.sample_all();
    c.set_sending(true);
    c.run_for(phase)?;
    let r1 = env.router.stats()?;
    let free_rate = (others(&r1) - others(&r0)) as f64 / phase.as_secs_f64();

    env.router.command("stall 0")?;
    c.set_mode(first, LinkMode::Stream { frame, batch });
    env.router.command("reset")?;
    c.run_for(phase)?;
    let r2 = env.router.stats()?;
    let stalled_rate = (others(&r2) - others(&r1)) as f64 / phase.as_secs_f64();
    let stalled_link_bytes = r2.per_conn_bytes.first().copied().unwrap_or(0);
    let latency = r2.latency.clone();

    env.router.command("resume")?;
    c.set_sending(false);
    let sent_frames: u64 = c.links.iter().map(|(_, l)| l.sent_frames).sum();
    let r = router_wait(env, &mut c, sent_frames)?;
    let after = env.sample_all();
    let (verified, note) = verify_sink(&r, &c);
    let mut res = RunResult::new(Workload::Stall, env.transport, 8, frame);
    res.finish_throughput(
        phase.as_secs_f64(),
        0,
        (stalled_rate * phase.as_secs_f64()) as u64,
    );
    res.latency = Some(latency);
    res.latency_kind = "one-way on the 7 flowing links while link 0 is stalled".into();
    res.costs(&before, &after, r.payload_bytes);
    res.extra.insert("others_mb_s_free".into(), free_rate / 1e6);
    res.extra
        .insert("others_mb_s_with_stall".into(), stalled_rate / 1e6);
    res.extra.insert(
        "stall_ratio".into(),
        if free_rate > 0.0 {
            stalled_rate / free_rate
        } else {
            0.0
        },
    );
    res.extra.insert(
        "stalled_link_bytes_during_stall".into(),
        stalled_link_bytes as f64,
    );
    res.verify(
        verified,
        format!("{note}; after resume the stalled link drained too"),
    );
    Ok(res)
}

/// open: `rounds` new links, one after another, on an already connected node pair; each sends one
/// frame and waits for its echo. Latency is connect-to-first-echo.
pub fn open(env: &mut Env, rounds: usize) -> io::Result<RunResult> {
    let frame = 128;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other)?;
    let before = env.sample_all();
    let started = Instant::now();
    let mut ok = 0usize;
    let mut errors = Vec::new();
    for _ in 0..rounds {
        let mut c = client(env)?;
        let k = c.open(LinkMode::Rpc { frame, rounds: 1 })?;
        c.run_until(Duration::from_secs(10), |c| {
            c.links
                .get(k)
                .is_some_and(|l| l.first_echo.is_some() || l.error.is_some())
        })?;
        match c.links.get(k).and_then(|l| l.first_echo) {
            Some(t) => {
                hist.record(t.as_nanos().max(1) as u64).ok();
                ok += 1;
            }
            None => errors.extend(c.failed()),
        }
        c.close_all();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = env.sample_all();
    let mut res = RunResult::new(Workload::Open, env.transport, rounds, frame);
    res.finish_throughput(elapsed, ok as u64, ok as u64 * 2 * frame as u64);
    res.latency = Some(Percentiles::from_histogram(&hist));
    res.latency_kind = "connect to first verified echo on a new link".into();
    res.costs(&before, &after, ok as u64 * 2 * frame as u64);
    let note = format!(
        "{ok} of {rounds} new links echoed their first frame{}",
        errors.first().map(|e| format!("; {e}")).unwrap_or_default()
    );
    res.verify(ok == rounds, note);
    Ok(res)
}

impl RunResult {
    /// Per-process costs of the phase between two snapshots, and what the rest of the machine
    /// did meanwhile.
    fn costs(&mut self, before: &Snapshot, after: &Snapshot, bytes: u64) {
        self.processes = before
            .procs
            .iter()
            .zip(&after.procs)
            .map(|((n, b), (_, a))| cost(n, *b, *a, bytes))
            .collect();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        self.load = Some(Load::between(
            before.sys,
            after.sys,
            after.at.duration_since(before.at).as_secs_f64(),
            cores,
            self.processes.iter().map(|p| p.cpu_s).sum(),
        ));
        if let (Some(b), Some(a)) = (&before.syscalls, &after.syscalls) {
            self.syscalls_per_gb(b, a, bytes);
        }
    }

    /// System calls per GB of `bytes` payload between two counts by call (both nodes summed).
    fn syscalls_per_gb(
        &mut self,
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        bytes: u64,
    ) {
        if bytes == 0 {
            return;
        }
        let gb = bytes as f64 / 1e9;
        let mut total = 0;
        for (call, n) in after {
            let delta = n.saturating_sub(before.get(call).copied().unwrap_or(0));
            total += delta;
            if delta > 0 {
                self.syscalls_per_gb_by_call
                    .insert(call.clone(), delta as f64 / gb);
            }
        }
        self.syscalls_per_gb = Some(total as f64 / gb);
    }

    fn finish_throughput(&mut self, secs: f64, frames: u64, bytes: u64) {
        self.seconds = secs;
        self.frames = frames;
        self.payload_bytes = bytes;
        if secs > 0.0 {
            self.goodput_mb_s = bytes as f64 / secs / 1e6;
            self.frames_per_s = frames as f64 / secs;
        }
    }

    fn verify(&mut self, ok: bool, note: String) {
        self.verified = ok;
        self.verification = note;
    }
}

pub type Extra = BTreeMap<String, f64>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls per GB come from the counts' growth over the measured phase, both nodes summed;
    /// a call that did not grow is left out of the breakdown.
    #[test]
    fn syscalls_per_gb_are_the_growth_over_the_payload() {
        let counts = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let before = counts(&[
            ("epoll_wait", 100),
            ("udp_sendmsg", 50),
            ("local_accept", 2),
        ]);
        let after = counts(&[
            ("epoll_wait", 600),
            ("udp_sendmsg", 1050),
            ("local_accept", 2),
            ("io_uring_enter", 250),
        ]);
        let mut r = RunResult::new(Workload::Bulk, super::super::Transport::Quic, 1, 65536);
        r.syscalls_per_gb(&before, &after, 500_000_000);
        assert_eq!(r.syscalls_per_gb, Some(3500.0));
        assert_eq!(r.syscalls_per_gb_by_call["epoll_wait"], 1000.0);
        assert_eq!(r.syscalls_per_gb_by_call["udp_sendmsg"], 2000.0);
        assert_eq!(r.syscalls_per_gb_by_call["io_uring_enter"], 500.0);
        assert!(!r.syscalls_per_gb_by_call.contains_key("local_accept"));
    }
}
