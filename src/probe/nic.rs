//! NIC offloads of one interface, read with the ethtool ioctl the way `ethtool -k` does: the
//! feature names (`ETHTOOL_GSSET_INFO` + `ETHTOOL_GSTRINGS` for `ETH_SS_FEATURES`) and their
//! state (`ETHTOOL_GFEATURES`). Reading needs no privilege.
//!
//! QUIC crypto offload is not among them: mainline Linux has no interface for it.

use std::io;
use std::os::fd::AsRawFd;

use serde::Serialize;
use socket2::{Domain, Socket, Type};

/// Features reported, in `ethtool -k` spelling.
pub const FEATURES: &[&str] = &[
    "tx-udp-segmentation",
    "rx-gro",
    "rx-udp-gro-forwarding",
    "rx-gro-list",
    "tls-hw-tx-offload",
    "tls-hw-rx-offload",
    "esp-hw-offload",
    "tx-esp-segmentation",
];

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum FeatureState {
    /// `fixed`: the driver does not let it be changed (`ethtool -k` "[fixed]").
    On {
        fixed: bool,
    },
    Off {
        fixed: bool,
    },
    Unknown(String),
}

impl std::fmt::Display for FeatureState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureState::On { fixed } => write!(f, "on{}", if *fixed { " [fixed]" } else { "" }),
            FeatureState::Off { fixed } => {
                write!(f, "off{}", if *fixed { " [fixed]" } else { "" })
            }
            FeatureState::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicFeature {
    pub name: &'static str,
    pub state: FeatureState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicReport {
    pub interface: String,
    /// How the interface was chosen: `"--nic"`, `"default route"` or `"fallback"`.
    pub chosen_by: &'static str,
    pub features: Vec<NicFeature>,
}

impl NicReport {
    pub fn feature(&self, name: &str) -> Option<&FeatureState> {
        self.features
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.state)
    }
}

pub fn detect(nic: Option<&str>) -> NicReport {
    let (interface, chosen_by) = match nic {
        Some(n) => (n.to_string(), "--nic"),
        None => match std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| default_route_interface(&t))
        {
            Some(n) => (n, "default route"),
            None => ("lo".to_string(), "fallback"),
        },
    };
    let features = match read_features(&interface) {
        Ok(all) => FEATURES
            .iter()
            .map(|&name| NicFeature {
                name,
                state: all
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| {
                        FeatureState::Unknown("this kernel does not name the feature".into())
                    }),
            })
            .collect(),
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENODEV) => format!("no interface {interface:?}"),
                Some(libc::EOPNOTSUPP) => "driver does not answer ethtool".to_string(),
                _ => format!("ethtool ioctl: {e}"),
            };
            FEATURES
                .iter()
                .map(|&name| NicFeature {
                    name,
                    state: FeatureState::Unknown(why.clone()),
                })
                .collect()
        }
    };
    NicReport {
        interface,
        chosen_by,
        features,
    }
}

/// The interface of the first up default route (destination and mask 0) in `/proc/net/route`.
pub fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (iface, dest, flags, mask) = (cols.first()?, cols.get(1)?, cols.get(3)?, cols.get(7)?);
        let up = u32::from_str_radix(flags, 16).ok()? & 0x1 != 0;
        (up && *dest == "00000000" && *mask == "00000000").then(|| iface.to_string())
    })
}

/// Every feature of `interface` with its state.
fn read_features(interface: &str) -> io::Result<Vec<(String, FeatureState)>> {
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ || interface.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;

    // ethtool_sset_info { cmd, reserved, sset_mask: u64, data: [u32] }
    let mut sset = vec![0u64; 3];
    write_u32(&mut sset, 0, ETHTOOL_GSSET_INFO);
    write_u32(&mut sset, 1, 0);
    sset[1] = 1u64 << ETH_SS_FEATURES;
    ethtool(&sock, interface, &mut sset)?;
    if sset[1] & (1u64 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let count = read_u32(&sset, 4) as usize;

    // ethtool_gstrings { cmd, string_set, len, data: [u8; len * 32] }
    let header = 12;
    let mut strings = vec![0u64; (header + count * ETH_GSTRING_LEN).div_ceil(8)];
    write_u32(&mut strings, 0, ETHTOOL_GSTRINGS);
    write_u32(&mut strings, 1, ETH_SS_FEATURES);
    write_u32(&mut strings, 2, count as u32);
    ethtool(&sock, interface, &mut strings)?;
    let names: Vec<String> = {
        let bytes = as_bytes(&strings);
        (0..count)
            .map(|i| {
                let s = &bytes[header + i * ETH_GSTRING_LEN..header + (i + 1) * ETH_GSTRING_LEN];
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect()
    };

    // ethtool_gfeatures { cmd, size, features: [{available, requested, active, never_changed}] }
    let blocks = count.div_ceil(32);
    let mut feats = vec![0u64; (8 + blocks * 16).div_ceil(8)];
    write_u32(&mut feats, 0, ETHTOOL_GFEATURES);
    write_u32(&mut feats, 1, blocks as u32);
    ethtool(&sock, interface, &mut feats)?;
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let block = 2 + (i / 32) * 4;
            let bit = 1u32 << (i % 32);
            // As `ethtool -k`: "[fixed]" when the driver does not offer the feature as changeable
            // (not in `available`, i.e. hw_features).
            let fixed = read_u32(&feats, block) & bit == 0;
            let active = read_u32(&feats, block + 2) & bit != 0;
            let state = if active {
                FeatureState::On { fixed }
            } else {
                FeatureState::Off { fixed }
            };
            (name, state)
        })
        .collect())
}

/// The request structs are sequences of native-endian u32s; they live in u64 storage so the
/// 64-bit `sset_mask` is aligned. `index` counts u32s.
fn write_u32(buf: &mut [u64], index: usize, value: u32) {
    let bytes = as_bytes_mut(buf);
    bytes[index * 4..index * 4 + 4].copy_from_slice(&value.to_ne_bytes());
}

fn read_u32(buf: &[u64], index: usize) -> u32 {
    let bytes = as_bytes(buf);
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[index * 4..index * 4 + 4]);
    u32::from_ne_bytes(v)
}

fn as_bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, buf.len() * 8) }
}

fn as_bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; any byte pattern written is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * 8) }
}

/// `ioctl(SIOCETHTOOL)` with `data` as the ethtool command buffer.
fn ethtool(sock: &Socket, interface: &str, data: &mut [u64]) -> io::Result<()> {
    // SAFETY: ifreq is plain data, valid when zeroed.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(interface.as_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.as_mut_ptr() as *mut libc::c_char;
    // SAFETY: `ifr` names the interface (NUL-terminated: checked shorter than IFNAMSIZ, rest
    // zero) and points at `data`, which is sized for the command's reply (the callers size it
    // from the counts they pass in) and outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_is_found() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn loopback_features_are_read() {
        let r = detect(Some("lo"));
        // Loopback always has GRO state and does UDP segmentation in software.
        assert!(
            !matches!(r.feature("rx-gro"), Some(FeatureState::Unknown(_))),
            "{r:?}"
        );
    }

    #[test]
    fn missing_interface_is_unknown_not_an_error() {
        let r = detect(Some("nosuchnic0"));
        assert!(r
            .features
            .iter()
            .all(|f| matches!(f.state, FeatureState::Unknown(_))));
    }
}
