//! The command line: `rlinkd cert` writes a CA and node certificates, `rlinkd check` validates a
//! configuration, prints what the node would do, and names the key at fault when it cannot.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use rlinkd::addr::LocalAddr;
use rlinkd::cluster::NodePlan;

fn free_udp_port() -> u16 {
    rlinkd::cluster::free_udp_port().unwrap()
}

fn free_tcp_port() -> u16 {
    rlinkd::cluster::free_tcp_port().unwrap()
}

const CLI_WAIT: Duration = Duration::from_secs(30);

#[test]
fn cert_writes_a_ca_and_node_certificates_and_never_overwrites() {
    let env = Env::new(&[]);
    let dir = env.path("pki");
    let d = dir.to_str().unwrap();
    let (ok, out, err) = run_cli(&["cert", "--dir", d, "a", "b"], CLI_WAIT);
    assert!(ok, "rlinkd cert failed: {err}");
    for f in ["ca.pem", "ca.key", "a.pem", "a.key", "b.pem", "b.key"] {
        let p = dir.join(f);
        assert!(p.is_file(), "{f} missing");
        assert!(
            out.contains(&p.display().to_string()),
            "stdout does not list {f}: {out}"
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("-----BEGIN "), "{f} is not PEM");
        if f.ends_with(".key") {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f} mode {mode:o}");
        }
    }
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    // Again for an existing node: refused, nothing changed, the file named.
    let a_pem = std::fs::read(dir.join("a.pem")).unwrap();
    let (ok, _, err) = run_cli(&["cert", "--dir", d, "a"], CLI_WAIT);
    assert!(!ok, "rlinkd cert overwrote a.pem");
    assert!(err.contains("a.pem"), "error does not name the file: {err}");
    assert_eq!(std::fs::read(dir.join("a.pem")).unwrap(), a_pem);

    // A new node joins: the existing CA signs it.
    let (ok, _, err) = run_cli(&["cert", "--dir", d, "c"], CLI_WAIT);
    assert!(ok, "adding node c failed: {err}");
    assert!(dir.join("c.pem").is_file() && dir.join("c.key").is_file());
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca,
        "the CA was replaced"
    );

    // Bad node names are refused.
    let (ok, _, err) = run_cli(&["cert", "--dir", d, "no/slash"], CLI_WAIT);
    assert!(
        !ok && err.contains("no/slash"),
        "bad name accepted or not named: {err}"
    );
}

fn plan_with_everything(env: &Env) -> NodePlan {
    let mut p = NodePlan::new("a", 19_321);
    p.peers.push(("b".into(), Some(19_322)));
    p.peers.push(("c".into(), None));
    p.links
        .push(("b".into(), env.unix("a-to-b.sock"), "router".into()));
    p.links.push((
        "c".into(),
        "tcp:127.0.0.1:19400".parse().unwrap(),
        "router".into(),
    ));
    p.routes
        .push(("router".into(), "tcp:127.0.0.1:8081".parse().unwrap()));
    p
}

fn check(env: &Env, name: &str, toml: &str) -> (bool, String, String) {
    let path = env.path(name);
    std::fs::write(&path, toml).unwrap();
    run_cli(&["check", "--config", path.to_str().unwrap()], CLI_WAIT)
}

#[test]
fn check_prints_what_the_node_would_do() {
    let env = Env::new(&["a", "b", "c"]);
    let plan = plan_with_everything(&env);
    let (ok, out, err) = check(&env, "a.toml", &plan.to_toml(&env.certs));
    assert!(ok, "check failed: {err}\n{out}");
    for needle in [
        "node a".to_string(),
        "127.0.0.1:19321".to_string(),
        "b dial 127.0.0.1:19322".to_string(),
        "c accept only".to_string(),
        env.unix("a-to-b.sock").to_string(),
        "tcp:127.0.0.1:19400".to_string(),
        "tcp:127.0.0.1:8081".to_string(),
        "configuration OK".to_string(),
    ] {
        assert!(
            out.contains(&needle),
            "check output lacks {needle:?}:\n{out}"
        );
    }
}

#[test]
fn check_rejects_unknown_keys_and_names_them() {
    let env = Env::new(&["a", "b"]);
    let good = plan_with_everything(&env).to_toml(&env.certs);

    let mut in_quic = plan_with_everything(&env);
    in_quic.quic_extra.push("idle_timeot = \"2s\"".into());
    let mut top = plan_with_everything(&env);
    top.top_extra.push("log_levle = \"debug\"".into());
    let in_link = good.replacen(
        "route = \"router\"",
        "route = \"router\"\nrout_retry = 3",
        1,
    );
    assert_ne!(in_link, good);

    for (what, toml, key) in [
        ("[quic]", in_quic.to_toml(&env.certs), "idle_timeot"),
        ("top level", top.to_toml(&env.certs), "log_levle"),
        ("[[links]]", in_link, "rout_retry"),
    ] {
        let (ok, out, err) = check(&env, "bad.toml", &toml);
        assert!(!ok, "{what}: unknown key {key} accepted:\n{out}");
        assert!(
            err.contains(key),
            "{what}: the error does not name {key}: {err}"
        );
        assert!(!out.contains("configuration OK"), "{what}: {out}");
    }

    // A value of the wrong shape is named too.
    let mut bad_value = plan_with_everything(&env);
    bad_value.quic_extra.push("idle_timeout = \"soon\"".into());
    let (ok, _, err) = check(&env, "bad2.toml", &bad_value.to_toml(&env.certs));
    assert!(
        !ok && err.contains("idle_timeout"),
        "bad duration not named: {err}"
    );

    // A missing certificate file is named.
    let missing = good.replace("a.pem", "nope.pem");
    let (ok, _, err) = check(&env, "bad3.toml", &missing);
    assert!(
        !ok && err.contains("nope.pem"),
        "missing file not named: {err}"
    );
}

/// `rlinkd` with `RUST_LOG` set (or removed when `None`), bounded like `run_cli`.
fn run_cli_env(args: &[&str], rust_log: Option<&str>, timeout: Duration) -> (bool, String) {
    let mut cmd = std::process::Command::new(exe());
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    match rust_log {
        Some(v) => cmd.env("RUST_LOG", v),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd.spawn().expect("spawn rlinkd");
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait rlinkd") {
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                std::io::Read::read_to_string(&mut s, &mut err).ok();
            }
            return (status.success(), err);
        }
        if std::time::Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("rlinkd {args:?} still running after {timeout:?}: it accepted the config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long `run` may take to refuse a config (it never gets as far as binding).
const REFUSE_WAIT: Duration = Duration::from_secs(10);

/// Each of these passed `check`; `run` then panicked (Instant overflow), logged nothing, looped
/// streams into its own endpoint, or ran with another node's identity. Both commands must now
/// refuse them, naming the key.
#[test]
fn check_and_run_refuse_configs_that_would_crash_or_silence_the_node() {
    let env = Env::new(&["a", "b"]);
    let base = || {
        let mut p = NodePlan::new("a", free_udp_port());
        p.peers.push(("b".into(), Some(free_udp_port())));
        p
    };
    let quic = |line: &str| {
        let mut p = base();
        p.quic_extra.push(line.into());
        p.to_toml(&env.certs)
    };
    let top = |line: &str| {
        let mut p = base();
        p.top_extra.push(line.into());
        p.to_toml(&env.certs)
    };
    let port = free_tcp_port();
    let mut looped = base();
    looped.links.push((
        "b".into(),
        format!("tcp:127.0.0.1:{port}").parse().unwrap(),
        "r".into(),
    ));
    looped
        .routes
        .push(("r".into(), format!("tcp:0.0.0.0:{port}").parse().unwrap()));
    let other_cert = base()
        .to_toml(&env.certs)
        .replace("/a.pem\"", "/b.pem\"")
        .replace("/a.key\"", "/b.key\"");

    for (toml, key) in [
        (
            quic("connect_timeout = \"500000000000y\""),
            "quic.connect_timeout",
        ),
        (
            quic("idle_timeout = \"1day\"\nkeepalive_interval = \"500000000000y\""),
            "quic.keepalive_interval",
        ),
        (
            quic("redial_min = \"500000000000y\"\nredial_max = \"500000000000y\""),
            "quic.redial_min",
        ),
        (top("stats_interval = \"500000000000y\""), "stats_interval"),
        (top("log_level = \"inf\""), "log_level"),
        (looped.to_toml(&env.certs), "routes[0].connect"),
        (other_cert, "quic.cert"),
    ] {
        let path = env.path("bad.toml");
        std::fs::write(&path, &toml).unwrap();
        let p = path.to_str().unwrap();
        let (ok, err) = run_cli_env(&["check", "--config", p], None, CLI_WAIT);
        assert!(!ok, "check accepted a config with a bad {key}:\n{toml}");
        assert!(
            err.contains(key),
            "check's error does not name {key}: {err}"
        );
        let (ok, err) = run_cli_env(&["run", "--config", p], None, REFUSE_WAIT);
        assert!(!ok && err.contains(key), "run: {err}");
        assert!(!err.contains("panicked"), "run panicked: {err}");
    }
}

/// `RUST_LOG` overrides `log_level`, so it follows the same rule: `RUST_LOG=inf` silenced the
/// node.
#[test]
fn rust_log_that_names_no_level_is_refused() {
    let env = Env::new(&["a", "b"]);
    let mut p = NodePlan::new("a", free_udp_port());
    p.peers.push(("b".into(), None));
    let path = env.path("a.toml");
    std::fs::write(&path, p.to_toml(&env.certs)).unwrap();
    let c = path.to_str().unwrap();
    let (ok, err) = run_cli_env(&["check", "--config", c], Some("inf"), CLI_WAIT);
    assert!(!ok && err.contains("RUST_LOG"), "{err}");
    let (ok, err) = run_cli_env(&["run", "--config", c], Some("inf"), REFUSE_WAIT);
    assert!(!ok && err.contains("RUST_LOG"), "{err}");
    let (ok, err) = run_cli_env(&["check", "--config", c], Some("rlinkd=debug"), CLI_WAIT);
    assert!(ok, "{err}");
}

/// `run` used to delete a regular file or symlink at a link's listen path and create missing
/// folders (mode 0755). Now it refuses, names `links[0].listen` and leaves everything as it was;
/// a stale socket (nobody listens) is still replaced, and removed again on stop.
#[test]
fn run_replaces_only_a_stale_socket_at_a_link_path() {
    let env = Env::new(&["a", "b"]);
    let plan = |listen: LocalAddr| {
        let mut p = NodePlan::new("a", free_udp_port());
        p.peers.push(("b".into(), None));
        p.links.push(("b".into(), listen, "r".into()));
        p
    };
    let file = env.path("file.sock");
    std::fs::write(&file, "precious").unwrap();
    let sym = env.path("sym.sock");
    std::os::unix::fs::symlink(&file, &sym).unwrap();
    let missing = env.path("missing/b.sock");
    for (path, needle) in [
        (&file, "a regular file"),
        (&sym, "a symbolic link"),
        (&missing, "does not exist"),
    ] {
        let config = env.path("a.toml");
        std::fs::write(
            &config,
            plan(LocalAddr::Unix(path.clone())).to_toml(&env.certs),
        )
        .unwrap();
        let (ok, err) = run_cli_env(
            &["run", "--config", config.to_str().unwrap()],
            None,
            REFUSE_WAIT,
        );
        assert!(!ok, "run started over {}", path.display());
        assert!(
            err.contains("links[0].listen") && err.contains(needle),
            "{}: {err}",
            path.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(&sym).unwrap().is_symlink());
    assert!(!env.path("missing").exists(), "a folder was created");

    let stale = env.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut node = env.start(&plan(LocalAddr::Unix(stale.clone())));
    expect_log(&node, "node listening", CONNECT_WAIT);
    assert!(std::os::unix::net::UnixStream::connect(&stale).is_ok());
    node.stop();
    assert!(!stale.exists(), "the node left its socket file behind");
}

// ---- Issue 10: `check` verifies the certificate, key and CA as peers will; `--version` ----

/// A certificate for node `name` signed by the CA in `certs`, valid from `days_from` to
/// `days_to` days from now, written with its key (mode 0600) to `dir/NAME.pem` and `.key`.
fn issue_with_validity(
    certs: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    days_from: i64,
    days_to: i64,
) {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key")).unwrap()).unwrap();
    let ca = CertificateParams::from_ca_cert_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
    )
    .unwrap()
    .self_signed(&ca_key)
    .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_from);
    params.not_after = now + time::Duration::days(days_to);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Each of these used to pass `check` and fail only at the peer's handshake (or, for an
/// expired certificate, at every peer): `check` and `run` now refuse them, naming the key.
#[test]
fn check_and_run_refuse_certificates_peers_would_refuse() {
    let env = Env::new(&["a", "b"]);
    let other = Env::new(&["a"]); // another cluster: another CA
    let mut plan = NodePlan::new("a", free_udp_port());
    plan.peers.push(("b".into(), None));
    let good = plan.to_toml(&env.certs);
    let certs = env.certs.display().to_string();
    let cert_line = format!("cert = \"{certs}/a.pem\"");
    let key_line = format!("key = \"{certs}/a.key\"");
    let ca_line = format!("ca = \"{certs}/ca.pem\"");
    assert!(good.contains(&cert_line) && good.contains(&key_line) && good.contains(&ca_line));

    let garbage = env.path("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let open_key = env.path("open.key");
    std::fs::copy(env.certs.join("a.key"), &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    issue_with_validity(&env.certs, &env.path("expired"), "a", -30, -1);
    issue_with_validity(&env.certs, &env.path("future"), "a", 2, 300);
    let replace = |pairs: &[(&str, String)]| {
        let mut t = good.clone();
        for (from, to) in pairs {
            t = t.replace(from, to);
        }
        t
    };
    let cases = [
        (
            "garbage cert",
            replace(&[(
                &cert_line,
                format!("cert = {:?}", garbage.display().to_string()),
            )]),
            "quic.cert",
            "not a PEM certificate",
        ),
        (
            "mismatched key",
            replace(&[(&key_line, format!("key = \"{certs}/b.key\""))]),
            "quic.key",
            "is not the key of",
        ),
        (
            "another node's cert",
            replace(&[
                (&cert_line, format!("cert = \"{certs}/b.pem\"")),
                (&key_line, format!("key = \"{certs}/b.key\"")),
            ]),
            "quic.cert",
            "not this node",
        ),
        (
            "wrong CA",
            replace(&[(
                &ca_line,
                format!("ca = \"{}/ca.pem\"", other.certs.display()),
            )]),
            "quic.ca",
            "did not issue",
        ),
        (
            "expired cert",
            replace(&[(
                &format!("{certs}/a."),
                format!("{}/a.", env.path("expired").display()),
            )]),
            "quic.cert",
            "expired",
        ),
        (
            "not yet valid",
            replace(&[(
                &format!("{certs}/a."),
                format!("{}/a.", env.path("future").display()),
            )]),
            "quic.cert",
            "not valid yet",
        ),
        (
            "key open to others",
            replace(&[(
                &key_line,
                format!("key = {:?}", open_key.display().to_string()),
            )]),
            "quic.key",
            "open to others",
        ),
    ];
    for (what, toml, key, needle) in cases {
        assert_ne!(toml, good, "{what}: the config was not changed");
        let path = env.path("bad.toml");
        std::fs::write(&path, &toml).unwrap();
        let p = path.to_str().unwrap();
        let (ok, err) = run_cli_env(&["check", "--config", p], None, CLI_WAIT);
        assert!(!ok, "{what}: check accepted it");
        assert!(
            err.contains(key) && err.contains(needle),
            "{what}: check said: {err}"
        );
        let (ok, err) = run_cli_env(&["run", "--config", p], None, REFUSE_WAIT);
        assert!(!ok && err.contains(key), "{what}: run said: {err}");
    }
}

/// `check` shows what the certificate says, and warns (without failing) when it expires soon.
#[test]
fn check_prints_the_certificate_and_warns_before_expiry() {
    let env = Env::new(&["a", "b"]);
    let mut plan = NodePlan::new("a", free_udp_port());
    plan.peers.push(("b".into(), None));
    let (ok, out, err) = check(&env, "a.toml", &plan.to_toml(&env.certs));
    assert!(ok, "{err}");
    assert!(
        out.contains("subject CN=a")
            && out.contains("issuer CN=rlinkd CA")
            && out.contains("days left"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");

    issue_with_validity(&env.certs, &env.path("soon"), "a", -1, 10);
    let certs = env.certs.display().to_string();
    let toml = plan.to_toml(&env.certs).replace(
        &format!("{certs}/a."),
        &format!("{}/a.", env.path("soon").display()),
    );
    let (ok, out, err) = check(&env, "soon.toml", &toml);
    assert!(
        ok,
        "a certificate valid for 10 more days was refused: {err}"
    );
    assert!(
        out.contains("warning: quic.cert")
            && (out.contains("expires in 9 days") || out.contains("expires in 10 days")),
        "{out}"
    );
}

#[test]
fn version_names_quiche_boringssl_and_the_io_backends() {
    let (ok, out, err) = run_cli(&["--version"], CLI_WAIT);
    assert!(ok, "{err}");
    for needle in [
        concat!("rlinkd ", env!("CARGO_PKG_VERSION")),
        "quiche 0.",
        "BoringSSL",
        "io backends: mio",
    ] {
        assert!(out.contains(needle), "--version lacks {needle:?}: {out}");
    }
}

/// `rlinkd bench --relay-buffer` outside what a node accepts is refused before anything
/// starts, with the option and the range named.
#[test]
fn bench_refuses_a_relay_buffer_no_node_would_accept() {
    let env = Env::new(&[]);
    let dir = env.path("bench");
    for bad in ["1KiB", "17MiB"] {
        let (ok, _, err) = run_cli(
            &[
                "bench",
                "--relay-buffer",
                bad,
                "--workload",
                "bulk",
                "--transport",
                "quic",
                "--dir",
                dir.to_str().unwrap(),
            ],
            CLI_WAIT,
        );
        assert!(!ok, "--relay-buffer {bad} accepted");
        assert!(
            err.contains("--relay-buffer") && err.contains("16 MiB"),
            "--relay-buffer {bad}: {err}"
        );
        assert!(!dir.join("a.toml").exists(), "a node was configured");
    }
    // Nothing it could apply to: no quic transport, or a saved run (--report).
    for (args, needle) in [
        (&["--transport", "tcp"][..], "no quic transport"),
        (&["--report", "run.json"][..], "--report"),
    ] {
        let mut all = vec![
            "bench",
            "--relay-buffer",
            "256KiB",
            "--dir",
            dir.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let (ok, _, err) = run_cli(&all, CLI_WAIT);
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
        assert!(!dir.join("a.toml").exists(), "a node was configured");
    }
}
