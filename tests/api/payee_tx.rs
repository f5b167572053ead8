//! The payee's own transactions through the `RpcPool` actor against a real
//! Tempo dev chain: `PrepareTx` for the nonce and fees, a signature by
//! `settlegate_rules::tx_sign`, `Broadcast`, and the receipt on chain (the
//! fee is charged in a TIP-20 token). `EthCall` on a TIP-20 `balanceOf`,
//! and a reverting call as `RpcError::Reverted`, asked of one node only.

use std::process::Command;
use std::time::Duration;

use actix::{Actor, Addr};
use alloy_primitives::{Address, Bytes, U256};
use serde_json::Value;
use settlegate_actors::rpc_pool::{
    Broadcast, EndpointState, EthCall, MAX_FEE_PER_GAS_CEILING, MIN_GAS_LIMIT, PoolConfig, PoolStatus, PrepareTx,
    RpcError, RpcMetrics, RpcPool, Submitted,
};
use settlegate_rules::tx_sign::{Eip1559, PayeeKey};

use crate::chain::{Chain, STRANGER, cast_bin};
use crate::helpers::ALPHA_USD;

const CHAIN_ID: u64 = 42431;
/// Dev account 1 of the test mnemonic (public), the payee here.
const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn pool(urls: &[String]) -> Addr<RpcPool> {
    let config = PoolConfig {
        urls: urls.iter().map(|u| u.parse().unwrap()).collect(),
        call_timeout: Duration::from_secs(3),
        probe_interval: None,
        expose_hosts: false,
    };
    RpcPool::new(config, RpcMetrics::default()).unwrap().start()
}

fn word(a: Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    w
}

fn balance_of_call(who: Address) -> Bytes {
    let mut d = vec![0x70, 0xa0, 0x82, 0x31];
    d.extend_from_slice(&word(who));
    d.into()
}

fn transfer_call(to: Address, amount: u64) -> Bytes {
    let mut d = vec![0xa9, 0x05, 0x9c, 0xbb];
    d.extend_from_slice(&word(to));
    d.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    d.into()
}

async fn balance(pool: &Addr<RpcPool>, token: Address, who: Address) -> U256 {
    let out = pool
        .send(EthCall {
            to: token,
            data: balance_of_call(who),
            chain_id: CHAIN_ID,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), 32, "{out}");
    U256::from_be_slice(&out)
}

/// `cast call token "balanceOf(address)(uint256)" who`: an independent read.
fn cast_balance(chain: &Chain, token: &str, who: &str) -> U256 {
    let out = Command::new(cast_bin())
        .args([
            "call",
            "--rpc-url",
            &chain.url,
            token,
            "balanceOf(address)(uint256)",
            who,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[actix::test]
async fn a_prepared_and_signed_payee_transaction_is_mined_and_pays_its_fee_in_a_token() {
    let chain = Chain::start();
    let pool = pool(std::slice::from_ref(&chain.url));
    let key = PayeeKey::parse(PAYEE_KEY).unwrap();
    let token: Address = ALPHA_USD.parse().unwrap();
    let to: Address = STRANGER.parse().unwrap();
    let amount = 1_234_567u64;

    let before = balance(&pool, token, to).await;
    assert_eq!(before, cast_balance(&chain, ALPHA_USD, STRANGER));
    assert!(balance(&pool, token, key.address()).await > U256::from(amount));

    let data = transfer_call(to, amount);
    let prepare = PrepareTx {
        from: key.address(),
        to: token,
        data: data.clone(),
        chain_id: CHAIN_ID,
    };
    let params = pool.send(prepare.clone()).await.unwrap().unwrap();
    assert!(params.gas_limit >= MIN_GAS_LIMIT, "{params:?}");
    assert!(
        params.max_fee_per_gas >= params.max_priority_fee_per_gas
            && params.max_fee_per_gas <= u128::from(MAX_FEE_PER_GAS_CEILING),
        "{params:?}"
    );
    let tx = Eip1559 {
        chain_id: CHAIN_ID,
        nonce: params.nonce,
        gas_limit: params.gas_limit,
        max_fee_per_gas: params.max_fee_per_gas,
        max_priority_fee_per_gas: params.max_priority_fee_per_gas,
        to: token,
        value: U256::ZERO,
        data: data.to_vec(),
    };
    let signed = tx.sign(&key).unwrap();
    let submitted = pool
        .send(Broadcast {
            raw: signed.raw.clone().into(),
            chain_id: CHAIN_ID,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(submitted, Submitted::Mined | Submitted::Accepted),
        "{submitted:?}"
    );

    let receipt: Value =
        serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[&signed.hash.to_string()])).unwrap();
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(receipt["type"], "0x2", "{receipt}");
    let payee = format!("{:#x}", key.address());
    assert_eq!(
        receipt["feePayer"].as_str().map(str::to_ascii_lowercase),
        Some(payee.clone())
    );
    // the fee: a TIP-20 Transfer from the payee to the fee manager
    let fee_manager = "000000000000000000000000feec000000000000000000000000000000000000";
    let fee_paid = receipt["logs"].as_array().unwrap().iter().any(|l| {
        let topics = l["topics"].as_array().unwrap();
        topics.len() == 3
            && topics[1].as_str().unwrap().ends_with(&payee[2..])
            && topics[2].as_str().unwrap().ends_with(fee_manager)
    });
    assert!(fee_paid, "no fee transfer in {receipt}");

    assert_eq!(balance(&pool, token, to).await, before + U256::from(amount));
    assert_eq!(
        balance(&pool, token, to).await,
        cast_balance(&chain, ALPHA_USD, STRANGER)
    );
    // the next preparation sees the mined nonce
    let next = pool.send(prepare.clone()).await.unwrap().unwrap();
    assert_eq!(next.nonce, params.nonce + 1);

    // a call that would revert cannot be prepared
    let mut too_much = prepare.clone();
    too_much.data = transfer_call(to, u64::MAX);
    let refused = pool.send(too_much).await.unwrap();
    assert!(matches!(refused, Err(RpcError::Reverted(_))), "{refused:?}");
    // and no node on another chain is asked
    let mut elsewhere = prepare;
    elsewhere.chain_id = 1;
    let wrong = pool.send(elsewhere).await.unwrap();
    assert_eq!(wrong, Err(RpcError::WrongChain { got: CHAIN_ID, want: 1 }));
}

#[actix::test]
async fn a_reverting_call_is_an_answer_not_a_fault_and_is_not_asked_again() {
    let chain = Chain::start();
    // two endpoints, one node: a retry would show as a second eth_call
    let urls = [chain.url.clone(), format!("http://localhost:{}", chain.port)];
    let pool = pool(&urls);
    let token: Address = ALPHA_USD.parse().unwrap();
    let before = chain.calls("eth_call");
    let reverted = pool
        .send(EthCall {
            to: token,
            data: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            chain_id: CHAIN_ID,
        })
        .await
        .unwrap();
    let Err(RpcError::Reverted(data)) = &reverted else {
        panic!("{reverted:?}")
    };
    assert!(data.len() >= 4, "the revert data is kept: {data}");
    assert_eq!(reverted.as_ref().unwrap_err().cause(), "rpc_reverted");
    assert_eq!(chain.calls("eth_call") - before, 1, "asked once");
    let status = pool
        .send(PoolStatus {
            probe: false,
            chain_id: CHAIN_ID,
        })
        .await
        .unwrap();
    for e in &status {
        assert_eq!(e.consecutive_failures, 0, "{status:?}");
        assert_ne!(e.state, EndpointState::Failing, "{status:?}");
    }
    // oversized call data is refused before any node is asked
    let big = pool
        .send(EthCall {
            to: token,
            data: vec![0u8; settlegate_actors::rpc_pool::MAX_CALL_DATA_BYTES + 1].into(),
            chain_id: CHAIN_ID,
        })
        .await
        .unwrap();
    assert!(matches!(big, Err(RpcError::TooLarge { .. })), "{big:?}");
    assert_eq!(chain.calls("eth_call") - before, 1);
}
