//! Sessions through `POST /v1/verify`, as an application that calls the
//! gate itself would see them: mppx's session client paying through
//! `tests/clients/verify_front.mjs`, and `open` / `topUp` credentials built
//! here, good, replayed, raced across two instances on one Redis, forged,
//! or garbage. Each effect is counted where it lands: the front's hits,
//! the node's broadcasts, the channel on chain, the keys in Redis.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use alloy_primitives::keccak256;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::chain::*;
use crate::escrow_chain::*;
use crate::helpers::*;
use crate::mpp_clients::payment_env;
use crate::session::{PRICE, session_genome, settler_env, wait_settled};
use crate::session_vouchers::{RESOURCE, env_on_redis, present, session_offer, voucher_payload};

const CHAIN_ID: u64 = 42431;
const MALFORMED: &str = "https://paymentauth.org/problems/malformed-credential";
const VERIFICATION_FAILED: &str = "https://paymentauth.org/problems/verification-failed";

/// `tests/clients/verify_front.mjs` in front of a gate; killed on drop.
pub struct VerifyFront {
    child: Child,
    pub url: String,
    hits: Arc<AtomicUsize>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl VerifyFront {
    pub fn start(gate: &str) -> VerifyFront {
        let port = free_port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("tests/clients/verify_front.mjs"))
            .args(["--port", &port.to_string(), "--gate", gate])
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        let _ = out.read_line(&mut first);
        let url = format!("http://127.0.0.1:{port}");
        if first.trim() != format!("listening {url}") {
            let _ = child.kill();
            panic!("verify_front did not start: {first:?}");
        }
        let hits = Arc::new(AtomicUsize::new(0));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (h, l) = (hits.clone(), lines.clone());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if line.starts_with("reached ") {
                    h.fetch_add(1, Ordering::SeqCst);
                }
                l.lock().unwrap().push(line);
            }
        });
        VerifyFront {
            child,
            url,
            hits,
            lines,
        }
    }

    /// Requests the front's handler served (after a 200 from the gate).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for VerifyFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Broadcasts the node has been asked for: the gate sends with
/// `eth_sendRawTransactionSync` (anvil logs a plain `eth_sendRawTransaction`
/// inside each too, and cast's own sends are plain ones).
fn broadcasts(chain: &Chain) -> usize {
    chain.calls("eth_sendRawTransactionSync")
}

/// The keys under `prefix` in the shared Redis.
fn redis_keys(prefix: &str) -> BTreeSet<String> {
    let out = Command::new("redis-cli")
        .args(["-u", &redis_url(), "--scan", "--pattern", &format!("{prefix}*")])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn decode_receipt(header: &str) -> Value {
    serde_json::from_slice(&B64.decode(header).expect("base64url")).expect("JSON")
}

fn tx_hash(raw: &str) -> String {
    let bytes = alloy_primitives::hex::decode(raw.trim_start_matches("0x")).unwrap();
    keccak256(bytes).to_string()
}

fn open_payload(channel: &str, tx: &str, cumulative: u128, signature: &str) -> Value {
    json!({
        "action": "open", "type": "transaction", "channelId": channel, "transaction": tx,
        "cumulativeAmount": cumulative.to_string(), "signature": signature,
    })
}

fn top_up_payload(channel: &str, tx: &str, additional: u128) -> Value {
    json!({
        "action": "topUp", "type": "transaction", "channelId": channel, "transaction": tx,
        "additionalDeposit": additional.to_string(),
    })
}

/// The id of the channel the payer opens to the payee in AlphaUSD.
fn payer_channel(escrow: &str, salt: &str) -> String {
    channel_id(PAYER, PAYEE, ALPHA_USD, salt, ZERO_ADDRESS, escrow, CHAIN_ID)
}

#[tokio::test(flavor = "multi_thread")]
async fn mppx_pays_100_requests_through_an_app_that_calls_v1_verify() {
    let w = Workdir::new();
    let (chain, escrow) = tokio::task::block_in_place(chain_with_escrow);
    let mut env = payment_env(&w.genome(&session_genome(&escrow).signed()), &chain.url);
    env.extend(settler_env(&w));
    let app = Served::start(&env);
    let front = tokio::task::block_in_place(|| VerifyFront::start(&app.url("")));
    let payee_before = tokio::task::block_in_place(|| token_balance(&chain, ALPHA_USD, PAYEE));

    let n = 100u128;
    let v = tokio::task::block_in_place(|| {
        pay_session(
            &chain,
            &format!("{}/reports/3", front.url),
            &[
                "--requests",
                &n.to_string(),
                "--deposit",
                &(PRICE * 150).to_string(),
                "--escrow",
                &escrow,
            ],
        )
    });
    assert!(v.get("error").is_none(), "{v}");
    let statuses: Vec<u64> = v["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200; n as usize], "{v}");
    let receipts = v["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), n as usize);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r["intent"], "session", "{r}");
        assert_eq!(r["spent"], (PRICE * (i as u128 + 1)).to_string(), "{r}");
    }
    assert_eq!(front.hits(), n as usize, "one handler run per paid request");

    let channel = v["channelId"].as_str().unwrap().to_owned();
    let on_chain = tokio::task::block_in_place(|| wait_settled(&chain, &escrow, &channel, PRICE * n));
    assert_eq!(
        on_chain.settled,
        PRICE * n,
        "everything served is settled, nothing more"
    );
    let payee_after = tokio::task::block_in_place(|| token_balance(&chain, ALPHA_USD, PAYEE));
    assert_eq!(
        payee_after - payee_before,
        PRICE * n,
        "the payee got exactly what was served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_hands_the_gates_refusal_to_the_client_unchanged() {
    let w = Workdir::new();
    let chain = tokio::task::block_in_place(Chain::start);
    let env = payment_env(&w.genome(&session_genome(ESCROW).signed()), &chain.url);
    let app = Served::start(&env);
    let front = tokio::task::block_in_place(|| VerifyFront::start(&app.url("")));
    let client = reqwest::Client::new();

    let r = client.get(format!("{}/reports/7", front.url)).send().await.unwrap();
    let via_front = Verified::read(r).await;
    let direct = app.verify(json!({ "resource": RESOURCE }), &[]).await;
    assert_eq!(via_front.status, 402);
    assert_eq!(via_front.header("content-type"), direct.header("content-type"));
    let schemes = |v: &Verified| -> Vec<String> {
        v.headers
            .get_all("www-authenticate")
            .iter()
            .map(|h| {
                let h = h.to_str().unwrap();
                let intent = h.split("intent=\"").nth(1).and_then(|s| s.split('"').next());
                format!("{} {}", h.split(' ').next().unwrap(), intent.unwrap_or(""))
            })
            .collect()
    };
    assert!(schemes(&direct).len() >= 2, "{:?}", direct.headers);
    assert_eq!(schemes(&via_front), schemes(&direct), "every line, in order");
    assert_eq!(via_front.body["type"], direct.body["type"]);

    let r = client
        .get(format!("{}/reports/7", front.url))
        .header("Authorization", "Payment !!!")
        .send()
        .await
        .unwrap();
    let v = Verified::read(r).await;
    assert_eq!(
        (v.status, v.body["type"].as_str()),
        (402, Some(MALFORMED)),
        "{:?}",
        v.body
    );
    assert_eq!(front.hits(), 0);
    assert!(front.lines.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_is_broadcast_once_and_serves_only_what_its_voucher_covers() {
    let w = Workdir::new();
    let prefix = unique_prefix();
    let (chain, escrow) = tokio::task::block_in_place(chain_with_escrow);
    let mut env = payment_env(&w.genome(&session_genome(&escrow).signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), prefix.clone());
    let apps = [Served::start(&env), Served::start(&env)];
    let offer = session_offer(&apps[0]).await;

    let salt = salt(7);
    let id = payer_channel(&escrow, &salt);
    let (tx, sig) = tokio::task::block_in_place(|| {
        mine(&chain);
        (
            signed_open_tx(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, PRICE * 10, &salt),
            sign_voucher(PAYER_KEY, &escrow, CHAIN_ID, &id, PRICE),
        )
    });
    let payload = open_payload(&id, &tx, PRICE, &sig);
    let before = tokio::task::block_in_place(|| broadcasts(&chain));

    // The same open at once on both instances, then twice more.
    let (a, b) = tokio::join!(
        present(&apps[0], &offer, payload.clone()),
        present(&apps[1], &offer, payload.clone())
    );
    let c = present(&apps[1], &offer, payload.clone()).await;
    let d = present(&apps[0], &offer, payload.clone()).await;
    let answers = [a, b, c, d];
    let served: Vec<&Verified> = answers.iter().filter(|v| v.status == 200).collect();
    assert_eq!(served.len(), 1, "its voucher covers one request: {answers:#?}");
    for v in answers.iter().filter(|v| v.status != 200) {
        assert_eq!(v.status, 402, "{:?}", v.body);
        assert_eq!(
            v.body["type"], "https://paymentauth.org/problems/session/insufficient-balance",
            "{:?}",
            v.body
        );
        assert_eq!(v.body["requiredCumulative"], (PRICE * 2).to_string());
    }
    let ok = served[0];
    assert_eq!(ok.body["action"], "open", "{:?}", ok.body);
    assert_eq!(ok.body["spent"], PRICE.to_string());
    assert_eq!(ok.body["txHash"], tx_hash(&tx));
    let receipt = decode_receipt(ok.header("payment-receipt"));
    assert_eq!(receipt["txHash"], tx_hash(&tx), "{receipt}");
    assert_eq!(receipt["channelId"], id.as_str(), "{receipt}");
    assert_eq!(receipt["spent"], PRICE.to_string(), "{receipt}");

    assert_eq!(
        tokio::task::block_in_place(|| broadcasts(&chain)) - before,
        1,
        "one broadcast for four presentations on two instances"
    );
    let on_chain = tokio::task::block_in_place(|| channel_state(&chain, &escrow, &id));
    assert_eq!((on_chain.payer.as_str(), on_chain.payee.as_str()), (PAYER, PAYEE));
    assert_eq!(on_chain.deposit, PRICE * 10);

    // The channel then pays with vouchers, from where the open left it.
    let sig2 = tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &escrow, CHAIN_ID, &id, PRICE * 2));
    let v = present(&apps[1], &offer, voucher_payload(&id, PRICE * 2, &sig2)).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("2000000")),
        "{:?}",
        v.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_open_is_refused_before_any_broadcast_and_writes_nothing() {
    let w = Workdir::new();
    let prefix = unique_prefix();
    let (chain, escrow) = tokio::task::block_in_place(chain_with_escrow);
    let mut env = payment_env(&w.genome(&session_genome(&escrow).signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), prefix.clone());
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let other_escrow = "0x1111111111111111111111111111111111111111";
    let deposit = (PRICE * 10).to_string();

    // Each: what is forged, the transaction, the channel id claimed, the
    // channel the transaction would open (checked absent afterwards) and
    // a word of the refusal's detail.
    let cases: Vec<(&str, String, String, String, &str)> = tokio::task::block_in_place(|| {
        mine(&chain);
        let s = |n| salt(n);
        vec![
            (
                "another payee",
                signed_open_tx(&chain, &escrow, PAYER_KEY, STRANGER, ALPHA_USD, PRICE * 10, &s(11)),
                channel_id(PAYER, STRANGER, ALPHA_USD, &s(11), ZERO_ADDRESS, &escrow, CHAIN_ID),
                channel_id(PAYER, STRANGER, ALPHA_USD, &s(11), ZERO_ADDRESS, &escrow, CHAIN_ID),
                "payee",
            ),
            (
                "another token",
                signed_batch(
                    &chain,
                    PAYER_KEY,
                    &[&[
                        &escrow,
                        "open(address,address,uint128,bytes32,address)",
                        PAYEE,
                        BETA_USD,
                        &deposit,
                        &s(12),
                        ZERO_ADDRESS,
                    ]],
                ),
                channel_id(PAYER, PAYEE, BETA_USD, &s(12), ZERO_ADDRESS, &escrow, CHAIN_ID),
                channel_id(PAYER, PAYEE, BETA_USD, &s(12), ZERO_ADDRESS, &escrow, CHAIN_ID),
                "token",
            ),
            (
                "another escrow",
                signed_batch(
                    &chain,
                    PAYER_KEY,
                    &[&[
                        other_escrow,
                        "open(address,address,uint128,bytes32,address)",
                        PAYEE,
                        ALPHA_USD,
                        &deposit,
                        &s(13),
                        ZERO_ADDRESS,
                    ]],
                ),
                channel_id(PAYER, PAYEE, ALPHA_USD, &s(13), ZERO_ADDRESS, other_escrow, CHAIN_ID),
                payer_channel(&escrow, &s(13)),
                "escrow",
            ),
            (
                "an approval of another spender",
                signed_batch(
                    &chain,
                    PAYER_KEY,
                    &[
                        &[ALPHA_USD, "approve(address,uint256)", STRANGER, &deposit],
                        &[
                            &escrow,
                            "open(address,address,uint128,bytes32,address)",
                            PAYEE,
                            ALPHA_USD,
                            &deposit,
                            &s(14),
                            ZERO_ADDRESS,
                        ],
                    ],
                ),
                payer_channel(&escrow, &s(14)),
                payer_channel(&escrow, &s(14)),
                "not one escrow open",
            ),
            (
                "a deposit below min_deposit",
                signed_open_tx(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, PRICE - 1, &s(15)),
                payer_channel(&escrow, &s(15)),
                payer_channel(&escrow, &s(15)),
                "below the minimum",
            ),
            (
                "a channel id the transaction does not open",
                signed_open_tx(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, PRICE * 10, &s(16)),
                payer_channel(&escrow, &s(99)),
                payer_channel(&escrow, &s(16)),
                "another channel",
            ),
            (
                "a stranger's open claimed as the payer's channel",
                signed_open_tx(&chain, &escrow, STRANGER_KEY, PAYEE, ALPHA_USD, PRICE * 10, &s(17)),
                payer_channel(&escrow, &s(17)),
                channel_id(STRANGER, PAYEE, ALPHA_USD, &s(17), ZERO_ADDRESS, &escrow, CHAIN_ID),
                "another channel",
            ),
        ]
    });
    let keys = redis_keys(&prefix);
    let before = tokio::task::block_in_place(|| broadcasts(&chain));
    for (what, tx, claimed, opened, detail) in &cases {
        let sig = tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &escrow, CHAIN_ID, claimed, PRICE));
        let v = present(&app, &offer, open_payload(claimed, tx, PRICE, &sig)).await;
        assert_eq!(v.status, 402, "{what}: {:?}", v.body);
        assert_eq!(v.body["type"], VERIFICATION_FAILED, "{what}: {:?}", v.body);
        let said = v.body["detail"].as_str().unwrap_or_default();
        assert!(said.contains(detail), "{what}: {said:?} lacks {detail:?}");
        assert!(v.headers.get_all("www-authenticate").iter().count() >= 2, "{what}");
        let c = tokio::task::block_in_place(|| channel_state(&chain, &escrow, opened));
        assert_eq!(c.deposit, 0, "{what}: nothing opened on chain");
    }
    assert_eq!(
        tokio::task::block_in_place(|| broadcasts(&chain)),
        before,
        "no forged open reached the node"
    );
    assert_eq!(redis_keys(&prefix), keys, "no forged open wrote anything");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_that_reverts_is_refused_and_not_broadcast_again() {
    let w = Workdir::new();
    let (chain, escrow) = tokio::task::block_in_place(chain_with_escrow);
    let mut env = payment_env(&w.genome(&session_genome(&escrow).signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), unique_prefix());
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let salt = salt(8);
    let id = payer_channel(&escrow, &salt);
    // A deposit far above the payer's balance: mined, and reverted.
    let deposit = 10u128.pow(30);
    let (tx, sig) = tokio::task::block_in_place(|| {
        mine(&chain);
        (
            signed_open_tx(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, deposit, &salt),
            sign_voucher(PAYER_KEY, &escrow, CHAIN_ID, &id, PRICE),
        )
    });
    let before = tokio::task::block_in_place(|| broadcasts(&chain));
    for _ in 0..2 {
        let v = present(&app, &offer, open_payload(&id, &tx, PRICE, &sig)).await;
        assert_eq!(
            (v.status, v.body["type"].as_str()),
            (402, Some(VERIFICATION_FAILED)),
            "{:?}",
            v.body
        );
        assert!(
            v.body["detail"].as_str().unwrap_or_default().contains("reverted"),
            "{:?}",
            v.body
        );
    }
    assert_eq!(tokio::task::block_in_place(|| broadcasts(&chain)) - before, 1);
    assert_eq!(
        tokio::task::block_in_place(|| channel_state(&chain, &escrow, &id)).deposit,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_top_up_raises_the_deposit_and_a_voucher_above_the_old_one_is_served() {
    let c = tokio::task::block_in_place(|| crate::session_vouchers::channel(PRICE * 2));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let sign = |n: u128| sign_voucher(PAYER_KEY, &c.escrow, CHAIN_ID, &c.id, PRICE * n);

    let (two, three) = tokio::task::block_in_place(|| (sign(2), sign(3)));
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 2, &two)).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("1000000")),
        "{:?}",
        v.body
    );
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &three)).await;
    assert_eq!(
        v.body["type"], "https://paymentauth.org/problems/session/amount-exceeds-deposit",
        "{:?}",
        v.body
    );

    // A topUp whose payload misstates its amount: refused, not broadcast.
    let tx = tokio::task::block_in_place(|| {
        mine(&c.chain);
        signed_top_up_tx(&c.chain, &c.escrow, PAYER_KEY, ALPHA_USD, &c.id, PRICE * 3)
    });
    let before = tokio::task::block_in_place(|| broadcasts(&c.chain));
    let v = present(&app, &offer, top_up_payload(&c.id, &tx, PRICE * 4)).await;
    assert_eq!(
        (v.status, v.body["type"].as_str()),
        (402, Some(VERIFICATION_FAILED)),
        "{:?}",
        v.body
    );
    assert_eq!(tokio::task::block_in_place(|| broadcasts(&c.chain)), before);

    // The true one: broadcast once, served from what the vouchers cover.
    let v = present(&app, &offer, top_up_payload(&c.id, &tx, PRICE * 3)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["action"], "topUp");
    assert_eq!(v.body["txHash"], tx_hash(&tx));
    assert_eq!(v.body["spent"], (PRICE * 2).to_string());
    assert_eq!(decode_receipt(v.header("payment-receipt"))["txHash"], tx_hash(&tx));
    let again = present(&app, &offer, top_up_payload(&c.id, &tx, PRICE * 3)).await;
    assert_eq!(
        again.body["type"], "https://paymentauth.org/problems/session/insufficient-balance",
        "the same topUp again pays nothing more: {:?}",
        again.body
    );
    assert_eq!(tokio::task::block_in_place(|| broadcasts(&c.chain)) - before, 1);
    let on_chain = tokio::task::block_in_place(|| channel_state(&c.chain, &c.escrow, &c.id));
    assert_eq!(on_chain.deposit, PRICE * 5);

    // A voucher above the old deposit is now served.
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &three)).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("3000000")),
        "{:?}",
        v.body
    );
}

/// `payload` with `field` set to `value` (`None`: removed).
fn with(payload: &Value, field: &str, value: Option<Value>) -> Value {
    let mut p = payload.clone();
    let o = p.as_object_mut().unwrap();
    match value {
        Some(v) => o.insert(field.into(), v),
        None => o.remove(field),
    };
    p
}

/// A 65-byte signature `r || s || v` from its parts, as hex.
fn sig_hex(r: &[u8; 32], s: &[u8; 32], v: Option<u8>) -> String {
    let mut b = r.to_vec();
    b.extend_from_slice(s);
    b.extend(v);
    format!("0x{}", alloy_primitives::hex::encode(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_in_any_field_of_a_session_credential_is_malformed() {
    let c = tokio::task::block_in_place(|| crate::session_vouchers::channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let good_sig = tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &c.escrow, CHAIN_ID, &c.id, PRICE * 2));
    let voucher = voucher_payload(&c.id, PRICE * 2, &good_sig);
    let open = open_payload(&c.id, "0x76c0", PRICE * 2, &good_sig);
    let top_up = top_up_payload(&c.id, "0x76c0", PRICE);

    let one = [1u8; 32];
    let mut high = [0xffu8; 32];
    high[0] = 0x7f; // above half the order once the parity bit is cleared
    let order = alloy_primitives::hex!("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
    let long = "9".repeat(3_000);
    let big = u128::MAX.to_string() + "0";
    let over = "340282366920938463463374607431768211456"; // u128::MAX + 1

    let mut cases: Vec<(String, Value)> = Vec::new();
    let mut add = |what: &str, p: Value| cases.push((what.to_owned(), p));
    for (what, v) in [
        ("action missing", None),
        ("action null", Some(Value::Null)),
        ("action a number", Some(json!(1))),
        ("action an object", Some(json!({"voucher": true}))),
        ("action unknown", Some(json!("pay"))),
        ("action in another case", Some(json!("Voucher"))),
        ("action empty", Some(json!(""))),
        ("action overlong", Some(json!(long))),
    ] {
        add(what, with(&voucher, "action", v));
    }
    for (what, v) in [
        ("channelId missing", None),
        ("channelId without 0x", Some(json!(c.id.trim_start_matches("0x")))),
        ("channelId not hex", Some(json!(format!("0x{}", "zz".repeat(32))))),
        ("channelId short", Some(json!(&c.id[..65]))),
        ("channelId long", Some(json!(format!("{}00", c.id)))),
        ("channelId overlong", Some(json!(format!("0x{long}")))),
        ("channelId a number", Some(json!(12345))),
        ("channelId an array", Some(json!([c.id]))),
    ] {
        add(what, with(&voucher, "channelId", v));
    }
    for (what, v) in [
        ("amount missing", None),
        ("amount negative", Some(json!("-2000000"))),
        ("amount signed", Some(json!("+2000000"))),
        ("amount a number", Some(json!(2_000_000))),
        ("amount a float", Some(json!(2.5))),
        ("amount with an exponent", Some(json!("2e6"))),
        ("amount with a leading zero", Some(json!("02000000"))),
        ("amount hex", Some(json!("0x1e8480"))),
        ("amount empty", Some(json!(""))),
        ("amount with spaces", Some(json!(" 2000000"))),
        ("amount u128::MAX + 1", Some(json!(over))),
        ("amount ten times u128::MAX", Some(json!(big))),
        ("amount overlong", Some(json!(long))),
    ] {
        add(what, with(&voucher, "cumulativeAmount", v));
    }
    for (what, v) in [
        ("signature missing", None),
        ("signature not hex", Some(json!(format!("0x{}", "gg".repeat(65))))),
        ("signature without 0x", Some(json!(good_sig.trim_start_matches("0x")))),
        ("signature with 0X", Some(json!(format!("0X{}", &good_sig[2..])))),
        ("signature of odd length", Some(json!(format!("{good_sig}0")))),
        ("signature empty", Some(json!("0x"))),
        ("signature of 63 bytes", Some(json!(&good_sig[..128]))),
        ("signature of 66 bytes", Some(json!(format!("{good_sig}1b")))),
        ("signature overlong", Some(json!(format!("0x{long}")))),
        ("signature a number", Some(json!(27))),
        ("signature v 0", Some(json!(format!("{}00", &good_sig[..130])))),
        ("signature v 1", Some(json!(format!("{}01", &good_sig[..130])))),
        ("signature v 29", Some(json!(format!("{}1d", &good_sig[..130])))),
        ("signature v 255", Some(json!(format!("{}ff", &good_sig[..130])))),
        (
            "65-byte signature with r 0",
            Some(json!(sig_hex(&[0; 32], &one, Some(27)))),
        ),
        (
            "65-byte signature with s 0",
            Some(json!(sig_hex(&one, &[0; 32], Some(27)))),
        ),
        (
            "65-byte signature with r = n",
            Some(json!(sig_hex(&order, &one, Some(27)))),
        ),
        (
            "65-byte signature with high s",
            Some(json!(sig_hex(&one, &[0xee; 32], Some(28)))),
        ),
        ("64-byte signature with r 0", Some(json!(sig_hex(&[0; 32], &one, None)))),
        ("64-byte signature with high s", Some(json!(sig_hex(&one, &high, None)))),
    ] {
        add(what, with(&voucher, "signature", v));
    }
    for (what, p) in [
        ("open of type hash", with(&open, "type", Some(json!("hash")))),
        ("open without type", with(&open, "type", None)),
        ("open without transaction", with(&open, "transaction", None)),
        (
            "open transaction not hex",
            with(&open, "transaction", Some(json!("0xzz"))),
        ),
        (
            "open transaction without 0x",
            with(&open, "transaction", Some(json!("76c0"))),
        ),
        ("open transaction empty", with(&open, "transaction", Some(json!("0x")))),
        (
            "open transaction of odd length",
            with(&open, "transaction", Some(json!("0x76c"))),
        ),
        (
            "open transaction overlong",
            with(&open, "transaction", Some(json!(format!("0x{}", "00".repeat(4_097))))),
        ),
        (
            "open transaction a number",
            with(&open, "transaction", Some(json!(118))),
        ),
        (
            "open authorizedSigner short",
            with(&open, "authorizedSigner", Some(json!("0x1234"))),
        ),
        (
            "open authorizedSigner not hex",
            with(&open, "authorizedSigner", Some(json!(format!("0x{}", "zz".repeat(20))))),
        ),
        (
            "open authorizedSigner overlong",
            with(&open, "authorizedSigner", Some(json!(format!("0x{long}")))),
        ),
        (
            "open authorizedSigner a number",
            with(&open, "authorizedSigner", Some(json!(0))),
        ),
        (
            "open amount negative",
            with(&open, "cumulativeAmount", Some(json!("-1"))),
        ),
        (
            "open signature v 0",
            with(&open, "signature", Some(json!(format!("{}00", &good_sig[..130])))),
        ),
        ("topUp of type hash", with(&top_up, "type", Some(json!("hash")))),
        (
            "topUp without additionalDeposit",
            with(&top_up, "additionalDeposit", None),
        ),
        (
            "topUp deposit negative",
            with(&top_up, "additionalDeposit", Some(json!("-1000000"))),
        ),
        (
            "topUp deposit overflowing",
            with(&top_up, "additionalDeposit", Some(json!(over))),
        ),
        (
            "topUp deposit a number",
            with(&top_up, "additionalDeposit", Some(json!(1_000_000))),
        ),
        (
            "topUp channelId not hex",
            with(&top_up, "channelId", Some(json!("0xnothex"))),
        ),
        (
            "close amount overflowing",
            with(
                &with(&voucher, "action", Some(json!("close"))),
                "cumulativeAmount",
                Some(json!(big)),
            ),
        ),
        ("payload an array", json!([voucher.clone()])),
        ("payload a string", json!("voucher")),
        ("payload null", Value::Null),
        ("payload empty", json!({})),
    ] {
        add(what, p);
    }

    for (what, payload) in &cases {
        let v = present(&app, &offer, payload.clone()).await;
        assert_eq!(v.status, 402, "{what}: {:?}", v.body);
        assert_eq!(v.body["type"], MALFORMED, "{what}: {:?}", v.body);
        assert!(v.headers.get_all("www-authenticate").iter().count() >= 2, "{what}");
    }
    // Nothing was deducted: the good voucher serves its two requests, as
    // 65 bytes and in its 64-byte (EIP-2098) spelling.
    let v = present(&app, &offer, voucher.clone()).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("1000000")),
        "{:?}",
        v.body
    );
    let compact = compact(&good_sig);
    let v = present(&app, &offer, with(&voucher, "signature", Some(json!(compact)))).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("2000000")),
        "{:?}",
        v.body
    );
}

/// The EIP-2098 spelling of a 65-byte signature: the parity in s's top bit.
fn compact(sig: &str) -> String {
    let mut b = alloy_primitives::hex::decode(sig.trim_start_matches("0x")).unwrap();
    let v = b.pop().unwrap();
    if v == 28 {
        b[32] |= 0x80;
    }
    format!("0x{}", alloy_primitives::hex::encode(b))
}

/// Undecodable bytes in a well-formed `transaction` field: refused before
/// any broadcast, as a transaction that does not do what the challenge
/// asks (`verification-failed`), never 500 or 200.
#[tokio::test(flavor = "multi_thread")]
async fn undecodable_open_and_top_up_transactions_are_refused_unbroadcast() {
    let c = tokio::task::block_in_place(|| crate::session_vouchers::channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let sig = tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &c.escrow, CHAIN_ID, &c.id, PRICE));
    let before = tokio::task::block_in_place(|| broadcasts(&c.chain));
    let mut answers = HashMap::new();
    for tx in ["0x00", "0x76", "0x76c0", "0x02c0", "0xdeadbeef", "0xf8"] {
        for p in [open_payload(&c.id, tx, PRICE, &sig), top_up_payload(&c.id, tx, PRICE)] {
            let v = present(&app, &offer, p.clone()).await;
            assert_eq!(v.status, 402, "{p}: {:?}", v.body);
            answers.insert(
                format!("{} {tx}", p["action"]),
                v.body["type"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    for (what, t) in &answers {
        assert!(t == VERIFICATION_FAILED || t == MALFORMED, "{what}: {t}");
    }
    assert_eq!(tokio::task::block_in_place(|| broadcasts(&c.chain)), before);
}

/// A denied payer's session `open` is refused before its transaction is
/// broadcast (the channel stays unopened on chain, nothing accepted);
/// allowed again, the very same open is broadcast once and serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_payers_open_is_never_broadcast_until_allowed() {
    let w = Workdir::new();
    let db = crate::pg::FreshDb::new();
    let (chain, escrow) = tokio::task::block_in_place(chain_with_escrow);
    let mut env = payment_env(&w.genome(&session_genome(&escrow).signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), unique_prefix());
    crate::ledger::with_ledger(&mut env, &db.url(), "gate-a");
    let (token, digest) = crate::admin::mint();
    crate::admin::with_admin(&mut env, &token, &digest);
    crate::ledger::migrate(&env);
    let app = Served::start(&env);
    let admin = crate::admin::Admin::of(&app, &token);
    assert_eq!(admin.deny(PAYER, "probe").await.status, 200);
    let offer = session_offer(&app).await;

    let salt = salt(9);
    let id = payer_channel(&escrow, &salt);
    let (tx, sig) = tokio::task::block_in_place(|| {
        mine(&chain);
        (
            signed_open_tx(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, PRICE * 10, &salt),
            sign_voucher(PAYER_KEY, &escrow, CHAIN_ID, &id, PRICE),
        )
    });
    let payload = open_payload(&id, &tx, PRICE, &sig);
    let before = tokio::task::block_in_place(|| broadcasts(&chain));
    let refused = present(&app, &offer, payload.clone()).await;
    assert_eq!(refused.status, 402, "{:?}", refused.body);
    assert_eq!(refused.reason(), "payer_denied", "{:?}", refused.body);
    assert_eq!(
        tokio::task::block_in_place(|| broadcasts(&chain)),
        before,
        "never broadcast"
    );
    let on_chain = tokio::task::block_in_place(|| channel_state(&chain, &escrow, &id));
    assert_eq!(on_chain.deposit, 0, "the channel was not opened");

    assert_eq!(admin.allow(PAYER).await.status, 200);
    let served = present(&app, &offer, payload).await;
    assert_eq!(served.status, 200, "{:?}", served.body);
    assert_eq!(served.body["action"], "open");
    assert_eq!(tokio::task::block_in_place(|| broadcasts(&chain)), before + 1);
}
