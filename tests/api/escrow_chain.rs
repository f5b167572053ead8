//! MPP sessions (v1) on the dev chain: the `TempoStreamChannel` escrow
//! deployed on anvil and driven with cast, as a payer, a payee or a stranger
//! would. The creation bytecode comes from `scripts/escrow` (the crates.io
//! crate `mpp`'s test fixture, fetched by cargo, never committed).
//!
//! Facts of the deployed contract these helpers rely on (checked by
//! `tests/api/escrow.rs`): `getChannel` returns `(finalized,
//! closeRequestedAt, payer, payee, token, authorizedSigner, deposit,
//! settled)`; `topUp(bytes32,uint256)`; only the payee settles; the payer
//! withdraws what is not settled `CLOSE_GRACE_SECONDS` after `requestClose`.
//!
//! Every helper is synchronous (it runs cast or node): from an async test,
//! call it inside `tokio::task::block_in_place`.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use alloy_primitives::{Address, B256, U256, keccak256};
use serde_json::Value;

use crate::chain::{Chain, cast_bin};
use crate::helpers::RECIPIENT;

/// The payee of the test channels: dev account 1, the genome's recipient.
pub const PAYEE: &str = RECIPIENT;
pub const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// Dev account 4 deploys the escrow: its first deployment is always at
/// [`ESCROW`] on a fresh chain.
pub const DEPLOYER: &str = "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65";
pub const DEPLOYER_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
/// Where [`deploy_escrow`] puts the escrow on a fresh chain.
pub const ESCROW: &str = "0xbded0d2bf404bdcba897a74e6657f1f12e5c6fb6";
/// The key of dev account 2 ([`crate::chain::STRANGER`]).
pub const STRANGER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
pub const ZERO_ADDRESS: &str = "0x0000000000000000000000000000000000000000";
/// The escrow's `CLOSE_GRACE_PERIOD`: a payer's `withdraw` succeeds this
/// long after its `requestClose`.
pub const CLOSE_GRACE_SECONDS: u64 = 900;
/// Gas for a signed approve + open batch: anvil's `eth_fillTransaction`
/// fills about 534k where the batch uses about 1.81M.
pub const OPEN_BATCH_GAS: u64 = 3_000_000;

/// A cast transaction that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    /// Refused before mining (usually the gas estimate hit a revert).
    #[error("cast {what} was refused: {stderr}")]
    Refused { what: String, stderr: String },
    /// Mined and reverted.
    #[error("cast {what} reverted: {receipt}")]
    Reverted { what: String, receipt: Value },
}

/// `target/escrow/TempoStreamChannel.hex`, fetched by `scripts/escrow` on
/// first use.
pub fn escrow_bytecode() -> &'static str {
    static CODE: OnceLock<String> = OnceLock::new();
    CODE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/escrow"))
            .output()
            .expect("scripts/escrow runs");
        assert!(
            out.status.success(),
            "scripts/escrow failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_owned()
    })
}

/// pathUSD: [`send_from`] pays its fees in it, so that AlphaUSD balances
/// move by the amounts sent only.
pub const PATH_USD: &str = "0x20c0000000000000000000000000000000000000";

/// `cast send` from `key`, its fee paid in [`PATH_USD`]; the receipt when
/// the transaction succeeded.
pub fn send_from(chain: &Chain, key: &str, to: &str, sig: &str, args: &[&str]) -> Result<Value, CastError> {
    let what = format!("{sig} to {to}");
    let out = Command::new(cast_bin())
        .args(["send", "--rpc-url", &chain.url, "--private-key", key, "--json"])
        .args(["--tempo.fee-token", PATH_USD, to, sig])
        .args(args)
        .output()
        .expect("cast runs");
    if !out.status.success() {
        return Err(CastError::Refused {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let receipt: Value = serde_json::from_slice(&out.stdout).expect("cast send --json prints a receipt");
    if receipt["status"] != "0x1" {
        return Err(CastError::Reverted { what, receipt });
    }
    Ok(receipt)
}

/// `cast call` of a view; its decoded outputs, one per line, as cast prints
/// them (numbers followed by their scientific form, which is dropped here).
pub fn call(chain: &Chain, to: &str, sig: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(cast_bin())
        .args(["call", "--rpc-url", &chain.url, to, sig])
        .args(args)
        .output()
        .expect("cast runs");
    assert!(
        out.status.success(),
        "cast call {sig} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split(" [")
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

/// The address of a private key, lowercase.
pub fn address_of(key: &str) -> String {
    let out = Command::new(cast_bin())
        .args(["wallet", "address", key])
        .output()
        .expect("cast runs");
    assert!(out.status.success(), "cast wallet address failed");
    String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
}

/// Deploys the escrow from [`DEPLOYER_KEY`]; its address, lowercase
/// ([`ESCROW`] the first time on a chain).
pub fn deploy_escrow(chain: &Chain) -> String {
    let out = Command::new(cast_bin())
        .args([
            "send",
            "--rpc-url",
            &chain.url,
            "--private-key",
            DEPLOYER_KEY,
            "--json",
            "--create",
        ])
        .arg(escrow_bytecode())
        .output()
        .expect("cast runs");
    assert!(
        out.status.success(),
        "escrow deployment failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).expect("a receipt");
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    receipt["contractAddress"]
        .as_str()
        .expect("a contract address")
        .to_lowercase()
}

/// The 32-byte salt numbered `n`, `0x`-prefixed.
pub fn salt(n: u64) -> String {
    B256::from(U256::from(n)).to_string()
}

fn address(a: &str) -> Address {
    a.parse().unwrap_or_else(|_| panic!("not an address: {a}"))
}

/// `keccak256(abi.encode(payer, payee, token, salt, authorizedSigner,
/// escrow, chainId))`, computed here (not by the contract).
pub fn channel_id(
    payer: &str,
    payee: &str,
    token: &str,
    salt: &str,
    authorized_signer: &str,
    escrow: &str,
    chain_id: u64,
) -> String {
    let word = |a: &str| B256::left_padding_from(address(a).as_slice());
    let salt: B256 = salt.parse().expect("a 32-byte salt");
    let mut encoded = Vec::with_capacity(7 * 32);
    for w in [
        word(payer),
        word(payee),
        word(token),
        salt,
        word(authorized_signer),
        word(escrow),
        B256::from(U256::from(chain_id)),
    ] {
        encoded.extend_from_slice(w.as_slice());
    }
    keccak256(encoded).to_string()
}

/// Opens a channel from `payer_key` to `payee` with `deposit` of `token`
/// (no authorized signer: the payer signs the vouchers), as two plain
/// transactions (approve, open). Its id.
pub fn open_channel(
    chain: &Chain,
    escrow: &str,
    payer_key: &str,
    payee: &str,
    token: &str,
    deposit: u128,
    salt: &str,
) -> String {
    let deposit = deposit.to_string();
    send_from(chain, payer_key, token, "approve(address,uint256)", &[escrow, &deposit]).expect("approve");
    send_from(
        chain,
        payer_key,
        escrow,
        "open(address,address,uint128,bytes32,address)",
        &[payee, token, &deposit, salt, ZERO_ADDRESS],
    )
    .expect("open");
    channel_id(&address_of(payer_key), payee, token, salt, ZERO_ADDRESS, escrow, 42431)
}

/// A channel as `getChannel` returns it; addresses lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub finalized: bool,
    pub close_requested_at: u64,
    pub payer: String,
    pub payee: String,
    pub token: String,
    pub authorized_signer: String,
    pub deposit: u128,
    pub settled: u128,
}

pub fn channel_state(chain: &Chain, escrow: &str, id: &str) -> ChannelState {
    let v = call(
        chain,
        escrow,
        "getChannel(bytes32)(bool,uint64,address,address,address,address,uint128,uint128)",
        &[id],
    );
    assert_eq!(v.len(), 8, "getChannel: {v:?}");
    ChannelState {
        finalized: v[0] == "true",
        close_requested_at: v[1].parse().expect("closeRequestedAt"),
        payer: v[2].to_lowercase(),
        payee: v[3].to_lowercase(),
        token: v[4].to_lowercase(),
        authorized_signer: v[5].to_lowercase(),
        deposit: v[6].parse().expect("deposit"),
        settled: v[7].parse().expect("settled"),
    }
}

/// `requestClose` from the payer; panics when it does not succeed.
pub fn request_close(chain: &Chain, escrow: &str, payer_key: &str, id: &str) -> Value {
    send_from(chain, payer_key, escrow, "requestClose(bytes32)", &[id]).expect("requestClose")
}

/// `withdraw` from the payer (reverts before the grace period is over).
pub fn withdraw(chain: &Chain, escrow: &str, payer_key: &str, id: &str) -> Result<Value, CastError> {
    send_from(chain, payer_key, escrow, "withdraw(bytes32)", &[id])
}

/// Moves the chain's clock `seconds` ahead and mines a block at the new time.
pub fn increase_time(chain: &Chain, seconds: u64) {
    chain.rpc("evm_increaseTime", &[&seconds.to_string()]);
    mine(chain);
}

/// Mines one block: expiring-nonce transactions (the MPP clients') need a
/// `validBefore` within 30 s of the latest block's timestamp.
pub fn mine(chain: &Chain) {
    chain.rpc("evm_mine", &[]);
}

/// `token.balanceOf(who)`.
pub fn token_balance(chain: &Chain, token: &str, who: &str) -> u128 {
    let v = call(chain, token, "balanceOf(address)(uint256)", &[who]);
    v.first()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("balanceOf: {v:?}"))
}

/// The EIP-712 typed data of a voucher (domain "Tempo Stream Channel",
/// version "1").
pub fn voucher_typed_data(escrow: &str, chain_id: u64, channel: &str, cumulative: u128) -> Value {
    serde_json::json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Voucher": [
                {"name": "channelId", "type": "bytes32"},
                {"name": "cumulativeAmount", "type": "uint128"},
            ],
        },
        "primaryType": "Voucher",
        "domain": {
            "name": "Tempo Stream Channel",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": escrow,
        },
        "message": {"channelId": channel, "cumulativeAmount": cumulative.to_string()},
    })
}

/// `key`'s signature of the voucher `(channel, cumulative)`: 65 bytes, v 27
/// or 28, `0x`-prefixed hex.
pub fn sign_voucher(key: &str, escrow: &str, chain_id: u64, channel: &str, cumulative: u128) -> String {
    let data = voucher_typed_data(escrow, chain_id, channel, cumulative).to_string();
    let out = Command::new(cast_bin())
        .args(["wallet", "sign", "--private-key", key, "--data", &data])
        .output()
        .expect("cast runs");
    assert!(
        out.status.success(),
        "cast wallet sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `settle(channel, cumulative, signature)` sent from `sender_key` (only the
/// payee's succeeds).
pub fn settle_with_cast(
    chain: &Chain,
    escrow: &str,
    sender_key: &str,
    channel: &str,
    cumulative: u128,
    signature: &str,
) -> Result<Value, CastError> {
    send_from(
        chain,
        sender_key,
        escrow,
        "settle(bytes32,uint128,bytes)",
        &[channel, &cumulative.to_string(), signature],
    )
}

/// A type 0x76 transaction from `key` with `calls` (each a target, a
/// function signature and its arguments), signed with the account's next
/// nonce, [`OPEN_BATCH_GAS`] and twice the node's gas price, not broadcast
/// (tests/clients/tempo_batch.mjs); its fee is paid in AlphaUSD. Two signed
/// before either is broadcast share a nonce.
pub fn signed_batch(chain: &Chain, key: &str, calls: &[&[&str]]) -> String {
    let nonce = chain.rpc("eth_getTransactionCount", &[&address_of(key), "latest"]);
    let price = chain.rpc("eth_gasPrice", &[]);
    let price = u128::from_str_radix(price.trim_matches('"').trim_start_matches("0x"), 16).expect("a gas price");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("node");
    c.arg(root.join("tests/clients/tempo_batch.mjs")).args([
        "--key",
        key,
        "--chain-id",
        "42431",
        "--nonce",
        nonce.trim_matches('"'),
        "--gas",
        &OPEN_BATCH_GAS.to_string(),
        "--max-fee-per-gas",
        &(2 * price).to_string(),
    ]);
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            c.arg("+");
        }
        c.args(*call);
    }
    let out = c.output().expect("node runs");
    assert!(
        out.status.success(),
        "tempo_batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The approve + open batch an MPP client puts in an `open` credential:
/// signed, not broadcast. It opens the channel
/// `channel_id(payer, payee, token, salt, ZERO_ADDRESS, escrow, 42431)`.
pub fn signed_open_tx(
    chain: &Chain,
    escrow: &str,
    payer_key: &str,
    payee: &str,
    token: &str,
    deposit: u128,
    salt: &str,
) -> String {
    let deposit = deposit.to_string();
    signed_batch(
        chain,
        payer_key,
        &[
            &[token, "approve(address,uint256)", escrow, &deposit],
            &[
                escrow,
                "open(address,address,uint128,bytes32,address)",
                payee,
                token,
                &deposit,
                salt,
                ZERO_ADDRESS,
            ],
        ],
    )
}

/// The approve + topUp batch of a `topUp` credential: signed, not broadcast.
pub fn signed_top_up_tx(
    chain: &Chain,
    escrow: &str,
    payer_key: &str,
    token: &str,
    channel: &str,
    amount: u128,
) -> String {
    let amount = amount.to_string();
    signed_batch(
        chain,
        payer_key,
        &[
            &[token, "approve(address,uint256)", escrow, &amount],
            &[escrow, "topUp(bytes32,uint256)", channel, &amount],
        ],
    )
}

/// Broadcasts a signed transaction and waits for it; its receipt (whatever
/// its status).
pub fn broadcast(chain: &Chain, raw: &str) -> Value {
    let receipt = chain.rpc("eth_sendRawTransactionSync", &[raw]);
    serde_json::from_str(&receipt).unwrap_or_else(|_| panic!("no receipt: {receipt}"))
}

fn mppx_modules(dir: &str) -> std::path::PathBuf {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".devtools")
        .join(dir)
        .join("node_modules");
    assert!(
        modules.join("mppx").exists(),
        "{} is missing: run scripts/mpp-clients",
        modules.display()
    );
    modules
}

/// mppx 0.8.14's v1 session server (tests/clients/mppx_session_server.mjs)
/// charging `price` base units of AlphaUSD a request, paid to [`PAYEE`];
/// killed on drop.
pub struct MppxSessionServer {
    child: std::process::Child,
    pub url: String,
}

impl MppxSessionServer {
    pub fn start(chain: &Chain, escrow: &str, price: u128) -> MppxSessionServer {
        use std::io::BufRead;
        let port = crate::helpers::free_port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("tests/clients/mppx_session_server.mjs"))
            .args(["--port", &port.to_string(), "--rpc", &chain.url, "--escrow", escrow])
            .args(["--payee-key", PAYEE_KEY, "--price", &price.to_string()])
            .env("MPPX_LEGACY_NODE_MODULES", mppx_modules("mppx-legacy"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut first);
        let url = format!("http://127.0.0.1:{port}");
        if first.trim() != format!("listening {url}") {
            let _ = child.kill();
            panic!("the mppx session server did not start: {first:?}");
        }
        MppxSessionServer { child, url }
    }
}

impl Drop for MppxSessionServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tests/clients/mppx_session.mjs (mppx 0.11.0's v1 session client)
/// from [`crate::chain::PAYER_KEY`] against `url` with `args` (`--requests
/// N`, `--deposit D`, `--close`, ...), after mining a block (its open
/// transaction has an expiring nonce); the JSON line it printed, whatever
/// its outcome.
pub fn pay_session(chain: &Chain, url: &str, args: &[&str]) -> Value {
    mine(chain);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/clients/mppx_session.mjs"))
        .arg(url)
        .args(["--key", crate::chain::PAYER_KEY, "--rpc", &chain.url])
        .args(args)
        .env("MPPX_NODE_MODULES", mppx_modules("mppx"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!(
            "mppx_session printed no JSON: {stdout}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A dev chain with the session escrow deployed on it, and its address.
pub fn chain_with_escrow() -> (Chain, String) {
    let chain = Chain::start();
    let escrow = deploy_escrow(&chain);
    (chain, escrow)
}
