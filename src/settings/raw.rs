//! The configuration as written: one serde struct per section, unknown
//! keys refused (a misspelt `SETTLEGATE_…` variable stops the boot instead
//! of being ignored). Nothing here is checked beyond its type; each
//! section's module validates its own.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    pub(super) server: RawServer,
    pub(super) genome: RawGenome,
    pub(super) trust: RawTrust,
    pub(super) rpc: RawRpc,
    pub(super) redis: RawRedis,
    pub(super) replay: RawReplay,
    pub(super) idempotency: RawIdempotency,
    pub(super) coalescer: RawCoalescer,
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) otel: RawOtel,
    #[serde(default)]
    pub(super) payment: RawPayment,
    pub(super) authorize: RawAuthorize,
    pub(super) callers: RawCallers,
    pub(super) cors: RawCors,
    pub(super) session: RawSession,
    pub(super) sponsor: RawSponsor,
    pub(super) discovery: RawDiscovery,
    pub(super) ledger: RawLedger,
    pub(super) webhooks: RawWebhooks,
    pub(super) admin: RawAdmin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    #[serde(default)]
    pub(super) endpoints: std::collections::BTreeMap<String, RawWebhookEndpoint>,
    pub(super) timeout_ms: u64,
    pub(super) max_attempts: u32,
    pub(super) max_age_seconds: u64,
    pub(super) backoff_base_ms: u64,
    pub(super) backoff_max_ms: u64,
    pub(super) max_concurrent: usize,
    pub(super) poll_interval_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhookEndpoint {
    pub(super) url: String,
    pub(super) secret_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
    pub(super) allow_remote: bool,
    pub(super) token_digests: Vec<String>,
    pub(super) token_digests_file: Option<PathBuf>,
    pub(super) deny_refresh_seconds: u64,
    pub(super) query_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    pub(super) database_url: Option<String>,
    pub(super) database_url_file: Option<PathBuf>,
    pub(super) outbox_max: u64,
    pub(super) batch: usize,
    pub(super) poll_interval_ms: u64,
    pub(super) write_timeout_ms: u64,
    pub(super) instance: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSponsor {
    pub(super) key_file: Option<PathBuf>,
    pub(super) balance_interval_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub(super) title: String,
    pub(super) description: String,
    pub(super) categories: Vec<String>,
    pub(super) homepage: String,
    pub(super) llms: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) settler_key_file: Option<PathBuf>,
    pub(super) settle_amount: String,
    pub(super) settle_interval_seconds: u64,
    pub(super) scan_interval_seconds: u64,
    pub(super) facts_ttl_seconds: u64,
    pub(super) channel_ttl_days: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallers {
    pub(super) api_keys: Vec<String>,
    pub(super) api_keys_file: Option<PathBuf>,
    pub(super) rate_per_caller_per_second: u32,
    pub(super) rate_per_ip_per_second: u32,
    pub(super) authorize: bool,
    pub(super) trusted_proxies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allowed_origins: Vec<String>,
    pub(super) max_age_seconds: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPayment {
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) previous_secret: Option<String>,
    pub(super) previous_secret_file: Option<PathBuf>,
    pub(super) previous_secret_until: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthorize {
    pub(super) trusted_proxies: Vec<String>,
    pub(super) forwarded_headers: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplay {
    pub(super) local_path: PathBuf,
    pub(super) min_record_ttl_seconds: u64,
    pub(super) cache_entries: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdempotency {
    pub(super) retry_window_seconds: u64,
    pub(super) max_retries: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoalescer {
    pub(super) window_ms: u64,
    pub(super) share_across_instances: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) request_level: String,
    pub(super) buffer_lines: usize,
    pub(super) format: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) workers: usize,
    pub(super) max_connections: usize,
    pub(super) client_request_timeout_ms: u64,
    pub(super) request_body_timeout_ms: u64,
    pub(super) send_timeout_ms: u64,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) tls_reload_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGenome {
    pub(super) path: Option<PathBuf>,
    pub(super) reload_interval_seconds: u64,
    pub(super) manifest_root: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    #[serde(default)]
    pub(super) keys: Vec<String>,
    pub(super) keys_file: Option<PathBuf>,
    pub(super) min_threshold: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRpc {
    #[serde(default)]
    pub(super) urls: Option<Vec<String>>,
    pub(super) urls_file: Option<PathBuf>,
    pub(super) timeout_ms: u64,
    pub(super) lookup_timeout_ms: u64,
    pub(super) probe_interval_ms: u64,
    pub(super) max_lookups_in_flight: usize,
    pub(super) expose_endpoint_hosts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) url: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) mode: String,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) wait_replicas: u32,
    pub(super) key_prefix: String,
    pub(super) timeout_ms: u64,
    pub(super) max_ops_in_flight: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtel {
    pub(super) endpoint: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) service_name: Option<String>,
    pub(super) metrics_endpoint: Option<String>,
    pub(super) metrics_interval_ms: Option<u64>,
    #[serde(default = "default_otel_queue")]
    pub(super) max_queue_size: usize,
}

fn default_otel_queue() -> usize {
    2048
}
