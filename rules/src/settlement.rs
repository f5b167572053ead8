//! Settlement rules: from what the chain says about a transaction (its
//! receipt, the receipt's block time, the head when more than one
//! confirmation is asked), the policy and the time, to a [`Verdict`]. Pure:
//! the actors fetch, this decides.
//!
//! The chain id is not a fact of one lookup: the `RpcPool` only routes a
//! lookup to an endpoint whose chain id it has verified against the
//! request's policy, and a node on another chain is an infrastructure fault
//! (503), never a verdict on the payment.
//!
//! Rules that a payment cannot get around:
//! - logs count only when emitted by the policy's asset, never by looking at
//!   `tx.to`, which Tempo's 0x76 batches do not have;
//! - a `transferWithMemo` emits `Transfer` + `TransferWithMemo` for one
//!   movement: the pair counts once;
//! - the fee transfer to the fee manager is never a payment;
//! - a transaction the recipient sent is never a payment to it (its
//!   session settlements move money already paid for);
//! - the age check is always on and refuses future timestamps;
//! - a route priced at zero is never paid by a transfer (it takes a
//!   `proof` credential, which never reaches these rules);
//! - a route with splits is paid by one transfer per split (in the price's
//!   token, to the split's recipient, from the payer, at least its share,
//!   with its memo when it names one) beside the recipient's own transfer
//!   of the rest; a transfer pays one leg at most.
//! - confirmations use a fresh head, and "not yet" is pending, never a
//!   failure.

use alloy_primitives::{Address, B256, Bytes, U64, U256, address, b256};
use serde::{Deserialize, Serialize};

use crate::mpp::{Binding, is_mpp_memo};
use crate::policy::{MemoPolicy, Price, SettlementPolicy, Split};
use crate::replay::Scheme;

/// `Transfer(address,address,uint256)`.
pub const TRANSFER_TOPIC: B256 = b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
/// `TransferWithMemo(address,address,uint256,bytes32)`.
pub const TRANSFER_WITH_MEMO_TOPIC: B256 = b256!("57bc7354aa85aed339e000bccffabbc529466af35f0772c8f8ee1145927de7f0");
/// Tempo's fee manager: fee payments land here; they are never payments.
pub const FEE_MANAGER: Address = address!("feec000000000000000000000000000000000000");

/// A transaction receipt as JSON-RPC returns it. Unknown fields (`type`
/// 0x76, `feePayer`, `feeToken`, `blockTimestamp`, …) are ignored.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub transaction_hash: B256,
    #[serde(default)]
    pub status: Option<U64>,
    #[serde(default)]
    pub block_number: Option<U64>,
    #[serde(default)]
    pub block_hash: Option<B256>,
    pub from: Address,
    #[serde(default)]
    pub logs: Vec<Log>,
    /// Tempo nodes put the block's timestamp in the receipt (a JSON number
    /// on the dev chain; a hex quantity is accepted too), which saves a
    /// block lookup.
    #[serde(default, deserialize_with = "quantity::option")]
    pub block_timestamp: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
    #[serde(default)]
    pub log_index: Option<U64>,
    #[serde(default)]
    pub removed: Option<bool>,
    #[serde(default, deserialize_with = "quantity::option")]
    pub block_timestamp: Option<u64>,
}

/// The part of a block header the rules need.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct BlockHeader {
    pub number: U64,
    pub hash: B256,
    pub timestamp: U64,
}

/// Everything one lookup learns about a transaction, from a node verified
/// to be on the policy's chain.
/// Serialisable so that one instance's lookup can answer the checks of
/// others (the coalescer shares it through the replay store).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChainFacts {
    /// `None`: the node does not know the transaction (yet).
    pub receipt: Option<Receipt>,
    /// The receipt's block, read only when the node gave no
    /// `blockTimestamp` with the receipt.
    pub block: Option<BlockHeader>,
    /// The head block number, read in the same JSON-RPC batch as the
    /// receipt, only when the policy asks for more than one confirmation.
    pub head: Option<u64>,
}

impl ChainFacts {
    /// The timestamp of the receipt's block: from the receipt, else from its
    /// logs (all must agree), else from a block read that matches the
    /// receipt's block number and hash. `None` when none of them is usable.
    pub fn block_timestamp(&self) -> Option<u64> {
        let r = self.receipt.as_ref()?;
        if let Some(ts) = r.block_timestamp {
            return Some(ts);
        }
        let mut from_logs = r.logs.iter().filter_map(|l| l.block_timestamp);
        if let Some(first) = from_logs.next() {
            return from_logs.all(|t| t == first).then_some(first);
        }
        let block = self.block.as_ref()?;
        (Some(block.number) == r.block_number && Some(block.hash) == r.block_hash).then(|| block.timestamp.to::<u64>())
    }

    /// Whether a block read is needed to date the payment: mined, and the
    /// node gave no timestamp with the receipt or its logs.
    pub fn needs_block(&self) -> bool {
        self.receipt.as_ref().is_some_and(|r| {
            r.block_number.is_some()
                && r.block_timestamp.is_none()
                && r.logs.iter().all(|l| l.block_timestamp.is_none())
        })
    }

    /// Mined and successful: the only kind of transaction a replay record
    /// can exist for, so the only one worth asking the replay store about
    /// when it does not settle now (it may have settled before).
    pub fn mined_successfully(&self) -> bool {
        self.receipt
            .as_ref()
            .is_some_and(|r| r.block_number.is_some() && r.status == Some(U64::from(1)))
    }
}

/// Whether a lookup under `policy` must read the head: a mined receipt is
/// one confirmation, so only a policy asking for more needs it.
pub fn needs_head(policy: &SettlementPolicy) -> bool {
    policy.min_confirmations > 1
}

/// How the memo of the paying transfer is judged for this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoRule {
    /// Any memo but an MPP attribution memo (the Tempo scheme).
    Any,
    /// A memo that is not an MPP attribution memo (the Tempo scheme).
    Required,
    /// An MPP attribution memo bound to this realm and one challenge.
    Bound(Binding),
    /// The policy needs a challenge-bound memo and this scheme cannot
    /// carry one: nothing satisfies it.
    Unsatisfiable,
}

/// Who must have made the paying transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayerRule {
    /// Anyone (the Tempo scheme names no payer).
    Any,
    /// The transaction's sender (`receipt.from`).
    Sender,
    /// This address (the `source` of a Payment credential).
    Is(Address),
}

/// What this request asks of the paying transfer beyond the price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    pub memo: MemoRule,
    pub payer: PayerRule,
}

impl From<MemoRule> for Terms {
    fn from(memo: MemoRule) -> Self {
        Terms {
            memo,
            payer: PayerRule::Any,
        }
    }
}

/// The memo rule a scheme can meet under a memo policy.
///
/// - The Tempo scheme carries no challenge, so a policy that binds the memo
///   to a challenge cannot be met by it: whoever saw the hash on chain could
///   redeem it otherwise.
/// - The Payment scheme always needs the memo bound to the challenge its
///   credential echoes (`bound`), whatever the policy: that binding is the
///   scheme's protection, and every MPP client writes it.
pub fn memo_rule(policy: MemoPolicy, scheme: Scheme, bound: Option<Binding>) -> MemoRule {
    match (scheme, bound, policy) {
        (Scheme::Payment, Some(b), _) => MemoRule::Bound(b),
        (Scheme::Payment, None, _) => MemoRule::Unsatisfiable,
        (Scheme::Tempo, _, MemoPolicy::Optional) => MemoRule::Any,
        (Scheme::Tempo, _, MemoPolicy::Required) => MemoRule::Required,
        (Scheme::Tempo, _, MemoPolicy::ChallengeBound) => MemoRule::Unsatisfiable,
    }
}

/// Why a payment does not satisfy the policy. Final: retrying the same
/// transaction cannot change it. Names are the `reason` values of API.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    TxReverted,
    /// The credential names another chain than the policy's. Never derived
    /// from the node: a node on another chain is a 503.
    WrongChain,
    NoTransfer,
    WrongAsset,
    WrongRecipient,
    InsufficientAmount,
    Expired,
    FutureTimestamp,
    InsufficientConfirmations,
    MemoMismatch,
    ChallengeInvalid,
    ChallengeExpired,
    PayerMismatch,
    /// A pull-mode `Payment` credential's transaction was refused by the
    /// node (bad signature, nonce, balance): it never reached the chain.
    TxRejected,
    /// A sponsored challenge answered by a transaction outside the
    /// sponsor's signed caps (gas, fees, validity, fee token, shape).
    SponsorshipRefused,
    /// A sponsored challenge answered with a `hash` credential: the client
    /// broadcast the transaction itself, which the spec refuses.
    SponsorshipNeedsPull,
    /// The sponsor cannot pay now (budget spent, balance low, no key): the
    /// fresh challenge does not offer sponsorship.
    SponsorshipUnavailable,
    /// The sponsored transaction would revert: refused before its
    /// co-signature and broadcast, at no cost to the sponsor.
    WouldRevert,
    /// A payment (hash, transaction, `Tempo` hash) for a route priced at
    /// zero, which takes a `proof` credential only.
    ProofRequired,
    /// A `proof` credential for a route that has a price.
    ProofUnexpected,
    /// A `proof` whose signature does not recover its `source` for this
    /// challenge (signed by someone else, for another challenge, or not an
    /// EOA's signature).
    ProofInvalid,
    /// A split's recipient got no transfer of the price's token from the
    /// payer (none, or only to another address).
    SplitMissing,
    /// A split's recipient got less than its share.
    SplitShort,
    /// The payer is on the operator's deny list: refused before anything
    /// is consumed (the payment stays usable if the payer is allowed
    /// again). Never a verdict of [`judge`]: the gate adds it.
    PayerDenied,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::TxReverted => "tx_reverted",
            Reason::WrongChain => "wrong_chain",
            Reason::NoTransfer => "no_transfer",
            Reason::WrongAsset => "wrong_asset",
            Reason::WrongRecipient => "wrong_recipient",
            Reason::InsufficientAmount => "insufficient_amount",
            Reason::Expired => "expired",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::InsufficientConfirmations => "insufficient_confirmations",
            Reason::MemoMismatch => "memo_mismatch",
            Reason::ChallengeInvalid => "challenge_invalid",
            Reason::ChallengeExpired => "challenge_expired",
            Reason::PayerMismatch => "payer_mismatch",
            Reason::TxRejected => "tx_rejected",
            Reason::SponsorshipRefused => "sponsorship_refused",
            Reason::SponsorshipNeedsPull => "sponsorship_needs_pull",
            Reason::SponsorshipUnavailable => "sponsorship_unavailable",
            Reason::WouldRevert => "would_revert",
            Reason::ProofRequired => "proof_required",
            Reason::ProofUnexpected => "proof_unexpected",
            Reason::ProofInvalid => "proof_invalid",
            Reason::SplitMissing => "split_missing",
            Reason::SplitShort => "split_short",
            Reason::PayerDenied => "payer_denied",
        }
    }
}

/// Why there is no answer yet. Retryable: nothing is consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The node does not know the transaction, or not its block, yet.
    NotVisible,
    /// Mined, but with fewer confirmations than the policy asks.
    Confirmations { have: u64, need: u64 },
}

/// A payment that satisfies the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payer: Address,
    pub recipient: Address,
    pub asset: Address,
    pub amount: U256,
    pub memo: Option<B256>,
    pub chain_id: u64,
    pub block_number: u64,
    pub block_timestamp: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Settled(Payment),
    Pending(Pending),
    Failed(Reason),
}

/// One movement of funds: a `Transfer`, possibly merged with the
/// `TransferWithMemo` that describes the same movement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub token: Address,
    pub from: Address,
    pub to: Address,
    pub amount: U256,
    pub memo: Option<B256>,
}

/// Reads the TIP-20 movements of a receipt's logs, in log order. Logs that
/// are removed or malformed (wrong topic count, non-address topics, data
/// not one word) are skipped: they are not movements.
pub fn movements(logs: &[Log]) -> Vec<Movement> {
    let mut out: Vec<Movement> = Vec::new();
    // Whether the last pushed movement came from a plain Transfer that a
    // following TransferWithMemo may describe.
    let mut last_plain = false;
    for log in logs.iter().filter(|l| l.removed != Some(true)) {
        let Some(topic0) = log.topics.first() else {
            last_plain = false;
            continue;
        };
        let with_memo = *topic0 == TRANSFER_WITH_MEMO_TOPIC;
        let expected_topics = if with_memo { 4 } else { 3 };
        let parsed = (*topic0 == TRANSFER_TOPIC || with_memo)
            .then_some(())
            .filter(|_| log.topics.len() == expected_topics && log.data.len() == 32)
            .and_then(|_| Some((topic_address(&log.topics[1])?, topic_address(&log.topics[2])?)));
        let Some((from, to)) = parsed else {
            last_plain = false;
            continue;
        };
        let m = Movement {
            token: log.address,
            from,
            to,
            amount: U256::from_be_slice(&log.data),
            memo: with_memo.then(|| log.topics[3]),
        };
        if with_memo
            && last_plain
            && let Some(prev) = out.last_mut()
            && (prev.token, prev.from, prev.to, prev.amount) == (m.token, m.from, m.to, m.amount)
        {
            prev.memo = m.memo;
            last_plain = false;
            continue;
        }
        last_plain = !with_memo;
        out.push(m);
    }
    out
}

fn topic_address(topic: &B256) -> Option<Address> {
    topic.0[..12]
        .iter()
        .all(|b| *b == 0)
        .then(|| Address::from_slice(&topic.0[12..]))
}

/// The verdict on `facts` for a request priced at `price`, at unix time `now`.
/// Cheapest checks first; the replay store is never consulted here.
pub fn judge(
    facts: &ChainFacts,
    policy: &SettlementPolicy,
    price: &Price,
    terms: impl Into<Terms>,
    now: u64,
) -> Verdict {
    let terms = terms.into();
    let Some(receipt) = &facts.receipt else {
        return Verdict::Pending(Pending::NotVisible);
    };
    let Some(number) = receipt.block_number else {
        return Verdict::Pending(Pending::NotVisible);
    };
    if receipt.status != Some(U64::from(1)) {
        return Verdict::Failed(Reason::TxReverted);
    }
    // A transaction the recipient sent itself (the payee settling or
    // closing a session channel: the escrow pays it what vouchers already
    // paid for) is public on chain and pays nobody's request.
    if receipt.from == policy.recipient {
        return Verdict::Failed(Reason::PayerMismatch);
    }

    let payer = match terms.payer {
        PayerRule::Any => None,
        PayerRule::Sender => Some(receipt.from),
        PayerRule::Is(a) => Some(a),
    };
    let payment = match match_payment(&movements(&receipt.logs), policy, price, terms.memo, payer) {
        Ok(m) => m,
        Err(reason) => return Verdict::Failed(reason),
    };

    // No usable date (a block read that does not match the receipt's
    // block: a reorg or a lagging endpoint between the two reads): ask
    // again later rather than guess.
    let Some(ts) = facts.block_timestamp() else {
        return Verdict::Pending(Pending::NotVisible);
    };
    if ts > now.saturating_add(policy.clock_skew_seconds) {
        return Verdict::Failed(Reason::FutureTimestamp);
    }
    if now.saturating_sub(ts) > policy.max_age_seconds.saturating_add(policy.clock_skew_seconds) {
        return Verdict::Failed(Reason::Expired);
    }

    let block_number = number.to::<u64>();
    // A mined receipt is one confirmation; more need a head read with it.
    let have = match facts.head {
        Some(head) => head.saturating_add(1).saturating_sub(block_number),
        None => 1,
    };
    if have < policy.min_confirmations {
        return Verdict::Pending(Pending::Confirmations {
            have,
            need: policy.min_confirmations,
        });
    }
    Verdict::Settled(Payment {
        payer: payment.from,
        recipient: policy.recipient,
        asset: price.asset,
        amount: payment.amount,
        memo: payment.memo,
        chain_id: policy.chain_id,
        block_number,
        block_timestamp: ts,
    })
}

/// Finds the movements that pay `price`: the recipient's (one movement, or
/// when the policy allows it several from one payer) and one per split.
/// The movement returned is the recipient's, its amount what the payer
/// paid in all. On failure, the reason closest to success, the
/// recipient's leg first.
pub(crate) fn match_payment(
    all: &[Movement],
    policy: &SettlementPolicy,
    price: &Price,
    memo: MemoRule,
    payer: Option<Address>,
) -> Result<Movement, Reason> {
    // A free route takes a proof, never a transfer: any transfer would be
    // "enough" for it.
    if price.amount.is_zero() {
        return Err(Reason::ProofRequired);
    }
    let mut primary = match_primary(all, policy, price, memo, payer)?;
    if !price.splits.is_empty() {
        // The splits come from whoever paid the recipient: never from
        // strangers whose transfers happen to sit in the same receipt.
        let shares = match_splits(all, policy, price, payer.unwrap_or(primary.from))?;
        primary.amount = primary.amount.saturating_add(shares);
    }
    Ok(primary)
}

/// Matches each split of `price` to a movement of its own, splits that name
/// a memo first; returns what they were paid in all.
fn match_splits(all: &[Movement], policy: &SettlementPolicy, price: &Price, from: Address) -> Result<U256, Reason> {
    let mut used = vec![false; all.len()];
    let mut order: Vec<&Split> = price.splits.iter().collect();
    order.sort_by_key(|s| s.memo.is_none());
    let mut paid = U256::ZERO;
    for split in order {
        let need = split.amount.value();
        let short = |ms: &[usize]| ms.iter().all(|&i| all[i].amount < need);
        let to_split: Vec<usize> = (0..all.len())
            .filter(|&i| {
                let m = &all[i];
                !used[i]
                    && m.token == price.asset
                    && m.to == split.recipient
                    && m.to != policy.recipient
                    && m.to != FEE_MANAGER
            })
            .collect();
        if to_split.is_empty() {
            return Err(Reason::SplitMissing);
        }
        let memo_ok: Vec<usize> = to_split
            .iter()
            .copied()
            .filter(|&i| split.memo.is_none_or(|memo| all[i].memo == Some(memo)))
            .collect();
        if memo_ok.is_empty() {
            return Err(if short(&to_split) {
                Reason::SplitShort
            } else {
                Reason::MemoMismatch
            });
        }
        let from_payer: Vec<usize> = memo_ok.iter().copied().filter(|&i| all[i].from == from).collect();
        if from_payer.is_empty() {
            return Err(if short(&memo_ok) {
                Reason::SplitShort
            } else {
                Reason::PayerMismatch
            });
        }
        // unwrap: from_payer is not empty.
        let best = *from_payer.iter().max_by_key(|&&i| all[i].amount).unwrap();
        if all[best].amount < need {
            return Err(Reason::SplitShort);
        }
        used[best] = true;
        paid = paid.saturating_add(all[best].amount);
    }
    Ok(paid)
}

/// The recipient's leg: at least [`Price::primary_amount`].
fn match_primary(
    all: &[Movement],
    policy: &SettlementPolicy,
    price: &Price,
    memo: MemoRule,
    payer: Option<Address>,
) -> Result<Movement, Reason> {
    let need = price.primary_amount();
    let candidates: Vec<&Movement> = all.iter().filter(|m| m.to != FEE_MANAGER).collect();
    if candidates.is_empty() {
        return Err(Reason::NoTransfer);
    }
    let in_asset: Vec<&Movement> = candidates.into_iter().filter(|m| m.token == price.asset).collect();
    if in_asset.is_empty() {
        return Err(Reason::WrongAsset);
    }
    let to_recipient: Vec<&Movement> = in_asset.into_iter().filter(|m| m.to == policy.recipient).collect();
    if to_recipient.is_empty() {
        return Err(Reason::WrongRecipient);
    }
    // A transaction that pays the recipient with an MPP attribution memo was
    // made for a Payment challenge; its hash is that payer's credential.
    // Under the Tempo scheme, which names no challenge, whoever watched the
    // chain could redeem it first, so it is refused whole.
    if matches!(memo, MemoRule::Any | MemoRule::Required)
        && to_recipient
            .iter()
            .any(|m| m.memo.is_some_and(|memo| is_mpp_memo(&memo)))
    {
        return Err(Reason::MemoMismatch);
    }
    let eligible: Vec<&Movement> = to_recipient
        .iter()
        .copied()
        .filter(|m| match memo {
            MemoRule::Any => true,
            MemoRule::Required => m.memo.is_some(),
            MemoRule::Bound(b) => m.memo.is_some_and(|memo| b.matches(&memo)),
            MemoRule::Unsatisfiable => false,
        })
        .collect();
    if eligible.is_empty() {
        // Report the amount problem first when no transfer to the
        // recipient would have been enough anyway.
        return Err(if to_recipient.iter().all(|m| m.amount < need) {
            Reason::InsufficientAmount
        } else {
            Reason::MemoMismatch
        });
    }
    let eligible = match payer {
        None => eligible,
        Some(p) => {
            let from_payer: Vec<&Movement> = eligible.iter().copied().filter(|m| m.from == p).collect();
            if from_payer.is_empty() {
                return Err(if eligible.iter().all(|m| m.amount < need) {
                    Reason::InsufficientAmount
                } else {
                    Reason::PayerMismatch
                });
            }
            from_payer
        }
    };
    if let Some(best) = eligible.iter().max_by_key(|m| m.amount)
        && best.amount >= need
    {
        return Ok((*best).clone());
    }
    if policy.allow_summed_transfers {
        // Several transfers from one payer may add up; never across payers,
        // or one payment could be assembled from strangers' transfers.
        let mut payers: Vec<Address> = eligible.iter().map(|m| m.from).collect();
        payers.dedup();
        for payer in payers {
            let from_payer: Vec<&&Movement> = eligible.iter().filter(|m| m.from == payer).collect();
            let total = from_payer
                .iter()
                .fold(U256::ZERO, |acc, m| acc.saturating_add(m.amount));
            if total >= need {
                return Ok(Movement {
                    token: price.asset,
                    from: payer,
                    to: policy.recipient,
                    amount: total,
                    memo: from_payer.iter().find_map(|m| m.memo),
                });
            }
        }
    }
    Err(Reason::InsufficientAmount)
}

/// JSON-RPC quantities that nodes write either as hex strings (`"0x6b10"`)
/// or, for Tempo's `blockTimestamp`, as plain JSON numbers.
/// (A visitor, not an untagged enum: this runs for every receipt and log,
/// and an untagged enum builds an error for each shape it does not match.)
mod quantity {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    struct Quantity;

    impl<'de> Visitor<'de> for Quantity {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a hex quantity, an unsigned integer or null")
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            let bad = || {
                E::custom(format!(
                    "{} is not a hex quantity",
                    crate::primitives::quote_bounded(s, 40)
                ))
            };
            let hex = s
                .strip_prefix("0x")
                .filter(|h| !h.is_empty() && h.len() <= 16)
                .ok_or_else(bad)?;
            u64::from_str_radix(hex, 16).map(Some).map_err(|_| bad())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Quantity)
        }
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(Quantity)
    }
}
