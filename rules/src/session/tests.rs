//! Session rules against vectors computed independently: EIP-712 digests,
//! signatures, channel ids and selectors from viem 2.56.8 (`hashTypedData`,
//! `signTypedData`, `encodeAbiParameters`, `toFunctionSelector`), and 0x76
//! transactions signed by viem's Tempo serializer with dev account 0
//! (nonce 3, chain 42431 unless named otherwise).

use alloy_primitives::{Address, B256, U256, address, b256, hex, keccak256};
use serde_json::json;

use super::abi::*;
use super::accounting::check_close;
use super::parse::{AmountError, parse_amount};
use super::*;

const PAYER: Address = address!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266");
const PAYEE: Address = address!("70997970c51812dc3a010c7d01b50e0d17dc79c8");
const DELEGATE: Address = address!("3c44cdddb6a900fa2b585dd299e03d12fa4293bc");
const TOKEN: Address = address!("20c0000000000000000000000000000000000001");
const ESCROW: Address = address!("e1c4d3dce17bc111181ddf716f75bae49e61a336");
const CHAIN: u64 = 42431;
const SALT: B256 = b256!("1111111111111111111111111111111111111111111111111111111111111111");
/// The spec's example channel id.
const SPEC_CHANNEL: &str = "0x6d0f4fdf1f2f6a1f6c1b0fbd6a7d5c2c0a8d3d7b1f6a9c1b3e2d4a5b6c7d8e9f";
/// viem: the channel of (PAYER, PAYEE, TOKEN, SALT, zero signer, ESCROW, CHAIN).
const CHANNEL: &str = "0x29a0e66594a5b16f7259dd15d38a825223dcfb8dde8f1a4bf4f6837c0adccb92";
/// viem: the same with DELEGATE as authorized signer.
const CHANNEL_DELEGATED: &str = "0x3e5872c048cc32178f14929e29881bedf10a3d4e39f7d58e4376cccd2169c170";
/// viem `hashDomain` / `hashTypedData` of (SPEC_CHANNEL, 250000).
const SEPARATOR: B256 = b256!("3271aa2ef112b8493e889b17f852ad8e0a0b30565a62f3c066aa9fb0b7444e0c");
const DIGEST: B256 = b256!("ba1305c447de326f3440d130dd89c6d6ccbb905b1029011dc193db424dfa2660");
/// viem `signTypedData` of that voucher by dev account 0 (PAYER).
const SIG: &str = "0xeb7147c99425f30bf67080d707f7e5151745d9e9f9822be39e159c7fa54139d40392c7165799c3cae89a567723ae001824ef29ebe1205dba19c97162aad0d9aa1b";
/// approve(ESCROW, 5 AlphaUSD) then open(PAYEE, TOKEN, 5000000, SALT, zero): mppx's batch.
const OPEN_BATCH: &str = "0x76f9019082a5bf843b9aca008504a817c800831e8480f9011cf85c9420c000000000000000000000000000000000000180b844095ea7b3000000000000000000000000e1c4d3dce17bc111181ddf716f75bae49e61a33600000000000000000000000000000000000000000000000000000000004c4b40f8bc94e1c4d3dce17bc111181ddf716f75bae49e61a33680b8a4c79ea48500000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000020c000000000000000000000000000000000000100000000000000000000000000000000000000000000000000000000004c4b4011111111111111111111111111111111111111111111111111111111111111110000000000000000000000000000000000000000000000000000000000000000c0800380809420c000000000000000000000000000000000000180c0b8415528df5d65b56fad10d5b86e3ac820b795c06d04a77ea7d7184d4f808904d0da5412ace5c87a90b999df7a797fbe23e72a8026aa384151523d993b2cbcecefb21c";
/// open alone.
const OPEN_ALONE: &str = "0x76f9013182a5bf843b9aca008504a817c800831e8480f8bef8bc94e1c4d3dce17bc111181ddf716f75bae49e61a33680b8a4c79ea48500000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000020c000000000000000000000000000000000000100000000000000000000000000000000000000000000000000000000004c4b4011111111111111111111111111111111111111111111111111111111111111110000000000000000000000000000000000000000000000000000000000000000c0800380809420c000000000000000000000000000000000000180c0b841dcb6bb85de399cb756933211286bf2e4ee4e001557a3953a21c4fda33e1b73f07c9159334383fc9e8c2b841215310888c8e593f7a244b4450bbc02e386f396c31b";
/// OPEN_BATCH on chain 4217.
const OPEN_OTHER_CHAIN: &str = "0x76f90190821079843b9aca008504a817c800831e8480f9011cf85c9420c000000000000000000000000000000000000180b844095ea7b3000000000000000000000000e1c4d3dce17bc111181ddf716f75bae49e61a33600000000000000000000000000000000000000000000000000000000004c4b40f8bc94e1c4d3dce17bc111181ddf716f75bae49e61a33680b8a4c79ea48500000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000020c000000000000000000000000000000000000100000000000000000000000000000000000000000000000000000000004c4b4011111111111111111111111111111111111111111111111111111111111111110000000000000000000000000000000000000000000000000000000000000000c0800380809420c000000000000000000000000000000000000180c0b841547646a2d2faf49668a4c21fa464e2fe2dc49f30d2d5b76104fc24d69d0f259b00992d2f771aa3c32b0446367ad5261114259ac2906074c0947dabb79636328d1c";
/// topUp(0x22…22, 1000000).
const TOPUP: &str = "0x76f8d182a5bf843b9aca008504a817c800831e8480f85ef85c94e1c4d3dce17bc111181ddf716f75bae49e61a33680b844b67644b9222222222222222222222222222222222222222222222222222222222222222200000000000000000000000000000000000000000000000000000000000f4240c0800380809420c000000000000000000000000000000000000180c0b84187522f55ad1937c9293097a28780627633968579eca64acf25b8d58b88b2f94942d6c6453ebe944b83e8e7f4772590f08a438820d3cd4ad85dc036d8743a9a071b";
/// OPEN_BATCH with DELEGATE as authorized signer.
const OPEN_DELEGATED: &str = "0x76f9019082a5bf843b9aca008504a817c800831e8480f9011cf85c9420c000000000000000000000000000000000000180b844095ea7b3000000000000000000000000e1c4d3dce17bc111181ddf716f75bae49e61a33600000000000000000000000000000000000000000000000000000000004c4b40f8bc94e1c4d3dce17bc111181ddf716f75bae49e61a33680b8a4c79ea48500000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c800000000000000000000000020c000000000000000000000000000000000000100000000000000000000000000000000000000000000000000000000004c4b4011111111111111111111111111111111111111111111111111111111111111110000000000000000000000003c44cdddb6a900fa2b585dd299e03d12fa4293bcc0800380809420c000000000000000000000000000000000000180c0b84151e8bad380afd4ed24fd57bb3d802f3002a697fa8b6d11e95a5055b5f6635cda5990b1b67c3dcd43e32e34311fade401d7ba9a17659a856e88a20dfbf4308d2b1c";

fn raw(h: &str) -> Vec<u8> {
    hex::decode(h).unwrap()
}

fn cid(s: &str) -> ChannelId {
    s.parse().unwrap()
}

fn domain() -> Domain {
    Domain {
        chain_id: CHAIN,
        escrow: ESCROW,
    }
}

fn sig() -> VoucherSignature {
    VoucherSignature::parse_hex(SIG).unwrap()
}

fn expected() -> judge::Expected {
    judge::Expected {
        chain_id: CHAIN,
        escrow: ESCROW,
        payee: PAYEE,
        token: TOKEN,
        min_deposit: 1_000_000,
    }
}

fn open_payload(channel: &str, signer: Option<Address>) -> Open {
    Open {
        channel_id: cid(channel),
        transaction: raw(OPEN_BATCH).into(),
        authorized_signer: signer,
        voucher: Voucher {
            channel_id: cid(channel),
            cumulative: 0,
            signature: sig(),
        },
    }
}

// ---- ids, digests, signatures ----

#[test]
fn channel_id_parses_either_case_and_displays_lower_case() {
    let upper = SPEC_CHANNEL.to_uppercase().replacen("0X", "0x", 1);
    assert_eq!(cid(&upper), cid(SPEC_CHANNEL));
    assert_eq!(cid(&upper).to_string(), SPEC_CHANNEL);
    for bad in [
        "",
        "6d0f",
        &SPEC_CHANNEL[2..],
        &SPEC_CHANNEL[..65],
        &format!("{SPEC_CHANNEL}0"),
        &SPEC_CHANNEL.replace('f', "g"),
        " 0x00",
    ] {
        assert!(bad.parse::<ChannelId>().is_err(), "{bad:?}");
    }
}

#[test]
fn domain_separator_and_voucher_digest_match_viem() {
    assert_eq!(domain().separator(), SEPARATOR);
    assert_eq!(domain().voucher_digest(&cid(SPEC_CHANNEL), 250_000), DIGEST);
    assert_ne!(domain().voucher_digest(&cid(SPEC_CHANNEL), 250_001), DIGEST);
    let other = Domain {
        chain_id: 4217,
        ..domain()
    };
    assert_ne!(other.voucher_digest(&cid(SPEC_CHANNEL), 250_000), DIGEST);
}

#[test]
fn a_viem_voucher_signature_recovers_its_signer() {
    assert_eq!(sig().recover(&DIGEST), Ok(PAYER));
    let v = Voucher {
        channel_id: cid(SPEC_CHANNEL),
        cumulative: 250_000,
        signature: sig(),
    };
    assert_eq!(domain().recover(&v), Ok(PAYER));
    let other = Voucher {
        cumulative: 250_001,
        ..v
    };
    assert_ne!(domain().recover(&other), Ok(PAYER));
    assert_eq!(sig().to_hex(), SIG);
}

#[test]
fn a_compact_signature_is_the_same_voucher_signature() {
    let full = sig().to_bytes();
    let mut compact = [0u8; 64];
    compact.copy_from_slice(&full[..64]);
    if full[64] == 28 {
        compact[32] |= 0x80;
    }
    let parsed = VoucherSignature::from_slice(&compact).unwrap();
    assert_eq!(parsed, sig());
    assert_eq!(parsed.recover(&DIGEST), Ok(PAYER));
}

#[test]
fn high_s_bad_v_and_bad_lengths_are_refused() {
    let full = sig().to_bytes();
    let n = voucher::HALF_ORDER * U256::from(2u8) + U256::from(1u8);
    let s = U256::from_be_slice(&full[32..64]);
    let mut high = full;
    high[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    high[64] = if full[64] == 27 { 28 } else { 27 };
    assert_eq!(VoucherSignature::from_slice(&high), Err(SignatureProblem::HighS));
    let mut v0 = full;
    v0[64] = 0;
    assert_eq!(VoucherSignature::from_slice(&v0), Err(SignatureProblem::BadV(0)));
    assert_eq!(
        VoucherSignature::from_slice(&full[..63]),
        Err(SignatureProblem::Length(63))
    );
    let mut zero = full;
    zero[..32].fill(0);
    assert_eq!(VoucherSignature::from_slice(&zero), Err(SignatureProblem::OutOfRange));
    assert_eq!(VoucherSignature::parse_hex(&SIG[2..]), Err(SignatureProblem::NotHex));
    assert_eq!(
        VoucherSignature::parse_hex(&format!("{SIG}00")),
        Err(SignatureProblem::Length(66))
    );
    assert_eq!(
        VoucherSignature::parse_hex(&SIG.replace('e', "z")),
        Err(SignatureProblem::NotHex)
    );
}

#[test]
fn channel_ids_match_viem() {
    assert_eq!(
        channel_id_v1(PAYER, PAYEE, TOKEN, SALT, Address::ZERO, ESCROW, CHAIN),
        cid(CHANNEL)
    );
    assert_eq!(
        channel_id_v1(PAYER, PAYEE, TOKEN, SALT, DELEGATE, ESCROW, CHAIN),
        cid(CHANNEL_DELEGATED)
    );
}

// ---- ABI ----

#[test]
fn selectors_are_the_keccak_of_their_signatures() {
    for (sel, sig) in [
        (OPEN_SELECTOR, "open(address,address,uint128,bytes32,address)"),
        (TOP_UP_SELECTOR, "topUp(bytes32,uint256)"),
        (SETTLE_SELECTOR, "settle(bytes32,uint128,bytes)"),
        (CLOSE_SELECTOR, "close(bytes32,uint128,bytes)"),
        (GET_CHANNEL_SELECTOR, "getChannel(bytes32)"),
        (APPROVE_SELECTOR, "approve(address,uint256)"),
    ] {
        assert_eq!(sel, keccak256(sig)[..4], "{sig}");
    }
}

fn get_channel_answer() -> Vec<u8> {
    let mut d = Vec::new();
    let word = |v: &[u8]| {
        let mut w = [0u8; 32];
        w[32 - v.len()..].copy_from_slice(v);
        w
    };
    d.extend(word(&[0]));
    d.extend(word(&1_700_000_000u64.to_be_bytes()));
    d.extend(word(PAYER.as_slice()));
    d.extend(word(PAYEE.as_slice()));
    d.extend(word(TOKEN.as_slice()));
    d.extend(word(DELEGATE.as_slice()));
    d.extend(word(&5_000_000u128.to_be_bytes()));
    d.extend(word(&250_000u128.to_be_bytes()));
    d
}

#[test]
fn get_channel_decodes_in_the_deployed_order_and_strictly() {
    let c = decode_get_channel(&get_channel_answer()).unwrap();
    assert_eq!(
        c,
        OnChain {
            finalized: false,
            close_requested_at: 1_700_000_000,
            payer: PAYER,
            payee: PAYEE,
            token: TOKEN,
            authorized_signer: DELEGATE,
            deposit: 5_000_000,
            settled: 250_000,
        }
    );
    assert!(c.exists());
    assert_eq!(c.expected_signer(), DELEGATE);
    assert_eq!(
        OnChain {
            authorized_signer: Address::ZERO,
            ..c
        }
        .expected_signer(),
        PAYER
    );
    let zeros = decode_get_channel(&[0u8; 256]).unwrap();
    assert!(!zeros.exists());
    let mut d = get_channel_answer();
    d.push(0);
    assert!(decode_get_channel(&d).is_err());
    let mut d = get_channel_answer();
    d[31] = 2; // finalized is a bool
    assert_eq!(decode_get_channel(&d), Err(AbiError::Word(0)));
    let mut d = get_channel_answer();
    d[2 * 32] = 1; // dirty address padding
    assert_eq!(decode_get_channel(&d), Err(AbiError::Word(2)));
    let mut d = get_channel_answer();
    d[6 * 32 + 15] = 1; // deposit above uint128
    assert_eq!(decode_get_channel(&d), Err(AbiError::Word(6)));
    assert_eq!(&get_channel_call(&cid(CHANNEL))[..4], &GET_CHANNEL_SELECTOR);
    assert_eq!(&get_channel_call(&cid(CHANNEL))[4..], cid(CHANNEL).0.as_slice());
}

#[test]
fn settle_and_close_calls_are_abi_encoded() {
    let id = cid(CHANNEL);
    let data = settle_call(&id, 250_000, &sig());
    assert_eq!(data.len(), 4 + 7 * 32);
    assert_eq!(&data[..4], &SETTLE_SELECTOR);
    assert_eq!(&data[4..36], id.0.as_slice());
    assert_eq!(U256::from_be_slice(&data[36..68]), U256::from(250_000u64));
    assert_eq!(U256::from_be_slice(&data[68..100]), U256::from(0x60u64));
    assert_eq!(U256::from_be_slice(&data[100..132]), U256::from(65u64));
    assert_eq!(&data[132..197], &sig().to_bytes());
    assert!(data[197..].iter().all(|&b| b == 0));
    let close = close_call(&id, 250_000, &sig());
    assert_eq!(&close[..4], &CLOSE_SELECTOR);
    assert_eq!(&close[4..], &data[4..]);
}

// ---- judging open / topUp ----

#[test]
fn mppx_style_open_batch_is_judged_to_its_channel() {
    let facts = judge_open(
        &raw(OPEN_BATCH),
        &open_payload(CHANNEL, Some(Address::ZERO)),
        &expected(),
    )
    .unwrap();
    assert_eq!(
        facts,
        OpenFacts {
            payer: PAYER,
            channel_id: cid(CHANNEL),
            deposit: 5_000_000,
            authorized_signer: Address::ZERO,
            salt: SALT
        }
    );
    let alone = Open {
        transaction: raw(OPEN_ALONE).into(),
        ..open_payload(CHANNEL, None)
    };
    assert_eq!(
        judge_open(&raw(OPEN_ALONE), &alone, &expected()).unwrap().channel_id,
        cid(CHANNEL)
    );
    let delegated = judge_open(
        &raw(OPEN_DELEGATED),
        &open_payload(CHANNEL_DELEGATED, Some(DELEGATE)),
        &expected(),
    )
    .unwrap();
    assert_eq!(delegated.authorized_signer, DELEGATE);
}

#[test]
fn an_open_that_does_not_open_what_was_asked_is_refused() {
    use SessionProblem::*;
    let p = open_payload(CHANNEL, None);
    let e = expected();
    let cases: Vec<(&str, Vec<u8>, Open, judge::Expected, SessionProblem)> = vec![
        (
            "other chain",
            raw(OPEN_OTHER_CHAIN),
            p.clone(),
            e,
            WrongChain(Some(4217)),
        ),
        (
            "other payee",
            raw(OPEN_BATCH),
            p.clone(),
            judge::Expected { payee: DELEGATE, ..e },
            WrongPayee(PAYEE),
        ),
        (
            "other token",
            raw(OPEN_BATCH),
            p.clone(),
            judge::Expected { token: DELEGATE, ..e },
            NotAnOpen,
        ),
        (
            "other token, open alone",
            raw(OPEN_ALONE),
            p.clone(),
            judge::Expected { token: DELEGATE, ..e },
            WrongToken(TOKEN),
        ),
        (
            "other escrow",
            raw(OPEN_BATCH),
            p.clone(),
            judge::Expected { escrow: DELEGATE, ..e },
            NotAnOpen,
        ),
        (
            "other escrow, open alone",
            raw(OPEN_ALONE),
            p.clone(),
            judge::Expected { escrow: DELEGATE, ..e },
            WrongEscrow(ESCROW),
        ),
        (
            "deposit",
            raw(OPEN_BATCH),
            p.clone(),
            judge::Expected {
                min_deposit: 5_000_001,
                ..e
            },
            DepositTooLow {
                deposit: 5_000_000,
                min: 5_000_001,
            },
        ),
        (
            "claimed channel",
            raw(OPEN_BATCH),
            open_payload(SPEC_CHANNEL, None),
            e,
            ChannelIdMismatch,
        ),
        (
            "claimed signer",
            raw(OPEN_BATCH),
            open_payload(CHANNEL, Some(DELEGATE)),
            e,
            AuthorizedSignerMismatch,
        ),
        ("a topUp", raw(TOPUP), p.clone(), e, NotAnOpen),
        (
            "garbage",
            vec![0x76, 0xc0],
            p.clone(),
            e,
            Undecodable(crate::signed_tx::Undecodable(String::new())),
        ),
    ];
    for (name, tx, claimed, exp, want) in cases {
        let got = judge_open(&tx, &claimed, &exp).unwrap_err();
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&want),
            "{name}: {got}"
        );
        if !matches!(want, Undecodable(_)) {
            assert_eq!(got, want, "{name}");
        }
    }
    let mut voucher_elsewhere = open_payload(CHANNEL, None);
    voucher_elsewhere.voucher.channel_id = cid(SPEC_CHANNEL);
    assert_eq!(
        judge_open(&raw(OPEN_BATCH), &voucher_elsewhere, &e),
        Err(ChannelIdMismatch)
    );
    assert!(matches!(
        judge_open(&vec![0u8; MAX_PAYLOAD_TX_BYTES + 1], &p, &e),
        Err(Undecodable(_))
    ));
}

#[test]
fn a_top_up_is_judged_to_its_payer_and_amount() {
    let id = cid("0x2222222222222222222222222222222222222222222222222222222222222222");
    assert_eq!(judge_top_up(&raw(TOPUP), &id, 1_000_000, &expected()), Ok(PAYER));
    assert_eq!(
        judge_top_up(&raw(TOPUP), &cid(CHANNEL), 1_000_000, &expected()),
        Err(SessionProblem::ChannelIdMismatch)
    );
    assert_eq!(
        judge_top_up(&raw(TOPUP), &id, 2, &expected()),
        Err(SessionProblem::TopUpAmountMismatch {
            in_tx: 1_000_000,
            claimed: 2
        })
    );
    assert_eq!(
        judge_top_up(&raw(OPEN_BATCH), &id, 1, &expected()),
        Err(SessionProblem::NotATopUp)
    );
    assert_eq!(
        judge_top_up(
            &raw(TOPUP),
            &id,
            1_000_000,
            &judge::Expected {
                escrow: DELEGATE,
                ..expected()
            }
        ),
        Err(SessionProblem::WrongEscrow(ESCROW))
    );
    let top = top_up_call(&id, 1_000_000);
    assert_eq!(decode_top_up(&top), Ok((id, U256::from(1_000_000u64))));
}

// ---- payload parsing ----

fn voucher_json(action: &str) -> serde_json::Value {
    json!({"action": action, "channelId": CHANNEL, "cumulativeAmount": "250000", "signature": SIG})
}

#[test]
fn each_action_parses_with_the_spec_and_mppx_field_names() {
    let v = parse_payload(&voucher_json("voucher")).unwrap();
    assert_eq!(
        v,
        Action::Voucher(Voucher {
            channel_id: cid(CHANNEL),
            cumulative: 250_000,
            signature: sig()
        })
    );
    assert_eq!((v.name(), v.channel_id()), ("voucher", cid(CHANNEL)));
    assert!(matches!(parse_payload(&voucher_json("close")), Ok(Action::Close(_))));
    let open = json!({
        "action": "open", "type": "transaction", "channelId": CHANNEL, "transaction": OPEN_BATCH,
        "authorizedSigner": "0x0000000000000000000000000000000000000000",
        "cumulativeAmount": "0", "signature": SIG, "unknown": {"ignored": true},
    });
    let Action::Open(o) = parse_payload(&open).unwrap() else {
        panic!("not an open")
    };
    assert_eq!(o.transaction.as_ref(), raw(OPEN_BATCH).as_slice());
    assert_eq!(o.authorized_signer, Some(Address::ZERO));
    assert_eq!(o.voucher.cumulative, 0);
    let top = json!({"action": "topUp", "type": "transaction", "channelId": CHANNEL, "transaction": TOPUP, "additionalDeposit": "1000000"});
    let Action::TopUp(t) = parse_payload(&top).unwrap() else {
        panic!("not a topUp")
    };
    assert_eq!((t.additional_deposit, t.channel_id), (1_000_000, cid(CHANNEL)));
}

#[test]
fn malformed_payloads_get_typed_errors() {
    use SessionMalformed as M;
    let with = |k: &str, v: serde_json::Value| {
        let mut j = voucher_json("voucher");
        j[k] = v;
        parse_payload(&j).unwrap_err()
    };
    assert_eq!(parse_payload(&json!([])), Err(M::NotAnObject));
    assert_eq!(parse_payload(&json!({})), Err(M::Missing("action")));
    assert!(matches!(with("action", json!("refund")), M::UnknownAction(_)));
    assert_eq!(with("action", json!(1)), M::NotAString("action"));
    assert_eq!(
        with("cumulativeAmount", json!(250000)),
        M::NotAString("cumulativeAmount")
    );
    for bad in ["", "-1", "+1", "01", "1e6", "1.0", " 1"] {
        assert_eq!(
            with("cumulativeAmount", json!(bad)),
            M::Amount {
                field: "cumulativeAmount",
                error: AmountError::NotCanonical
            },
            "{bad:?}"
        );
    }
    let over = format!("{}0", u128::MAX);
    for big in [over.as_str(), "340282366920938463463374607431768211456"] {
        assert_eq!(
            with("cumulativeAmount", json!(big)),
            M::Amount {
                field: "cumulativeAmount",
                error: AmountError::Overflow
            }
        );
    }
    assert_eq!(parse_amount(&u128::MAX.to_string()), Ok(u128::MAX));
    assert!(matches!(with("channelId", json!(&CHANNEL[..40])), M::ChannelId(_)));
    assert!(matches!(with("signature", json!("0x1234")), M::Signature(_)));
    let mut j = voucher_json("voucher");
    j.as_object_mut().unwrap().remove("signature");
    assert_eq!(parse_payload(&j), Err(M::Missing("signature")));
    let open = |tx: serde_json::Value, ty: &str| {
        parse_payload(
            &json!({"action": "open", "type": ty, "channelId": CHANNEL, "transaction": tx, "cumulativeAmount": "0", "signature": SIG}),
        )
    };
    assert_eq!(open(json!(OPEN_BATCH), "hash"), Err(M::NotTransaction("open")));
    assert_eq!(open(json!(&OPEN_BATCH[2..]), "transaction"), Err(M::TransactionNotHex));
    assert_eq!(open(json!("0x"), "transaction"), Err(M::TransactionSize));
    assert_eq!(
        open(
            json!(format!("0x{}", "00".repeat(MAX_PAYLOAD_TX_BYTES + 1))),
            "transaction"
        ),
        Err(M::TransactionSize)
    );
    let mut j = json!({"action": "open", "type": "transaction", "channelId": CHANNEL, "transaction": OPEN_BATCH, "cumulativeAmount": "0", "signature": SIG});
    j["authorizedSigner"] = json!("0x".to_owned() + &"a".repeat(5000));
    let err = parse_payload(&j).unwrap_err();
    assert!(matches!(err, M::AuthorizedSigner(_)));
    assert!(
        err.to_string().len() < 200,
        "the error quotes a bounded part of the input"
    );
}

// ---- accounting ----

fn chain() -> OnChain {
    OnChain {
        finalized: false,
        close_requested_at: 0,
        payer: PAYER,
        payee: PAYEE,
        token: TOKEN,
        authorized_signer: Address::ZERO,
        deposit: 1_000,
        settled: 0,
    }
}

fn v(cumulative: u128) -> Voucher {
    Voucher {
        channel_id: cid(CHANNEL),
        cumulative,
        signature: sig(),
    }
}

const TERMS: Terms = Terms {
    price: 10,
    min_delta: 5,
};

#[test]
fn a_voucher_that_covers_the_price_is_persisted_and_served() {
    let s = ChannelState::fresh(chain(), 100);
    let Decision::Serve { state, advanced } = decide(&s, &v(30), PAYER, &TERMS) else {
        panic!()
    };
    assert!(advanced);
    assert_eq!(
        (state.accepted, state.spent, state.served, state.signature),
        (30, 10, 1, Some(sig()))
    );
    // The same voucher again: an idempotent retry served from what is left.
    let Decision::Serve { state, advanced } = decide(&state, &v(30), PAYER, &TERMS) else {
        panic!()
    };
    assert!(!advanced);
    assert_eq!((state.accepted, state.spent), (30, 20));
    // A lower one too (the spec: 200 with the current state).
    let Decision::Serve { state, .. } = decide(&state, &v(12), PAYER, &TERMS) else {
        panic!()
    };
    assert_eq!((state.accepted, state.spent), (30, 30));
    // Nothing left: the client needs a voucher of spent + price.
    assert_eq!(
        decide(&state, &v(30), PAYER, &TERMS),
        Decision::Refuse(SessionProblem::InsufficientBalance {
            required_cumulative: 40
        })
    );
    assert!(state.insufficient(10));
}

#[test]
fn an_advancing_voucher_too_small_for_the_price_is_still_accepted() {
    let s = ChannelState::fresh(chain(), 100);
    let Decision::AcceptOnly {
        state,
        required_cumulative,
    } = decide(&s, &v(5), PAYER, &TERMS)
    else {
        panic!()
    };
    assert_eq!((state.accepted, state.spent, required_cumulative), (5, 0, 10));
}

#[test]
fn what_the_chain_settled_counts_as_accepted_and_spent() {
    let s = ChannelState::fresh(
        OnChain {
            settled: 100,
            ..chain()
        },
        0,
    );
    assert_eq!((s.accepted, s.spent, s.available()), (100, 100, 0));
    assert_eq!(
        decide(&s, &v(50), PAYER, &TERMS),
        Decision::Refuse(SessionProblem::InsufficientBalance {
            required_cumulative: 110
        })
    );
}

#[test]
fn every_refusal_of_a_voucher_is_reachable() {
    use SessionProblem::*;
    let s = ChannelState::fresh(chain(), 0);
    let with = |c: OnChain| ChannelState::fresh(c, 0);
    let cases = [
        (
            with(OnChain {
                finalized: true,
                ..chain()
            }),
            v(30),
            PAYER,
            ChannelFinalized,
        ),
        (
            with(OnChain {
                payer: Address::ZERO,
                ..chain()
            }),
            v(30),
            PAYER,
            ChannelNotFound,
        ),
        (
            s.clone(),
            v(30),
            DELEGATE,
            SignerMismatch {
                signer: DELEGATE,
                expected: PAYER,
            },
        ),
        (
            with(OnChain {
                authorized_signer: DELEGATE,
                ..chain()
            }),
            v(30),
            PAYER,
            SignerMismatch {
                signer: PAYER,
                expected: DELEGATE,
            },
        ),
        (
            with(OnChain {
                close_requested_at: 7,
                ..chain()
            }),
            v(30),
            PAYER,
            CloseRequested { requested_at: 7 },
        ),
        (
            s.clone(),
            v(1_001),
            PAYER,
            AmountExceedsDeposit {
                cumulative: 1_001,
                deposit: 1_000,
            },
        ),
        (s.clone(), v(4), PAYER, DeltaTooSmall { delta: 4, min: 5 }),
        (
            s.clone(),
            v(0),
            PAYER,
            InsufficientBalance {
                required_cumulative: 10,
            },
        ),
    ];
    for (state, voucher, signer, want) in cases {
        assert_eq!(
            decide(&state, &voucher, signer, &TERMS),
            Decision::Refuse(want.clone()),
            "{want}"
        );
    }
    let spent_all = ChannelState {
        spent: u128::MAX,
        accepted: u128::MAX,
        ..with(OnChain {
            deposit: u128::MAX,
            ..chain()
        })
    };
    assert_eq!(
        decide(&spent_all, &v(u128::MAX), PAYER, &TERMS),
        Decision::Refuse(Overflow)
    );
}

#[test]
fn a_public_voucher_is_no_retry_and_a_closing_channel_takes_no_voucher() {
    let s = ChannelState {
        accepted: 40,
        spent: 10,
        ..ChannelState::fresh(OnChain { settled: 30, ..chain() }, 0)
    };
    let terms = Terms {
        price: 10,
        min_delta: 0,
    };
    // 30 is settled on chain; 40 is still secret and covers retries.
    assert_eq!(
        decide(&s, &v(30), PAYER, &terms),
        Decision::Refuse(SessionProblem::InsufficientBalance {
            required_cumulative: 41
        })
    );
    assert!(matches!(decide(&s, &v(40), PAYER, &terms), Decision::Serve { .. }));
    // Handed to the settler, 40 is public too; a higher one serves.
    let published = ChannelState {
        published: 40,
        ..s.clone()
    };
    assert!(matches!(
        decide(&published, &v(40), PAYER, &terms),
        Decision::Refuse(SessionProblem::InsufficientBalance { .. })
    ));
    match decide(&published, &v(50), PAYER, &terms) {
        Decision::Serve { state, .. } => assert_eq!((state.accepted, state.spent), (50, 20)),
        other => panic!("{other:?}"),
    }
    let closing = ChannelState { closing: true, ..s };
    assert_eq!(
        decide(&closing, &v(50), PAYER, &terms),
        Decision::Refuse(SessionProblem::ChannelFinalized)
    );
    assert_eq!(check_close(&closing, &v(40), PAYER), Ok(()));
    assert_eq!(
        check_close(&closing, &v(50), PAYER),
        Err(SessionProblem::ChannelFinalized)
    );
}

#[test]
fn a_close_settles_at_least_what_was_accepted() {
    let s = ChannelState {
        accepted: 30,
        ..ChannelState::fresh(chain(), 0)
    };
    assert_eq!(check_close(&s, &v(30), PAYER), Ok(()));
    assert_eq!(
        check_close(&s, &v(29), PAYER),
        Err(SessionProblem::AmountNotIncreasing {
            cumulative: 29,
            accepted: 30
        })
    );
    assert_eq!(
        check_close(&s, &v(2_000), PAYER),
        Err(SessionProblem::AmountExceedsDeposit {
            cumulative: 2_000,
            deposit: 1_000
        })
    );
    assert!(matches!(
        check_close(&s, &v(30), DELEGATE),
        Err(SessionProblem::SignerMismatch { .. })
    ));
}

#[test]
fn channel_state_round_trips_compact_with_amounts_as_strings() {
    let s = ChannelState {
        accepted: u128::MAX,
        signature: Some(sig()),
        spent: 3,
        ..ChannelState::fresh(chain(), 9)
    };
    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(j["a"], json!(u128::MAX.to_string()));
    assert_eq!(j["c"]["d"], json!("1000"));
    assert_eq!(serde_json::from_value::<ChannelState>(j).unwrap(), s);
    let none = ChannelState::fresh(chain(), 9);
    assert_eq!(
        serde_json::from_value::<ChannelState>(serde_json::to_value(&none).unwrap()).unwrap(),
        none
    );
}

#[test]
fn problems_have_the_spec_types_and_statuses() {
    use SessionProblem::*;
    assert_eq!(
        InvalidSignature(SignatureProblem::HighS).problem_type(),
        "https://paymentauth.org/problems/session/invalid-signature"
    );
    assert_eq!(
        (ChannelNotFound.slug(), ChannelNotFound.status()),
        ("session/channel-not-found", 410)
    );
    assert_eq!(
        (ChannelFinalized.slug(), ChannelFinalized.status()),
        ("session/channel-finalized", 410)
    );
    assert_eq!(
        InsufficientBalance { required_cumulative: 1 }.slug(),
        "session/insufficient-balance"
    );
    assert_eq!(DeltaTooSmall { delta: 1, min: 2 }.status(), 402);
    assert_eq!(NotAnOpen.slug(), "verification-failed");
    assert_eq!((TxReverted.slug(), TxReverted.status()), ("verification-failed", 402));
}

// ---- request and receipt ----

#[test]
fn the_session_request_is_what_mppx_sessionlegacy_reads() {
    let r = SessionRequest {
        amount: 25,
        currency: TOKEN,
        recipient: PAYEE,
        escrow: ESCROW,
        chain_id: CHAIN,
        min_voucher_delta: Some(25),
        suggested_deposit: Some(10_000_000),
    };
    assert_eq!(
        r.to_value(),
        json!({
            "amount": "25", "unitType": "request", "suggestedDeposit": "10000000",
            "currency": "0x20c0000000000000000000000000000000000001",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "methodDetails": {"escrowContract": "0xe1c4d3dce17bc111181ddf716f75bae49e61a336", "chainId": 42431,
                "minVoucherDelta": "25", "sessionProtocol": "v1"},
        })
    );
    let bare = SessionRequest {
        min_voucher_delta: None,
        suggested_deposit: None,
        ..r
    };
    assert!(bare.to_value().get("suggestedDeposit").is_none());
    assert!(bare.to_value()["methodDetails"].get("minVoucherDelta").is_none());
}

#[test]
fn the_receipt_carries_the_channel_as_reference() {
    let at = time::macros::datetime!(2025-01-06 12:08:30 UTC);
    let r = receipt("c_1", &cid(SPEC_CHANNEL), 250_000, 237_500, None, at);
    assert_eq!(
        r,
        json!({"method": "tempo", "intent": "session", "status": "success", "timestamp": "2025-01-06T12:08:30Z",
            "challengeId": "c_1", "reference": SPEC_CHANNEL, "channelId": SPEC_CHANNEL,
            "acceptedCumulative": "250000", "spent": "237500"})
    );
    let h: crate::credential::TxHash = format!("0x{}", "ab".repeat(32)).parse().unwrap();
    assert_eq!(
        receipt("c_1", &cid(SPEC_CHANNEL), 1, 1, Some(&h), at)["txHash"],
        json!(h.to_string())
    );
}

#[test]
fn decisions_keep_the_accounting_invariants_over_a_grid() {
    for accepted in 0..12u128 {
        for spent in 0..=accepted {
            for cumulative in 0..14u128 {
                for price in 0..4u128 {
                    for min_delta in 0..3u128 {
                        let s = ChannelState {
                            accepted,
                            spent,
                            ..ChannelState::fresh(OnChain { deposit: 12, ..chain() }, 0)
                        };
                        let terms = Terms { price, min_delta };
                        match decide(&s, &v(cumulative), PAYER, &terms) {
                            Decision::Serve { state, advanced } => {
                                assert_eq!(state.accepted, accepted.max(cumulative));
                                assert_eq!(advanced, cumulative > accepted);
                                assert_eq!(state.spent, spent + price);
                                assert!(state.spent <= state.accepted && state.accepted <= 12);
                            }
                            Decision::AcceptOnly {
                                state,
                                required_cumulative,
                            } => {
                                assert!(cumulative > accepted && cumulative - accepted >= min_delta);
                                assert_eq!((state.accepted, state.spent), (cumulative, spent));
                                assert_eq!(required_cumulative, spent + price);
                                assert!(required_cumulative > cumulative);
                            }
                            Decision::Refuse(p) => assert!(
                                cumulative > 12
                                    // A zero voucher is at the public mark (nothing settled).
                                    || cumulative == 0
                                    || (cumulative > accepted && cumulative - accepted < min_delta)
                                    || accepted.max(cumulative) - spent < price,
                                "{p} for {accepted} {spent} {cumulative} {price} {min_delta}"
                            ),
                        }
                    }
                }
            }
        }
    }
}

/// `is_by` must agree with a recovery on every signature, including the
/// near misses a forger would try: the other parity, another key, another
/// digest, and arbitrary `(r, s)` that may recover to some key or none.
#[test]
fn a_known_key_check_agrees_with_recovery_on_every_signature() {
    let key = sig().recover_key(&DIGEST).unwrap();
    assert_eq!(key.address(), PAYER);
    assert!(sig().is_by(&DIGEST, &key));
    assert!(!sig().is_by(&keccak256(b"another digest"), &key));

    let mut flipped = sig().to_bytes();
    flipped[64] ^= 27 ^ 28;
    let flipped = VoucherSignature::from_slice(&flipped).unwrap();
    assert!(!flipped.is_by(&DIGEST, &key), "the other parity recovers another key");
    assert_ne!(flipped.recover(&DIGEST), Ok(PAYER));

    let stranger = k256::ecdsa::SigningKey::from_slice(keccak256(b"stranger").as_slice()).unwrap();
    let (mut signed, rid) = stranger.sign_prehash_recoverable(DIGEST.as_slice()).unwrap();
    let mut odd = rid.is_y_odd();
    if let Some(low) = signed.normalize_s() {
        signed = low;
        odd = !odd;
    }
    let mut bytes = [0u8; 65];
    bytes[..64].copy_from_slice(&signed.to_bytes());
    bytes[64] = if odd { 28 } else { 27 };
    let by_stranger = VoucherSignature::from_slice(&bytes).unwrap();
    let stranger_key = by_stranger.recover_key(&DIGEST).unwrap();
    assert_ne!(stranger_key.address(), PAYER);
    assert!(by_stranger.is_by(&DIGEST, &stranger_key));
    assert!(!by_stranger.is_by(&DIGEST, &key));
    assert!(!sig().is_by(&DIGEST, &stranger_key));

    // Arbitrary low-s signatures: whatever they recover to (or not),
    // `is_by` says yes only for that key.
    let mut agreed = 0;
    for i in 0u32..400 {
        let mut bytes = [0u8; 65];
        bytes[..32].copy_from_slice(keccak256(i.to_be_bytes()).as_slice());
        bytes[32..64].copy_from_slice(keccak256((i + 1_000_000).to_be_bytes()).as_slice());
        bytes[32] &= 0x7f;
        bytes[64] = 27 + (i % 2) as u8;
        let Ok(forged) = VoucherSignature::from_slice(&bytes) else {
            continue;
        };
        match forged.recover_key(&DIGEST) {
            Ok(k) => {
                assert!(forged.is_by(&DIGEST, &k), "#{i}");
                assert_eq!(forged.recover(&DIGEST), Ok(k.address()), "#{i}");
                assert!(!forged.is_by(&DIGEST, &key), "#{i}");
                agreed += 1;
            }
            Err(_) => {
                assert!(!forged.is_by(&DIGEST, &key), "#{i}");
                assert!(!forged.is_by(&DIGEST, &stranger_key), "#{i}");
            }
        }
    }
    assert!(agreed > 100, "too few recoverable samples: {agreed}");
}
