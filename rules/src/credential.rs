//! Payment credentials as they arrive in `Authorization` values, and the
//! canonical transaction hash.
//!
//! A hash string used as it came would make `0xAB…` and `0xab…` two
//! payments. [`TxHash`] parses every accepted
//! spelling into 32 bytes and has exactly one display form, lower-case
//! `0x…`, which is the coalescing key and the replay key.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::B256;

/// `Authorization` values longer than this are refused before parsing.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// A canonical 32-byte transaction hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TxHash(B256);

impl TxHash {
    pub fn as_b256(&self) -> &B256 {
        &self.0
    }
}

impl From<B256> for TxHash {
    fn from(b: B256) -> Self {
        TxHash(b)
    }
}

/// Why a text is not a [`TxHash`]. The messages do not quote the text: it
/// comes from a client and goes back to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxHashError {
    #[error("a transaction hash starts with 0x")]
    NoPrefix,
    #[error("a transaction hash is 0x followed by exactly 64 hex digits")]
    NotHex,
}

impl FromStr for TxHash {
    type Err = TxHashError;

    /// `0x` (or `0X`) followed by exactly 64 hex digits of any case;
    /// surrounding whitespace is tolerated.
    fn from_str(s: &str) -> Result<Self, TxHashError> {
        let t = s.trim();
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .ok_or(TxHashError::NoPrefix)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TxHashError::NotHex);
        }
        // unwrap: 64 hex digits were checked above.
        Ok(TxHash(B256::from_str(hex).unwrap()))
    }
}

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl serde::Serialize for TxHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TxHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A credential, by scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// `Tempo 0x<64 hex>`: the Tempo Agentic Layer scheme.
    Tempo(TxHash),
    /// `Payment <base64url JSON>`: the Machine Payments Protocol scheme.
    Payment(String),
}

/// Why an `Authorization` value is not a usable credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No credential, or a scheme this service does not accept: the client
    /// gets a challenge (402 `PAYMENT_REQUIRED`).
    #[error("{0}")]
    NotAPaymentCredential(String),
    /// The Tempo scheme with something other than a hash: 400 `INVALID_TX_HASH`.
    #[error("{0}")]
    InvalidTxHash(String),
    /// Longer than [`MAX_CREDENTIAL_LEN`].
    #[error("the credential is longer than {MAX_CREDENTIAL_LEN} bytes")]
    TooLong,
    /// The `Payment` scheme with nothing usable after it: the Machine
    /// Payments Protocol answers `malformed-credential` with a fresh
    /// challenge, so an MPP client can retry.
    #[error("{0}")]
    MalformedPayment(String),
}

/// Parses an `Authorization` value. Scheme names are case-insensitive
/// (RFC 7235) and surrounding whitespace is tolerated.
pub fn parse_credential(value: &str) -> Result<Credential, CredentialError> {
    if value.len() > MAX_CREDENTIAL_LEN {
        // Bytes, not str slices: a multi-byte character in the first eight
        // bytes must not panic (found by the `authorization` fuzz target).
        let head = value.trim_start().as_bytes();
        if head.len() > 8 && head[..7].eq_ignore_ascii_case(b"payment") && head[7].is_ascii_whitespace() {
            return Err(CredentialError::MalformedPayment(format!(
                "the Payment credential is longer than {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        return Err(CredentialError::TooLong);
    }
    let v = value.trim();
    let (scheme, rest) = match v.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&v[..i], v[i..].trim()),
        None => (v, ""),
    };
    if scheme.eq_ignore_ascii_case("tempo") {
        return rest
            .parse()
            .map(Credential::Tempo)
            .map_err(|e| CredentialError::InvalidTxHash(format!("Tempo credential: {e}")));
    }
    if scheme.eq_ignore_ascii_case("payment") {
        if rest.is_empty() {
            return Err(CredentialError::MalformedPayment(
                "the Payment credential is empty".into(),
            ));
        }
        return Ok(Credential::Payment(rest.to_owned()));
    }
    if scheme.is_empty() {
        return Err(CredentialError::NotAPaymentCredential("no credential".into()));
    }
    Err(CredentialError::NotAPaymentCredential(format!(
        "the {} scheme is not a payment credential; use Tempo or Payment",
        crate::primitives::quote_bounded(scheme, 32)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0xabababababababababababababababababababababababababababababababab";

    #[test]
    fn hashes_canonicalise_to_lower_case() {
        let upper = format!("0x{}", H[2..].to_uppercase());
        let a: TxHash = H.parse().unwrap();
        assert_eq!(upper.parse::<TxHash>().unwrap(), a);
        assert_eq!(format!("0X{}", &upper[2..]).parse::<TxHash>().unwrap(), a);
        assert_eq!(format!("  {H}\t").parse::<TxHash>().unwrap(), a);
        assert_eq!(a.to_string(), H);
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "0x",
            &H[..65],
            &format!("{H}ab"),
            &H[2..],
            &format!("0x{}", "g".repeat(64)),
            &format!("0x{}", "ab".repeat(31) + "a "),
        ] {
            assert!(bad.parse::<TxHash>().is_err(), "{bad:?}");
        }
        assert_eq!(H[2..].parse::<TxHash>(), Err(TxHashError::NoPrefix));
        assert_eq!("0x12".parse::<TxHash>(), Err(TxHashError::NotHex));
    }

    #[test]
    fn credentials_by_scheme() {
        let h: TxHash = H.parse().unwrap();
        for v in [format!("Tempo {H}"), format!("tempo {H}"), format!("  TEMPO\t{H}  ")] {
            assert_eq!(parse_credential(&v), Ok(Credential::Tempo(h)), "{v:?}");
        }
        assert!(matches!(
            parse_credential("Tempo 0x1234"),
            Err(CredentialError::InvalidTxHash(_))
        ));
        assert!(matches!(
            parse_credential("Tempo"),
            Err(CredentialError::InvalidTxHash(_))
        ));
        assert!(matches!(
            parse_credential(H),
            Err(CredentialError::NotAPaymentCredential(_))
        ));
        assert!(matches!(
            parse_credential("Bearer abc"),
            Err(CredentialError::NotAPaymentCredential(_))
        ));
        assert!(matches!(
            parse_credential(""),
            Err(CredentialError::NotAPaymentCredential(_))
        ));
        assert_eq!(parse_credential("payment eyJ9"), Ok(Credential::Payment("eyJ9".into())));
        assert_eq!(
            parse_credential(&"a".repeat(MAX_CREDENTIAL_LEN + 1)),
            Err(CredentialError::TooLong)
        );
        // A huge value with multi-byte characters where the scheme would
        // be: refused, never a panic on a char boundary (a fuzz finding).
        for head in [
            "Teb!p\u{fffd}",
            "\u{fffd}\u{fffd}\u{fffd}",
            "Paymen\u{e9}",
            "Payment\u{a0}",
        ] {
            assert_eq!(
                parse_credential(&format!("{head}{}", "a".repeat(MAX_CREDENTIAL_LEN))),
                Err(CredentialError::TooLong),
                "{head}"
            );
        }
        // A huge or empty Payment credential is malformed (the MPP answer).
        for v in [
            format!("Payment {}", "a".repeat(MAX_CREDENTIAL_LEN)),
            "Payment".into(),
            " payment  ".into(),
        ] {
            assert!(
                matches!(parse_credential(&v), Err(CredentialError::MalformedPayment(_))),
                "{v:.20}"
            );
        }
    }
}
