//! Any JSON a node (or another instance, through Redis) could hand back as
//! the facts of a lookup: decoded as `ChainFacts`, then judged under a
//! fixed policy. Nothing panics, and a settled verdict is always a transfer
//! of at least the price, in the policy's token, to its recipient, on its
//! chain, from a receipt that succeeded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::replay::Scheme;
use settlegate_rules::settlement::{ChainFacts, Receipt, Verdict, judge, memo_rule};

const NOW: u64 = 1_795_272_000;

fn policy() -> SettlementPolicy {
    let v = serde_json::json!({
        "chain_id": 42431, "realm": "Tempo API",
        "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
        "assets": ["0x20c0000000000000000000000000000000000001"],
        "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"}
    });
    SettlementPolicy::from_value(Some(&v)).unwrap()
}

fuzz_target!(|data: &[u8]| {
    // A bare receipt is what eth_getTransactionReceipt answers.
    let facts = match serde_json::from_slice::<ChainFacts>(data) {
        Ok(f) => f,
        Err(_) => match serde_json::from_slice::<Receipt>(data) {
            Ok(r) => ChainFacts {
                receipt: Some(r),
                ..Default::default()
            },
            Err(_) => return,
        },
    };
    let policy = policy();
    let price = policy.price_for(None);
    let terms = memo_rule(policy.memo, Scheme::Tempo, None);
    if let Verdict::Settled(p) = judge(&facts, &policy, &price, terms, NOW) {
        let receipt = facts.receipt.as_ref().unwrap();
        assert_eq!(
            receipt.status.map(|s| s.to::<u64>()),
            Some(1),
            "settled on a receipt that did not succeed"
        );
        assert_eq!(p.recipient, policy.recipient);
        assert_eq!(p.asset, price.asset);
        assert!(p.amount >= price.amount.value());
        assert_eq!(p.chain_id, policy.chain_id);
        assert!(p.block_timestamp <= NOW + policy.clock_skew_seconds);
    }
    // What one instance shares with the others reads back the same.
    let shared = serde_json::to_string(&facts).unwrap();
    assert_eq!(serde_json::from_str::<ChainFacts>(&shared).unwrap(), facts);
});
