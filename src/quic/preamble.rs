//! The stream preamble: the first bytes a node writes on a new stream, naming the route on the
//! receiving node that the rlink is delivered to. Pure code, no I/O.
//!
//! ```text
//! +------+------+---------+-----------+----------------------+
//! | 0x52 | 0x4C | version | route len | route name (UTF-8)   |  then the RawSocket bytes, verbatim
//! | 'R'  | 'L'  |  0x01   |  1..=255  | route len octets     |
//! +------+------+---------+-----------+----------------------+
//! ```

/// Octets before the route name.
pub const HEADER_LEN: usize = 4;
pub const MAGIC: [u8; 2] = *b"RL";
pub const VERSION: u8 = 1;
/// Longest preamble: header plus a 255-octet route name.
pub const MAX_LEN: usize = HEADER_LEN + 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    #[error("stream does not start with the rlinkd preamble magic")]
    BadMagic,
    #[error("unsupported preamble version {0}")]
    UnsupportedVersion(u8),
    #[error("route name is empty")]
    EmptyRoute,
    #[error("route name is not UTF-8")]
    RouteNotUtf8,
    #[error("route name is longer than 255 octets")]
    RouteTooLong,
}

/// Encodes the preamble for `route`.
pub fn encode(route: &str) -> Result<Vec<u8>, PreambleError> {
    let name = route.as_bytes();
    if name.is_empty() {
        return Err(PreambleError::EmptyRoute);
    }
    let len = u8::try_from(name.len()).map_err(|_| PreambleError::RouteTooLong)?;
    let mut out = Vec::with_capacity(HEADER_LEN + name.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(len);
    out.extend_from_slice(name);
    Ok(out)
}

/// Looks at the first bytes of a stream. `Ok(None)`: not enough bytes yet, `Ok(Some((route,
/// n)))`: the preamble is the first `n` bytes. Errors are final.
pub fn decode(buf: &[u8]) -> Result<Option<(String, usize)>, PreambleError> {
    for (i, want) in MAGIC.iter().enumerate() {
        match buf.get(i) {
            Some(b) if b == want => {}
            Some(_) => return Err(PreambleError::BadMagic),
            None => return Ok(None),
        }
    }
    match buf.get(2) {
        None => return Ok(None),
        Some(&VERSION) => {}
        Some(&v) => return Err(PreambleError::UnsupportedVersion(v)),
    }
    let Some(&len) = buf.get(3) else {
        return Ok(None);
    };
    if len == 0 {
        return Err(PreambleError::EmptyRoute);
    }
    let end = HEADER_LEN + len as usize;
    let Some(name) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    let route = std::str::from_utf8(name).map_err(|_| PreambleError::RouteNotUtf8)?;
    Ok(Some((route.to_string(), end)))
}

/// How many more bytes `decode` needs to decide, given the `have` bytes it has seen (lets a
/// reader take exactly the preamble off a stream and leave the RawSocket bytes queued).
pub fn bytes_wanted(buf: &[u8]) -> usize {
    match buf.get(3) {
        None => HEADER_LEN - buf.len(),
        Some(&len) => (HEADER_LEN + len as usize).saturating_sub(buf.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_prefix_is_incomplete() {
        let p = encode("router").unwrap();
        assert_eq!(&p[..4], &[b'R', b'L', 1, 6]);
        for cut in 0..p.len() {
            assert_eq!(decode(&p[..cut]), Ok(None), "prefix {cut}");
            let want = if cut < HEADER_LEN {
                HEADER_LEN - cut
            } else {
                p.len() - cut
            };
            assert_eq!(bytes_wanted(&p[..cut]), want);
        }
        let mut with_data = p.clone();
        with_data.extend_from_slice(&[0x7f, 0xf3, 0, 0]);
        assert_eq!(
            decode(&with_data),
            Ok(Some(("router".to_string(), p.len())))
        );
    }

    #[test]
    fn malformed_preambles_are_refused() {
        assert_eq!(decode(b"XL"), Err(PreambleError::BadMagic));
        assert_eq!(
            decode(&[b'R', b'L', 2, 1, b'a']),
            Err(PreambleError::UnsupportedVersion(2))
        );
        assert_eq!(decode(&[b'R', b'L', 1, 0]), Err(PreambleError::EmptyRoute));
        assert_eq!(
            decode(&[b'R', b'L', 1, 1, 0xff]),
            Err(PreambleError::RouteNotUtf8)
        );
        assert_eq!(encode(""), Err(PreambleError::EmptyRoute));
        assert_eq!(encode(&"x".repeat(256)), Err(PreambleError::RouteTooLong));
        assert!(encode(&"x".repeat(255)).is_ok());
    }
}
