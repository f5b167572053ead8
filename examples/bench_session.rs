//! Session benchmark tools for `scripts/bench session`: a load generator
//! that presents pre-signed, increasing session vouchers, one channel per
//! connection and in order, to any server speaking the MPP `Payment` scheme
//! (settlegate through `GET /v1/authorize` or `POST /v1/verify`, mppx's
//! session server directly), and the baselines those runs are compared with.
//!
//! Every voucher is signed before the clock starts (signing is the client's
//! cost, not the server's), so both servers get byte-for-byte the same kind
//! of request from the same loader. Each connection sends one request, waits
//! for its answer and sends the next (HTTP/1.1 keep-alive): a channel's
//! vouchers therefore arrive in order, which a shared request queue (wrk)
//! cannot promise. The first voucher of each connection is a warm-up and is
//! not timed.
//!
//! ```text
//! bench_session channel-id --payer A --payee B --token T --escrow E --salt N
//! bench_session load --url U --mode authorize|verify|direct|trivial --channels FILE \
//!     --key K --escrow E --price P [--per-conn N] [--seconds S]
//! bench_session load --url U --mode M --bare --conns C [--per-conn N] [--seconds S]
//! bench_session recover [--n 10000]
//! ```
//!
//! `load` prints one JSON line: requests timed, 2xx and other answers,
//! socket errors, duration, paid requests per second, p50/p99/p99.9 in ms,
//! and the first refused answer's head and body (to see why).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use clap::{Parser, Subcommand, ValueEnum};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use settlegate_rules::session::{ChannelId, Domain, Voucher, VoucherSignature, channel_id_v1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The resource every request pays for.
const RESOURCE_PATH: &str = "/reports/7";
/// A response head or chunk header longer than this is a broken peer.
const MAX_HEAD: usize = 64 * 1024;
/// A response body longer than this is a broken peer.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The v1 channel id of a channel opened with `salt` (a number) and no
    /// authorized signer.
    ChannelId {
        #[arg(long)]
        payer: Address,
        #[arg(long)]
        payee: Address,
        #[arg(long)]
        token: Address,
        #[arg(long)]
        escrow: Address,
        #[arg(long)]
        salt: u64,
        #[arg(long, default_value_t = 42431)]
        chain_id: u64,
    },
    /// Drives a server with pre-signed vouchers (see the module header).
    Load(LoadArgs),
    /// Times `n` voucher signature recoveries (EIP-712 digest included),
    /// the way settlegate's rules recover a voucher's signer.
    Recover {
        #[arg(long, default_value_t = 10_000)]
        n: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `GET /v1/authorize` with the voucher in `Authorization` and the
    /// resource in `X-Forwarded-Method`/`-Uri` (settlegate's forward-auth).
    Authorize,
    /// `POST /v1/verify` with the credential and resource in a JSON body.
    Verify,
    /// `GET /reports/7` with the voucher in `Authorization` (mppx's server).
    Direct,
    /// `POST /v1/verify` with a fixed body and no voucher (the trivial
    /// actix-web handler: the client round trip alone).
    Trivial,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// `http://127.0.0.1:PORT`
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// One line per connection: `CHANNEL_ID FIRST` (the first voucher's
    /// cumulative amount is FIRST x price); `trivial` needs only the count.
    #[arg(long)]
    channels: Option<String>,
    /// The payer's secp256k1 key (a public dev key).
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    escrow: Option<Address>,
    #[arg(long, default_value_t = 42431)]
    chain_id: u64,
    /// Base units per request.
    #[arg(long, default_value_t = 1_000_000)]
    price: u128,
    /// Connections for `trivial` and `--bare` (otherwise one per channel).
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Vouchers (requests) per connection, the warm-up included.
    #[arg(long, default_value_t = 1000)]
    per_conn: usize,
    /// Send the mode's request without a credential (each answer is the
    /// 402 challenge): the server's cost of a request without the session.
    #[arg(long)]
    bare: bool,
    /// Stop after this long even when vouchers are left.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad argument: {0}")]
    Arg(String),
    #[error("bad response: {0}")]
    Response(String),
}

fn main() -> Result<(), BenchError> {
    match Cli::parse().cmd {
        Cmd::ChannelId {
            payer,
            payee,
            token,
            escrow,
            salt,
            chain_id,
        } => {
            let salt = B256::from(U256::from(salt));
            let id = channel_id_v1(payer, payee, token, salt, Address::ZERO, escrow, chain_id);
            println!("{}", id.0);
            Ok(())
        }
        Cmd::Recover { n } => recover(n),
        Cmd::Load(a) => load(a),
    }
}

fn signing_key(hex_key: &str) -> Result<SigningKey, BenchError> {
    let raw =
        hex::decode(hex_key.trim().trim_start_matches("0x")).map_err(|_| BenchError::Arg("key: not hex".into()))?;
    SigningKey::from_slice(&raw).map_err(|_| BenchError::Arg("key: not a secp256k1 scalar".into()))
}

/// A 65-byte `r || s || v` signature (v 27 or 28) of the voucher.
fn sign(key: &SigningKey, domain: &Domain, channel: &ChannelId, cumulative: u128) -> Result<String, BenchError> {
    let digest = domain.voucher_digest(channel, cumulative);
    let (sig, rec) = key
        .sign_prehash_recoverable(digest.as_slice())
        .map_err(|e| BenchError::Arg(format!("sign: {e}")))?;
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig.to_bytes());
    out[64] = 27 + u8::from(rec.is_y_odd());
    Ok(format!("0x{}", hex::encode(out)))
}

fn recover(n: usize) -> Result<(), BenchError> {
    // The public dev key of account 0: a throwaway, like every key here.
    let key = signing_key("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")?;
    let domain = Domain {
        chain_id: 42431,
        escrow: Address::repeat_byte(0x11),
    };
    let channel = ChannelId(B256::repeat_byte(0x22));
    let mut vouchers = Vec::with_capacity(n);
    for i in 0..n {
        let cumulative = (i as u128 + 1) * 1_000_000;
        let sig = sign(&key, &domain, &channel, cumulative)?;
        let signature = VoucherSignature::parse_hex(&sig).map_err(|e| BenchError::Arg(format!("{e:?}")))?;
        vouchers.push(Voucher {
            channel_id: channel,
            cumulative,
            signature,
        });
    }
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for v in &vouchers {
        let t = Instant::now();
        let who = domain.recover(v).map_err(|e| BenchError::Arg(format!("{e:?}")))?;
        times.push(t.elapsed().as_nanos() as u64);
        std::hint::black_box(who);
    }
    let total = started.elapsed();
    times.sort_unstable();
    // What settlegate pays for a voucher whose signer it knows: a check
    // against the key, not a recovery.
    let known = vouchers
        .first()
        .ok_or_else(|| BenchError::Arg("--n 0".into()))?
        .signature
        .recover_key(&domain.digest(&vouchers[0]))
        .map_err(|e| BenchError::Arg(format!("{e:?}")))?;
    let mut checks = Vec::with_capacity(n);
    for v in &vouchers {
        let t = Instant::now();
        let ok = v.signature.is_by(&domain.digest(v), &known);
        checks.push(t.elapsed().as_nanos() as u64);
        if !ok {
            return Err(BenchError::Arg("a voucher failed its known-key check".into()));
        }
    }
    checks.sort_unstable();
    println!(
        "{}",
        json!({
            "recoveries": n,
            "mean_us": total.as_secs_f64() * 1e6 / n.max(1) as f64,
            "p50_us": times.get(n / 2).copied().unwrap_or(0) as f64 / 1000.0,
            "p99_us": times.get(n * 99 / 100).copied().unwrap_or(0) as f64 / 1000.0,
            "known_key_p50_us": checks.get(n / 2).copied().unwrap_or(0) as f64 / 1000.0,
        })
    );
    Ok(())
}

/// Parses `name="value", name=value, ...` (RFC 9110 auth-params).
fn auth_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((name, after)) = rest.split_once('=') {
        let name = name.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let mut value = String::new();
        let consumed;
        if let Some(q) = after.strip_prefix('"') {
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            consumed = &q[end.min(q.len())..];
        } else {
            let end = after.find(',').unwrap_or(after.len());
            value.push_str(after[..end].trim());
            consumed = &after[end..];
        }
        out.insert(name, value);
        rest = consumed.trim_start_matches([',', ' ']);
    }
    out
}

/// One HTTP/1.1 response: status, headers (lowercase names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

/// A keep-alive connection with its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, BenchError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    async fn fill(&mut self) -> Result<(), BenchError> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(BenchError::Response("connection closed".into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn line(&mut self) -> Result<String, BenchError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(BenchError::Response("line too long".into()));
            }
            self.fill().await?;
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, BenchError> {
        if n > MAX_BODY {
            return Err(BenchError::Response(format!("body of {n} bytes")));
        }
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Response, BenchError> {
        self.stream.write_all(request).await?;
        let status_line = self.line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BenchError::Response(format!("status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let size_line = self.line().await?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| BenchError::Response(format!("chunk size {size_line:?}")))?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(BenchError::Response("chunked body too long".into()));
                }
                body.extend(self.exact(size).await?);
                self.line().await?;
            }
            body
        } else {
            let len = get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            self.exact(len).await?
        };
        Ok(Response {
            status,
            headers,
            body,
            close,
        })
    }
}

fn host_of(url: &str) -> Result<String, BenchError> {
    url.strip_prefix("http://")
        .map(|h| h.trim_end_matches('/').to_owned())
        .ok_or_else(|| BenchError::Arg(format!("url {url:?}: only http://host:port")))
}

/// The request bytes for `mode`, with `authorization` (none: a challenge
/// request).
fn request(mode: Mode, host: &str, authorization: Option<&str>) -> Vec<u8> {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    match mode {
        Mode::Authorize => format!(
            "GET /v1/authorize HTTP/1.1\r\nHost: {host}\r\n{auth}X-Forwarded-Method: GET\r\nX-Forwarded-Uri: {RESOURCE_PATH}\r\n\r\n"
        )
        .into_bytes(),
        Mode::Direct => format!("GET {RESOURCE_PATH} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n").into_bytes(),
        Mode::Verify | Mode::Trivial => {
            let mut body = json!({ "resource": format!("GET {RESOURCE_PATH}") });
            if let Some(a) = authorization {
                body["credential"] = json!(a);
            }
            let body = body.to_string();
            format!(
                "POST /v1/verify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    }
}

/// The `session` challenge of a 402 from the server, as a credential echoes
/// it (every parameter of the header).
async fn session_challenge(mode: Mode, addr: &str) -> Result<Value, BenchError> {
    let mut c = Conn::open(addr).await?;
    let r = c.exchange(&request(mode, addr, None)).await?;
    if r.status != 402 {
        return Err(BenchError::Response(format!("expected a 402, got {}", r.status)));
    }
    for (k, v) in &r.headers {
        if k != "www-authenticate" {
            continue;
        }
        let Some(params) = v.strip_prefix("Payment ") else {
            continue;
        };
        let p = auth_params(params);
        if p.get("intent").map(String::as_str) == Some("session") {
            return Ok(json!(p));
        }
    }
    Err(BenchError::Response("no Payment session challenge in the 402".into()))
}

struct ConnResult {
    latencies_us: Vec<u32>,
    ok: u64,
    refused: u64,
    errors: u64,
    first_refusal: Option<String>,
    exhausted: bool,
}

async fn drive(
    addr: String,
    requests: Vec<Vec<u8>>,
    start: Instant,
    deadline: Instant,
) -> Result<ConnResult, BenchError> {
    let mut out = ConnResult {
        latencies_us: Vec::with_capacity(requests.len()),
        ok: 0,
        refused: 0,
        errors: 0,
        first_refusal: None,
        exhausted: true,
    };
    let mut conn = Conn::open(&addr).await?;
    for (i, req) in requests.iter().enumerate() {
        let now = Instant::now();
        if i > 0 && now >= deadline {
            out.exhausted = false;
            break;
        }
        if i == 1 {
            // the warm-up request is done: wait for every connection's
            let wait = start.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait).await;
        }
        let t = Instant::now();
        let r = match conn.exchange(req).await {
            Ok(r) => r,
            Err(_) => {
                out.errors += 1;
                conn = Conn::open(&addr).await?;
                continue;
            }
        };
        let us = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
        if i > 0 {
            out.latencies_us.push(us);
            if (200..300).contains(&r.status) {
                out.ok += 1;
            } else {
                out.refused += 1;
            }
        }
        if !(200..300).contains(&r.status) && out.first_refusal.is_none() {
            let head: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            out.first_refusal = Some(format!(
                "request {i}: {} {} {}",
                r.status,
                head.join(" | "),
                String::from_utf8_lossy(&r.body)
            ));
        }
        if r.close {
            conn = Conn::open(&addr).await?;
        }
    }
    Ok(out)
}

fn load(a: LoadArgs) -> Result<(), BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(load_async(a))
}

async fn load_async(a: LoadArgs) -> Result<(), BenchError> {
    let addr = host_of(&a.url)?;
    let mut per_conn: Vec<Vec<Vec<u8>>> = Vec::new();
    if a.mode == Mode::Trivial || a.bare {
        let req = request(a.mode, &addr, None);
        for _ in 0..a.conns {
            per_conn.push(vec![req.clone(); a.per_conn]);
        }
    } else {
        let key = signing_key(a.key.as_deref().ok_or_else(|| BenchError::Arg("--key".into()))?)?;
        let escrow = a.escrow.ok_or_else(|| BenchError::Arg("--escrow".into()))?;
        let path = a
            .channels
            .as_deref()
            .ok_or_else(|| BenchError::Arg("--channels".into()))?;
        let domain = Domain {
            chain_id: a.chain_id,
            escrow,
        };
        let challenge = session_challenge(a.mode, &addr).await?;
        for line in std::fs::read_to_string(path)?.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split_whitespace();
            let id: B256 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| BenchError::Arg(format!("channel line {line:?}")))?;
            let first: u128 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| BenchError::Arg(format!("channel line {line:?}")))?;
            let channel = ChannelId(id);
            let mut reqs = Vec::with_capacity(a.per_conn);
            for k in 0..a.per_conn as u128 {
                let cumulative = (first + k) * a.price;
                let signature = sign(&key, &domain, &channel, cumulative)?;
                let cred = json!({
                    "challenge": challenge,
                    "payload": {
                        "action": "voucher",
                        "channelId": id.to_string(),
                        "cumulativeAmount": cumulative.to_string(),
                        "signature": signature,
                    },
                });
                let header = format!("Payment {}", B64.encode(cred.to_string()));
                reqs.push(request(a.mode, &addr, Some(&header)));
            }
            per_conn.push(reqs);
        }
    }
    let conns = per_conn.len();
    // Every connection sends its warm-up, then all start together.
    let start = Instant::now() + Duration::from_millis(500 + 20 * conns as u64);
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let tasks: Vec<_> = per_conn
        .into_iter()
        .map(|reqs| tokio::spawn(drive(addr.clone(), reqs, start, deadline)))
        .collect();
    let mut latencies = Vec::new();
    let (mut ok, mut refused, mut errors, mut exhausted) = (0u64, 0u64, 0u64, 0usize);
    let mut first_refusal = None;
    for t in tasks {
        let r = t.await.map_err(|e| BenchError::Response(format!("task: {e}")))??;
        latencies.extend(r.latencies_us);
        ok += r.ok;
        refused += r.refused;
        errors += r.errors;
        exhausted += usize::from(r.exhausted);
        if first_refusal.is_none() {
            first_refusal = r.first_refusal;
        }
    }
    let elapsed = Instant::now().saturating_duration_since(start).as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p / 100.0) as usize).min(latencies.len() - 1);
        f64::from(latencies[i]) / 1000.0
    };
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    println!(
        "{}",
        json!({
            "connections": conns,
            "requests": latencies.len(),
            "ok": ok,
            "refused": refused,
            "socket_errors": errors,
            "duration_s": elapsed,
            "rps": ok as f64 / elapsed.max(1e-9),
            "p50_ms": pct(50.0),
            "p99_ms": pct(99.0),
            "p999_ms": pct(99.9),
            "mean_ms": mean,
            "connections_out_of_vouchers": exhausted,
            "first_refusal": first_refusal,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_voucher_recovers_to_the_payer() {
        // dev account 0 (public test key)
        let key = signing_key("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
        let domain = Domain {
            chain_id: 42431,
            escrow: Address::repeat_byte(0x11),
        };
        let channel = ChannelId(B256::repeat_byte(0x22));
        let sig = sign(&key, &domain, &channel, 3_000).unwrap();
        let voucher = Voucher {
            channel_id: channel,
            cumulative: 3_000,
            signature: VoucherSignature::parse_hex(&sig).unwrap(),
        };
        let payer: Address = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266".parse().unwrap();
        assert_eq!(domain.recover(&voucher).unwrap(), payer);
        let other = Voucher {
            cumulative: 4_000,
            ..voucher
        };
        assert_ne!(domain.recover(&other).ok(), Some(payer));
    }

    #[test]
    fn auth_params_read_quoted_escaped_and_bare_values() {
        let p = auth_params(r#"id="a,b", realm="x\"y", intent=session, expires="2026""#);
        assert_eq!(p["id"], "a,b");
        assert_eq!(p["realm"], "x\"y");
        assert_eq!(p["intent"], "session");
        assert_eq!(p["expires"], "2026");
        assert_eq!(p.len(), 4);
    }
}
