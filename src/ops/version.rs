//! `rlinkd --version`: rlinkd's version and what it was built with, for bug reports and for
//! checking which TLS and QUIC code a node runs.

use std::sync::OnceLock;

/// I/O backends compiled into this binary (`io` picks one; `auto` runs mio for now).
pub const IO_BACKENDS: &[&str] = &[
    "mio (epoll, UDP GSO/GRO probed at run time)",
    "io_uring (UDP on the ring, opcodes probed at run time; io = \"uring\")",
];

/// The lock file this binary was built from: the exact quiche and boring-sys versions, without a
/// build script. `cargo install` and `cargo build` both build with it.
const CARGO_LOCK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));

/// The version of package `name` in `lock` (Cargo.lock's `[[package]]` tables).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    let len = lock[start..].find('"')?;
    Some(lock[start..start + len].to_string())
}

/// The long version text: rlinkd's version, then one line per component.
pub fn long_version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let v = |name| locked_version(CARGO_LOCK, name).unwrap_or_else(|| "unknown".into());
        format!(
            "{}\nquiche {}\nBoringSSL: {} (vendored by boring-sys {})\nio backends: {}",
            env!("CARGO_PKG_VERSION"),
            v("quiche"),
            boring::version::version(),
            v("boring-sys"),
            IO_BACKENDS.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_lock_file() {
        let lock = "[[package]]\nname = \"quiche\"\nversion = \"0.30.0\"\n";
        assert_eq!(locked_version(lock, "quiche").as_deref(), Some("0.30.0"));
        assert_eq!(locked_version(lock, "boring"), None);
        let text = long_version();
        assert!(text.starts_with(env!("CARGO_PKG_VERSION")), "{text}");
        assert!(!text.contains("unknown"), "{text}");
    }
}
