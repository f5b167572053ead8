//! Ed25519 key encodings shared with Mathison's tooling:
//! public keys as standard base64 of the 44-byte SPKI DER, private keys as
//! standard base64 of the 48-byte PKCS#8 DER, signatures as base64 of the 64
//! raw bytes. Only the exact DER prefixes are accepted: a key is either
//! byte-for-byte what the tooling writes or it is refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo.
pub const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// DER prefix of an Ed25519 PKCS#8 v1 private key.
pub const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a key or signature encoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not standard padded base64")]
    Base64,
    #[error("not a 44-byte Ed25519 SPKI public key")]
    NotSpki,
    #[error("not a 48-byte Ed25519 PKCS#8 private key")]
    NotPkcs8,
    #[error("not a valid Ed25519 curve point")]
    BadPoint,
    #[error("not a 64-byte Ed25519 signature")]
    BadSignature,
}

/// A public key as pinned in configuration or listed in a genome.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_spki_base64())
    }
}

impl PublicKey {
    /// Parses base64 SPKI (surrounding whitespace tolerated).
    pub fn from_spki_base64(s: &str) -> Result<Self, KeyError> {
        let der = STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?;
        let raw: [u8; 32] = der
            .strip_prefix(&SPKI_PREFIX[..])
            .and_then(|k| k.try_into().ok())
            .ok_or(KeyError::NotSpki)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::BadPoint)?;
        // A small-order key lets anyone forge signatures that verify_strict
        // would refuse anyway; refusing the key itself gives a clearer error.
        if key.is_weak() {
            return Err(KeyError::BadPoint);
        }
        Ok(PublicKey(key))
    }

    pub fn to_spki_base64(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.0.as_bytes());
        STANDARD.encode(der)
    }

    /// `verify_strict`: refuses non-canonical and small-order signatures,
    /// so one message has one valid signature per key (no malleability).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

/// Decodes a base64 signature into its 64 raw bytes.
pub fn decode_signature(s: &str) -> Result<[u8; 64], KeyError> {
    let raw = STANDARD.decode(s).map_err(|_| KeyError::Base64)?;
    raw.try_into().map_err(|_| KeyError::BadSignature)
}

/// A private signing key. Deliberately not `Debug`, `Display` or
/// `Serialize`: the only way out is [`PrivateKey::to_pkcs8_base64`], which
/// the CLI writes to a 0600 file or to stderr, never to stdout or a log.
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// Builds a key from 32 bytes of secret randomness (the caller's RNG).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        PrivateKey(SigningKey::from_bytes(&seed))
    }

    pub fn from_pkcs8_base64(s: &str) -> Result<Self, KeyError> {
        let der = Zeroizing::new(STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?);
        let seed: [u8; 32] = der
            .strip_prefix(&PKCS8_PREFIX[..])
            .and_then(|k| k.try_into().ok())
            .ok_or(KeyError::NotPkcs8)?;
        Ok(PrivateKey(SigningKey::from_bytes(&seed)))
    }

    pub fn to_pkcs8_base64(&self) -> String {
        let mut der = Zeroizing::new(PKCS8_PREFIX.to_vec());
        der.extend_from_slice(self.0.as_bytes());
        STANDARD.encode(&*der)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message`, returning base64 of the 64 raw signature bytes.
    pub fn sign_base64(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, test 1.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn seed() -> [u8; 32] {
        hex::decode(SEED).unwrap().try_into().unwrap()
    }

    #[test]
    fn encodings_match_the_der_layouts_of_genome_md() {
        let key = PrivateKey::from_seed(seed());
        let spki = STANDARD.decode(key.public_key().to_spki_base64()).unwrap();
        assert_eq!(hex::encode(&spki), format!("302a300506032b6570032100{PUBLIC}"));
        let pkcs8 = STANDARD.decode(key.to_pkcs8_base64()).unwrap();
        assert_eq!(hex::encode(&pkcs8), format!("302e020100300506032b657004220420{SEED}"));
    }

    #[test]
    fn keys_round_trip_and_sign_like_rfc_8032() {
        let key = PrivateKey::from_pkcs8_base64(&PrivateKey::from_seed(seed()).to_pkcs8_base64()).unwrap();
        let public = PublicKey::from_spki_base64(&key.public_key().to_spki_base64()).unwrap();
        let sig = key.sign_base64(b"");
        assert_eq!(
            hex::encode(decode_signature(&sig).unwrap()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(public.verify(b"", &decode_signature(&sig).unwrap()));
        assert!(!public.verify(b"x", &decode_signature(&sig).unwrap()));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(PublicKey::from_spki_base64("not base64!"), Err(KeyError::Base64));
        // raw 32 bytes without the SPKI prefix
        assert_eq!(
            PublicKey::from_spki_base64(&STANDARD.encode(seed())),
            Err(KeyError::NotSpki)
        );
        // the identity point is a weak (small-order) key
        let mut weak = SPKI_PREFIX.to_vec();
        weak.extend_from_slice(&{
            let mut p = [0u8; 32];
            p[0] = 1;
            p
        });
        assert_eq!(
            PublicKey::from_spki_base64(&STANDARD.encode(weak)),
            Err(KeyError::BadPoint)
        );
        assert!(PrivateKey::from_pkcs8_base64(&STANDARD.encode([0u8; 48])).is_err());
        assert_eq!(
            decode_signature(&STANDARD.encode([0u8; 63])),
            Err(KeyError::BadSignature)
        );
    }
}
