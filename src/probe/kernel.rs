//! The running kernel's release (uname), parsed far enough to compare against the versions that
//! introduced the interfaces rlinkd uses.

use std::mem;

use serde::Serialize;

/// `uname` release and machine, with the release's leading `major.minor` parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelInfo {
    /// e.g. `6.18.44-fc-v595`.
    pub release: String,
    /// e.g. `x86_64`.
    pub machine: String,
    /// `(major, minor)` when the release starts with them.
    pub version: Option<(u32, u32)>,
}

impl KernelInfo {
    /// True when the kernel is known to be at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version.is_some_and(|v| v >= (major, minor))
    }
}

pub fn detect() -> KernelInfo {
    // SAFETY: utsname is plain data (arrays of c_char), valid when zeroed.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: `uts` is a live, writable utsname; uname fills it with NUL-terminated strings.
    let rc = unsafe { libc::uname(&mut uts) };
    let (release, machine) = if rc == 0 {
        (field(&uts.release), field(&uts.machine))
    } else {
        (
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            std::env::consts::ARCH.to_string(),
        )
    };
    KernelInfo {
        version: parse_version(&release),
        release,
        machine,
    }
}

fn field(chars: &[libc::c_char]) -> String {
    // Bounded by the array even if the kernel wrote no NUL.
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `"6.18.44-fc"` -> `Some((6, 18))`.
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_version("5.4.0"), Some((5, 4)));
        assert_eq!(parse_version("6.1"), Some((6, 1)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn this_kernel_has_a_release() {
        let k = detect();
        assert!(!k.release.is_empty());
        assert!(k.version.is_some(), "unparsable release {:?}", k.release);
    }
}
