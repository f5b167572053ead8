//! Typed settings, validated once at boot (the seed validated its config on
//! every request, so a typo was a 500 on every call).
//!
//! Layers, later wins: `config/default.toml` (compiled in), an optional file
//! given on the command line, then `SETTLEGATE_…` environment variables with
//! `__` between sections. Unknown keys are refused, so a misspelt variable
//! such as `SETTLEGATE_GENOME_PATH` stops the boot instead of being ignored.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use ipnet::IpNet;
use serde::Deserialize;
use settlegate_rules::keys::PublicKey;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::http::RequestLog;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// The endpoint when neither `rpc.urls` nor `TEMPO_RPC_URL` is set (a local node).
const DEFAULT_RPC_URL: &str = "http://127.0.0.1:8545";

/// Variables read outside the `SETTLEGATE_` namespace: OpenTelemetry's
/// standard ones and the seed's `TEMPO_RPC_URL`.
fn outside_variable(k: &str) -> bool {
    k.starts_with("OTEL_") || k == "TEMPO_RPC_URL"
}
/// Anything larger is not a key list or a URL.
const MAX_SIDE_FILE_BYTES: u64 = 64 * 1024;

/// A configuration problem: the boot stops with `CONFIG_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A value that must never reach a log line or a `Debug` dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the Redis replay store is.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL, or a cluster's seed nodes.
    pub urls: Vec<Secret>,
    pub cluster: bool,
    /// PEM roots to verify `rediss://` servers with (else the system's).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Replicas a new record must reach before its 200 (`WAIT`); 0: none.
    pub wait_replicas: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub workers: usize,
    /// Connections served at once, across workers.
    pub max_connections: usize,
    /// `None` when not configured: the boot then fails with `GENOME_MISSING`.
    pub genome_path: Option<PathBuf>,
    pub genome_reload_interval_seconds: u64,
    pub manifest_root: Option<PathBuf>,
    pub trusted_keys: Vec<PublicKey>,
    pub min_threshold: u32,
    pub rpc_urls: Vec<Url>,
    pub rpc_timeout: Duration,
    pub lookup_timeout: Duration,
    /// `None`: no periodic chain-id probe.
    pub rpc_probe_interval: Option<Duration>,
    /// Endpoints are shown by host (else `rpc0`, `rpc1`, … in order).
    pub rpc_expose_endpoint_hosts: bool,
    /// How long a refusing lookup result keeps answering (0: off).
    pub coalescer_window: Duration,
    /// Distinct lookups in flight at most; beyond: 503 at once.
    pub max_lookups_in_flight: usize,
    /// Replay-store operations in flight at most; beyond: 503 at once.
    pub redis_max_ops_in_flight: usize,
    /// The shared replay store; `None`: a local file, one instance.
    pub redis: Option<RedisSettings>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    pub replay_local_path: PathBuf,
    pub replay_min_record_ttl: Duration,
    /// Entries of the in-process cache of consumed hashes (0: off).
    pub replay_cache_entries: usize,
    /// How long after its consume a request may be retried with its
    /// `Idempotency-Key` (never longer than the policy's age window).
    pub idempotency_retry_window: Duration,
    /// Idempotent retries of one payment at most.
    pub idempotency_max_retries: u32,
    pub log_request_level: RequestLog,
    pub log_buffer_lines: usize,
    /// JSON lines (`true`, the default) or human-readable text.
    pub log_json: bool,
    /// Trace export over OTLP; `None`: no export.
    pub otel: Option<Otel>,
    /// The MPP challenge secret; `None`: a random one per process.
    pub payment_secret: Option<Secret>,
    /// The secret before a rotation, and until when it still verifies.
    pub payment_previous_secret: Option<(Secret, OffsetDateTime)>,
    /// Peers whose `X-Forwarded-*` / `X-Original-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The header pair that names the original request on `/v1/authorize`.
    pub forwarded_headers: ForwardedHeaders,
    /// How long a client may take to send a request's head (slow clients).
    pub client_request_timeout: Duration,
    /// How long a request's body may take to arrive after its head.
    pub request_body_timeout: Duration,
    /// How long sent bytes may go unacknowledged (a peer that stopped
    /// reading) before the kernel aborts the connection.
    pub send_timeout: Duration,
    /// HTTPS from these files; `None`: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Callers of `/v1/verify` and their limits.
    pub callers: Callers,
    /// Origins a browser may call from (empty: no CORS headers at all).
    pub cors_allowed_origins: Vec<String>,
    pub cors_max_age_seconds: usize,
}

/// Which header pair a reverse proxy names the original request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-Method` + `X-Forwarded-Uri` (Caddy, Traefik).
    XForwarded,
    /// `X-Original-Method` + `X-Original-URI` (nginx `auth_request`).
    XOriginal,
}

impl ForwardedHeaders {
    /// (method, URI) header names of this pair.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            ForwardedHeaders::XForwarded => ("x-forwarded-method", "x-forwarded-uri"),
            ForwardedHeaders::XOriginal => ("x-original-method", "x-original-uri"),
        }
    }

    /// The other pair, whose presence makes a request ambiguous.
    pub fn other(self) -> Self {
        match self {
            ForwardedHeaders::XForwarded => ForwardedHeaders::XOriginal,
            ForwardedHeaders::XOriginal => ForwardedHeaders::XForwarded,
        }
    }
}

/// Caller authentication and rate limits (`[callers]`).
#[derive(Debug, Clone, Default)]
pub struct Callers {
    /// (name, SHA-256 of the key): with any, `/v1/verify` needs
    /// `Authorization: Bearer <key>`.
    pub api_keys: Vec<(String, [u8; 32])>,
    /// Requests per second per API key / per client IP (0: unlimited).
    pub rate_per_caller: u32,
    pub rate_per_ip: u32,
    /// The same keys and rates admit `/v1/authorize` too, the key in
    /// `X-Settlegate-Key` (`Authorization` carries the payment there).
    pub authorize: bool,
    /// Peers whose `X-Forwarded-For` names the client for the per-IP rate
    /// (empty: the peer is the client, whatever it sends).
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    server: RawServer,
    genome: RawGenome,
    trust: RawTrust,
    rpc: RawRpc,
    redis: RawRedis,
    replay: RawReplay,
    idempotency: RawIdempotency,
    coalescer: RawCoalescer,
    log: RawLog,
    #[serde(default)]
    otel: RawOtel,
    #[serde(default)]
    payment: RawPayment,
    authorize: RawAuthorize,
    callers: RawCallers,
    cors: RawCors,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallers {
    api_keys: Vec<String>,
    api_keys_file: Option<PathBuf>,
    rate_per_caller_per_second: u32,
    rate_per_ip_per_second: u32,
    authorize: bool,
    trusted_proxies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Vec<String>,
    max_age_seconds: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPayment {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    previous_secret: Option<String>,
    previous_secret_file: Option<PathBuf>,
    previous_secret_until: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorize {
    trusted_proxies: Vec<String>,
    forwarded_headers: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    local_path: PathBuf,
    min_record_ttl_seconds: u64,
    cache_entries: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdempotency {
    retry_window_seconds: u64,
    max_retries: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoalescer {
    window_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    request_level: String,
    buffer_lines: usize,
    format: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    workers: usize,
    max_connections: usize,
    client_request_timeout_ms: u64,
    request_body_timeout_ms: u64,
    send_timeout_ms: u64,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_reload_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenome {
    path: Option<PathBuf>,
    reload_interval_seconds: u64,
    manifest_root: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default)]
    keys: Vec<String>,
    keys_file: Option<PathBuf>,
    min_threshold: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRpc {
    #[serde(default)]
    urls: Option<Vec<String>>,
    urls_file: Option<PathBuf>,
    timeout_ms: u64,
    lookup_timeout_ms: u64,
    probe_interval_ms: u64,
    max_lookups_in_flight: usize,
    expose_endpoint_hosts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    url_file: Option<PathBuf>,
    mode: String,
    tls_ca_file: Option<PathBuf>,
    wait_replicas: u32,
    key_prefix: String,
    timeout_ms: u64,
    max_ops_in_flight: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOtel {
    endpoint: Option<String>,
    protocol: Option<String>,
    service_name: Option<String>,
    metrics_endpoint: Option<String>,
    metrics_interval_ms: Option<u64>,
    #[serde(default = "default_otel_queue")]
    max_queue_size: usize,
}

fn default_otel_queue() -> usize {
    2048
}

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318), to `<endpoint>/v1/traces`.
    HttpProtobuf,
}

/// Where and how traces are exported. Each value comes from settlegate's
/// own key when set, else from the OpenTelemetry standard variable
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
#[derive(Clone, Debug)]
pub struct Otel {
    /// For HTTP, the full traces URL (`/v1/traces` appended to a bare
    /// endpoint, as the OTLP specification says for the base variable).
    pub endpoint: Url,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// `key=value` pairs from `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    /// Spans queued for export at most; beyond it they are dropped and counted.
    pub max_queue_size: usize,
    /// Where metrics go: for HTTP the full metrics URL (`/v1/metrics`), for
    /// gRPC the same endpoint as traces.
    pub metrics_endpoint: Url,
    /// How often the metrics are pushed (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub metrics_interval: Duration,
}

impl Otel {
    /// The resource of every export, spans and metrics alike:
    /// `service.name`, `service.version`, then `OTEL_RESOURCE_ATTRIBUTES`
    /// (whose `service.name` gives way to the configured one).
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("service.name".to_owned(), self.service_name.clone()),
            ("service.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ];
        out.extend(self.resource.iter().filter(|(k, _)| k != "service.name").cloned());
        out
    }
}

/// The settings whose `SETTLEGATE_*` variables are comma-separated lists.
const LIST_KEYS: [&str; 6] = [
    "trust.keys",
    "rpc.urls",
    "authorize.trusted_proxies",
    "callers.api_keys",
    "callers.trusted_proxies",
    "cors.allowed_origins",
];
impl Settings {
    /// Loads from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, None)
    }

    /// Loads with an explicit environment (tests), or the process's when `None`.
    pub fn load_from(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Self, ConfigError> {
        let err = |e: config::ConfigError| ConfigError(e.to_string());
        let outside_env: HashMap<String, String> = match &env {
            Some(m) => m
                .iter()
                .filter(|(k, _)| outside_variable(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => std::env::vars().filter(|(k, _)| outside_variable(k)).collect(),
        };
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            builder = builder.add_source(File::from(path).required(true));
        }
        // Two sources: config-rs splits lists only when it guesses types,
        // and its guess is lossy for strings (a secret of digits came back
        // as a float's spelling, "007" as "7", "TRUE" as "true"). So only
        // the list variables are guessed; every other value stays the
        // string it was until its field's type reads it.
        let env: HashMap<String, String> = match env {
            Some(env) => env,
            None => {
                let mut vars = HashMap::new();
                for (k, v) in std::env::vars_os() {
                    let Some(k) = k
                        .to_str()
                        .filter(|k| k.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("SETTLEGATE_")))
                    else {
                        continue;
                    };
                    let v = v
                        .into_string()
                        .map_err(|_| ConfigError(format!("{k} is not valid UTF-8")))?;
                    vars.insert(k.to_owned(), v);
                }
                vars
            }
        };
        // `SETTLEGATE_TRUST__KEYS` names `trust.keys`
        let is_list = |k: &str| {
            LIST_KEYS.iter().any(|l| {
                k.get(11..)
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(&l.replace('.', "__")))
            })
        };
        let (lists, scalars): (HashMap<_, _>, HashMap<_, _>) = env.into_iter().partition(|(k, _)| is_list(k));
        let variables = |parse: bool, source: HashMap<String, String>| {
            let e = Environment::with_prefix("SETTLEGATE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(parse)
                .ignore_empty(true)
                .source(Some(source));
            if !parse {
                return e;
            }
            LIST_KEYS
                .iter()
                .fold(e.list_separator(","), |e, k| e.with_list_parse_key(k))
        };
        let raw: Raw = builder
            .add_source(variables(false, scalars))
            .add_source(variables(true, lists))
            .build()
            .map_err(err)?
            .try_deserialize()
            .map_err(err)?;
        Self::validate(raw, &outside_env)
    }

    fn validate(raw: Raw, outside_env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            ConfigError(format!(
                "server.listen {:?} is not an IP:port address",
                raw.server.listen
            ))
        })?;
        if raw.server.workers > 256 {
            return fail(format!("server.workers is {}, at most 256", raw.server.workers));
        }
        if !(1..=100_000).contains(&raw.server.max_connections) {
            return fail(format!(
                "server.max_connections must be between 1 and 100000, got {}",
                raw.server.max_connections
            ));
        }

        let mut trusted_keys = Vec::new();
        for (i, k) in raw.trust.keys.iter().enumerate().filter(|(_, k)| !k.trim().is_empty()) {
            trusted_keys
                .push(PublicKey::from_spki_base64(k).map_err(|e| ConfigError(format!("trust.keys[{i}]: {e}")))?);
        }
        if let Some(path) = &raw.trust.keys_file {
            trusted_keys.extend(read_keys_file(path)?);
        }
        if trusted_keys.is_empty() {
            return fail("no trusted keys: set trust.keys (SETTLEGATE_TRUST__KEYS) or trust.keys_file".into());
        }
        if raw.trust.min_threshold == 0 {
            return fail("trust.min_threshold must be at least 1".into());
        }
        let distinct = settlegate_rules::genome::TrustRoot::new(trusted_keys.iter().copied(), 1)
            .keys()
            .len();
        if raw.trust.min_threshold as usize > distinct {
            return fail(format!(
                "trust.min_threshold is {} but only {distinct} distinct keys are pinned",
                raw.trust.min_threshold
            ));
        }

        // The seed's TEMPO_RPC_URL is the endpoint when rpc.urls is not
        // set; set both and they must agree, or the boot stops.
        let seed_rpc = outside_env
            .get("TEMPO_RPC_URL")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| parse_http_url("TEMPO_RPC_URL", v))
            .transpose()?;
        let configured = match (raw.rpc.urls, raw.rpc.urls_file) {
            (Some(_), Some(_)) => return fail("set rpc.urls or rpc.urls_file, not both".into()),
            (Some(urls), None) => Some(urls),
            (None, Some(path)) => Some(
                read_side_file(&path, "rpc.urls_file")?
                    .split([',', '\n'])
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect(),
            ),
            (None, None) => None,
        };
        let rpc_urls = match configured {
            Some(urls) => {
                if urls.is_empty() {
                    return fail("rpc.urls is empty: settlegate needs at least one Tempo RPC endpoint".into());
                }
                let urls = urls
                    .iter()
                    .map(|u| parse_http_url("rpc.urls", u))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(seed) = &seed_rpc
                    && urls != [seed.clone()]
                {
                    return fail(format!(
                        "TEMPO_RPC_URL ({}) and rpc.urls ({}) disagree: set one of them, \
                         rpc.urls for several endpoints",
                        settlegate_actors::rpc_pool::endpoint_label(seed),
                        urls.iter()
                            .map(settlegate_actors::rpc_pool::endpoint_label)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                urls
            }
            None => vec![match seed_rpc {
                Some(seed) => seed,
                None => parse_http_url("rpc.urls", DEFAULT_RPC_URL)?,
            }],
        };

        let redis_url = match (raw.redis.url, raw.redis.url_file) {
            (Some(_), Some(_)) => return fail("set redis.url or redis.url_file, not both".into()),
            (Some(u), None) => Some(u),
            (None, Some(path)) => Some(read_side_file(&path, "redis.url_file")?.trim().to_owned()),
            (None, None) => None,
        };
        let redis = match redis_url {
            None => {
                if raw.redis.tls_ca_file.is_some() {
                    return fail("redis.tls_ca_file is set but no redis.url".into());
                }
                None
            }
            Some(u) => Some(redis_settings(&u, &raw.redis.mode, raw.redis.tls_ca_file.as_deref())?),
        };
        match (&redis, raw.redis.wait_replicas) {
            (_, 0) => {}
            (_, n) if n > 16 => return fail(format!("redis.wait_replicas must be at most 16, got {n}")),
            (None, _) => return fail("redis.wait_replicas is set but no redis.url".into()),
            (Some(_), _) if raw.redis.timeout_ms < 300 => {
                return fail(format!(
                    "redis.wait_replicas needs redis.timeout_ms of at least 300 (a third each for the consume, the replicas and a withdrawal), got {}",
                    raw.redis.timeout_ms
                ));
            }
            (Some(_), _) => {}
        }
        let redis = redis.map(|r| RedisSettings {
            wait_replicas: raw.redis.wait_replicas,
            ..r
        });
        let ms = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(Duration::from_millis(v))
            } else {
                Err(ConfigError(format!(
                    "{key} must be between {lo} and {hi} milliseconds, got {v}"
                )))
            }
        };
        let rpc_timeout = ms("rpc.timeout_ms", raw.rpc.timeout_ms, 50, 60_000)?;
        let lookup_timeout = ms("rpc.lookup_timeout_ms", raw.rpc.lookup_timeout_ms, 100, 120_000)?;
        if rpc_timeout > lookup_timeout {
            return fail(format!(
                "rpc.timeout_ms ({}) must not exceed rpc.lookup_timeout_ms ({}): a lookup includes at least one call",
                raw.rpc.timeout_ms, raw.rpc.lookup_timeout_ms
            ));
        }
        let rpc_probe_interval = match raw.rpc.probe_interval_ms {
            0 => None,
            v => Some(ms("rpc.probe_interval_ms", v, 100, 3_600_000)?),
        };
        let coalescer_window = match raw.coalescer.window_ms {
            0 => Duration::ZERO,
            v => ms("coalescer.window_ms", v, 1, 10_000)?,
        };
        let redis_timeout = ms("redis.timeout_ms", raw.redis.timeout_ms, 10, 60_000)?;
        if raw.redis.key_prefix.len() > 64
            || raw
                .redis
                .key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return fail("redis.key_prefix must be at most 64 characters without spaces".into());
        }
        if raw.replay.min_record_ttl_seconds > 365 * 86_400 {
            return fail("replay.min_record_ttl_seconds must be at most a year".into());
        }
        if raw.replay.cache_entries > 10_000_000 {
            return fail("replay.cache_entries must be at most 10000000".into());
        }
        if raw.idempotency.retry_window_seconds > 3_600 {
            return fail(format!(
                "idempotency.retry_window_seconds must be at most 3600, got {}",
                raw.idempotency.retry_window_seconds
            ));
        }
        if raw.idempotency.max_retries > 100 {
            return fail(format!(
                "idempotency.max_retries must be at most 100, got {}",
                raw.idempotency.max_retries
            ));
        }
        let log_request_level = match raw.log.request_level.as_str() {
            "info" => RequestLog::Info,
            "debug" => RequestLog::Debug,
            "off" => RequestLog::Off,
            other => {
                return fail(format!("log.request_level {other:?} is not one of info, debug, off"));
            }
        };
        if !(64..=1_000_000).contains(&raw.log.buffer_lines) {
            return fail(format!(
                "log.buffer_lines must be between 64 and 1000000, got {}",
                raw.log.buffer_lines
            ));
        }
        let otel = otel_settings(raw.otel, outside_env)?;
        let log_json = match raw.log.format.as_str() {
            "json" => true,
            "text" => false,
            other => return fail(format!("log.format {other:?} is not json or text")),
        };

        let secret = |key: &str, value: Option<String>, file: Option<PathBuf>| -> Result<Option<Secret>, ConfigError> {
            let s = match (value, file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError(format!(
                        "set payment.{key} or payment.{key}_file, not both"
                    )));
                }
                (Some(s), None) => s,
                (None, Some(path)) => read_side_file(&path, &format!("payment.{key}_file"))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                (None, None) => return Ok(None),
            };
            // Never echo the secret, only its length.
            if s.len() < settlegate_rules::mpp::MIN_SECRET_LEN {
                return Err(ConfigError(format!(
                    "payment.{key} must be at least {} bytes, got {} (e.g. `openssl rand -base64 32`)",
                    settlegate_rules::mpp::MIN_SECRET_LEN,
                    s.len()
                )));
            }
            Ok(Some(Secret(s)))
        };
        let p = raw.payment;
        let payment_secret = secret("secret", p.secret, p.secret_file)?;
        let previous = secret("previous_secret", p.previous_secret, p.previous_secret_file)?;
        let payment_previous_secret = match (previous, p.previous_secret_until) {
            (None, None) => None,
            (Some(s), Some(until)) => {
                let until = OffsetDateTime::parse(until.trim(), &Rfc3339).map_err(|_| {
                    ConfigError(format!(
                        "payment.previous_secret_until {until:?} is not an RFC 3339 time such as 2026-12-02T12:00:00Z"
                    ))
                })?;
                Some((s, until))
            }
            (Some(_), None) => {
                return fail(
                    "payment.previous_secret needs payment.previous_secret_until (when the overlap ends)".into(),
                );
            }
            (None, Some(_)) => {
                return fail("payment.previous_secret_until is set without payment.previous_secret".into());
            }
        };
        if payment_previous_secret.is_some() && payment_secret.is_none() {
            return fail("payment.previous_secret is set without payment.secret".into());
        }
        if let (Some(cur), Some((prev, _))) = (&payment_secret, &payment_previous_secret)
            && cur == prev
        {
            return fail("payment.previous_secret equals payment.secret".into());
        }
        let trusted_proxies = raw
            .authorize
            .trusted_proxies
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_net("authorize.trusted_proxies", s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let forwarded_headers = match raw.authorize.forwarded_headers.as_str() {
            "x-forwarded" => ForwardedHeaders::XForwarded,
            "x-original" => ForwardedHeaders::XOriginal,
            other => {
                return fail(format!(
                    "authorize.forwarded_headers must be \"x-forwarded\" or \"x-original\", got {}",
                    settlegate_rules::primitives::quote_bounded(other, 40)
                ));
            }
        };
        let client_request_timeout = ms(
            "server.client_request_timeout_ms",
            raw.server.client_request_timeout_ms,
            100,
            60_000,
        )?;
        let request_body_timeout = ms(
            "server.request_body_timeout_ms",
            raw.server.request_body_timeout_ms,
            100,
            120_000,
        )?;
        let send_timeout = ms("server.send_timeout_ms", raw.server.send_timeout_ms, 1000, 300_000)?;
        let tls = match (raw.server.tls_cert_file, raw.server.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert,
                key,
                reload_every: (raw.server.tls_reload_seconds > 0)
                    .then(|| Duration::from_secs(raw.server.tls_reload_seconds)),
            }),
            (None, None) => None,
            _ => return fail("set both server.tls_cert_file and server.tls_key_file, or neither".into()),
        };
        if raw.server.tls_reload_seconds > 86_400 {
            return fail(format!(
                "server.tls_reload_seconds must be at most 86400, got {}",
                raw.server.tls_reload_seconds
            ));
        }
        let callers = callers_settings(raw.callers)?;
        for (key, v) in [
            ("rpc.max_lookups_in_flight", raw.rpc.max_lookups_in_flight),
            ("redis.max_ops_in_flight", raw.redis.max_ops_in_flight),
        ] {
            if !(1..=100_000).contains(&v) {
                return fail(format!("{key} must be between 1 and 100000, got {v}"));
            }
        }
        let cors_allowed_origins = cors_origins(&raw.cors.allowed_origins)?;
        if raw.cors.max_age_seconds > 86_400 {
            return fail(format!(
                "cors.max_age_seconds must be at most 86400, got {}",
                raw.cors.max_age_seconds
            ));
        }

        Ok(Settings {
            listen,
            workers: raw.server.workers,
            max_connections: raw.server.max_connections,
            genome_path: raw.genome.path.filter(|p| !p.as_os_str().is_empty()),
            genome_reload_interval_seconds: raw.genome.reload_interval_seconds,
            manifest_root: raw.genome.manifest_root,
            trusted_keys,
            min_threshold: raw.trust.min_threshold,
            rpc_urls,
            rpc_timeout,
            lookup_timeout,
            rpc_probe_interval,
            rpc_expose_endpoint_hosts: raw.rpc.expose_endpoint_hosts,
            coalescer_window,
            max_lookups_in_flight: raw.rpc.max_lookups_in_flight,
            redis_max_ops_in_flight: raw.redis.max_ops_in_flight,
            redis,
            redis_key_prefix: raw.redis.key_prefix,
            redis_timeout,
            replay_local_path: raw.replay.local_path,
            replay_min_record_ttl: Duration::from_secs(raw.replay.min_record_ttl_seconds),
            replay_cache_entries: raw.replay.cache_entries,
            idempotency_retry_window: Duration::from_secs(raw.idempotency.retry_window_seconds),
            idempotency_max_retries: raw.idempotency.max_retries,
            log_request_level,
            log_buffer_lines: raw.log.buffer_lines,
            log_json,
            otel,
            payment_secret,
            payment_previous_secret,
            trusted_proxies,
            forwarded_headers,
            client_request_timeout,
            request_body_timeout,
            send_timeout,
            tls,
            callers,
            cors_allowed_origins,
            cors_max_age_seconds: raw.cors.max_age_seconds,
        })
    }
}

/// `name:<64 hex>` entries: a caller's name and the SHA-256 of its key
/// (`printf %s "$KEY" | sha256sum`). The keys themselves are never
/// configured, so a leaked configuration leaks no key.
fn callers_settings(raw: RawCallers) -> Result<Callers, ConfigError> {
    let mut entries: Vec<(String, &'static str)> =
        raw.api_keys.iter().map(|e| (e.clone(), "callers.api_keys")).collect();
    if let Some(path) = &raw.api_keys_file {
        let text = read_side_file(path, "callers.api_keys_file")?;
        entries.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| (l.to_owned(), "callers.api_keys_file")),
        );
    }
    let mut api_keys: Vec<(String, [u8; 32])> = Vec::new();
    for (entry, key) in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let bad = || {
            ConfigError(format!(
                "{key}: an entry must be name:<SHA-256 of the key, 64 hex digits> (printf %s \"$KEY\" | sha256sum)"
            ))
        };
        let (name, digest) = entry.split_once(':').ok_or_else(bad)?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError(format!(
                "{key}: a caller name must be 1 to 64 of [A-Za-z0-9._-], got {name:?}"
            )));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digest.trim(), &mut bytes).map_err(|_| bad())?;
        if api_keys.iter().any(|(n, d)| n == name || *d == bytes) {
            return Err(ConfigError(format!(
                "{key}: caller {name:?} or its key is listed twice"
            )));
        }
        api_keys.push((name.to_owned(), bytes));
    }
    for (what, rate) in [
        ("callers.rate_per_caller_per_second", raw.rate_per_caller_per_second),
        ("callers.rate_per_ip_per_second", raw.rate_per_ip_per_second),
    ] {
        if rate > 1_000_000 {
            return Err(ConfigError(format!("{what} must be at most 1000000, got {rate}")));
        }
    }
    if raw.rate_per_caller_per_second > 0 && api_keys.is_empty() {
        return Err(ConfigError(
            "callers.rate_per_caller_per_second needs callers.api_keys (or api_keys_file) to tell callers apart".into(),
        ));
    }
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_net("callers.trusted_proxies", s.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.authorize && api_keys.is_empty() && raw.rate_per_ip_per_second == 0 {
        return Err(ConfigError(
            "callers.authorize needs callers.api_keys (or api_keys_file) or callers.rate_per_ip_per_second: \
             there is nothing to apply to /v1/authorize"
                .into(),
        ));
    }
    Ok(Callers {
        api_keys,
        rate_per_caller: raw.rate_per_caller_per_second,
        rate_per_ip: raw.rate_per_ip_per_second,
        authorize: raw.authorize,
        trusted_proxies,
    })
}

/// `https://app.example` (scheme, host, optional port; no path), or `*`.
fn cors_origins(raw: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    let listed: Vec<&str> = raw.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if listed.contains(&"*") && listed.len() > 1 {
        return Err(ConfigError(
            "cors.allowed_origins: * allows every origin; list origins or give * alone".into(),
        ));
    }
    for o in listed {
        if o == "*" {
            out.push(o.to_owned());
            continue;
        }
        let ok = Url::parse(o).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && u.username().is_empty()
                && !o.ends_with('/')
        });
        if !ok {
            return Err(ConfigError(format!(
                "cors.allowed_origins: {o:?} is not an origin such as https://app.example (scheme, host, port; no path), or *"
            )));
        }
        out.push(o.to_owned());
    }
    Ok(out)
}

/// An IP address or CIDR block.
fn parse_net(key: &str, s: &str) -> Result<IpNet, ConfigError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            ConfigError(format!(
                "{key}: {s:?} is not an IP address or CIDR block such as 10.0.0.0/8"
            ))
        })
}

/// `otel.*`, each key falling back to its `OTEL_*` variable (ours wins:
/// it is the one an operator set for this service).
fn otel_settings(raw: RawOtel, env: &HashMap<String, String>) -> Result<Option<Otel>, ConfigError> {
    let from_env = |k: &str| env.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let (endpoint, endpoint_key) = match (raw.endpoint, from_env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(e), _) => (e, "otel.endpoint"),
        (None, Some(e)) => (e, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (None, None) => return Ok(None),
    };
    let mut endpoint = parse_http_url(endpoint_key, &endpoint)?;
    let protocol = match raw
        .protocol
        .or_else(|| from_env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
        .unwrap_or("http/protobuf")
    {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => {
            return Err(ConfigError(format!(
                "otel.protocol {other:?} is not grpc or http/protobuf"
            )));
        }
    };
    let bare = matches!(endpoint.path(), "" | "/");
    let metrics_endpoint = match raw.metrics_endpoint {
        Some(e) => parse_http_url("otel.metrics_endpoint", &e)?,
        None => match from_env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some(e) => parse_http_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &e)?,
            None if protocol == OtlpProtocol::Grpc => endpoint.clone(),
            None => {
                // the traces URL's sibling: `/v1/traces` becomes `/v1/metrics`,
                // a base path gets `/v1/metrics` appended
                let mut m = endpoint.clone();
                let path = endpoint.path().trim_end_matches('/');
                let base = path.strip_suffix("/v1/traces").unwrap_or(path);
                m.set_path(&format!("{base}/v1/metrics"));
                m
            }
        },
    };
    if protocol == OtlpProtocol::HttpProtobuf && bare {
        endpoint.set_path("/v1/traces");
    }
    let interval_ms = match raw.metrics_interval_ms {
        Some(ms) => ms,
        None => match from_env("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => v.parse().map_err(|_| {
                ConfigError(format!(
                    "OTEL_METRIC_EXPORT_INTERVAL {v:?} is not a number of milliseconds"
                ))
            })?,
            None => 60_000,
        },
    };
    if !(100..=3_600_000).contains(&interval_ms) {
        return Err(ConfigError(format!(
            "otel.metrics_interval_ms must be between 100 and 3600000, got {interval_ms}"
        )));
    }
    let service_name = raw
        .service_name
        .or_else(|| from_env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "settlegate".into());
    let mut resource = Vec::new();
    for pair in from_env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default().split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((k, v)) = pair.split_once('=') else {
            return Err(ConfigError(format!(
                "OTEL_RESOURCE_ATTRIBUTES: {pair:?} is not key=value"
            )));
        };
        resource.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if !(64..=1_000_000).contains(&raw.max_queue_size) {
        return Err(ConfigError(format!(
            "otel.max_queue_size must be between 64 and 1000000, got {}",
            raw.max_queue_size
        )));
    }
    Ok(Some(Otel {
        endpoint,
        protocol,
        service_name,
        resource,
        max_queue_size: raw.max_queue_size,
        metrics_endpoint,
        metrics_interval: Duration::from_millis(interval_ms),
    }))
}

fn parse_http_url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let shown = shown_url(s);
    let url = Url::parse(s.trim()).map_err(|e| ConfigError(format!("{key}: {shown} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError(format!(
            "{key}: {shown} must be an http(s) URL with a host"
        )));
    }
    Ok(url)
}

/// A URL as an error message may show it: an RPC URL can carry a password
/// or an API key, so only its scheme, host and port (or nothing).
fn shown_url(s: &str) -> String {
    match Url::parse(s.trim()) {
        Ok(u) => settlegate_actors::rpc_pool::endpoint_label(&u),
        // A provider's key can sit anywhere in it: describe, never quote.
        Err(_) => format!(
            "(a value of {} characters, not shown: it may hold credentials)",
            s.len()
        ),
    }
}

/// At most this many cluster seed nodes.
const MAX_REDIS_NODES: usize = 64;

/// `redis.url` read for `redis.mode`: one URL, or (cluster) seed nodes
/// separated by commas or whitespace (a file's lines).
fn redis_settings(text: &str, mode: &str, ca_file: Option<&Path>) -> Result<RedisSettings, ConfigError> {
    let cluster = match mode {
        "single" => false,
        "cluster" => true,
        other => {
            return Err(ConfigError(format!(
                "redis.mode must be \"single\" or \"cluster\", got {}",
                settlegate_rules::primitives::quote_bounded(other, 32)
            )));
        }
    };
    // One URL may hold a comma (its password may); only a cluster's seed
    // list is split on commas. A second URL in single mode is refused.
    let urls: Vec<&str> = if cluster {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|u| !u.is_empty())
            .collect()
    } else {
        let one = text.trim();
        let several =
            one.split_whitespace().nth(1).is_some() || one.contains(",redis://") || one.contains(",rediss://");
        match (
            one.trim_matches(|c: char| c == ',' || c.is_whitespace()).is_empty(),
            several,
        ) {
            (true, _) => vec![],
            (false, true) => vec![one, one],
            (false, false) => vec![one],
        }
    };
    match (cluster, urls.len()) {
        (_, 0) => return Err(ConfigError("redis.url is empty".into())),
        (false, 1) => {}
        (false, _) => {
            return Err(ConfigError(
                "redis.url holds several URLs: set redis.mode = \"cluster\" for a cluster's seed nodes".into(),
            ));
        }
        (true, n) if n > MAX_REDIS_NODES => {
            return Err(ConfigError(format!(
                "redis.url lists more than {MAX_REDIS_NODES} nodes"
            )));
        }
        (true, _) => {}
    }
    let mut schemes = std::collections::BTreeSet::new();
    for (i, u) in urls.iter().enumerate() {
        // Never echo a URL itself: it may carry a password.
        let parsed = Url::parse(u).map_err(|_| ConfigError(format!("redis URL {} does not parse", i + 1)))?;
        let scheme = parsed.scheme();
        let allowed: &[&str] = if cluster {
            &["redis", "rediss"]
        } else {
            &["redis", "rediss", "redis+unix"]
        };
        if !allowed.contains(&scheme) {
            return Err(ConfigError(format!(
                "redis URL {} scheme {scheme:?} is not {}",
                i + 1,
                allowed.join(" or ")
            )));
        }
        if scheme != "redis+unix" && parsed.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError(format!("redis URL {} has no host", i + 1)));
        }
        schemes.insert(scheme.to_owned());
    }
    if schemes.len() > 1 {
        return Err(ConfigError(
            "the cluster's redis URLs mix redis:// and rediss://: use TLS for all or none".into(),
        ));
    }
    let tls = schemes.contains("rediss");
    let tls_ca_pem = match ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(ConfigError(
                "redis.tls_ca_file is set but redis.url is not rediss:// (TLS)".into(),
            ));
        }
        Some(path) => {
            let pem = read_side_file(path, "redis.tls_ca_file")?;
            let certs =
                <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| ConfigError(format!("redis.tls_ca_file {} is not PEM", path.display())))?;
            if certs.is_empty() {
                return Err(ConfigError(format!(
                    "redis.tls_ca_file {} holds no certificate",
                    path.display()
                )));
            }
            Some(pem.into_bytes())
        }
    };
    Ok(RedisSettings {
        urls: urls.into_iter().map(|u| Secret(u.to_owned())).collect(),
        cluster,
        tls_ca_pem,
        wait_replicas: 0,
    })
}

fn read_side_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| ConfigError(format!("{key} {}: {e}", path.display())))?;
    if meta.len() > MAX_SIDE_FILE_BYTES {
        return Err(ConfigError(format!(
            "{key} {} is larger than {MAX_SIDE_FILE_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{key} {}: {e}", path.display())))
}

/// Pinned keys from a file: the JSON `genome keygen` prints (one object or
/// an array), or one base64 SPKI key per line with `#` comments.
pub fn read_keys_file(path: &Path) -> Result<Vec<PublicKey>, ConfigError> {
    let text = read_side_file(path, "trust.keys_file")?;
    let bad = |what: String| ConfigError(format!("trust.keys_file {}: {what}", path.display()));
    let trimmed = text.trim_start();
    let encoded: Vec<String> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Key { public_key: String },
            Plain(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Doc {
            One(Entry),
            Many(Vec<Entry>),
        }
        let doc: Doc = serde_json::from_str(trimmed).map_err(|e| bad(format!("not a key list: {e}")))?;
        let entries = match doc {
            Doc::One(e) => vec![e],
            Doc::Many(v) => v,
        };
        entries
            .into_iter()
            .map(|e| match e {
                Entry::Key { public_key } => public_key,
                Entry::Plain(s) => s,
            })
            .collect()
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    encoded
        .iter()
        .enumerate()
        .map(|(i, k)| PublicKey::from_spki_base64(k).map_err(|e| bad(format!("key {}: {e}", i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use settlegate_rules::keys::PrivateKey;

    fn key(n: u8) -> String {
        PrivateKey::from_seed([n; 32]).public_key().to_spki_base64()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(None, Some(env(pairs)))
    }

    #[test]
    fn the_seeds_tempo_rpc_url_is_the_endpoint_when_rpc_urls_is_not_set() {
        let k = key(1);
        let base = [
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
        ];
        let urls = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            load(&pairs).map(|s| s.rpc_urls.iter().map(|u| u.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(urls(&[]).unwrap(), ["http://127.0.0.1:8545/"]);
        assert_eq!(
            urls(&[("TEMPO_RPC_URL", "https://rpc.moderato.tempo.xyz")]).unwrap(),
            ["https://rpc.moderato.tempo.xyz/"]
        );
        // both, naming the same endpoint: fine
        assert_eq!(
            urls(&[("TEMPO_RPC_URL", "http://n:1"), ("SETTLEGATE_RPC__URLS", "http://n:1")]).unwrap(),
            ["http://n:1/"]
        );
        for (rpc_urls, says) in [("http://other:1", "disagree"), ("http://n:1,http://n:2", "disagree")] {
            let e = urls(&[("TEMPO_RPC_URL", "http://n:1"), ("SETTLEGATE_RPC__URLS", rpc_urls)]).unwrap_err();
            assert!(e.0.contains(says) && e.0.contains("TEMPO_RPC_URL"), "{rpc_urls}: {e:?}");
        }
        let e = urls(&[("TEMPO_RPC_URL", "not a url")]).unwrap_err();
        assert!(e.0.contains("TEMPO_RPC_URL"), "{e:?}");
    }

    #[test]
    fn redis_modes_tls_roots_and_replica_waits_are_checked_at_boot() {
        let k = key(1);
        let base = [
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
        ];
        let redis = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            load(&pairs).map(|s| s.redis)
        };
        let seeds = "redis://:pw@10.0.0.1:7000, redis://:pw@10.0.0.2:7000\nredis://:pw@10.0.0.3:7000";
        let cluster = redis(&[("SETTLEGATE_REDIS__URL", seeds), ("SETTLEGATE_REDIS__MODE", "cluster")])
            .unwrap()
            .unwrap();
        assert!(cluster.cluster);
        assert_eq!(cluster.urls.len(), 3);
        assert_eq!(cluster.urls[2].expose(), "redis://:pw@10.0.0.3:7000");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        // a real certificate, in PEM
        std::fs::write(
            &ca,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-ca.pem")),
        )
        .unwrap();
        let (ca, not_pem) = (ca.display().to_string(), not_pem.display().to_string());
        let tls = redis(&[
            ("SETTLEGATE_REDIS__URL", "rediss://:pw@r.example:6380"),
            ("SETTLEGATE_REDIS__TLS_CA_FILE", &ca),
            ("SETTLEGATE_REDIS__WAIT_REPLICAS", "1"),
            ("SETTLEGATE_REDIS__TIMEOUT_MS", "900"),
        ])
        .unwrap()
        .unwrap();
        assert!(!tls.cluster && tls.tls_ca_pem.is_some() && tls.wait_replicas == 1);
        // A comma is legal in a password (found by review): one URL.
        let comma = redis(&[("SETTLEGATE_REDIS__URL", " redis://:ab,cd@r.example:6379 ")])
            .unwrap()
            .unwrap();
        assert_eq!(comma.urls.len(), 1);
        assert_eq!(comma.urls[0].expose(), "redis://:ab,cd@r.example:6379");
        for (extra, says) in [
            (vec![("SETTLEGATE_REDIS__URL", seeds)], "redis.mode"),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://a:1"),
                    ("SETTLEGATE_REDIS__MODE", "sentinel"),
                ],
                "redis.mode",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1,rediss://:pw@b:1"),
                    ("SETTLEGATE_REDIS__MODE", "cluster"),
                ],
                "mix",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis+unix:///r.sock"),
                    ("SETTLEGATE_REDIS__MODE", "cluster"),
                ],
                "scheme",
            ),
            (vec![("SETTLEGATE_REDIS__URL", " , ")], "empty"),
            (
                vec![("SETTLEGATE_REDIS__URL", "redis://:pw@a:1,redis://:pw@b:1")],
                "several URLs",
            ),
            (
                vec![("SETTLEGATE_REDIS__URL", "redis://:pw@a:1 redis://:pw@b:1")],
                "several URLs",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1"),
                    ("SETTLEGATE_REDIS__TLS_CA_FILE", &ca),
                ],
                "not rediss",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "rediss://:pw@a:1"),
                    ("SETTLEGATE_REDIS__TLS_CA_FILE", &not_pem),
                ],
                "certificate",
            ),
            (vec![("SETTLEGATE_REDIS__TLS_CA_FILE", &ca)], "no redis.url"),
            (vec![("SETTLEGATE_REDIS__WAIT_REPLICAS", "1")], "no redis.url"),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1"),
                    ("SETTLEGATE_REDIS__WAIT_REPLICAS", "17"),
                ],
                "at most 16",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1"),
                    ("SETTLEGATE_REDIS__WAIT_REPLICAS", "1"),
                    ("SETTLEGATE_REDIS__TIMEOUT_MS", "200"),
                ],
                "at least 300",
            ),
        ] {
            let e = redis(&extra).unwrap_err();
            assert!(e.0.contains(says), "{extra:?}: {e:?}");
            assert!(!e.0.contains(":pw@"), "never quotes a URL: {e:?}");
        }
    }

    #[test]
    fn the_metrics_endpoint_is_the_traces_endpoints_sibling_unless_set() {
        let base = [
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &key(1) as &str),
        ];
        let otel = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            let o = load(&pairs).unwrap().otel.unwrap();
            (
                o.endpoint.to_string(),
                o.metrics_endpoint.to_string(),
                o.metrics_interval,
            )
        };
        let c = "http://c:4318";
        for (endpoint, traces, metrics) in [
            (c, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
            (
                "http://c:4318/v1/traces",
                "http://c:4318/v1/traces",
                "http://c:4318/v1/metrics",
            ),
            (
                "http://c:4318/otlp/",
                "http://c:4318/otlp/",
                "http://c:4318/otlp/v1/metrics",
            ),
        ] {
            let got = otel(&[("SETTLEGATE_OTEL__ENDPOINT", endpoint)]);
            assert_eq!((got.0.as_str(), got.1.as_str()), (traces, metrics), "{endpoint}");
            assert_eq!(got.2, Duration::from_secs(60));
        }
        let grpc = otel(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!((grpc.0.as_str(), grpc.1.as_str()), ("http://c:4317/", "http://c:4317/"));
        let set = otel(&[
            ("SETTLEGATE_OTEL__ENDPOINT", c),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/in"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
        ]);
        assert_eq!((set.1.as_str(), set.2), ("http://m:9/in", Duration::from_millis(1500)));
        let ours = otel(&[
            ("SETTLEGATE_OTEL__ENDPOINT", c),
            ("SETTLEGATE_OTEL__METRICS_ENDPOINT", "http://ours:1/m"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/in"),
            ("SETTLEGATE_OTEL__METRICS_INTERVAL_MS", "250"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
        ]);
        assert_eq!(
            (ours.1.as_str(), ours.2),
            ("http://ours:1/m", Duration::from_millis(250))
        );
    }

    #[test]
    fn environment_overrides_defaults_with_double_underscore_sections() {
        let k = key(1);
        let s = load(&[
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &format!("{k},{}", key(2))),
            ("SETTLEGATE_RPC__URLS", "http://127.0.0.1:1,http://127.0.0.1:2"),
            ("SETTLEGATE_SERVER__LISTEN", "127.0.0.1:0"),
            ("SETTLEGATE_TRUST__MIN_THRESHOLD", "2"),
        ])
        .unwrap();
        assert_eq!(s.genome_path.as_deref(), Some(Path::new("/tmp/g.json")));
        assert_eq!(s.trusted_keys.len(), 2);
        assert_eq!(s.rpc_urls.len(), 2);
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.min_threshold, 2);
        assert_eq!(s.genome_reload_interval_seconds, 30);
        assert_eq!(s.coalescer_window, Duration::from_millis(250));
        assert_eq!(s.rpc_probe_interval, Some(Duration::from_secs(5)));
        assert_eq!(s.replay_cache_entries, 4096);
        assert_eq!(s.idempotency_retry_window, Duration::from_secs(60));
        assert_eq!(s.idempotency_max_retries, 3);
        assert_eq!(s.log_request_level, RequestLog::Info);
    }

    #[test]
    fn string_values_are_kept_as_written() {
        // config-rs's type guessing read these as numbers or booleans and
        // gave back another spelling: a secret of digits lost its entropy
        // to a float ("1.2345678901234568e34"), a prefix its zeros
        let digits = "12345678901234567890123456789012345";
        let s = load(&[
            ("SETTLEGATE_TRUST__KEYS", &key(1)),
            ("SETTLEGATE_PAYMENT__SECRET", digits),
            ("SETTLEGATE_REDIS__KEY_PREFIX", "007"),
            ("SETTLEGATE_GENOME__PATH", "1e3"),
            ("SETTLEGATE_RPC__URLS", "http://127.0.0.1:1"),
        ])
        .unwrap();
        assert_eq!(s.payment_secret.as_ref().map(Secret::expose), Some(digits));
        assert_eq!(s.redis_key_prefix, "007");
        assert_eq!(s.genome_path.as_deref(), Some(Path::new("1e3")));
        assert_eq!(s.rpc_urls.len(), 1);
        // numbers are still read as numbers, and a fraction is no timeout
        let with_key = |extra: (&str, &str)| load(&[("SETTLEGATE_TRUST__KEYS", &key(1)), extra]);
        assert_eq!(
            with_key(("SETTLEGATE_RPC__TIMEOUT_MS", "700")).unwrap().rpc_timeout,
            Duration::from_millis(700)
        );
        for bad in ["-3.0", "NaN", "1.5"] {
            assert!(with_key(("SETTLEGATE_RPC__TIMEOUT_MS", bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_errors_are_caught_at_load() {
        let k = key(1);
        let with_key = |extra: (&str, &str)| load(&[("SETTLEGATE_TRUST__KEYS", &k), extra]);
        assert!(load(&[]).unwrap_err().0.contains("no trusted keys"));
        assert!(load(&[("SETTLEGATE_TRUST__KEYS", "AAAA")]).is_err());
        assert!(with_key(("SETTLEGATE_RPC__URLS", "not a url")).is_err());
        assert!(with_key(("SETTLEGATE_RPC__URLS", "ftp://x")).is_err());
        assert!(with_key(("SETTLEGATE_SERVER__LISTEN", "localhost")).is_err());
        assert!(
            with_key(("SETTLEGATE_TRUST__MIN_THRESHOLD", "2"))
                .unwrap_err()
                .0
                .contains("distinct")
        );
        assert!(with_key(("SETTLEGATE_OTEL__ENDPOINT", "nope")).is_err());
        // a per-call timeout longer than the whole lookup is nonsense
        let err = with_key(("SETTLEGATE_RPC__TIMEOUT_MS", "9000")).unwrap_err();
        assert!(err.0.contains("lookup_timeout_ms"), "{err}");
        assert!(with_key(("SETTLEGATE_LOG__REQUEST_LEVEL", "loud")).is_err());
        assert!(with_key(("SETTLEGATE_LOG__BUFFER_LINES", "1")).is_err());
        assert!(with_key(("SETTLEGATE_COALESCER__WINDOW_MS", "60000")).is_err());
        assert!(with_key(("SETTLEGATE_IDEMPOTENCY__RETRY_WINDOW_SECONDS", "3601")).is_err());
        assert!(with_key(("SETTLEGATE_IDEMPOTENCY__MAX_RETRIES", "101")).is_err());
        let s = with_key(("SETTLEGATE_IDEMPOTENCY__MAX_RETRIES", "0")).unwrap();
        assert_eq!(s.idempotency_max_retries, 0);
        assert!(with_key(("SETTLEGATE_RPC__PROBE_INTERVAL_MS", "5")).is_err());
        assert!(
            with_key(("SETTLEGATE_RPC__PROBE_INTERVAL_MS", "0"))
                .unwrap()
                .rpc_probe_interval
                .is_none()
        );
        assert_eq!(
            with_key(("SETTLEGATE_LOG__REQUEST_LEVEL", "off"))
                .unwrap()
                .log_request_level,
            RequestLog::Off
        );
        // a misspelt key is refused, not ignored
        assert!(with_key(("SETTLEGATE_GENOME__PAHT", "/x")).is_err());
        let err = with_key(("SETTLEGATE_REDIS__URL", "redis://:hunter2@host:notaport/0")).unwrap_err();
        assert!(!err.0.contains("hunter2"), "{err}");
        assert!(with_key(("SETTLEGATE_REDIS__URL", "http://x")).is_err());
    }

    #[test]
    fn the_body_deadline_and_the_rates_trusted_proxies_are_bounded_and_off_by_default() {
        let k = key(1);
        let with_key = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("SETTLEGATE_TRUST__KEYS", k.as_str())];
            pairs.extend_from_slice(extra);
            load(&pairs)
        };
        let s = with_key(&[]).unwrap();
        assert_eq!(s.request_body_timeout, Duration::from_secs(10));
        // X-Forwarded-For is believed from nobody unless configured, even
        // though /v1/authorize trusts loopback by default
        assert!(s.callers.trusted_proxies.is_empty());
        assert!(!s.trusted_proxies.is_empty());
        let s = with_key(&[
            ("SETTLEGATE_SERVER__REQUEST_BODY_TIMEOUT_MS", "1500"),
            ("SETTLEGATE_CALLERS__TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7"),
        ])
        .unwrap();
        assert_eq!(s.request_body_timeout, Duration::from_millis(1500));
        assert_eq!(
            s.callers.trusted_proxies,
            ["10.0.0.0/8".parse::<IpNet>().unwrap(), "192.0.2.7/32".parse().unwrap()]
        );
        for bad in ["99", "120001", "-1"] {
            let e = with_key(&[("SETTLEGATE_SERVER__REQUEST_BODY_TIMEOUT_MS", bad)]).unwrap_err();
            assert!(e.0.contains("request_body_timeout_ms"), "{bad}: {e}");
        }
        let e = with_key(&[("SETTLEGATE_CALLERS__TRUSTED_PROXIES", "lb.internal")]).unwrap_err();
        assert!(e.0.starts_with("callers.trusted_proxies: \"lb.internal\""), "{e}");
    }

    #[test]
    fn the_send_timeout_is_bounded_and_on_by_default() {
        let k = key(1);
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("SETTLEGATE_TRUST__KEYS", k.as_str())];
            pairs.extend_from_slice(extra);
            load(&pairs)
        };
        assert_eq!(with(&[]).unwrap().send_timeout, Duration::from_secs(10));
        let s = with(&[("SETTLEGATE_SERVER__SEND_TIMEOUT_MS", "2500")]).unwrap();
        assert_eq!(s.send_timeout, Duration::from_millis(2500));
        // No "off": 0 and anything outside 1 s to 5 min is refused.
        for bad in ["0", "999", "300001", "-1"] {
            let e = with(&[("SETTLEGATE_SERVER__SEND_TIMEOUT_MS", bad)]).unwrap_err();
            assert!(e.0.contains("send_timeout_ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("redis-url");
        std::fs::write(&f, "redis://:hunter2@127.0.0.1:6379\n").unwrap();
        let s = load(&[
            ("SETTLEGATE_TRUST__KEYS", &key(1)),
            ("SETTLEGATE_REDIS__URL_FILE", f.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(
            s.redis.as_ref().unwrap().urls[0].expose(),
            "redis://:hunter2@127.0.0.1:6379"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn rpc_urls_come_from_a_file_and_are_never_echoed_with_their_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rpc-urls");
        std::fs::write(
            &f,
            "# providers\nhttps://u:rpc-pass-1@a.example/v1?key=k1\n\nhttps://b.example,https://c.example\n",
        )
        .unwrap();
        let k = key(1);
        let s = load(&[
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
            ("SETTLEGATE_RPC__URLS_FILE", f.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(s.rpc_urls.len(), 3);
        assert_eq!(s.rpc_urls[0].password(), Some("rpc-pass-1"));
        let e = load(&[
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
            ("SETTLEGATE_RPC__URLS_FILE", f.to_str().unwrap()),
            ("SETTLEGATE_RPC__URLS", "http://n:1"),
        ])
        .unwrap_err();
        assert!(e.0.contains("not both"), "{e:?}");
        // A refused URL is described without what it carries.
        for bad in [
            "ftp://u:rpc-pass-2@a.example/?key=k2",
            "https://u:rpc-pass-2@[bad/?key=k2",
        ] {
            let e = load(&[("SETTLEGATE_TRUST__KEYS", &k as &str), ("SETTLEGATE_RPC__URLS", bad)]).unwrap_err();
            assert!(e.0.starts_with("rpc.urls"), "{e:?}");
            assert!(!e.0.contains("rpc-pass-2") && !e.0.contains("k2"), "{e:?}");
        }
        let e = load(&[
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
            ("SETTLEGATE_RPC__URLS", "https://u:rpc-pass-3@a.example"),
            ("TEMPO_RPC_URL", "https://v:rpc-pass-4@b.example"),
        ])
        .unwrap_err();
        assert!(e.0.contains("disagree") && !e.0.contains("rpc-pass"), "{e:?}");
    }

    #[test]
    fn keys_files_take_lines_or_keygen_json() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("keys");
        std::fs::write(&lines, format!("# ops team\n{}\n\n{}\n", key(1), key(2))).unwrap();
        assert_eq!(read_keys_file(&lines).unwrap().len(), 2);
        let json = dir.path().join("key.json");
        std::fs::write(
            &json,
            format!(r#"{{"key_id":"a","alg":"ed25519","public_key":"{}"}}"#, key(3)),
        )
        .unwrap();
        assert_eq!(read_keys_file(&json).unwrap().len(), 1);
        std::fs::write(
            &json,
            format!(r#"[{{"key_id":"a","public_key":"{}"}},"{}"]"#, key(3), key(4)),
        )
        .unwrap();
        assert_eq!(read_keys_file(&json).unwrap().len(), 2);
        std::fs::write(&json, "[{}]").unwrap();
        assert!(read_keys_file(&json).is_err());
    }

    #[test]
    fn the_shipped_config_files_load() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
            let path = entry.unwrap().path();
            let s = Settings::load_from(Some(&path), Some(env(&[("SETTLEGATE_TRUST__KEYS", &key(1))])));
            assert!(s.is_ok(), "{}: {:?}", path.display(), s.err());
        }
    }
}
