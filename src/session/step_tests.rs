//! The session steps as a table of states and credentials: what is served,
//! what is refused (with which problem), what is written and what is not.

use alloy_primitives::{Address, B256};
use settlegate_actors::channels::Step;
use settlegate_rules::session::{ChannelId, ChannelState, OnChain, SessionProblem, Voucher, VoucherSignature};

use super::*;

const PAYER: Address = Address::repeat_byte(0xaa);
const PAYEE: Address = Address::repeat_byte(0xbb);
const TOKEN: Address = Address::repeat_byte(0x20);
const OTHER: Address = Address::repeat_byte(0x99);

fn terms() -> SessionTerms {
    SessionTerms {
        chain_id: 31337,
        escrow: Address::repeat_byte(0xee),
        payee: PAYEE,
        token: TOKEN,
        price: 10,
        min_delta: 5,
        min_deposit: 100,
    }
}

fn chain(deposit: u128, settled: u128) -> OnChain {
    OnChain {
        finalized: false,
        close_requested_at: 0,
        payer: PAYER,
        payee: PAYEE,
        token: TOKEN,
        authorized_signer: Address::ZERO,
        deposit,
        settled,
    }
}

fn voucher(cumulative: u128) -> Voucher {
    let mut sig = [0x11u8; 65];
    sig[64] = 27;
    Voucher {
        channel_id: ChannelId(B256::repeat_byte(0xcc)),
        cumulative,
        signature: VoucherSignature::from_slice(&sig).unwrap(),
    }
}

fn state(accepted: u128, spent: u128, read_at: u64) -> ChannelState {
    ChannelState {
        accepted,
        spent,
        chain_read_at: read_at,
        ..ChannelState::fresh(chain(1_000, 0), read_at)
    }
}

const NOW: u64 = 1_000_000;

fn ctx<'a>(t: &'a SessionTerms, facts: Option<&'a Facts>) -> Ctx<'a> {
    Ctx {
        terms: t,
        now: NOW,
        facts_ttl: 30,
        facts,
        denied: None,
    }
}

fn written(step: &Step<Verdict>) -> ChannelState {
    match step {
        Step::Write(bytes, _) => serde_json::from_slice(bytes).unwrap(),
        Step::Keep(v) => panic!("kept: {v:?}"),
    }
}

fn verdict(step: Step<Verdict>) -> Verdict {
    match step {
        Step::Write(_, v) | Step::Keep(v) => v,
    }
}

#[test]
fn an_unknown_channel_needs_facts_then_starts_from_what_the_chain_settled() {
    let t = terms();
    assert_eq!(
        on_voucher(None, &ctx(&t, None), &voucher(50), PAYER),
        Step::Keep(Verdict::NeedFacts)
    );
    let facts = Facts {
        chain: chain(1_000, 40),
        read_at: NOW,
    };
    let step = on_voucher(None, &ctx(&t, Some(&facts)), &voucher(50), PAYER);
    let s = written(&step);
    assert_eq!(
        (s.accepted, s.spent, s.served),
        (50, 50, 1),
        "40 settled before, 10 spent now"
    );
    assert!(matches!(verdict(step), Verdict::Served(_)));
}

#[test]
fn a_voucher_that_covers_the_price_is_served_and_deducted_once() {
    let t = terms();
    let s = state(0, 0, NOW);
    let step = on_voucher(Some(&encode(&s)), &ctx(&t, None), &voucher(10), PAYER);
    let next = written(&step);
    assert_eq!((next.accepted, next.spent, next.served), (10, 10, 1));
    // The same voucher again: nothing left to deduct, so it is refused with
    // the cumulative amount the next request needs.
    let again = on_voucher(Some(&encode(&next)), &ctx(&t, None), &voucher(10), PAYER);
    assert_eq!(
        again,
        Step::Keep(Verdict::Refused(SessionProblem::InsufficientBalance {
            required_cumulative: 20
        }))
    );
}

#[test]
fn an_equal_voucher_is_served_while_it_still_covers_the_price() {
    let t = terms();
    let s = state(30, 10, NOW);
    let step = on_voucher(Some(&encode(&s)), &ctx(&t, None), &voucher(30), PAYER);
    assert_eq!(written(&step).spent, 20);
}

#[test]
fn every_refusal_deducts_nothing_and_names_its_problem() {
    let t = terms();
    let base = state(30, 20, NOW);
    let mut closing = base.clone();
    closing.chain.close_requested_at = NOW - 5;
    let mut finalized = base.clone();
    finalized.chain.finalized = true;
    let cases: Vec<(ChannelState, Voucher, Address, &str)> = vec![
        (base.clone(), voucher(50), OTHER, "session/signer-mismatch"),
        (base.clone(), voucher(25), PAYER, "verification-failed"),
        (base.clone(), voucher(33), PAYER, "session/delta-too-small"),
        (base.clone(), voucher(1_001), PAYER, "session/amount-exceeds-deposit"),
        (finalized, voucher(50), PAYER, "session/channel-finalized"),
        (closing, voucher(50), PAYER, "session/channel-finalized"),
    ];
    for (s, v, signer, slug) in cases {
        let step = on_voucher(Some(&encode(&s)), &ctx(&t, None), &v, signer);
        match &step {
            Step::Keep(Verdict::Refused(p)) => assert_eq!(p.slug(), slug, "{p:?}"),
            other => panic!("{slug}: {other:?}"),
        }
    }
}

#[test]
fn a_lower_voucher_is_refused_even_with_balance_left() {
    let t = terms();
    let s = state(50, 10, NOW);
    assert_eq!(
        on_voucher(Some(&encode(&s)), &ctx(&t, None), &voucher(40), PAYER),
        Step::Keep(Verdict::Refused(SessionProblem::AmountNotIncreasing {
            cumulative: 40,
            accepted: 50
        }))
    );
}

#[test]
fn a_voucher_that_does_not_cover_the_price_is_kept_and_says_what_is_needed() {
    let t = terms();
    let s = state(20, 20, NOW);
    let step = on_voucher(Some(&encode(&s)), &ctx(&t, None), &voucher(25), PAYER);
    assert_eq!(written(&step).accepted, 25, "accepted: the settler may settle it");
    assert_eq!(written(&step).spent, 20, "nothing deducted");
    assert_eq!(
        verdict(step),
        Verdict::Refused(SessionProblem::InsufficientBalance {
            required_cumulative: 30
        })
    );
}

#[test]
fn stale_facts_are_never_decided_on_and_new_ones_are_merged() {
    let t = terms();
    let old = state(30, 10, NOW - 31);
    assert_eq!(
        on_voucher(Some(&encode(&old)), &ctx(&t, None), &voucher(30), PAYER),
        Step::Keep(Verdict::NeedFacts)
    );
    let mut requested = chain(1_000, 30);
    requested.close_requested_at = NOW - 1;
    let facts = Facts {
        chain: requested,
        read_at: NOW,
    };
    let step = on_voucher(Some(&encode(&old)), &ctx(&t, Some(&facts)), &voucher(40), PAYER);
    let kept = written(&step);
    assert_eq!(kept.chain.close_requested_at, NOW - 1, "the new facts are kept");
    assert_eq!(
        (kept.accepted, kept.spent),
        (30, 30),
        "settled on chain counts as spent"
    );
    assert_eq!(
        verdict(step),
        Verdict::Refused(SessionProblem::CloseRequested { requested_at: NOW - 1 })
    );
}

#[test]
fn a_reload_to_another_payee_or_token_refuses_known_channels() {
    let s = state(30, 10, NOW);
    for (t, slug) in [
        (
            SessionTerms {
                payee: OTHER,
                ..terms()
            },
            "verification-failed",
        ),
        (
            SessionTerms {
                token: OTHER,
                ..terms()
            },
            "verification-failed",
        ),
    ] {
        let step = on_voucher(Some(&encode(&s)), &ctx(&t, None), &voucher(40), PAYER);
        match step {
            Step::Keep(Verdict::Refused(p)) => {
                assert_eq!(p.slug(), slug);
                assert!(matches!(
                    p,
                    SessionProblem::WrongPayee(_) | SessionProblem::WrongToken(_)
                ));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_unknown_channel_that_is_not_on_chain_is_gone() {
    let t = terms();
    let facts = Facts {
        chain: OnChain {
            payer: Address::ZERO,
            ..chain(0, 0)
        },
        read_at: NOW,
    };
    let step = on_voucher(None, &ctx(&t, Some(&facts)), &voucher(10), PAYER);
    assert_eq!(step, Step::Keep(Verdict::Refused(SessionProblem::ChannelNotFound)));
}

#[test]
fn unreadable_state_is_no_answer() {
    let t = terms();
    assert_eq!(
        on_voucher(Some(b"{not json"), &ctx(&t, None), &voucher(10), PAYER),
        Step::Keep(Verdict::Corrupt)
    );
}

#[test]
fn a_top_up_serves_from_the_balance_or_names_the_voucher_needed() {
    let t = terms();
    let facts = Facts {
        chain: chain(2_000, 0),
        read_at: NOW,
    };
    let covered = state(30, 10, NOW - 1);
    let step = on_top_up(Some(&encode(&covered)), &ctx(&t, Some(&facts)), true);
    let s = written(&step);
    assert_eq!((s.chain.deposit, s.spent), (2_000, 20));
    let dry = state(30, 30, NOW - 1);
    let step = on_top_up(Some(&encode(&dry)), &ctx(&t, Some(&facts)), true);
    assert_eq!(written(&step).chain.deposit, 2_000, "the new deposit is kept");
    assert_eq!(
        verdict(step),
        Verdict::Refused(SessionProblem::InsufficientBalance {
            required_cumulative: 40
        })
    );
}

#[test]
fn a_top_up_someone_else_brought_updates_the_facts_and_serves_nothing() {
    let t = terms();
    let facts = Facts {
        chain: chain(2_000, 0),
        read_at: NOW,
    };
    let covered = state(30, 10, NOW - 1);
    let step = on_top_up(Some(&encode(&covered)), &ctx(&t, Some(&facts)), false);
    let s = written(&step);
    assert_eq!((s.chain.deposit, s.spent), (2_000, 10), "nothing deducted");
    assert_eq!(
        verdict(step),
        Verdict::Refused(SessionProblem::InsufficientBalance {
            required_cumulative: 31
        })
    );
}

#[test]
fn after_a_close_nothing_above_it_is_accepted_and_a_public_close_serves_nothing() {
    let t = terms();
    let s = state(30, 10, NOW - 1);
    let closed = written(&on_close(Some(&encode(&s)), &ctx(&t, None), &voucher(40), PAYER));
    assert!(closed.closing);
    assert_eq!((closed.accepted, closed.spent), (40, 20));
    let bytes = encode(&closed);
    for v in [voucher(40), voucher(50)] {
        assert_eq!(
            verdict(on_voucher(Some(&bytes), &ctx(&t, None), &v, PAYER)),
            Verdict::Refused(SessionProblem::ChannelFinalized)
        );
    }
    assert_eq!(
        verdict(on_close(Some(&bytes), &ctx(&t, None), &voucher(50), PAYER)),
        Verdict::Refused(SessionProblem::ChannelFinalized)
    );
    // The settler closes with 40: that close voucher is public now (the
    // next voucher must add at least the minimum delta, 5).
    let published = ChannelState {
        published: 40,
        ..closed
    };
    let step = on_close(Some(&encode(&published)), &ctx(&t, None), &voucher(40), PAYER);
    assert_eq!(
        verdict(step),
        Verdict::Refused(SessionProblem::InsufficientBalance {
            required_cumulative: 45
        })
    );
}

#[test]
fn a_close_accepts_its_voucher_and_serves_only_what_it_covers() {
    let t = terms();
    let s = state(30, 30, NOW);
    let step = on_close(Some(&encode(&s)), &ctx(&t, None), &voucher(40), PAYER);
    let next = written(&step);
    assert_eq!((next.accepted, next.spent), (40, 40));
    let step = on_close(Some(&encode(&next)), &ctx(&t, None), &voucher(40), PAYER);
    assert_eq!(
        verdict(step),
        Verdict::Refused(SessionProblem::InsufficientBalance {
            required_cumulative: 50
        })
    );
    let step = on_close(Some(&encode(&next)), &ctx(&t, None), &voucher(35), PAYER);
    assert!(matches!(
        verdict(step),
        Verdict::Refused(SessionProblem::AmountNotIncreasing { .. })
    ));
    let step = on_close(Some(&encode(&next)), &ctx(&t, None), &voucher(50), OTHER);
    assert!(matches!(
        verdict(step),
        Verdict::Refused(SessionProblem::SignerMismatch { .. })
    ));
}

#[test]
fn a_denied_payers_channel_accepts_nothing_and_serves_nothing() {
    let t = terms();
    let denied: settlegate_actors::ledger::deny::DenySet = [PAYER].into_iter().collect();
    let ctx_denied = |facts| Ctx {
        denied: Some(&denied),
        ..ctx(&t, facts)
    };
    let s = state(0, 0, NOW);
    let refused = Step::Keep(Verdict::Refused(SessionProblem::PayerDenied));
    // A voucher that would be served, a close, a top-up: refused, nothing
    // written (the accepted amount and the spent one stay as they were).
    assert_eq!(
        on_voucher(Some(&encode(&s)), &ctx_denied(None), &voucher(10), PAYER),
        refused
    );
    assert_eq!(
        on_close(Some(&encode(&s)), &ctx_denied(None), &voucher(10), PAYER),
        refused
    );
    let facts = Facts {
        chain: chain(2_000, 0),
        read_at: NOW,
    };
    let covered = state(30, 10, NOW - 1);
    assert_eq!(
        on_top_up(Some(&encode(&covered)), &ctx_denied(Some(&facts)), true),
        refused
    );
    // Another payer's channel is served as ever.
    let others: settlegate_actors::ledger::deny::DenySet = [OTHER].into_iter().collect();
    let ctx_other = Ctx {
        denied: Some(&others),
        ..ctx(&t, None)
    };
    assert!(matches!(
        verdict(on_voucher(Some(&encode(&s)), &ctx_other, &voucher(10), PAYER)),
        Verdict::Served(_)
    ));
}
