//! The settlement rules on hand-built receipts shaped like the dev chain's.

use alloy_primitives::{Address, B256, Bytes, U64, U256, address};
use serde_json::json;

use crate::policy::SettlementPolicy;
use crate::settlement::*;

const ALPHA: Address = address!("20c0000000000000000000000000000000000001");
const BETA: Address = address!("20c0000000000000000000000000000000000002");
const PAYER: Address = address!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266");
const RECIPIENT: Address = address!("70997970c51812dc3a010c7d01b50e0d17dc79c8");
const STRANGER: Address = address!("3c44cdddb6a900fa2b585dd299e03d12fa4293bc");
const NOW: u64 = 1_795_272_000;

fn policy(extra: serde_json::Value) -> SettlementPolicy {
    let mut v = json!({
        "chain_id": 42431, "realm": "Tempo API",
        "recipient": format!("{RECIPIENT:#x}"),
        "assets": [format!("{ALPHA:#x}")],
        "default_price": {"asset": format!("{ALPHA:#x}"), "amount": "1000000"}
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    SettlementPolicy::from_value(Some(&v)).unwrap()
}

fn topic(a: Address) -> B256 {
    a.into_word()
}

fn word(n: u64) -> Bytes {
    Bytes::from(U256::from(n).to_be_bytes::<32>().to_vec())
}

fn transfer(token: Address, from: Address, to: Address, amount: u64) -> Log {
    Log {
        address: token,
        topics: vec![TRANSFER_TOPIC, topic(from), topic(to)],
        data: word(amount),
        log_index: None,
        removed: None,
        block_timestamp: None,
    }
}

fn with_memo(token: Address, from: Address, to: Address, amount: u64, memo: B256) -> Log {
    Log {
        address: token,
        topics: vec![TRANSFER_WITH_MEMO_TOPIC, topic(from), topic(to), memo],
        data: word(amount),
        log_index: None,
        removed: None,
        block_timestamp: None,
    }
}

fn fee(amount: u64) -> Log {
    transfer(ALPHA, PAYER, FEE_MANAGER, amount)
}

const BLOCK_HASH: B256 = B256::repeat_byte(7);

/// A mined, successful receipt dated by its `blockTimestamp` (as Tempo
/// nodes give it), with no block read and no head.
fn facts(logs: Vec<Log>) -> ChainFacts {
    ChainFacts {
        receipt: Some(Receipt {
            transaction_hash: B256::repeat_byte(1),
            status: Some(U64::from(1)),
            block_number: Some(U64::from(10)),
            block_hash: Some(BLOCK_HASH),
            from: PAYER,
            logs,
            block_timestamp: Some(NOW - 5),
        }),
        block: None,
        head: None,
    }
}

fn set_ts(f: &mut ChainFacts, ts: u64) {
    f.receipt.as_mut().unwrap().block_timestamp = Some(ts);
}

fn judge_default(f: &ChainFacts) -> Verdict {
    let p = policy(json!({}));
    let price = p.price_for(None);
    judge(f, &p, &price, MemoRule::Any, NOW)
}

fn reason(v: Verdict) -> &'static str {
    match v {
        Verdict::Failed(r) => r.as_str(),
        Verdict::Settled(_) => "settled",
        Verdict::Pending(_) => "pending",
    }
}

#[test]
fn a_transfer_of_the_price_to_the_recipient_settles() {
    let Verdict::Settled(p) = judge_default(&facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000), fee(385)]))
    else {
        panic!()
    };
    assert_eq!(
        (p.payer, p.recipient, p.asset, p.amount, p.memo),
        (PAYER, RECIPIENT, ALPHA, U256::from(1_000_000), None)
    );
    assert_eq!((p.block_number, p.block_timestamp, p.chain_id), (10, NOW - 5, 42431));
}

#[test]
fn transfer_with_memo_counts_once_and_keeps_its_memo() {
    let memo = B256::repeat_byte(0xaa);
    let logs = vec![
        transfer(ALPHA, PAYER, RECIPIENT, 600_000),
        with_memo(ALPHA, PAYER, RECIPIENT, 600_000, memo),
        fee(385),
    ];
    let m = movements(&logs);
    assert_eq!(m.len(), 2, "the pair is one movement, the fee another");
    assert_eq!(m[0].memo, Some(memo));
    // 600k counted once is not 1.2M, even when summing is allowed
    let p = policy(json!({"allow_summed_transfers": true}));
    assert_eq!(
        reason(judge(&facts(logs.clone()), &p, &p.price_for(None), MemoRule::Any, NOW)),
        "insufficient_amount"
    );
    let big = vec![
        transfer(ALPHA, PAYER, RECIPIENT, 1_000_000),
        with_memo(ALPHA, PAYER, RECIPIENT, 1_000_000, memo),
    ];
    let Verdict::Settled(s) = judge_default(&facts(big)) else {
        panic!()
    };
    assert_eq!(s.memo, Some(memo));
}

#[test]
fn a_transaction_the_recipient_sent_is_no_payment() {
    // An escrow settlement: the escrow pays the recipient, who sent it.
    let escrow = address!("bded0d2bf404bdcba897a74e6657f1f12e5c6fb6");
    let mut f = facts(vec![transfer(ALPHA, escrow, RECIPIENT, 3_000_000)]);
    assert_eq!(reason(judge_default(&f)), "settled");
    f.receipt.as_mut().unwrap().from = RECIPIENT;
    assert_eq!(reason(judge_default(&f)), "payer_mismatch");
}

#[test]
fn the_fee_transfer_is_not_a_payment() {
    // A payment whose recipient is the fee manager can never be configured,
    // and the fee transfer alone is not a transfer.
    assert_eq!(reason(judge_default(&facts(vec![fee(2_000_000)]))), "no_transfer");
}

#[test]
fn a_look_alike_token_is_the_wrong_asset() {
    // Same event, same recipient, same amount, emitted by another contract.
    let evil = address!("5fbdb2315678afecb367f032d93f642f64180aa3");
    assert_eq!(
        reason(judge_default(&facts(vec![
            transfer(evil, PAYER, RECIPIENT, 5_000_000),
            fee(385)
        ]))),
        "wrong_asset"
    );
    assert_eq!(
        reason(judge_default(&facts(vec![transfer(BETA, PAYER, RECIPIENT, 5_000_000)]))),
        "wrong_asset"
    );
}

#[test]
fn reasons_are_the_closest_to_success() {
    assert_eq!(reason(judge_default(&facts(vec![]))), "no_transfer");
    assert_eq!(
        reason(judge_default(&facts(vec![transfer(ALPHA, PAYER, STRANGER, 5_000_000)]))),
        "wrong_recipient"
    );
    assert_eq!(
        reason(judge_default(&facts(vec![
            transfer(ALPHA, PAYER, STRANGER, 5_000_000),
            transfer(ALPHA, PAYER, RECIPIENT, 999_999)
        ]))),
        "insufficient_amount"
    );
    // one good transfer among bad ones settles
    let logs = vec![
        transfer(BETA, PAYER, RECIPIENT, 9),
        transfer(ALPHA, PAYER, RECIPIENT, 1),
        transfer(ALPHA, PAYER, RECIPIENT, 1_000_000),
    ];
    assert_eq!(reason(judge_default(&facts(logs))), "settled");
}

#[test]
fn summing_is_a_policy_choice_and_never_across_payers() {
    let logs = vec![
        transfer(ALPHA, PAYER, RECIPIENT, 500_000),
        transfer(ALPHA, PAYER, RECIPIENT, 500_000),
    ];
    assert_eq!(reason(judge_default(&facts(logs.clone()))), "insufficient_amount");
    let p = policy(json!({"allow_summed_transfers": true}));
    let Verdict::Settled(s) = judge(&facts(logs), &p, &p.price_for(None), MemoRule::Any, NOW) else {
        panic!()
    };
    assert_eq!(s.amount, U256::from(1_000_000));
    let mixed = vec![
        transfer(ALPHA, PAYER, RECIPIENT, 500_000),
        transfer(ALPHA, STRANGER, RECIPIENT, 500_000),
    ];
    assert_eq!(
        reason(judge(&facts(mixed), &p, &p.price_for(None), MemoRule::Any, NOW)),
        "insufficient_amount"
    );
}

#[test]
fn reverted_unknown_and_pending() {
    let mut f = facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)]);
    f.receipt.as_mut().unwrap().status = Some(U64::ZERO);
    assert_eq!(reason(judge_default(&f)), "tx_reverted");
    assert!(!f.mined_successfully());
    let mut f = facts(vec![]);
    f.receipt = None;
    assert_eq!(judge_default(&f), Verdict::Pending(Pending::NotVisible));
    assert!(!f.mined_successfully());
    // a receipt without a block (a pending transaction on some nodes)
    let mut f = facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)]);
    f.receipt.as_mut().unwrap().block_number = None;
    assert_eq!(judge_default(&f), Verdict::Pending(Pending::NotVisible));
    assert!(facts(vec![]).mined_successfully());
}

#[test]
fn the_block_time_comes_from_the_receipt_its_logs_or_a_matching_block() {
    let pay = || transfer(ALPHA, PAYER, RECIPIENT, 1_000_000);
    let mut f = facts(vec![pay()]);
    assert!(!f.needs_block());
    assert_eq!(f.block_timestamp(), Some(NOW - 5));

    // no timestamp on the receipt: the logs' (all the same) will do
    f.receipt.as_mut().unwrap().block_timestamp = None;
    assert!(f.needs_block());
    let mut dated = pay();
    dated.block_timestamp = Some(NOW - 7);
    f.receipt.as_mut().unwrap().logs = vec![dated.clone(), dated.clone()];
    assert!(!f.needs_block());
    assert_eq!(f.block_timestamp(), Some(NOW - 7));
    // logs that disagree date nothing
    let mut other = dated.clone();
    other.block_timestamp = Some(NOW - 8);
    f.receipt.as_mut().unwrap().logs = vec![dated, other];
    assert_eq!(f.block_timestamp(), None);
    assert_eq!(judge_default(&f), Verdict::Pending(Pending::NotVisible));

    // nothing on the receipt: a block read, only if it is the receipt's block
    let mut f = facts(vec![pay()]);
    f.receipt.as_mut().unwrap().block_timestamp = None;
    assert_eq!(judge_default(&f), Verdict::Pending(Pending::NotVisible), "undated");
    f.block = Some(BlockHeader {
        number: U64::from(10),
        hash: BLOCK_HASH,
        timestamp: U64::from(NOW - 9),
    });
    assert_eq!(f.block_timestamp(), Some(NOW - 9));
    assert_eq!(reason(judge_default(&f)), "settled");
    f.block.as_mut().unwrap().hash = B256::repeat_byte(9);
    assert_eq!(
        judge_default(&f),
        Verdict::Pending(Pending::NotVisible),
        "a reorg between the reads"
    );
    f.block.as_mut().unwrap().hash = BLOCK_HASH;
    f.block.as_mut().unwrap().number = U64::from(11);
    assert_eq!(judge_default(&f), Verdict::Pending(Pending::NotVisible));
}

#[test]
fn the_age_window_allows_skew_and_refuses_the_future() {
    let p = policy(json!({"max_age_seconds": 300, "clock_skew_seconds": 30}));
    let at = |ts: u64| {
        let mut f = facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)]);
        set_ts(&mut f, ts);
        reason(judge(&f, &p, &p.price_for(None), MemoRule::Any, NOW))
    };
    assert_eq!(at(NOW - 330), "settled");
    assert_eq!(at(NOW - 331), "expired");
    assert_eq!(at(NOW + 30), "settled");
    assert_eq!(at(NOW + 31), "future_timestamp");
    assert_eq!(at(0), "expired");
}

#[test]
fn confirmations_come_from_the_head_and_missing_ones_are_pending() {
    assert!(!needs_head(&policy(json!({}))), "one confirmation: the mined receipt");
    let p = policy(json!({"min_confirmations": 3}));
    assert!(needs_head(&p));
    let mut f = facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)]);
    // no head read: a mined receipt counts as one confirmation, not three
    assert_eq!(
        judge(&f, &p, &p.price_for(None), MemoRule::Any, NOW),
        Verdict::Pending(Pending::Confirmations { have: 1, need: 3 })
    );
    f.head = Some(11);
    assert_eq!(
        judge(&f, &p, &p.price_for(None), MemoRule::Any, NOW),
        Verdict::Pending(Pending::Confirmations { have: 2, need: 3 })
    );
    f.head = Some(12);
    assert_eq!(reason(judge(&f, &p, &p.price_for(None), MemoRule::Any, NOW)), "settled");
    f.head = Some(5); // a lagging head never underflows into a huge count
    assert!(matches!(
        judge(&f, &p, &p.price_for(None), MemoRule::Any, NOW),
        Verdict::Pending(_)
    ));
}

#[test]
fn memo_rules() {
    let memo = B256::repeat_byte(0x42);
    let plain = facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)]);
    let memoed = facts(vec![
        transfer(ALPHA, PAYER, RECIPIENT, 1_000_000),
        with_memo(ALPHA, PAYER, RECIPIENT, 1_000_000, memo),
    ]);
    let p = policy(json!({}));
    let price = p.price_for(None);
    assert_eq!(
        reason(judge(&plain, &p, &price, MemoRule::Required, NOW)),
        "memo_mismatch"
    );
    assert_eq!(reason(judge(&memoed, &p, &price, MemoRule::Required, NOW)), "settled");
    assert_eq!(
        reason(judge(&memoed, &p, &price, MemoRule::Unsatisfiable, NOW)),
        "memo_mismatch"
    );
}

fn bound_facts(memo: B256, from: Address, amount: u64) -> ChainFacts {
    facts(vec![
        transfer(ALPHA, from, RECIPIENT, amount),
        with_memo(ALPHA, from, RECIPIENT, amount, memo),
    ])
}

#[test]
fn challenge_bound_memos() {
    use crate::mpp::Binding;
    let p = policy(json!({}));
    let price = p.price_for(None);
    let binding = Binding::new("Tempo API", "challenge-1");
    let bound = MemoRule::Bound(binding);
    assert_eq!(
        reason(judge(
            &bound_facts(binding.memo(), PAYER, 1_000_000),
            &p,
            &price,
            bound,
            NOW
        )),
        "settled"
    );
    // Another challenge's memo, another realm's, a non-MPP memo, no memo.
    for memo in [
        Binding::new("Tempo API", "challenge-2").memo(),
        Binding::new("Other API", "challenge-1").memo(),
        B256::repeat_byte(0x42),
    ] {
        assert_eq!(
            reason(judge(&bound_facts(memo, PAYER, 1_000_000), &p, &price, bound, NOW)),
            "memo_mismatch"
        );
    }
    let plain = facts(vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)]);
    assert_eq!(reason(judge(&plain, &p, &price, bound, NOW)), "memo_mismatch");
    // Too little is said first, whatever the memo.
    assert_eq!(
        reason(judge(
            &bound_facts(binding.memo(), PAYER, 999_999),
            &p,
            &price,
            bound,
            NOW
        )),
        "insufficient_amount"
    );

    // The memo rule a scheme gets.
    use crate::policy::MemoPolicy;
    use crate::replay::Scheme;
    for policy in [MemoPolicy::Optional, MemoPolicy::Required, MemoPolicy::ChallengeBound] {
        assert_eq!(memo_rule(policy, Scheme::Payment, Some(binding)), bound);
        assert_eq!(memo_rule(policy, Scheme::Payment, None), MemoRule::Unsatisfiable);
    }
    assert_eq!(memo_rule(MemoPolicy::Optional, Scheme::Tempo, None), MemoRule::Any);
    assert_eq!(memo_rule(MemoPolicy::Required, Scheme::Tempo, None), MemoRule::Required);
    assert_eq!(
        memo_rule(MemoPolicy::ChallengeBound, Scheme::Tempo, None),
        MemoRule::Unsatisfiable
    );
}

/// A payment made for a Payment challenge is never redeemed under the
/// Tempo scheme, whatever the genome's memo rule: its memo says so, and
/// whoever watched the chain could otherwise take it first.
#[test]
fn the_tempo_scheme_refuses_a_payment_bound_to_a_challenge() {
    use crate::mpp::Binding;
    let p = policy(json!({}));
    let price = p.price_for(None);
    let mpp = Binding::new("Tempo API", "challenge-1").memo();
    let other_realm = Binding::new("Other API", "challenge-1").memo();
    for rule in [MemoRule::Any, MemoRule::Required] {
        for memo in [mpp, other_realm] {
            assert_eq!(
                reason(judge(&bound_facts(memo, PAYER, 1_000_000), &p, &price, rule, NOW)),
                "memo_mismatch",
                "{rule:?}"
            );
        }
        // a plain transfer beside the bound one does not help: the hash is
        // the Payment payer's credential
        let mixed = facts(vec![
            transfer(ALPHA, PAYER, RECIPIENT, 1_000_000),
            with_memo(ALPHA, PAYER, RECIPIENT, 1, mpp),
        ]);
        assert_eq!(
            reason(judge(&mixed, &p, &price, rule, NOW)),
            "memo_mismatch",
            "{rule:?}"
        );
        // a memo that is not an MPP attribution still pays
        assert_eq!(
            reason(judge(
                &bound_facts(B256::repeat_byte(0x42), PAYER, 1_000_000),
                &p,
                &price,
                rule,
                NOW
            )),
            "settled",
            "{rule:?}"
        );
    }
    // the Payment scheme bound to that challenge still settles it
    let binding = Binding::new("Tempo API", "challenge-1");
    assert_eq!(
        reason(judge(
            &bound_facts(mpp, PAYER, 1_000_000),
            &p,
            &price,
            MemoRule::Bound(binding),
            NOW
        )),
        "settled"
    );
}

#[test]
fn payer_rules() {
    use crate::mpp::Binding;
    let p = policy(json!({}));
    let price = p.price_for(None);
    let binding = Binding::new("Tempo API", "challenge-1");
    let terms = |payer| Terms {
        memo: MemoRule::Bound(binding),
        payer,
    };
    let by_payer = bound_facts(binding.memo(), PAYER, 1_000_000);
    assert_eq!(
        reason(judge(&by_payer, &p, &price, terms(PayerRule::Is(PAYER)), NOW)),
        "settled"
    );
    assert_eq!(
        reason(judge(&by_payer, &p, &price, terms(PayerRule::Sender), NOW)),
        "settled"
    );
    assert_eq!(
        reason(judge(&by_payer, &p, &price, terms(PayerRule::Is(STRANGER)), NOW)),
        "payer_mismatch"
    );
    // The transfer's `from` is not the transaction's sender (the receipt's
    // `from` is PAYER): a sponsored or batched call moving a stranger's funds.
    let by_stranger = bound_facts(binding.memo(), STRANGER, 1_000_000);
    assert_eq!(
        reason(judge(&by_stranger, &p, &price, terms(PayerRule::Sender), NOW)),
        "payer_mismatch"
    );
    assert_eq!(
        reason(judge(&by_stranger, &p, &price, terms(PayerRule::Is(STRANGER)), NOW)),
        "settled"
    );
    assert_eq!(
        reason(judge(&by_stranger, &p, &price, terms(PayerRule::Any), NOW)),
        "settled"
    );
    // Too little from the wrong payer is too little.
    assert_eq!(
        reason(judge(
            &bound_facts(binding.memo(), STRANGER, 5),
            &p,
            &price,
            terms(PayerRule::Sender),
            NOW
        )),
        "insufficient_amount"
    );
}

#[test]
fn malformed_and_removed_logs_are_not_movements() {
    let mut short = transfer(ALPHA, PAYER, RECIPIENT, 1_000_000);
    short.topics.pop();
    let mut dirty_topic = transfer(ALPHA, PAYER, RECIPIENT, 1_000_000);
    dirty_topic.topics[2] = B256::repeat_byte(0xff);
    let mut removed = transfer(ALPHA, PAYER, RECIPIENT, 1_000_000);
    removed.removed = Some(true);
    let mut long_data = transfer(ALPHA, PAYER, RECIPIENT, 1_000_000);
    long_data.data = Bytes::from(vec![0u8; 64]);
    assert!(movements(&[short, dirty_topic, removed, long_data]).is_empty());
}

#[test]
fn a_dev_chain_receipt_with_unknown_fields_decodes() {
    // Abbreviated from a real `anvil --network tempo` receipt (type 0x76,
    // feePayer, feeToken, blockTimestamp are not ours to know).
    let json = json!({
        "type": "0x76", "status": "0x1", "transactionHash": format!("{:#x}", B256::repeat_byte(1)),
        "from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "to": null,
        "blockNumber": "0x1", "blockHash": format!("{:#x}", B256::repeat_byte(2)), "blockTimestamp": 1795271973,
        "feePayer": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "feeToken": "0x20c0000000000000000000000000000000000001",
        "logs": [{"address": "0x20c0000000000000000000000000000000000001",
                  "topics": [format!("{TRANSFER_TOPIC:#x}"), format!("{:#x}", topic(PAYER)), format!("{:#x}", topic(RECIPIENT))],
                  "data": format!("0x{}", hex::encode(U256::from(1_000_000).to_be_bytes::<32>())), "logIndex": "0x0", "removed": false,
                  "blockTimestamp": 1795271973}]
    });
    let r: Receipt = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(movements(&r.logs)[0].amount, U256::from(1_000_000));
    assert_eq!(r.block_timestamp, Some(1795271973));
    assert_eq!(r.logs[0].block_timestamp, Some(1795271973));
    // as a hex quantity (the logs' form on the dev chain) too
    let mut hexed = json.clone();
    hexed["blockTimestamp"] = json!("0x6b105896");
    let r: Receipt = serde_json::from_value(hexed).unwrap();
    assert_eq!(r.block_timestamp, Some(0x6b105896));
    for bad in [
        json!("0x"),
        json!("1795271973"),
        json!("0xzz"),
        json!(-1),
        json!("0x10000000000000000"),
    ] {
        let mut v = json.clone();
        v["blockTimestamp"] = bad.clone();
        assert!(serde_json::from_value::<Receipt>(v).is_err(), "{bad}");
    }
    // What one instance shares with the others reads back the same.
    let facts = ChainFacts {
        receipt: Some(serde_json::from_value(json).unwrap()),
        block: Some(BlockHeader {
            number: U64::from(1),
            hash: B256::repeat_byte(2),
            timestamp: U64::from(1795271973),
        }),
        head: Some(7),
    };
    let shared = serde_json::to_string(&facts).unwrap();
    assert_eq!(serde_json::from_str::<ChainFacts>(&shared).unwrap(), facts);
    assert_eq!(
        serde_json::from_str::<ChainFacts>(&serde_json::to_string(&ChainFacts::default()).unwrap()).unwrap(),
        ChainFacts::default()
    );
}

#[test]
fn no_transfer_pays_a_free_route() {
    let p = policy(json!({"prices": [{"resource": "GET /free", "amount": "0"}]}));
    let free = p.price_for(Some("GET /free"));
    assert!(free.amount.is_zero());
    for logs in [
        vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)],
        vec![transfer(ALPHA, PAYER, RECIPIENT, 0)],
        vec![],
    ] {
        assert_eq!(
            reason(judge(&facts(logs), &p, &free, MemoRule::Any, NOW)),
            "proof_required"
        );
    }
}

const SPLIT_A: Address = address!("90f79bf6eb2c4f870365e785982e1f101e93b906");
const SPLIT_B: Address = address!("15d34aaf54267db7d7c367839aaf71a00a2c6a65");
const MEMO_B: B256 = B256::repeat_byte(0xbe);

/// 1 AlphaUSD at `GET /split`: 200000 to A, 50000 to B with `MEMO_B`, so
/// 750000 to the recipient.
fn split_policy() -> SettlementPolicy {
    policy(
        json!({"prices": [{"resource": "GET /split", "amount": "1000000", "splits": [
            {"recipient": format!("{SPLIT_A:#x}"), "amount": "200000"},
            {"recipient": format!("{SPLIT_B:#x}"), "amount": "50000", "memo": format!("{MEMO_B:#x}")},
        ]}]}),
    )
}

fn judge_split(logs: Vec<Log>, terms: impl Into<Terms>) -> Verdict {
    let p = split_policy();
    let price = p.price_for(Some("GET /split"));
    assert_eq!(price.primary_amount(), U256::from(750_000));
    judge(&facts(logs), &p, &price, terms, NOW)
}

/// `transferWithMemo`'s two logs.
fn memo_pair(to: Address, amount: u64, memo: B256) -> [Log; 2] {
    [
        transfer(ALPHA, PAYER, to, amount),
        with_memo(ALPHA, PAYER, to, amount, memo),
    ]
}

fn legs(primary: u64, a: u64, b: u64) -> Vec<Log> {
    let mut logs = vec![
        transfer(ALPHA, PAYER, RECIPIENT, primary),
        transfer(ALPHA, PAYER, SPLIT_A, a),
    ];
    logs.extend(memo_pair(SPLIT_B, b, MEMO_B));
    logs.push(fee(385));
    logs
}

#[test]
fn every_split_paid_beside_the_rest_settles_in_any_order() {
    let Verdict::Settled(p) = judge_split(legs(750_000, 200_000, 50_000), MemoRule::Any) else {
        panic!()
    };
    // the recipient's leg, and what the payer paid in all
    assert_eq!(
        (p.payer, p.recipient, p.amount),
        (PAYER, RECIPIENT, U256::from(1_000_000))
    );
    let mut reversed = legs(750_000, 200_000, 50_000);
    reversed.pop();
    let b = reversed.split_off(2);
    let reversed: Vec<Log> = b.into_iter().chain(reversed.into_iter().rev()).collect();
    assert_eq!(reason(judge_split(reversed, MemoRule::Any)), "settled");
    // overpaying a leg is the payer's loss, not a failure
    let Verdict::Settled(p) = judge_split(legs(750_000, 250_000, 50_000), MemoRule::Any) else {
        panic!()
    };
    assert_eq!(p.amount, U256::from(1_050_000));
    // the Payment scheme's bound memo is on the recipient's leg
    let binding = crate::mpp::Binding::new("Tempo API", "challenge-1");
    let mut logs = memo_pair(RECIPIENT, 750_000, binding.memo()).to_vec();
    logs.push(transfer(ALPHA, PAYER, SPLIT_A, 200_000));
    logs.extend(memo_pair(SPLIT_B, 50_000, MEMO_B));
    let terms = Terms {
        memo: MemoRule::Bound(binding),
        payer: PayerRule::Is(PAYER),
    };
    assert_eq!(reason(judge_split(logs, terms)), "settled");
}

#[test]
fn a_split_short_missing_misdirected_or_without_its_memo_is_refused() {
    // short
    assert_eq!(
        reason(judge_split(legs(750_000, 199_999, 50_000), MemoRule::Any)),
        "split_short"
    );
    assert_eq!(
        reason(judge_split(legs(750_000, 200_000, 49_999), MemoRule::Any)),
        "split_short"
    );
    // missing: only the recipient paid, even the whole price
    assert_eq!(
        reason(judge_split(
            vec![transfer(ALPHA, PAYER, RECIPIENT, 1_000_000)],
            MemoRule::Any
        )),
        "split_missing"
    );
    let mut no_b = legs(750_000, 200_000, 50_000);
    no_b.drain(2..4);
    assert_eq!(reason(judge_split(no_b, MemoRule::Any)), "split_missing");
    // to the wrong address, or in another token
    let mut wrong = legs(750_000, 200_000, 50_000);
    wrong[1] = transfer(ALPHA, PAYER, STRANGER, 200_000);
    assert_eq!(reason(judge_split(wrong, MemoRule::Any)), "split_missing");
    let mut beta = legs(750_000, 200_000, 50_000);
    beta[1] = transfer(BETA, PAYER, SPLIT_A, 200_000);
    assert_eq!(reason(judge_split(beta, MemoRule::Any)), "split_missing");
    // B's memo: absent (a plain transfer), or another one
    let mut plain_b = legs(750_000, 200_000, 50_000);
    plain_b.remove(3);
    assert_eq!(reason(judge_split(plain_b, MemoRule::Any)), "memo_mismatch");
    let mut other_memo = legs(750_000, 200_000, 50_000);
    other_memo[3] = with_memo(ALPHA, PAYER, SPLIT_B, 50_000, B256::repeat_byte(1));
    assert_eq!(reason(judge_split(other_memo, MemoRule::Any)), "memo_mismatch");
    // a split paid by a stranger in the same transaction
    let mut strangers = legs(750_000, 0, 50_000);
    strangers[1] = transfer(ALPHA, STRANGER, SPLIT_A, 200_000);
    assert_eq!(reason(judge_split(strangers, MemoRule::Any)), "payer_mismatch");
    // the recipient's own leg short comes first
    assert_eq!(
        reason(judge_split(legs(749_999, 200_000, 50_000), MemoRule::Any)),
        "insufficient_amount"
    );
    // a split's transfer does not count for the recipient, nor the
    // recipient's for a split
    assert_eq!(
        reason(judge_split(
            vec![
                transfer(ALPHA, PAYER, SPLIT_A, 1_000_000),
                transfer(ALPHA, PAYER, RECIPIENT, 750_000)
            ],
            MemoRule::Any
        )),
        "split_missing"
    );
}
