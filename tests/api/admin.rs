//! The admin API and the payer deny list on real PostgreSQL, Redis, anvil
//! and the binary: who may call it, what it refuses, that its pages add up
//! to its revenue, that `settlegate ledger` reads the same books, and that
//! a denied payer is refused by every instance with nothing consumed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::chain::*;
use crate::escrow_chain::{STRANGER_KEY, send_from};
use crate::helpers::*;
use crate::ledger::{booked, ledger_cli, migrate, rows_settle_at, with_ledger};
use crate::lookup::ready;
use crate::pg::{FreshDb, OwnPostgres};

/// A token and its digest, minted by `settlegate admin token`.
pub(crate) fn mint() -> (String, String) {
    let out = command(&["admin", "token"], &HashMap::new()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only its digest"),
        "the operator is told to keep only the digest"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (token, digest) = (v["token"].as_str().unwrap(), v["digest"].as_str().unwrap());
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes()))),
        "the digest is the token's SHA-256"
    );
    (token.to_owned(), digest.to_owned())
}

/// `env` with the admin API on loopback (port 0) for `digest`, the deny
/// list read every second. The token rides along in `SGTEST_ADMIN_TOKEN`
/// (ignored by the service) so that the capture checks it never shows.
pub(crate) fn with_admin(env: &mut HashMap<String, String>, token: &str, digest: &str) {
    env.insert("SETTLEGATE_ADMIN__LISTEN".into(), "127.0.0.1:0".into());
    env.insert("SETTLEGATE_ADMIN__TOKEN_DIGESTS".into(), digest.into());
    env.insert("SETTLEGATE_ADMIN__DENY_REFRESH_SECONDS".into(), "1".into());
    env.insert("SGTEST_ADMIN_TOKEN".into(), token.into());
}

/// `env` with the ledger on `db` (migrated here, as `gate-a`) and the admin
/// API for `digest`: the gate started and ready, and its admin listener
/// called with `token`.
pub(crate) async fn start_with_admin(
    env: &mut HashMap<String, String>,
    db: &str,
    token: &str,
    digest: &str,
) -> (Served, Admin) {
    with_ledger(env, db, "gate-a");
    with_admin(env, token, digest);
    migrate(env);
    let app = Served::start(env);
    ready(&app).await;
    let admin = Admin::of(&app, token);
    (app, admin)
}

/// The admin listener of `app`, called with `token`.
pub(crate) struct Admin {
    pub(crate) base: String,
    token: String,
    client: reqwest::Client,
}

impl Admin {
    pub(crate) fn of(app: &Served, token: &str) -> Admin {
        let line = app.wait_for_log(|l| l["message"] == "admin listening");
        Admin {
            base: format!("http://{}", line["address"].as_str().unwrap()),
            token: token.to_owned(),
            client: http_client(),
        }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Verified {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Verified::read(req.send().await.unwrap()).await
    }

    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub(crate) async fn get(&self, path: &str) -> Verified {
        self.send(reqwest::Method::GET, path, Some(&self.bearer()), None).await
    }

    pub(crate) async fn ok(&self, path: &str) -> Value {
        let v = self.get(path).await;
        assert_eq!(v.status, 200, "{path}: {:?}", v.body);
        v.body
    }

    pub(crate) async fn deny(&self, payer: &str, reason: &str) -> Verified {
        self.send(
            reqwest::Method::PUT,
            &format!("/admin/v1/denials/{payer}"),
            Some(&self.bearer()),
            Some(json!({ "reason": reason })),
        )
        .await
    }

    pub(crate) async fn allow(&self, payer: &str) -> Verified {
        self.send(
            reqwest::Method::DELETE,
            &format!("/admin/v1/denials/{payer}"),
            Some(&self.bearer()),
            None,
        )
        .await
    }

    /// Every page of `/admin/v1/payments?<query>`, `limit` rows at a time.
    async fn all_pages(&self, query: &str, limit: u32) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/admin/v1/payments?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.ok(&path).await;
            let got = page["payments"].as_array().unwrap();
            assert!(got.len() <= limit as usize);
            rows.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return rows,
            }
        }
        panic!("more than 100 pages");
    }
}

/// `POST /v1/verify` of `hash` for `resource`.
async fn pay(app: &Served, hash: &str, resource: Option<&str>) -> Verified {
    let mut body = json!({ "credential": format!("Tempo {hash}") });
    if let Some(r) = resource {
        body["resource"] = json!(r);
    }
    app.verify(body, &[]).await
}

/// A transfer of AlphaUSD to the recipient from the stranger (dev account 2).
fn stranger_pays(chain: &Chain, amount: u64) -> String {
    let r = send_from(
        chain,
        STRANGER_KEY,
        ALPHA_USD,
        "transfer(address,uint256)",
        &[RECIPIENT, &amount.to_string()],
    )
    .unwrap();
    r["transactionHash"].as_str().unwrap().to_owned()
}

/// Sums per asset of `rows`: (payments, amount).
fn sums(rows: &[Value]) -> BTreeMap<String, (i64, u128)> {
    let mut out: BTreeMap<String, (i64, u128)> = BTreeMap::new();
    for r in rows {
        let e = out.entry(r["asset"].as_str().unwrap().to_owned()).or_default();
        e.0 += 1;
        e.1 += r["amount"].as_str().unwrap().parse::<u128>().unwrap();
    }
    out
}

fn totals(revenue: &Value) -> BTreeMap<String, (i64, u128)> {
    revenue["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["asset"].as_str().unwrap().to_owned(),
                (
                    t["payments"].as_i64().unwrap(),
                    t["amount"].as_str().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// JSON lines of a CLI's stdout.
fn lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The service's log, as one text (to look for what must not be there).
fn log_text(app: &Served) -> String {
    app.logs
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_valid_bearer_token_gets_in_and_bad_input_is_refused_by_name() {
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    env.insert("SETTLEGATE_ADMIN__QUERY_TIMEOUT_MS".into(), "2000".into());
    let app = Served::start(&env);
    let admin = Admin::of(&app, &token);

    // Before `ledger migrate`: the reads say what to do.
    let v = admin.get("/admin/v1/denials").await;
    assert_eq!((v.status, v.code()), (503, "LEDGER_UNAVAILABLE"), "{:?}", v.body);
    assert!(
        v.body["detail"].as_str().unwrap().contains("ledger migrate"),
        "{:?}",
        v.body
    );
    assert_eq!(v.header("retry-after"), "2");
    migrate(&env);
    assert_eq!(admin.ok("/admin/v1/denials").await, json!({ "denials": [] }));

    // 401 for no token, a wrong one, a malformed header, on any path.
    let (_, other_digest) = mint();
    assert_ne!(other_digest, digest);
    let wrong = format!("Bearer {}x", token);
    let basic = format!("Basic {token}");
    for path in ["/admin/v1/payments", "/admin/v1/denials", "/admin/v1/nothing-here", "/"] {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some("Bearer"),
            Some(basic.as_str()),
            Some(token.as_str()),
        ] {
            let v = admin.send(reqwest::Method::GET, path, auth, None).await;
            assert_eq!(
                (v.status, v.code()),
                (401, "UNAUTHORIZED"),
                "{path} {auth:?}: {:?}",
                v.body
            );
            assert!(v.header("www-authenticate").starts_with("Bearer"), "{path} {auth:?}");
            assert_eq!(v.header("content-type"), "application/problem+json");
        }
    }
    // Two Authorization headers, one of them valid: malformed.
    let r = http_client()
        .get(format!("{}/admin/v1/denials", admin.base))
        .header("authorization", admin.bearer())
        .header("authorization", admin.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A PUT without a token changes nothing.
    let v = admin
        .send(
            reqwest::Method::PUT,
            &format!("/admin/v1/denials/{PAYER}"),
            None,
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(v.status, 401);
    assert_eq!(admin.ok("/admin/v1/denials").await["denials"], json!([]));

    // With the token: 404 and 405 in problem+json.
    let v = admin.get("/admin/v1/nothing-here").await;
    assert_eq!((v.status, v.code()), (404, "NOT_FOUND"));
    let v = admin
        .send(reqwest::Method::POST, "/admin/v1/payments", Some(&admin.bearer()), None)
        .await;
    assert_eq!((v.status, v.code()), (405, "METHOD_NOT_ALLOWED"));
    assert_eq!(v.header("allow"), "GET");

    // Every parameter is validated, and the message names it.
    let page = admin.ok("/admin/v1/payments?limit=1").await;
    assert_eq!(page, json!({"payments": [], "next_cursor": null}), "no payments yet");
    let other_filter_cursor = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("p1.5.0000000000000000")
    };
    for (path, names) in [
        ("/admin/v1/payments?payer=0x1234", "payer"),
        (
            "/admin/v1/payments?payer=f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "payer",
        ),
        ("/admin/v1/payments?scheme=hash", "scheme"),
        ("/admin/v1/payments?kind=refund", "kind"),
        ("/admin/v1/payments?from=yesterday", "from"),
        (
            "/admin/v1/payments?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "after",
        ),
        ("/admin/v1/payments?limit=0", "limit"),
        ("/admin/v1/payments?limit=501", "limit"),
        ("/admin/v1/payments?cursor=not-a-cursor", "cursor"),
        (&format!("/admin/v1/payments?cursor={other_filter_cursor}"), "cursor"),
        ("/admin/v1/payments?colour=red", "colour"),
        ("/admin/v1/payments?limit=1&limit=2", "limit"),
        ("/admin/v1/revenue", "by"),
        ("/admin/v1/revenue?by=week", "by"),
        ("/admin/v1/revenue?by=day&payer=0x12", "payer"),
    ] {
        let v = admin.get(path).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{path}: {:?}", v.body);
        assert!(
            v.body["detail"].as_str().unwrap().contains(names),
            "{path}: {:?}",
            v.body
        );
    }
    let v = admin.deny("0x1234", "x").await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"));
    let v = admin.deny(PAYER, &"x".repeat(257)).await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"));
    assert!(v.body["detail"].as_str().unwrap().contains("reason"));
    let v = admin
        .send(
            reqwest::Method::PUT,
            &format!("/admin/v1/denials/{PAYER}"),
            Some(&admin.bearer()),
            Some(json!({"reason": "x", "until": "never"})),
        )
        .await;
    assert_eq!(
        (v.status, v.code()),
        (400, "INVALID_REQUEST"),
        "unknown field: {:?}",
        v.body
    );
    let r = http_client()
        .put(format!("{}/admin/v1/denials/{PAYER}", admin.base))
        .header("authorization", admin.bearer())
        .body("reason=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http_client()
        .put(format!("{}/admin/v1/denials/{PAYER}", admin.base))
        .header("authorization", admin.bearer())
        .header("content-type", "application/json")
        .body(format!("{{\"reason\": \"{}\"}}", "x".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        admin.ok("/admin/v1/denials").await["denials"],
        json!([]),
        "nothing refused was written"
    );

    // A payer is denied in any case and listed in lower case.
    let upper = "0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266";
    let v = admin.deny(upper, "chargeback 42").await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["payer"], PAYER);
    let listed = admin.ok("/admin/v1/denials").await;
    assert_eq!(listed["denials"][0]["payer"], PAYER);
    assert_eq!(listed["denials"][0]["reason"], "chargeback 42");
    let v = admin.allow(PAYER).await;
    assert_eq!(v.body, json!({"payer": PAYER, "removed": true}));
    let v = admin.allow(PAYER).await;
    assert_eq!(v.body, json!({"payer": PAYER, "removed": false}));

    // Not on the gate's listener.
    let r = reqwest::get(app.url("/admin/v1/denials")).await.unwrap();
    assert_eq!(r.status(), 404);

    // The token is in no log line (and the capture checks it too).
    let logs = log_text(&app);
    assert!(logs.contains("admin request served"), "one line per admin request");
    assert!(!logs.contains(&token), "the admin token was logged");
    assert!(!logs.contains(&digest[7..]), "a token digest was logged");
}

#[tokio::test]
async fn a_remote_admin_address_stops_the_boot_unless_allowed_and_no_token_means_off() {
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    env.insert("SETTLEGATE_ADMIN__LISTEN".into(), "0.0.0.0:0".into());
    let refused = run_refused(&env);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused
            .stderr
            .starts_with("settlegate: CONFIG_INVALID: admin.listen 0.0.0.0:0 is not a loopback address"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("admin.allow_remote"), "{}", refused.stderr);
    assert_eq!(refused.accepted_connections, 0, "nothing was bound");

    env.insert("SETTLEGATE_ADMIN__ALLOW_REMOTE".into(), "true".into());
    migrate(&env);
    let app = Served::start(&env);
    let line = app.wait_for_log(|l| l["message"] == "admin listening");
    let port = line["address"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
    assert!(line["address"].as_str().unwrap().starts_with("0.0.0.0:"), "{line}");
    let r = http_client()
        .get(format!("http://127.0.0.1:{port}/admin/v1/denials"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(app);

    // No token digest: off, and the boot says why.
    env.remove("SETTLEGATE_ADMIN__TOKEN_DIGESTS");
    env.remove("SETTLEGATE_ADMIN__ALLOW_REMOTE");
    env.insert("SETTLEGATE_ADMIN__LISTEN".into(), "127.0.0.1:0".into());
    let app = Served::start(&env);
    let off = app.wait_for_log(|l| l["message"] == "the admin API is off");
    assert!(off["why"].as_str().unwrap().contains("token_digests"), "{off}");
    assert_eq!(app.log_count(|l| l["message"] == "admin listening"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_add_up_to_the_revenue_and_the_cli_reads_the_same_books() {
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let genome = Genome::single().set(
        "/settlement/prices",
        json!([{"resource": "GET /reports/*", "amount": "2500000"}]),
    );
    let mut env = chain_env(&w.genome(&genome.signed()), &chain.url);
    let (app, admin) = start_with_admin(&mut env, &db.url(), &token, &digest).await;

    // Two payers, two routes, amounts that differ.
    let plan: Vec<(bool, u64, Option<&str>)> = vec![
        (false, 1_000_000, None),
        (false, 2_500_000, Some("GET /reports/1")),
        (true, 1_000_000, None),
        (false, 3_000_001, Some("GET /reports/2")),
        (false, 1_000_007, None),
        (true, 2_500_003, Some("GET /reports/9")),
        (false, 1_200_000, None),
    ];
    let mut paid = Vec::new();
    for (stranger, amount, resource) in &plan {
        let hash = tokio::task::block_in_place(|| {
            if *stranger {
                stranger_pays(&chain, *amount)
            } else {
                chain.transfer(ALPHA_USD, RECIPIENT, *amount)
            }
        });
        let v = pay(&app, &hash, *resource).await;
        assert_eq!(v.status, 200, "{:?}", v.body);
        paid.push(v.body);
    }
    rows_settle_at(&db, plan.len(), Duration::from_secs(15)).await;

    // Every page, two rows at a time: each payment once, newest first.
    let rows = admin.all_pages("", 2).await;
    assert_eq!(rows.len(), plan.len());
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let hashes: BTreeSet<&str> = rows.iter().map(|r| r["tx_hash"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = paid.iter().map(|p| p["tx_hash"].as_str().unwrap()).collect();
    assert_eq!(hashes, want);
    // A row says what the 200 said.
    for p in &paid {
        let r = rows.iter().find(|r| r["tx_hash"] == p["tx_hash"]).unwrap();
        for k in ["payer", "recipient", "asset", "amount", "genome_id"] {
            assert_eq!(r[k], p[k], "{k}");
        }
        assert_eq!(
            (r["kind"].as_str(), r["scheme"].as_str()),
            (Some("charge"), Some("tempo"))
        );
    }
    let stranger = STRANGER.to_owned();
    assert_eq!(rows.iter().filter(|r| r["payer"] == stranger.as_str()).count(), 2);

    // Pages add up to the revenue's totals, for every filter.
    let day = rows[0]["consumed_at"].as_str().unwrap()[..10].to_owned();
    let tomorrow = "2999-01-01T00:00:00Z";
    let reports = "GET%20%2Freports%2F%2A";
    for (filter, limit, expect) in [
        (String::new(), 3, 7),
        (format!("payer={PAYER}"), 2, 5),
        (format!("payer={stranger}"), 1, 2),
        (format!("route={reports}"), 2, 3),
        ("route=default".to_owned(), 4, 4),
        (format!("route={reports}&payer={stranger}"), 5, 1),
        ("scheme=tempo&kind=charge".to_owned(), 500, 7),
        ("scheme=payment".to_owned(), 2, 0),
        (format!("from={day}T00:00:00Z"), 2, 7),
        (format!("from={tomorrow}"), 2, 0),
        (format!("to={day}T00:00:00Z"), 2, 0),
    ] {
        let pages = admin.all_pages(&filter, limit).await;
        assert_eq!(pages.len(), expect, "{filter}");
        for by in ["route", "payer", "day"] {
            let sep = if filter.is_empty() { "" } else { "&" };
            let revenue = admin.ok(&format!("/admin/v1/revenue?by={by}{sep}{filter}")).await;
            assert_eq!(totals(&revenue), sums(&pages), "{filter} by {by}");
            assert_eq!(revenue["payments"], expect as i64, "{filter}");
            // The groups add up to the totals.
            let groups: Vec<Value> = revenue["groups"].as_array().unwrap().clone();
            let mut summed: BTreeMap<String, (i64, u128)> = BTreeMap::new();
            for g in &groups {
                let e = summed.entry(g["asset"].as_str().unwrap().to_owned()).or_default();
                e.0 += g["payments"].as_i64().unwrap();
                e.1 += g["amount"].as_str().unwrap().parse::<u128>().unwrap();
            }
            assert_eq!(summed, totals(&revenue), "{filter} by {by}");
            assert_eq!(revenue["truncated"], false);
        }
    }

    // By payer, route and day: the groups the payments make.
    let amount = |who: &dyn Fn(&Value) -> bool| -> u128 {
        paid.iter()
            .filter(|p| who(p))
            .map(|p| p["amount"].as_str().unwrap().parse::<u128>().unwrap())
            .sum()
    };
    let by_payer = admin.ok("/admin/v1/revenue?by=payer").await;
    let groups = by_payer["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{by_payer}");
    for g in groups {
        let who = g["key"].as_str().unwrap().to_owned();
        let n = paid.iter().filter(|p| p["payer"] == who.as_str()).count();
        assert_eq!(g["payments"], n as i64);
        assert_eq!(g["amount"], amount(&|p| p["payer"] == who.as_str()).to_string());
        assert_eq!(g["asset"], ALPHA_USD);
    }
    let by_route = admin.ok("/admin/v1/revenue?by=route").await;
    let keys: Vec<&str> = by_route["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["GET /reports/*", "default"], "{by_route}");
    assert_eq!(by_route["groups"][0]["payments"], 3);
    assert_eq!(
        by_route["groups"][0]["amount"],
        (2_500_000u128 + 3_000_001 + 2_500_003).to_string()
    );
    let by_day = admin.ok("/admin/v1/revenue?by=day").await;
    assert_eq!(by_day["groups"].as_array().unwrap().len(), 1);
    assert_eq!(by_day["groups"][0]["key"], day.as_str());
    assert_eq!(by_day["groups"][0]["amount"], amount(&|_| true).to_string());

    // A cursor is bound to its filter.
    let page = admin.ok(&format!("/admin/v1/payments?limit=1&payer={PAYER}")).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let v = admin.get(&format!("/admin/v1/payments?limit=1&cursor={cursor}")).await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);

    // The CLI: the same rows, page by page, and the same revenue.
    let cli_env = env.clone();
    let mut cli_rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["payments", "--limit", "3"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (code, out, err) = tokio::task::block_in_place(|| ledger_cli(&args, &cli_env));
        assert_eq!(code, 0, "{err}");
        let mut ls = lines(&out);
        let summary = ls.pop().unwrap();
        assert_eq!(summary["payments"], ls.len());
        cli_rows.extend(ls);
        match summary["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(cli_rows, rows, "the CLI's pages are the API's rows");
    let (code, out, _) =
        tokio::task::block_in_place(|| ledger_cli(&["revenue", "--by", "payer", "--route", "default"], &cli_env));
    assert_eq!(code, 0);
    let mut ls = lines(&out);
    let summary = ls.pop().unwrap();
    let api = admin.ok("/admin/v1/revenue?by=payer&route=default").await;
    assert_eq!(Value::Array(ls), api["groups"]);
    assert_eq!(summary["totals"], api["totals"]);
    assert_eq!(summary["payments"], api["payments"]);
    // The CLI refuses what the API refuses, with the same words.
    let (code, _, err) = tokio::task::block_in_place(|| ledger_cli(&["payments", "--payer", "0x12"], &cli_env));
    assert_eq!(code, 2);
    assert!(err.contains("payer must be 0x and 40 hex digits"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| ledger_cli(&["revenue", "--by", "week"], &cli_env));
    assert_eq!(code, 2);
    assert!(err.contains("by must be route, payer or day"), "{err}");
}

/// Waits until `app`'s deny list holds `n` payers (its metric).
async fn deny_list_at(app: &Served, n: u64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.metric("settlegate_payer_denials ").await == n {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the deny list never held {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_payer_is_refused_everywhere_with_nothing_consumed_until_allowed() {
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    migrate(&env);
    let a = Served::start(&env);
    // The second instance: same Redis and PostgreSQL, no admin API of its
    // own; it learns the list from PostgreSQL.
    let mut env_b = env.clone();
    env_b.remove("SETTLEGATE_ADMIN__TOKEN_DIGESTS");
    env_b.insert("SETTLEGATE_LEDGER__INSTANCE".into(), "gate-b".into());
    let b = Served::start(&env_b);
    ready(&a).await;
    ready(&b).await;
    let admin = Admin::of(&a, &token);

    let (p, q, s) = tokio::task::block_in_place(|| {
        (
            chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000),
            chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000),
            stranger_pays(&chain, 1_000_000),
        )
    });
    let v = admin.deny(PAYER, "abuse report 7").await;
    assert_eq!(v.status, 200, "{:?}", v.body);

    // In force on this instance when the PUT answered.
    let refused = a.verify_hash(&p).await;
    assert_eq!(
        (refused.status, refused.code(), refused.reason()),
        (402, "VERIFICATION_FAILED", "payer_denied"),
        "{:?}",
        refused.body
    );
    assert!(
        refused.header("www-authenticate").starts_with("Tempo "),
        "a 402 with its challenge"
    );
    // On the other within the refresh interval (1 s), then refused there.
    let took = deny_list_at(&b, 1, Duration::from_secs(5)).await;
    assert!(took <= Duration::from_millis(3000), "the refresh is 1 s: {took:?}");
    let v = b.verify_hash(&q).await;
    assert_eq!((v.status, v.reason()), (402, "payer_denied"), "{:?}", v.body);
    // Somebody else pays as ever, on either.
    assert_eq!(b.verify_hash(&s).await.status, 200);
    // Nothing of the denied payer was consumed or booked.
    assert_eq!(
        rows_settle_at(&db, 1, Duration::from_secs(10)).await,
        BTreeSet::from([s.clone()])
    );
    assert_eq!(
        a.verify_hash(&p).await.reason(),
        "payer_denied",
        "refused again, not REPLAYED"
    );

    // The CLI reads the same list.
    let (code, out, _) = tokio::task::block_in_place(|| ledger_cli(&["denials"], &env));
    assert_eq!(code, 0);
    let ls = lines(&out);
    assert_eq!(ls[0], admin.ok("/admin/v1/denials").await["denials"][0]);
    assert_eq!(ls[0]["reason"], "abuse report 7");
    assert_eq!(ls[1], json!({"denials": 1}));

    // Allowed again: the same payments pay, once.
    assert_eq!(admin.allow(PAYER).await.status, 200);
    let v = a.verify_hash(&p).await;
    assert_eq!(v.status, 200, "the refused payment was not consumed: {:?}", v.body);
    deny_list_at(&b, 0, Duration::from_secs(5)).await;
    assert_eq!(b.verify_hash(&q).await.status, 200);
    assert_eq!(b.verify_hash(&p).await.code(), "REPLAYED");
    assert_eq!(
        rows_settle_at(&db, 3, Duration::from_secs(10)).await,
        BTreeSet::from([p.clone(), q.clone(), s.clone()])
    );

    // The CLI denies and allows too: every instance follows PostgreSQL.
    let (code, out, err) = tokio::task::block_in_place(|| ledger_cli(&["deny", STRANGER, "--reason", "cli"], &env));
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines(&out)[0]["payer"], STRANGER);
    deny_list_at(&a, 1, Duration::from_secs(5)).await;
    let t = tokio::task::block_in_place(|| stranger_pays(&chain, 1_000_000));
    assert_eq!(a.verify_hash(&t).await.reason(), "payer_denied");
    let (code, out, _) = tokio::task::block_in_place(|| ledger_cli(&["allow", STRANGER], &env));
    assert_eq!(code, 0);
    assert_eq!(lines(&out)[0], json!({"payer": STRANGER, "removed": true}));
    deny_list_at(&a, 0, Duration::from_secs(5)).await;
    assert_eq!(a.verify_hash(&t).await.status, 200);
    assert!(rows_settle_at(&db, 4, Duration::from_secs(10)).await.contains(&t));
    assert_eq!(booked(&db).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_keeps_the_last_deny_list_in_force() {
    let chain = Chain::start();
    let mut pg = OwnPostgres::start();
    let db = FreshDb::on(&pg.url());
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    env.insert("SETTLEGATE_ADMIN__QUERY_TIMEOUT_MS".into(), "1000".into());
    migrate(&env);
    let app = Served::start(&env);
    ready(&app).await;
    let admin = Admin::of(&app, &token);
    assert_eq!(admin.deny(PAYER, "").await.status, 200);

    pg.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("settlegate_payer_denials_refresh_failures").await < 2 {
        assert!(Instant::now() < deadline, "the refresh never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paid = tokio::task::block_in_place(|| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000));
    let v = app.verify_hash(&paid).await;
    assert_eq!(
        (v.status, v.reason()),
        (402, "payer_denied"),
        "a database that does not answer never loosens the list: {:?}",
        v.body
    );
    assert_eq!(app.metric("settlegate_payer_denials ").await, 1);
    // The admin API says the database is away, and changes nothing.
    let v = admin.allow(PAYER).await;
    assert_eq!((v.status, v.code()), (503, "LEDGER_UNAVAILABLE"), "{:?}", v.body);
    assert_eq!(app.verify_hash(&paid).await.reason(), "payer_denied");
    let failed =
        app.wait_for_log(|l| l["message"] == "cannot read the payer deny list; the last one read stays in force");
    assert_eq!(failed["level"], "ERROR");
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_signers_pull_transaction_is_not_broadcast() {
    use crate::payment::{bound_memo, credential, did, echo, payment_offer, signed_transfer};
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert(
        "SETTLEGATE_PAYMENT__SECRET".into(),
        "admin-test-payment-secret-0123456789abcdef".into(),
    );
    let (app, admin) = start_with_admin(&mut env, &db.url(), &token, &digest).await;

    let offer = payment_offer(&app.verify(json!({}), &[]).await);
    let raw = tokio::task::block_in_place(|| signed_transfer(&chain, 1_000_000, &bound_memo(&offer)));
    let cred = credential(
        &echo(&offer),
        json!({"type": "transaction", "signature": raw}),
        Some(&did(PAYER)),
    );
    let nonce = tokio::task::block_in_place(|| chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]));
    assert_eq!(admin.deny(PAYER, "").await.status, 200);
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!(
        (v.status, v.code(), v.reason()),
        (402, "VERIFICATION_FAILED", "payer_denied"),
        "{:?}",
        v.body
    );
    tokio::task::block_in_place(|| {
        assert_eq!(chain.calls("eth_sendRawTransaction"), 0, "{:?}", chain.all_calls());
        assert_eq!(chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]), nonce);
    });
    // Allowed again, the same credential pays (its challenge still fresh).
    assert_eq!(admin.allow(PAYER).await.status, 200);
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_are_listed_and_a_denied_payers_vouchers_serve_nothing() {
    use crate::escrow_chain::sign_voucher;
    use crate::session::PRICE;
    use crate::session_vouchers::{channel, env_on_redis, present, session_offer, voucher_payload};
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    migrate(&env);
    let app = Served::start(&env);
    let admin = Admin::of(&app, &token);
    let sign =
        |cumulative: u128| tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &c.escrow, 42431, &c.id, cumulative));
    let offer = session_offer(&app).await;
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 2, &sign(PRICE * 2))).await;
    assert_eq!(v.status, 200, "{:?}", v.body);

    let listed = admin.ok("/admin/v1/sessions").await;
    assert_eq!(listed["open"], 1, "{listed}");
    let row = &listed["channels"][0];
    assert!(row["key"].as_str().unwrap().ends_with(&c.id.to_lowercase()), "{row}");
    assert_eq!(row["payer"], PAYER);
    assert_eq!(row["deposit"], (PRICE * 10).to_string());
    assert_eq!(
        (row["accepted"].as_str(), row["spent"].as_str()),
        (Some("2000000"), Some("1000000"))
    );
    assert_eq!(
        (row["settled"].as_str(), row["unsettled"].as_str()),
        (Some("0"), Some("2000000"))
    );
    assert_eq!(listed["unsettled"], "2000000");

    assert_eq!(admin.deny(PAYER, "").await.status, 200);
    let offer = session_offer(&app).await;
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &sign(PRICE * 3))).await;
    assert_eq!(
        (v.status, v.code(), v.reason()),
        (402, "VERIFICATION_FAILED", "payer_denied"),
        "{:?}",
        v.body
    );
    let row = admin.ok("/admin/v1/sessions").await["channels"][0].clone();
    assert_eq!(
        (row["accepted"].as_str(), row["spent"].as_str()),
        (Some("2000000"), Some("1000000")),
        "nothing accepted or deducted"
    );
    // Nothing was settled by the listing either.
    assert_eq!(
        crate::escrow_chain::channel_state(&c.chain, &c.escrow, &c.id).settled,
        0
    );

    assert_eq!(admin.allow(PAYER).await.status, 200);
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &sign(PRICE * 3))).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("2000000")),
        "{:?}",
        v.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_admin_listener_serves_the_same_certificate() {
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let (cert, key) = (w.path("cert.pem"), w.path("key.pem"));
    crate::tls::self_signed(&cert, &key, "admin");
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_SERVER__TLS_CERT_FILE".into(), cert.display().to_string());
    env.insert("SETTLEGATE_SERVER__TLS_KEY_FILE".into(), key.display().to_string());
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    migrate(&env);
    let app = Served::start(&env);
    let line = app.wait_for_log(|l| l["message"] == "admin listening");
    assert_eq!(line["scheme"], "https");
    let addr = line["address"].as_str().unwrap().to_owned();
    let curl = |scheme: &str, auth: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(&cert)
            .args(["-H", auth])
            .arg(format!("{scheme}://{addr}/admin/v1/denials"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    tokio::task::block_in_place(|| {
        assert_eq!(curl("https", &format!("Authorization: Bearer {token}")), "200");
        assert_eq!(curl("https", "Authorization: Bearer nope"), "401");
        assert_eq!(
            curl("http", &format!("Authorization: Bearer {token}")),
            "000",
            "no plain HTTP"
        );
    });
}

/// schemathesis (as `tests/api/openapi.rs` runs it on the gate) against the
/// admin listener, from the served document's `admin` operations, with the
/// token: no 5xx, every status, header, content type and body as
/// documented, schema-invalid input refused. Not checked: that every
/// schema-valid request is accepted (a `from` after its `to`, or a cursor
/// of another page, is valid per parameter and refused as a pair, 400).
#[test]
fn schemathesis_finds_nothing_against_the_admin_listener() {
    let st = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".devtools/schemathesis/bin/st");
    assert!(st.exists(), "schemathesis is not installed: run scripts/schemathesis");
    let db = FreshDb::new();
    let w = Workdir::new();
    let (token, digest) = mint();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    with_ledger(&mut env, &db.url(), "gate-a");
    with_admin(&mut env, &token, &digest);
    migrate(&env);
    let app = Served::start(&env);
    let admin = Admin::of(&app, &token);
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(&st)
        .current_dir(scratch.path())
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--url", &admin.base, "--include-tag", "admin"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,ignored_auth",
            "--max-examples",
            "40",
            "--seed",
            "20261205",
            "--workers",
            "1",
        ])
        .args(["--no-color", "--generation-database", "none", "--request-timeout", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Tested: 7"), "{stdout}");
    // (The RPC endpoint of serve_env is nowhere: its circuit's ERROR is
    // not the admin API's.)
    let failed = |l: &Value| {
        (l["level"] == "WARN" || l["level"] == "ERROR")
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("admin") || m.contains("deny list"))
    };
    if app.log_count(failed) > 0 {
        panic!("the service logged a failure: {}", app.wait_for_log(failed));
    }
}
