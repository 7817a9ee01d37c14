//! The TLS 1.3 traffic-key schedule (RFC 8446 §7.1, §7.3): from a traffic secret to the record
//! key and IV the kernel needs. Pure functions over bytes; no I/O.
//!
//! HKDF-Expand comes from BoringSSL (`boring::hkdf`), which the crate already links; only the
//! `HkdfLabel` encoding is ours, and it is checked against RFC 8448's "key info"/"iv info" bytes.

use std::fmt;

use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::hkdf::HkdfSuite;

/// Length of the per-record nonce base (RFC 8446 §5.3: `iv_length` is 12 for every TLS 1.3 AEAD).
pub const IV_LEN: usize = 12;

/// The TLS 1.3 cipher suites kTLS can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    Aes128GcmSha256,
    Aes256GcmSha384,
    Chacha20Poly1305Sha256,
}

impl Suite {
    /// From the IANA cipher suite number (`SslCipherRef::protocol_id`).
    pub fn from_protocol_id(id: u16) -> Option<Suite> {
        match id {
            0x1301 => Some(Suite::Aes128GcmSha256),
            0x1302 => Some(Suite::Aes256GcmSha384),
            0x1303 => Some(Suite::Chacha20Poly1305Sha256),
            _ => None,
        }
    }

    pub fn protocol_id(self) -> u16 {
        match self {
            Suite::Aes128GcmSha256 => 0x1301,
            Suite::Aes256GcmSha384 => 0x1302,
            Suite::Chacha20Poly1305Sha256 => 0x1303,
        }
    }

    /// AEAD key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Suite::Aes128GcmSha256 => 16,
            Suite::Aes256GcmSha384 | Suite::Chacha20Poly1305Sha256 => 32,
        }
    }

    /// Hash output length, which is also the length of every traffic secret.
    pub fn hash_len(self) -> usize {
        match self {
            Suite::Aes256GcmSha384 => 48,
            Suite::Aes128GcmSha256 | Suite::Chacha20Poly1305Sha256 => 32,
        }
    }

    pub fn digest(self) -> MessageDigest {
        match self {
            Suite::Aes256GcmSha384 => MessageDigest::sha384(),
            Suite::Aes128GcmSha256 | Suite::Chacha20Poly1305Sha256 => MessageDigest::sha256(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("traffic secret is {got} bytes, {suite:?} needs {expected}")]
    SecretLength {
        suite: Suite,
        expected: usize,
        got: usize,
    },
    #[error("HKDF label or context longer than 255 bytes, or output longer than 65535")]
    LabelTooLong,
    #[error("HKDF-Expand: {0}")]
    Hkdf(#[from] ErrorStack),
}

/// The `HkdfLabel` structure of RFC 8446 §7.1, serialized: `uint16 length`,
/// `opaque label<7..255> = "tls13 " + label`, `opaque context<0..255>`.
pub fn hkdf_label(label: &str, context: &[u8], len: usize) -> Result<Vec<u8>, ScheduleError> {
    const PREFIX: &[u8] = b"tls13 ";
    let full = PREFIX.len() + label.len();
    let (Ok(len), Ok(full_len), Ok(ctx_len)) = (
        u16::try_from(len),
        u8::try_from(full),
        u8::try_from(context.len()),
    ) else {
        return Err(ScheduleError::LabelTooLong);
    };
    let mut info = Vec::with_capacity(2 + 1 + full + 1 + context.len());
    info.extend_from_slice(&len.to_be_bytes());
    info.push(full_len);
    info.extend_from_slice(PREFIX);
    info.extend_from_slice(label.as_bytes());
    info.push(ctx_len);
    info.extend_from_slice(context);
    Ok(info)
}

/// `HKDF-Expand-Label(secret, label, context, out.len())` (RFC 8446 §7.1).
pub fn hkdf_expand_label(
    digest: MessageDigest,
    secret: &[u8],
    label: &str,
    context: &[u8],
    out: &mut [u8],
) -> Result<(), ScheduleError> {
    let info = hkdf_label(label, context, out.len())?;
    HkdfSuite::new(digest).expand(secret, &info, out)?;
    Ok(())
}

/// Record protection state for one direction: what `TLS_TX` / `TLS_RX` take.
#[derive(Clone, PartialEq, Eq)]
pub struct TrafficKeys {
    pub suite: Suite,
    /// `HKDF-Expand-Label(secret, "key", "", key_len)`; `suite.key_len()` bytes.
    pub key: Vec<u8>,
    /// `HKDF-Expand-Label(secret, "iv", "", 12)`: the nonce base XORed with the sequence number.
    pub iv: [u8; IV_LEN],
    /// Sequence number of the next record in this direction.
    pub seq: u64,
}

impl fmt::Debug for TrafficKeys {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficKeys")
            .field("suite", &self.suite)
            .field("key", &"<redacted>")
            .field("iv", &"<redacted>")
            .field("seq", &self.seq)
            .finish()
    }
}

/// Derives the write key and IV from a traffic secret (RFC 8446 §7.3), for records numbered from
/// `seq` on.
pub fn traffic_keys(suite: Suite, secret: &[u8], seq: u64) -> Result<TrafficKeys, ScheduleError> {
    if secret.len() != suite.hash_len() {
        return Err(ScheduleError::SecretLength {
            suite,
            expected: suite.hash_len(),
            got: secret.len(),
        });
    }
    let mut key = vec![0u8; suite.key_len()];
    hkdf_expand_label(suite.digest(), secret, "key", &[], &mut key)?;
    let mut iv = [0u8; IV_LEN];
    hkdf_expand_label(suite.digest(), secret, "iv", &[], &mut iv)?;
    Ok(TrafficKeys {
        suite,
        key,
        iv,
        seq,
    })
}

/// Lower-case hex without separators to bytes; `None` on odd length or a non-hex digit.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| (b as char).to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    Some(digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        from_hex(s).expect("test vector is hex")
    }

    fn check(suite: Suite, secret: &str, key: &str, iv: &str) {
        let k = traffic_keys(suite, &hex(secret), 0).unwrap();
        assert_eq!(k.key, hex(key), "key");
        assert_eq!(k.iv.to_vec(), hex(iv), "iv");
    }

    // RFC 8448 §3 (Simple 1-RTT Handshake, TLS_AES_128_GCM_SHA256), "key info (13 octets)" and
    // "iv info (12 octets)", identical for every direction.
    #[test]
    fn hkdf_label_bytes_match_rfc_8448() {
        assert_eq!(
            hkdf_label("key", &[], 16).unwrap(),
            hex("00 10 09 74 6c 73 31 33 20 6b 65 79 00")
        );
        assert_eq!(
            hkdf_label("iv", &[], 12).unwrap(),
            hex("00 0c 08 74 6c 73 31 33 20 69 76 00")
        );
    }

    // RFC 8448 §3, "{server} derive write traffic keys for handshake data".
    #[test]
    fn rfc_8448_server_handshake_keys() {
        check(
            Suite::Aes128GcmSha256,
            "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4
             e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
            "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc",
            "5d 31 3e b2 67 12 76 ee 13 00 0b 30",
        );
    }

    // RFC 8448 §3, "{server} derive read traffic keys for handshake data".
    #[test]
    fn rfc_8448_client_handshake_keys() {
        check(
            Suite::Aes128GcmSha256,
            "b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f
             3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21",
            "db fa a6 93 d1 76 2c 5b 66 6a f5 d9 50 25 8d 01",
            "5b d3 c7 1b 83 6e 0b 76 bb 73 26 5f",
        );
    }

    // RFC 8448 §3, "{server} derive write traffic keys for application data"
    // (server_application_traffic_secret_0).
    #[test]
    fn rfc_8448_server_application_keys() {
        check(
            Suite::Aes128GcmSha256,
            "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32
             82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43",
            "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56",
            "cf 78 2b 88 dd 83 54 9a ad f1 e9 84",
        );
    }

    // RFC 8448 §3, "{client} derive write traffic keys for application data"
    // (client_application_traffic_secret_0).
    #[test]
    fn rfc_8448_client_application_keys() {
        check(
            Suite::Aes128GcmSha256,
            "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52
             87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5",
            "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51",
            "5b 78 92 3d ee 08 57 90 33 e5 23 d9",
        );
    }

    // RFC 8448 has no SHA-384 trace. These are the handshake secrets and keys of "The Illustrated
    // TLS 1.3 Connection" (tls13.xargs.org, TLS_AES_256_GCM_SHA384), as reproduced by several
    // independent implementations' tests.
    #[test]
    fn sha384_handshake_keys_from_the_illustrated_connection() {
        check(
            Suite::Aes256GcmSha384,
            "23323da031634b241dd37d61032b62a4f450584d1f7f47983ba2f7cc0cdcc39a
             68f481f2b019f9403a3051908a5d1622",
            "9f13575ce3f8cfc1df64a77ceaffe89700b492ad31b4fab01c4792be1b266b7f",
            "9563bc8b590f671f488d2da3",
        );
        check(
            Suite::Aes256GcmSha384,
            "db89d2d6df0e84fed74a2288f8fd4d0959f790ff23946cdf4c26d85e51bebd42
             ae184501972f8d30c4a3e4a3693d0ef0",
            "1135b4826a9a70257e5a391ad93093dfd7c4214812f493b3e3daae1eb2b1ac69",
            "4256d2e0e88babdd05eb2f27",
        );
    }

    #[test]
    fn chacha_takes_a_32_byte_key_from_a_sha256_secret() {
        let k = traffic_keys(Suite::Chacha20Poly1305Sha256, &[7u8; 32], 5).unwrap();
        assert_eq!(k.key.len(), 32);
        assert_eq!(k.seq, 5);
        // Same secret, same hash, different length in the HkdfLabel: unrelated output.
        let aes = traffic_keys(Suite::Aes128GcmSha256, &[7u8; 32], 5).unwrap();
        assert_ne!(k.key[..16], aes.key[..]);
        assert_eq!(k.iv, aes.iv);
    }

    #[test]
    fn wrong_secret_length_is_refused() {
        let e = traffic_keys(Suite::Aes256GcmSha384, &[0u8; 32], 0).unwrap_err();
        assert!(matches!(
            e,
            ScheduleError::SecretLength {
                expected: 48,
                got: 32,
                ..
            }
        ));
    }

    #[test]
    fn suites_round_trip_through_their_iana_numbers() {
        for s in [
            Suite::Aes128GcmSha256,
            Suite::Aes256GcmSha384,
            Suite::Chacha20Poly1305Sha256,
        ] {
            assert_eq!(Suite::from_protocol_id(s.protocol_id()), Some(s));
        }
        assert_eq!(Suite::from_protocol_id(0x1304), None); // TLS_AES_128_CCM_SHA256
    }

    #[test]
    fn debug_hides_the_key() {
        let k = traffic_keys(Suite::Aes128GcmSha256, &[1u8; 32], 0).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("key: ["), "{shown}");
    }
}
