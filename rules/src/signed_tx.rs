//! A pull-mode `Payment` credential carries a signed transaction that this
//! service broadcasts. Broadcasting is irreversible, so the transaction is
//! decoded and judged first: one that could not settle this request never
//! reaches the node (whoever signs a transfer to a stranger must not get it
//! mined through this service).
//!
//! - Types: legacy (EIP-155 only: a transaction without a chain id is valid
//!   on every chain), 0x01, 0x02, 0x04 and Tempo's 0x76 (batched `calls`,
//!   optional fee-payer signature, key authorization).
//! - The judgement turns the transaction's TIP-20 `transfer` /
//!   `transferWithMemo` calls into the [`Movement`]s a receipt would show
//!   and applies the receipt's own matching rules to them, so the filter
//!   cannot be stricter or looser than the verdict after mining on the
//!   payment's terms. A call of anything else is not a payment.
//! - The signer is recovered from a secp256k1 signature. Tempo's other
//!   signature kinds (P256, WebAuthn, access keys) are not recovered here:
//!   the payer is then checked on the receipt after mining only.
//! - A transaction carries the payment and nothing else: once the payment
//!   matches, each of its calls must itself be a `transfer` /
//!   `transferWithMemo` of the price's token to the policy's recipient (or
//!   a split's)
//!   (`no_transfer`, `wrong_asset`, `wrong_recipient` otherwise), so no
//!   other call is broadcast on the strength of a valid payment.
//! - A filter, not a verdict: passing it does not settle anything; the
//!   receipt is still judged by [`crate::settlement::judge`].

use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use alloy_rlp::Header;

use crate::policy::{Price, SettlementPolicy};
use crate::settlement::{Movement, PayerRule, Reason, Terms, match_payment};

/// `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `transferWithMemo(address,uint256,bytes32)`.
pub const TRANSFER_WITH_MEMO_SELECTOR: [u8; 4] = [0x95, 0x77, 0x7d, 0x59];
/// Tempo's transaction type.
pub const TEMPO_TX_TYPE: u8 = 0x76;

/// One call a transaction makes: `to` is `None` for a contract creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub to: Option<Address>,
    pub input: Vec<u8>,
}

/// What the judgement needs of a signed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub tx_type: u8,
    /// `None`: a legacy transaction signed without EIP-155.
    pub chain_id: Option<u64>,
    /// `None`: a signature kind this module does not recover.
    pub signer: Option<Address>,
    pub calls: Vec<Call>,
}

/// Why the bytes are not a signed transaction of a type Tempo accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payload.signature is not a signed transaction: {0}")]
pub struct Undecodable(pub String);

fn bad(why: impl Into<String>) -> Undecodable {
    Undecodable(why.into())
}

impl From<alloy_rlp::Error> for Undecodable {
    fn from(e: alloy_rlp::Error) -> Self {
        bad(format!("RLP: {e}"))
    }
}

/// Decodes an EIP-2718 signed transaction and recovers its signer.
pub fn decode(raw: &[u8]) -> Result<SignedTx, Undecodable> {
    let first = *raw.first().ok_or_else(|| bad("empty"))?;
    if first >= 0xc0 {
        return legacy(raw);
    }
    let (ty, body) = (first, &raw[1..]);
    let fields = whole_list(body)?;
    match ty {
        0x01 | 0x02 | 0x04 => ethereum_typed(ty, &fields),
        TEMPO_TX_TYPE => tempo(&fields),
        _ => Err(bad(format!("transaction type 0x{ty:02x} is not one Tempo accepts"))),
    }
}

/// Judges `tx` as the payment of a request priced at `price` under
/// `policy` and `terms`: `Err` with the reason the receipt would give.
pub fn precheck(tx: &SignedTx, policy: &SettlementPolicy, price: &Price, terms: Terms) -> Result<(), Reason> {
    if tx.chain_id != Some(policy.chain_id) {
        return Err(Reason::WrongChain);
    }
    // Movements carry the signer as payer; an unrecovered signer is checked
    // on the receipt only.
    let from = tx.signer.unwrap_or(Address::ZERO);
    let payer = match (terms.payer, tx.signer) {
        (PayerRule::Is(a), Some(_)) => Some(a),
        _ => None,
    };
    let movements: Vec<Movement> = tx.calls.iter().filter_map(|c| movement(c, from)).collect();
    match_payment(&movements, policy, price, terms.memo, payer)?;
    // Only the payment rides along: every call pays the recipient (or one
    // of the route's splits) in the price's token. Anything else (a
    // transfer elsewhere, an `approve`, a swap) would be relayed on the
    // payer's signature by this service.
    let payee = |to: Address| to == policy.recipient || price.splits.iter().any(|s| s.recipient == to);
    for call in &tx.calls {
        match movement(call, from) {
            None => return Err(Reason::NoTransfer),
            Some(m) if m.token != price.asset => return Err(Reason::WrongAsset),
            Some(m) if !payee(m.to) => return Err(Reason::WrongRecipient),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The TIP-20 movement a call asks for, if it is a well-formed
/// `transfer` or `transferWithMemo` (an address word with dirty high
/// bytes does not decode on chain either).
fn movement(call: &Call, from: Address) -> Option<Movement> {
    let token = call.to?;
    let (selector, args) = call.input.split_first_chunk::<4>()?;
    let with_memo = match *selector {
        TRANSFER_SELECTOR => false,
        TRANSFER_WITH_MEMO_SELECTOR => true,
        _ => return None,
    };
    let words = if with_memo { 3 } else { 2 };
    if args.len() < 32 * words || args[..12].iter().any(|b| *b != 0) {
        return None;
    }
    Some(Movement {
        token,
        from,
        to: Address::from_slice(&args[12..32]),
        amount: U256::from_be_slice(&args[32..64]),
        memo: with_memo.then(|| B256::from_slice(&args[64..96])),
    })
}

/// A legacy transaction: `[nonce, gasPrice, gas, to, value, data, v, r, s]`.
fn legacy(raw: &[u8]) -> Result<SignedTx, Undecodable> {
    let f = whole_list(raw)?;
    if f.len() != 9 {
        return Err(bad(format!("a legacy transaction has 9 fields, not {}", f.len())));
    }
    let v = uint(f[6])?;
    let (chain_id, parity) = match v {
        27 | 28 => (None, v == 28),
        v if v >= 35 => (Some((v - 35) / 2), (v - 35) % 2 == 1),
        _ => return Err(bad("legacy v is neither 27/28 nor EIP-155")),
    };
    let mut unsigned: Vec<u8> = f[..6].concat();
    if let Some(id) = chain_id {
        alloy_rlp::Encodable::encode(&id, &mut unsigned);
        unsigned.extend_from_slice(&[0x80, 0x80]);
    }
    let signer = recover(None, &unsigned, parity, f[7], f[8])?;
    Ok(SignedTx {
        tx_type: 0,
        chain_id,
        signer: Some(signer),
        calls: vec![Call {
            to: optional_address(f[3])?,
            input: string(f[5])?.to_vec(),
        }],
    })
}

/// 0x01 `[chainId, nonce, gasPrice, gas, to, value, data, accessList, …]`,
/// 0x02 / 0x04 `[chainId, nonce, maxPrio, maxFee, gas, to, value, data,
/// accessList, (authorizationList), …]`, each followed by `yParity, r, s`.
fn ethereum_typed(ty: u8, f: &[&[u8]]) -> Result<SignedTx, Undecodable> {
    let (unsigned_len, to_at) = match ty {
        0x01 => (8, 4),
        0x02 => (9, 5),
        _ => (10, 5),
    };
    if f.len() != unsigned_len + 3 {
        return Err(bad(format!(
            "a type 0x{ty:02x} transaction has {} fields, not {}",
            unsigned_len + 3,
            f.len()
        )));
    }
    let parity = match uint(f[unsigned_len])? {
        0 => false,
        1 => true,
        _ => return Err(bad("yParity is neither 0 nor 1")),
    };
    let signer = recover(
        Some(ty),
        &f[..unsigned_len].concat(),
        parity,
        f[unsigned_len + 1],
        f[unsigned_len + 2],
    )?;
    Ok(SignedTx {
        tx_type: ty,
        chain_id: Some(uint(f[0])?),
        signer: Some(signer),
        calls: vec![Call {
            to: optional_address(f[to_at])?,
            input: string(f[to_at + 2])?.to_vec(),
        }],
    })
}

/// 0x76: `[chainId, maxPrio, maxFee, gas, calls, accessList, nonceKey,
/// nonce, validBefore, validAfter, feeToken, feePayerSignature,
/// authorizationList, (keyAuthorization), signature]`, each call
/// `[to, value, input]`. The sender signs the fields with the fee-payer
/// signature written as `0x00` and, when a fee payer signs, no fee token.
fn tempo(f: &[&[u8]]) -> Result<SignedTx, Undecodable> {
    if f.len() != 14 && f.len() != 15 {
        return Err(bad(format!(
            "a type 0x76 transaction has 14 or 15 fields, not {}",
            f.len()
        )));
    }
    let (fields, signature) = (&f[..f.len() - 1], string(f[f.len() - 1])?);
    let mut calls = Vec::new();
    for c in whole_list(fields[4])? {
        let c = whole_list(c)?;
        if c.len() != 3 {
            return Err(bad("a 0x76 call has 3 fields [to, value, input]"));
        }
        calls.push(Call {
            to: optional_address(c[0])?,
            input: string(c[2])?.to_vec(),
        });
    }
    if calls.is_empty() {
        return Err(bad("a 0x76 transaction makes at least one call"));
    }
    let sponsored = fields[11] != [0x80];
    let mut unsigned: Vec<u8> = Vec::new();
    for (i, item) in fields.iter().enumerate() {
        match i {
            10 if sponsored => unsigned.push(0x80),
            11 if sponsored => unsigned.push(0x00),
            _ => unsigned.extend_from_slice(item),
        }
    }
    let signer = match signature.len() {
        65 => {
            let parity = match signature[64] {
                0 | 27 => false,
                1 | 28 => true,
                _ => return Err(bad("the secp256k1 signature's v is not 0, 1, 27 or 28")),
            };
            let r = U256::from_be_slice(&signature[..32]);
            let s = U256::from_be_slice(&signature[32..64]);
            Some(recover_rs(Some(TEMPO_TX_TYPE), &unsigned, parity, r, s)?)
        }
        0 => return Err(bad("the 0x76 transaction is not signed")),
        _ => None,
    };
    Ok(SignedTx {
        tx_type: TEMPO_TX_TYPE,
        chain_id: Some(uint(fields[0])?),
        signer,
        calls,
    })
}

fn recover(ty: Option<u8>, unsigned: &[u8], parity: bool, r: &[u8], s: &[u8]) -> Result<Address, Undecodable> {
    recover_rs(ty, unsigned, parity, uint256(r)?, uint256(s)?)
}

/// The signer of `ty || rlp(list of the raw items in unsigned)`.
pub(crate) fn recover_rs(
    ty: Option<u8>,
    unsigned: &[u8],
    parity: bool,
    r: U256,
    s: U256,
) -> Result<Address, Undecodable> {
    let mut preimage = Vec::with_capacity(unsigned.len() + 10);
    preimage.extend(ty);
    Header {
        list: true,
        payload_length: unsigned.len(),
    }
    .encode(&mut preimage);
    preimage.extend_from_slice(unsigned);
    Signature::new(r, s, parity)
        .recover_address_from_prehash(&keccak256(&preimage))
        .map_err(|e| bad(format!("the signature does not recover a signer: {e}")))
}

/// `raw` is exactly one RLP list: its items, each with its own header.
pub(crate) fn whole_list(raw: &[u8]) -> Result<Vec<&[u8]>, Undecodable> {
    let mut buf = raw;
    let header = Header::decode(&mut buf)?;
    if !header.list {
        return Err(bad("expected an RLP list"));
    }
    if buf.len() != header.payload_length {
        return Err(bad("trailing or missing bytes after the RLP list"));
    }
    let mut items = Vec::new();
    while !buf.is_empty() {
        let start = buf;
        let h = Header::decode(&mut buf)?;
        if buf.len() < h.payload_length {
            return Err(alloy_rlp::Error::InputTooShort.into());
        }
        buf = &buf[h.payload_length..];
        items.push(&start[..start.len() - buf.len()]);
    }
    Ok(items)
}

/// The payload of an RLP string item.
pub(crate) fn string(item: &[u8]) -> Result<&[u8], Undecodable> {
    let mut buf = item;
    let header = Header::decode(&mut buf)?;
    if header.list {
        return Err(bad("expected an RLP string, got a list"));
    }
    Ok(buf)
}

pub(crate) fn uint(item: &[u8]) -> Result<u64, Undecodable> {
    let mut buf = item;
    Ok(<u64 as alloy_rlp::Decodable>::decode(&mut buf)?)
}

pub(crate) fn uint256(item: &[u8]) -> Result<U256, Undecodable> {
    let b = string(item)?;
    if b.len() > 32 || b.first() == Some(&0) {
        return Err(bad("not a canonical 256-bit integer"));
    }
    Ok(U256::from_be_slice(b))
}

pub(crate) fn optional_address(item: &[u8]) -> Result<Option<Address>, Undecodable> {
    match string(item)? {
        [] => Ok(None),
        a if a.len() == 20 => Ok(Some(Address::from_slice(a))),
        _ => Err(bad("a call target is neither empty nor 20 bytes")),
    }
}
