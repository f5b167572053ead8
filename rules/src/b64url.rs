//! base64url (RFC 4648 section 5) as the `Payment` scheme writes and reads
//! it: written without padding; read strictly, so that one byte string has
//! one spelling (and, at most, its padded twin).
//!
//! A lenient decoder gives one payload several spellings: it skips line
//! breaks, maps the standard alphabet's `+` and `/`, accepts any amount of
//! padding, and drops the bits the last character cannot carry (`AB` and
//! `AA` both decode to `00`). Anything keyed on the encoded text (a
//! challenge id, an echoed `request`) would then have several identities.
//! Accepted here: the URL alphabet only, no whitespace, zero trailing bits,
//! and padding only in its canonical place (a multiple of four characters,
//! at most two `=`, nothing after them), which the cross-implementation
//! vectors (aperture's `mpp/testdata/vectors.json`) accept too. Every MPP
//! client seen (mppx 0.11.0, pympp 0.16.0) writes the unpadded form.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Unpadded for writing; for reading, no padding (it is checked and cut
/// before) and no trailing bits.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Why a text is not strict base64url. The messages never quote the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Base64UrlError {
    #[error("a character outside the base64url alphabet (A-Z a-z 0-9 - _)")]
    Alphabet,
    #[error("padding that is not the canonical one")]
    Padding,
    #[error("a length no byte string encodes to")]
    Length,
    #[error("non-zero bits after the last byte")]
    TrailingBits,
}

/// base64url without padding: everything this service writes.
pub fn encode(bytes: &[u8]) -> String {
    ENGINE.encode(bytes)
}

/// Decodes `s` strictly (see the module docs).
pub fn decode(s: &str) -> Result<Vec<u8>, Base64UrlError> {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(if body.contains('=') {
            Base64UrlError::Padding
        } else {
            Base64UrlError::Alphabet
        });
    }
    if pad > 0 && (pad > 2 || !s.len().is_multiple_of(4)) {
        return Err(Base64UrlError::Padding);
    }
    ENGINE.decode(body).map_err(|e| match e {
        base64::DecodeError::InvalidLastSymbol { .. } => Base64UrlError::TrailingBits,
        base64::DecodeError::InvalidByte(..) => Base64UrlError::Alphabet,
        base64::DecodeError::InvalidPadding => Base64UrlError::Padding,
        base64::DecodeError::InvalidLength(_) => Base64UrlError::Length,
    })
}

/// Whether `s` is the one spelling this service writes for its bytes.
pub fn is_canonical(s: &str) -> bool {
    decode(s).is_ok_and(|b| encode(&b) == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_string_has_one_unpadded_spelling() {
        for bytes in [&b""[..], b"\x00", b"\xff\xfe", b"\xff\xfe\xfd", b"hello"] {
            let e = encode(bytes);
            assert!(!e.contains('='), "{e}");
            assert_eq!(decode(&e).unwrap(), bytes);
            assert!(is_canonical(&e));
        }
    }

    #[test]
    fn every_other_spelling_is_refused_with_its_reason() {
        assert_eq!(decode("aGVsbG8=").unwrap(), b"hello");
        assert!(!is_canonical("aGVsbG8="));
        assert_eq!(decode("AA==").unwrap(), b"\x00");
        for (s, why) in [
            ("AB", Base64UrlError::TrailingBits),
            ("AAB", Base64UrlError::TrailingBits),
            ("AB==", Base64UrlError::TrailingBits),
            ("a+b/", Base64UrlError::Alphabet),
            ("aGVs\nbG8", Base64UrlError::Alphabet),
            (" aGVsbG8", Base64UrlError::Alphabet),
            ("aGVsbG8 ", Base64UrlError::Alphabet),
            ("aGV=bG8", Base64UrlError::Padding),
            ("aGVsbG8===", Base64UrlError::Padding),
            ("aGVsbG=", Base64UrlError::Padding),
            ("AA=", Base64UrlError::Padding),
            ("=", Base64UrlError::Padding),
            ("aGVsb", Base64UrlError::Length),
            ("A", Base64UrlError::Length),
            ("é", Base64UrlError::Alphabet),
        ] {
            assert_eq!(decode(s), Err(why), "{s:?}");
            assert!(!is_canonical(s), "{s:?}");
        }
    }
}
