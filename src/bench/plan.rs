//! Which (workload, variant) cells a run measures and in which order: quic once per path MTU,
//! TCP-based transports once, rounds interleaved.

use super::{Transport, Workload};
use crate::config::IoMode;

/// Path MTU presets for the quic transport. QUIC runs over UDP on IPv4 or IPv6; the payload
/// leaves room for the larger (IPv6, 40 bytes) header and UDP's 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Mtu {
    /// Ethernet: 1,452-byte QUIC payload.
    #[value(name = "1500")]
    Ethernet,
    /// Jumbo frames of many data-center fabrics: 8,952-byte QUIC payload.
    #[value(name = "9000")]
    Jumbo,
}

/// UDP payload at a 1,500-byte path MTU.
pub const PAYLOAD_1500: usize = 1452;
/// UDP payload at a 9,000-byte path MTU.
pub const PAYLOAD_9000: usize = 8952;

impl Mtu {
    pub fn udp_payload(self) -> usize {
        match self {
            Mtu::Ethernet => PAYLOAD_1500,
            Mtu::Jumbo => PAYLOAD_9000,
        }
    }
}

/// One column of a workload: a transport and, for quic, the largest UDP payload rlinkd sends and
/// the shards each node runs (`None`: the node's default, one per CPU it may use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Variant {
    pub transport: Transport,
    pub udp_payload: Option<usize>,
    pub shards: Option<usize>,
    /// quic only: the nodes' I/O backend when the run set it (hidden `--io`).
    pub io: Option<IoMode>,
}

impl Variant {
    /// The transport column of the table: `quic`, or `quic 2sh` when the run set the shards,
    /// `quic uring` when it set the I/O backend.
    pub fn name(&self) -> String {
        let mut name = self.transport.name().to_string();
        if let Some(n) = self.shards {
            name.push_str(&format!(" {n}sh"));
        }
        if let Some(io) = self.io {
            name.push(' ');
            name.push_str(io.name());
        }
        name
    }

    /// How charts and progress lines name it: `quic` at 1,500, `quic 9000`, `quic 65527 B`,
    /// `quic 2sh 9000`.
    pub fn label(&self) -> String {
        match self.udp_payload {
            Some(PAYLOAD_1500) | None => self.name(),
            Some(PAYLOAD_9000) => format!("{} 9000", self.name()),
            Some(n) => format!("{} {n} B", self.name()),
        }
    }

    /// The MTU column of the table.
    pub fn path_label(&self) -> String {
        match self.udp_payload {
            None if self.transport == Transport::Quic => "?".into(),
            None => "lo".into(),
            Some(PAYLOAD_1500) => "1500".into(),
            Some(PAYLOAD_9000) => "9000".into(),
            Some(n) if n > PAYLOAD_9000 => format!("{n}B*"),
            Some(n) => format!("{n}B"),
        }
    }
}

/// What every (workload, variant) cell of a run is: the workloads in order, each with its variants.
pub type Plan = Vec<(Workload, Vec<Variant>)>;

/// The cells to run. quic runs once per UDP payload: `--udp-payload` if given, else each `--mtu`,
/// else (the default suite) 1,500 and 9,000 for bulk and events and 1,500 for the rest. TCP-based
/// transports run once: on loopback a path MTU does not change what a TCP sender hands the kernel.
/// `shards` (quic only) runs each quic variant once per shard count; empty: the nodes' default.
/// `ios` (quic only) likewise once per I/O backend; empty: the nodes' default.
pub fn plan(
    workloads: &[Workload],
    transports: &[Transport],
    mtus: &[Mtu],
    udp_payload: Option<usize>,
    shards: &[usize],
    ios: &[IoMode],
) -> Plan {
    let shard_counts: Vec<Option<usize>> = if shards.is_empty() {
        vec![None]
    } else {
        shards.iter().map(|&n| Some(n)).collect()
    };
    let io_modes: Vec<Option<IoMode>> = if ios.is_empty() {
        vec![None]
    } else {
        ios.iter().map(|&m| Some(m)).collect()
    };
    workloads
        .iter()
        .map(|&w| {
            let mut payloads: Vec<usize> = match (udp_payload, mtus.is_empty()) {
                (Some(n), _) => vec![n],
                (None, false) => mtus.iter().map(|m| m.udp_payload()).collect(),
                (None, true) if matches!(w, Workload::Bulk | Workload::Events) => {
                    vec![PAYLOAD_1500, PAYLOAD_9000]
                }
                (None, true) => vec![PAYLOAD_1500],
            };
            payloads.sort_unstable();
            payloads.dedup();
            let mut variants = Vec::new();
            for &t in transports {
                if t == Transport::Quic {
                    for &p in &payloads {
                        for &shards in &shard_counts {
                            variants.extend(io_modes.iter().map(|&io| Variant {
                                transport: t,
                                udp_payload: Some(p),
                                shards,
                                io,
                            }));
                        }
                    }
                } else {
                    variants.push(Variant {
                        transport: t,
                        udp_payload: None,
                        shards: None,
                        io: None,
                    });
                }
            }
            variants.sort();
            variants.dedup();
            (w, variants)
        })
        .collect()
}

/// The order of a cell's variants in round `round` (0-based): forward, reverse, forward, ... so
/// that slow drift on the machine does not always favour the same transport.
pub fn round_order(variants: &[Variant], round: usize) -> Vec<Variant> {
    let mut v = variants.to_vec();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: Transport, p: Option<usize>) -> Variant {
        Variant {
            transport: t,
            udp_payload: p,
            shards: None,
            io: None,
        }
    }

    /// The default suite: quic at both MTUs for bulk and events only; TCP-based transports once.
    #[test]
    fn default_plan_runs_bulk_and_events_at_both_mtus() {
        let p = plan(&Workload::ALL, &Transport::ALL, &[], None, &[], &[]);
        assert_eq!(p.len(), 7);
        let (w, bulk) = &p[0];
        assert_eq!(*w, Workload::Bulk);
        assert_eq!(
            bulk,
            &vec![
                v(Transport::Tcp, None),
                v(Transport::Uds, None),
                v(Transport::Tls, None),
                v(Transport::Haproxy, None),
                v(Transport::Stunnel, None),
                v(Transport::Quic, Some(1452)),
                v(Transport::Quic, Some(8952)),
            ]
        );
        assert_eq!(p[1].1.len(), 7, "events at both MTUs");
        for (w, vs) in &p[2..] {
            assert_eq!(vs.len(), 6, "{w:?} at 1500 only");
            assert!(vs.contains(&v(Transport::Quic, Some(1452))));
        }
        let jumbo = plan(
            &[Workload::Rpc],
            &[Transport::Quic],
            &[Mtu::Jumbo],
            None,
            &[],
            &[],
        );
        assert_eq!(jumbo[0].1, vec![v(Transport::Quic, Some(8952))]);
        let lo = plan(
            &[Workload::Bulk],
            &[Transport::Quic],
            &[Mtu::Jumbo],
            Some(65527),
            &[],
            &[],
        );
        assert_eq!(lo[0].1, vec![v(Transport::Quic, Some(65527))]);
        assert_eq!(lo[0].1[0].path_label(), "65527B*");
    }

    /// `--shards 1,2`: every quic variant once per shard count, the others once.
    #[test]
    fn shards_multiply_the_quic_variants_only() {
        let p = plan(
            &[Workload::Events],
            &[Transport::Haproxy, Transport::Quic],
            &[Mtu::Ethernet],
            None,
            &[1, 2],
            &[],
        );
        let one = Variant {
            shards: Some(1),
            ..v(Transport::Quic, Some(1452))
        };
        let two = Variant {
            shards: Some(2),
            ..one
        };
        assert_eq!(p[0].1, vec![v(Transport::Haproxy, None), one, two]);
        assert_eq!(two.name(), "quic 2sh");
        assert_eq!(two.label(), "quic 2sh");
        assert_eq!(
            Variant {
                udp_payload: Some(8952),
                ..two
            }
            .label(),
            "quic 2sh 9000"
        );
    }

    /// `--io mio,uring`: every quic variant once per backend, named after it.
    #[test]
    fn io_backends_multiply_the_quic_variants_only() {
        let p = plan(
            &[Workload::Bulk],
            &[Transport::Tcp, Transport::Quic],
            &[Mtu::Ethernet],
            None,
            &[],
            &[IoMode::Mio, IoMode::Uring],
        );
        let mio = Variant {
            io: Some(IoMode::Mio),
            ..v(Transport::Quic, Some(1452))
        };
        let uring = Variant {
            io: Some(IoMode::Uring),
            ..mio
        };
        assert_eq!(p[0].1, vec![v(Transport::Tcp, None), uring, mio]);
        assert_eq!(mio.label(), "quic mio");
        assert_eq!(
            Variant {
                shards: Some(2),
                udp_payload: Some(8952),
                ..uring
            }
            .label(),
            "quic 2sh uring 9000"
        );
    }

    #[test]
    fn rounds_interleave_forward_reverse_forward() {
        let vs = [
            v(Transport::Tcp, None),
            v(Transport::Haproxy, None),
            v(Transport::Quic, Some(1452)),
        ];
        assert_eq!(round_order(&vs, 0), vs.to_vec());
        let mut rev = vs.to_vec();
        rev.reverse();
        assert_eq!(round_order(&vs, 1), rev);
        assert_eq!(round_order(&vs, 2), vs.to_vec());
    }
}
