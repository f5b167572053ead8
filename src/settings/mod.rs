//! Typed settings, validated once at boot, so a typo stops the boot
//! instead of failing every request.
//!
//! [`layering`] reads the document (defaults, file, environment) into the
//! [`raw`] serde structs; each section's module validates its own part and
//! says why it refuses a value ([`SettingsError`]); [`Settings`] is what
//! they hand the boot. This module is a leaf of the crate: it imports
//! nothing from it, so every other module may read its types.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use settlegate_rules::keys::PublicKey;
use time::OffsetDateTime;
use url::Url;

mod admin;
mod authorize;
mod callers;
mod cors;
mod discovery;
mod error;
mod genome;
mod idempotency;
mod layering;
mod ledger;
mod log;
mod otel;
mod payment;
mod raw;
mod replay;
mod rpc;
mod secrets;
mod server;
mod session;
mod sponsor;
mod values;
mod webhooks;

pub use admin::AdminSettings;
pub use authorize::ForwardedHeaders;
pub use callers::Callers;
pub use discovery::DiscoverySettings;
pub use error::SettingsError;
pub use genome::read_keys_file;
pub use ledger::LedgerSettings;
pub use log::RequestLog;
pub use otel::{Otel, OtlpProtocol};
pub use replay::RedisSettings;
pub use secrets::Secret;
pub use server::TlsFiles;
pub use session::SessionSettings;
pub use sponsor::SponsorSettings;
pub use webhooks::WebhooksSettings;

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
    /// Instances on one Redis share each lookup (claim, publication) and
    /// answer a payment another consumed from the claim.
    pub coalescer_share_across_instances: bool,
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
    pub tls: Option<TlsFiles>,
    /// Callers of `/v1/verify` and their limits.
    pub callers: Callers,
    /// Origins a browser may call from (empty: no CORS headers at all).
    pub cors_allowed_origins: Vec<String>,
    pub cors_max_age_seconds: usize,
    /// `[session]`: payment channels and their settler.
    pub session: SessionSettings,
    /// `[sponsor]`: the fee sponsor's key and how often its balance is read.
    pub sponsor: SponsorSettings,
    /// `[ledger]`: the books in PostgreSQL, fed by the store's outbox.
    pub ledger: LedgerSettings,
    /// `[webhooks]`: signed notifications of consumed payments, sent from
    /// the ledger's database.
    pub webhooks: WebhooksSettings,
    /// `[discovery]`: what the discovery documents say about the paid API.
    pub discovery: DiscoverySettings,
    /// `[admin]`: the operator's API over the books and the deny list.
    pub admin: AdminSettings,
}

impl Settings {
    /// Loads from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, None)
    }

    /// Loads with an explicit environment (tests), or the process's when `None`.
    pub fn load_from(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Self, SettingsError> {
        let (raw, outside_env) = layering::layered(file, env)?;
        // Section by section; the first refusal stops the boot.
        let server = server::validate(raw.server)?;
        let genome = genome::validate(raw.genome, raw.trust)?;
        let rpc = rpc::validate(raw.rpc, raw.coalescer, &outside_env)?;
        let replay = replay::validate(raw.redis, raw.replay)?;
        let idempotency = idempotency::validate(raw.idempotency)?;
        let log = log::validate(raw.log)?;
        let otel = otel::validate(raw.otel, &outside_env)?;
        let payment = payment::validate(raw.payment)?;
        let authorize = authorize::validate(raw.authorize)?;
        let callers = callers::validate(raw.callers)?;
        let cors = cors::validate(raw.cors)?;
        let session = session::validate(raw.session)?;
        let sponsor = sponsor::validate(raw.sponsor)?;
        let discovery = discovery::validate(raw.discovery)?;
        let ledger = ledger::validate(raw.ledger)?;
        let webhooks = webhooks::validate(raw.webhooks)?;
        if webhooks.enabled() && !ledger.enabled() {
            return Err(SettingsError::invalid(
                "webhooks",
                "webhooks.endpoints needs the ledger (ledger.database_url): deliveries are created with each \
                 payment's row and kept in its database",
            ));
        }
        let admin = admin::validate(raw.admin, ledger.enabled())?;
        Ok(Settings {
            listen: server.listen,
            workers: server.workers,
            max_connections: server.max_connections,
            genome_path: genome.path,
            genome_reload_interval_seconds: genome.reload_interval_seconds,
            manifest_root: genome.manifest_root,
            trusted_keys: genome.trusted_keys,
            min_threshold: genome.min_threshold,
            rpc_urls: rpc.urls,
            rpc_timeout: rpc.timeout,
            lookup_timeout: rpc.lookup_timeout,
            rpc_probe_interval: rpc.probe_interval,
            rpc_expose_endpoint_hosts: rpc.expose_endpoint_hosts,
            coalescer_window: rpc.coalescer_window,
            coalescer_share_across_instances: rpc.share_across_instances,
            max_lookups_in_flight: rpc.max_lookups_in_flight,
            redis_max_ops_in_flight: replay.max_ops_in_flight,
            redis: replay.redis,
            redis_key_prefix: replay.key_prefix,
            redis_timeout: replay.timeout,
            replay_local_path: replay.local_path,
            replay_min_record_ttl: replay.min_record_ttl,
            replay_cache_entries: replay.cache_entries,
            idempotency_retry_window: idempotency.retry_window,
            idempotency_max_retries: idempotency.max_retries,
            log_request_level: log.request_level,
            log_buffer_lines: log.buffer_lines,
            log_json: log.json,
            otel,
            payment_secret: payment.secret,
            payment_previous_secret: payment.previous_secret,
            trusted_proxies: authorize.trusted_proxies,
            forwarded_headers: authorize.forwarded_headers,
            client_request_timeout: server.client_request_timeout,
            request_body_timeout: server.request_body_timeout,
            send_timeout: server.send_timeout,
            tls: server.tls,
            callers,
            cors_allowed_origins: cors.allowed_origins,
            cors_max_age_seconds: cors.max_age_seconds,
            session,
            sponsor,
            discovery,
            ledger,
            webhooks,
            admin,
        })
    }
}

/// What the sections' tests share: keys, an environment, a load.
#[cfg(test)]
mod testing {
    use std::collections::HashMap;

    use settlegate_rules::keys::PrivateKey;

    use super::{Settings, SettingsError};

    pub fn key(n: u8) -> String {
        PrivateKey::from_seed([n; 32]).public_key().to_spki_base64()
    }

    pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    pub fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load_from(None, Some(env(pairs)))
    }
}

#[cfg(test)]
mod tests {
    use super::RequestLog;
    use super::testing::{key, load};

    #[test]
    fn config_errors_are_caught_at_load() {
        let k = key(1);
        let with_key = |extra: (&str, &str)| load(&[("SETTLEGATE_TRUST__KEYS", &k), extra]);
        assert!(load(&[]).unwrap_err().to_string().contains("no trusted keys"));
        assert!(load(&[("SETTLEGATE_TRUST__KEYS", "AAAA")]).is_err());
        assert!(with_key(("SETTLEGATE_RPC__URLS", "not a url")).is_err());
        assert!(with_key(("SETTLEGATE_RPC__URLS", "ftp://x")).is_err());
        assert!(with_key(("SETTLEGATE_SERVER__LISTEN", "localhost")).is_err());
        assert!(
            with_key(("SETTLEGATE_TRUST__MIN_THRESHOLD", "2"))
                .unwrap_err()
                .to_string()
                .contains("distinct")
        );
        assert!(with_key(("SETTLEGATE_OTEL__ENDPOINT", "nope")).is_err());
        // a per-call timeout longer than the whole lookup is nonsense
        let err = with_key(("SETTLEGATE_RPC__TIMEOUT_MS", "9000")).unwrap_err();
        assert!(err.to_string().contains("lookup_timeout_ms"), "{err}");
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
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(with_key(("SETTLEGATE_REDIS__URL", "http://x")).is_err());
    }
}
