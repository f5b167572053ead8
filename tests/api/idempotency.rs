//! Idempotent retries on `POST /v1/verify` (issue 22, finding 2), on the
//! real dev chain and Redis: a retry must repeat the whole request (key,
//! resource with its query, body digest, and for the `Payment` scheme the
//! challenge), come inside a short window and within a small limit counted
//! across instances; a guessable key is refused. Through the proxy:
//! `forward_auth::an_idempotent_retry_through_the_proxy_must_repeat_the_whole_request`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;
use crate::payment::{bound_memo, credential, echo, hash_payload, payment_offer};

const KEY: &str = "0f8b3c2e-6a1d-4c57-9e0b-2d4f6a8c1e3b";
const DIGEST: &str = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";

fn env_with(chain: &Chain, w: &Workdir, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert(
        "SETTLEGATE_PAYMENT__SECRET".into(),
        "idempotency-test-secret-0123456789abcdef".into(),
    );
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    env
}

fn is_retry(v: &Verified) -> bool {
    v.status == 200 && v.body["idempotent_replay"] == true
}

#[tokio::test]
async fn a_retry_must_repeat_the_resource_its_query_and_the_body_digest() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&env_with(&chain, &w, &[]));
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let ask = |resource: &str, digest: Option<&str>, key: &str| {
        let mut body = json!({ "tx_hash": hash, "resource": resource });
        if let Some(d) = digest {
            body["body_digest"] = json!(d);
        }
        let key = key.to_owned();
        let app = &app;
        async move { app.verify(body, &[("Idempotency-Key", &key)]).await }
    };
    let first = ask("POST /orders?cart=1", Some(DIGEST), KEY).await;
    assert_eq!(
        (first.status, first.body["idempotent_replay"].as_bool()),
        (200, Some(false)),
        "{:?}",
        first.body
    );
    for (resource, digest, key) in [
        ("POST /orders?cart=2", Some(DIGEST), KEY),
        ("POST /orders", Some(DIGEST), KEY),
        (
            "POST /orders?cart=1",
            Some("sha-256=:AAAAqy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"),
            KEY,
        ),
        ("POST /orders?cart=1", None, KEY),
        ("PUT /orders?cart=1", Some(DIGEST), KEY),
        (
            "POST /orders?cart=1",
            Some(DIGEST),
            "0f8b3c2e-6a1d-4c57-9e0b-2d4f6a8c1e3c",
        ),
    ] {
        let v = ask(resource, digest, key).await;
        assert_eq!(
            (v.status, v.code()),
            (402, "REPLAYED"),
            "{resource} {digest:?} {key}: {:?}",
            v.body
        );
    }
    let retry = ask("POST /orders?cart=1", Some(DIGEST), KEY).await;
    assert!(is_retry(&retry), "{:?}", retry.body);
    let mut again = retry.body.clone();
    again["idempotent_replay"] = json!(false);
    assert_eq!(again, first.body, "the original settlement");
}

#[tokio::test]
async fn a_guessable_key_or_a_bad_body_digest_is_refused_before_anything_else() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&env_with(&chain, &w, &[]));
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    for key in ["k1", "req-7f3a", "fifteen-chars-k", "sixteen chars ok"] {
        let v = app.verify(body.clone(), &[("Idempotency-Key", key)]).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{key}: {:?}", v.body);
        let detail = v.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("16 to 255"), "{detail}");
    }
    for digest in [json!(""), json!("sha-256=:x:\n"), json!("d".repeat(1025)), json!(7)] {
        let mut b = body.clone();
        b["body_digest"] = digest.clone();
        let v = app.verify(b, &[("Idempotency-Key", KEY)]).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{digest}: {:?}", v.body);
    }
    // nothing was consumed by the refusals: the payment still buys its 200
    let v = app.verify(body, &[("Idempotency-Key", "sixteen-chars-ok")]).await;
    assert_eq!(
        (v.status, v.body["idempotent_replay"].as_bool()),
        (200, Some(false)),
        "{:?}",
        v.body
    );
}

/// The limit (`idempotency.max_retries`, 3 by default) is counted in the
/// shared store: retries alternate between two instances and the fourth is
/// refused whichever instance gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_beyond_the_limit_are_replays_across_instances() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = env_with(&chain, &w, &[]);
    let (a, b) = (Served::start(&env), Served::start(&env));
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let body = json!({ "tx_hash": hash, "resource": "GET /reports/7?page=1" });
    let key = [("Idempotency-Key", KEY)];
    let first = a.verify(body.clone(), &key).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    for (n, app) in [&b, &a, &b].into_iter().enumerate() {
        let v = app.verify(body.clone(), &key).await;
        assert!(is_retry(&v), "retry {}: {:?}", n + 1, v.body);
    }
    for app in [&a, &b, &a] {
        let v = app.verify(body.clone(), &key).await;
        assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
    }
}

#[tokio::test]
async fn a_retry_past_the_window_is_a_replay() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = env_with(&chain, &w, &[("SETTLEGATE_IDEMPOTENCY__RETRY_WINDOW_SECONDS", "2")]);
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    let key = [("Idempotency-Key", KEY)];
    let first = app.verify(body.clone(), &key).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let retry = app.verify(body.clone(), &key).await;
    assert!(is_retry(&retry), "{:?}", retry.body);
    // whole seconds: 2 s after the consume's second has ended
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let late = app.verify(body.clone(), &key).await;
    assert_eq!((late.status, late.code()), (402, "REPLAYED"), "{:?}", late.body);
}

/// Whoever watches the chain knows the hash, and may guess the key; they
/// never see the challenge the payer answered. A `Payment` credential for
/// another challenge (one the stranger asked for) with the right hash,
/// key and resource is a replay; the payer's own retry is not.
#[tokio::test]
async fn a_stranger_with_the_hash_and_the_key_but_another_challenge_is_refused() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&env_with(&chain, &w, &[]));
    let mine = payment_offer(&app.verify(json!({}), &[]).await);
    let hash = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&mine));
    let paying = credential(&echo(&mine), hash_payload(&hash), None);
    let ask = |cred: String| {
        let app = &app;
        async move {
            app.verify(
                json!({ "credential": cred, "resource": "GET /a?x=1" }),
                &[("Idempotency-Key", KEY)],
            )
            .await
        }
    };
    let first = ask(paying.clone()).await;
    assert_eq!(
        (first.status, first.body["scheme"].as_str()),
        (200, Some("payment")),
        "{:?}",
        first.body
    );

    let theirs = payment_offer(&app.verify(json!({}), &[]).await);
    let stranger = ask(credential(&echo(&theirs), hash_payload(&hash), None)).await;
    assert_eq!(
        (stranger.status, stranger.code()),
        (402, "REPLAYED"),
        "{:?}",
        stranger.body
    );
    let as_tempo = ask(format!("Tempo {hash}")).await;
    assert_eq!(
        (as_tempo.status, as_tempo.code()),
        (402, "REPLAYED"),
        "{:?}",
        as_tempo.body
    );

    let retry = ask(paying).await;
    assert!(is_retry(&retry), "{:?}", retry.body);
}
