//! The request path as the price rules see it.
//!
//! A price rule must apply to every spelling an upstream may serve as the
//! same route, so the path is brought to one normal form before it is
//! matched, and a spelling whose meaning depends on the upstream is refused.
//! The normal form, in order:
//!
//! 1. The query is not part of it (`?` ends the path). A `#` is refused:
//!    a fragment never reaches a server, and what follows it would go
//!    unchecked (`/cheap/x#/../../dear`).
//! 2. The target is at most [`MAX_TARGET`] bytes of visible ASCII, query
//!    included, and its path starts with `/`. A raw `\` or `;` is refused: upstreams disagree on
//!    backslashes, and `;` starts matrix parameters that some strip
//!    (`/dear;x=1` served as `/dear`).
//! 3. Every `%XX` is decoded when it names a visible ASCII character other
//!    than `/ \ % ; ? #` (so `/%72eports` is `/reports`); those six, control
//!    characters (`%00`–`%1F`, `%7F`) and a malformed escape are refused.
//!    A space or non-ASCII bytes stay encoded, and must be valid UTF-8 (an
//!    overlong `%C0%AE` is a dot to some decoders).
//! 4. Dot segments (`.`, `..`, also once decoded) and empty segments are
//!    refused; one trailing `/` is dropped (`/dear/` is `/dear`).
//! 5. ASCII letters are folded to lower case (`/DEAR` is `/dear`): an
//!    upstream may route case-insensitively, and a rule must not be
//!    dodged by spelling.
//!
//! What this cannot see: an upstream that applies Unicode normalisation to
//! paths (full-width solidus as `/`), or routes on the query. Such an
//! upstream needs its own rules in front of it.

use std::fmt;

/// The longest request target (path and query) accepted, in bytes.
pub const MAX_TARGET: usize = 2048;

/// Why a request target has no single meaning.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("is longer than {MAX_TARGET} bytes")]
    TooLong,
    #[error("must be a path starting with /")]
    NotAPath,
    #[error("contains spaces, control characters, non-ASCII bytes or a backslash")]
    BadByte,
    #[error("contains `;` (path parameters are read differently by different servers)")]
    Parameters,
    #[error("contains a malformed percent-encoding")]
    BadEscape,
    #[error("contains an encoded slash, backslash, percent sign, `;`, `?`, `#` or control character")]
    AmbiguousEscape,
    #[error("contains an encoding that is not valid UTF-8")]
    BadUtf8,
    #[error("contains a dot or empty segment")]
    DotSegment,
    #[error("contains `#` (a fragment never reaches a server, and what follows it is never checked)")]
    Fragment,
}

/// A normalised path: the key price rules are matched against.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NormalPath(String);

impl NormalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The path of a request target (`/reports/42?x=1` → `/reports/42`) in
/// normal form, or why it has none.
pub fn normalise(target: &str) -> Result<NormalPath, TargetError> {
    if target.len() > MAX_TARGET {
        return Err(TargetError::TooLong);
    }
    if target.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(TargetError::BadByte);
    }
    if target.contains('#') {
        return Err(TargetError::Fragment);
    }
    let path = target.split('?').next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(TargetError::NotAPath);
    }
    let decoded = decode(path)?;
    let mut out = String::with_capacity(decoded.len());
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    for segment in body.split('/').skip(1) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(TargetError::DotSegment);
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(NormalPath(out))
}

/// Step 2, 3 and 5: decoded where unambiguous, refused where not, folded.
fn decode(path: &str) -> Result<String, TargetError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (byte, next) = escape_at(bytes, i)?;
                match byte {
                    b'/' | b'\\' | b'%' | b';' | b'?' | b'#' => return Err(TargetError::AmbiguousEscape),
                    0x00..=0x1f | 0x7f => return Err(TargetError::AmbiguousEscape),
                    0x21..=0x7e => {
                        out.push(byte.to_ascii_lowercase() as char);
                        i = next;
                    }
                    _ => {
                        // A space or a run of non-ASCII bytes: kept encoded,
                        // as one valid UTF-8 sequence.
                        let (encoded, after) = encoded_run(bytes, i)?;
                        out.push_str(&encoded);
                        i = after;
                    }
                }
            }
            b'\\' => return Err(TargetError::BadByte),
            b';' => return Err(TargetError::Parameters),
            0x21..=0x7e => {
                out.push(b.to_ascii_lowercase() as char);
                i += 1;
            }
            _ => return Err(TargetError::BadByte),
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The byte of the escape at `i` and the index after it.
fn escape_at(bytes: &[u8], i: usize) -> Result<(u8, usize), TargetError> {
    let hi = bytes.get(i + 1).copied().and_then(hex_digit);
    let lo = bytes.get(i + 2).copied().and_then(hex_digit);
    match (hi, lo) {
        (Some(h), Some(l)) => Ok((h << 4 | l, i + 3)),
        _ => Err(TargetError::BadEscape),
    }
}

/// A run of escapes of spaces and non-ASCII bytes starting at `i`, checked
/// as UTF-8 and re-encoded in lower-case hex.
fn encoded_run(bytes: &[u8], mut i: usize) -> Result<(String, usize), TargetError> {
    let mut raw = Vec::new();
    while i < bytes.len() && bytes[i] == b'%' {
        let (byte, next) = escape_at(bytes, i)?;
        if byte != b' ' && byte < 0x80 {
            break;
        }
        raw.push(byte);
        i = next;
    }
    if std::str::from_utf8(&raw).is_err() {
        return Err(TargetError::BadUtf8);
    }
    let mut s = String::with_capacity(raw.len() * 3);
    for b in raw {
        s.push_str(&format!("%{b:02x}"));
    }
    Ok((s, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, TargetError> {
        normalise(s).map(|p| p.0)
    }

    #[test]
    fn spellings_of_one_path_are_one_path() {
        for (spelling, normal) in [
            ("/reports/1", "/reports/1"),
            ("/reports/1?x=1", "/reports/1"),
            ("/%72eports/1", "/reports/1"),
            ("/%72%65ports/%31", "/reports/1"),
            ("/REPORTS/1", "/reports/1"),
            ("/Reports/1/", "/reports/1"),
            ("/dear/", "/dear"),
            ("/dear", "/dear"),
            ("/", "/"),
            ("/?q", "/"),
            ("/file%2ejson", "/file.json"),
            ("/a%7eb", "/a~b"),
            ("/caf%C3%A9", "/caf%c3%a9"),
            ("/caf%c3%a9", "/caf%c3%a9"),
            ("/my%20file", "/my%20file"),
            ("/a%21b", "/a!b"),
            ("/a+b", "/a+b"),
        ] {
            assert_eq!(n(spelling).as_deref(), Ok(normal), "{spelling}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (spelling, why) in [
            ("", TargetError::NotAPath),
            ("reports", TargetError::NotAPath),
            ("http://host/x", TargetError::NotAPath),
            ("?/x", TargetError::NotAPath),
            ("/dear;x=1", TargetError::Parameters),
            ("/dear%3bx=1", TargetError::AmbiguousEscape),
            ("/a%2fb", TargetError::AmbiguousEscape),
            ("/a%2Fb", TargetError::AmbiguousEscape),
            ("/a%5cb", TargetError::AmbiguousEscape),
            ("/a%00", TargetError::AmbiguousEscape),
            ("/a%0a", TargetError::AmbiguousEscape),
            ("/a%7f", TargetError::AmbiguousEscape),
            ("/a%252e", TargetError::AmbiguousEscape),
            ("/a%3f", TargetError::AmbiguousEscape),
            ("/a%23", TargetError::AmbiguousEscape),
            ("/reports/1#f", TargetError::Fragment),
            ("/cheap/x#/../../dear", TargetError::Fragment),
            ("/a?q#f", TargetError::Fragment),
            ("/a%", TargetError::BadEscape),
            ("/a%2", TargetError::BadEscape),
            ("/a%zz", TargetError::BadEscape),
            ("/a%C0%AE", TargetError::BadUtf8),
            ("/a%C3", TargetError::BadUtf8),
            ("/a%C3%41", TargetError::BadUtf8),
            ("/a\\b", TargetError::BadByte),
            ("/a b", TargetError::BadByte),
            ("/a\u{e9}", TargetError::BadByte),
            ("/a?q=1 2", TargetError::BadByte),
            ("/a?q=\u{e9}", TargetError::BadByte),
            ("/free/../dear", TargetError::DotSegment),
            ("/free/%2e%2e/dear", TargetError::DotSegment),
            ("/free/%2E./dear", TargetError::DotSegment),
            ("/free/./x", TargetError::DotSegment),
            ("/..", TargetError::DotSegment),
            ("//dear", TargetError::DotSegment),
            ("/a//b", TargetError::DotSegment),
            ("/a//", TargetError::DotSegment),
        ] {
            assert_eq!(n(spelling), Err(why), "{spelling}");
        }
        assert_eq!(n(&format!("/{}", "a".repeat(MAX_TARGET))), Err(TargetError::TooLong));
    }

    #[test]
    fn the_normal_form_is_a_fixed_point() {
        for s in ["/%72eports/1/", "/caf%C3%A9/X", "/my%20file", "/A%21"] {
            let once = n(s).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{s}");
        }
    }
}
