//! The flow's every branch, step by step, on hand-built chain facts and
//! store answers; then a property: no interleaving of store answers gives
//! two 200s for one payment.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U64, U256, address, b256, hex};
use proptest::prelude::*;
use serde_json::json;
use settlegate_actors::coalescer::Looked;
use settlegate_actors::ledger::deny::DenySet;
use settlegate_actors::replay_guard::{Consumed, StoreError};
use settlegate_actors::rpc_pool::{RpcError, Submitted};
use settlegate_rules::credential::TxHash;
use settlegate_rules::mpp::Binding;
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::replay::{ReplayRecord, RequestDigest, RetryIdentity, Scheme, Settlement, record_ttl};
use settlegate_rules::settlement::{
    ChainFacts, Log, PayerRule, Reason, Receipt, TRANSFER_TOPIC, TRANSFER_WITH_MEMO_TOPIC, Verdict, judge,
};

use super::*;
use crate::outcome::{Denial, Unavailable};
use crate::settle::SettleRequest;

const ALPHA: Address = address!("20c0000000000000000000000000000000000001");
const PAYER: Address = address!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266");
const RECIPIENT: Address = address!("70997970c51812dc3a010c7d01b50e0d17dc79c8");
const REALM: &str = "api.settlegate.test";
/// The challenge the memo below binds (see `rules`' `signed_tx_tests`).
const CHALLENGE_ID: &str = "d1pAw-OCELCL1t18fFRjPG727Zz_e08OTlvP1ldBphg";
const MEMO: B256 = b256!("ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040");
/// A 0x76 transaction paying 1 AlphaUSD to the recipient with that memo,
/// signed by `cast mktx` (dev account 0, chain 42431).
const TEMPO_TX: &str = "0x76f8f182a5bf843b9aca008504a817c800830186a0f87ef87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0800380809420c000000000000000000000000000000000000180c0b8417ad2868e85813db7e39f703dac3f48592875e6ca7f7dd233e6cfd0da152ab25b7ce1b4961f36f9a87f40b7e3f764531e1c51eae77589fe1c88b0e56957e9516d1b";
/// The same, one unit short.
const TEMPO_TX_SMALL: &str = "0x76f8f182a5bf843b9aca008504a817c800830186a0f87ef87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f423fef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0800380809420c000000000000000000000000000000000000180c0b841fbd949a16b37386116baccdb7cde951dc510763faa3273f34adfc3fc389737c17f31cda1f48249d4f12cb1dcaef789511371f26829e50552998ad74a24047fc91b";
const NOW: u64 = 1_795_272_000;
const GENOME: &str = "genome-1";
const LIMITS: Limits = Limits {
    min_record_ttl: Duration::from_secs(3_600),
    retry_window: Duration::from_secs(300),
    max_retries: 2,
};

fn policy(extra: serde_json::Value) -> SettlementPolicy {
    let mut v = json!({
        "chain_id": 42431, "realm": REALM,
        "recipient": format!("{RECIPIENT:#x}"),
        "assets": [format!("{ALPHA:#x}")],
        "default_price": {"asset": format!("{ALPHA:#x}"), "amount": "1000000"}
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    SettlementPolicy::from_value(Some(&v)).unwrap()
}

fn hash() -> TxHash {
    TxHash::from(B256::repeat_byte(1))
}

fn digest(key: &str) -> RequestDigest {
    RequestDigest::of(&RetryIdentity {
        scheme: Scheme::Payment,
        target: Some("GET /paid"),
        body_digest: None,
        challenge_id: Some(CHALLENGE_ID),
        key,
    })
}

/// A `Tempo` presentation of the hash, with an `Idempotency-Key` if `key`.
fn tempo(key: Option<&str>) -> SettleRequest {
    SettleRequest {
        hash: hash(),
        scheme: Scheme::Tempo,
        resource: Some("/paid".into()),
        request_digest: key.map(digest),
        binding: None,
        payer: PayerRule::Any,
        submit: None,
        sponsored: None,
    }
}

/// A `Payment` presentation bound to the challenge; pull mode with `raw`.
fn payment(key: Option<&str>, raw: Option<&str>) -> SettleRequest {
    SettleRequest {
        hash: hash(),
        scheme: Scheme::Payment,
        resource: Some("/paid".into()),
        request_digest: key.map(digest),
        binding: Some(Binding::new(REALM, CHALLENGE_ID)),
        payer: PayerRule::Any,
        submit: raw.map(|r| Bytes::from(hex::decode(r).unwrap())),
        sponsored: None,
    }
}

fn word(n: u64) -> Bytes {
    Bytes::from(U256::from(n).to_be_bytes::<32>().to_vec())
}

/// A mined receipt paying `amount` to the recipient, with the bound memo
/// when `memo`; `status` 1 is success.
fn receipt(amount: u64, memo: bool, status: u64) -> ChainFacts {
    let mut logs = vec![Log {
        address: ALPHA,
        topics: vec![TRANSFER_TOPIC, PAYER.into_word(), RECIPIENT.into_word()],
        data: word(amount),
        log_index: None,
        removed: None,
        block_timestamp: None,
    }];
    if memo {
        logs.push(Log {
            address: ALPHA,
            topics: vec![TRANSFER_WITH_MEMO_TOPIC, PAYER.into_word(), RECIPIENT.into_word(), MEMO],
            data: word(amount),
            log_index: None,
            removed: None,
            block_timestamp: None,
        });
    }
    ChainFacts {
        receipt: Some(Receipt {
            transaction_hash: B256::repeat_byte(1),
            status: Some(U64::from(status)),
            block_number: Some(U64::from(10)),
            block_hash: Some(B256::repeat_byte(7)),
            from: PAYER,
            logs,
            block_timestamp: Some(NOW - 5),
        }),
        block: None,
        head: Some(10),
    }
}

/// Where facts came from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A lookup that overlapped the request.
    Fresh,
    /// The hold window of an earlier lookup.
    Held,
    /// Another instance.
    Remote,
}

fn looked(facts: ChainFacts, from: Source) -> Event {
    Event::Looked(Ok(Looked {
        facts: Arc::new(facts),
        fresh: matches!(from, Source::Fresh),
        remote: matches!(from, Source::Remote),
    }))
}

/// Facts that settle `req` (the memo only matters to a `Payment`).
fn paid(req: &SettleRequest, from: Source) -> Event {
    looked(receipt(1_000_000, req.scheme == Scheme::Payment, 1), from)
}

/// Mined and successful, one unit short.
fn short(from: Source) -> Event {
    looked(receipt(999_999, true, 1), from)
}

fn reverted() -> Event {
    looked(receipt(1_000_000, true, 0), Source::Fresh)
}

fn not_visible(from: Source) -> Event {
    looked(
        ChainFacts {
            receipt: None,
            block: None,
            head: None,
        },
        from,
    )
}

/// The settlement `req` gets on facts that settle it.
fn settlement(req: &SettleRequest, p: &SettlementPolicy) -> Settlement {
    let facts = receipt(1_000_000, req.scheme == Scheme::Payment, 1);
    let terms = Terms {
        memo: memo_rule(p.memo, req.scheme, req.binding),
        payer: req.payer,
    };
    let Verdict::Settled(payment) = judge(&facts, p, &p.default_price, terms, NOW) else {
        panic!("the fixture does not settle")
    };
    Settlement::new(req.hash, req.scheme, &payment, GENOME)
}

/// The record `req` consumes with.
fn record(req: &SettleRequest, p: &SettlementPolicy) -> ReplayRecord {
    ReplayRecord {
        settlement: settlement(req, p),
        resource: req.resource.clone(),
        request_digest: req.request_digest,
        consumed_at: NOW,
        expires_at: NOW + record_ttl(p, LIMITS.min_record_ttl).as_secs(),
        route: Some(p.route_for(req.resource.as_deref())),
        instance: None,
        proof: false,
    }
}

fn consume(req: &SettleRequest, p: &SettlementPolicy) -> Step {
    Step::Consume(Box::new(record(req, p)))
}

/// The record of another request (no `Idempotency-Key`), or of the
/// request with key `key`.
fn stored(key: Option<&str>, p: &SettlementPolicy) -> Option<Arc<ReplayRecord>> {
    Some(Arc::new(record(&payment(key, None), p)))
}

fn count() -> Step {
    Step::CountRetry {
        ttl: LIMITS.retry_window + Duration::from_secs(60),
        cap: u64::from(LIMITS.max_retries) + 1,
    }
}

fn retried(req: &SettleRequest, p: &SettlementPolicy) -> Step {
    let mut s = settlement(req, p);
    s.idempotent_replay = true;
    Step::Answer(Answer::Settled(s))
}

fn denied(d: Denial) -> Step {
    Step::Answer(Answer::Denied(d))
}

fn store_down() -> Step {
    Step::Answer(Answer::Unavailable(Unavailable::Store(StoreError::Timeout)))
}

fn not_yet() -> Denial {
    Denial::Pending {
        reason: None,
        detail: "the transaction is not visible on chain yet; retry shortly".into(),
    }
}

fn lookup() -> Step {
    Step::Lookup { fresh_only: false }
}

fn again() -> Step {
    Step::Lookup { fresh_only: true }
}

fn rpc_error() -> RpcError {
    RpcError::Transport("reset".into())
}

struct Case {
    name: &'static str,
    policy: SettlementPolicy,
    req: SettleRequest,
    cached: Option<ReplayRecord>,
    first: Step,
    /// Each answer and the step the flow takes after it.
    script: Vec<(Event, Step)>,
}

fn run(case: Case) {
    let mut flow = Flow::new(
        &case.req,
        &case.policy,
        GENOME,
        case.policy.default_price.clone(),
        LIMITS,
    );
    assert_eq!(
        flow.start(case.cached.as_ref(), NOW),
        case.first,
        "{}: first step",
        case.name
    );
    for (i, (event, want)) in case.script.into_iter().enumerate() {
        assert_eq!(flow.on(event, NOW), want, "{}: the step after answer {i}", case.name);
    }
}

#[test]
fn every_branch_takes_its_step() {
    let p = policy(json!({}));
    let two = policy(json!({"min_confirmations": 2}));
    let tempo_ = tempo(None);
    let keyed = payment(Some("key-one-0123456789"), None);
    let plain = payment(None, None);
    let pull = payment(None, Some(TEMPO_TX));
    let sponsored = SettleRequest {
        sponsored: Some(crate::settle::Sponsored {
            sender: alloy_primitives::Address::repeat_byte(1),
            calls: vec![],
            gas: 100_000,
            max_fee: 2_000,
            fee_token: alloy_primitives::Address::repeat_byte(2),
            valid_before: 0,
            nonce_key: alloy_primitives::U256::MAX,
        }),
        ..payment(None, Some(TEMPO_TX))
    };
    let pull_keyed = payment(Some("key-one-0123456789"), Some(TEMPO_TX));
    let mine = stored(Some("key-one-0123456789"), &p);
    let theirs = stored(None, &p);
    let case = |name, policy: &SettlementPolicy, req: &SettleRequest, first, script| Case {
        name,
        policy: policy.clone(),
        req: req.clone(),
        cached: None,
        first,
        script,
    };
    let cached = |name, req: &SettleRequest, record: &Option<Arc<ReplayRecord>>, first, script| Case {
        name,
        policy: p.clone(),
        req: req.clone(),
        cached: record.as_deref().cloned(),
        first,
        script,
    };
    let cases = vec![
        // The consumed cache answers with no lookup.
        cached(
            "cached, another request",
            &plain,
            &theirs,
            denied(Denial::Replayed),
            vec![],
        ),
        cached(
            "cached, unkeyed retry is a replay",
            &plain,
            &mine,
            denied(Denial::Replayed),
            vec![],
        ),
        cached(
            "cached, a retry counted within the limit",
            &keyed,
            &mine,
            count(),
            vec![(Event::Counted(Ok(1)), retried(&keyed, &p))],
        ),
        cached(
            "cached, the last retry allowed",
            &keyed,
            &mine,
            count(),
            vec![(Event::Counted(Ok(2)), retried(&keyed, &p))],
        ),
        cached(
            "cached, a retry past the limit",
            &keyed,
            &mine,
            count(),
            vec![(Event::Counted(Ok(3)), denied(Denial::Replayed))],
        ),
        cached(
            "cached, a retry the store cannot count",
            &keyed,
            &mine,
            count(),
            vec![(Event::Counted(Err(StoreError::Timeout)), store_down())],
        ),
        // Fresh facts settle: the store decides who consumes.
        case(
            "fresh facts, consumed here",
            &p,
            &tempo_,
            lookup(),
            vec![
                (paid(&tempo_, Source::Fresh), consume(&tempo_, &p)),
                (
                    Event::Consumed(Ok(Consumed::Inserted)),
                    Step::Answer(Answer::Settled(settlement(&tempo_, &p))),
                ),
            ],
        ),
        case(
            "fresh facts, consumed by another request",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Fresh), consume(&plain, &p)),
                (
                    Event::Consumed(Ok(Consumed::Existing(theirs.clone().unwrap()))),
                    denied(Denial::Replayed),
                ),
            ],
        ),
        case(
            "fresh facts, consumed by this request before",
            &p,
            &keyed,
            lookup(),
            vec![
                (paid(&keyed, Source::Fresh), consume(&keyed, &p)),
                (Event::Consumed(Ok(Consumed::Existing(mine.clone().unwrap()))), count()),
                (Event::Counted(Ok(1)), retried(&keyed, &p)),
            ],
        ),
        case(
            "fresh facts, the store fails the consume",
            &p,
            &tempo_,
            lookup(),
            vec![
                (paid(&tempo_, Source::Fresh), consume(&tempo_, &p)),
                (Event::Consumed(Err(StoreError::Timeout)), store_down()),
            ],
        ),
        case(
            "the lookup fails",
            &p,
            &tempo_,
            lookup(),
            vec![(
                Event::Looked(Err(rpc_error())),
                Step::Answer(Answer::Unavailable(Unavailable::Rpc(rpc_error()))),
            )],
        ),
        // Another instance's record, read with the lookup's claim: answered
        // as the consumed cache answers.
        case(
            "consumed elsewhere, another request",
            &p,
            &plain,
            lookup(),
            vec![(
                Event::FoundConsumed(Ok(theirs.clone().unwrap())),
                denied(Denial::Replayed),
            )],
        ),
        case(
            "consumed elsewhere, a retry counted within the limit",
            &p,
            &keyed,
            lookup(),
            vec![
                (Event::FoundConsumed(Ok(mine.clone().unwrap())), count()),
                (Event::Counted(Ok(1)), retried(&keyed, &p)),
            ],
        ),
        case(
            "consumed elsewhere, a retry past the limit",
            &p,
            &keyed,
            lookup(),
            vec![
                (Event::FoundConsumed(Ok(mine.clone().unwrap())), count()),
                (Event::Counted(Ok(3)), denied(Denial::Replayed)),
            ],
        ),
        case(
            "consumed elsewhere, an unreadable record",
            &p,
            &tempo_,
            lookup(),
            vec![(
                Event::FoundConsumed(Err(StoreError::Corrupt("x".into()))),
                Step::Answer(Answer::Unavailable(Unavailable::Store(StoreError::Corrupt("x".into())))),
            )],
        ),
        case(
            "held facts settle, the fresh lookup finds it consumed elsewhere",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Held), Step::Follow),
                (Event::Followed(Ok(None)), again()),
                (
                    Event::FoundConsumed(Ok(theirs.clone().unwrap())),
                    denied(Denial::Replayed),
                ),
            ],
        ),
        // Held facts may refuse, never settle.
        case(
            "held facts settle: follow the consume here",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Held), Step::Follow),
                (Event::Followed(Ok(theirs.clone())), denied(Denial::Replayed)),
            ],
        ),
        case(
            "held facts settle: a followed consume of this request",
            &p,
            &keyed,
            lookup(),
            vec![
                (paid(&keyed, Source::Held), Step::Follow),
                (Event::Followed(Ok(mine.clone())), count()),
                (Event::Counted(Ok(1)), retried(&keyed, &p)),
            ],
        ),
        case(
            "held facts settle: nobody here consumes, ask afresh",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Held), Step::Follow),
                (Event::Followed(Ok(None)), again()),
                (paid(&plain, Source::Fresh), consume(&plain, &p)),
                (
                    Event::Consumed(Ok(Consumed::Inserted)),
                    Step::Answer(Answer::Settled(settlement(&plain, &p))),
                ),
            ],
        ),
        case(
            "held facts settle: the fresh lookup refuses",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Held), Step::Follow),
                (Event::Followed(Ok(None)), again()),
                (not_visible(Source::Fresh), denied(not_yet())),
            ],
        ),
        case(
            "held facts settle: the fresh lookup fails",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Held), Step::Follow),
                (Event::Followed(Ok(None)), again()),
                (
                    Event::Looked(Err(rpc_error())),
                    Step::Answer(Answer::Unavailable(Unavailable::Rpc(rpc_error()))),
                ),
            ],
        ),
        case(
            "held facts settle: the follow fails",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Held), Step::Follow),
                (Event::Followed(Err(StoreError::Timeout)), store_down()),
            ],
        ),
        case(
            "held facts refuse by themselves",
            &p,
            &plain,
            lookup(),
            vec![(not_visible(Source::Held), denied(not_yet()))],
        ),
        // Facts from another instance wait for its record.
        case(
            "remote facts settle: its record comes",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Remote), Step::Follow),
                (
                    Event::Followed(Ok(None)),
                    Step::AwaitRecord {
                        bound: REMOTE_CONSUME_WAIT,
                    },
                ),
                (Event::Awaited(Ok(theirs.clone())), denied(Denial::Replayed)),
            ],
        ),
        case(
            "remote facts settle: no record comes, ask afresh",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Remote), Step::Follow),
                (
                    Event::Followed(Ok(None)),
                    Step::AwaitRecord {
                        bound: REMOTE_CONSUME_WAIT,
                    },
                ),
                (Event::Awaited(Ok(None)), again()),
                (paid(&plain, Source::Fresh), consume(&plain, &p)),
            ],
        ),
        case(
            "remote facts settle: the wait fails",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Remote), Step::Follow),
                (
                    Event::Followed(Ok(None)),
                    Step::AwaitRecord {
                        bound: REMOTE_CONSUME_WAIT,
                    },
                ),
                (Event::Awaited(Err(StoreError::Timeout)), store_down()),
            ],
        ),
        case(
            "remote facts settle: followed here",
            &p,
            &plain,
            lookup(),
            vec![
                (paid(&plain, Source::Remote), Step::Follow),
                (Event::Followed(Ok(theirs.clone())), denied(Denial::Replayed)),
            ],
        ),
        case(
            "remote facts refuse",
            &p,
            &plain,
            lookup(),
            vec![(reverted_remote(), denied(Denial::Failed(Reason::TxReverted)))],
        ),
        // Refusals never consume; a mined one may have settled before.
        case(
            "mined, does not settle now, never consumed",
            &p,
            &plain,
            lookup(),
            vec![
                (short(Source::Fresh), Step::Recall),
                (
                    Event::Recalled(Ok(None)),
                    denied(Denial::Failed(Reason::InsufficientAmount)),
                ),
            ],
        ),
        case(
            "mined, does not settle now, consumed before",
            &p,
            &plain,
            lookup(),
            vec![
                (short(Source::Held), Step::Recall),
                (Event::Recalled(Ok(theirs.clone())), denied(Denial::Replayed)),
            ],
        ),
        case(
            "mined, does not settle now, this request's retry",
            &p,
            &keyed,
            lookup(),
            vec![
                (short(Source::Fresh), Step::Recall),
                (Event::Recalled(Ok(mine.clone())), count()),
                (Event::Counted(Ok(1)), retried(&keyed, &p)),
            ],
        ),
        case(
            "mined, does not settle now, store down, keyed: 503",
            &p,
            &keyed,
            lookup(),
            vec![
                (short(Source::Fresh), Step::Recall),
                (Event::Recalled(Err(StoreError::Timeout)), store_down()),
            ],
        ),
        case(
            "mined, does not settle now, store down, unkeyed: the failure",
            &p,
            &plain,
            lookup(),
            vec![
                (short(Source::Fresh), Step::Recall),
                (
                    Event::Recalled(Err(StoreError::Timeout)),
                    denied(Denial::Failed(Reason::InsufficientAmount)),
                ),
            ],
        ),
        case(
            "reverted: refused without the store",
            &p,
            &plain,
            lookup(),
            vec![(reverted(), denied(Denial::Failed(Reason::TxReverted)))],
        ),
        case(
            "not visible yet",
            &p,
            &plain,
            lookup(),
            vec![(not_visible(Source::Fresh), denied(not_yet()))],
        ),
        case(
            "too few confirmations",
            &two,
            &tempo_,
            lookup(),
            vec![(
                paid(&tempo_, Source::Fresh),
                denied(Denial::Pending {
                    reason: Some(Reason::InsufficientConfirmations),
                    detail: "the payment has 1 of 2 confirmations; retry shortly".into(),
                }),
            )],
        ),
        // Pull mode: judged, reserved, broadcast, read back directly.
        case(
            "pull: not a transaction",
            &p,
            &payment(None, Some("0xc0")),
            denied(Denial::MalformedCredential(
                signed_tx::decode(&[0xc0]).unwrap_err().to_string(),
            )),
            vec![],
        ),
        case(
            "pull: refused before its broadcast",
            &p,
            &payment(None, Some(TEMPO_TX_SMALL)),
            denied(Denial::Failed(Reason::InsufficientAmount)),
            vec![],
        ),
        case(
            "pull: broadcast here and settled",
            &p,
            &pull,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Broadcast(pull.submit.clone().unwrap())),
                (Event::Broadcast(Ok(Submitted::Accepted)), Step::LookupDirect),
                (paid(&pull, Source::Fresh), consume(&pull, &p)),
                (
                    Event::Consumed(Ok(Consumed::Inserted)),
                    Step::Answer(Answer::Settled(settlement(&pull, &p))),
                ),
            ],
        ),
        case(
            "pull: mined by the broadcast",
            &p,
            &pull,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Broadcast(pull.submit.clone().unwrap())),
                (Event::Broadcast(Ok(Submitted::Mined)), Step::LookupDirect),
                (not_visible(Source::Fresh), denied(not_yet())),
            ],
        ),
        case(
            "pull: another presentation broadcasts it",
            &p,
            &pull_keyed,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(false)), lookup()),
                (paid(&pull_keyed, Source::Held), Step::Follow),
                (Event::Followed(Ok(mine.clone())), count()),
                (Event::Counted(Ok(3)), denied(Denial::Replayed)),
            ],
        ),
        case(
            "pull: the reservation fails",
            &p,
            &pull,
            Step::Reserve,
            vec![(Event::Reserved(Err(StoreError::Timeout)), store_down())],
        ),
        case(
            "pull: the node refuses it and does not know it",
            &p,
            &pull,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Broadcast(pull.submit.clone().unwrap())),
                (
                    Event::Broadcast(Ok(Submitted::Rejected("nonce too low".into()))),
                    Step::Release,
                ),
                (Event::Released, Step::LookupDirect),
                (not_visible(Source::Fresh), denied(Denial::Failed(Reason::TxRejected))),
            ],
        ),
        case(
            "pull: the node refuses it but it was mined",
            &p,
            &pull,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Broadcast(pull.submit.clone().unwrap())),
                (Event::Broadcast(Ok(Submitted::Rejected("known".into()))), Step::Release),
                (Event::Released, Step::LookupDirect),
                (paid(&pull, Source::Fresh), consume(&pull, &p)),
            ],
        ),
        // Sponsored: simulated and its fee held before the broadcast.
        case(
            "sponsored: simulated, held, broadcast and settled",
            &p,
            &sponsored,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Sponsor),
                (
                    Event::Sponsored(Ok(())),
                    Step::Broadcast(sponsored.submit.clone().unwrap()),
                ),
                (Event::Broadcast(Ok(Submitted::Mined)), Step::LookupDirect),
                (paid(&sponsored, Source::Fresh), consume(&sponsored, &p)),
            ],
        ),
        case(
            "sponsored: refused before the broadcast gives the reservation back",
            &p,
            &sponsored,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Sponsor),
                (
                    Event::Sponsored(Err(Answer::Denied(Denial::Failed(Reason::WouldRevert)))),
                    Step::Release,
                ),
                (Event::Released, denied(Denial::Failed(Reason::WouldRevert))),
            ],
        ),
        case(
            "sponsored: another presentation broadcasts it, nothing held here",
            &p,
            &sponsored,
            Step::Reserve,
            vec![(Event::Reserved(Ok(false)), lookup())],
        ),
        case(
            "pull: the broadcast fails",
            &p,
            &pull,
            Step::Reserve,
            vec![
                (Event::Reserved(Ok(true)), Step::Broadcast(pull.submit.clone().unwrap())),
                (Event::Broadcast(Err(rpc_error())), Step::Release),
                (
                    Event::Released,
                    Step::Answer(Answer::Unavailable(Unavailable::Rpc(rpc_error()))),
                ),
            ],
        ),
    ];
    for c in cases {
        run(c);
    }
}

/// A flow over `req` that refuses the payers of `denied`.
fn deny_run(
    req: &SettleRequest,
    denied: &[Address],
    cached: Option<&ReplayRecord>,
    script: Vec<(Event, Step)>,
) -> Step {
    let p = policy(json!({}));
    let set: DenySet = denied.iter().copied().collect();
    let mut flow = Flow::new(req, &p, GENOME, p.default_price.clone(), LIMITS).denying(&set);
    let first = flow.start(cached, NOW);
    for (i, (event, want)) in script.into_iter().enumerate() {
        assert_eq!(flow.on(event, NOW), want, "the step after answer {i}");
    }
    first
}

#[test]
fn a_denied_payer_is_refused_after_the_facts_and_before_the_consume() {
    let p = policy(json!({}));
    let refused = denied(Denial::Failed(Reason::PayerDenied));
    // The facts name the payer: refused, no Consume step, nothing written.
    let req = tempo(None);
    assert_eq!(
        deny_run(&req, &[PAYER], None, vec![(paid(&req, Source::Fresh), refused.clone())]),
        lookup()
    );
    let req = payment(Some("key-one-0123456789"), None);
    assert_eq!(
        deny_run(&req, &[PAYER], None, vec![(paid(&req, Source::Fresh), refused.clone())]),
        lookup()
    );
    // Someone else denied: the payment settles as ever.
    let req = tempo(None);
    assert_eq!(
        deny_run(
            &req,
            &[RECIPIENT],
            None,
            vec![(paid(&req, Source::Fresh), consume(&req, &p))]
        ),
        lookup()
    );
    // Held facts follow, then the fresh ones refuse.
    assert_eq!(
        deny_run(
            &req,
            &[PAYER],
            None,
            vec![
                (paid(&req, Source::Held), Step::Follow),
                (Event::Followed(Ok(None)), again()),
                (paid(&req, Source::Fresh), refused.clone()),
            ]
        ),
        lookup()
    );
    // A payment that fails for its own reason says that reason.
    assert_eq!(
        deny_run(&req, &[PAYER], None, vec![(short(Source::Fresh), Step::Recall)]),
        lookup()
    );
}

#[test]
fn a_payment_consumed_before_the_denial_answers_as_before() {
    let p = policy(json!({}));
    let mine = payment(Some("key-one-0123456789"), None);
    let record = record(&mine, &p);
    // Its idempotent retry is still owed its 200 (it was paid for) ...
    assert_eq!(deny_run(&mine, &[PAYER], Some(&record), vec![]), count());
    // ... and anyone else's presentation is REPLAYED, as ever.
    assert_eq!(
        deny_run(&payment(None, None), &[PAYER], Some(&record), vec![]),
        denied(Denial::Replayed)
    );
}

#[test]
fn a_denied_signers_pull_mode_transaction_is_never_reserved_or_broadcast() {
    let pull = payment(None, Some(TEMPO_TX));
    assert_eq!(
        deny_run(&pull, &[PAYER], None, vec![]),
        denied(Denial::Failed(Reason::PayerDenied)),
        "refused before Reserve"
    );
    assert_eq!(deny_run(&pull, &[RECIPIENT], None, vec![]), Step::Reserve);
    // Its own failure first: one unit short is insufficient_amount.
    assert_eq!(
        deny_run(&payment(None, Some(TEMPO_TX_SMALL)), &[PAYER], None, vec![]),
        denied(Denial::Failed(Reason::InsufficientAmount))
    );
}

fn reverted_remote() -> Event {
    looked(receipt(1_000_000, true, 0), Source::Remote)
}

#[test]
#[should_panic(expected = "does not answer")]
fn an_answer_to_another_step_is_a_bug() {
    let p = policy(json!({}));
    let req = tempo(None);
    let mut flow = Flow::new(&req, &p, GENOME, p.default_price.clone(), LIMITS);
    assert_eq!(flow.start(None, NOW), lookup());
    flow.on(Event::Consumed(Ok(Consumed::Inserted)), NOW);
}

/// The replay store as one hash sees it, with `put_if_absent` semantics.
#[derive(Default)]
struct Store {
    /// The record, and which flow wrote it.
    record: Option<(Arc<ReplayRecord>, usize)>,
    retries: u64,
    reserved: bool,
}

impl Store {
    fn current(&self) -> Option<Arc<ReplayRecord>> {
        self.record.as_ref().map(|(r, _)| r.clone())
    }

    /// A read: the record, nothing known (a negative cache, another
    /// instance's record not seen yet) or a failure.
    fn read(&self, c: u8) -> Result<Option<Arc<ReplayRecord>>, StoreError> {
        match c % 3 {
            0 => Ok(self.current()),
            1 => Ok(None),
            _ => Err(StoreError::Timeout),
        }
    }
}

/// One request in flight.
struct Sim<'a> {
    flow: Flow<'a>,
    req: &'a SettleRequest,
    step: Option<Step>,
    answer: Option<Answer>,
    /// Its consume landed but the answer was lost.
    lost_reply: bool,
    steps: usize,
}

impl Sim<'_> {
    /// Carries out the pending step against `store`, answering as `c` picks.
    fn advance(&mut self, me: usize, c: u8, store: &mut Store) {
        let step = self.step.take().expect("a live flow has a step");
        let event = match step {
            Step::Answer(_) => unreachable!("answers are taken when they come"),
            Step::Reserve => Event::Reserved(if c % 5 == 4 {
                Err(StoreError::Timeout)
            } else {
                Ok(!std::mem::replace(&mut store.reserved, true))
            }),
            Step::Broadcast(_) => Event::Broadcast(match c % 4 {
                0 => Ok(Submitted::Accepted),
                1 => Ok(Submitted::Mined),
                2 => Ok(Submitted::Rejected("refused".into())),
                _ => Err(rpc_error()),
            }),
            Step::Release => {
                store.reserved = false;
                Event::Released
            }
            Step::Sponsor => Event::Sponsored(match c % 3 {
                0 => Err(Answer::Denied(Denial::Failed(Reason::WouldRevert))),
                _ => Ok(()),
            }),
            Step::Lookup { .. } | Step::LookupDirect => match c % 10 {
                0 | 1 => paid(self.req, Source::Fresh),
                2 => paid(self.req, Source::Held),
                3 => paid(self.req, Source::Remote),
                4 => not_visible(Source::Fresh),
                5 => short(Source::Fresh),
                6 => reverted(),
                // The claim read the record another flow wrote (only a
                // shared lookup reads it), or an unreadable one.
                8 if matches!(step, Step::Lookup { .. }) => match store.current() {
                    Some(record) => Event::FoundConsumed(Ok(record)),
                    None => paid(self.req, Source::Fresh),
                },
                9 if matches!(step, Step::Lookup { .. }) => {
                    Event::FoundConsumed(Err(StoreError::Corrupt("unreadable".into())))
                }
                _ => Event::Looked(Err(rpc_error())),
            },
            Step::Follow => Event::Followed(store.read(c)),
            Step::AwaitRecord { .. } => Event::Awaited(store.read(c)),
            Step::Recall => Event::Recalled(store.read(c)),
            Step::Consume(record) => {
                let lands = c % 5 != 4;
                let answer = match &store.record {
                    Some((existing, _)) => Ok(Consumed::Existing(existing.clone())),
                    None if lands => {
                        store.record = Some((Arc::new(*record), me));
                        Ok(Consumed::Inserted)
                    }
                    None => Err(StoreError::Connection("cut before the write".into())),
                };
                Event::Consumed(match answer {
                    // The write landed (or found the winner); its answer is lost.
                    Ok(inserted) if c % 5 == 3 => {
                        self.lost_reply |= inserted == Consumed::Inserted;
                        Err(StoreError::Timeout)
                    }
                    a => a,
                })
            }
            Step::CountRetry { cap, .. } => {
                store.retries = (store.retries + 1).min(cap);
                Event::Counted(if c % 4 == 3 {
                    Err(StoreError::Timeout)
                } else {
                    Ok(store.retries)
                })
            }
        };
        self.steps += 1;
        match self.flow.on(event, NOW) {
            Step::Answer(a) => self.answer = Some(a),
            next => self.step = Some(next),
        }
    }
}

/// Up to five presentations of one payment (a mix of keys, some pull mode),
/// a schedule of which one moves next and how the world answers it, then
/// every flow driven to its end with faithful answers.
/// Each presentation: which key (none, one, another) and whether pull mode.
type Who = Vec<(u8, bool)>;
/// Which live flow moves next, and how the world answers its step.
type Schedule = Vec<(u8, u8)>;

fn presentations() -> impl Strategy<Value = (Who, Schedule, u32)> {
    (
        prop::collection::vec((0u8..3, any::<bool>()), 2..=5),
        prop::collection::vec((any::<u8>(), any::<u8>()), 0..80),
        0u32..=2,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_interleaving_gives_two_200s_for_one_payment((who, schedule, max_retries) in presentations()) {
        let p = policy(json!({}));
        let limits = Limits { max_retries, ..LIMITS };
        let keys = [None, Some("key-one-0123456789"), Some("key-two-0123456789")];
        let reqs: Vec<SettleRequest> = who
            .iter()
            .map(|&(key, pull)| payment(keys[usize::from(key)], pull.then_some(TEMPO_TX)))
            .collect();
        let mut store = Store::default();
        let mut sims: Vec<Sim> = reqs
            .iter()
            .map(|req| {
                let mut flow = Flow::new(req, &p, GENOME, p.default_price.clone(), limits);
                let first = flow.start(None, NOW);
                let (step, answer) = match first {
                    Step::Answer(a) => (None, Some(a)),
                    s => (Some(s), None),
                };
                Sim { flow, req, step, answer, lost_reply: false, steps: 0 }
            })
            .collect();
        for (pick, c) in schedule {
            let live: Vec<usize> = (0..sims.len()).filter(|&i| sims[i].answer.is_none()).collect();
            let Some(&i) = live.get(usize::from(pick) % live.len().max(1)) else { break };
            sims[i].advance(i, c, &mut store);
        }
        // Then the world answers faithfully until every flow has answered.
        while let Some(i) = (0..sims.len()).find(|&i| sims[i].answer.is_none()) {
            sims[i].advance(i, 0, &mut store);
            prop_assert!(sims[i].steps < 32, "flow {i} does not end");
        }

        let mut consumed = 0;
        let mut retries = 0;
        for (i, sim) in sims.iter().enumerate() {
            let answer = sim.answer.as_ref().unwrap();
            let wrote = matches!(&store.record, Some((_, w)) if *w == i);
            if let Answer::Settled(s) = answer {
                // Every 200 is the store's record: this request's own, or a
                // retry of the request that wrote it.
                let (record, _) = store.record.as_ref().expect("a 200 with no record in the store");
                let mut original = s.clone();
                original.idempotent_replay = false;
                prop_assert_eq!(&original, &record.settlement);
                if s.idempotent_replay {
                    retries += 1;
                    prop_assert!(sim.req.request_digest.is_some());
                    prop_assert!(record.request_digest == sim.req.request_digest);
                } else {
                    consumed += 1;
                    prop_assert!(wrote, "flow {i} answered 200 for a record it did not write");
                }
            }
            // Only a 200 consumes; a consume whose answer was lost is the
            // one answer that may have consumed without a 200.
            if wrote && !sim.lost_reply {
                prop_assert!(matches!(answer, Answer::Settled(s) if !s.idempotent_replay),
                    "flow {i} consumed and answered {answer:?}");
            }
        }
        prop_assert!(consumed <= 1, "{consumed} requests consumed one payment");
        prop_assert!(retries <= max_retries, "{retries} retries let through, the limit is {max_retries}");
    }
}
