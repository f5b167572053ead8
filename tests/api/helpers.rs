//! Test harness: keys, genome documents, and the real `settlegate` binary
//! started on a free port with its stdout read for the bound address.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use settlegate_rules::authoring::sign_document;
use settlegate_rules::keys::PrivateKey;
use tokio::task::JoinSet;

pub const BIN: &str = env!("CARGO_BIN_EXE_settlegate");
pub const RECIPIENT: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
pub const ALPHA_USD: &str = "0x20c0000000000000000000000000000000000001";

/// Test keys are derived from a fixed byte; they say so in every name.
pub fn test_key(n: u8) -> PrivateKey {
    PrivateKey::from_seed([n; 32])
}

pub fn spki(n: u8) -> String {
    test_key(n).public_key().to_spki_base64()
}

/// A genome document under construction.
#[derive(Clone)]
pub struct Genome {
    pub doc: Map<String, Value>,
}

impl Genome {
    /// Lists `signers` (key id, test key number) with `threshold`; all
    /// actions allowed; version 1.0.0.
    pub fn new(signers: &[(&str, u8)], threshold: u32) -> Self {
        let signers: Vec<Value> = signers
            .iter()
            .map(|(id, n)| json!({"key_id": id, "alg": "ed25519", "public_key": spki(*n)}))
            .collect();
        let doc = json!({
            "schema_version": "genome.v0.1",
            "name": "TEST_GENOME",
            "version": "1.0.0",
            "parents": [],
            "created_at": "2026-11-01T00:00:00Z",
            "authority": {"signers": signers, "threshold": threshold},
            "invariants": [],
            "capabilities": [{"cap_id": "CAP-ALL", "risk_class": "A",
                "allow_actions": ["settlement.verify", "settlement.authorize", "genome.read", "metrics.read"],
                "deny_actions": []}],
            "build_manifest": {"files": []},
            "settlement": {
                "chain_id": 42431,
                "realm": "Tempo API",
                "recipient": RECIPIENT,
                "assets": [ALPHA_USD],
                "default_price": {"asset": ALPHA_USD, "amount": "1000000"}
            }
        });
        Genome {
            doc: doc.as_object().unwrap().clone(),
        }
    }

    /// The usual single-signer genome: key id `test-key-1`, test key 1.
    pub fn single() -> Self {
        Genome::new(&[("test-key-1", 1)], 1)
    }

    /// Sets the value at a JSON pointer whose parent exists.
    pub fn set(self, pointer: &str, value: Value) -> Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let mut root = Value::Object(self.doc);
        root.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), value);
        let Value::Object(doc) = root else { unreachable!() };
        Genome { doc }
    }

    pub fn remove(mut self, key: &str) -> Self {
        self.doc.remove(key);
        self
    }

    pub fn version(self, v: &str) -> Self {
        self.set("/version", json!(v))
    }

    pub fn signed_by(mut self, signers: &[(&str, u8)]) -> Self {
        for (id, n) in signers {
            self.doc = sign_document(&self.bytes(), id, &test_key(*n)).unwrap();
        }
        self
    }

    pub fn signed(self) -> Self {
        self.signed_by(&[("test-key-1", 1)])
    }

    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.doc).unwrap()
    }

    pub fn id(&self) -> String {
        settlegate_rules::genome::ParsedGenome::parse(&self.bytes())
            .unwrap()
            .id()
            .to_owned()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// A temporary directory holding a genome file.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `genome.json` and returns its path.
    pub fn genome(&self, g: &Genome) -> PathBuf {
        let p = self.path("genome.json");
        g.write(&p);
        p
    }
}

/// Environment for `serve` with one pinned key (test key 1), port 0, the
/// embedded replay store beside the genome, and an RPC URL where nothing
/// listens (tests that need the chain use [`chain_env`]).
pub fn serve_env(genome: &Path) -> HashMap<String, String> {
    let dir = genome.parent().unwrap_or(Path::new("."));
    HashMap::from([
        ("SETTLEGATE_GENOME__PATH".into(), genome.display().to_string()),
        (
            "SETTLEGATE_REPLAY__LOCAL_PATH".into(),
            dir.join("replay.redb").display().to_string(),
        ),
        (
            "SETTLEGATE_RPC__URLS".into(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("SETTLEGATE_TRUST__KEYS".into(), spki(1)),
        ("SETTLEGATE_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
        ("SETTLEGATE_SERVER__WORKERS".into(), "1".into()),
        ("RUST_LOG".into(), "info".into()),
    ])
}

/// The shared Redis of the machine (its own key prefix per test).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("sgtest-{}-{}:", std::process::id(), hex::encode(b))
}

/// `serve_env` against `rpc` and the shared Redis under a fresh prefix.
pub fn chain_env(genome: &Path, rpc: &str) -> HashMap<String, String> {
    let mut env = serve_env(genome);
    env.insert("SETTLEGATE_RPC__URLS".into(), rpc.into());
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), unique_prefix());
    env
}

/// A `Command` for the binary with a clean environment: no SETTLEGATE_ or
/// TEMPO_ variable of the test runner leaks in.
pub fn command(args: &[&str], env: &HashMap<String, String>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(env);
    cmd
}

/// A running `settlegate serve`.
pub struct Served {
    /// One client per service, so a storm reuses connections like a real
    /// caller would.
    client: reqwest::Client,
    /// (Redis URL, key prefix) when the service writes to a Redis.
    redis_keys: Option<(String, String)>,
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<Value>>>,
}

impl Served {
    /// Starts `serve` and waits for its "listening" log line.
    pub fn start(env: &HashMap<String, String>) -> Served {
        Served::start_args(&["serve"], env)
    }

    /// Starts the binary with `args` (which must serve).
    pub fn start_args(args: &[&str], env: &HashMap<String, String>) -> Served {
        ensure_tls();
        capture_secrets(env);
        let mut captured = capture_file("logs");
        let mut child = command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = captured.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{line}");
                }
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "listening" {
                    let _ = tx.send(v["address"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(v);
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Served {
                client: http_client(),
                redis_keys: env
                    .get("SETTLEGATE_REDIS__URL")
                    .cloned()
                    .zip(env.get("SETTLEGATE_REDIS__KEY_PREFIX").cloned()),
                child,
                addr,
                logs,
            },
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("settlegate did not start: {err}");
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn sighup(&self) {
        send_signal(self.child.id() as i32, libc::SIGHUP);
    }

    /// Waits until a log line satisfies `pred`.
    pub fn wait_for_log(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.logs.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such log line; logs: {:#?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.logs.lock().unwrap().iter().filter(|v| pred(v)).count()
    }

    /// `POST /v1/verify` with `body` and extra headers.
    pub async fn verify(&self, body: Value, headers: &[(&str, &str)]) -> Verified {
        let mut req = self.client.post(self.url("/v1/verify")).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Verified::read(req.send().await.unwrap()).await
    }

    /// `POST /v1/verify` with `{"credential": "Tempo <hash>"}`.
    pub async fn verify_hash(&self, hash: &str) -> Verified {
        self.verify(json!({ "credential": format!("Tempo {hash}") }), &[]).await
    }

    /// The value of a counter line in `/metrics`, 0 when absent.
    pub async fn metric(&self, line_prefix: &str) -> u64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::get(self.url(path)).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leave the shared Redis as we found it: delete this test's keys.
        if let Some((url, prefix)) = &self.redis_keys {
            let script =
                format!("redis-cli -u '{url}' --scan --pattern '{prefix}*' | xargs -r redis-cli -u '{url}' del");
            let _ = Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `/v1/verify` answer.
#[derive(Debug)]
pub struct Verified {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Verified {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

/// The outcome of a process that was expected to refuse to boot.
impl Verified {
    /// Status, headers and body (JSON when it parses, else the text).
    pub async fn read(resp: reqwest::Response) -> Verified {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Verified { status, headers, body }
    }
}

pub struct Refused {
    pub code: Option<i32>,
    pub stderr: String,
    /// Connection attempts to its port that succeeded while it ran.
    pub accepted_connections: usize,
    pub attempts: usize,
}

/// Starts `serve` on a port reserved for it and keeps trying to connect to
/// that port until the process exits.
pub fn run_refused(env: &HashMap<String, String>) -> Refused {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut env = env.clone();
    env.insert("SETTLEGATE_SERVER__LISTEN".into(), addr.to_string());
    let mut child = command(&["serve"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut attempts, mut accepted) = (0, 0);
    let status = loop {
        attempts += 1;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            accepted += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("settlegate kept running although it should have refused to boot");
        }
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    capture_secrets(&env);
    if let Some(mut f) = capture_file("logs") {
        use std::io::Write as _;
        let _ = f.write_all(stderr.as_bytes());
    }
    Refused {
        code: status.code(),
        stderr,
        accepted_connections: accepted,
        attempts,
    }
}

/// Where `scripts/test` collects what every service printed, and every
/// secret it was configured with, for `scripts/check-log-secrets` to grep
/// after the run (`SGTEST_CAPTURE_DIR`; unset: nothing is kept).
pub fn capture_dir(kind: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SGTEST_CAPTURE_DIR")?).join(kind);
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// A file of its own in the capture directory `kind`.
pub fn capture_file(kind: &str) -> Option<std::fs::File> {
    let dir = capture_dir(kind)?;
    std::fs::File::create(dir.join(unique_prefix().trim_end_matches(':'))).ok()
}

/// The tests' HTTP client: it drops an idle connection after 2 s, before
/// the server's 5 s keep-alive closes it, so no request is ever written on
/// a connection the server is closing (a reset that says nothing about the
/// gate).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Records the secrets in `env` (and in the files it names) for the
/// capture's check: every value of a variable that names a secret, and the
/// password of any URL.
pub fn capture_secrets(env: &HashMap<String, String>) {
    use std::io::Write as _;
    let Some(mut out) = capture_file("secrets") else {
        return;
    };
    for (k, v) in env {
        let upper = k.to_ascii_uppercase();
        // `*_KEY_FILE` names a private key (the settler's, the sponsor's);
        // `*_KEYS_FILE` lists public ones. `TOKEN`: the admin API's bearer
        // token, which the tests hand the service in `SGTEST_ADMIN_TOKEN`
        // (it reads only its digests, `SETTLEGATE_ADMIN__TOKEN_DIGESTS`,
        // kept here too: no line needs to show one).
        let named = ["SECRET", "PASSWORD", "TOKEN", "API_KEY", "PRIVATE", "DATABASE_URL"]
            .iter()
            .any(|s| upper.contains(s))
            || upper.ends_with("_KEY_FILE");
        let mut found = Vec::new();
        if named && upper.ends_with("_FILE") {
            if let Ok(text) = std::fs::read_to_string(v) {
                let text = text.trim();
                // A hex key may be written with or without its `0x`.
                found.extend(text.strip_prefix("0x").map(str::to_owned));
                // A webhook secret (`…__SECRET_FILE` of
                // `SETTLEGATE_WEBHOOKS__ENDPOINTS__<NAME>__`): its key
                // bytes are the base64 after `whsec_`.
                found.extend(text.strip_prefix("whsec_").map(str::to_owned));
                found.push(text.to_owned());
                // A URL in a file (the ledger's database): its password.
                if let Ok(u) = url::Url::parse(text) {
                    found.extend(u.password().map(str::to_owned));
                }
            }
        } else if named && !upper.ends_with("_UNTIL") {
            found.push(v.clone());
        }
        for url in v.split(',') {
            if let Ok(u) = url::Url::parse(url.trim()) {
                found.extend(u.password().map(str::to_owned));
                // an RPC provider's key in the query
                found.extend(
                    u.query_pairs()
                        .filter(|(k, _)| k.contains("key") || k.contains("token"))
                        .map(|(_, v)| v.into_owned()),
                );
            }
        }
        for s in found {
            let _ = writeln!(out, "{k}\t{s}");
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a signal to one process (pid > 0) or a process group (pid < 0).
/// Never 0 or -1, which would reach the test runner itself.
pub fn send_signal(pid: i32, signal: i32) {
    assert!(!(-1..=1).contains(&pid), "refusing to signal pid {pid}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert!(rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH));
}

/// reqwest is built without a TLS crypto provider of its own (the service
/// picks ring); the test client needs one installed too.
pub fn ensure_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A private redis-server on its own port, killed on drop.
pub struct OwnRedis {
    child: Child,
    pub port: u16,
}

impl OwnRedis {
    pub fn start_on(port: u16) -> OwnRedis {
        Self::start_with(port, &["--save", "", "--appendonly", "no"])
    }

    /// A redis-server with more arguments (`--requirepass`, persistence).
    pub fn start_with(port: u16, args: &[&str]) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, port }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Commands this server has executed, by name (`INFO commandstats`),
    /// leaving out the `INFO` calls that read them.
    pub fn commands(&self) -> HashMap<String, u64> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "INFO", "commandstats"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
                (name != "info").then(|| (name.to_owned(), calls))
            })
            .collect()
    }

    pub fn total_commands(&self) -> u64 {
        self.commands().values().sum()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` concurrent `POST /v1/verify` with the same body and headers.
pub async fn storm(
    app: &Arc<Served>,
    body: serde_json::Value,
    headers: Vec<(String, String)>,
    n: usize,
) -> Vec<Verified> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (app, body, headers) = (app.clone(), body.clone(), headers.clone());
        set.spawn(async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            app.verify(body, &h).await
        });
    }
    set.join_all().await
}

/// Fault injector: a TCP endpoint that answers every request it reads with
/// `reply` (or, when `None`, never answers, holding the connection open). No
/// real node can be made to hang or to speak garbage on demand. It counts
/// the requests it received, so tests count lookups where they land.
pub struct FaultInjector {
    pub url: String,
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultInjector {
    pub fn start(reply: Option<&'static [u8]>) -> FaultInjector {
        FaultInjector::start_on("127.0.0.1:0", reply)
    }

    /// Listening on `bind` (any 127.x.y.z is loopback: a host name of its own).
    pub fn start_on(bind: &str, reply: Option<&'static [u8]>) -> FaultInjector {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(bind).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(4096) {
                let Ok(mut conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    // One read per request: the pool's requests are small.
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        match reply {
                            Some(reply) => {
                                if conn.write_all(reply).is_err() {
                                    return;
                                }
                            }
                            // a hung peer: keep the connection, never answer
                            None => std::thread::sleep(Duration::from_secs(3600)),
                        }
                    }
                });
            }
        });
        FaultInjector { url, requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}
