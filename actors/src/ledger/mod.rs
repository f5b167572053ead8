//! `Ledger`: copies consumed records from the replay store's outbox to
//! PostgreSQL, in the background, never on a request's path.
//!
//! Invariants:
//! - a record enters the outbox in the same atomic write as its consume
//!   (the store's job), so every 200 has its entry and no entry lacks its
//!   consume;
//! - an entry (a consumed record, or a channel's new state) leaves the
//!   outbox only after the transaction holding its row committed; a crash between the two writes the batch again, and the
//!   unique `tx_hash` makes that a no-op: exactly one row per consume;
//! - PostgreSQL down, slow or behind on its schema stops the copying, not
//!   the 200s: the outbox grows to its bound (then consumes are refused,
//!   503), and drains when the database is back;
//! - the schema is never created or changed here ([`schema::migrate`] is a
//!   command's job); a database whose schema is not the code's is not
//!   written to.

pub mod channels;
pub mod deny;
pub mod read;
pub mod reconcile;
pub mod row;
pub mod schema;
pub mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::replay_guard::lost_reply;
use crate::store::{Bounded, OutboxDepth, OutboxEntry, Store, StoreError};
use crate::webhooks::event::Event;
use row::PaymentRow;
use write::Reject;

/// Why the ledger could not write (each is retried; none reaches a client).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the database URL is not usable")]
    UnusableUrl,
    /// TLS to PostgreSQL is not supported yet; `sslmode=require` would
    /// otherwise be dropped silently.
    #[error("the database URL asks for TLS (sslmode=require), which the ledger does not speak yet")]
    TlsRequired,
    #[error("postgres: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("no answer from postgres in time")]
    Timeout,
    #[error("the replay store: {0}")]
    Store(#[from] StoreError),
    #[error("the database's schema is version {database}, this build writes {code}: run `settlegate ledger migrate`")]
    SchemaBehind { database: i32, code: i32 },
    #[error("the database's schema is version {database}, newer than this build's {code}")]
    SchemaAhead { database: i32, code: i32 },
    #[error("migration {0} was applied with other text than this build ships")]
    SchemaChanged(i32),
    /// The ledger holds a value this build cannot read back.
    #[error("an unreadable value in the ledger: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// Every [`LedgerError::cause`], so each series exists from the start.
    pub const CAUSES: [&'static str; 6] = [
        "configuration",
        "database",
        "database_timeout",
        "store",
        "schema",
        "corrupt",
    ];

    /// Whether the database lacks the ledger's tables (never migrated).
    pub fn schema_missing(&self) -> bool {
        match self {
            LedgerError::Database(e) => e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
            LedgerError::SchemaBehind { .. } => true,
            _ => false,
        }
    }

    /// A stable label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            LedgerError::UnusableUrl | LedgerError::TlsRequired => "configuration",
            LedgerError::Database(_) | LedgerError::Pool(_) => "database",
            LedgerError::Timeout => "database_timeout",
            LedgerError::Store(_) => "store",
            LedgerError::SchemaBehind { .. } | LedgerError::SchemaAhead { .. } | LedgerError::SchemaChanged(_) => {
                "schema"
            }
            LedgerError::Corrupt(_) => "corrupt",
        }
    }
}

impl From<deadpool_postgres::PoolError> for LedgerError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => LedgerError::Database(e),
            deadpool_postgres::PoolError::Timeout(_) => LedgerError::Timeout,
            other => LedgerError::Pool(other.to_string()),
        }
    }
}

pub type Pool = deadpool_postgres::Pool;
/// A connection of the [`Pool`].
pub type Client = deadpool_postgres::Client;

/// Applies the migrations the database lacks (`settlegate ledger migrate`).
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, LedgerError> {
    let mut client = pool.get().await?;
    schema::migrate(&mut client).await
}

/// The schema version the database has (`None`: none) and this build's.
pub async fn schema_version(pool: &Pool) -> Result<(Option<i32>, i32), LedgerError> {
    let client = pool.get().await?;
    Ok((schema::current(&client).await?, schema::latest()))
}

/// A pool of connections to the ledger's database. Connects lazily: a
/// database that is down shows in metrics and `/readyz`, it never stops
/// the boot. The URL is never quoted in an error.
pub fn pool(url: &str, max: usize) -> Result<deadpool_postgres::Pool, LedgerError> {
    pool_with(url, max, None)
}

/// [`pool`], each session bounded by `statement_timeout` when given: the
/// pool of the operator's reads (the server stops a query past it, not
/// only the client's wait).
pub fn pool_with(url: &str, max: usize, statement_timeout: Option<Duration>) -> Result<Pool, LedgerError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| LedgerError::UnusableUrl)?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(LedgerError::TlsRequired);
    }
    if let Some(t) = statement_timeout {
        let mut options = config.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        options.push_str(&format!("-c statement_timeout={}", t.as_millis().max(1)));
        config.options(options);
    }
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(max)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| LedgerError::Pool(e.to_string()))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub cause: &'static str,
}

/// What the ledger exports (registered by the binary's metrics).
#[derive(Clone, Default)]
pub struct LedgerMetrics {
    /// Records waiting in the outbox, as of the last read.
    pub outbox_entries: Gauge,
    /// Seconds the oldest of them has waited (0: none).
    pub outbox_oldest_seconds: Gauge<f64, AtomicU64>,
    /// `ledger.outbox_max`, where consumes are refused (0: no ledger).
    pub outbox_max: Gauge,
    /// Payment rows added to the ledger.
    pub rows: Counter,
    /// Failed attempts to copy a batch, by cause.
    pub failures: Family<FailureLabels, Counter>,
    /// Outbox entries that were not records (kept in `outbox_rejects`).
    pub rejects: Counter,
}

#[derive(Clone, Debug)]
pub struct LedgerConfig {
    pub batch: usize,
    pub poll_interval: Duration,
    pub write_timeout: Duration,
    /// Webhook endpoints: each payment row added gets one delivery per
    /// endpoint, in the row's transaction (empty: none).
    pub webhooks: Vec<crate::webhooks::Target>,
}

/// The ledger's state for `/readyz` and the admin API.
#[derive(Clone, Debug, Default)]
pub struct LedgerState {
    pub depth: OutboxDepth,
    /// The last batch's error, if the last attempt failed.
    pub failing: Option<String>,
    /// When a batch was last committed.
    pub last_commit: Option<Instant>,
}

pub struct Ledger {
    store: Bounded,
    pool: deadpool_postgres::Pool,
    config: LedgerConfig,
    metrics: LedgerMetrics,
    state: LedgerState,
    schema_checked: bool,
    depth_read: Option<Instant>,
    failures_in_a_row: u32,
}

impl Ledger {
    pub fn new(store: Bounded, pool: deadpool_postgres::Pool, config: LedgerConfig, metrics: LedgerMetrics) -> Self {
        Ledger {
            store,
            pool,
            config,
            metrics,
            state: LedgerState::default(),
            schema_checked: false,
            depth_read: None,
            failures_in_a_row: 0,
        }
    }
}

/// Copy one batch now (sent by the actor to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct Drain;

/// The ledger's state now.
#[derive(Message)]
#[rtype(result = "LedgerState")]
pub struct State;

impl Actor for Ledger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Drain);
    }
}

impl Handler<State> for Ledger {
    type Result = MessageResult<State>;

    fn handle(&mut self, _: State, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.clone())
    }
}

/// What one batch did.
struct Copied {
    /// Entries taken out of the outbox.
    entries: usize,
    added: usize,
    rejects: usize,
    depth: Option<OutboxDepth>,
}

impl Handler<Drain> for Ledger {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let pool = self.pool.clone();
        let config = self.config.clone();
        let check_schema = !self.schema_checked;
        let read_depth = self.depth_read.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        Box::pin(
            async move { copy_batch(&store, &pool, &config, check_schema, read_depth).await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    let next = match result {
                        Ok(copied) => {
                            act.schema_checked = true;
                            act.failures_in_a_row = 0;
                            act.state.failing = None;
                            if copied.entries > 0 {
                                act.state.last_commit = Some(Instant::now());
                            }
                            act.metrics.rows.inc_by(copied.added as u64);
                            act.metrics.rejects.inc_by(copied.rejects as u64);
                            if let Some(depth) = copied.depth {
                                act.record_depth(depth);
                            }
                            if copied.entries >= act.config.batch {
                                Duration::ZERO
                            } else {
                                act.config.poll_interval
                            }
                        }
                        Err(e) => {
                            act.failed(&e);
                            // Back off up to 5 s; the depth is still read
                            // so the alert sees the outbox grow.
                            let store = act.store.clone();
                            ctx.spawn(async move { outbox_depth(&store).await.ok() }.into_actor(act).map(
                                |d, act, _| {
                                    if let Some(d) = d {
                                        act.record_depth(d);
                                    }
                                },
                            ));
                            let n = act.failures_in_a_row.min(6);
                            (act.config.poll_interval * 2u32.pow(n)).min(Duration::from_secs(5))
                        }
                    };
                    ctx.notify_later(Drain, next);
                }),
        )
    }
}

impl Ledger {
    fn record_depth(&mut self, depth: OutboxDepth) {
        self.depth_read = Some(Instant::now());
        self.state.depth = depth;
        self.metrics.outbox_entries.set(depth.entries as i64);
        self.metrics
            .outbox_oldest_seconds
            .set(depth.oldest_age.map_or(0.0, |a| a.as_secs_f64()));
    }

    fn failed(&mut self, e: &LedgerError) {
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.metrics
            .failures
            .get_or_create(&FailureLabels { cause: e.cause() })
            .inc();
        if !matches!(e, LedgerError::Store(_)) {
            // Checked again once the database answers.
            self.schema_checked = false;
        }
        // Every failure is counted; the first of a run, and one in 64
        // after, is logged (a database down for an hour is not a flood).
        if self.failures_in_a_row == 1 || self.failures_in_a_row.is_multiple_of(64) {
            tracing::error!(
                cause = e.cause(),
                error = %e,
                failures_in_a_row = self.failures_in_a_row,
                "the ledger could not copy the outbox; 200s go on, the outbox grows until it can"
            );
        }
        self.state.failing = Some(e.to_string());
    }
}

async fn outbox_depth(store: &Bounded) -> Result<OutboxDepth, StoreError> {
    store
        .run(
            "outbox_depth",
            |s: Arc<dyn Store>| async move { s.outbox_depth().await },
            |_| "ok",
        )
        .await
}

/// Reads a batch, writes it in one transaction, then acknowledges it.
async fn copy_batch(
    store: &Bounded,
    pool: &deadpool_postgres::Pool,
    config: &LedgerConfig,
    check_schema: bool,
    read_depth: bool,
) -> Result<Copied, LedgerError> {
    let max = config.batch;
    let entries: Vec<OutboxEntry> = store
        .run(
            "outbox_read",
            move |s: Arc<dyn Store>| async move { s.outbox_read(max).await },
            |e| if e.is_empty() { "empty" } else { "read" },
        )
        .await?;
    let mut rows = Vec::with_capacity(entries.len());
    let mut rejects = Vec::new();
    let mut channel_states: std::collections::BTreeMap<String, Vec<settlegate_rules::session::ChannelState>> =
        Default::default();
    for e in &entries {
        if let Some(name) = channels::channel_name(&e.key) {
            let state = match channels::readable_name(name) {
                Err(reason) => Err(reason),
                Ok(()) => serde_json::from_slice(&e.value).map_err(|err| format!("not a channel state: {err}")),
            };
            match state {
                Ok(state) => channel_states.entry(name.to_owned()).or_default().push(state),
                Err(reason) => {
                    tracing::error!(key = %e.key, reason = %reason, "an outbox entry is not a channel's state; kept in outbox_rejects");
                    rejects.push(Reject {
                        key: e.key.clone(),
                        value: e.value.clone(),
                        reason,
                    });
                }
            }
            continue;
        }
        match lost_reply::decode(&e.value)
            .map_err(|e| e.to_string())
            .and_then(|(record, _)| PaymentRow::of(&record).map_err(|e| e.to_string()))
        {
            Ok(row) => rows.push(row),
            Err(reason) => {
                tracing::error!(key = %e.key, reason = %reason, "an outbox entry is not a record; kept in outbox_rejects");
                rejects.push(Reject {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    reason,
                });
            }
        }
    }
    let mut added = 0;
    if !entries.is_empty() || check_schema {
        let work = async {
            let mut client = pool.get().await?;
            if check_schema {
                schema::check(&client).await?;
            }
            if entries.is_empty() {
                return Ok::<_, LedgerError>(0);
            }
            let txn = client.transaction().await?;
            let new = write::write(&txn, &rows, &rejects).await?;
            let settled = channels::write(&txn, &channel_states).await?;
            if !config.webhooks.is_empty() {
                // Only the rows and settlements this transaction added: a
                // batch written again creates no delivery twice.
                let by_hash: HashMap<&str, &PaymentRow> = rows.iter().map(|r| (r.tx_hash.as_str(), r)).collect();
                let events: Vec<Event> = new
                    .iter()
                    .filter_map(|(_, hash)| by_hash.get(hash.as_str()).copied())
                    .map(Event::PaymentConsumed)
                    .chain(settled.iter().map(Event::SessionSettled))
                    .collect();
                crate::webhooks::db::enqueue(&txn, &events, &config.webhooks).await?;
            }
            txn.commit().await?;
            Ok(new.len())
        };
        added = tokio::time::timeout(config.write_timeout, work)
            .await
            .map_err(|_| LedgerError::Timeout)??;
    }
    if !entries.is_empty() {
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        store
            .run(
                "outbox_remove",
                move |s: Arc<dyn Store>| async move { s.outbox_remove(&ids).await },
                |_| "removed",
            )
            .await?;
    }
    let depth = if read_depth {
        outbox_depth(store).await.ok()
    } else {
        None
    };
    Ok(Copied {
        entries: entries.len(),
        added,
        rejects: rejects.len(),
        depth,
    })
}
