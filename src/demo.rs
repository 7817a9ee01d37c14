//! `rlinkd demo`: two nodes on loopback, a built-in RawSocket echo router behind node B, and a
//! RawSocket client in front of node A; prints what crossed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::addr::LocalAddr;
use crate::cluster::{free_udp_port, wait_for_log, NodePlan, NodeProcess};
use crate::endpoints::{EchoRouter, RawSocketClient, RouterOptions};
use crate::rawsocket::{ClientHandshake, MaxLen, Serializer};

pub fn run(dir: Option<PathBuf>, links: usize) -> anyhow::Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let certs = dir.join("certs");
    if !certs.join("ca.pem").exists() {
        crate::cert::generate(&certs, &["a".to_string(), "b".to_string()])
            .context("generating certificates")?;
    }
    let exe = std::env::current_exe()?;
    let (port_a, port_b) = (free_udp_port()?, free_udp_port()?);
    let router_addr = LocalAddr::Unix(dir.join("router-b.sock"));
    let link_addr = LocalAddr::Unix(dir.join("a-to-b.sock"));

    println!("rlinkd demo in {}", dir.display());
    let router = EchoRouter::start(&router_addr, RouterOptions::default())
        .context("starting the built-in router")?;
    println!("  router B (built-in RawSocket echo router) on {router_addr}");

    let mut a = NodePlan::new("a", port_a);
    a.peers.push(("b".into(), Some(port_b)));
    a.links
        .push(("b".into(), link_addr.clone(), "router".into()));
    let mut b = NodePlan::new("b", port_b);
    b.peers.push(("a".into(), None));
    b.routes.push(("router".into(), router_addr.clone()));
    let mut node_b = NodeProcess::start(&exe, &dir, &certs, &b)?;
    let mut node_a = NodeProcess::start(&exe, &dir, &certs, &a)?;
    println!(
        "  node a: QUIC 127.0.0.1:{port_a}, link endpoint {link_addr} -> peer b, route \"router\""
    );
    println!("  node b: QUIC 127.0.0.1:{port_b}, route \"router\" -> {router_addr}");
    if !wait_for_log(&node_a, "peer connected", Duration::from_secs(10)) {
        bail!(
            "node a did not connect to node b; its log:\n{}",
            node_a.log_text()
        );
    }
    println!("  a and b connected over QUIC (mutual TLS 1.3)\n");

    let hs = ClientHandshake {
        max_len: MaxLen::MAX,
        serializer: Serializer::Cbor,
    };
    let started = Instant::now();
    let (client, reply) = RawSocketClient::connect(&link_addr, hs, Duration::from_secs(10))
        .context("client handshake through rlinkd")?;
    println!(
        "  client -> a: handshake {:02x?}, router's reply via b: {:02x?}",
        hs.encode(),
        reply.encode()
    );
    let (mut tx, mut rx) = client.split();
    // A WAMP HELLO for realm1 in CBOR ([1, "realm1", {}]) first: rlinkd logs the realm it names.
    let hello: Vec<u8> = [&[0x83u8, 0x01, 0x66][..], b"realm1", &[0xa0]].concat();
    tx.send(&hello)?;
    if rx.recv()? != hello {
        bail!("echo of the HELLO differs");
    }
    let sizes = [0usize, 1, 1024, 64 << 10, 1 << 20, 16 << 20];
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        for &n in &sizes {
            tx.send(&pattern(n))?;
        }
        Ok(())
    });
    println!("  {:>10}  {:>10}  {:>8}", "frame", "echoed", "check");
    for &n in &sizes {
        let got = rx
            .recv()
            .with_context(|| format!("echo of a {n}-byte frame"))?;
        let ok = got == pattern(n);
        println!(
            "  {:>10}  {:>10}  {:>8}",
            human(n),
            human(got.len()),
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            bail!("echo of a {n}-byte frame differs");
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    println!(
        "  first link: a HELLO and {} frames echoed byte-exact in {:.2?}",
        sizes.len(),
        started.elapsed()
    );
    drop(rx);
    // Let node a log the first link's close line, with its counters.
    wait_for_log(&node_a, "link out", Duration::from_secs(5));

    let started = Instant::now();
    let handles: Vec<_> = (0..links)
        .map(|i| {
            let addr = link_addr.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let (mut c, _) = RawSocketClient::connect(&addr, hs, Duration::from_secs(10))?;
                let msg = format!("hello from link {i}").into_bytes();
                c.send(&msg)?;
                if c.recv()? != msg {
                    bail!("link {i}: echo differs");
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("link thread panicked"))??;
    }
    println!("  {links} more links opened concurrently on the same QUIC connection, each echoed, in {:.2?}", started.elapsed());
    let s = router.stats();
    println!(
        "  router B saw {} connections and {} frames ({} bytes)\n",
        s.connections, s.frames, s.bytes
    );

    node_a.stop();
    node_b.stop();
    for n in [&node_a, &node_b] {
        let log = n.log_text();
        println!("  node {} log (first lines):", n.name);
        // From "node listening" on: the start-up lines before it (certificate, socket buffers)
        // say nothing about what crossed.
        let lines = log
            .lines()
            .skip_while(|l| !l.contains("node listening"))
            .filter(|l| !l.contains(" stats"));
        for line in lines.take(4) {
            println!(
                "    {}",
                line.split_once("  ")
                    .map_or(line, |(_, rest)| rest.trim_start())
            );
        }
    }
    println!("\ndemo OK: logs and configs are in {}", dir.display());
    Ok(())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("rlinkd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
