//! The transaction a client hands over for fee sponsorship, and the
//! sponsor's co-signature that turns it into the transaction broadcast.
//!
//! Wire forms accepted (the sender signed the same hash in both):
//! - mppx/viem: `0x78 || rlp([...fields, fee_token = 0x80, sender address,
//!   aa_authorization_list, sender_signature])`;
//! - the spec's: `0x76 || rlp([...fields, fee_token, 0x00, aa_auth, sig])`.
//!
//! Invariants:
//! - The sender is recovered from its secp256k1 signature over the sender
//!   signing hash (`0x76 || rlp(fields, fee_token = 0x80, 0x00 placeholder,
//!   aa_auth)`); an address embedded by the client must equal it and is
//!   never used otherwise. Other signature kinds (P256, WebAuthn, access
//!   keys) are refused: their sender cannot be recovered here.
//! - Only what a sponsor should pay for is accepted: no key authorization,
//!   no access list, no EIP-7702 authorizations, no call that sends value.
//! - The fee-payer hash commits to the fee token and the sender:
//!   `keccak256(0x78 || rlp(fields, fee_token, sender, aa_auth))`; the
//!   final envelope is `0x76 || rlp(fields, fee_token, [yParity, r, s],
//!   aa_auth, sender_signature)`. Signing is deterministic, so every
//!   instance co-signing one hand-off with one fee token gets the same
//!   bytes and the same transaction hash.

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_rlp::{Encodable, Header};

use crate::signed_tx::{
    Call, SignedTx, TEMPO_TX_TYPE, Undecodable, optional_address, recover_rs, string, uint, uint256, whole_list,
};
use crate::tx_sign::{PayeeKey, SignError, SignedRaw, be_trimmed};

/// The fee payer's signature domain (and mppx's hand-off prefix).
pub const FEE_PAYER_MAGIC: u8 = 0x78;
/// An empty RLP string: an absent optional field.
const RLP_NULL: u8 = 0x80;
/// The placeholder the sender signs in the fee-payer slot.
const PLACEHOLDER: u8 = 0x00;
/// An empty RLP list.
const RLP_EMPTY_LIST: u8 = 0xc0;

/// Why a credential's transaction is not a hand-off this service co-signs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    #[error("a sponsored payment is a type 0x76 transaction (or mppx's 0x78 hand-off), not type 0x{0:02x}")]
    Type(u8),
    #[error("the transaction has {0} fields; a sponsored one has 14 (no key authorization)")]
    Fields(usize),
    #[error("the fee-payer slot must hold the 0x00 placeholder (0x76) or the sender's address (0x78)")]
    Slot,
    #[error("the address in the hand-off is not the transaction's signer")]
    SenderMismatch,
    #[error("the sender's signature must be a 65-byte secp256k1 signature")]
    SignatureKind,
    #[error("a sponsored transaction carries no access list")]
    AccessList,
    #[error("a sponsored transaction carries no authorization list")]
    Authorizations,
    #[error("a sponsored call sends no native value")]
    Value,
    #[error("{0} does not fit its field")]
    Range(&'static str),
}

/// A decoded hand-off: the sender is recovered, the fields kept raw for
/// re-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub chain_id: u64,
    pub max_priority_fee_per_gas: u128,
    pub max_fee_per_gas: u128,
    pub gas_limit: u64,
    pub calls: Vec<Call>,
    pub nonce_key: U256,
    pub nonce: u64,
    pub valid_before: Option<u64>,
    pub valid_after: Option<u64>,
    /// The fee token the client named (the spec says none).
    pub fee_token: Option<Address>,
    pub sender: Address,
    /// The hash the sender signed.
    pub sender_hash: B256,
    /// The raw RLP items `chain_id` … `valid_after` (fields 0 to 9).
    head: Vec<u8>,
    /// The raw `aa_authorization_list` item (an empty list).
    authorizations: Vec<u8>,
    /// The raw sender signature item.
    signature: Vec<u8>,
}

fn optional_u64(item: &[u8]) -> Result<Option<u64>, Undecodable> {
    if item == [RLP_NULL] {
        Ok(None)
    } else {
        uint(item).map(Some)
    }
}

fn u128_field(item: &[u8], name: &'static str) -> Result<u128, HandoffError> {
    u128::try_from(uint256(item)?).map_err(|_| HandoffError::Range(name))
}

impl Handoff {
    /// Decodes `raw` (0x78 or 0x76) and recovers its sender.
    pub fn parse(raw: &[u8]) -> Result<Handoff, HandoffError> {
        let (&ty, body) = raw.split_first().ok_or_else(|| Undecodable("empty".into()))?;
        if ty != FEE_PAYER_MAGIC && ty != TEMPO_TX_TYPE {
            return Err(HandoffError::Type(ty));
        }
        let f = whole_list(body)?;
        if f.len() != 14 {
            return Err(HandoffError::Fields(f.len()));
        }
        let embedded = match (ty, f[11]) {
            (TEMPO_TX_TYPE, [PLACEHOLDER]) => None,
            (FEE_PAYER_MAGIC, slot) => match optional_address(slot) {
                Ok(Some(a)) => Some(a),
                _ => return Err(HandoffError::Slot),
            },
            _ => return Err(HandoffError::Slot),
        };
        if f[5] != [RLP_EMPTY_LIST] {
            return Err(HandoffError::AccessList);
        }
        if f[12] != [RLP_EMPTY_LIST] {
            return Err(HandoffError::Authorizations);
        }
        let mut calls = Vec::new();
        for c in whole_list(f[4])? {
            let c = whole_list(c)?;
            if c.len() != 3 {
                return Err(Undecodable("a 0x76 call has 3 fields [to, value, input]".into()).into());
            }
            if !uint256(c[1])?.is_zero() {
                return Err(HandoffError::Value);
            }
            calls.push(Call {
                to: optional_address(c[0])?,
                input: string(c[2])?.to_vec(),
            });
        }
        if calls.is_empty() {
            return Err(Undecodable("a 0x76 transaction makes at least one call".into()).into());
        }
        let sig = string(f[13])?;
        if sig.len() != 65 {
            return Err(HandoffError::SignatureKind);
        }
        let parity = match sig[64] {
            0 | 27 => false,
            1 | 28 => true,
            _ => return Err(HandoffError::SignatureKind),
        };
        let head: Vec<u8> = f[..10].concat();
        let mut unsigned = head.clone();
        unsigned.extend_from_slice(&[RLP_NULL, PLACEHOLDER]);
        unsigned.extend_from_slice(f[12]);
        let sender_hash = keccak256(prefixed_list(TEMPO_TX_TYPE, &unsigned));
        let r = U256::from_be_slice(&sig[..32]);
        let s = U256::from_be_slice(&sig[32..64]);
        let sender = recover_rs(Some(TEMPO_TX_TYPE), &unsigned, parity, r, s)?;
        if embedded.is_some_and(|a| a != sender) {
            return Err(HandoffError::SenderMismatch);
        }
        Ok(Handoff {
            chain_id: uint(f[0])?,
            max_priority_fee_per_gas: u128_field(f[1], "max_priority_fee_per_gas")?,
            max_fee_per_gas: u128_field(f[2], "max_fee_per_gas")?,
            gas_limit: uint(f[3]).map_err(|_| HandoffError::Range("gas_limit"))?,
            calls,
            nonce_key: uint256(f[6])?,
            nonce: uint(f[7]).map_err(|_| HandoffError::Range("nonce"))?,
            valid_before: optional_u64(f[8]).map_err(|_| HandoffError::Range("valid_before"))?,
            valid_after: optional_u64(f[9]).map_err(|_| HandoffError::Range("valid_after"))?,
            fee_token: optional_address(f[10])?,
            sender,
            sender_hash,
            head,
            authorizations: f[12].to_vec(),
            // `v` in its one spelling, 27 or 28 (as viem writes it): a
            // node that reads `0`/`1` mines the transaction under the
            // other spelling's hash, so every spelling is co-signed as
            // that one, one transaction under one hash.
            signature: {
                let mut item = f[13].to_vec();
                if let Some(v) = item.last_mut() {
                    *v = 27 + u8::from(parity);
                }
                item
            },
        })
    }

    /// What the payment precheck judges: the calls, signed by the sender.
    pub fn as_signed_tx(&self) -> SignedTx {
        SignedTx {
            tx_type: TEMPO_TX_TYPE,
            chain_id: Some(self.chain_id),
            signer: Some(self.sender),
            calls: self.calls.clone(),
        }
    }

    /// The hash the fee payer signs, committing to `fee_token` and the
    /// sender.
    pub fn fee_payer_hash(&self, fee_token: Address) -> B256 {
        let mut payload = self.head.clone();
        fee_token.as_slice().encode(&mut payload);
        self.sender.as_slice().encode(&mut payload);
        payload.extend_from_slice(&self.authorizations);
        keccak256(prefixed_list(FEE_PAYER_MAGIC, &payload))
    }

    /// The transaction to broadcast: the hand-off with `fee_token` and the
    /// sponsor's signature.
    pub fn cosign(&self, fee_token: Address, key: &PayeeKey) -> Result<SignedRaw, SignError> {
        let (odd, r, s) = key.sign_hash(&self.fee_payer_hash(fee_token))?;
        let mut signature = Vec::with_capacity(70);
        u8::from(odd).encode(&mut signature);
        be_trimmed(&r).encode(&mut signature);
        be_trimmed(&s).encode(&mut signature);
        let mut payload = self.head.clone();
        fee_token.as_slice().encode(&mut payload);
        Header {
            list: true,
            payload_length: signature.len(),
        }
        .encode(&mut payload);
        payload.extend_from_slice(&signature);
        payload.extend_from_slice(&self.authorizations);
        payload.extend_from_slice(&self.signature);
        let raw = prefixed_list(TEMPO_TX_TYPE, &payload);
        let hash = keccak256(&raw);
        Ok(SignedRaw { raw, hash })
    }
}

/// `ty || rlp-list header || payload`.
fn prefixed_list(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(ty);
    Header {
        list: true,
        payload_length: payload.len(),
    }
    .encode(&mut out);
    out.extend_from_slice(payload);
    out
}
