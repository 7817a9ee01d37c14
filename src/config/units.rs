//! Typed units for the config file: byte sizes (`"64KiB"`, `1452`) and durations (`"250ms"`).
//!
//! Both deserialize from the TOML value directly, so a bad value is reported by toml at the
//! value's line, next to its key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A number of bytes, written as a bare integer or as a string with a binary suffix
/// (`B`, `KiB`, `MiB`, `GiB`). Decimal suffixes (`KB`, `MB`) are refused on purpose: they are
/// ambiguous, and a window off by 5 % is a confusing thing to debug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n * KIB)
    }

    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n * MIB)
    }
}

const SIZE_HINT: &str =
    "use a whole number of bytes or a string with suffix B, KiB, MiB or GiB, e.g. \"64KiB\"";

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, suffix) = t.split_at(split);
        let multiplier = match suffix.trim_start() {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            _ => return Err(format!("invalid byte size {s:?}: {SIZE_HINT}")),
        };
        if digits.is_empty() {
            return Err(format!("invalid byte size {s:?}: {SIZE_HINT}"));
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(ByteSize)
            .ok_or_else(|| format!("byte size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the value exactly: `16 MiB`, `1452 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if n >= unit && n.is_multiple_of(unit) {
                return write!(f, "{} {name}", n / unit);
            }
        }
        write!(f, "{n} B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as 1452 or \"64KiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size must not be negative, got {v}")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as a string: `"10s"`, `"250ms"`, `"2m"`, `"1h"`, `"1m 30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationValue(pub Duration);

impl FromStr for DurationValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(DurationValue)
            .map_err(|e| {
                format!(
                    "invalid duration {s:?} ({e}); write e.g. \"10s\", \"250ms\", \"2m\" or \"1h\""
                )
            })
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration string such as \"10s\" or \"250ms\" (a bare number has no unit)",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Formats a duration the way it is written in the file (`10s`, `200ms`, `1m 30s`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_binary_suffixes() {
        assert_eq!("1452".parse::<ByteSize>(), Ok(ByteSize(1452)));
        assert_eq!("512B".parse::<ByteSize>(), Ok(ByteSize(512)));
        assert_eq!("64KiB".parse::<ByteSize>(), Ok(ByteSize(64 * 1024)));
        assert_eq!("16 MiB".parse::<ByteSize>(), Ok(ByteSize(16 << 20)));
        assert_eq!("2GiB".parse::<ByteSize>(), Ok(ByteSize(2 << 30)));
    }

    #[test]
    fn byte_size_errors_say_which_suffixes_are_valid() {
        for bad in ["1MB", "1kib", "MiB", "", "1.5MiB", "-1", "1 TiB"] {
            let e = bad.parse::<ByteSize>().unwrap_err();
            assert!(e.contains("B, KiB, MiB or GiB"), "{bad}: {e}");
        }
        assert!("99999999999GiB"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn byte_sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(16 << 20).to_string(), "16 MiB");
        assert_eq!(ByteSize(1452).to_string(), "1452 B");
        assert_eq!(ByteSize(1536).to_string(), "1536 B");
        assert_eq!(ByteSize(4096).to_string(), "4 KiB");
        assert_eq!(ByteSize(0).to_string(), "0 B");
    }

    #[test]
    fn durations_parse_common_forms() {
        let d = |s: &str| s.parse::<DurationValue>().map(|v| v.0);
        assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("0s"), Ok(Duration::ZERO));
        assert!(d("10").unwrap_err().contains("\"250ms\""));
        assert!(d("ten seconds").is_err());
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
    }
}
