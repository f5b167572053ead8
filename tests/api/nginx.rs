//! nginx `auth_request` (Debian's 1.22, installed by `scripts/nginx`) in
//! front of a plain upstream, with the repository's configuration
//! (`proxy/nginx/settlegate.conf`, only its three addresses changed), on the
//! real dev chain, Redis and binary. The paying client talks to nginx only.
//!
//! One nginx process serves the front and the protected application: a
//! plain server block that answers 200 with a JSON echo of what it received
//! and logs every request it serves (one JSON line each), so tests count
//! the requests that reached it where they landed ([`Nginx::upstream_hits`]).
//! Each nginx runs in its own temp prefix (pid, logs, temp paths); no
//! system service and no file of the machine's nginx is involved.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::chain::*;
use crate::escrow_chain::{deploy_escrow, pay_session};
use crate::helpers::*;
use crate::payment::{bound_memo, credential, echo, hash_payload};

/// Where `scripts/nginx` puts it, unless `NGINX` says otherwise.
fn nginx_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NGINX") {
        return p.into();
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() { debian } else { "nginx".into() }
}

/// The repository's configuration.
fn shipped_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy/nginx/settlegate.conf")).unwrap()
}

/// The shipped configuration with its three addresses changed, each of
/// which must be there exactly once as written.
fn front_site(port: u16, gate: SocketAddr, upstream: u16) -> String {
    let mut site = shipped_config();
    for (from, to) in [
        ("server 127.0.0.1:8402;", format!("server {gate};")),
        ("listen 8080;", format!("listen 127.0.0.1:{port};")),
        (
            "proxy_pass http://127.0.0.1:9000;",
            format!("proxy_pass http://127.0.0.1:{upstream};"),
        ),
    ] {
        assert_eq!(site.matches(from).count(), 1, "the shipped config has `{from}` once");
        site = site.replace(from, &to);
    }
    site
}

/// The protected application's echo. `"upstream":"reached"` appears in no
/// answer of the gate, so a body that has it came from here.
const UPSTREAM_BODY: &str = r#"{"upstream":"reached","method":"$request_method","uri":"$request_uri","x_settlement_payer":"$http_x_settlement_payer","x_settlement_tx":"$http_x_settlement_tx","x_settlement_amount":"$http_x_settlement_amount","payment_receipt":"$http_payment_receipt","x_forwarded_uri":"$http_x_forwarded_uri"}"#;

/// Its access log line: the same, JSON-escaped by nginx.
const UPSTREAM_LOG: &str = r#"'{"method":"$request_method","uri":"$request_uri","x_settlement_payer":"$http_x_settlement_payer","x_settlement_tx":"$http_x_settlement_tx","x_settlement_amount":"$http_x_settlement_amount","payment_receipt":"$http_payment_receipt","x_settlegate_refusal":"$http_x_settlegate_refusal"}'"#;

/// A running nginx, stopped on drop.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Nginx {
    pub fn start(gate: SocketAddr) -> Nginx {
        Nginx::start_with(gate, |site| site)
    }

    /// nginx with the shipped site as `edit` changes it.
    pub fn start_with(gate: SocketAddr, edit: impl Fn(String) -> String) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // Workers run as nobody when the master is root: they must reach
        // the prefix (temp paths) too.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (port, upstream) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = format!(
            "daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
	worker_connections 256;
}}
http {{
	client_body_temp_path {d}/body;
	proxy_temp_path {d}/proxy;
	fastcgi_temp_path {d}/fastcgi;
	uwsgi_temp_path {d}/uwsgi;
	scgi_temp_path {d}/scgi;
	access_log off;
	log_format upstream escape=json {UPSTREAM_LOG};

{front}
	server {{
		listen 127.0.0.1:{upstream};
		access_log {d}/upstream.log upstream;
		default_type application/json;
		location / {{
			return 200 '{UPSTREAM_BODY}';
		}}
	}}
}}
",
            front = edit(front_site(port, gate, upstream)),
        );
        let config = dir.path().join("nginx.conf");
        std::fs::write(&config, conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("nginx is installed (run scripts/nginx, or set NGINX)");
        let mut nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        let up = |port: u16| {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(100)).is_ok()
        };
        while !(up(port) && up(upstream)) {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited ({status}): {}", nginx.log());
            }
            assert!(Instant::now() < deadline, "nginx did not start: {}", nginx.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's error log and stderr.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// What the protected application served, from its access log, once
    /// the log has been quiet for a moment.
    pub fn upstream_requests(&self) -> Vec<Value> {
        let read = || {
            std::fs::read_to_string(self.dir.path().join("upstream.log"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
                .collect::<Vec<Value>>()
        };
        let mut last = read();
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = read();
            if now.len() == last.len() {
                return now;
            }
            last = now;
        }
    }

    pub fn upstream_hits(&self) -> usize {
        self.upstream_requests().len()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers before it exits (a SIGKILL
        // would leave them listening).
        send_signal(self.child.id() as i32, 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chain, the gate on it (sessions on the escrow when asked), nginx in
/// front of it.
struct Setup {
    chain: Chain,
    app: Served,
    nginx: Nginx,
    escrow: Option<String>,
    client: reqwest::Client,
    _w: Workdir,
}

/// The test genome: 1 AlphaUSD a request, 2.5 for `GET /dear/*`.
fn genome() -> Genome {
    crate::mpp_clients::t4_genome().set(
        "/settlement/prices",
        json!([{"resource": "GET /dear/*", "amount": "2500000"}]),
    )
}

fn setup(sessions: bool) -> Setup {
    let chain = Chain::start();
    let w = Workdir::new();
    let escrow = sessions.then(|| deploy_escrow(&chain));
    let g = match &escrow {
        Some(e) => crate::session::session_genome(e).set(
            "/settlement/prices",
            json!([{"resource": "GET /dear/*", "amount": "2500000"}]),
        ),
        None => genome(),
    };
    let app = Served::start(&crate::mpp_clients::payment_env(&w.genome(&g.signed()), &chain.url));
    let nginx = Nginx::start(app.addr);
    Setup {
        chain,
        app,
        nginx,
        escrow,
        client: http_client(),
        _w: w,
    }
}

impl Setup {
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Verified {
        let mut req = self.client.request(method.parse().unwrap(), self.nginx.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Verified::read(req.send().await.unwrap()).await
    }

    /// `GET /v1/authorize` asked directly, as a Caddy would.
    async fn ask_gate(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Verified {
        let mut req = self
            .client
            .get(self.app.url("/v1/authorize"))
            .header("x-forwarded-method", method)
            .header("x-forwarded-uri", uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Verified::read(req.send().await.unwrap()).await
    }
}

/// Every `WWW-Authenticate` line of an answer, in order.
fn challenges(v: &Verified) -> Vec<String> {
    v.headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap().to_owned())
        .collect()
}

/// The `Payment` challenges of an answer, by intent.
fn payment_offers(v: &Verified) -> Vec<std::collections::HashMap<String, String>> {
    challenges(v)
        .iter()
        .filter_map(|l| l.strip_prefix("Payment "))
        .map(crate::payment::auth_params)
        .collect()
}

/// `GET target` with `Authorization: credential`, the target sent as it
/// is written; the status and the body (JSON, or null).
fn raw_get(port: u16, target: &str, credential: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {credential}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn from_upstream(v: &Verified) -> bool {
    v.body["upstream"] == "reached"
}

/// The 402 of an unpaid request reaches the client through nginx as the
/// gate gives it to Caddy: status, every challenge (Tempo, Payment charge,
/// Payment session) as its own line, the JSON problem body, its headers.
#[tokio::test(flavor = "multi_thread")]
async fn an_unpaid_request_through_nginx_gets_the_402_with_every_challenge_and_its_body() {
    let s = tokio::task::block_in_place(|| setup(true));
    let direct = s.ask_gate("GET", "/reports/1", &[]).await;
    assert_eq!(direct.status, 402);
    for (method, body) in [("GET", None), ("POST", Some("order=1")), ("DELETE", None)] {
        let mut req = s.client.request(method.parse().unwrap(), s.nginx.url("/reports/1"));
        if let Some(b) = body {
            req = req.body(b);
        }
        let v = Verified::read(req.send().await.unwrap()).await;
        assert_eq!(
            (v.status, v.code()),
            (402, "PAYMENT_REQUIRED"),
            "{method}: {:?}",
            v.body
        );
        assert_eq!(v.header("content-type"), "application/problem+json");
        assert_eq!(v.header("cache-control"), "no-store");
        assert!(v.headers.get("x-settlegate-refusal").is_none(), "{:?}", v.headers);
        // the body the gate gives any proxy, to the byte
        assert_eq!(v.body, direct.body, "{method}");
        assert_eq!(
            v.body["paymentInfo"],
            json!({"method": "tempo", "recipient": RECIPIENT, "amount": "1000000", "token": ALPHA_USD, "chainId": 42431})
        );
        let lines = challenges(&v);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("Tempo realm=")).count(),
            1,
            "{lines:?}"
        );
        let intents: Vec<String> = payment_offers(&v).iter().map(|o| o["intent"].clone()).collect();
        assert_eq!(intents, ["charge", "session"], "{lines:?}");
        for offer in payment_offers(&v) {
            for param in ["id", "realm", "method", "request", "expires"] {
                assert!(offer.contains_key(param), "{param} missing: {offer:?}");
            }
        }
    }
    assert_eq!(s.nginx.upstream_hits(), 0);
}

/// A charge credential (push mode: the payment's hash, bound to its
/// challenge by the memo) pays through nginx: the upstream answers once,
/// with the settlement headers and the receipt; the same credential again
/// is a 402 that still says REPLAYED, with its challenges.
#[tokio::test(flavor = "multi_thread")]
async fn a_charge_credential_pays_through_nginx_once_and_its_replay_says_replayed() {
    let s = tokio::task::block_in_place(|| setup(false));
    let first = s.call("GET", "/reports/1", &[]).await;
    assert_eq!(first.status, 402, "{:?}", first.body);
    let offers = payment_offers(&first);
    assert_eq!(offers.len(), 1, "{:?}", challenges(&first));
    let hash = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offers[0]));
    let cred = credential(&echo(&offers[0]), hash_payload(&hash), None);

    let v = s.call("GET", "/reports/1?x=1", &[("authorization", &cred)]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert!(from_upstream(&v), "{:?}", v.body);
    assert_eq!(v.body["uri"], "/reports/1?x=1");
    assert_eq!(v.body["x_settlement_payer"], PAYER);
    assert_eq!(v.body["x_settlement_tx"], hash.to_lowercase());
    assert_eq!(v.body["x_settlement_amount"], "1000000");
    // the receipt reaches the application and the client, the same one
    let receipt = v.header("payment-receipt").to_owned();
    assert!(!receipt.is_empty(), "{:?}", v.headers);
    assert_eq!(v.body["payment_receipt"], receipt.as_str());
    assert_eq!(s.nginx.upstream_hits(), 1);

    // The same credential, and the same hash under the Tempo scheme.
    let tempo = format!("Tempo {hash}");
    for again in [cred.as_str(), tempo.as_str()] {
        let v = s.call("GET", "/reports/1?x=1", &[("authorization", again)]).await;
        assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{again}: {:?}", v.body);
        assert_eq!(v.header("content-type"), "application/problem+json");
        assert_eq!(v.body["paymentInfo"]["amount"], "1000000");
        assert_eq!(challenges(&v).len(), 2, "{:?}", challenges(&v));
        assert!(!from_upstream(&v));
    }
    // A transfer too small for a dear route: the typed reason, not
    // consumed, and it still buys a cheap one.
    let small = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let small = format!("Tempo {small}");
    let v = s.call("GET", "/dear/1", &[("authorization", &small)]).await;
    assert_eq!(
        (v.status, v.code(), v.reason()),
        (402, "VERIFICATION_FAILED", "insufficient_amount"),
        "{:?}",
        v.body
    );
    assert_eq!(s.nginx.upstream_hits(), 1);
    let v = s.call("GET", "/reports/2", &[("authorization", &small)]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(s.nginx.upstream_hits(), 2);
}

/// mppx 0.11.0, unchanged, pays a charge through nginx (pull mode: the
/// gate broadcasts) and accepts the receipt nginx hands it.
#[tokio::test(flavor = "multi_thread")]
async fn mppx_pays_a_charge_through_nginx_unchanged() {
    let s = tokio::task::block_in_place(|| setup(false));
    let v = tokio::task::block_in_place(|| {
        crate::mpp_clients::pay("mppx", "pull", &s.nginx.url("/reports/42"), &s.chain.url)
    });
    assert_eq!(v["status"], 200, "{v}");
    let body = &v["body"];
    assert_eq!(body["upstream"], "reached", "{v}");
    assert_eq!(body["x_settlement_payer"], PAYER, "{v}");
    assert_eq!(body["x_settlement_amount"], "1000000");
    assert!(v.get("receipt_error").is_none(), "mppx refused the receipt: {v}");
    assert_eq!(v["receipt"]["status"], "success", "{v}");
    assert_eq!(
        v["receipt"]["reference"].as_str().unwrap().to_lowercase(),
        body["x_settlement_tx"].as_str().unwrap()
    );
    assert_eq!(s.nginx.upstream_hits(), 1);
}

/// mppx's session client opens a channel and pays with vouchers through
/// nginx: one upstream hit per voucher, each with the settlement headers.
#[tokio::test(flavor = "multi_thread")]
async fn session_vouchers_pay_through_nginx_with_the_settlement_headers() {
    let s = tokio::task::block_in_place(|| setup(true));
    let escrow = s.escrow.clone().unwrap();
    let n = 3;
    let v = tokio::task::block_in_place(|| {
        pay_session(
            &s.chain,
            &s.nginx.url("/reports/1"),
            &[
                "--requests",
                &n.to_string(),
                "--deposit",
                "10000000",
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
    assert_eq!(statuses, vec![200; n], "{v}");
    let channel = v["channelId"].as_str().unwrap().to_lowercase();
    let served = s.nginx.upstream_requests();
    assert_eq!(served.len(), n, "{served:?}");
    for r in &served {
        assert_eq!(r["x_settlement_payer"], PAYER, "{r}");
        assert_eq!(r["x_settlement_tx"].as_str().unwrap().to_lowercase(), channel, "{r}");
        assert_eq!(r["x_settlement_amount"], "1000000", "{r}");
        assert!(!r["payment_receipt"].as_str().unwrap().is_empty(), "{r}");
    }
    let receipts = v["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), n, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_gate_is_down_nginx_lets_nothing_through() {
    let mut s = tokio::task::block_in_place(|| setup(false));
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let tempo = format!("Tempo {hash}");
    s.app.child.kill().unwrap();
    s.app.child.wait().unwrap();
    for v in [
        s.call("GET", "/reports/1", &[("authorization", &tempo)]).await,
        s.call("GET", "/reports/1", &[]).await,
        s.call("POST", "/reports/1", &[("authorization", &tempo)]).await,
    ] {
        assert!((500..600).contains(&v.status), "{} {:?}", v.status, v.body);
        assert!(!from_upstream(&v));
    }
    assert_eq!(s.nginx.upstream_hits(), 0);
}

/// The gate's 503 reaches the client as it is (nginx alone would make it a
/// 500 without its Retry-After), and nothing gets through.
#[tokio::test(flavor = "multi_thread")]
async fn the_gates_503_reaches_the_client_through_nginx_with_its_retry_after() {
    let mut s = tokio::task::block_in_place(|| setup(false));
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    s.chain.stop();
    let tempo = format!("Tempo {hash}");
    let v = s.call("GET", "/reports/1", &[("authorization", &tempo)]).await;
    assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{:?}", v.body);
    assert_eq!(v.header("content-type"), "application/problem+json");
    assert!(!v.header("retry-after").is_empty(), "{:?}", v.headers);
    assert_eq!(s.nginx.upstream_hits(), 0);
}

/// nginx names the original request exactly as the client sent it
/// (`$request_method`, `$request_uri`), and the gate prices that: any
/// spelling of a dear path costs the dear price, a path the upstream could
/// read as another is refused, and the upstream gets the same URI.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_names_the_original_request_and_every_spelling_is_priced_as_the_gate_prices_it() {
    let s = tokio::task::block_in_place(|| setup(false));
    for (method, path, amount) in [
        ("GET", "/dear/1", "2500000"),
        ("GET", "/%64ear/1", "2500000"),
        ("GET", "/DEAR/1/", "2500000"),
        ("GET", "/dear/1?cheap=1", "2500000"),
        ("POST", "/dear/1", "1000000"),
        ("GET", "/paid/x", "1000000"),
    ] {
        let v = s.call(method, path, &[]).await;
        assert_eq!(
            (v.status, v.code()),
            (402, "PAYMENT_REQUIRED"),
            "{method} {path}: {:?}",
            v.body
        );
        assert_eq!(v.body["paymentInfo"]["amount"], amount, "{method} {path}");
        assert!(
            challenges(&v)
                .iter()
                .any(|l| l.starts_with("Tempo ") && l.contains(&format!(r#"amount="{amount}""#))),
            "{method} {path}: {:?}",
            challenges(&v)
        );
    }
    // nginx itself resolves `..` and `//` for its locations; the gate sees
    // the raw URI, as the upstream would, and refuses an ambiguous one.
    let big = s.chain.transfer(ALPHA_USD, RECIPIENT, 2_500_000);
    let big = format!("Tempo {big}");
    // (sent raw: an HTTP client library would resolve them itself)
    for path in [
        "//dear/1",
        "/paid/../dear/1",
        "/dear/1;x=1",
        "/paid/%2e%2e/dear/1",
        "/paid/./x",
    ] {
        let (status, body) = tokio::task::block_in_place(|| raw_get(s.nginx.port, path, &big));
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("INVALID_REQUEST")),
            "{path}: {body}"
        );
        assert_ne!(body["upstream"], "reached");
    }
    assert_eq!(s.nginx.upstream_hits(), 0);
    // the dear price paid, under another spelling: the upstream gets that
    // spelling as sent
    let v = s.call("GET", "/%64ear/1?q=%20", &[("authorization", &big)]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["uri"], "/%64ear/1?q=%20");
    assert_eq!(v.body["x_settlement_amount"], "2500000");
    assert_eq!(s.nginx.upstream_hits(), 1);
}

/// The headers nginx sets for the gate and the upstream replace any the
/// client sends: a client's X-Forwarded-*, X-Original-* and settlegate's
/// own headers cannot make a dear route cheap, forge a refusal, or pass
/// for a settlement.
#[tokio::test(flavor = "multi_thread")]
async fn headers_a_client_sends_cannot_fool_the_gate_or_the_upstream_through_nginx() {
    let s = tokio::task::block_in_place(|| setup(false));
    // a genuine seal of a cheap route's refusal, taken from the gate
    let sealed = s
        .ask_gate("GET", "/paid/x", &[("x-settlegate-deny-status", "401")])
        .await;
    assert_eq!(sealed.status, 401);
    let sealed = sealed.header("x-settlegate-refusal").to_owned();
    assert!(sealed.starts_with("v1."), "{sealed}");
    let forged = [
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/paid/x"),
        ("x-forwarded-host", "cheap.example"),
        ("x-original-method", "POST"),
        ("x-original-uri", "/paid/x"),
        ("x-settlegate-deny-status", "402"),
        ("x-settlegate-refusal", sealed.as_str()),
        ("x-settlement-payer", STRANGER),
        ("x-settlement-tx", "0xforged"),
        ("x-settlement-amount", "999999999"),
        ("payment-receipt", "forged"),
    ];
    let v = s.call("GET", "/dear/1", &forged).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    assert_eq!(v.body["paymentInfo"]["amount"], "2500000");
    assert_eq!(s.nginx.upstream_hits(), 0);

    // A cheap payment for the dear route, dressed as the cheap one:
    // refused, not consumed.
    let small = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let small = format!("Tempo {small}");
    let mut with_small = forged.to_vec();
    with_small.push(("authorization", small.as_str()));
    let v = s.call("GET", "/dear/1", &with_small).await;
    assert_eq!(
        (v.status, v.code(), v.reason()),
        (402, "VERIFICATION_FAILED", "insufficient_amount"),
        "{:?}",
        v.body
    );
    assert_eq!(s.nginx.upstream_hits(), 0);

    // Paid: the upstream sees the gate's settlement, not the client's.
    let big = s.chain.transfer(ALPHA_USD, RECIPIENT, 2_500_000);
    let big = format!("Tempo {big}");
    let mut with_big = forged.to_vec();
    with_big.push(("authorization", big.as_str()));
    let v = s.call("GET", "/dear/1", &with_big).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let served = s.nginx.upstream_requests();
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["x_settlement_payer"], PAYER);
    assert_eq!(served[0]["x_settlement_amount"], "2500000");
    assert_eq!(served[0]["x_settlement_tx"].as_str().unwrap().len(), 66);
    assert!(!served[0]["payment_receipt"].as_str().unwrap().contains("forged"));
    assert_eq!(served[0]["x_settlegate_refusal"], "");
    // and the cheap payment still buys the cheap route
    let v = s.call("GET", "/paid/x", &[("authorization", &small)]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

/// The gate's side, asked directly: a sealed refusal is answered as it
/// was, whatever else the request carries, and decides nothing; a seal
/// that was altered, made by another instance's secret, or comes from an
/// untrusted peer does not open.
#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_refusal_is_answered_as_it_was_and_decides_nothing() {
    let s = tokio::task::block_in_place(|| setup(false));
    let deny = ("x-settlegate-deny-status", "401");
    let plain = s.ask_gate("GET", "/dear/1", &[]).await;
    let v = s.ask_gate("GET", "/dear/1", &[deny]).await;
    assert_eq!(v.status, 401, "{:?}", v.body);
    assert_eq!(v.body, Value::String(String::new()), "no body");
    assert!(v.headers.get("www-authenticate").is_none(), "{:?}", v.headers);
    let sealed = v.header("x-settlegate-refusal").to_owned();

    // Handed back with a payment that would settle: the sealed 402, and
    // the payment is still unspent.
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 2_500_000);
    let tempo = format!("Tempo {hash}");
    let again = s
        .ask_gate(
            "GET",
            "/dear/1",
            &[("x-settlegate-refusal", &sealed), ("authorization", &tempo), deny],
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (402, "PAYMENT_REQUIRED"),
        "{:?}",
        again.body
    );
    assert_eq!(again.body, plain.body);
    assert_eq!(again.header("content-type"), "application/problem+json");
    assert_eq!(challenges(&again).len(), challenges(&plain).len());
    assert_eq!(challenges(&again)[0], challenges(&plain)[0], "the Tempo challenge");

    // Altered, truncated, twice, not ASCII: 400, nothing decided.
    let mut flipped = sealed.clone().into_bytes();
    let i = sealed.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [flipped.as_str(), &sealed[..sealed.len() - 2], "v1.x.y", "forged"] {
        let v = s
            .ask_gate(
                "GET",
                "/dear/1",
                &[("x-settlegate-refusal", bad), ("authorization", &tempo)],
            )
            .await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{bad}: {:?}", v.body);
    }
    let v = s
        .ask_gate(
            "GET",
            "/dear/1",
            &[("x-settlegate-refusal", &sealed), ("x-settlegate-refusal", &sealed)],
        )
        .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
    // only 401 is an opt-in
    for status in ["402", "500", "401, 401"] {
        let v = s
            .ask_gate("GET", "/dear/1", &[("x-settlegate-deny-status", status)])
            .await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{status}: {:?}", v.body);
    }

    // The seal of another instance (another secret) does not open here.
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&genome().signed()), &s.chain.url);
    env.insert(
        "SETTLEGATE_PAYMENT__SECRET".into(),
        "another-test-secret-0123456789abcdef-not-for-production".into(),
    );
    let other = Served::start(&env);
    let v = Verified::read(
        s.client
            .get(other.url("/v1/authorize"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/dear/1")
            .header("x-settlegate-refusal", &sealed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);

    // With the opt-in, a payment that settles is a 200 as ever.
    let v = s.ask_gate("GET", "/dear/1", &[("authorization", &tempo), deny]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.header("x-settlement-amount"), "2500000");
    assert!(v.headers.get("x-settlegate-refusal").is_none());
    // and its replay is sealed with its reason
    let v = s.ask_gate("GET", "/dear/1", &[("authorization", &tempo), deny]).await;
    assert_eq!(v.status, 401);
    let v = s
        .ask_gate(
            "GET",
            "/dear/1",
            &[("x-settlegate-refusal", v.header("x-settlegate-refusal"))],
        )
        .await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
}

/// A seal is believed only from `authorize.trusted_proxies`.
#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_refusal_from_an_untrusted_peer_is_refused() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&genome().signed()));
    env.insert("SETTLEGATE_AUTHORIZE__TRUSTED_PROXIES".into(), "10.9.9.9/32".into());
    let app = Served::start(&env);
    let sealed = "v1.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let v = Verified::read(
        reqwest::Client::new()
            .get(app.url("/v1/authorize"))
            .header("x-settlegate-refusal", sealed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
    assert!(
        v.body["detail"].as_str().unwrap_or("").contains("trusted proxy"),
        "{:?}",
        v.body
    );
}

const PROXY_KEY: &str = "nginx-proxy-key-0123456789abcdef-not-for-production";

/// With `callers.authorize`, the key goes on the auth request only (the
/// README's keyed variant): the usual flow with it; without it the gate's
/// 401, and beyond the key's rate its 429 with `Retry-After`, reach the
/// client as they are (sealed, handed back without a key, at no rate), and
/// nothing reaches the upstream unpaid.
#[tokio::test(flavor = "multi_thread")]
async fn with_callers_authorize_nginx_sends_its_key_and_the_gates_401_and_429_reach_the_client() {
    use sha2::Digest;
    let chain = tokio::task::block_in_place(Chain::start);
    let w = Workdir::new();
    let mut env = crate::mpp_clients::payment_env(&w.genome(&genome().signed()), &chain.url);
    let digest = hex::encode(sha2::Sha256::digest(PROXY_KEY.as_bytes()));
    env.insert("SETTLEGATE_CALLERS__API_KEYS".into(), format!("nginx:{digest}"));
    env.insert("SETTLEGATE_CALLERS__AUTHORIZE".into(), "true".into());
    env.insert("SETTLEGATE_CALLERS__RATE_PER_CALLER_PER_SECOND".into(), "3".into());
    let app = Served::start(&env);
    let client = reqwest::Client::new();
    let get = |url: String, auth: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = client.get(url).header("x-settlegate-key", "forged-by-the-client");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            Verified::read(req.send().await.unwrap()).await
        }
    };
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let paid = format!("Tempo {hash}");

    // The shipped file sends no key: the gate's 401 problem, and the
    // payment is not consumed.
    let plain = Nginx::start(app.addr);
    let v = get(plain.url("/reports/1"), Some(paid.clone())).await;
    assert_eq!((v.status, v.code()), (401, "UNAUTHORIZED"), "{:?}", v.body);
    assert_eq!(v.header("content-type"), "application/problem+json");
    assert!(v.headers.get("x-settlegate-refusal").is_none());
    assert_eq!(plain.upstream_hits(), 0);

    // The key on the auth request (replacing the client's own).
    let keyed = Nginx::start_with(app.addr, |site| {
        let anchor = "\t\tproxy_set_header X-Settlegate-Deny-Status 401;\n";
        assert_eq!(site.matches(anchor).count(), 1);
        site.replace(
            anchor,
            &format!("{anchor}\t\tproxy_set_header X-Settlegate-Key \"{PROXY_KEY}\";\n"),
        )
    });
    let v = get(keyed.url("/reports/1"), Some(paid.clone())).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert!(from_upstream(&v));
    let v = get(keyed.url("/reports/1"), None).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    assert_eq!(challenges(&v).len(), 2, "{:?}", challenges(&v));
    assert_eq!(keyed.upstream_hits(), 1);

    // Three a second for the key: a burst beyond it is 429 with
    // Retry-After, before anything is checked.
    let mut limited = None;
    for _ in 0..8 {
        let v = get(keyed.url("/reports/1"), None).await;
        if v.status == 429 {
            limited = Some(v);
            break;
        }
        assert_eq!(v.status, 402, "{:?}", v.body);
    }
    let v = limited.expect("a 429 within eight requests at three a second");
    assert_eq!(v.code(), "RATE_LIMITED", "{:?}", v.body);
    assert!(v.header("retry-after").parse::<u64>().unwrap() >= 1, "{:?}", v.headers);
    assert_eq!(keyed.upstream_hits(), 1);
}
