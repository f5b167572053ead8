//! The pull-mode pre-check on transactions signed by `cast mktx` (Foundry
//! 1.7.1) with dev account 0 (dev account 1 for the 0x04 one), nonce 3,
//! chain 42431 unless named otherwise, calling AlphaUSD.

use alloy_primitives::{Address, address, hex};
use serde_json::json;

use crate::mpp::Binding;
use crate::policy::SettlementPolicy;
use crate::settlement::{MemoRule, PayerRule, Reason, Terms};
use crate::signed_tx::*;

const PAYER: Address = address!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266");
const ACCOUNT1: Address = address!("70997970c51812dc3a010c7d01b50e0d17dc79c8");
const RECIPIENT: Address = ACCOUNT1;
const REALM: &str = "api.settlegate.test";
/// Its memo `0xef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040`
/// is the one every transaction below carries (`transferWithMemo`).
const CHALLENGE_ID: &str = "d1pAw-OCELCL1t18fFRjPG727Zz_e08OTlvP1ldBphg";

/// Legacy (EIP-155), 1 AlphaUSD to the recipient.
const LEGACY: &str = "0xf8cd038504a817c800830186a09420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e1404083014ba1a019ff082cd02e4cfc1b90fcc898b1c096c6d914e10c1a24e8e3bb4c3726031d21a05dfb2419d7ae2f73f8e31e901c2f39018ac57d7363ecef82db57f499270d459b";
/// 0x01 with an empty access list.
const EIP2930: &str = "0x01f8ce82a5bf038504a817c800830186a09420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c080a096f9466690577a73371a1e9b1d59517905f62b33c09bf1b505ee9217dcc8726ba042a74c91898d283abdab77a72ee072236d74842543077f312a7f1eed96066a5b";
/// 0x02.
const EIP1559: &str = "0x02f8d382a5bf03843b9aca008504a817c800830186a09420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c001a0b65e8973d4995d3fa3cd1f38e60328681879d51a0c0419733cf2440e27c2d47da02b6ef04ef0a748460ec9f4956534d299c6c938f2615d779b05a1973609662f8a";
/// 0x04 by dev account 1, with one authorization.
const EIP7702: &str = "0x04f9013382a5bf03843b9aca008504a817c800830186a09420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0f85ef85c82a5bf9400000000000000000000000000000000000000018080a03d4bd6a2f6de7b388c74a4ca9363e5e6a3ef6a7406f1629398fb582f565169c2a034fdc57255e84b320e96b32dca9d87a6be42711f332115fc11d480fb30c338ca01a0a1ffba52999c97644db63ab6fdffb00193c0a237d495d5e42035e804dec1148ea06222c76654cabf1b6f876ec6a65553a49a4ac021cd11b154c6829c79e2627124";
/// 0x76 paying its fee in AlphaUSD.
const TEMPO: &str = "0x76f8f182a5bf843b9aca008504a817c800830186a0f87ef87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0800380809420c000000000000000000000000000000000000180c0b8417ad2868e85813db7e39f703dac3f48592875e6ca7f7dd233e6cfd0da152ab25b7ce1b4961f36f9a87f40b7e3f764531e1c51eae77589fe1c88b0e56957e9516d1b";
/// 0x76: 777 to a stranger (the probe's transaction).
const TEMPO_STRANGER: &str = "0x76f8f182a5bf843b9aca008504a817c800830186a0f87ef87c9420c000000000000000000000000000000000000180b86495777d590000000000000000000000003c44cdddb6a900fa2b585dd299e03d12fa4293bc0000000000000000000000000000000000000000000000000000000000000309ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0800380809420c000000000000000000000000000000000000180c0b8412c853bf49040b17bb88ff3808d1a7bb1fbfb60a6f2c9db85fcff833d2f42782b03a9badde2256d5fae96d3c022d8b3600695f9577c37f8bed5542f31f92bebd51b";
/// 0x76 for chain 4217.
const TEMPO_OTHER_CHAIN: &str = "0x76f8f1821079843b9aca008504a817c800830186a0f87ef87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0800380809420c000000000000000000000000000000000000180c0b84134b6e11f77f481d5f796456ff81366ba78499268f37404515741df8b257eef1457fa66d7dcb7179be65cf8783f4a56d51c441e6346ea06771133388c9a28a7f81b";
/// 0x76: 999999, one short.
const TEMPO_SMALL: &str = "0x76f8f182a5bf843b9aca008504a817c800830186a0f87ef87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f423fef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c0800380809420c000000000000000000000000000000000000180c0b841fbd949a16b37386116baccdb7cde951dc510763faa3273f34adfc3fc389737c17f31cda1f48249d4f12cb1dcaef789511371f26829e50552998ad74a24047fc91b";
/// 0x76: `transfer`, no memo.
const TEMPO_PLAIN: &str = "0x76f8d182a5bf843b9aca008504a817c800830186a0f85ef85c9420c000000000000000000000000000000000000180b844a9059cbb00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240c0800380809420c000000000000000000000000000000000000180c0b841c5c6649b193038c2864a1461e9e7c48e429465a9e28e8c4b676b3ecd341791407d902ddbe2f2823110f18600a03753201733a647c265b08f8baca77d4527a0591c";
/// 0x02 paying in BetaUSD.
const EIP1559_BETA: &str = "0x02f8d382a5bf03843b9aca008504a817c800830186a09420c000000000000000000000000000000000000280b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040c001a07594ee0087fd0c29103f5a7b9c930a31c59dd2d95fb1b818a21544be34ad09d8a07278fe449041f5cd14b0a3a2e3d1573f6fca272d348c9047f371c03dc3d982f3";
/// 0x02 calling `approve`: no transfer.
const EIP1559_APPROVE: &str = "0x02f8b382a5bf03843b9aca008504a817c800830186a09420c000000000000000000000000000000000000180b844095ea7b300000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240c080a068dfe895af61688e12a2681c272da4dc5f250de6a359711320e9d44b0ec23667a02a3184ec0098540745d3a8e6c67fc6f5d1f7515eb6cb75c5b3eb3585048cc5e5";
/// 0x76 batches signed by viem 2.56 (`account.signTransaction` with Tempo's
/// serializer; cast makes one call only), nonce 3, fee in AlphaUSD: the
/// payment above as the first call, then a second call.
/// Then `transfer(stranger, 1234567)` of AlphaUSD.
const BATCH_STRANGER: &str = "0x76f9014f82a5bf843b9aca008504a817c800830493e0f8dcf87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040f85c9420c000000000000000000000000000000000000180b844a9059cbb0000000000000000000000003c44cdddb6a900fa2b585dd299e03d12fa4293bc000000000000000000000000000000000000000000000000000000000012d687c0800380809420c000000000000000000000000000000000000180c0b841c9326ed3992a3c76085f2cba64a68ae2fff701a47b6cb941f5a625c509506bec5403685e53a387e14ab8b2dd223172c46fb256d198d32e764a483f1ed0865c9a1c";
/// Then `approve(stranger, 2^255)` of AlphaUSD.
const BATCH_APPROVE: &str = "0x76f9014f82a5bf843b9aca008504a817c800830493e0f8dcf87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040f85c9420c000000000000000000000000000000000000180b844095ea7b30000000000000000000000003c44cdddb6a900fa2b585dd299e03d12fa4293bc8000000000000000000000000000000000000000000000000000000000000000c0800380809420c000000000000000000000000000000000000180c0b8416a44f3301c95201ae79a116f4b6374e01d84e509cc9aa72d2844246d02cdad3a0295427b895f12cbdc69b15139cf58e1d096af1bab1e4f684582f0cefff60f881b";
/// Then `transfer(recipient, 1)` of AlphaUSD: more to the recipient.
const BATCH_TIP: &str = "0x76f9014f82a5bf843b9aca008504a817c800830493e0f8dcf87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040f85c9420c000000000000000000000000000000000000180b844a9059cbb00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c80000000000000000000000000000000000000000000000000000000000000001c0800380809420c000000000000000000000000000000000000180c0b84153f286807241e3898f17b96c56a48cfd0a0d90e6e3f64bad331be8cefa4058212f3078ce1f4f5e5b52c1f0dc545c0e2a05cf03cee4d909e0fca5ae01a22806191c";
/// Then `transfer(recipient, 1)` of BetaUSD: another token than the price's.
const BATCH_BETA: &str = "0x76f9014f82a5bf843b9aca008504a817c800830493e0f8dcf87c9420c000000000000000000000000000000000000180b86495777d5900000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000000000000000000000000000000000000000f4240ef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040f85c9420c000000000000000000000000000000000000280b844a9059cbb00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c80000000000000000000000000000000000000000000000000000000000000001c0800380809420c000000000000000000000000000000000000180c0b8414de5463948cc03546f659c739500accf16ccb124ed8b179db067f16de162aea135bcfcbd7418cb2e1b7a05b011fb121fffe3544fce461064f56bfb3feef407391c";

fn policy(extra: serde_json::Value) -> SettlementPolicy {
    let mut v = json!({
        "chain_id": 42431, "realm": REALM,
        "recipient": format!("{RECIPIENT:#x}"),
        "assets": ["0x20c0000000000000000000000000000000000001"],
        "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"}
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    SettlementPolicy::from_value(Some(&v)).unwrap()
}

fn bound(payer: PayerRule) -> Terms {
    Terms {
        memo: MemoRule::Bound(Binding::new(REALM, CHALLENGE_ID)),
        payer,
    }
}

fn tx(hex_tx: &str) -> SignedTx {
    decode(&hex::decode(hex_tx).unwrap()).unwrap()
}

fn check(hex_tx: &str, terms: Terms) -> Result<(), Reason> {
    let p = policy(json!({}));
    precheck(&tx(hex_tx), &p, &p.default_price, terms)
}

#[test]
fn every_type_tempo_accepts_decodes_with_its_signer_chain_and_call() {
    for (raw, ty, signer) in [
        (LEGACY, 0x00, PAYER),
        (EIP2930, 0x01, PAYER),
        (EIP1559, 0x02, PAYER),
        (EIP7702, 0x04, ACCOUNT1),
        (TEMPO, 0x76, PAYER),
    ] {
        let t = tx(raw);
        assert_eq!(
            (t.tx_type, t.chain_id, t.signer),
            (ty, Some(42431), Some(signer)),
            "type {ty:#x}"
        );
        assert_eq!(t.calls.len(), 1);
        assert_eq!(
            t.calls[0].to,
            Some(address!("20c0000000000000000000000000000000000001"))
        );
        assert_eq!(t.calls[0].input[..4], TRANSFER_WITH_MEMO_SELECTOR);
    }
    assert_eq!(tx(TEMPO_OTHER_CHAIN).chain_id, Some(4217));
}

#[test]
fn a_transaction_that_pays_the_challenge_passes() {
    for raw in [LEGACY, EIP2930, EIP1559, TEMPO] {
        assert_eq!(check(raw, bound(PayerRule::Sender)), Ok(()));
        assert_eq!(check(raw, bound(PayerRule::Is(PAYER))), Ok(()));
    }
    assert_eq!(check(TEMPO_PLAIN, Terms::from(MemoRule::Any)), Ok(()));
}

#[test]
fn a_transaction_that_would_not_settle_gets_the_receipts_reason() {
    let s = bound(PayerRule::Sender);
    assert_eq!(check(TEMPO_STRANGER, s), Err(Reason::WrongRecipient));
    assert_eq!(check(TEMPO_OTHER_CHAIN, s), Err(Reason::WrongChain));
    assert_eq!(check(TEMPO_SMALL, s), Err(Reason::InsufficientAmount));
    assert_eq!(check(TEMPO_PLAIN, s), Err(Reason::MemoMismatch));
    assert_eq!(check(EIP1559_BETA, s), Err(Reason::WrongAsset));
    assert_eq!(check(EIP1559_APPROVE, s), Err(Reason::NoTransfer));
    assert_eq!(check(TEMPO, bound(PayerRule::Is(ACCOUNT1))), Err(Reason::PayerMismatch));
    let other_challenge = Terms {
        memo: MemoRule::Bound(Binding::new(REALM, "another-challenge-id")),
        payer: PayerRule::Sender,
    };
    assert_eq!(check(TEMPO, other_challenge), Err(Reason::MemoMismatch));
}

/// The probe's finding: a valid payment carried an extra call that was
/// broadcast with it. Each call must pay the recipient in the price's token.
#[test]
fn a_batch_carries_the_payment_and_nothing_else() {
    for raw in [BATCH_STRANGER, BATCH_APPROVE, BATCH_TIP, BATCH_BETA] {
        let t = tx(raw);
        assert_eq!((t.tx_type, t.signer, t.calls.len()), (0x76, Some(PAYER), 2), "{raw}");
    }
    let s = bound(PayerRule::Sender);
    assert_eq!(check(BATCH_STRANGER, s), Err(Reason::WrongRecipient));
    assert_eq!(check(BATCH_APPROVE, s), Err(Reason::NoTransfer));
    assert_eq!(check(BATCH_TIP, s), Ok(()));
    assert_eq!(check(BATCH_BETA, s), Err(Reason::WrongAsset));
}

#[test]
fn the_route_price_is_the_one_judged() {
    let p =
        policy(json!({"default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000001"}}));
    assert_eq!(
        precheck(&tx(TEMPO), &p, &p.default_price, bound(PayerRule::Sender)),
        Err(Reason::InsufficientAmount)
    );
}

#[test]
fn a_legacy_transaction_without_a_chain_id_is_on_the_wrong_chain() {
    let mut t = tx(LEGACY);
    t.chain_id = None;
    let p = policy(json!({}));
    assert_eq!(
        precheck(&t, &p, &p.default_price, bound(PayerRule::Sender)),
        Err(Reason::WrongChain)
    );
}

#[test]
fn an_unrecovered_signer_leaves_the_payer_to_the_receipt() {
    let mut t = tx(TEMPO);
    t.signer = None;
    let p = policy(json!({}));
    assert_eq!(
        precheck(&t, &p, &p.default_price, bound(PayerRule::Is(ACCOUNT1))),
        Ok(())
    );
}

#[test]
fn bytes_that_are_not_a_signed_transaction_do_not_decode() {
    let good = hex::decode(TEMPO).unwrap();
    let mut tampered = good.clone();
    // One bit of the recipient: the signature now recovers another signer,
    // never the payer.
    let at = good.windows(20).position(|w| w == RECIPIENT.as_slice()).unwrap();
    tampered[at] ^= 1;
    assert_ne!(decode(&tampered).map(|t| t.signer), Ok(Some(PAYER)));
    for bad in [
        vec![],
        vec![0x76],
        vec![0x03, 0xc0],
        vec![0x7f, 0xc0],
        good[..good.len() - 1].to_vec(),
        [good.as_slice(), &[0x00]].concat(),
        vec![0x76, 0xc0],
        vec![0x02, 0xc3, 0x01, 0x02, 0x03],
    ] {
        assert!(decode(&bad).is_err(), "{}", hex::encode(&bad));
    }
}

/// `transfer(to, amount)` of `token` (or `transferWithMemo` with `memo`).
fn pay_call(token: Address, to: Address, amount: u64, memo: Option<[u8; 32]>) -> Call {
    let mut input = if memo.is_some() {
        TRANSFER_WITH_MEMO_SELECTOR.to_vec()
    } else {
        TRANSFER_SELECTOR.to_vec()
    };
    input.extend_from_slice(&[0u8; 12]);
    input.extend_from_slice(to.as_slice());
    input.extend_from_slice(&alloy_primitives::U256::from(amount).to_be_bytes::<32>());
    if let Some(m) = memo {
        input.extend_from_slice(&m);
    }
    Call { to: Some(token), input }
}

#[test]
fn a_batch_paying_the_splits_passes_and_a_call_elsewhere_does_not() {
    let alpha = address!("20c0000000000000000000000000000000000001");
    let (a, b) = (
        address!("90f79bf6eb2c4f870365e785982e1f101e93b906"),
        address!("15d34aaf54267db7d7c367839aaf71a00a2c6a65"),
    );
    let p = policy(
        json!({"prices": [{"resource": "GET /split", "amount": "1000000", "splits": [
            {"recipient": format!("{a:#x}"), "amount": "200000"},
            {"recipient": format!("{b:#x}"), "amount": "50000"},
        ]}]}),
    );
    let price = p.price_for(Some("GET /split"));
    let memo = Binding::new(REALM, CHALLENGE_ID).memo().0;
    let batch = |calls: Vec<Call>| SignedTx {
        tx_type: TEMPO_TX_TYPE,
        chain_id: Some(42431),
        signer: Some(PAYER),
        calls,
    };
    let primary = pay_call(alpha, RECIPIENT, 750_000, Some(memo));
    let good = vec![
        primary.clone(),
        pay_call(alpha, a, 200_000, None),
        pay_call(alpha, b, 50_000, None),
    ];
    assert_eq!(
        precheck(&batch(good.clone()), &p, &price, bound(PayerRule::Sender)),
        Ok(())
    );
    let stranger = address!("3c44cdddb6a900fa2b585dd299e03d12fa4293bc");
    for (calls, want) in [
        (
            vec![primary.clone(), pay_call(alpha, a, 200_000, None)],
            Reason::SplitMissing,
        ),
        (
            vec![
                primary.clone(),
                pay_call(alpha, a, 200_000, None),
                pay_call(alpha, stranger, 50_000, None),
            ],
            Reason::SplitMissing,
        ),
        (
            vec![
                primary.clone(),
                pay_call(alpha, a, 199_999, None),
                pay_call(alpha, b, 50_000, None),
            ],
            Reason::SplitShort,
        ),
        // everything paid, and one more call to a stranger
        (
            good.iter()
                .cloned()
                .chain([pay_call(alpha, stranger, 1, None)])
                .collect(),
            Reason::WrongRecipient,
        ),
    ] {
        assert_eq!(precheck(&batch(calls), &p, &price, bound(PayerRule::Sender)), Err(want));
    }
    // without splits, a transfer to a (would-be) split recipient is not the payment's
    let plain = p.price_for(None);
    let mut calls = vec![pay_call(alpha, RECIPIENT, 1_000_000, Some(memo))];
    calls.push(pay_call(alpha, a, 1, None));
    assert_eq!(
        precheck(&batch(calls), &p, &plain, bound(PayerRule::Sender)),
        Err(Reason::WrongRecipient)
    );
}
