//! The `open` and `topUp` transactions a client signs for this service to
//! broadcast, judged before they are: broadcasting is irreversible, and a
//! server that broadcasts whatever a credential carries relays any call the
//! client (or whoever replays its bytes) wants mined.
//!
//! A transaction passes only if it is one Tempo (0x76) or Ethereum-typed
//! transaction on the expected chain whose calls are exactly one escrow
//! `open` (or `topUp`), optionally preceded by `approve(escrow, _)` calls on
//! the expected token (mppx batches one), so nothing else is broadcast on
//! the strength of a channel. The channel id is recomputed from the
//! recovered payer and the calldata: a credential cannot name a channel its
//! transaction does not open.

use alloy_primitives::{Address, B256, U256};

use super::abi::{self, APPROVE_SELECTOR, OPEN_SELECTOR, TOP_UP_SELECTOR};
use super::parse::Open;
use super::problem::SessionProblem;
use super::voucher::channel_id_v1;
use super::{ChannelId, MAX_PAYLOAD_TX_BYTES};
use crate::signed_tx::{self, Call, SignedTx, Undecodable};

/// What the challenge asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub chain_id: u64,
    pub escrow: Address,
    pub payee: Address,
    pub token: Address,
    pub min_deposit: u128,
}

/// What a judged `open` transaction establishes (once mined).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFacts {
    pub payer: Address,
    pub channel_id: ChannelId,
    pub deposit: u128,
    pub authorized_signer: Address,
    pub salt: B256,
}

fn decode(raw: &[u8], expected: &Expected) -> Result<SignedTx, SessionProblem> {
    if raw.is_empty() || raw.len() > MAX_PAYLOAD_TX_BYTES {
        return Err(Undecodable(format!("a transaction is 1 to {MAX_PAYLOAD_TX_BYTES} bytes")).into());
    }
    let tx = signed_tx::decode(raw)?;
    if tx.chain_id != Some(expected.chain_id) {
        return Err(SessionProblem::WrongChain(tx.chain_id));
    }
    Ok(tx)
}

/// The one call with `selector`, after only approvals of the escrow on the
/// token. `None` when the calls are anything else.
fn the_call<'a>(tx: &'a SignedTx, selector: [u8; 4], expected: &Expected) -> Result<Option<&'a Call>, SessionProblem> {
    let mut found: Option<&Call> = None;
    for call in &tx.calls {
        let sel = call.input.get(..4);
        if sel == Some(&selector[..]) && found.is_none() {
            match call.to {
                Some(to) if to == expected.escrow => found = Some(call),
                Some(other) => return Err(SessionProblem::WrongEscrow(other)),
                None => return Ok(None),
            }
        } else if sel == Some(&APPROVE_SELECTOR[..]) && found.is_none() && call.to == Some(expected.token) {
            match abi::decode_approve_spender(&call.input) {
                Ok(spender) if spender == expected.escrow => {}
                _ => return Ok(None),
            }
        } else {
            return Ok(None);
        }
    }
    Ok(found)
}

/// Judges the signed transaction of an `open` payload.
pub fn judge_open(raw_tx: &[u8], claimed: &Open, expected: &Expected) -> Result<OpenFacts, SessionProblem> {
    let tx = decode(raw_tx, expected)?;
    let call = the_call(&tx, OPEN_SELECTOR, expected)?.ok_or(SessionProblem::NotAnOpen)?;
    let open = abi::decode_open(&call.input).map_err(|_| SessionProblem::NotAnOpen)?;
    if open.payee != expected.payee {
        return Err(SessionProblem::WrongPayee(open.payee));
    }
    if open.token != expected.token {
        return Err(SessionProblem::WrongToken(open.token));
    }
    if open.deposit < expected.min_deposit {
        return Err(SessionProblem::DepositTooLow {
            deposit: open.deposit,
            min: expected.min_deposit,
        });
    }
    if claimed.authorized_signer.is_some_and(|s| s != open.authorized_signer) {
        return Err(SessionProblem::AuthorizedSignerMismatch);
    }
    let payer = tx.signer.ok_or(SessionProblem::UnrecoveredSigner)?;
    let channel_id = channel_id_v1(
        payer,
        open.payee,
        open.token,
        open.salt,
        open.authorized_signer,
        expected.escrow,
        expected.chain_id,
    );
    if channel_id != claimed.channel_id || claimed.voucher.channel_id != channel_id {
        return Err(SessionProblem::ChannelIdMismatch);
    }
    Ok(OpenFacts {
        payer,
        channel_id,
        deposit: open.deposit,
        authorized_signer: open.authorized_signer,
        salt: open.salt,
    })
}

/// Judges the signed transaction of a `topUp` payload: the payer, whom the
/// caller compares with the channel's (only the payer may top up).
pub fn judge_top_up(
    raw_tx: &[u8],
    claimed_channel: &ChannelId,
    additional: u128,
    expected: &Expected,
) -> Result<Address, SessionProblem> {
    let tx = decode(raw_tx, expected)?;
    let call = the_call(&tx, TOP_UP_SELECTOR, expected)?.ok_or(SessionProblem::NotATopUp)?;
    let (channel, amount) = abi::decode_top_up(&call.input).map_err(|_| SessionProblem::NotATopUp)?;
    if channel != *claimed_channel {
        return Err(SessionProblem::ChannelIdMismatch);
    }
    if amount > U256::from(u128::MAX) {
        return Err(SessionProblem::Overflow);
    }
    let in_tx = amount.to::<u128>();
    if in_tx != additional {
        return Err(SessionProblem::TopUpAmountMismatch {
            in_tx,
            claimed: additional,
        });
    }
    tx.signer.ok_or(SessionProblem::UnrecoveredSigner)
}
