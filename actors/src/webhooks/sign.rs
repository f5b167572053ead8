//! Standard Webhooks signatures: `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`, the key
//! being the bytes of a `whsec_<base64>` secret.
//!
//! A key is refused when it is short (under 24 bytes, the convention's
//! floor: 192 bits), long (over 64), or made of so few distinct bytes that
//! it was typed, not drawn. No error and no `Debug` shows it.

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Standard base64, padded or not (generators write both).
const LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;
/// A drawn 24-byte key has about 23 distinct bytes; fewer than this is a
/// pattern (`aaaa…`, a repeated word, zeros).
const MIN_DISTINCT_BYTES: usize = 12;

/// Why a webhook secret is refused. The messages never quote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a webhook secret is whsec_ followed by base64 (e.g. `printf 'whsec_%s' \"$(openssl rand -base64 32)\"`)")]
    NotWhsec,
    #[error("the text after whsec_ is not base64")]
    NotBase64,
    #[error("the secret is {0} bytes; at least {MIN_KEY_BYTES} are needed (openssl rand -base64 32)")]
    TooShort(usize),
    #[error("the secret is {0} bytes; at most {MAX_KEY_BYTES} are used")]
    TooLong(usize),
    #[error("the secret's bytes repeat too much to be random (openssl rand -base64 32)")]
    Weak,
}

/// An endpoint's signing key.
#[derive(Clone)]
pub struct SigningKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// Reads `whsec_<base64>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let b64 = text.trim().strip_prefix("whsec_").ok_or(KeyError::NotWhsec)?;
        let bytes = Zeroizing::new(LENIENT_PADDING.decode(b64).map_err(|_| KeyError::NotBase64)?);
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(bytes.len()));
        }
        let mut seen = [false; 256];
        for b in bytes.iter() {
            seen[*b as usize] = true;
        }
        if seen.iter().filter(|s| **s).count() < MIN_DISTINCT_BYTES {
            return Err(KeyError::Weak);
        }
        Ok(SigningKey(bytes))
    }

    /// The `webhook-signature` header's value for one attempt.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        // unwrap: HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap();
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_the_id_the_timestamp_and_the_body() {
        // The convention's published example (id, timestamp, body, secret).
        let key = SigningKey::parse(KEY).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_ne!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body),
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        );
    }

    #[test]
    fn short_weak_or_malformed_secrets_are_refused_unquoted() {
        let b64 = |b: &[u8]| format!("whsec_{}", STANDARD.encode(b));
        let drawn: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        assert!(SigningKey::parse(&b64(&drawn)).is_ok());
        assert!(SigningKey::parse(&format!("  {}\n", b64(&drawn))).is_ok());
        assert!(SigningKey::parse(b64(&drawn).trim_end_matches('=')).is_ok(), "unpadded");
        assert_eq!(
            SigningKey::parse(&b64(&drawn[..16])).unwrap_err(),
            KeyError::TooShort(16)
        );
        assert_eq!(SigningKey::parse(&b64(&[7; 65])).unwrap_err(), KeyError::TooLong(65));
        assert_eq!(SigningKey::parse(&b64(&[0; 32])).unwrap_err(), KeyError::Weak);
        assert_eq!(SigningKey::parse(&b64(&b"abcd".repeat(8))).unwrap_err(), KeyError::Weak);
        assert_eq!(
            SigningKey::parse(&STANDARD.encode(&drawn)).unwrap_err(),
            KeyError::NotWhsec
        );
        assert_eq!(SigningKey::parse("whsec_not base64!").unwrap_err(), KeyError::NotBase64);
        let e = SigningKey::parse(&b64(&drawn[..16])).unwrap_err().to_string();
        assert!(!e.contains(&STANDARD.encode(&drawn[..16])), "{e}");
        assert_eq!(format!("{:?}", SigningKey::parse(KEY).unwrap()), "SigningKey(***)");
    }
}
