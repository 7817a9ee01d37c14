//! Reads the realm out of a WAMP HELLO (`[1, "realm1", {...}]`) for logs and stats.
//!
//! Only the array start, the message type and the realm string are parsed, so a captured prefix
//! of the message is enough. JSON, CBOR and MessagePack are understood; anything else, or
//! anything unexpected, gives `None`.

use super::handshake::Serializer;

/// Longest realm accepted, in bytes.
pub const MAX_REALM_LEN: usize = 255;

/// The realm of a HELLO message serialized with `serializer`, or `None` if `payload` does not
/// start like a HELLO (array, first element integer 1, second element a text string of at most
/// [`MAX_REALM_LEN`] bytes of valid UTF-8). Never panics; truncated input gives `None` unless
/// the realm is complete.
pub fn realm_from_hello(serializer: Serializer, payload: &[u8]) -> Option<String> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    match serializer {
        Serializer::Json => json_hello(&mut c),
        Serializer::Cbor => cbor_hello(&mut c),
        Serializer::MsgPack => msgpack_hello(&mut c),
        Serializer::Ubjson | Serializer::FlatBuffers => None,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A big-endian unsigned integer of `n` (1..=8) bytes.
    fn be(&mut self, n: u64) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }
}

fn text(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_REALM_LEN {
        return None;
    }
    String::from_utf8(bytes.to_vec()).ok()
}

// ---- CBOR ----------------------------------------------------------------------------------

/// The argument of a CBOR head with additional info `info`; `None` for indefinite/reserved.
fn cbor_arg(c: &mut Cursor<'_>, info: u8) -> Option<u64> {
    match info {
        0..=23 => Some(u64::from(info)),
        24 => c.be(1),
        25 => c.be(2),
        26 => c.be(4),
        27 => c.be(8),
        _ => None,
    }
}

fn cbor_hello(c: &mut Cursor<'_>) -> Option<String> {
    let head = c.byte()?;
    if head >> 5 != 4 {
        return None;
    }
    if head != 0x9F {
        // Definite array: must hold at least the type and the realm.
        if cbor_arg(c, head & 0x1F)? < 2 {
            return None;
        }
    }
    let head = c.byte()?;
    if head >> 5 != 0 || cbor_arg(c, head & 0x1F)? != 1 {
        return None;
    }
    let head = c.byte()?;
    if head >> 5 != 3 {
        return None;
    }
    let len = cbor_arg(c, head & 0x1F)?;
    if len > MAX_REALM_LEN as u64 {
        return None;
    }
    text(c.take(len)?)
}

// ---- MessagePack ---------------------------------------------------------------------------

fn msgpack_hello(c: &mut Cursor<'_>) -> Option<String> {
    let len = match c.byte()? {
        b @ 0x90..=0x9F => u64::from(b & 0x0F),
        0xDC => c.be(2)?,
        0xDD => c.be(4)?,
        _ => return None,
    };
    if len < 2 {
        return None;
    }
    let one = match c.byte()? {
        b @ 0x00..=0x7F => u64::from(b),
        0xCC | 0xD0 => c.be(1)?,
        0xCD | 0xD1 => c.be(2)?,
        0xCE | 0xD2 => c.be(4)?,
        0xCF | 0xD3 => c.be(8)?,
        _ => return None,
    };
    if one != 1 {
        return None;
    }
    let len = match c.byte()? {
        b @ 0xA0..=0xBF => u64::from(b & 0x1F),
        0xD9 => c.be(1)?,
        0xDA => c.be(2)?,
        0xDB => c.be(4)?,
        _ => return None,
    };
    if len > MAX_REALM_LEN as u64 {
        return None;
    }
    text(c.take(len)?)
}

// ---- JSON ----------------------------------------------------------------------------------

fn json_ws(c: &mut Cursor<'_>) {
    while matches!(c.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        c.pos += 1;
    }
}

fn json_hello(c: &mut Cursor<'_>) -> Option<String> {
    json_ws(c);
    if c.byte()? != b'[' {
        return None;
    }
    json_ws(c);
    if c.byte()? != b'1' {
        return None;
    }
    // "1" must be the whole number (not 10, 1.0, 1e0).
    json_ws(c);
    if c.byte()? != b',' {
        return None;
    }
    json_ws(c);
    if c.byte()? != b'"' {
        return None;
    }
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() > MAX_REALM_LEN {
            return None;
        }
        match c.byte()? {
            b'"' => break,
            b'\\' => match c.byte()? {
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'/' => out.push(b'/'),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0C),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let ch = json_unicode_escape(c)?;
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                _ => return None,
            },
            b if b < 0x20 => return None,
            b => out.push(b),
        }
    }
    text(&out)
}

fn json_hex4(c: &mut Cursor<'_>) -> Option<u32> {
    let digits = std::str::from_utf8(c.take(4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// After `\u`: one code unit, or a surrogate pair written as two escapes.
fn json_unicode_escape(c: &mut Cursor<'_>) -> Option<char> {
    let hi = json_hex4(c)?;
    if (0xD800..0xDC00).contains(&hi) {
        if c.byte()? != b'\\' || c.byte()? != b'u' {
            return None;
        }
        let lo = json_hex4(c)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    } else {
        char::from_u32(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cbor_hello(realm: &str) -> Vec<u8> {
        let mut v = vec![0x83, 0x01];
        let n = realm.len();
        match n {
            0..=23 => v.push(0x60 | n as u8),
            24..=255 => v.extend_from_slice(&[0x78, n as u8]),
            _ => v.extend_from_slice(&[0x79, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(realm.as_bytes());
        // {"roles": {}}
        v.extend_from_slice(&[0xA1, 0x65, b'r', b'o', b'l', b'e', b's', 0xA0]);
        v
    }

    fn msgpack_hello(realm: &str) -> Vec<u8> {
        let mut v = vec![0x93, 0x01];
        let n = realm.len();
        match n {
            0..=31 => v.push(0xA0 | n as u8),
            32..=255 => v.extend_from_slice(&[0xD9, n as u8]),
            _ => v.extend_from_slice(&[0xDA, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(realm.as_bytes());
        v.extend_from_slice(&[0x81, 0xA5, b'r', b'o', b'l', b'e', b's', 0x80]);
        v
    }

    #[test]
    fn json() {
        let r = |s: &str| realm_from_hello(Serializer::Json, s.as_bytes());
        assert_eq!(r(r#"[1,"realm1",{"roles":{}}]"#).as_deref(), Some("realm1"));
        assert_eq!(
            r(" [ 1 ,\n \"com.example\" , {}]").as_deref(),
            Some("com.example")
        );
        assert_eq!(
            r(r#"[1,"a\"b\\c\/\u00e9\ud83d\ude00"]"#).as_deref(),
            Some("a\"b\\c/é😀")
        );
        assert_eq!(r(r#"[1,"r"#), None);
        assert_eq!(r(r#"[2,"realm1",{}]"#), None);
        assert_eq!(r(r#"[10,"realm1",{}]"#), None);
        assert_eq!(r(r#"[1.0,"realm1",{}]"#), None);
        assert_eq!(r(r#"[1,realm1,{}]"#), None);
        assert_eq!(r(r#"{"1":"realm1"}"#), None);
        assert_eq!(r(r#"[1,"\ud83d"]"#), None);
        assert_eq!(r("[1,\"a\nb\"]"), None);
        let long = format!(r#"[1,"{}",{{}}]"#, "x".repeat(255));
        assert_eq!(r(&long).map(|s| s.len()), Some(255));
        let too_long = format!(r#"[1,"{}",{{}}]"#, "x".repeat(256));
        assert_eq!(r(&too_long), None);
    }

    #[test]
    fn cbor() {
        let r = |b: &[u8]| realm_from_hello(Serializer::Cbor, b);
        assert_eq!(r(&cbor_hello("realm1")).as_deref(), Some("realm1"));
        let long = "r".repeat(200);
        assert_eq!(r(&cbor_hello(&long)), Some(long));
        assert_eq!(r(&cbor_hello(&"r".repeat(256))), None);
        // Non-canonical forms of the same thing.
        assert_eq!(r(&[0x98, 3, 0x18, 1, 0x61, b'x']).as_deref(), Some("x"));
        assert_eq!(
            r(&[0x9F, 0x19, 0, 1, 0x61, b'x', 0xFF]).as_deref(),
            Some("x")
        );
        assert_eq!(r(&[0x83, 0x02, 0x61, b'x']), None);
        assert_eq!(r(&[0x81, 0x01, 0x61, b'x']), None);
        assert_eq!(r(&[0x83, 0x01, 0x41, b'x']), None); // byte string
        assert_eq!(r(&[0x83, 0x01, 0x62, 0xC3, 0x28]), None); // bad UTF-8
        assert_eq!(r(&[0x83, 0x01, 0x7F, 0x61, b'x', 0xFF]), None); // indefinite text
        assert_eq!(
            r(&[0x83, 0x01, 0x7B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            None
        );
        let h = cbor_hello("realm1");
        for n in 0..9 {
            assert_eq!(r(&h[..n]), None);
        }
        assert_eq!(r(&h[..9]).as_deref(), Some("realm1"));
    }

    #[test]
    fn msgpack() {
        let r = |b: &[u8]| realm_from_hello(Serializer::MsgPack, b);
        assert_eq!(r(&msgpack_hello("realm1")).as_deref(), Some("realm1"));
        let long = "m".repeat(100);
        assert_eq!(r(&msgpack_hello(&long)), Some(long));
        assert_eq!(r(&msgpack_hello(&"m".repeat(300))), None);
        assert_eq!(r(&[0xDC, 0, 3, 0xCC, 1, 0xA1, b'x']).as_deref(), Some("x"));
        assert_eq!(
            r(&[0x93, 0xD3, 0, 0, 0, 0, 0, 0, 0, 1, 0xA1, b'x']).as_deref(),
            Some("x")
        );
        assert_eq!(r(&[0x93, 0x02, 0xA1, b'x']), None);
        assert_eq!(r(&[0x91, 0x01, 0xA1, b'x']), None);
        assert_eq!(r(&[0x93, 0x01, 0xC4, 1, b'x']), None); // bin
        let h = msgpack_hello("realm1");
        for n in 0..9 {
            assert_eq!(r(&h[..n]), None);
        }
        assert_eq!(r(&h[..9]).as_deref(), Some("realm1"));
    }

    #[test]
    fn other_serializers() {
        assert_eq!(realm_from_hello(Serializer::Ubjson, b"[1,\"x\"]"), None);
        assert_eq!(
            realm_from_hello(Serializer::FlatBuffers, &cbor_hello("x")),
            None
        );
    }

    proptest! {
        #[test]
        fn round_trips(realm in "[a-z0-9._é]{0,80}") {
            prop_assert_eq!(realm_from_hello(Serializer::Cbor, &cbor_hello(&realm)), Some(realm.clone()));
            prop_assert_eq!(realm_from_hello(Serializer::MsgPack, &msgpack_hello(&realm)), Some(realm.clone()));
            let json = format!("[1,\"{realm}\",{{}}]");
            prop_assert_eq!(realm_from_hello(Serializer::Json, json.as_bytes()), Some(realm));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for s in Serializer::ALL {
                if let Some(r) = realm_from_hello(s, &bytes) {
                    prop_assert!(r.len() <= MAX_REALM_LEN);
                }
            }
        }

        #[test]
        fn truncation_never_panics(realm in ".{0,40}", cut in 0usize..64) {
            for (s, b) in [
                (Serializer::Cbor, cbor_hello(&realm)),
                (Serializer::MsgPack, msgpack_hello(&realm)),
            ] {
                let n = cut.min(b.len());
                let got = realm_from_hello(s, &b[..n]);
                prop_assert!(got.is_none() || got.as_deref() == Some(realm.as_str()));
            }
        }
    }
}
