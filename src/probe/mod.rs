//! `rlinkd probe`: what this host offers rlinkd, each item tested the way rlinkd would use it
//! (a ring set up, a GSO send made, a ULP attached, an ethtool query), never inferred from
//! version numbers alone.
//!
//! [`probe`] returns a [`Report`]; its `Display` prints one line per item, each saying what
//! rlinkd does with the finding, and it serializes to JSON (`rlinkd probe --json`, and the
//! benchmark harness embeds it in its results).

pub mod cpu;
pub mod kernel;
pub mod ktls;
pub mod nic;
pub mod udp;
pub mod uring;

use std::fmt;

use serde::Serialize;

pub use cpu::{AesGcmPath, CpuFlags, CpuReport};
pub use kernel::KernelInfo;
pub use ktls::KtlsReport;
pub use nic::{FeatureState, NicReport};
pub use udp::UdpReport;
pub use uring::UringReport;

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum Support {
    Yes,
    /// Tested and absent; says how it failed.
    No(String),
    /// Could not be tested; says why.
    Unknown(String),
}

impl Support {
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Yes => f.write_str("yes"),
            Support::No(why) => write!(f, "no ({why})"),
            Support::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// Everything `rlinkd probe` finds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub kernel: KernelInfo,
    pub io_uring: UringReport,
    pub udp: UdpReport,
    pub ktls: KtlsReport,
    pub nic: NicReport,
    pub cpu: CpuReport,
    /// Always the same statement; in the report so JSON consumers see it too.
    pub quic_crypto_offload: &'static str,
}

const QUIC_CRYPTO_OFFLOAD: &str = "no mainline kernel interface; rlinkd does all QUIC crypto in \
                                   user space (BoringSSL)";

/// Probes this host. `nic`: the interface whose offloads to read (default: the default route's,
/// else `lo`). Takes a few milliseconds; opens and closes loopback sockets and an io_uring.
pub fn probe(nic: Option<&str>) -> Report {
    Report {
        kernel: kernel::detect(),
        io_uring: uring::detect(),
        udp: udp::detect(),
        ktls: ktls::detect(),
        nic: nic::detect(nic),
        cpu: cpu::detect(),
        quic_crypto_offload: QUIC_CRYPTO_OFFLOAD,
    }
}

impl Report {
    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings, bools and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kernel;
        writeln!(f, "kernel: {} ({})", k.release, k.machine)?;

        let u = &self.io_uring;
        let sysctl = match u.disabled_sysctl {
            Some(0) => "io_uring_disabled=0".to_string(),
            Some(n) => format!("io_uring_disabled={n} (restricted)"),
            None => "io_uring_disabled unreadable".to_string(),
        };
        writeln!(f, "io_uring setup: {} [{sysctl}]", u.setup)?;
        for op in &u.opcodes {
            writeln!(
                f,
                "io_uring op {}: {} -> {}{}",
                op.name,
                op.support,
                op.used_for,
                if op.required { "" } else { " (optional)" }
            )?;
        }
        writeln!(
            f,
            "io_uring provided buffer ring: {} -> multishot receive into a shard's buffer pool",
            u.buf_ring
        )?;
        writeln!(
            f,
            "io_uring multishot RecvMsg (RecvMsgMulti, live test): {} -> one armed receive per socket",
            u.multishot_recvmsg
        )?;
        let missing = u.missing_for_engine();
        let needs = "io_uring_setup, RecvMsg, SendMsg, provided buffer rings and multishot RecvMsg";
        if missing.is_empty() {
            writeln!(
                f,
                "io_uring engine: needs {needs}: all present -> io = \"uring\" runs on it (io = \"auto\" runs mio: not faster yet, see docs/CONFIG.md)"
            )?;
        } else {
            writeln!(
                f,
                "io_uring engine: needs {needs}: missing {} -> every shard runs on mio",
                missing.join(", ")
            )?;
        }

        let d = &self.udp;
        let gso_use = if d.gso_option.is_yes() && d.gso_send.is_yes() {
            "rlinkd sends up to 64 equal-sized QUIC packets per sendmsg"
        } else {
            "rlinkd sends one datagram per sendmsg"
        };
        writeln!(
            f,
            "UDP GSO: UDP_SEGMENT {}, 2 x 1350 B segmented send {} -> {gso_use}",
            d.gso_option, d.gso_send
        )?;
        let gro_use = if d.gro_option.is_yes() && d.gro_coalesced.is_yes() {
            "rlinkd reads coalesced buffers and splits them by segment size"
        } else {
            "rlinkd reads one datagram per recvmsg"
        };
        writeln!(
            f,
            "UDP GRO: UDP_GRO {}, coalesced read with segment size {} -> {gro_use}",
            d.gro_option, d.gro_coalesced
        )?;

        let t = &self.ktls;
        let ulps = t.available_ulp.as_deref().unwrap_or("unreadable");
        let ktls_use = if t.available() {
            "kTLS available: the TLS baseline can hand record crypto to the kernel"
        } else {
            "kTLS unavailable: TLS baseline uses user-space BoringSSL"
        };
        writeln!(
            f,
            "kTLS: TCP_ULP \"tls\" {} [tcp_available_ulp: {ulps}] -> {ktls_use}",
            t.tcp_ulp_tls
        )?;

        let n = &self.nic;
        let feats: Vec<String> = match n.features.first() {
            // One reason for all (no such interface, no ethtool answer): say it once.
            Some(
                first @ nic::NicFeature {
                    state: FeatureState::Unknown(_),
                    ..
                },
            ) if n.features.iter().all(|x| x.state == first.state) => {
                vec![format!("offloads {}", first.state)]
            }
            _ => n
                .features
                .iter()
                .map(|x| format!("{} {}", x.name, x.state))
                .collect(),
        };
        writeln!(
            f,
            "NIC {} ({}): {} -> reported only; rlinkd's GSO/GRO work in software when the NIC has none",
            n.interface,
            n.chosen_by,
            feats.join(", ")
        )?;
        writeln!(f, "QUIC crypto offload: {}", self.quic_crypto_offload)?;

        let c = &self.cpu;
        let flags = c.effective_flags().names();
        writeln!(
            f,
            "CPU: {} [{}]{}",
            c.model_name.as_deref().unwrap_or("unknown model"),
            if flags.is_empty() {
                "no crypto features".to_string()
            } else {
                flags.join(" ")
            },
            if c.avoid_zmm {
                " (BoringSSL avoids zmm here)"
            } else {
                ""
            }
        )?;
        let ia32cap = match &c.openssl_ia32cap {
            Some(v) => format!(" (OPENSSL_ia32cap={v} is set: BoringSSL may take another path)"),
            None => String::new(),
        };
        writeln!(
            f,
            "AES-GCM: BoringSSL uses {}{ia32cap} -> QUIC packet protection and the TLS baseline",
            c.aes_gcm_path.describe()
        )?;
        writeln!(
            f,
            "ChaCha20-Poly1305: BoringSSL {} -> used only when the handshake picks it (BoringSSL prefers AES-GCM on CPUs with AES-NI)",
            if c.chacha20_poly1305_avx2 {
                "AVX2 assembly"
            } else {
                "SSE/scalar code"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_builds_and_prints_here() {
        let r = probe(None);
        assert!(!r.kernel.release.is_empty());
        let text = r.to_string();
        assert!(text.contains("QUIC crypto offload: no mainline kernel interface"));
        assert!(text.lines().count() >= 15, "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["kernel"]["release"], r.kernel.release.as_str());
    }

    /// DESIGN.md "Machine facts": GSO and GRO work on this machine kind's loopback.
    #[test]
    fn gso_and_gro_work_on_loopback() {
        let u = udp::detect();
        assert_eq!(u.gso_option, Support::Yes, "{u:?}");
        assert_eq!(u.gso_send, Support::Yes, "{u:?}");
        assert_eq!(u.gro_option, Support::Yes, "{u:?}");
        assert_eq!(u.gro_coalesced, Support::Yes, "{u:?}");
    }

    #[test]
    fn io_uring_probe_answers() {
        let u = uring::detect();
        match u.disabled_sysctl {
            Some(0) | None => {
                // DESIGN.md: io_uring works here, multishot recvmsg included. Where it is
                // denied (a seccomp'd container), say so instead of failing.
                if let Support::No(why) = &u.setup {
                    eprintln!("skipped: io_uring_setup refused here: {why}");
                    return;
                }
                assert!(u.missing_for_engine().is_empty(), "{u:?}");
            }
            // Disabled for everyone: setup must have been refused, and said so.
            Some(2) => assert!(matches!(u.setup, Support::No(_)), "{u:?}"),
            // Restricted to a group (root passes): either outcome, as long as it is explained.
            Some(_) => {}
        }
    }

    #[test]
    fn support_serializes_with_state_and_detail() {
        let j = serde_json::to_string(&Support::No("x".into())).unwrap();
        assert_eq!(j, r#"{"state":"no","detail":"x"}"#);
        assert_eq!(
            serde_json::to_string(&Support::Yes).unwrap(),
            r#"{"state":"yes"}"#
        );
    }
}
