//! Parse-at-the-edge newtypes for the values money depends on. Each parses
//! every accepted spelling once and has one canonical display, so code that
//! takes one never re-checks it.

use std::fmt;
use std::str::FromStr;

pub use alloy_primitives::{Address, U256};

/// Why a text is not an address; each quotes the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address {0:?} must start with 0x")]
    NoPrefix(String),
    #[error("address {0:?} must be 0x followed by 40 hex digits")]
    NotHex(String),
    /// Mixed case is a checksum, and this one is wrong: a typo.
    #[error("address {0:?} has mixed case but a wrong EIP-55 checksum")]
    BadChecksum(String),
}

/// Parses a 20-byte address written as `0x` + 40 hex digits. All-lower and
/// all-upper hex are accepted as they are; mixed case must be a valid EIP-55
/// checksum, because a mixed-case typo is exactly what the checksum exists to
/// catch.
pub fn parse_address(s: &str) -> Result<Address, AddressError> {
    let hex = s
        .strip_prefix("0x")
        .ok_or_else(|| AddressError::NoPrefix(s.to_owned()))?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::NotHex(s.to_owned()));
    }
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        return Address::parse_checksummed(s, None).map_err(|_| AddressError::BadChecksum(s.to_owned()));
    }
    // unwrap: 40 hex digits were checked above.
    Ok(Address::from_str(s).unwrap())
}

/// At most `max` characters of `s`, then `…` when it was longer: for a
/// message (a parser's) that may quote outside input at length.
pub fn cut_chars(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

/// `s` quoted as `{:?}` would, cut to at most `max` characters of its escaped
/// form (then `…`): for quoting outside input back in an error. Cutting
/// before escaping is not enough: one control character escapes to six
/// (`\u{7f}`), so 32 of them would quote 192.
pub fn quote_bounded(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(s.len()) + 4);
    out.push('"');
    let mut used = 0;
    for c in s.chars() {
        let escaped: String = if c == '\'' {
            c.to_string()
        } else {
            c.escape_debug().collect()
        };
        let n = escaped.chars().count();
        if used + n > max {
            out.push_str("\"…");
            return out;
        }
        used += n;
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// A positive amount in a token's atomic units, written in JSON as a decimal
/// string: digits only, no sign, no leading zero, at most 2^256 - 1.
///
/// Parsing never yields zero; [`Amount::ZERO`] exists only for a route a
/// genome prices at `"0"` explicitly (a `proof` route: identity, no
/// payment), and every rule that matches transfers refuses it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Amount(U256);

impl Amount {
    /// The price of a zero-priced route. Never the result of a parse.
    pub const ZERO: Amount = Amount(U256::ZERO);

    pub fn value(&self) -> U256 {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

/// Why a text is not an [`Amount`]; each quotes the text but `Zero`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount {0:?} must be a decimal string of digits")]
    NotDigits(String),
    #[error("amount {0:?} has a leading zero")]
    LeadingZero(String),
    #[error("amount {0:?} does not fit in 256 bits")]
    TooLarge(String),
    #[error("amount must be greater than zero")]
    Zero,
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, AmountError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotDigits(s.to_owned()));
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(AmountError::LeadingZero(s.to_owned()));
        }
        let value = U256::from_str_radix(s, 10).map_err(|_| AmountError::TooLarge(s.to_owned()))?;
        if value.is_zero() {
            return Err(AmountError::Zero);
        }
        Ok(Amount(value))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lower-case `0x` hex of an address: the form used in every response and key.
pub fn address_lower(a: &Address) -> String {
    format!("{a:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_one_case_or_a_valid_checksum() {
        let lower = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
        let checksummed = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        let upper = "0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266";
        let a = parse_address(lower).unwrap();
        assert_eq!(parse_address(checksummed).unwrap(), a);
        assert_eq!(parse_address(upper.replacen("0X", "0x", 1).as_str()).unwrap(), a);
        assert_eq!(address_lower(&a), lower);
        // one flipped letter case breaks the checksum
        let flipped = "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        assert_eq!(parse_address(flipped), Err(AddressError::BadChecksum(flipped.into())));
        assert_eq!(
            parse_address(flipped).unwrap_err().to_string(),
            format!("address {flipped:?} has mixed case but a wrong EIP-55 checksum")
        );
        let no_prefix = "f39fd6e51aad88f6f4ce6ab8827279cfffb92266";
        assert_eq!(parse_address(no_prefix), Err(AddressError::NoPrefix(no_prefix.into())));
        for bad in [
            "0x1234",
            "0xg39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb9226600",
        ] {
            assert_eq!(parse_address(bad), Err(AddressError::NotHex(bad.into())), "{bad}");
        }
    }

    #[test]
    fn amounts_are_positive_decimal_u256() {
        assert_eq!("1000000".parse::<Amount>().unwrap().to_string(), "1000000");
        let max = U256::MAX.to_string();
        assert_eq!(max.parse::<Amount>().unwrap().value(), U256::MAX);
        for bad in ["", "-1", "+1", "1.5", " 1", "1e6", "0x10"] {
            assert_eq!(
                bad.parse::<Amount>(),
                Err(AmountError::NotDigits(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!("01".parse::<Amount>(), Err(AmountError::LeadingZero("01".into())));
        assert_eq!("0".parse::<Amount>(), Err(AmountError::Zero));
        let too_large = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(
            too_large.parse::<Amount>(),
            Err(AmountError::TooLarge(too_large.into()))
        );
        assert_eq!(
            "01".parse::<Amount>().unwrap_err().to_string(),
            "amount \"01\" has a leading zero"
        );
        assert_eq!(AmountError::Zero.to_string(), "amount must be greater than zero");
    }
    #[test]
    fn quotes_are_bounded_after_escaping() {
        assert_eq!(quote_bounded("tempo", 32), "\"tempo\"");
        assert_eq!(quote_bounded("a\"b\\c'd", 32), format!("{:?}", "a\"b\\c'd"));
        assert_eq!(quote_bounded("abcdef", 3), "\"abc\"…");
        // what the payment_credential fuzz target found: 32 DEL characters,
        // cut before escaping, quoted 192 characters back
        let dels = "\u{7f}".repeat(50);
        let q = quote_bounded(&dels, 32);
        assert!(q.chars().count() <= 32 + 3, "{q}");
        assert!(q.starts_with("\"\\u{7f}"), "{q}");
        // an escape is never cut in half
        assert_eq!(quote_bounded("ab\u{7f}", 4), "\"ab\"…");
        assert_eq!(quote_bounded("", 0), "\"\"");
    }
}
