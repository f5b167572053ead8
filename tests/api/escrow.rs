//! The session test infrastructure (`escrow_chain.rs`) against the real
//! escrow on anvil: each helper does on chain what it says, so the session
//! tests built on it test the gate, not the helpers; and the v1 session
//! client (mppx 0.11.0) pays the v1 session server (mppx 0.8.14), the peer
//! the gate is compared with, with the channel checked on chain.

use crate::chain::*;
use crate::escrow_chain::*;
use crate::helpers::ALPHA_USD;

const DEPOSIT: u128 = 10_000_000;

#[test]
fn the_escrow_deploys_where_expected_with_the_voucher_domain_and_grace_period() {
    let (chain, escrow) = chain_with_escrow();
    assert_eq!(escrow, ESCROW);
    let domain = call(
        &chain,
        &escrow,
        "eip712Domain()(bytes1,string,string,uint256,address,bytes32,uint256[])",
        &[],
    );
    assert_eq!(domain[1..4], ["Tempo Stream Channel", "1", "42431"], "{domain:?}");
    assert_eq!(domain[4].to_lowercase(), escrow);
    let grace = call(&chain, &escrow, "CLOSE_GRACE_PERIOD()(uint64)", &[]);
    assert_eq!(grace, [CLOSE_GRACE_SECONDS.to_string()]);
    assert_eq!(address_of(PAYEE_KEY), PAYEE);
    assert_eq!(address_of(DEPLOYER_KEY), DEPLOYER);
    assert_eq!(address_of(STRANGER_KEY), STRANGER);
}

#[test]
fn an_opened_channel_has_the_computed_id_and_holds_the_deposit() {
    let (chain, escrow) = chain_with_escrow();
    let before = token_balance(&chain, ALPHA_USD, PAYER);
    let id = open_channel(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, DEPOSIT, &salt(7));
    let by_contract = call(
        &chain,
        &escrow,
        "computeChannelId(address,address,address,bytes32,address)(bytes32)",
        &[PAYER, PAYEE, ALPHA_USD, &salt(7), ZERO_ADDRESS],
    );
    assert_eq!(by_contract, std::slice::from_ref(&id));
    assert_eq!(
        channel_state(&chain, &escrow, &id),
        ChannelState {
            finalized: false,
            close_requested_at: 0,
            payer: PAYER.into(),
            payee: PAYEE.into(),
            token: ALPHA_USD.into(),
            authorized_signer: ZERO_ADDRESS.into(),
            deposit: DEPOSIT,
            settled: 0,
        }
    );
    // plain sends pay their fee in pathUSD: AlphaUSD moved by the deposit only
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYER), before - DEPOSIT);
    assert_eq!(token_balance(&chain, ALPHA_USD, &escrow), DEPOSIT);
    // another salt, another channel, nothing in it
    let other = channel_id(PAYER, PAYEE, ALPHA_USD, &salt(8), ZERO_ADDRESS, &escrow, 42431);
    assert_eq!(channel_state(&chain, &escrow, &other).deposit, 0);
}

#[test]
fn settled_vouchers_pay_the_payee_exactly_the_growth_of_the_cumulative_amount() {
    let (chain, escrow) = chain_with_escrow();
    let id = open_channel(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, DEPOSIT, &salt(1));
    let start = token_balance(&chain, ALPHA_USD, PAYEE);

    let first = sign_voucher(PAYER_KEY, &escrow, 42431, &id, 1_500_000);
    assert_eq!(first.len(), 2 + 130, "{first}");
    assert!(first.ends_with("1b") || first.ends_with("1c"), "v is 27 or 28: {first}");
    settle_with_cast(&chain, &escrow, PAYEE_KEY, &id, 1_500_000, &first).unwrap();
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYEE), start + 1_500_000);

    let second = sign_voucher(PAYER_KEY, &escrow, 42431, &id, 4_000_000);
    settle_with_cast(&chain, &escrow, PAYEE_KEY, &id, 4_000_000, &second).unwrap();
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYEE), start + 4_000_000);
    assert_eq!(channel_state(&chain, &escrow, &id).settled, 4_000_000);

    // the same voucher again, a stranger settling, a stranger's signature: refused
    assert!(settle_with_cast(&chain, &escrow, PAYEE_KEY, &id, 4_000_000, &second).is_err());
    let third = sign_voucher(PAYER_KEY, &escrow, 42431, &id, 5_000_000);
    assert!(settle_with_cast(&chain, &escrow, STRANGER_KEY, &id, 5_000_000, &third).is_err());
    let forged = sign_voucher(STRANGER_KEY, &escrow, 42431, &id, 5_000_000);
    assert!(settle_with_cast(&chain, &escrow, PAYEE_KEY, &id, 5_000_000, &forged).is_err());
    // a voucher for another chain id does not verify here
    let elsewhere = sign_voucher(PAYER_KEY, &escrow, 4217, &id, 5_000_000);
    assert!(settle_with_cast(&chain, &escrow, PAYEE_KEY, &id, 5_000_000, &elsewhere).is_err());
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYEE), start + 4_000_000);
}

#[test]
fn after_a_close_request_the_payer_withdraws_the_rest_only_once_the_grace_period_is_over() {
    let (chain, escrow) = chain_with_escrow();
    let id = open_channel(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, DEPOSIT, &salt(2));
    let voucher = sign_voucher(PAYER_KEY, &escrow, 42431, &id, 3_000_000);
    settle_with_cast(&chain, &escrow, PAYEE_KEY, &id, 3_000_000, &voucher).unwrap();

    let receipt = request_close(&chain, &escrow, PAYER_KEY, &id);
    let block = chain.rpc(
        "eth_getBlockByNumber",
        &[receipt["blockNumber"].as_str().unwrap(), "false"],
    );
    let block: serde_json::Value = serde_json::from_str(&block).unwrap();
    let at = u64::from_str_radix(block["timestamp"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(channel_state(&chain, &escrow, &id).close_requested_at, at);

    let before = token_balance(&chain, ALPHA_USD, PAYER);
    assert!(
        withdraw(&chain, &escrow, PAYER_KEY, &id).is_err(),
        "withdrew before the grace period"
    );
    increase_time(&chain, CLOSE_GRACE_SECONDS - 60);
    assert!(
        withdraw(&chain, &escrow, PAYER_KEY, &id).is_err(),
        "withdrew before the grace period"
    );
    increase_time(&chain, 61);
    withdraw(&chain, &escrow, PAYER_KEY, &id).unwrap();
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYER), before + DEPOSIT - 3_000_000);
    let state = channel_state(&chain, &escrow, &id);
    assert!(state.finalized, "{state:?}");
    assert!(withdraw(&chain, &escrow, PAYER_KEY, &id).is_err(), "withdrew twice");
}

#[test]
fn a_signed_open_batch_is_not_broadcast_until_asked_and_then_opens_the_channel() {
    let (chain, escrow) = chain_with_escrow();
    let raw = signed_open_tx(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, DEPOSIT, &salt(3));
    assert!(raw.starts_with("0x76"), "{raw}");
    let id = channel_id(PAYER, PAYEE, ALPHA_USD, &salt(3), ZERO_ADDRESS, &escrow, 42431);
    assert_eq!(channel_state(&chain, &escrow, &id).deposit, 0);

    let receipt = broadcast(&chain, &raw);
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let state = channel_state(&chain, &escrow, &id);
    assert_eq!((state.payer.as_str(), state.deposit), (PAYER, DEPOSIT));

    let top_up = signed_top_up_tx(&chain, &escrow, PAYER_KEY, ALPHA_USD, &id, 2_500_000);
    assert_eq!(broadcast(&chain, &top_up)["status"], "0x1");
    assert_eq!(channel_state(&chain, &escrow, &id).deposit, DEPOSIT + 2_500_000);
}

#[test]
fn the_mppx_session_client_pays_the_mppx_session_server_and_the_close_settles_on_chain() {
    let (chain, escrow) = chain_with_escrow();
    let server = MppxSessionServer::start(&chain, &escrow, 250_000);
    let payee_before = token_balance(&chain, ALPHA_USD, PAYEE);
    let payer_before = token_balance(&chain, ALPHA_USD, PAYER);

    let v = pay_session(
        &chain,
        &format!("{}/reports/1", server.url),
        &["--requests", "5", "--deposit", "10000000", "--escrow", &escrow],
    );
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(v["statuses"], serde_json::json!([200, 200, 200, 200, 200]), "{v}");
    let id = v["channelId"].as_str().unwrap().to_owned();
    for (i, r) in v["receipts"].as_array().unwrap().iter().enumerate() {
        let n = i as u128 + 1;
        assert_eq!(r["intent"], "session", "{r}");
        assert_eq!(r["channelId"], id.as_str(), "{r}");
        assert_eq!(r["spent"], (n * 250_000).to_string(), "{r}");
        assert_eq!(r["acceptedCumulative"], (n * 250_000).to_string(), "{r}");
    }
    // opened by the client's batch (broadcast by the server), nothing settled yet
    let state = channel_state(&chain, &escrow, &id);
    assert_eq!(
        (state.payer.as_str(), state.payee.as_str(), state.token.as_str()),
        (PAYER, PAYEE, ALPHA_USD)
    );
    assert_eq!((state.deposit, state.settled, state.finalized), (10_000_000, 0, false));
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYEE), payee_before);

    // the same client, another run: a cooperative close settles what was spent
    // (a new session: the client keeps no state between runs)
    let v = pay_session(
        &chain,
        &format!("{}/reports/2", server.url),
        &[
            "--requests",
            "2",
            "--deposit",
            "3000000",
            "--escrow",
            &escrow,
            "--close",
        ],
    );
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(v["close"]["spent"], "500000", "{v}");
    let closed = v["channelId"].as_str().unwrap();
    assert_ne!(closed, id);
    assert!(channel_state(&chain, &escrow, closed).finalized);
    assert_eq!(token_balance(&chain, ALPHA_USD, PAYEE), payee_before + 500_000);
    // the payer paid its fees in AlphaUSD (0x76 transactions with feeToken
    // AlphaUSD), so its balance fell by the deposits kept and more
    assert!(token_balance(&chain, ALPHA_USD, PAYER) < payer_before - 10_000_000 - 500_000);
}
