//! `ReplayGuard`: a payment is consumed once, across any number of instances.
//!
//! Protocol per canonical transaction hash: [`Reserve`] atomically claims
//! the hash (Redis `SET NX` with an expiry) before the chain is asked;
//! [`Commit`] turns the claim into the replay record on a 200; [`Release`]
//! drops the claim on anything else (402 or 503). Commit and release only
//! act on the caller's own claim (compare-and-set on a random token), and a
//! claim left by a crashed process expires by itself. So a payment is
//! consumed only by a 200, and a 503 or a pending answer never burns it (the
//! seed marked the hash used first and never rolled back: hole 4).
//!
//! The record keeps what the payment was consumed for (resource, scheme, a
//! hash of the Idempotency-Key) and the settlement answered, so a retry of
//! the same request gets the same 200 back. It outlives the payment's age
//! window, after which the settlement rules refuse the payment anyway.
//!
//! Backends: Redis (shared by instances; required for more than one) or an
//! embedded file store for a single instance that survives restarts. Every
//! operation is bounded by a timeout; a store that cannot answer is
//! [`StoreError::Unavailable`], which the edge turns into a 503, never a 200.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use deadpool_redis::redis;
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use settlegate_rules::credential::TxHash;

/// How long a claim lives when its owner never commits or releases it.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the replay store is unavailable: {0}")]
    Unavailable(String),
}

/// What a payment was consumed for, and the answer it bought.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The `Settlement` body of the 200 that consumed the payment.
    pub settlement: serde_json::Value,
    pub scheme: String,
    pub resource: Option<String>,
    /// SHA-256 (hex) of the Idempotency-Key of the consuming request.
    pub idempotency_key_sha256: Option<String>,
    pub consumed_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Slot {
    Claimed { token: String },
    Committed { record: ReplayRecord },
}

/// The answer to a [`Reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The caller owns the hash until it commits or releases with `token`.
    Claimed { token: String },
    /// Already consumed.
    Committed(Box<ReplayRecord>),
    /// Another request holds the claim right now.
    InFlight,
}

#[derive(Message)]
#[rtype(result = "Result<Reservation, StoreError>")]
pub struct Reserve(pub TxHash);

/// Turns the caller's claim into the record; `Ok(false)` if the claim was
/// no longer the caller's (it expired), in which case nothing was written.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Commit {
    pub hash: TxHash,
    pub token: String,
    pub record: ReplayRecord,
    pub ttl: Duration,
}

#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Release {
    pub hash: TxHash,
    pub token: String,
}

/// Whether the store answers (for `/readyz`).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Ping;

#[derive(Clone)]
enum Backend {
    Redis { pool: deadpool_redis::Pool, prefix: String },
    Local(Arc<LocalStore>),
}

pub struct ReplayGuard {
    backend: Backend,
    timeout: Duration,
}

impl ReplayGuard {
    /// A Redis-backed guard. The pool connects lazily: an unreachable Redis
    /// shows in `/readyz` and as 503s, it does not stop the boot.
    pub fn redis(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        let mut cfg = deadpool_redis::Config::from_url(url);
        cfg.pool = Some(deadpool_redis::PoolConfig {
            max_size: 64,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..Default::default()
        });
        let pool = cfg
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|_| "the redis URL is not usable".to_owned())?;
        Ok(ReplayGuard {
            backend: Backend::Redis {
                pool,
                prefix: prefix.to_owned(),
            },
            timeout,
        })
    }

    /// A guard on a local file, for a single instance.
    pub fn local(path: &Path, timeout: Duration) -> Result<Self, String> {
        Ok(ReplayGuard {
            backend: Backend::Local(Arc::new(LocalStore::open(path)?)),
            timeout,
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Redis { .. } => "redis",
            Backend::Local(_) => "local",
        }
    }

    /// Runs `op` against the backend with the guard's timeout.
    fn run<T, F>(&self, op: impl FnOnce(Backend) -> F + 'static) -> ResponseFuture<Result<T, StoreError>>
    where
        F: Future<Output = Result<T, StoreError>> + 'static,
        T: 'static,
    {
        let backend = self.backend.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, op(backend))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("no answer within {timeout:?}"))))
        })
    }
}

impl Actor for ReplayGuard {
    type Context = Context<Self>;
}

impl Handler<Reserve> for ReplayGuard {
    type Result = ResponseFuture<Result<Reservation, StoreError>>;

    fn handle(&mut self, Reserve(hash): Reserve, _: &mut Self::Context) -> Self::Result {
        self.run(move |b| async move {
            let token = new_token()?;
            match b {
                Backend::Redis { pool, prefix } => redis_reserve(&pool, &key(&prefix, &hash), token).await,
                Backend::Local(store) => blocking(move || store.reserve(&hash.to_string(), token)).await,
            }
        })
    }
}

impl Handler<Commit> for ReplayGuard {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, c: Commit, _: &mut Self::Context) -> Self::Result {
        self.run(move |b| async move {
            let claimed = encode(&Slot::Claimed { token: c.token })?;
            let committed = encode(&Slot::Committed { record: c.record })?;
            match b {
                Backend::Redis { pool, prefix } => {
                    let script = redis::Script::new(
                        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                           redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 \
                         else return 0 end",
                    );
                    let mut conn = connection(&pool).await?;
                    let n: i64 = script
                        .key(key(&prefix, &c.hash))
                        .arg(claimed)
                        .arg(committed)
                        .arg(c.ttl.as_secs().max(1))
                        .invoke_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    Ok(n == 1)
                }
                Backend::Local(store) => {
                    let hash = c.hash.to_string();
                    blocking(move || store.commit(&hash, &claimed, committed, c.ttl)).await
                }
            }
        })
    }
}

impl Handler<Release> for ReplayGuard {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, r: Release, _: &mut Self::Context) -> Self::Result {
        self.run(move |b| async move {
            let claimed = encode(&Slot::Claimed { token: r.token })?;
            match b {
                Backend::Redis { pool, prefix } => {
                    let script = redis::Script::new(
                        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
                    );
                    let mut conn = connection(&pool).await?;
                    let _: i64 = script.key(key(&prefix, &r.hash)).arg(claimed).invoke_async(&mut conn).await.map_err(unavailable)?;
                    Ok(())
                }
                Backend::Local(store) => {
                    let hash = r.hash.to_string();
                    blocking(move || {
                        store.release(&hash, &claimed);
                        Ok(())
                    })
                    .await
                }
            }
        })
    }
}

impl Handler<Ping> for ReplayGuard {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        self.run(|b| async move {
            match b {
                Backend::Redis { pool, .. } => {
                    let mut conn = connection(&pool).await?;
                    let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(unavailable)?;
                    Ok(())
                }
                Backend::Local(_) => Ok(()),
            }
        })
    }
}

fn key(prefix: &str, hash: &TxHash) -> String {
    format!("{prefix}replay:{hash}")
}

fn new_token() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| StoreError::Unavailable(format!("no randomness for a claim token: {e}")))?;
    Ok(hex::encode(b))
}

fn encode(slot: &Slot) -> Result<String, StoreError> {
    serde_json::to_string(slot).map_err(|e| StoreError::Unavailable(e.to_string()))
}

fn decode(raw: &str) -> Result<Slot, StoreError> {
    // A value we cannot read is not "free": refuse rather than overwrite it.
    serde_json::from_str(raw).map_err(|e| StoreError::Unavailable(format!("unreadable replay slot: {e}")))
}

fn unavailable(e: redis::RedisError) -> StoreError {
    // The error text can carry the URL; keep only its kind.
    StoreError::Unavailable(format!("redis: {:?}", e.kind()))
}

async fn connection(pool: &deadpool_redis::Pool) -> Result<deadpool_redis::Connection, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis connection: {}", pool_error(&e))))
}

fn pool_error(e: &deadpool_redis::PoolError) -> String {
    match e {
        deadpool_redis::PoolError::Timeout(_) => "timed out".into(),
        // Kind and detail only: the error's display can carry the URL.
        deadpool_redis::PoolError::Backend(e) => format!("{:?} {}", e.kind(), e.detail().unwrap_or("")),
        _ => "pool error".into(),
    }
}

async fn redis_reserve(pool: &deadpool_redis::Pool, key: &str, token: String) -> Result<Reservation, StoreError> {
    let claimed = encode(&Slot::Claimed { token: token.clone() })?;
    let mut conn = connection(pool).await?;
    // Two rounds at most: the slot can disappear between SET NX and GET
    // when its claim is released or expires.
    for _ in 0..2 {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&claimed)
            .arg("NX")
            .arg("PX")
            .arg(CLAIM_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if set.is_some() {
            return Ok(Reservation::Claimed { token });
        }
        let current: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match current.as_deref().map(decode).transpose()? {
            Some(Slot::Committed { record }) => return Ok(Reservation::Committed(Box::new(record))),
            Some(Slot::Claimed { .. }) => return Ok(Reservation::InFlight),
            None => continue,
        }
    }
    Ok(Reservation::InFlight)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task failed: {e}"))))
}

const RECORDS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("replay_records");

/// The single-instance store: committed records in a redb file (durable
/// on commit, so a restart never forgets a consumed payment); claims in
/// memory (a crash releases them, which is what a claim's expiry means).
pub struct LocalStore {
    db: redb::Database,
    claims: Mutex<HashMap<String, (String, SystemTime)>>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    expires_at: u64,
    slot: String,
}

impl LocalStore {
    fn open(path: &Path) -> Result<Self, String> {
        let db = redb::Database::create(path).map_err(|e| format!("replay store {}: {e}", path.display()))?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(RECORDS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(LocalStore {
            db,
            claims: Mutex::new(HashMap::new()),
        })
    }

    fn committed(&self, hash: &str) -> Result<Option<ReplayRecord>, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("local store: {e}"));
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(RECORDS).map_err(|e| err(&e))?;
        let Some(raw) = table.get(hash).map_err(|e| err(&e))? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(raw.value()).map_err(|e| err(&e))?;
        if stored.expires_at <= unix_now() {
            return Ok(None);
        }
        match decode(&stored.slot)? {
            Slot::Committed { record } => Ok(Some(record)),
            Slot::Claimed { .. } => Ok(None),
        }
    }

    fn reserve(&self, hash: &str, token: String) -> Result<Reservation, StoreError> {
        let mut claims = self.claims.lock().unwrap();
        if let Some(record) = self.committed(hash)? {
            return Ok(Reservation::Committed(Box::new(record)));
        }
        let now = SystemTime::now();
        if let Some((_, at)) = claims.get(hash)
            && now.duration_since(*at).unwrap_or_default() < CLAIM_TTL
        {
            return Ok(Reservation::InFlight);
        }
        claims.insert(hash.to_owned(), (token.clone(), now));
        Ok(Reservation::Claimed { token })
    }

    fn commit(&self, hash: &str, claimed: &str, committed: String, ttl: Duration) -> Result<bool, StoreError> {
        let mut claims = self.claims.lock().unwrap();
        let Slot::Claimed { token } = decode(claimed)? else {
            return Ok(false);
        };
        if claims.get(hash).map(|(t, _)| t) != Some(&token) {
            return Ok(false);
        }
        let stored = serde_json::to_vec(&Stored {
            expires_at: unix_now() + ttl.as_secs(),
            slot: committed,
        })
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let err = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("local store: {e}"));
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| err(&e))?;
            table.insert(hash, stored.as_slice()).map_err(|e| err(&e))?;
        }
        // redb commits durably (fsync) by default: the 200 is only sent
        // after the record is on disk.
        txn.commit().map_err(|e| err(&e))?;
        claims.remove(hash);
        Ok(true)
    }

    fn release(&self, hash: &str, claimed: &str) {
        let mut claims = self.claims.lock().unwrap();
        if let Ok(Slot::Claimed { token }) = decode(claimed)
            && claims.get(hash).map(|(t, _)| t) == Some(&token)
        {
            claims.remove(hash);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
