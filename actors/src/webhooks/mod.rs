//! `Dispatcher`: sends the signed webhooks (Standard Webhooks) that the
//! ledger created, from PostgreSQL, in the background.
//!
//! Invariants:
//! - a delivery is born in the transaction that adds its payment row
//!   ([`db::enqueue`], called by the ledger), one per configured endpoint,
//!   only for rows that transaction added: a batch written again creates
//!   none twice (and `webhook-id` is unique besides);
//! - nothing on a request's path waits for a webhook: the dispatcher runs
//!   on its own arbiter, reads and writes only PostgreSQL and the
//!   receivers, and a receiver down, slow or refusing costs it a bounded
//!   attempt ([`send`]) and a retry later;
//! - each delivery is attempted by one instance at a time ([`db`]'s lease
//!   and fence); it is delivered at least once, and exactly once while
//!   attempts end within their lease;
//! - a 2xx delivers; anything else is retried with exponential backoff
//!   and jitter until the attempt or age limit, then the delivery is
//!   `dead` until an operator requeues it (`settlegate ledger webhooks`);
//! - a secret signs and goes nowhere else: not in a log line, not in the
//!   table, not in an error.

pub mod db;
pub mod event;
pub mod send;
pub mod sign;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use hyper::Uri;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::ledger::{LedgerError, Pool, schema};
use crate::rpc_transport::HttpClient;
pub use db::Target;
use db::{Backlog, Claimed, Finish, Limits};
use send::SendError;
pub use sign::{KeyError, SigningKey};

/// A receiver: its name (in the table and the `webhook-id`), where to
/// POST, and the key that signs for it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub key: SigningKey,
}

impl Endpoint {
    pub fn target(&self) -> Target {
        Target {
            name: self.name.clone(),
            url: self.url.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    pub endpoints: Vec<Endpoint>,
    /// One attempt's bound, connecting to last byte.
    pub timeout: Duration,
    pub limits: Limits,
    /// The first retry's delay; each next one doubles, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts in flight at most (this instance).
    pub max_concurrent: usize,
    /// How often due deliveries are looked for.
    pub poll_interval: Duration,
}

impl DispatcherConfig {
    /// How long a claim keeps a delivery from other instances: the
    /// attempt's bound, then as long again (and 5 s) to record its end.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// What the dispatcher exports (registered by the binary's metrics). The
/// gauges are the whole table's, whichever instance read them.
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    /// Attempts by outcome: `delivered`, `failed_attempt` (retried),
    /// `dead` (the last one failed).
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub pending: Gauge,
    pub oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub dead: Gauge,
}

impl WebhookMetrics {
    /// Every outcome's series from the start, at 0.
    pub fn with_outcomes(self) -> Self {
        for outcome in ["delivered", "failed_attempt", "dead"] {
            let _ = self.deliveries.get_or_create(&OutcomeLabels { outcome });
        }
        self
    }

    fn count(&self, outcome: &'static str) {
        self.deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// The delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped
/// at `max`, then drawn between half of it and all of it (so receivers
/// that failed together are not retried together).
pub fn backoff(base: Duration, max: Duration, attempt: i32, draw: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1 << doublings).min(max);
    let half = full / 2;
    half + half.mul_f64(f64::from(draw) / f64::from(u32::MAX))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A failed draw only loses the jitter.
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Deliveries in `state` (all when `None`) after id `after`, for the
/// operator (`settlegate ledger webhooks`).
pub async fn list(pool: &Pool, state: Option<&str>, after: i64, limit: i64) -> Result<Vec<db::Listed>, LedgerError> {
    let client = pool.get().await?;
    schema::check(&client).await?;
    db::list(&client, state, after, limit).await
}

/// Dead deliveries back to pending (`settlegate ledger webhooks requeue`).
pub async fn requeue(pool: &Pool, which: &db::Requeue) -> Result<Vec<i64>, db::RequeueError> {
    let client = pool.get().await.map_err(LedgerError::from)?;
    schema::check(&client).await?;
    db::requeue(&client, which).await
}

/// Look for due deliveries now (sent by the actor to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

pub struct Dispatcher {
    pool: Pool,
    client: HttpClient,
    config: Arc<DispatcherConfig>,
    /// Each endpoint's URI, parsed once.
    uris: Arc<Vec<Uri>>,
    names: Arc<Vec<String>>,
    metrics: WebhookMetrics,
    in_flight: usize,
    claiming: bool,
    schema_checked: bool,
    backlog_read: Option<Instant>,
    /// Claims that failed in a row (backs off the polling, thins the log).
    failures_in_a_row: u32,
    resume_at: Option<Instant>,
}

/// Why the dispatcher cannot be built (a boot error).
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("webhook endpoint {0}: its URL is not usable")]
    UnusableUrl(String),
    #[error("the webhooks' HTTP client: {0}")]
    Client(#[from] crate::rpc_transport::TransportBuildError),
}

impl Dispatcher {
    pub fn new(pool: Pool, config: DispatcherConfig, metrics: WebhookMetrics) -> Result<Self, DispatcherError> {
        let uris = config
            .endpoints
            .iter()
            .map(|e| {
                e.url
                    .as_str()
                    .parse::<Uri>()
                    .map_err(|_| DispatcherError::UnusableUrl(e.name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names = config.endpoints.iter().map(|e| e.name.clone()).collect();
        let client = crate::rpc_transport::http_client(config.timeout)?;
        Ok(Dispatcher {
            pool,
            client,
            config: Arc::new(config),
            uris: Arc::new(uris),
            names: Arc::new(names),
            metrics,
            in_flight: 0,
            claiming: false,
            schema_checked: false,
            backlog_read: None,
            failures_in_a_row: 0,
            resume_at: None,
        })
    }

    fn failed(&mut self, e: &LedgerError) {
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.schema_checked = false;
        let n = self.failures_in_a_row.min(6);
        let pause = (self.config.poll_interval * 2u32.pow(n)).min(Duration::from_secs(10));
        self.resume_at = Some(Instant::now() + pause);
        if self.failures_in_a_row == 1 || self.failures_in_a_row.is_multiple_of(64) {
            tracing::error!(cause = e.cause(), error = %e, failures_in_a_row = self.failures_in_a_row,
                "the webhook dispatcher cannot read its deliveries; they wait in PostgreSQL");
        }
    }

    fn read_backlog(&mut self, ctx: &mut Context<Self>) {
        if self
            .backlog_read
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.backlog_read = Some(Instant::now());
        let pool = self.pool.clone();
        let timeout = self.config.timeout;
        ctx.spawn(
            async move {
                let read = async {
                    let client = pool.get().await?;
                    db::backlog(&client).await
                };
                tokio::time::timeout(timeout, read)
                    .await
                    .map_err(|_| LedgerError::Timeout)?
            }
            .into_actor(self)
            .map(|r: Result<Backlog, LedgerError>, act, _| {
                if let Ok(b) = r {
                    act.metrics.pending.set(b.pending);
                    act.metrics.oldest_pending_seconds.set(b.oldest_pending_seconds);
                    act.metrics.dead.set(b.dead);
                }
            }),
        );
    }

    /// Attempts one claimed delivery and records how it ended.
    fn attempt(&mut self, claimed: Claimed, ctx: &mut Context<Self>) {
        let Some(i) = self.names.iter().position(|n| *n == claimed.endpoint) else {
            // unreachable: claims are filtered by these names
            return;
        };
        self.in_flight += 1;
        let (client, pool, config, uri) = (
            self.client.clone(),
            self.pool.clone(),
            self.config.clone(),
            self.uris[i].clone(),
        );
        ctx.spawn(
            async move {
                let endpoint = &config.endpoints[i];
                let sent = send::send(&client, &uri, &endpoint.key, &claimed, unix_now(), config.timeout).await;
                let finish = match &sent {
                    Ok(status) => Finish::Delivered { status: *status },
                    Err(e) => Finish::Failed {
                        status: e.status(),
                        error: e.to_string(),
                        retry_in: backoff(config.backoff_base, config.backoff_max, claimed.attempt, random_u32()),
                    },
                };
                let record = async {
                    let client = pool.get().await?;
                    db::finish(&client, &claimed, endpoint.url.as_str(), &finish, config.limits).await
                };
                let state = tokio::time::timeout(config.timeout, record)
                    .await
                    .map_err(|_| LedgerError::Timeout)
                    .and_then(|r| r);
                (claimed, sent, state)
            }
            .into_actor(self)
            .map(|(claimed, sent, state), act, ctx| {
                act.in_flight -= 1;
                act.finished(&claimed, &sent, state);
                ctx.notify(Tick);
            }),
        );
    }

    fn finished(&mut self, c: &Claimed, sent: &Result<u16, SendError>, state: Result<Option<String>, LedgerError>) {
        let state = match state {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::warn!(endpoint = %c.endpoint, webhook_id = %c.message_id, attempt = c.attempt,
                    "a webhook attempt ended after its lease; its delivery had moved on and keeps its state");
                return;
            }
            Err(e) => {
                // The lease runs out and the delivery is attempted again.
                tracing::warn!(endpoint = %c.endpoint, webhook_id = %c.message_id, cause = e.cause(), error = %e,
                    "a webhook attempt's end could not be recorded; it will be attempted again");
                return;
            }
        };
        match (sent, state.as_str()) {
            (Ok(status), _) => {
                self.metrics.count("delivered");
                tracing::debug!(endpoint = %c.endpoint, webhook_id = %c.message_id, attempt = c.attempt, status,
                    "webhook delivered");
            }
            (Err(e), "dead") => {
                self.metrics.count("dead");
                tracing::error!(endpoint = %c.endpoint, webhook_id = %c.message_id, attempts = c.attempt, error = %e,
                    "a webhook is dead after its last attempt; `settlegate ledger webhooks requeue` sends it again");
            }
            (Err(e), _) => {
                self.metrics.count("failed_attempt");
                if c.attempt == 1 {
                    tracing::warn!(endpoint = %c.endpoint, webhook_id = %c.message_id, error = %e,
                        "a webhook's first attempt failed; retrying with backoff");
                } else {
                    tracing::debug!(endpoint = %c.endpoint, webhook_id = %c.message_id, attempt = c.attempt,
                        error = %e, "a webhook attempt failed");
                }
            }
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.poll_interval, |_, ctx| ctx.notify(Tick));
        ctx.notify(Tick);
    }
}

impl Handler<Tick> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        self.read_backlog(ctx);
        if self.claiming || self.resume_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let free = self.config.max_concurrent.saturating_sub(self.in_flight);
        if free == 0 {
            return;
        }
        self.claiming = true;
        let (pool, names, lease, check) = (
            self.pool.clone(),
            self.names.clone(),
            self.config.lease(),
            !self.schema_checked,
        );
        let timeout = self.config.timeout;
        ctx.spawn(
            async move {
                let work = async {
                    let client = pool.get().await?;
                    if check {
                        schema::check(&client).await?;
                    }
                    db::claim(&client, &names, free, lease).await
                };
                tokio::time::timeout(timeout, work)
                    .await
                    .map_err(|_| LedgerError::Timeout)?
            }
            .into_actor(self)
            .map(move |claimed, act, ctx| {
                act.claiming = false;
                match claimed {
                    Ok(claimed) => {
                        act.schema_checked = true;
                        act.failures_in_a_row = 0;
                        act.resume_at = None;
                        let full = claimed.len() == free;
                        for c in claimed {
                            act.attempt(c, ctx);
                        }
                        if full {
                            // More may be due: look again when a slot frees.
                            ctx.notify(Tick);
                        }
                    }
                    Err(e) => act.failed(&e),
                }
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_to_the_cap_with_jitter_below() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(3600));
        assert_eq!(backoff(base, max, 1, u32::MAX), Duration::from_secs(5));
        assert_eq!(backoff(base, max, 1, 0), Duration::from_millis(2500));
        assert_eq!(backoff(base, max, 4, u32::MAX), Duration::from_secs(40));
        assert_eq!(backoff(base, max, 12, u32::MAX), max, "capped");
        assert_eq!(backoff(base, max, i32::MAX, u32::MAX), max, "no overflow");
        assert_eq!(backoff(base, max, 0, u32::MAX), base, "a requeued count starts over");
        for draw in [0, 1 << 20, u32::MAX / 2, u32::MAX] {
            let d = backoff(base, max, 3, draw);
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(20), "{d:?}");
        }
    }
}
