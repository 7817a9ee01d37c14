//! The command line: `rlinkd cert` writes a CA and node certificates, `rlinkd check` validates a
//! configuration, prints what the node would do, and names the key at fault when it cannot.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use rlinkd::cluster::NodePlan;

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
