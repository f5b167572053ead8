//! A `Payment` credential of intent `session`, its JSON fuzzed directly:
//! through `parse_any_credential`, then what a parsed action feeds (the
//! voucher's recovery, the open / topUp judgement, the accounting
//! decision). Nothing panics, a refusal says why briefly, and what parses
//! is canonical: the channel id and signature re-parse from their display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::mpp::{AnyCredential, MAX_DETAIL_CHARS, b64_encode, parse_any_credential};
use settlegate_rules::primitives::Address;
use settlegate_rules::session::{
    Action, ChannelId, ChannelState, Decision, Domain, Expected, OnChain, Terms, Voucher, VoucherSignature, decide,
    judge_open, judge_top_up,
};

const PAYEE: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
const TOKEN: &str = "0x20c0000000000000000000000000000000000001";
const ESCROW: &str = "0xe1c4d3dce17bc111181ddf716f75bae49e61a336";

/// The seeds' payee, token and escrow (fuzz/corpus/session_credential), so
/// the seed `open` reaches a judged channel.
fn addr(s: &str) -> Address {
    // unwrap: constant, valid addresses.
    s.parse().unwrap()
}

fn check_voucher(v: &Voucher) {
    let shown = v.channel_id.to_string();
    assert_eq!(shown.parse::<ChannelId>().ok(), Some(v.channel_id));
    assert_eq!(shown, shown.to_lowercase());
    assert_eq!(
        VoucherSignature::parse_hex(&v.signature.to_hex()).ok(),
        Some(v.signature)
    );
    let domain = Domain {
        chain_id: 42431,
        escrow: addr(ESCROW),
    };
    let Ok(signer) = domain.recover(v) else { return };
    let chain = OnChain {
        finalized: false,
        close_requested_at: 0,
        payer: signer,
        payee: addr(PAYEE),
        token: addr(TOKEN),
        authorized_signer: Address::ZERO,
        deposit: u128::MAX,
        settled: 0,
    };
    let state = ChannelState::fresh(chain, 0);
    let terms = Terms { price: 1, min_delta: 1 };
    match decide(&state, v, signer, &terms) {
        Decision::Serve { state: s, .. } => assert!(s.spent <= s.accepted && s.accepted >= state.accepted),
        Decision::AcceptOnly { state: s, .. } => assert!(s.accepted > state.accepted && s.spent == state.spent),
        Decision::Refuse(p) => assert!(p.status() == 402 || p.status() == 410),
    }
}

fuzz_target!(|data: &[u8]| {
    let expected = Expected {
        chain_id: 42431,
        escrow: addr(ESCROW),
        payee: addr(PAYEE),
        token: addr(TOKEN),
        min_deposit: 1,
    };
    match parse_any_credential(&b64_encode(data)) {
        Ok(AnyCredential::Session { action, .. }) => match &action {
            Action::Voucher(v) | Action::Close(v) => check_voucher(v),
            Action::Open(o) => {
                check_voucher(&o.voucher);
                if let Ok(facts) = judge_open(&o.transaction, o, &expected) {
                    assert_eq!(facts.channel_id, o.channel_id, "an open judged to another channel");
                    assert!(facts.deposit >= expected.min_deposit);
                }
            }
            Action::TopUp(t) => {
                let _ = judge_top_up(&t.transaction, &t.channel_id, t.additional_deposit, &expected);
            }
        },
        Ok(AnyCredential::Charge(_)) => {}
        Err(e) => {
            let m = e.to_string();
            assert!(!m.is_empty(), "a refusal says why");
            assert!(
                m.chars().count() <= 100 + MAX_DETAIL_CHARS,
                "{} chars: {m}",
                m.chars().count()
            );
        }
    }
});
