//! The payee's own transactions: a secp256k1 key ([`PayeeKey`]) and the
//! EIP-1559 (type 0x02) transaction it signs ([`Eip1559::sign`]).
//!
//! - The key is parsed from `0x` + 64 hex digits only; its bytes are
//!   zeroized (the intermediate buffer and, on drop, the signing key), its
//!   `Debug` shows the address only, and no error quotes the input.
//! - Signing is deterministic (RFC 6979) with a low `s`, so the same fields
//!   and key give the same bytes as any other EIP-1559 signer.
//! - Pure: nonces and fees come from the caller (the RPC pool's
//!   `PrepareTx`); nothing here reads the chain.

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_rlp::{Encodable, Header};
use k256::ecdsa::SigningKey;
use zeroize::Zeroizing;

/// EIP-2718 type of an EIP-1559 transaction.
pub const EIP1559_TX_TYPE: u8 = 0x02;

/// Why a key is not a usable secp256k1 secret key. Never quotes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("the key must be 0x followed by 64 hex digits (got {0} characters)")]
    Shape(usize),
    #[error("the key is not hex")]
    NotHex,
    #[error("the key is not a valid secp256k1 secret (zero or above the curve order)")]
    NotAScalar,
}

/// A secp256k1 secret key that signs the payee's transactions.
pub struct PayeeKey {
    key: SigningKey,
    address: Address,
}

impl PayeeKey {
    /// Parses `0x` + 64 hex digits (surrounding whitespace ignored, as a
    /// key file's trailing newline).
    pub fn parse(text: &str) -> Result<PayeeKey, KeyFileError> {
        let t = text.trim();
        let hex_part = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
        let hex_part = match hex_part {
            Some(h) if h.len() == 64 => h,
            _ => return Err(KeyFileError::Shape(t.chars().count())),
        };
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, bytes.as_mut_slice()).map_err(|_| KeyFileError::NotHex)?;
        let key = SigningKey::from_bytes((&*bytes).into()).map_err(|_| KeyFileError::NotAScalar)?;
        let address = Address::from_public_key(key.verifying_key());
        Ok(PayeeKey { key, address })
    }

    /// The address the key signs for.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a 32-byte digest (deterministic, low `s`): `(y parity, r, s)`.
    pub fn sign_hash(&self, hash: &B256) -> Result<(bool, [u8; 32], [u8; 32]), SignError> {
        let (sig, recovery) = self
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|_| SignError)?;
        let (r, s) = sig.split_bytes();
        Ok((recovery.is_y_odd(), r.into(), s.into()))
    }
}

impl std::fmt::Debug for PayeeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayeeKey")
            .field("address", &self.address)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// An EIP-1559 transaction with an empty access list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eip1559 {
    pub chain_id: u64,
    pub nonce: u64,
    pub gas_limit: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub to: Address,
    pub value: U256,
    pub data: Vec<u8>,
}

/// A signed transaction: the EIP-2718 bytes to broadcast and their hash
/// (the transaction hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRaw {
    pub raw: Vec<u8>,
    pub hash: B256,
}

/// Why signing failed: only a key the curve library refuses (not seen
/// with a key [`PayeeKey::parse`] accepted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

impl Eip1559 {
    /// The RLP fields before the signature.
    fn fields(&self, out: &mut Vec<u8>) {
        self.chain_id.encode(out);
        self.nonce.encode(out);
        self.max_priority_fee_per_gas.encode(out);
        self.max_fee_per_gas.encode(out);
        self.gas_limit.encode(out);
        self.to.as_slice().encode(out);
        be_trimmed(&self.value.to_be_bytes::<32>()).encode(out);
        self.data.as_slice().encode(out);
        // an empty access list
        Header {
            list: true,
            payload_length: 0,
        }
        .encode(out);
    }

    /// `0x02 || rlp(list)`.
    fn typed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 10);
        out.push(EIP1559_TX_TYPE);
        Header {
            list: true,
            payload_length: payload.len(),
        }
        .encode(&mut out);
        out.extend_from_slice(payload);
        out
    }

    /// The hash the signature covers.
    pub fn signing_hash(&self) -> B256 {
        let mut payload = Vec::new();
        self.fields(&mut payload);
        keccak256(Self::typed(&payload))
    }

    /// Signs with `key`: the bytes to broadcast and the transaction hash.
    pub fn sign(&self, key: &PayeeKey) -> Result<SignedRaw, SignError> {
        let mut payload = Vec::new();
        self.fields(&mut payload);
        let prehash = keccak256(Self::typed(&payload));
        let (sig, recovery) = key
            .key
            .sign_prehash_recoverable(prehash.as_slice())
            .map_err(|_| SignError)?;
        let (r, s) = sig.split_bytes();
        u8::from(recovery.is_y_odd()).encode(&mut payload);
        be_trimmed(&r).encode(&mut payload);
        be_trimmed(&s).encode(&mut payload);
        let raw = Self::typed(&payload);
        let hash = keccak256(&raw);
        Ok(SignedRaw { raw, hash })
    }
}

/// A big-endian integer without its leading zero bytes: RLP's integer
/// encoding, as a byte string.
pub(crate) fn be_trimmed(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dev account 1 of the test mnemonic (public).
    const DEV_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    /// From `cast mktx --private-key DEV_KEY --chain 42431 --nonce 5
    /// --gas-limit 360000 --gas-price 43000000000 --priority-gas-price
    /// 1000000000 --value 7 0x20c0…0001 "transfer(address,uint256)"
    /// 0xf39F…2266 1000000` (Foundry 1.7.1), and `cast keccak` of it.
    const CAST_RAW: &str = "02f8b382a5bf05843b9aca00850a02ffee0083057e409420c000000000000000000000000000000000000107b844a9059cbb000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb9226600000000000000000000000000000000000000000000000000000000000f4240c080a0c03c60c77fbffd00d170efdce007ddc3f42b74bb1a0427ee05970a7eb5ff7d4ea03d09fbf6c45df6adec7ad054adb41ef212f74651129bccd75a3497474b8ba060";
    const CAST_HASH: &str = "0xd893e9ff6ff8fc4a1e5ef6c9b340d21d0fb75a2b7df8040985354aa74ea6c145";

    fn transfer() -> Eip1559 {
        Eip1559 {
            chain_id: 42431,
            nonce: 5,
            gas_limit: 360_000,
            max_fee_per_gas: 43_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: "0x20c0000000000000000000000000000000000001".parse().unwrap(),
            value: U256::from(7),
            data: hex::decode("a9059cbb000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb9226600000000000000000000000000000000000000000000000000000000000f4240").unwrap(),
        }
    }

    #[test]
    fn signs_the_same_bytes_as_cast() {
        let key = PayeeKey::parse(DEV_KEY).unwrap();
        let signed = transfer().sign(&key).unwrap();
        assert_eq!(hex::encode(&signed.raw), CAST_RAW);
        assert_eq!(signed.hash.to_string(), CAST_HASH);
    }

    #[test]
    fn the_signature_recovers_the_keys_address() {
        let key = PayeeKey::parse(DEV_KEY).unwrap();
        assert_eq!(
            key.address(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse::<Address>().unwrap()
        );
        let mut tx = transfer();
        tx.value = U256::ZERO;
        tx.data.clear();
        tx.nonce = 0;
        let signed = tx.sign(&key).unwrap();
        let decoded = crate::signed_tx::decode(&signed.raw).unwrap();
        assert_eq!(decoded.tx_type, EIP1559_TX_TYPE);
        assert_eq!(decoded.chain_id, Some(42431));
        assert_eq!(decoded.signer, Some(key.address()));
        assert_eq!(signed.hash, keccak256(&signed.raw));
    }

    #[test]
    fn keys_parse_strictly_and_never_show() {
        let key = PayeeKey::parse(&format!("  {DEV_KEY}\n")).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("59c6995e") && shown.contains("redacted"), "{shown}");
        assert_eq!(PayeeKey::parse(&DEV_KEY[2..]).unwrap_err(), KeyFileError::Shape(64));
        assert_eq!(PayeeKey::parse("0x12").unwrap_err(), KeyFileError::Shape(4));
        let not_hex = format!("0x{}", "zz".repeat(32));
        assert_eq!(PayeeKey::parse(&not_hex).unwrap_err(), KeyFileError::NotHex);
        let zero = format!("0x{}", "00".repeat(32));
        assert_eq!(PayeeKey::parse(&zero).unwrap_err(), KeyFileError::NotAScalar);
        let order = "0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
        assert_eq!(PayeeKey::parse(order).unwrap_err(), KeyFileError::NotAScalar);
        for e in [KeyFileError::NotHex, KeyFileError::Shape(3), KeyFileError::NotAScalar] {
            assert!(!e.to_string().contains("59c6"));
        }
    }

    #[test]
    fn integers_lose_their_leading_zeros() {
        assert_eq!(be_trimmed(&[0, 0, 1, 0]), &[1, 0]);
        assert!(be_trimmed(&[0, 0]).is_empty());
    }
}
