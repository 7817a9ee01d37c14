//! CPU crypto features, and which BoringSSL AES-GCM implementation they select.
//!
//! The selection mirrors BoringSSL as vendored by boring-sys 5 (`crypto/fipsmodule/aes/gcm.cc.inc`,
//! `CRYPTO_ghash_init` and `CRYPTO_gcm128_init_aes_key`; CPUID handling in `crypto/cpu_intel.cc`):
//! - VAES + VPCLMULQDQ + AVX2 + AVX512BW + AVX512VL + BMI2 + AES-NI + PCLMULQDQ + SSSE3, and zmm
//!   registers not avoided (BoringSSL avoids them on Intel Skylake-server through Tiger Lake) ->
//!   `aes_gcm_{enc,dec}_update_vaes_avx512`;
//! - else VAES + VPCLMULQDQ + AVX2 + AES-NI + PCLMULQDQ + SSSE3 -> `..._vaes_avx2`;
//! - else AES-NI + PCLMULQDQ + SSSE3 + AVX + MOVBE -> the stitched `aesni_gcm_*` (AVX) code;
//! - else AES-NI with a separate CLMUL (or SSSE3) GHASH; SSSE3 `vpaes`; or the constant-time C
//!   fallback (`aes_nohw`, `gcm_nohw`).
//!
//! `OPENSSL_ia32cap` in the environment overrides BoringSSL's CPUID view (reported, not applied).

use serde::Serialize;

/// The CPU features that matter for BoringSSL's AES-GCM and ChaCha20-Poly1305 dispatch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuFlags {
    pub aes: bool,
    pub pclmulqdq: bool,
    pub ssse3: bool,
    pub avx: bool,
    pub movbe: bool,
    pub avx2: bool,
    pub bmi2: bool,
    pub vaes: bool,
    pub vpclmulqdq: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
}

impl CpuFlags {
    /// Reads the space-separated flag list of a `/proc/cpuinfo` `flags` line (with or without
    /// the `flags\t\t: ` prefix).
    pub fn from_cpuinfo_flags(line: &str) -> CpuFlags {
        let list = line.split_once(':').map_or(line, |(_, v)| v);
        let has = |f: &str| list.split_whitespace().any(|x| x == f);
        CpuFlags {
            aes: has("aes"),
            pclmulqdq: has("pclmulqdq"),
            ssse3: has("ssse3"),
            avx: has("avx"),
            movbe: has("movbe"),
            avx2: has("avx2"),
            bmi2: has("bmi2"),
            vaes: has("vaes"),
            vpclmulqdq: has("vpclmulqdq"),
            avx512f: has("avx512f"),
            avx512bw: has("avx512bw"),
            avx512vl: has("avx512vl"),
        }
    }

    /// What this process can use, by `is_x86_feature_detected!` (CPUID and XCR0); `None` off
    /// x86-64.
    pub fn runtime() -> Option<CpuFlags> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as d;
            Some(CpuFlags {
                aes: d!("aes"),
                pclmulqdq: d!("pclmulqdq"),
                ssse3: d!("ssse3"),
                avx: d!("avx"),
                movbe: d!("movbe"),
                avx2: d!("avx2"),
                bmi2: d!("bmi2"),
                vaes: d!("vaes"),
                vpclmulqdq: d!("vpclmulqdq"),
                avx512f: d!("avx512f"),
                avx512bw: d!("avx512bw"),
                avx512vl: d!("avx512vl"),
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    fn and(self, o: CpuFlags) -> CpuFlags {
        CpuFlags {
            aes: self.aes && o.aes,
            pclmulqdq: self.pclmulqdq && o.pclmulqdq,
            ssse3: self.ssse3 && o.ssse3,
            avx: self.avx && o.avx,
            movbe: self.movbe && o.movbe,
            avx2: self.avx2 && o.avx2,
            bmi2: self.bmi2 && o.bmi2,
            vaes: self.vaes && o.vaes,
            vpclmulqdq: self.vpclmulqdq && o.vpclmulqdq,
            avx512f: self.avx512f && o.avx512f,
            avx512bw: self.avx512bw && o.avx512bw,
            avx512vl: self.avx512vl && o.avx512vl,
        }
    }

    /// The names of the set flags, in `/proc/cpuinfo` spelling.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.aes, "aes"),
            (self.pclmulqdq, "pclmulqdq"),
            (self.ssse3, "ssse3"),
            (self.avx, "avx"),
            (self.movbe, "movbe"),
            (self.avx2, "avx2"),
            (self.bmi2, "bmi2"),
            (self.vaes, "vaes"),
            (self.vpclmulqdq, "vpclmulqdq"),
            (self.avx512f, "avx512f"),
            (self.avx512bw, "avx512bw"),
            (self.avx512vl, "avx512vl"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// BoringSSL's AES-GCM implementation for a set of features (x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AesGcmPath {
    VaesAvx512,
    VaesAvx2,
    AesniAvx,
    AesniClmul,
    Vpaes,
    ConstantTimeC,
    /// Not x86-64: this module does not model the ARM dispatch.
    NotModelled,
}

impl AesGcmPath {
    pub fn describe(self) -> &'static str {
        match self {
            AesGcmPath::VaesAvx512 => "VAES/VPCLMULQDQ AVX-512 (aes_gcm_*_vaes_avx512)",
            AesGcmPath::VaesAvx2 => "VAES/VPCLMULQDQ AVX2 (aes_gcm_*_vaes_avx2)",
            AesGcmPath::AesniAvx => "AES-NI + PCLMULQDQ stitched AVX (aesni_gcm_*)",
            AesGcmPath::AesniClmul => "AES-NI CTR + separate CLMUL/SSSE3 GHASH",
            AesGcmPath::Vpaes => "SSSE3 vpaes + GHASH (constant time, slow)",
            AesGcmPath::ConstantTimeC => "constant-time C fallback (aes_nohw, gcm_nohw; slow)",
            AesGcmPath::NotModelled => "not modelled for this architecture",
        }
    }
}

/// The dispatch in `CRYPTO_gcm128_init_aes_key` for features `f`; `avoid_zmm` is BoringSSL's
/// "do not use zmm registers" decision ([`avoids_zmm`]).
pub fn aes_gcm_path(f: &CpuFlags, avoid_zmm: bool) -> AesGcmPath {
    if !cfg!(target_arch = "x86_64") {
        return AesGcmPath::NotModelled;
    }
    let clmul = f.pclmulqdq && f.ssse3;
    if clmul && f.aes && f.vpclmulqdq && f.avx2 && f.vaes {
        if f.avx512bw && f.avx512vl && f.bmi2 && !avoid_zmm {
            return AesGcmPath::VaesAvx512;
        }
        return AesGcmPath::VaesAvx2;
    }
    if clmul && f.aes && f.avx && f.movbe && !(f.vpclmulqdq && f.avx2) {
        return AesGcmPath::AesniAvx;
    }
    if f.aes {
        // With VPCLMULQDQ+AVX2 but no VAES, BoringSSL picks the VPCLMULQDQ GHASH and AES-NI CTR
        // without stitching: also this bucket.
        return AesGcmPath::AesniClmul;
    }
    if f.ssse3 {
        return AesGcmPath::Vpaes;
    }
    AesGcmPath::ConstantTimeC
}

/// BoringSSL's zmm avoidance: Intel family 6 Skylake-server, Ice Lake and Tiger Lake models.
pub fn avoids_zmm(vendor: Option<&str>, family: Option<u32>, model: Option<u32>) -> bool {
    vendor == Some("GenuineIntel")
        && family == Some(6)
        && matches!(model, Some(85 | 106 | 108 | 125 | 126 | 140 | 141))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CpuReport {
    pub model_name: Option<String>,
    pub vendor: Option<String>,
    pub family: Option<u32>,
    pub model: Option<u32>,
    /// From the first `flags` line of `/proc/cpuinfo`.
    pub cpuinfo_flags: CpuFlags,
    /// From `is_x86_feature_detected!` (x86-64 only).
    pub runtime_flags: Option<CpuFlags>,
    /// BoringSSL's zmm avoidance for this CPU.
    pub avoid_zmm: bool,
    pub aes_gcm_path: AesGcmPath,
    /// ChaCha20-Poly1305 uses BoringSSL's AVX2 assembly (AVX2 + BMI2), else SSE4.1/scalar.
    pub chacha20_poly1305_avx2: bool,
    /// `OPENSSL_ia32cap` as set in the environment: BoringSSL applies it over CPUID, so the path
    /// above may not be the one taken.
    pub openssl_ia32cap: Option<String>,
}

impl CpuReport {
    /// The flags both sources agree on (what BoringSSL's CPUID probe will also see, barring
    /// `OPENSSL_ia32cap`).
    pub fn effective_flags(&self) -> CpuFlags {
        match self.runtime_flags {
            Some(r) => self.cpuinfo_flags.and(r),
            None => self.cpuinfo_flags,
        }
    }
}

/// Parses `/proc/cpuinfo` text (first processor) into a report.
pub fn from_cpuinfo(text: &str, runtime_flags: Option<CpuFlags>) -> CpuReport {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let flags_line = value("flags").unwrap_or_default();
    let vendor = value("vendor_id");
    let family = value("cpu family").and_then(|v| v.parse().ok());
    let model = value("model").and_then(|v| v.parse().ok());
    let avoid_zmm = avoids_zmm(vendor.as_deref(), family, model);
    let mut report = CpuReport {
        model_name: value("model name"),
        vendor,
        family,
        model,
        cpuinfo_flags: CpuFlags::from_cpuinfo_flags(&flags_line),
        runtime_flags,
        avoid_zmm,
        aes_gcm_path: AesGcmPath::NotModelled,
        chacha20_poly1305_avx2: false,
        openssl_ia32cap: None,
    };
    let f = report.effective_flags();
    report.aes_gcm_path = aes_gcm_path(&f, avoid_zmm);
    report.chacha20_poly1305_avx2 = cfg!(target_arch = "x86_64") && f.avx2 && f.bmi2;
    report
}

pub fn detect() -> CpuReport {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut report = from_cpuinfo(&text, CpuFlags::runtime());
    // A diagnostic, not configuration: BoringSSL itself reads this variable.
    report.openssl_ia32cap = std::env::var("OPENSSL_ia32cap").ok();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPYC: &str =
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
        model name\t: AMD EPYC\nflags\t\t: fpu sse2 pclmulqdq ssse3 fma movbe aes avx avx2 bmi2 \
        avx512f avx512bw avx512vl vaes vpclmulqdq\n";

    #[test]
    fn cpuinfo_flags_parse() {
        let f = CpuFlags::from_cpuinfo_flags(
            "flags\t\t: fpu vme pclmulqdq ssse3 aes avx avx2 avx512f avx512vl vaes vpclmulqdq",
        );
        assert!(f.aes && f.pclmulqdq && f.avx2 && f.avx512f && f.avx512vl);
        assert!(f.vaes && f.vpclmulqdq);
        // "avx512vl" must not make "avx512bw" true, nor "avx2" make "avx" false.
        assert!(!f.avx512bw && f.avx && !f.bmi2);
        assert!(!CpuFlags::from_cpuinfo_flags("flags : avx512f").aes);
    }

    #[test]
    fn epyc_with_vaes_takes_the_avx512_path() {
        let r = from_cpuinfo(EPYC, None);
        assert_eq!(r.model_name.as_deref(), Some("AMD EPYC"));
        assert_eq!((r.family, r.model), (Some(25), Some(17)));
        assert!(!r.avoid_zmm);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(r.aes_gcm_path, AesGcmPath::VaesAvx512);
            assert!(r.chacha20_poly1305_avx2);
        }
    }

    #[test]
    fn dispatch_falls_back_in_boringssl_order() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let full = from_cpuinfo(EPYC, None).cpuinfo_flags;
        assert_eq!(aes_gcm_path(&full, true), AesGcmPath::VaesAvx2);
        let no_vaes = CpuFlags {
            vaes: false,
            vpclmulqdq: false,
            ..full
        };
        assert_eq!(aes_gcm_path(&no_vaes, false), AesGcmPath::AesniAvx);
        let no_avx = CpuFlags {
            avx: false,
            ..no_vaes
        };
        assert_eq!(aes_gcm_path(&no_avx, false), AesGcmPath::AesniClmul);
        let ssse3_only = CpuFlags {
            ssse3: true,
            ..CpuFlags::default()
        };
        assert_eq!(aes_gcm_path(&ssse3_only, false), AesGcmPath::Vpaes);
        assert_eq!(
            aes_gcm_path(&CpuFlags::default(), false),
            AesGcmPath::ConstantTimeC
        );
        assert!(avoids_zmm(Some("GenuineIntel"), Some(6), Some(106)));
        assert!(!avoids_zmm(Some("GenuineIntel"), Some(6), Some(143)));
    }
}
