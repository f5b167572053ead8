//! The v1 escrow's ABI, as the deployed `TempoStreamChannel` bytecode has
//! it: `topUp(bytes32,uint256)`, and `getChannel` returning `(finalized,
//! closeRequestedAt, payer, payee, token, authorizedSigner, deposit,
//! settled)` in that order (the spec appendix lists another order, which
//! would read the deposit as an address).
//!
//! Decoding is strict: exact lengths, and each word's padding checked, so
//! two byte strings never decode to the same call or channel.

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use super::ChannelId;
use super::voucher::{self as words, VoucherSignature};

/// `open(address,address,uint128,bytes32,address)`.
pub const OPEN_SELECTOR: [u8; 4] = [0xc7, 0x9e, 0xa4, 0x85];
/// `topUp(bytes32,uint256)` (deployed; the spec says `uint128`).
pub const TOP_UP_SELECTOR: [u8; 4] = [0xb6, 0x76, 0x44, 0xb9];
/// `settle(bytes32,uint128,bytes)`.
pub const SETTLE_SELECTOR: [u8; 4] = [0x51, 0x6d, 0x3b, 0x88];
/// `close(bytes32,uint128,bytes)`.
pub const CLOSE_SELECTOR: [u8; 4] = [0x0d, 0x65, 0xc5, 0x1d];
/// `getChannel(bytes32)`.
pub const GET_CHANNEL_SELECTOR: [u8; 4] = [0x83, 0x1c, 0x2b, 0x82];
/// `approve(address,uint256)` (TIP-20).
pub const APPROVE_SELECTOR: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("the data is {got} bytes, not {want}")]
    Length { got: usize, want: usize },
    #[error("the call's selector is not the one expected")]
    Selector,
    #[error("word {0} is not a valid value of its type")]
    Word(usize),
}

/// A channel as `getChannel` returns it. A channel that was never opened
/// reads as all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnChain {
    #[serde(rename = "f")]
    pub finalized: bool,
    #[serde(rename = "c")]
    pub close_requested_at: u64,
    #[serde(rename = "p")]
    pub payer: Address,
    #[serde(rename = "e")]
    pub payee: Address,
    #[serde(rename = "t")]
    pub token: Address,
    #[serde(rename = "s")]
    pub authorized_signer: Address,
    #[serde(rename = "d", with = "super::accounting::dec")]
    pub deposit: u128,
    #[serde(rename = "x", with = "super::accounting::dec")]
    pub settled: u128,
}

impl OnChain {
    /// Opened at some point (the escrow refuses a zero payer).
    pub fn exists(&self) -> bool {
        self.payer != Address::ZERO
    }

    /// Who must sign vouchers: the authorized signer, or the payer when it
    /// is zero.
    pub fn expected_signer(&self) -> Address {
        if self.authorized_signer == Address::ZERO {
            self.payer
        } else {
            self.authorized_signer
        }
    }
}

fn word(data: &[u8], i: usize) -> &[u8] {
    &data[i * 32..(i + 1) * 32]
}

fn as_address(data: &[u8], i: usize) -> Result<Address, AbiError> {
    let w = word(data, i);
    if w[..12].iter().any(|&b| b != 0) {
        return Err(AbiError::Word(i));
    }
    Ok(Address::from_slice(&w[12..]))
}

fn as_uint(data: &[u8], i: usize, bytes: usize) -> Result<U256, AbiError> {
    let w = word(data, i);
    if w[..32 - bytes].iter().any(|&b| b != 0) {
        return Err(AbiError::Word(i));
    }
    Ok(U256::from_be_slice(w))
}

fn as_u128(data: &[u8], i: usize) -> Result<u128, AbiError> {
    u128::try_from(as_uint(data, i, 16)?).map_err(|_| AbiError::Word(i))
}

fn call_args(input: &[u8], selector: [u8; 4], words: usize) -> Result<&[u8], AbiError> {
    let want = 4 + 32 * words;
    if input.len() != want {
        return Err(AbiError::Length { got: input.len(), want });
    }
    if input[..4] != selector {
        return Err(AbiError::Selector);
    }
    Ok(&input[4..])
}

/// `getChannel(id)` calldata.
pub fn get_channel_call(id: &ChannelId) -> Bytes {
    let mut v = Vec::with_capacity(36);
    v.extend_from_slice(&GET_CHANNEL_SELECTOR);
    v.extend_from_slice(id.0.as_slice());
    v.into()
}

/// `getChannel`'s return data: exactly 8 words.
pub fn decode_get_channel(data: &[u8]) -> Result<OnChain, AbiError> {
    if data.len() != 8 * 32 {
        return Err(AbiError::Length {
            got: data.len(),
            want: 256,
        });
    }
    let finalized = match as_uint(data, 0, 1)?.to::<u8>() {
        0 => false,
        1 => true,
        _ => return Err(AbiError::Word(0)),
    };
    Ok(OnChain {
        finalized,
        close_requested_at: as_uint(data, 1, 8)?.to::<u64>(),
        payer: as_address(data, 2)?,
        payee: as_address(data, 3)?,
        token: as_address(data, 4)?,
        authorized_signer: as_address(data, 5)?,
        deposit: as_u128(data, 6)?,
        settled: as_u128(data, 7)?,
    })
}

fn voucher_call(selector: [u8; 4], id: &ChannelId, cumulative: u128, sig: &VoucherSignature) -> Bytes {
    let mut v = Vec::with_capacity(4 + 7 * 32);
    v.extend_from_slice(&selector);
    v.extend_from_slice(id.0.as_slice());
    v.extend_from_slice(&words::word_u128(cumulative));
    v.extend_from_slice(&words::word_u64(0x60));
    v.extend_from_slice(&words::word_u64(65));
    let mut padded = [0u8; 96];
    padded[..65].copy_from_slice(&sig.to_bytes());
    v.extend_from_slice(&padded);
    v.into()
}

/// `settle(id, cumulative, signature)` calldata.
pub fn settle_call(id: &ChannelId, cumulative: u128, sig: &VoucherSignature) -> Bytes {
    voucher_call(SETTLE_SELECTOR, id, cumulative, sig)
}

/// `close(id, cumulative, signature)` calldata.
pub fn close_call(id: &ChannelId, cumulative: u128, sig: &VoucherSignature) -> Bytes {
    voucher_call(CLOSE_SELECTOR, id, cumulative, sig)
}

/// The arguments of an `open` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenCall {
    pub payee: Address,
    pub token: Address,
    pub deposit: u128,
    pub salt: B256,
    pub authorized_signer: Address,
}

pub fn decode_open(input: &[u8]) -> Result<OpenCall, AbiError> {
    let a = call_args(input, OPEN_SELECTOR, 5)?;
    Ok(OpenCall {
        payee: as_address(a, 0)?,
        token: as_address(a, 1)?,
        deposit: as_u128(a, 2)?,
        salt: B256::from_slice(word(a, 3)),
        authorized_signer: as_address(a, 4)?,
    })
}

/// `topUp(channelId, additionalDeposit)`: the amount as the `uint256` the
/// deployed contract takes.
pub fn decode_top_up(input: &[u8]) -> Result<(ChannelId, U256), AbiError> {
    let a = call_args(input, TOP_UP_SELECTOR, 2)?;
    Ok((ChannelId(B256::from_slice(word(a, 0))), as_uint(a, 1, 32)?))
}

/// `approve(spender, amount)`: the spender.
pub fn decode_approve_spender(input: &[u8]) -> Result<Address, AbiError> {
    let a = call_args(input, APPROVE_SELECTOR, 2)?;
    as_address(a, 0)
}

/// `topUp` calldata (for tests and clients).
pub fn top_up_call(id: &ChannelId, amount: u128) -> Bytes {
    let mut v = Vec::with_capacity(68);
    v.extend_from_slice(&TOP_UP_SELECTOR);
    v.extend_from_slice(id.0.as_slice());
    v.extend_from_slice(&words::word_u128(amount));
    v.into()
}
