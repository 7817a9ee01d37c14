use super::*;

const EXAMPLE: &str = r#"
node = "a"
log_level = "info"
stats_interval = "30s"
drain_timeout = "10s"
log_format = "text"

[quic]
listen = "127.0.0.1:4433"
cert = "a.pem"
key = "a.key"
ca = "ca.pem"
idle_timeout = "10s"
keepalive_interval = "3s"
connect_timeout = "5s"
redial_min = "200ms"
redial_max = "10s"
max_udp_payload = 1452
initial_stream_window = "1MiB"
max_stream_window = "4MiB"
initial_connection_window = "128MiB"
max_connection_window = "128MiB"
max_streams = 100000
congestion_control = "cubic"
gso = true
gro = true

[relay]
max_frame = "16MiB"
buffer_size = "64KiB"
stall_timeout = "30s"
stall_budget = "64MiB"

[[peers]]
name = "b"
connect = "127.0.0.1:4434"

[[links]]
peer = "b"
listen = "unix:/run/rlinkd/b.sock"
route = "router"
socket_mode = "0660"

[[routes]]
name = "router"
connect = "tcp:127.0.0.1:19090"
"#;

/// The smallest valid file: only the required keys.
const MINIMAL: &str = r#"
node = "a"
[quic]
listen = "127.0.0.1:4433"
cert = "a.pem"
key = "a.key"
ca = "ca.pem"
[[peers]]
name = "b"
"#;

const BASE: &str = "/etc/rlinkd";

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::from_toml_str(text, Path::new(BASE))
}

/// The minimal file with `extra` appended, so a test can add one table or array entry.
fn with(extra: &str) -> Result<NodeConfig, ConfigError> {
    parse(&format!("{MINIMAL}\n{extra}"))
}

/// The minimal file with `line` inserted at the top level or into `[quic]`.
fn quic_with(line: &str) -> Result<NodeConfig, ConfigError> {
    parse(&MINIMAL.replace("[quic]\n", &format!("[quic]\n{line}\n")))
}

fn err_text(r: Result<NodeConfig, ConfigError>) -> String {
    match r {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts an `Invalid` error for exactly `key` whose message contains `needle`.
fn assert_invalid(r: Result<NodeConfig, ConfigError>, key: &str, needle: &str) {
    match r {
        Err(ConfigError::Invalid { key: k, message }) => {
            assert_eq!(k, key, "message: {message}");
            assert!(
                message.contains(needle),
                "{key}: {message:?} lacks {needle:?}"
            );
        }
        other => panic!("expected Invalid for {key}, got {other:?}"),
    }
}

fn expected_example() -> NodeConfig {
    NodeConfig {
        node: "a".into(),
        log_level: "info".into(),
        stats_interval: Some(Duration::from_secs(30)),
        drain_timeout: Duration::from_secs(10),
        log_format: LogFormat::Text,
        quic: QuicSettings::new(
            "127.0.0.1:4433".parse().unwrap(),
            "/etc/rlinkd/a.pem".into(),
            "/etc/rlinkd/a.key".into(),
            "/etc/rlinkd/ca.pem".into(),
        ),
        relay: RelaySettings::default(),
        peers: vec![PeerConfig {
            name: "b".into(),
            connect: Some("127.0.0.1:4434".parse().unwrap()),
        }],
        links: vec![LinkConfig {
            peer: "b".into(),
            listen: LocalAddr::Unix("/run/rlinkd/b.sock".into()),
            route: "router".into(),
            socket: SocketAccess {
                mode: Some(SocketMode(0o660)),
                owner: None,
                group: None,
            },
            allow_remote: false,
        }],
        routes: vec![RouteConfig {
            name: "router".into(),
            connect: LocalAddr::Tcp("127.0.0.1:19090".parse().unwrap()),
        }],
        shards: ShardSettings::default(),
        admin: None,
        io: IoMode::Auto,
        source: PathBuf::new(),
    }
}

#[test]
fn the_documented_example_parses_to_the_defaults() {
    assert_eq!(parse(EXAMPLE).unwrap(), expected_example());
}

#[test]
fn the_example_in_config_md_is_the_one_tested_here() {
    let doc = include_str!("../../docs/CONFIG.md");
    let start = doc.find("```toml\n").expect("CONFIG.md has a toml block") + "```toml\n".len();
    let block = &doc[start..];
    let block = &block[..block.find("```").unwrap()];
    assert_eq!(parse(block).unwrap(), expected_example());
}

#[test]
fn every_default_value() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.log_level, "info");
    assert_eq!(c.stats_interval, Some(Duration::from_secs(30)));
    let q = &c.quic;
    assert_eq!(q.idle_timeout, Duration::from_secs(10));
    assert_eq!(q.keepalive_interval, Duration::from_secs(3));
    assert_eq!(q.connect_timeout, Duration::from_secs(5));
    assert_eq!(q.redial_min, Duration::from_millis(200));
    assert_eq!(q.redial_max, Duration::from_secs(10));
    assert_eq!(q.max_udp_payload, 1452);
    assert_eq!(q.initial_stream_window, 1 << 20);
    assert_eq!(q.max_stream_window, 4 << 20);
    assert_eq!(q.initial_connection_window, 128 << 20);
    assert_eq!(q.max_connection_window, 128 << 20);
    assert_eq!(q.max_streams, 100_000);
    assert_eq!(q.congestion_control, CongestionControl::Cubic);
    assert!(q.gso && q.gro);
    assert_eq!(c.relay.max_frame, 16 << 20);
    assert_eq!(c.relay.buffer_size, 64 << 10);
    assert_eq!(c.relay.stall_timeout, Duration::from_secs(30));
    assert_eq!(c.relay.stall_budget, 64 << 20);
    assert_eq!(c.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.peers[0].connect, None);
    assert!(c.links.is_empty() && c.routes.is_empty());
    assert_eq!(c.log_format, LogFormat::Text);
    let l = with("[[links]]\npeer = \"b\"\nlisten = \"unix:b.sock\"\nroute = \"r\"\n").unwrap();
    assert_eq!(l.links[0].socket, SocketAccess::default());
    assert_eq!(l.links[0].socket.mode(), 0o660);
    assert!(!l.links[0].allow_remote);
}

#[test]
fn non_default_values_are_taken() {
    let c = parse(
        &MINIMAL
            .replace(
                "node = \"a\"",
                "node = \"a\"\nstats_interval = \"0s\"\nlog_level = \"debug\"",
            )
            .replace(
                "[quic]\n",
                "[quic]\ncongestion_control = \"bbr2\"\ngso = false\nmax_udp_payload = 65527\n\
                 initial_stream_window = 4096\nredial_max = \"1m\"\n",
            ),
    )
    .unwrap();
    assert_eq!(c.stats_interval, None);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.quic.congestion_control.name(), "bbr2");
    assert!(!c.quic.gso && c.quic.gro);
    assert_eq!(c.quic.max_udp_payload, 65527);
    assert_eq!(c.quic.initial_stream_window, 4096);
    assert_eq!(c.quic.redial_max, Duration::from_secs(60));
    assert_eq!(CongestionControl::Reno.name(), "reno");
    assert_eq!(CongestionControl::Cubic.name(), "cubic");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let cases = [
        parse(&format!("colour = \"red\"\n{MINIMAL}")),
        quic_with("colour = \"red\""),
        with("[relay]\ncolour = 1"),
        with("[[links]]\npeer = \"b\"\nlisten = \"tcp:127.0.0.1:1\"\nroute = \"r\"\ncolour = 1"),
        with("[[routes]]\nname = \"r\"\nconnect = \"tcp:127.0.0.1:1\"\ncolour = 1"),
        parse(&MINIMAL.replace("name = \"b\"", "name = \"b\"\ncolour = 1")),
        with("[colour]\nx = 1"),
    ];
    for r in cases {
        let e = err_text(r);
        assert!(e.starts_with("<config>: "), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
        assert!(e.contains("line"), "{e}");
    }
}

#[test]
fn missing_required_keys_are_named() {
    let e = err_text(parse(&MINIMAL.replace("node = \"a\"", "")));
    assert!(e.contains("missing field `node`"), "{e}");
    let e = err_text(parse(&MINIMAL.replace("ca = \"ca.pem\"", "")));
    assert!(e.contains("missing field `ca`"), "{e}");
    let e = err_text(with("[[links]]\npeer = \"b\"\nroute = \"r\""));
    assert!(e.contains("missing field `listen`"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("idle_timeout = \"10\"", "idle_timeout", "\"250ms\""),
        ("idle_timeout = 10", "idle_timeout", "duration string"),
        ("redial_min = \"soon\"", "redial_min", "invalid duration"),
        (
            "initial_stream_window = \"1MB\"",
            "initial_stream_window",
            "B, KiB, MiB or GiB",
        ),
        ("max_stream_window = -5", "max_stream_window", "negative"),
        ("max_streams = \"many\"", "max_streams", "u64"),
        (
            "congestion_control = \"vegas\"",
            "congestion_control",
            "`bbr2`",
        ),
        ("gso = \"yes\"", "gso", "bool"),
    ];
    for (line, key, needle) in cases {
        let e = err_text(quic_with(line));
        assert!(e.contains(key) && e.contains(needle), "{line}: {e}");
    }
    let e = err_text(with("[relay]\nbuffer_size = \"64k\""));
    assert!(e.contains("buffer_size") && e.contains("KiB"), "{e}");
    let e = err_text(parse(&format!("stats_interval = \"often\"\n{MINIMAL}")));
    assert!(e.contains("stats_interval"), "{e}");
}

#[test]
fn io_backend_is_chosen_by_name_and_defaults_to_auto() {
    assert_eq!(parse(MINIMAL).unwrap().io, IoMode::Auto);
    let top =
        |line: &str| parse(&MINIMAL.replace("node = \"a\"\n", &format!("node = \"a\"\n{line}\n")));
    assert_eq!(top("io = \"uring\"").unwrap().io, IoMode::Uring);
    assert_eq!(top("io = \"mio\"").unwrap().io, IoMode::Mio);
    let e = err_text(top("io = \"epoll\""));
    assert!(e.contains("io") && e.contains("`uring`"), "{e}");
}

#[test]
fn bad_addresses_name_their_key() {
    assert_invalid(
        parse(&MINIMAL.replace("127.0.0.1:4433", "nowhere")),
        "quic.listen",
        "host:port",
    );
    assert_invalid(
        parse(&MINIMAL.replace("name = \"b\"", "name = \"b\"\nconnect = \"b\"")),
        "peers[0].connect",
        "host:port",
    );
    assert_invalid(
        with("[[links]]\npeer = \"b\"\nlisten = \"/run/x.sock\"\nroute = \"r\""),
        "links[0].listen",
        "unix:/path",
    );
    assert_invalid(
        with("[[routes]]\nname = \"r\"\nconnect = \"unix:\""),
        "routes[0].connect",
        "empty",
    );
}

#[test]
fn names_must_be_short_and_plain() {
    assert!(validate_name("node-1.dc_2").is_ok());
    assert!(validate_name(&"x".repeat(64)).is_ok());
    assert!(validate_name("").is_err());
    assert!(validate_name(&"x".repeat(65)).is_err());
    assert!(validate_name("a b").unwrap_err().contains("' '"));
    assert!(validate_name("a/b").is_err());
    assert!(validate_name("é").is_err());

    assert_invalid(
        parse(&MINIMAL.replace("node = \"a\"", "node = \"a b\"")),
        "node",
        "A-Z",
    );
    assert_invalid(
        parse(&MINIMAL.replace("name = \"b\"", "name = \"\"")),
        "peers[0].name",
        "1 to 64",
    );
    assert_invalid(
        with("[[links]]\npeer = \"b\"\nlisten = \"tcp:127.0.0.1:1\"\nroute = \"r/x\""),
        "links[0].route",
        "A-Z",
    );
    assert_invalid(
        with("[[routes]]\nname = \"r:x\"\nconnect = \"tcp:127.0.0.1:1\""),
        "routes[0].name",
        "A-Z",
    );
}

#[test]
fn peers_are_required_unique_and_not_this_node() {
    assert_invalid(
        parse(&MINIMAL.replace("[[peers]]\nname = \"b\"\n", "")),
        "peers",
        "at least one",
    );
    assert_invalid(
        with("[[peers]]\nname = \"b\""),
        "peers[1].name",
        "more than once",
    );
    assert_invalid(with("[[peers]]\nname = \"a\""), "peers[1].name", "own name");
}

#[test]
fn links_need_a_known_peer_and_distinct_listen_addresses() {
    let link = |peer: &str, listen: &str| {
        format!("[[links]]\npeer = \"{peer}\"\nlisten = \"{listen}\"\nroute = \"r\"\n")
    };
    assert_invalid(
        with(&format!(
            "{}{}",
            link("b", "tcp:127.0.0.1:1"),
            link("c", "tcp:127.0.0.1:2")
        )),
        "links[1].peer",
        "no peer named \"c\" in [[peers]]",
    );
    assert_invalid(
        with(&format!(
            "{}{}",
            link("b", "unix:x.sock"),
            link("b", "unix:/etc/rlinkd/x.sock")
        )),
        "links[1].listen",
        "links[0]",
    );
    // Two links to the same peer and route on different endpoints are fine (router workers).
    let c = with(&format!(
        "{}{}",
        link("b", "tcp:127.0.0.1:1"),
        link("b", "tcp:127.0.0.1:2")
    ))
    .unwrap();
    assert_eq!(c.links.len(), 2);
}

#[test]
fn routes_are_unique_and_do_not_loop_into_a_link() {
    let route =
        |name: &str, to: &str| format!("[[routes]]\nname = \"{name}\"\nconnect = \"{to}\"\n");
    assert_invalid(
        with(&format!(
            "{}{}",
            route("r", "tcp:127.0.0.1:1"),
            route("r", "tcp:127.0.0.1:2")
        )),
        "routes[1].name",
        "more than once",
    );
    assert_invalid(
        with(&format!(
            "[[links]]\npeer = \"b\"\nlisten = \"tcp:127.0.0.1:7\"\nroute = \"r\"\n{}",
            route("r", "tcp:127.0.0.1:7")
        )),
        "routes[0].connect",
        "loop",
    );
}

/// Every spelling that reaches the link endpoint is a loop: these passed the check, and two
/// nodes then created about 6,000 links a second until they ran out of file descriptors.
#[test]
fn routes_into_a_link_are_loops_however_spelled() {
    let case = |listen: &str, target: &str| {
        // Links on every address are allowed to be remote here; this test is about loops.
        let remote = if listen.starts_with("tcp:") {
            "allow_remote = true\n"
        } else {
            ""
        };
        with(&format!(
            "[[links]]\npeer = \"b\"\nlisten = \"tcp:127.0.0.1:1\"\nroute = \"r\"\n\
             [[links]]\npeer = \"b\"\nlisten = \"{listen}\"\nroute = \"r\"\n{remote}\
             [[routes]]\nname = \"ok\"\nconnect = \"tcp:127.0.0.1:2\"\n\
             [[routes]]\nname = \"r\"\nconnect = \"{target}\"\n"
        ))
    };
    for (listen, target) in [
        ("tcp:0.0.0.0:7", "tcp:127.0.0.1:7"),
        ("tcp:0.0.0.0:7", "tcp:localhost:7"),
        ("tcp:0.0.0.0:7", "tcp:127.0.0.53:7"),
        ("tcp:0.0.0.0:7", "tcp:0.0.0.0:7"),
        ("tcp:127.0.0.1:7", "tcp:0.0.0.0:7"),
        ("tcp:127.0.0.1:7", "tcp:[::ffff:127.0.0.1]:7"),
        ("tcp:[::]:7", "tcp:127.0.0.1:7"),
        ("tcp:[::]:7", "tcp:[::1]:7"),
        ("tcp:[::1]:7", "tcp:[::]:7"),
        ("unix:/run/x/b.sock", "unix:/run/x/./b.sock"),
        ("unix:/run/x/b.sock", "unix:/run/y/../x/b.sock"),
        ("unix:b.sock", "unix:/etc/rlinkd/b.sock"),
    ] {
        let e = err_text(case(listen, target));
        assert!(
            e.starts_with("routes[1].connect: ")
                && e.contains("links[1].listen")
                && e.contains("loop"),
            "{listen} <- {target}: {e}"
        );
    }
    for (listen, target) in [
        ("tcp:0.0.0.0:7", "tcp:127.0.0.1:8"),
        ("tcp:127.0.0.1:7", "tcp:127.0.0.2:7"),
        ("tcp:0.0.0.0:7", "tcp:203.0.113.77:7"),
        ("unix:/run/x/b.sock", "unix:/run/x/c.sock"),
    ] {
        assert!(case(listen, target).is_ok(), "{listen} <- {target}");
    }
}

#[test]
fn timing_rules() {
    assert_invalid(
        quic_with("keepalive_interval = \"10s\""),
        "quic.keepalive_interval",
        "shorter",
    );
    assert_invalid(
        quic_with("idle_timeout = \"2s\"\nkeepalive_interval = \"2s\""),
        "quic.keepalive_interval",
        "shorter",
    );
    assert!(quic_with("idle_timeout = \"2s\"\nkeepalive_interval = \"1999ms\"").is_ok());
    assert_invalid(
        quic_with("redial_max = \"100ms\""),
        "quic.redial_max",
        "redial_min",
    );
    assert!(quic_with("redial_max = \"200ms\"").is_ok());
    assert_invalid(
        quic_with("connect_timeout = \"0s\""),
        "quic.connect_timeout",
        "outside 1ms ..= 1day",
    );
    assert_invalid(
        quic_with("redial_min = \"0s\""),
        "quic.redial_min",
        "outside 1ms",
    );
}

/// Durations that passed `check` and then panicked `run` (Instant overflow), or that quiche
/// cannot express (an idle timeout under 1 ms is 0 ms: no idle timeout at all).
#[test]
fn every_duration_is_bounded_and_names_its_key() {
    for key in [
        "idle_timeout",
        "keepalive_interval",
        "connect_timeout",
        "redial_min",
        "redial_max",
    ] {
        let full = format!("quic.{key}");
        for bad in ["500000000000y", "1day 1ns", "100years", "999us", "1ns"] {
            // Keep the cross-field rules satisfied, so only the bound can fail.
            let others = match key {
                "idle_timeout" => "keepalive_interval = \"500us\"",
                "keepalive_interval" => "idle_timeout = \"1day\"",
                "redial_min" => "redial_max = \"1day\"",
                "redial_max" => "redial_min = \"1ms\"",
                _ => "",
            };
            let r = quic_with(&format!("{key} = \"{bad}\"\n{others}"));
            match r {
                Err(ConfigError::Invalid { key: k, message }) => {
                    assert!(
                        k == full || (k == "quic.keepalive_interval" && key == "idle_timeout"),
                        "{key} = {bad}: error names {k}: {message}"
                    );
                }
                other => panic!("{key} = {bad:?} accepted: {other:?}"),
            }
        }
    }
    assert_invalid(
        quic_with("connect_timeout = \"500000000000y\""),
        "quic.connect_timeout",
        "outside 1ms ..= 1day",
    );
    let c = quic_with(
        "idle_timeout = \"1day\"\nkeepalive_interval = \"1ms\"\nconnect_timeout = \"24h\"\n\
         redial_min = \"1ms\"\nredial_max = \"86400s\"",
    )
    .unwrap();
    assert_eq!(c.quic.redial_max, MAX_DURATION);
    assert_eq!(c.quic.keepalive_interval, MIN_DURATION);

    let top = |line: &str| parse(&format!("{line}\n{MINIMAL}"));
    for bad in ["500000000000y", "25h", "99ms", "1ns"] {
        assert_invalid(
            top(&format!("stats_interval = \"{bad}\"")),
            "stats_interval",
            "\"0s\" (off)",
        );
    }
    assert_eq!(top("stats_interval = \"0s\"").unwrap().stats_interval, None);
    assert_eq!(
        top("stats_interval = \"100ms\"").unwrap().stats_interval,
        Some(MIN_STATS_INTERVAL)
    );
    assert!(top("stats_interval = \"1day\"").is_ok());
}

#[test]
fn log_level_must_name_a_level() {
    for good in [
        "info",
        "INFO",
        "off",
        "trace",
        "rlinkd=debug,info",
        "warn, rlinkd::node=trace",
        "info,rlinkd[conn{peer=b}]=debug",
        "rlinkd=warn",
        "quiche=trace,off",
        "4",
    ] {
        let r = parse(&format!("log_level = \"{good}\"\n{MINIMAL}"));
        assert!(r.is_ok(), "{good:?}: {r:?}");
    }
    for (bad, needle) in [
        ("inf", "\"inf\" is not a level"),
        ("rlinkd", "target=level"),
        ("rlinkd=verbose", "\"verbose\" is not a level"),
        ("info,", "empty directive"),
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        ("quiche=trace", "gives rlinkd's own lines no level"),
        ("rlinkd::quic=debug", "e.g. \"rlinkd::quic=debug,warn\""),
        ("rlinkd[conn{peer=b}]=debug", "no level"),
        ("[{peer=b}]=debug", "no level"),
        ("a b=info", "no level"),
    ] {
        assert_invalid(
            parse(&format!("log_level = \"{bad}\"\n{MINIMAL}")),
            "log_level",
            needle,
        );
    }
    assert!(validate_log_filter("debug").is_ok());
}

#[test]
fn size_rules() {
    assert_invalid(
        quic_with("max_udp_payload = 1199"),
        "quic.max_udp_payload",
        "1200..=65527",
    );
    assert_invalid(
        quic_with("max_udp_payload = 65528"),
        "quic.max_udp_payload",
        "1200..=65527",
    );
    assert!(quic_with("max_udp_payload = 1200").is_ok());
    assert_invalid(
        quic_with("max_stream_window = \"512KiB\""),
        "quic.max_stream_window",
        "initial_stream_window",
    );
    assert_invalid(
        quic_with("initial_connection_window = \"256MiB\""),
        "quic.max_connection_window",
        "initial_connection_window",
    );
    assert_invalid(
        quic_with("max_stream_window = \"256MiB\""),
        "quic.max_connection_window",
        "max_stream_window",
    );
    assert_invalid(
        quic_with("initial_stream_window = 0"),
        "quic.initial_stream_window",
        "outside 1 B ..= 1 GiB",
    );
    assert_invalid(
        quic_with("max_streams = 0"),
        "quic.max_streams",
        "1..=1000000",
    );
    assert_invalid(
        quic_with("max_streams = 1000001"),
        "quic.max_streams",
        "1..=1000000",
    );
    assert!(quic_with("max_streams = 1000000").is_ok());
    for key in [
        "initial_stream_window",
        "max_stream_window",
        "initial_connection_window",
        "max_connection_window",
    ] {
        assert_invalid(
            quic_with(&format!("{key} = \"1025MiB\"")),
            &format!("quic.{key}"),
            "outside 1 B ..= 1 GiB",
        );
    }
    assert!(quic_with(
        "initial_stream_window = \"1GiB\"\nmax_stream_window = \"1GiB\"\n\
         initial_connection_window = \"1GiB\"\nmax_connection_window = \"1GiB\""
    )
    .is_ok());
    assert_invalid(
        with("[relay]\nmax_frame = \"32MiB\""),
        "relay.max_frame",
        "16 MiB",
    );
    assert_invalid(
        with("[relay]\nmax_frame = \"8GiB\""),
        "relay.max_frame",
        "16 MiB",
    );
    assert_invalid(with("[relay]\nmax_frame = 511"), "relay.max_frame", "512 B");
    assert!(with("[relay]\nmax_frame = 512\nbuffer_size = \"16MiB\"").is_ok());
    assert_invalid(
        with("[relay]\nbuffer_size = \"2KiB\""),
        "relay.buffer_size",
        "4 KiB",
    );
    assert_invalid(
        with("[relay]\nbuffer_size = \"17MiB\""),
        "relay.buffer_size",
        "16 MiB",
    );
}

#[test]
fn relative_paths_follow_the_base_dir_and_absolute_paths_stay() {
    let text = MINIMAL
        .replace("\"a.pem\"", "\"certs/a.pem\"")
        .replace("\"ca.pem\"", "\"/pki/ca.pem\"")
        + "[[links]]\npeer = \"b\"\nlisten = \"unix:run/b.sock\"\nroute = \"r\"\n\
           [[links]]\npeer = \"b\"\nlisten = \"unix:/abs/b.sock\"\nroute = \"r\"\n\
           [[routes]]\nname = \"r\"\nconnect = \"unix:router.sock\"\n\
           [[routes]]\nname = \"s\"\nconnect = \"unix:/abs/router.sock\"\n";
    let c = parse(&text).unwrap();
    assert_eq!(c.quic.cert, PathBuf::from("/etc/rlinkd/certs/a.pem"));
    assert_eq!(c.quic.key, PathBuf::from("/etc/rlinkd/a.key"));
    assert_eq!(c.quic.ca, PathBuf::from("/pki/ca.pem"));
    assert_eq!(
        c.links[0].listen,
        LocalAddr::Unix("/etc/rlinkd/run/b.sock".into())
    );
    assert_eq!(c.links[1].listen, LocalAddr::Unix("/abs/b.sock".into()));
    assert_eq!(
        c.routes[0].connect,
        LocalAddr::Unix("/etc/rlinkd/router.sock".into())
    );
    assert_eq!(
        c.routes[1].connect,
        LocalAddr::Unix("/abs/router.sock".into())
    );
}

#[test]
fn load_resolves_against_the_file_and_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    std::fs::write(&path, MINIMAL).unwrap();

    assert_invalid(NodeConfig::load(&path), "quic.cert", "No such file");
    std::fs::write(dir.path().join("a.pem"), "").unwrap();
    std::fs::write(dir.path().join("a.key"), "").unwrap();
    let e = NodeConfig::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "quic.ca: {}: No such file or directory (os error 2)",
            dir.path().join("ca.pem").display()
        )
    );
    std::fs::create_dir(dir.path().join("ca.pem")).unwrap();
    assert_invalid(NodeConfig::load(&path), "quic.ca", "not a regular file");
    std::fs::remove_dir(dir.path().join("ca.pem")).unwrap();
    std::fs::write(dir.path().join("ca.pem"), "").unwrap();
    assert_invalid(
        NodeConfig::load(&path),
        "quic.cert",
        "not a PEM certificate",
    );

    for f in ["a.pem", "a.key", "ca.pem"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    crate::cert::generate(dir.path(), &["a".to_string()]).unwrap();
    let c = NodeConfig::load(&path).unwrap();
    assert_eq!(c.source, path);
    assert_eq!(c.quic.cert, dir.path().join("a.pem"));
    assert!(c.summary().contains(&format!("(from {})", path.display())));
}

/// A folder with certificates for a, b and c, and `a.toml` = MINIMAL + `extra`.
fn load_with(dir: &Path, toml: &str) -> Result<NodeConfig, ConfigError> {
    if !dir.join("ca.pem").exists() {
        let names = ["a", "b", "c"].map(String::from);
        crate::cert::generate(dir, &names).unwrap();
    }
    let path = dir.join("a.toml");
    std::fs::write(&path, toml).unwrap();
    NodeConfig::load(&path)
}

/// `node = "a"` with b's certificate passed `check`.
#[test]
fn the_certificate_must_name_this_node_and_the_key_be_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(load_with(d, MINIMAL).is_ok());
    assert_invalid(
        load_with(
            d,
            &MINIMAL
                .replace("\"a.pem\"", "\"c.pem\"")
                .replace("\"a.key\"", "\"c.key\""),
        ),
        "quic.cert",
        "names [\"c\"], not this node \"a\"",
    );
    assert_invalid(
        load_with(d, &MINIMAL.replace("a.key", "b.key")),
        "quic.key",
        "is not the key of",
    );
    assert_invalid(
        load_with(d, &MINIMAL.replace("\"a.key\"", "\"a.pem\"")),
        "quic.key",
        "not a PEM private key",
    );
}

/// The node used to delete a file or symlink at its endpoint path and create missing folders.
#[test]
fn link_paths_may_hold_only_a_socket_and_their_folder_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let link = |listen: &str| {
        format!("{MINIMAL}[[links]]\npeer = \"b\"\nlisten = \"{listen}\"\nroute = \"r\"\n")
    };
    assert!(load_with(d, &link("unix:free.sock")).is_ok());

    std::fs::write(d.join("file.sock"), "precious").unwrap();
    assert_invalid(
        load_with(d, &link("unix:file.sock")),
        "links[0].listen",
        "a regular file, not a socket",
    );
    std::os::unix::fs::symlink(d.join("file.sock"), d.join("sym.sock")).unwrap();
    assert_invalid(
        load_with(d, &link("unix:sym.sock")),
        "links[0].listen",
        "a symbolic link",
    );
    assert_invalid(
        load_with(d, &link("unix:missing/b.sock")),
        "links[0].listen",
        "does not exist",
    );
    assert!(!d.join("missing").exists());
    // A socket file (stale or live) is for `run` to judge, not `check`.
    drop(std::os::unix::net::UnixListener::bind(d.join("stale.sock")).unwrap());
    assert!(load_with(d, &link("unix:stale.sock")).is_ok());
    assert_eq!(
        std::fs::read_to_string(d.join("file.sock")).unwrap(),
        "precious"
    );
}

#[test]
fn a_route_through_a_symbolic_link_to_a_link_endpoint_is_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("run")).unwrap();
    std::os::unix::fs::symlink(d.join("run"), d.join("alias")).unwrap();
    std::os::unix::fs::symlink("run/b.sock", d.join("router.sock")).unwrap();
    for target in ["unix:alias/b.sock", "unix:router.sock"] {
        let toml = format!(
            "{MINIMAL}[[links]]\npeer = \"b\"\nlisten = \"unix:run/b.sock\"\nroute = \"r\"\n\
             [[routes]]\nname = \"r\"\nconnect = \"{target}\"\n"
        );
        assert_invalid(load_with(d, &toml), "routes[0].connect", "loop");
    }
}

#[test]
fn load_names_the_file_in_read_and_parse_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    match NodeConfig::load(&path) {
        Err(ConfigError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, "node = ").unwrap();
    let e = NodeConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: ", path.display())) && e.contains("line 1"),
        "{e}"
    );
}

#[test]
fn configs_built_in_code_validate_too() {
    let mut c = expected_example();
    assert!(c.validate().is_ok());
    c.quic.keepalive_interval = c.quic.idle_timeout;
    assert!(c.validate().is_err());
}

#[test]
fn summary_shows_what_check_promises() {
    let mut text = EXAMPLE.to_string();
    text += "[[peers]]\nname = \"c\"\n";
    let s = parse(&text).unwrap().summary();
    for needle in [
        "node a\n",
        "quic listen 127.0.0.1:4433",
        "/etc/rlinkd/a.pem",
        "b dial 127.0.0.1:4434",
        "c accept only",
        "unix:/run/rlinkd/b.sock -> b/router",
        "router -> tcp:127.0.0.1:19090",
        "idle 10s, keepalive 3s, connect 5s, redial 200ms .. 10s",
        "stream 1 MiB .. 4 MiB, connection 128 MiB .. 128 MiB, max streams 100000",
        "max payload 1452 B, gso on, gro on, congestion control cubic",
        "max frame 16 MiB, buffer 64 KiB, stall timeout 30s, stall budget 64 MiB, drain 10s",
        "log: info, stats every 30s",
        "shards: one per CPU of the affinity mask",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
}

/// The top-level file model with `lines` put before the first table (TOML top-level keys
/// must come first).
fn top_with(lines: &str) -> Result<NodeConfig, ConfigError> {
    parse(&MINIMAL.replace("[quic]\n", &format!("{lines}\n[quic]\n")))
}

#[test]
fn shards_and_cpus_default_to_the_affinity_mask() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.shards, ShardSettings::default());
    let c = top_with("shards = 4").unwrap();
    assert_eq!(c.shards.count, Some(4));
    assert_eq!(c.shards.cpus, None);
    assert!(c
        .summary()
        .contains("shards: 4 on the affinity mask's CPUs in order"));
    let c = top_with("cpus = [2, 0]").unwrap();
    assert_eq!(c.shards.count, None);
    assert_eq!(c.shards.cpus, Some(vec![2, 0]));
    assert!(c.summary().contains("shards: 2 on CPUs 2,0"));
    let c = top_with("shards = 2\ncpus = [3, 1]").unwrap();
    assert_eq!(c.shards.count, Some(2));
    assert_eq!(top_with("shards = 256").unwrap().shards.count, Some(256));
}

#[test]
fn shard_rules_name_their_key() {
    assert_invalid(top_with("shards = 0"), "shards", "outside 1..=256");
    assert_invalid(top_with("shards = 257"), "shards", "outside 1..=256");
    assert_invalid(top_with("cpus = []"), "cpus", "lists no CPU");
    assert_invalid(
        top_with("cpus = [0, 1, 0]"),
        "cpus[2]",
        "CPU 0 is already cpus[0]",
    );
    assert_invalid(
        top_with("cpus = [1, 5000]"),
        "cpus[1]",
        "CPU 5000 is beyond",
    );
    assert_invalid(
        top_with("shards = 3\ncpus = [0, 1]"),
        "cpus",
        "lists 2 CPUs but shards = 3",
    );
    let many = (0..257)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    assert_invalid(
        top_with(&format!("cpus = [{many}]")),
        "cpus",
        "at most 256 shards",
    );
    // Wrong types and negative numbers are parse errors that name the key.
    assert!(err_text(top_with("shards = -1")).contains("shards"));
    assert!(err_text(top_with("cpus = [\"0\"]")).contains("cpus"));
    assert!(err_text(top_with("cpu = [0]")).contains("unknown field `cpu`"));
}

// ---- Operations (issue 10): link endpoint access, log format, private keys ----

fn link(listen: &str, extra: &str) -> Result<NodeConfig, ConfigError> {
    with(&format!(
        "[[links]]\npeer = \"b\"\nlisten = \"{listen}\"\nroute = \"r\"\n{extra}\n"
    ))
}

#[test]
fn socket_mode_owner_and_group_are_read_for_unix_endpoints() {
    let c = link(
        "unix:b.sock",
        "socket_mode = \"0640\"\nsocket_owner = \"rlinkd\"\nsocket_group = 998",
    )
    .unwrap();
    let s = &c.links[0].socket;
    assert_eq!(s.mode(), 0o640);
    assert_eq!(s.owner, Some(IdSpec("rlinkd".into())));
    assert_eq!(s.group, Some(IdSpec("998".into())));
    assert_eq!(
        link("unix:b.sock", "socket_mode = 0o600").unwrap().links[0]
            .socket
            .mode(),
        0o600
    );
    // A decimal 660 is 0o1224: refused, with the way to write it.
    for bad in [
        "socket_mode = 660",
        "socket_mode = \"rw-rw----\"",
        "socket_mode = -1",
    ] {
        let e = err_text(link("unix:b.sock", bad));
        assert!(
            e.contains("socket_mode") && e.contains("0660"),
            "{bad}: {e}"
        );
    }
    assert!(err_text(link("unix:b.sock", "socket_group = \"\"")).contains("socket_group"));
}

#[test]
fn socket_settings_on_a_tcp_endpoint_are_refused_with_the_key_named() {
    for key in [
        "socket_mode = \"0600\"",
        "socket_owner = \"root\"",
        "socket_group = 0",
    ] {
        let name = key.split(' ').next().unwrap();
        assert_invalid(
            link("tcp:127.0.0.1:7000", key),
            &format!("links[0].{name}"),
            "only for unix: endpoints",
        );
    }
    assert_invalid(
        link("unix:b.sock", "allow_remote = true"),
        "links[0].allow_remote",
        "only for tcp: endpoints",
    );
}

/// A link endpoint opens links to a peer router as this node: off loopback it needs a decision.
#[test]
fn a_tcp_endpoint_off_loopback_needs_allow_remote() {
    for listen in ["tcp:0.0.0.0:7000", "tcp:[::]:7000", "tcp:192.0.2.1:7000"] {
        assert_invalid(
            link(listen, ""),
            "links[0].listen",
            "not a loopback address",
        );
        assert!(link(listen, "allow_remote = true").is_ok(), "{listen}");
    }
    for listen in ["tcp:127.0.0.1:7000", "tcp:[::1]:7000", "tcp:localhost:7000"] {
        assert!(link(listen, "").is_ok(), "{listen}");
    }
}

#[test]
fn log_format_is_text_or_json() {
    let top =
        |line: &str| parse(&MINIMAL.replace("node = \"a\"\n", &format!("node = \"a\"\n{line}\n")));
    assert_eq!(
        top("log_format = \"json\"").unwrap().log_format,
        LogFormat::Json
    );
    assert_eq!(
        top("log_format = \"text\"").unwrap().log_format,
        LogFormat::Text
    );
    let e = err_text(top("log_format = \"yaml\""));
    assert!(e.contains("log_format") || e.contains("yaml"), "{e}");
    assert!(parse(EXAMPLE).unwrap().summary().contains("format text"));
}

#[test]
fn a_private_key_open_to_group_or_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(load_with(d, MINIMAL).is_ok());
    let key = d.join("a.key");
    for (mode, who) in [
        (0o640, "its group"),
        (0o604, "others"),
        (0o660, "its group"),
    ] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_invalid(load_with(d, MINIMAL), "quic.key", who);
        let e = err_text(load_with(d, MINIMAL));
        assert!(e.contains(&key.display().to_string()), "{e}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(load_with(d, MINIMAL).is_ok());
}

#[test]
fn unknown_socket_owners_and_groups_are_refused_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (line, key) in [
        (
            "socket_owner = \"no-such-user-rlinkd\"",
            "links[0].socket_owner",
        ),
        (
            "socket_group = \"no-such-group-rlinkd\"",
            "links[0].socket_group",
        ),
    ] {
        let toml = format!(
            "{MINIMAL}[[links]]\npeer = \"b\"\nlisten = \"unix:b.sock\"\nroute = \"r\"\n{line}\n"
        );
        assert_invalid(load_with(d, &toml), key, "no-such-");
    }
    let toml = format!(
        "{MINIMAL}[[links]]\npeer = \"b\"\nlisten = \"unix:b.sock\"\nroute = \"r\"\nsocket_owner = \"root\"\nsocket_group = 0\n"
    );
    assert!(load_with(d, &toml).is_ok());
}

#[test]
fn the_admin_endpoint_is_off_by_default_and_on_loopback_unless_allowed() {
    assert_eq!(parse(MINIMAL).unwrap().admin, None);
    let c = with("[admin]\nlisten = \"127.0.0.1:9464\"").unwrap();
    let a = c.admin.unwrap();
    assert_eq!(a.listen, "127.0.0.1:9464".parse().unwrap());
    assert!(!a.allow_remote);
    assert!(with("[admin]\nlisten = \"[::1]:9464\"").is_ok());
    assert_invalid(
        with("[admin]\nlisten = \"0.0.0.0:9464\""),
        "admin.listen",
        "not a loopback address",
    );
    let c = with("[admin]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true").unwrap();
    assert!(c.admin.unwrap().allow_remote);
    assert_invalid(
        with("[admin]\nlisten = \"here\""),
        "admin.listen",
        "host:port",
    );
    assert!(with("[admin]\nlisten = \"127.0.0.1:9464\"\nport = 1").is_err());
}
