//! Running rlinkd as a service: systemd readiness notifications, link endpoint socket
//! permissions, JSON logs, the UDP buffer warning and the systemd unit. Each test starts the real
//! binary, bounded in time and stopped by its PID.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rlinkd::cluster::NodePlan;

fn free_udp_port() -> u16 {
    rlinkd::cluster::free_udp_port().unwrap()
}

/// `rlinkd run` started by the test itself (for its environment or a wrapper command); killed
/// by PID when dropped.
struct Run {
    child: Option<Child>,
    log: PathBuf,
}

impl Run {
    /// Starts `wrapper... rlinkd run --config CONFIG` with `vars` set, stderr and stdout to a
    /// log in the test folder.
    fn start(env: &Env, plan: &NodePlan, wrapper: &[&str], vars: &[(&str, &Path)]) -> Run {
        Run::start_toml(env, &plan.to_toml(&env.certs), wrapper, vars)
    }

    fn start_toml(env: &Env, toml: &str, wrapper: &[&str], vars: &[(&str, &Path)]) -> Run {
        let config = env.path("node.toml");
        std::fs::write(&config, toml).unwrap();
        let log = env.path("node.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe());
                c
            }
            None => Command::new(exe()),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rlinkd");
        Run {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

fn recv_notification(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Under `Type=notify`, systemd counts rlinkd as started at READY=1, so units ordered after it
/// (the routers) find every endpoint there; RELOADING=1 .. READY=1 brackets a reload; STOPPING=1
/// says a stop (drain) is under way.
#[test]
fn systemd_hears_ready_once_endpoints_exist_and_stopping_on_sigterm() {
    let env = Env::new(&["a", "b"]);
    let notify_path = env.path("notify");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(CONNECT_WAIT)).unwrap();
    let mut plan = NodePlan::new("a", free_udp_port());
    plan.peers.push(("b".into(), None));
    let ep = env.path("a.sock");
    plan.links.push((
        "b".into(),
        rlinkd::addr::LocalAddr::Unix(ep.clone()),
        "r".into(),
    ));
    let mut run = Run::start(&env, &plan, &[], &[("NOTIFY_SOCKET", &notify_path)]);

    let ready = recv_notification(&sock).expect("no READY=1 within the wait");
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification is not READY=1: {ready:?}\n{}",
        run.log()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&ep).is_ok(),
        "READY=1 came before the link endpoint accepted"
    );

    // A reload is bracketed by RELOADING=1 (with the monotonic clock) and READY=1.
    run.signal(libc::SIGHUP);
    let reloading = recv_notification(&sock).expect("no RELOADING=1 after SIGHUP");
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = recv_notification(&sock).expect("no READY=1 after the reload");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    run.signal(libc::SIGTERM);
    let stopping = recv_notification(&sock).expect("no STOPPING=1 after SIGTERM");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(run.wait_exit(Duration::from_secs(15)), "node did not stop");
}

/// The endpoint's socket file is its access control: the configured mode and group after
/// bind, 0660 by default, never wider on the way.
#[test]
fn unix_endpoints_get_the_configured_mode_and_group() {
    let env = Env::new(&["a", "b"]);
    let gid = std::fs::metadata(env.dir.path()).unwrap().gid();
    let mut plan = NodePlan::new("a", free_udp_port());
    plan.peers.push(("b".into(), None));
    let (custom, default) = (env.path("custom.sock"), env.path("default.sock"));
    for p in [&custom, &default] {
        plan.links.push((
            "b".into(),
            rlinkd::addr::LocalAddr::Unix(p.clone()),
            "r".into(),
        ));
    }
    // Extra keys go into the first [[links]] table (custom.sock).
    let toml = plan.to_toml(&env.certs).replacen(
        "route = \"r\"",
        &format!("route = \"r\"\nsocket_mode = \"0640\"\nsocket_group = {gid}"),
        1,
    );
    let run = Run::start_toml(&env, &toml, &[], &[]);
    let up = run.wait_log("node listening", CONNECT_WAIT);
    let stat = |p: &Path| std::fs::metadata(p).map(|m| (m.permissions().mode() & 0o7777, m.gid()));
    let (custom_stat, default_stat) = (stat(&custom), stat(&default));
    drop(run);
    assert!(up, "node did not start");
    assert_eq!(custom_stat.unwrap(), (0o640, gid));
    assert_eq!(default_stat.unwrap().0, 0o660);
}

/// `log_format = "json"`: each line is one JSON object with the event's fields as keys.
#[test]
fn json_logs_are_one_object_per_line_with_fields() {
    let env = Env::new(&["a", "b"]);
    let mut plan = NodePlan::new("a", free_udp_port());
    plan.peers.push(("b".into(), None));
    plan.top_extra.push("log_format = \"json\"".into());
    let mut node = env.start(&plan);
    expect_log(&node, "node listening", CONNECT_WAIT);
    node.stop();
    let text = node.log_text();
    let mut listening = None;
    let mut shard = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"] == "node listening" {
            listening = Some(v);
        } else if v["message"] == "shard listening" {
            shard = Some(v);
        }
    }
    let v = listening.expect("no node listening event");
    assert_eq!(v["node"], "a");
    assert_eq!(v["quic"], format!("127.0.0.1:{}", plan.quic_port));
    assert!(v["shards"].is_u64() && v["steering"].is_boolean(), "{v}");
    let v = shard.expect("no shard listening event");
    assert!(v["gso"].is_boolean() && v["shard"].is_u64(), "{v}");
}

/// Without CAP_NET_ADMIN the kernel caps UDP buffers at net.core.rmem_max / wmem_max; the node
/// says so, naming the sysctl, instead of dropping datagrams silently under load.
#[test]
fn capped_udp_buffers_are_logged_with_the_sysctl_to_raise() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if rmem_max >= 8 << 20 {
        eprintln!("skipped: net.core.rmem_max is {rmem_max}, so the kernel caps nothing here");
        return;
    }
    // Drop CAP_NET_ADMIN (which lets root force larger buffers) for the node only.
    let has_setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_setpriv {
        eprintln!("skipped: setpriv (util-linux) is not installed, cannot drop CAP_NET_ADMIN");
        return;
    }
    let env = Env::new(&["a", "b"]);
    let mut plan = NodePlan::new("a", free_udp_port());
    plan.peers.push(("b".into(), None));
    let wrapper = [
        "setpriv",
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
        "--",
    ];
    let run = Run::start(&env, &plan, &wrapper, &[]);
    assert!(
        run.wait_log("node listening", CONNECT_WAIT),
        "{}",
        run.log()
    );
    let log = run.log();
    assert!(log.contains("UDP socket buffers"), "{log}");
    assert!(
        log.contains("net.core.rmem_max") && log.contains("WARN"),
        "no warning naming net.core.rmem_max:\n{log}"
    );
}

/// The unit file passes systemd's own checks where systemd-analyze exists.
#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/rlinkd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for needle in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=rlinkd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(text.contains(needle), "unit lacks {needle:?}");
    }
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    // verify resolves ExecStart; point it at this build's binary in a copy of the unit.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("rlinkd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/rlinkd", &exe().display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units on this host (or no running systemd) are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rlinkd.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
