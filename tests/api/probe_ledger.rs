//! Probes of the books, the admin API and the deny list: for each rule the
//! README states, the nearest thing that should fail, on the binary, real
//! PostgreSQL, Redis and anvil. A denied payer by another scheme or
//! spelling, retries that must add no row, tokens and routes where they
//! must not work, and the edges of the readers' parameters.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::admin::{Admin, mint, start_with_admin, with_admin};
use crate::chain::*;
use crate::helpers::*;
use crate::ledger::{booked, migrate, rows_settle_at, with_ledger};
use crate::lookup::ready;
use crate::payment::{bound_memo, credential, did, echo, hash_payload, payment_offer};
use crate::pg::FreshDb;

const KEY: &str = "probe26-idempotency-key-0123456789";

/// The Payment challenge of a fresh 402.
async fn offer(app: &Served) -> HashMap<String, String> {
    let v = app.verify(json!({}), &[]).await;
    assert_eq!(v.status, 402, "{:?}", v.body);
    payment_offer(&v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_payer_is_refused_by_every_scheme_and_spelling_and_retries_add_no_row() {
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert(
        "SETTLEGATE_PAYMENT__SECRET".into(),
        "probe26-payment-secret-0123456789abcdef-not-for-production".into(),
    );
    let (app, admin) = start_with_admin(&mut env, &db.url(), &token, &digest).await;

    // Paid before the denial, with an Idempotency-Key.
    let p0 = tokio::task::block_in_place(|| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000));
    let body = json!({ "credential": format!("Tempo {p0}") });
    let v = app.verify(body.clone(), &[("Idempotency-Key", KEY)]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        rows_settle_at(&db, 1, Duration::from_secs(10)).await,
        BTreeSet::from([p0.clone()])
    );

    // Denied under another spelling: `0X` and upper-case digits.
    let shouting = format!("0X{}", PAYER[2..].to_ascii_uppercase());
    let v = admin.deny(&shouting, "probe").await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["payer"], PAYER, "stored as enforcement matches it");
    let dup = admin.deny(PAYER, "again").await;
    assert_eq!(dup.status, 200);
    assert_eq!(
        admin.ok("/admin/v1/denials").await["denials"].as_array().unwrap().len(),
        1,
        "one payer, whatever its spelling"
    );

    // The payment made before the denial keeps its answers, and adds no row.
    let v = app.verify(body.clone(), &[("Idempotency-Key", KEY)]).await;
    assert_eq!(v.status, 200, "its idempotent retry: {:?}", v.body);
    assert_eq!(v.body["idempotent_replay"], true);
    let v = app.verify_hash(&p0).await;
    assert_eq!(v.code(), "REPLAYED", "{:?}", v.body);
    // The same payment through the Payment scheme: consumed once.
    let o = offer(&app).await;
    let v = app
        .verify(
            json!({ "credential": credential(&echo(&o), hash_payload(&p0), Some(&did(PAYER))) }),
            &[],
        )
        .await;
    assert_eq!(v.status, 402, "{:?}", v.body);

    // A new payment by the denied payer: refused by either scheme, with or
    // without a source, and with a checksummed source.
    let p1 = tokio::task::block_in_place(|| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000));
    let v = app.verify_hash(&p1).await;
    assert_eq!((v.status, v.reason()), (402, "payer_denied"), "{:?}", v.body);
    let o = offer(&app).await;
    let h2 = tokio::task::block_in_place(|| chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&o)));
    let checksummed = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    for source in [Some(did(PAYER)), None, Some(did(checksummed))] {
        let cred = credential(&echo(&o), hash_payload(&h2), source.as_deref());
        let v = app.verify(json!({ "credential": cred }), &[]).await;
        assert_eq!(
            (v.status, v.reason()),
            (402, "payer_denied"),
            "source {source:?}: {:?}",
            v.body
        );
    }
    // By the Tempo scheme with an Idempotency-Key: refused too.
    let v = app
        .verify(
            json!({ "credential": format!("Tempo {p1}") }),
            &[("Idempotency-Key", "probe26-other-key-0123456789")],
        )
        .await;
    assert_eq!(v.reason(), "payer_denied", "{:?}", v.body);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(booked(&db), BTreeSet::from([p0.clone()]), "nothing refused was booked");

    // Allowed again (by yet another spelling): both pay, once each.
    let v = admin.allow(checksummed).await;
    assert_eq!(v.body, json!({"payer": PAYER, "removed": true}));
    assert_eq!(app.verify_hash(&p1).await.status, 200);
    let cred = credential(&echo(&o), hash_payload(&h2), Some(&did(PAYER)));
    let v = app.verify(json!({ "credential": cred.clone() }), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(app.verify(json!({ "credential": cred }), &[]).await.code(), "REPLAYED");
    assert_eq!(
        rows_settle_at(&db, 3, Duration::from_secs(10)).await,
        BTreeSet::from([p0.clone(), p1.clone(), h2.clone()])
    );
    assert_eq!(
        db.query("SELECT count(*) FROM payments")[0],
        "3",
        "one row per consume, none per retry or replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_only_in_one_bearer_header_and_the_listeners_do_not_cross() {
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    with_ledger(&mut env, &db.url(), "gate-a");
    // The digest configured with upper-case hex digits: the same digest.
    let upper = format!("sha256:{}", digest[7..].to_ascii_uppercase());
    with_admin(&mut env, &token, &upper);
    migrate(&env);
    let app = Served::start(&env);
    let admin = Admin::of(&app, &token);
    assert_eq!(admin.ok("/admin/v1/denials").await, json!({ "denials": [] }));

    // The token anywhere but one `Bearer <token>` header: 401.
    for path in [
        format!("/admin/v1/denials?access_token={token}"),
        format!("/admin/v1/denials?token={token}"),
    ] {
        let v = admin.send(reqwest::Method::GET, &path, None, None).await;
        assert_eq!(v.status, 401, "{path}");
    }
    let long = format!("Bearer {}", "a".repeat(60_000));
    for auth in [
        format!("Bearer\t{token}"),
        format!("Bearer {token} {token}"),
        format!("Bearer {token},"),
        format!("Token {token}"),
        format!("Bearer={token}"),
        format!("Bearer {}", token.to_ascii_uppercase()),
        long,
    ] {
        let v = admin
            .send(reqwest::Method::GET, "/admin/v1/denials", Some(&auth), None)
            .await;
        assert!(
            v.status == 401 || v.status == 431,
            "{:?}: {} {:?}",
            &auth[..auth.len().min(40)],
            v.status,
            v.body
        );
    }
    // A digest is not a token.
    let v = admin
        .send(
            reqwest::Method::GET,
            "/admin/v1/denials",
            Some(&format!("Bearer {digest}")),
            None,
        )
        .await;
    assert_eq!(v.status, 401);
    let v = admin
        .send(
            reqwest::Method::GET,
            "/admin/v1/denials",
            Some(&format!("Bearer {}", &digest[7..])),
            None,
        )
        .await;
    assert_eq!(v.status, 401);

    // The gate's API is not on the admin listener, even with the token.
    let client = http_client();
    for (method, path) in [
        (reqwest::Method::POST, "/v1/verify"),
        (reqwest::Method::GET, "/metrics"),
        (reqwest::Method::GET, "/readyz"),
        (reqwest::Method::GET, "/v1/authorize"),
        (reqwest::Method::GET, "/openapi.json"),
    ] {
        let r = client
            .request(method.clone(), format!("{}{path}", admin.base))
            .header("authorization", admin.bearer())
            .json(&json!({ "credential": "Tempo 0x00" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path} on the admin listener");
    }
    // The admin API is not on the gate's listener, even with the token.
    for (method, path) in [
        (reqwest::Method::GET, "/admin/v1/payments".to_owned()),
        (reqwest::Method::GET, "/admin/v1/revenue?by=day".to_owned()),
        (reqwest::Method::GET, "/admin/v1/sessions".to_owned()),
        (reqwest::Method::GET, "/admin/v1/webhooks".to_owned()),
        (reqwest::Method::PUT, format!("/admin/v1/denials/{PAYER}")),
        (reqwest::Method::DELETE, format!("/admin/v1/denials/{PAYER}")),
    ] {
        let r = client
            .request(method.clone(), app.url(&path))
            .header("authorization", admin.bearer())
            .json(&json!({ "reason": "x" }))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 404 || r.status() == 405,
            "{method} {path} on the gate: {}",
            r.status()
        );
    }
    assert_eq!(
        db.query("SELECT count(*) FROM payer_denials")[0],
        "0",
        "nothing denied through the gate's listener"
    );

    // Parameters at and past their edges.
    for (path, status) in [
        ("/admin/v1/payments?limit=-1", 400),
        ("/admin/v1/payments?limit=1e2", 400),
        ("/admin/v1/payments?limit=", 400),
        ("/admin/v1/payments?limit=4294967297", 400),
        ("/admin/v1/payments?limit=500", 200),
        ("/admin/v1/payments?limit=1", 200),
        (
            "/admin/v1/payments?payer=0xf39fd6e51aad88f6f4ce6ab8827279cfffb9226",
            400,
        ),
        (
            "/admin/v1/payments?payer=0xf39fd6e51aad88f6f4ce6ab8827279cfffb922666",
            400,
        ),
        (
            "/admin/v1/payments?payer=%200xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            400,
        ),
        ("/admin/v1/payments?from=9999-12-31T23:59:59Z", 200),
        ("/admin/v1/payments?from=0000-01-01T00:00:00Z", 200),
        ("/admin/v1/payments?to=0000-01-01T00:00:00Z", 200),
        (
            "/admin/v1/payments?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            200,
        ),
        (
            "/admin/v1/payments?from=2026-01-01T00:00:00.5Z&to=2026-01-01T00:00:00Z",
            400,
        ),
        ("/admin/v1/payments?from=10000-01-01T00:00:00Z", 400),
        ("/admin/v1/payments?route=", 400),
        ("/admin/v1/payments?route=%00", 400),
        ("/admin/v1/payments?scheme=Tempo", 400),
        ("/admin/v1/revenue?by=day&from=9999-12-31T23:59:59Z", 200),
        ("/admin/v1/revenue?by=day&by=route", 400),
        ("/admin/v1/revenue?by=day&limit=1", 400),
        ("/admin/v1/webhooks?limit=0", 400),
        ("/admin/v1/webhooks?limit=501", 400),
        ("/admin/v1/webhooks?state=gone", 400),
        ("/admin/v1/webhooks?after=-1", 400),
    ] {
        let v = admin.get(path).await;
        assert_eq!(v.status, status, "{path}: {:?}", v.body);
        if status == 400 {
            assert_eq!(v.code(), "INVALID_REQUEST", "{path}");
        }
    }
    let v = admin.get("/admin/v1/revenue?by=day&from=9999-12-31T23:59:59Z").await;
    assert_eq!(v.body["totals"], json!([]), "{:?}", v.body);

    // Neither the token nor its digest reaches the log.
    let logs: String = app
        .logs
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!logs.contains(&token));
    assert!(!logs.to_ascii_lowercase().contains(&digest[7..]));
}

/// A fault injector's reply, kept for the rest of the run.
fn reply(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_redirects_are_not_followed_and_big_answers_are_cut() {
    use crate::webhooks::{secret_file, states, wait_for, with_webhook};
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (file, secret) = secret_file(&w, "probe");
    // Fault injectors: no real receiver redirects or floods on demand.
    let target = FaultInjector::start(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
    let redirect = FaultInjector::start(Some(reply(
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {}/stolen\r\ncontent-length: 0\r\n\r\n",
            target.url
        )
        .into_bytes(),
    )));
    let mut refusal = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 200000\r\n\r\n".to_vec();
    refusal.extend(std::iter::repeat_n(b'\n', 10).chain(std::iter::repeat_n(b'x', 199_990)));
    let huge = FaultInjector::start(Some(reply(refusal)));
    let mut endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        endless.extend(b"2000\r\n");
        endless.extend(std::iter::repeat_n(b'y', 0x2000));
        endless.extend(b"\r\n");
    }
    let endless = FaultInjector::start(Some(reply(endless)));
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    with_ledger(&mut env, &db.url(), "gate-a");
    with_webhook(&mut env, "redirect", &format!("{}/hook", redirect.url), &file);
    with_webhook(&mut env, "huge", &format!("{}/hook", huge.url), &file);
    with_webhook(&mut env, "endless", &format!("{}/hook", endless.url), &file);
    env.insert("SETTLEGATE_WEBHOOKS__TIMEOUT_MS".into(), "1500".into());
    env.insert("SETTLEGATE_WEBHOOKS__MAX_ATTEMPTS".into(), "2".into());
    env.insert("SETTLEGATE_WEBHOOKS__BACKOFF_BASE_MS".into(), "200".into());
    env.insert("SETTLEGATE_WEBHOOKS__BACKOFF_MAX_MS".into(), "200".into());
    migrate(&env);
    let app = Served::start(&env);
    ready(&app).await;

    let hash = tokio::task::block_in_place(|| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000));
    assert_eq!(app.verify_hash(&hash).await.status, 200);
    wait_for(Duration::from_secs(20), "two dead letters and one delivery", || {
        states(&db) == std::collections::BTreeMap::from([("dead".to_owned(), 2), ("delivered".to_owned(), 1)])
    })
    .await;
    let rows = db.query(
        "SELECT endpoint, state, attempts, coalesce(last_status::text, '-'), coalesce(last_error, '') \
         FROM webhook_deliveries ORDER BY endpoint",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    // A 2xx whose body runs past 64 KiB delivered, without the timeout.
    assert!(rows[0].starts_with("endless|delivered|1|200|"), "{rows:?}");
    // A refusal's body: at most 200 characters of it, on one line.
    assert!(rows[1].starts_with("huge|dead|2|500|"), "{rows:?}");
    let error = rows[1].splitn(5, '|').nth(4).unwrap();
    assert!(error.chars().count() <= 220 && !error.contains('\n'), "{error:?}");
    // A redirect is a failed attempt, and its target never hears of it.
    assert!(rows[2].starts_with("redirect|dead|2|307|"), "{rows:?}");
    assert_eq!(target.requests(), 0, "the redirect was followed");

    // The secret is nowhere the operator reads.
    let logs: String = app
        .logs
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let readyz = reqwest::get(app.url("/readyz")).await.unwrap().text().await.unwrap();
    let table = db
        .query("SELECT row_to_json(d)::text FROM webhook_deliveries d")
        .join("\n");
    let key = secret.trim_start_matches("whsec_");
    for (name, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("readyz", &readyz),
        ("table", &table),
    ] {
        assert!(!text.contains(key), "the webhook secret is in the {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_past_i64_and_sums_past_u64_are_booked_and_summed_exactly() {
    use crate::escrow_chain::{STRANGER_KEY, send_from};
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    let (app, admin) = start_with_admin(&mut env, &db.url(), &token, &digest).await;

    // 10^19 > i64::MAX; with 1.5 * 10^19 the sum is past u64::MAX.
    let (big, bigger) = ("10000000000000000000", "15000000000000000000");
    let (a, b) = tokio::task::block_in_place(|| {
        let r = chain.send(&[], ALPHA_USD, "transfer(address,uint256)", &[RECIPIENT, big]);
        assert_eq!(r["status"], "0x1", "{r}");
        let s = send_from(
            &chain,
            STRANGER_KEY,
            ALPHA_USD,
            "transfer(address,uint256)",
            &[RECIPIENT, bigger],
        )
        .unwrap();
        assert_eq!(s["status"], "0x1", "{s}");
        (
            r["transactionHash"].as_str().unwrap().to_owned(),
            s["transactionHash"].as_str().unwrap().to_owned(),
        )
    });
    for h in [&a, &b] {
        let v = app.verify_hash(h).await;
        assert_eq!(v.status, 200, "{:?}", v.body);
    }
    rows_settle_at(&db, 2, Duration::from_secs(10)).await;
    assert_eq!(
        db.query("SELECT amount::text FROM payments ORDER BY amount"),
        vec![big.to_owned(), bigger.to_owned()]
    );
    let page = admin.ok("/admin/v1/payments?limit=500").await;
    let amounts: BTreeSet<&str> = page["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, BTreeSet::from([big, bigger]));
    let total = "25000000000000000000";
    for by in ["route", "payer", "day"] {
        let r = admin.ok(&format!("/admin/v1/revenue?by={by}")).await;
        assert_eq!(r["totals"][0]["amount"], total, "by {by}: {r}");
        assert_eq!(r["totals"][0]["payments"], 2, "by {by}: {r}");
    }
    let r = admin.ok(&format!("/admin/v1/revenue?by=payer&payer={PAYER}")).await;
    assert_eq!(r["totals"][0]["amount"], big, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_payers_proof_on_a_free_route_claims_nothing_until_allowed() {
    use crate::proof::{address_of, free_genome, key, offer_for, present, proof_payload, proof_v3};
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = crate::mpp_clients::payment_env(&w.genome(&free_genome().signed()), &chain.url);
    let (app, admin) = start_with_admin(&mut env, &db.url(), &token, &digest).await;
    let payer = key(PAYER_KEY);
    let me = address_of(&payer);

    // Denied by its checksummed spelling; the source names it checksummed.
    assert_eq!(admin.deny(&me.to_checksum(None), "probe").await.status, 200);
    let offer = offer_for(&app, "GET /free/x").await;
    let cred = credential(
        &echo(&offer),
        proof_payload(&proof_v3(&payer, me, &offer)),
        Some(&crate::proof::did(me)),
    );
    // Lower-case source too.
    let lower = credential(
        &echo(&offer),
        proof_payload(&proof_v3(&payer, me, &offer)),
        Some(&did(PAYER)),
    );
    for c in [&cred, &lower] {
        let v = present(&app, "GET /free/x", c).await;
        assert_eq!((v.status, v.reason()), (402, "payer_denied"), "{:?}", v.body);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(db.query("SELECT count(*) FROM payments")[0], "0");

    // Allowed: the same proof passes once (its challenge was not claimed).
    assert_eq!(admin.allow(PAYER).await.status, 200);
    let v = present(&app, "GET /free/x", &cred).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(present(&app, "GET /free/x", &lower).await.code(), "REPLAYED");
    rows_settle_at(&db, 1, Duration::from_secs(10)).await;
    assert_eq!(
        db.query("SELECT kind, payer, amount::text FROM payments"),
        vec![format!("proof|{PAYER}|0")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_voucher_at_the_outbox_bound_serves_nothing_and_pays_after_the_drain() {
    use crate::escrow_chain::sign_voucher;
    use crate::session::PRICE;
    use crate::session_vouchers::{channel, env_on_redis, present, session_offer, voucher_payload};

    let c = tokio::task::block_in_place(|| channel(PRICE * 50));
    let db = FreshDb::new();
    let w = Workdir::new();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    with_ledger(&mut env, &db.url(), "gate-a");
    // Not migrated yet: the outbox only grows, to its bound of 3.
    env.insert("SETTLEGATE_LEDGER__OUTBOX_MAX".into(), "3".into());
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let sign =
        |cumulative: u128| tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &c.escrow, 42431, &c.id, cumulative));

    // One request per voucher, until the bound refuses one.
    let mut served = 0u128;
    let refused = loop {
        let k = served + 1;
        assert!(k <= 10, "the outbox bound never refused a voucher");
        let v = present(&app, &offer, voucher_payload(&c.id, PRICE * k, &sign(PRICE * k))).await;
        if v.status == 200 {
            served = k;
            continue;
        }
        break v;
    };
    assert!(served >= 1, "the first voucher is under the bound");
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    // The same voucher again, still full: refused again, nothing served.
    let k = served + 1;
    let again = present(&app, &offer, voucher_payload(&c.id, PRICE * k, &sign(PRICE * k))).await;
    assert_eq!(again.status, 503, "{:?}", again.body);

    // Drained: the refused voucher serves its request, once.
    migrate(&env);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = present(&app, &offer, voucher_payload(&c.id, PRICE * k, &sign(PRICE * k))).await;
        if v.status != 503 {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never drained: {:?}", v.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v.status, 200, "the refused voucher was not accepted: {:?}", v.body);
    let spent = v.body.clone();
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * k, &sign(PRICE * k))).await;
    assert_eq!(v.status, 402, "its credit is spent: {:?} (first: {spent:?})", v.body);

    // The books: k requests, k prices accepted and spent, nothing more.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let want = format!("{}|{}|{k}", PRICE * k, PRICE * k);
    loop {
        let row = db.query("SELECT accepted, spent, served FROM channels");
        if row == [want.clone()] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{row:?} != {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events =
        db.query("SELECT kind, count(*), sum(amount), sum(requests) FROM channel_events GROUP BY kind ORDER BY kind");
    assert!(
        events.iter().any(|e| e == &format!("voucher|{k}|{}|0", PRICE * k)),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_bad_input_by_code_and_never_prints_the_database_password() {
    use crate::ledger::ledger_cli;
    let db = FreshDb::new();
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    with_ledger(&mut env, &db.url(), "cli");
    migrate(&env);
    let run = |args: &[&str], env: &HashMap<String, String>| tokio::task::block_in_place(|| ledger_cli(args, env));

    // Bad input: 2, with the parameter named, nothing written.
    for (args, names) in [
        (vec!["payments", "--limit", "0"], "limit"),
        (vec!["payments", "--limit=-1"], "limit"),
        (vec!["payments", "--payer", "0x12"], "payer"),
        (vec!["payments", "--cursor", "bm90LWEtY3Vyc29y"], "cursor"),
        (vec!["revenue", "--by", "week"], "by"),
        (vec!["deny", "0x12", "--reason", "x"], "payer"),
        (vec!["deny", PAYER, "--reason", "a\u{7}bell"], "reason"),
        (vec!["allow", "not-an-address"], "payer"),
    ] {
        let (code, out, err) = run(&args, &env);
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert_eq!(db.query("SELECT count(*) FROM payer_denials")[0], "0");

    // Another spelling denies the same payer, stored as enforcement reads it.
    let shouting = format!("0X{}", PAYER[2..].to_ascii_uppercase());
    let (code, out, err) = run(&["deny", &shouting, "--reason", "cli"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(PAYER), "{out}");
    assert_eq!(db.query("SELECT payer FROM payer_denials"), vec![PAYER.to_owned()]);

    // A database that does not answer: 1, and the URL's password is in no
    // output.
    let password = "probe26-db-password-7f3a";
    let mut down = env.clone();
    down.insert(
        "SETTLEGATE_LEDGER__DATABASE_URL".into(),
        format!("postgres://postgres:{password}@127.0.0.1:{}/nothing", free_port()),
    );
    for args in [
        vec!["payments"],
        vec!["denials"],
        vec!["deny", PAYER, "--reason", "x"],
        vec!["status"],
    ] {
        let (code, out, err) = run(&args, &down);
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(
            !out.contains(password) && !err.contains(password),
            "{args:?} printed the password: {err}"
        );
    }
    // A URL that does not parse: refused, the password not echoed.
    let mut bad = env.clone();
    bad.insert(
        "SETTLEGATE_LEDGER__DATABASE_URL".into(),
        format!("postgres://postgres:{password}@127.0.0.1:notaport/db"),
    );
    let (code, out, err) = run(&["payments"], &bad);
    assert_ne!(code, 0);
    assert!(
        !out.contains(password) && !err.contains(password),
        "a bad URL's password echoed: {err}"
    );
}

/// A denial whose commit outlives `admin.query_timeout_ms` (here: the
/// server waits for a synchronous standby that does not exist, a
/// misconfiguration PostgreSQL allows) is answered 503, yet it is in the
/// table once the commit completes: the 503 must not say nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_whose_commit_outlives_the_timeout_is_not_called_unchanged() {
    use crate::pg::{OwnPostgres, psql};
    let pg = OwnPostgres::start();
    let db = FreshDb::on(&pg.url());
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    env.insert("SETTLEGATE_ADMIN__QUERY_TIMEOUT_MS".into(), "1000".into());
    migrate(&env);
    let app = Served::start(&env);
    let admin = Admin::of(&app, &token);
    assert_eq!(admin.ok("/admin/v1/denials").await["denials"], json!([]));

    let admin_sql = format!("{}/postgres", pg.url());
    psql(&admin_sql, "ALTER SYSTEM SET synchronous_standby_names = 'ghost'").unwrap();
    psql(&admin_sql, "SELECT pg_reload_conf()").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = admin.deny(PAYER, "slow commit").await;
    assert_eq!((v.status, v.code()), (503, "LEDGER_UNAVAILABLE"), "{:?}", v.body);
    let detail = v.body["detail"].as_str().unwrap().to_owned();

    // The standby requirement lifted: the waiting commit completes.
    psql(&admin_sql, "ALTER SYSTEM RESET synchronous_standby_names").unwrap();
    psql(&admin_sql, "SELECT pg_reload_conf()").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut rows = db.query("SELECT payer FROM payer_denials");
    while rows.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = db.query("SELECT payer FROM payer_denials");
    }
    assert_eq!(rows, [PAYER.to_owned()], "the timed-out commit completed");
    assert!(
        !detail.contains("nothing was changed"),
        "the 503 said nothing changed, yet the denial is in force: {detail}"
    );
    assert!(detail.contains("may have"), "{detail}");
    // And the instance follows the table at its next refresh.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.metric("settlegate_payer_denials ").await != 1 {
        assert!(std::time::Instant::now() < deadline, "the denial never came into force");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
