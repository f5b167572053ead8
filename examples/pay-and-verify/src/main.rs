//! Pays for one request through settlegate, the way a service or agent that
//! calls it would:
//!
//! 1. `POST /v1/verify` without a credential: 402, whose `paymentInfo` says
//!    what to pay (token, amount, recipient, chain);
//! 2. a TIP-20 `transfer` on Tempo for exactly that, signed and sent with
//!    alloy, and its receipt;
//! 3. `POST /v1/verify` with the transaction hash: 200 and the settlement
//!    (retried while the gate answers 402 `PAYMENT_PENDING` or 503, with the
//!    same `Idempotency-Key`, so a retry is never charged twice);
//! 4. the same hash once more without the key: 402 `REPLAYED`.
//!
//! ```text
//! PAYER_PRIVATE_KEY=0x... cargo run --manifest-path examples/pay-and-verify/Cargo.toml -- \
//!     --gate http://127.0.0.1:8402 --rpc http://127.0.0.1:8545 --resource "GET /reports/42"
//! ```
//!
//! The key comes from the environment, never from the command line (where
//! `ps` shows it). Prints one JSON line with the settlement on success and
//! exits non-zero on any other outcome. Plain HTTP only as built here: for an
//! `https://` gate or node, add reqwest's and alloy's rustls features.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use serde::Deserialize;
use serde_json::{Value, json};

sol! {
    /// The TIP-20 call a payment is (tempo-chain.md): an ERC-20 `transfer`.
    function transfer(address to, uint256 amount) returns (bool);
}

/// What the gate's 402 says to pay (`paymentInfo`, API.md).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentInfo {
    recipient: Address,
    amount: String,
    token: Address,
    chain_id: u64,
}

type Error = Box<dyn std::error::Error>;

struct Args {
    gate: String,
    rpc: String,
    resource: String,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        gate: "http://127.0.0.1:8402".into(),
        rpc: "http://127.0.0.1:8545".into(),
        resource: "GET /reports/42".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gate" => a.gate = value,
            "--rpc" => a.rpc = value,
            "--resource" => a.resource = value,
            _ => {
                return Err(format!("unknown flag {flag} (--gate URL, --rpc URL, --resource \"METHOD /path\")").into());
            }
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("pay-and-verify: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Error> {
    let args = args()?;
    let signer: PrivateKeySigner = std::env::var("PAYER_PRIVATE_KEY")
        .map_err(|_| "set PAYER_PRIVATE_KEY to the paying account's private key (0x + 64 hex)")?
        .parse()
        .map_err(|e| format!("PAYER_PRIVATE_KEY: {e}"))?;
    let payer = signer.address();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let verify = format!("{}/v1/verify", args.gate.trim_end_matches('/'));

    // 1. What does this request cost?
    let res = http
        .post(&verify)
        .json(&json!({ "resource": args.resource }))
        .send()
        .await?;
    if res.status() != 402 {
        return Err(format!("asked without paying, expected 402, got {}", res.status()).into());
    }
    let problem: Value = res.json().await?;
    let info: PaymentInfo = serde_json::from_value(problem["paymentInfo"].clone())
        .map_err(|e| format!("the 402 has no usable paymentInfo ({e}): {problem}"))?;
    let amount: U256 = info.amount.parse().map_err(|e| format!("paymentInfo.amount: {e}"))?;
    eprintln!(
        "402: pay {} of token {} to {} on chain {}",
        info.amount, info.token, info.recipient, info.chain_id
    );

    // 2. Pay exactly that, on the chain the gate names (a payment on
    // another chain would be refused as wrong_chain, and lost to us).
    let provider = ProviderBuilder::new().wallet(signer).connect_http(args.rpc.parse()?);
    let chain_id = provider.get_chain_id().await?;
    if chain_id != info.chain_id {
        return Err(format!(
            "the node at {} is chain {chain_id}, the gate wants {}",
            args.rpc, info.chain_id
        )
        .into());
    }
    let call = transferCall {
        to: info.recipient,
        amount,
    };
    let tx = TransactionRequest::default()
        .with_from(payer)
        .with_to(info.token)
        .with_input(call.abi_encode());
    let receipt = provider.send_transaction(tx).await?.get_receipt().await?;
    if !receipt.status() {
        return Err(format!("the transfer {} reverted", receipt.transaction_hash).into());
    }
    let tx_hash = receipt.transaction_hash;
    eprintln!("paid: tx {tx_hash} in block {:?}", receipt.block_number);

    // 3. Present it. PAYMENT_PENDING (the gate's node has not seen the
    // receipt yet) and 503 consume nothing: retry after Retry-After, with
    // the same Idempotency-Key, so that a retry whose first answer was lost
    // gets the settlement again instead of REPLAYED.
    let idempotency_key = format!("pay-and-verify-{tx_hash}");
    let body = json!({ "tx_hash": tx_hash.to_string(), "resource": args.resource });
    let mut attempt = 0;
    let settlement = loop {
        attempt += 1;
        let res = http
            .post(&verify)
            .header("Idempotency-Key", &idempotency_key)
            .json(&body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
            .min(10);
        let answer: Value = res.json().await?;
        let retryable = status == 503 || answer["code"] == "PAYMENT_PENDING";
        match status {
            200 => break answer,
            _ if retryable && attempt < 10 => {
                eprintln!("{status} {}: retrying in {retry_after} s", answer["code"]);
                tokio::time::sleep(Duration::from_secs(retry_after)).await;
            }
            _ => return Err(format!("presented {tx_hash}: {status} {answer}").into()),
        }
    };
    eprintln!(
        "200: settled {} from {} (block {})",
        settlement["amount"], settlement["payer"], settlement["block_number"]
    );

    // 4. The payment bought one answer: the same hash without the key is a replay.
    let res = http.post(&verify).json(&body).send().await?;
    let status = res.status().as_u16();
    let replay: Value = res.json().await?;
    if status != 402 || replay["code"] != "REPLAYED" {
        return Err(format!("presented {tx_hash} again, expected 402 REPLAYED, got {status} {replay}").into());
    }
    eprintln!("402 REPLAYED: the payment cannot be used twice");

    println!("{}", json!({ "settlement": settlement, "replay": replay["code"] }));
    Ok(())
}
