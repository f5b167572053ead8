//! The deliveries in PostgreSQL: born with their payment row, claimed
//! with a lease, finished under that lease, listed and requeued by the
//! operator.
//!
//! The lease: a claim moves `next_attempt_at` past the attempt's timeout
//! (and counts the attempt) in the statement that selects the row, with
//! `FOR UPDATE SKIP LOCKED`, so two instances claiming at once take
//! different rows and neither sees the other's until its lease ends. An
//! attempt finishes only if the row is still at the claim it made (a
//! fence: the count of claims, which a requeue, resetting the attempts,
//! leaves alone): an attempt that outlived its lease, and so may have been
//! made again elsewhere, writes nothing.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use serde::Serialize;

use super::event::Event;
use crate::ledger::LedgerError;

/// An endpoint as the ledger needs it to create deliveries (no secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
}

const ENQUEUE: &str = "INSERT INTO webhook_deliveries (message_id, endpoint, url, event_type, subject, payload)
SELECT t.message_id, t.endpoint, t.url, t.event_type, t.subject, t.payload::jsonb
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
    AS t(message_id, endpoint, url, event_type, subject, payload)
ON CONFLICT (message_id) DO NOTHING";

/// One delivery per event per target, in the caller's transaction; the
/// number created. A delivery that exists already (same `webhook-id`) is
/// left as it is.
pub async fn enqueue(
    client: &impl GenericClient,
    events: &[Event<'_>],
    targets: &[Target],
) -> Result<u64, LedgerError> {
    if events.is_empty() || targets.is_empty() {
        return Ok(0);
    }
    let n = events.len() * targets.len();
    let (mut ids, mut names, mut urls, mut types, mut subjects, mut payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in events {
        let payload = e.payload().to_string();
        for t in targets {
            ids.push(e.message_id(&t.name));
            names.push(t.name.clone());
            urls.push(t.url.clone());
            types.push(e.event_type().to_owned());
            subjects.push(e.subject());
            payloads.push(payload.clone());
        }
    }
    Ok(client
        .execute(ENQUEUE, &[&ids, &names, &urls, &types, &subjects, &payloads])
        .await?)
}

/// A delivery this instance holds the lease of.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    pub message_id: String,
    pub endpoint: String,
    pub body: String,
    /// This attempt's number (1 for the first since created or requeued).
    pub attempt: i32,
    /// The delivery's claims so far, this one included: the fence (never
    /// reset, so an attempt that outlived its lease across a requeue still
    /// writes nothing).
    pub fence: i64,
}

const CLAIM: &str = "WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now() AND endpoint = ANY($1)
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    claims = d.claims + 1,
    last_attempt_at = now(),
    next_attempt_at = now() + $3::int8 * interval '1 millisecond'
FROM due WHERE d.id = due.id
RETURNING d.id, d.message_id, d.endpoint, d.payload::text, d.attempts, d.claims";

/// Up to `max` due deliveries for `endpoints`, leased for `lease`.
pub async fn claim(
    client: &impl GenericClient,
    endpoints: &[String],
    max: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, LedgerError> {
    let rows = client
        .query(CLAIM, &[&endpoints, &(max as i64), &millis(lease)])
        .await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            message_id: r.get(1),
            endpoint: r.get(2),
            body: r.get(3),
            attempt: r.get(4),
            fence: r.get(5),
        })
        .collect())
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A 2xx.
    Delivered { status: u16 },
    /// Anything else; tried again after `retry_in` unless that was the
    /// last attempt or past the age limit.
    Failed {
        status: Option<u16>,
        error: String,
        retry_in: Duration,
    },
}

/// When a delivery is given up on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_attempts: u32,
    pub max_age: Duration,
}

const DELIVERED: &str = "UPDATE webhook_deliveries
SET state = 'delivered', delivered_at = now(), last_status = $3, last_error = NULL, url = $4
WHERE id = $1 AND claims = $2 AND state = 'pending'
RETURNING state";

const FAILED: &str = "UPDATE webhook_deliveries
SET state = CASE WHEN attempts >= $5
        OR coalesce(requeued_at, created_at) + $6::int8 * interval '1 millisecond'
            <= now() + $7::int8 * interval '1 millisecond'
        THEN 'dead' ELSE 'pending' END,
    next_attempt_at = now() + $7::int8 * interval '1 millisecond',
    last_status = $3, last_error = $8, url = $4
WHERE id = $1 AND claims = $2 AND state = 'pending'
RETURNING state";

/// Records an attempt's end; the delivery's state after it, `None` when
/// the lease was lost (the row moved on without this attempt).
pub async fn finish(
    client: &impl GenericClient,
    claimed: &Claimed,
    url: &str,
    finish: &Finish,
    limits: Limits,
) -> Result<Option<String>, LedgerError> {
    let row = match finish {
        Finish::Delivered { status } => {
            client
                .query_opt(DELIVERED, &[&claimed.id, &claimed.fence, &i32::from(*status), &url])
                .await?
        }
        Finish::Failed {
            status,
            error,
            retry_in,
        } => {
            let max_attempts = i32::try_from(limits.max_attempts).unwrap_or(i32::MAX);
            client
                .query_opt(
                    FAILED,
                    &[
                        &claimed.id,
                        &claimed.fence,
                        &status.map(i32::from),
                        &url,
                        &max_attempts,
                        &millis(limits.max_age),
                        &millis(*retry_in),
                        error,
                    ],
                )
                .await?
        }
    };
    Ok(row.map(|r| r.get(0)))
}

/// The backlog, across every instance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    /// Seconds since the oldest pending delivery was created (or
    /// requeued); 0 when none is pending.
    pub oldest_pending_seconds: f64,
    pub dead: i64,
}

pub async fn backlog(client: &impl GenericClient) -> Result<Backlog, LedgerError> {
    let r = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                coalesce(extract(epoch FROM now() - min(coalesce(requeued_at, created_at))
                    FILTER (WHERE state = 'pending')), 0)::float8,
                count(*) FILTER (WHERE state = 'dead')
             FROM webhook_deliveries WHERE state IN ('pending', 'dead')",
            &[],
        )
        .await?;
    Ok(Backlog {
        pending: r.get(0),
        oldest_pending_seconds: r.get(1),
        dead: r.get(2),
    })
}

/// A delivery as `settlegate ledger webhooks` prints it (and the admin
/// API lists it).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Listed {
    pub id: i64,
    pub message_id: String,
    pub endpoint: String,
    pub url: String,
    pub event_type: String,
    pub subject: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: String,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub requeued_at: Option<String>,
    pub delivered_at: Option<String>,
}

fn utc(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
}

/// Deliveries in `state` (all when `None`), oldest first, after `after`
/// (an id, for paging), `limit` at most.
pub async fn list(
    client: &impl GenericClient,
    state: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<Listed>, LedgerError> {
    let sql = format!(
        "SELECT id, message_id, endpoint, url, event_type, subject, state, attempts, {}, last_status,
            last_error, {}, {}, {}
         FROM webhook_deliveries
         WHERE ($1::text IS NULL OR state = $1) AND id > $2
         ORDER BY id LIMIT $3",
        utc("next_attempt_at"),
        utc("created_at"),
        utc("requeued_at"),
        utc("delivered_at"),
    );
    let rows = client.query(&sql, &[&state, &after, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| Listed {
            id: r.get(0),
            message_id: r.get(1),
            endpoint: r.get(2),
            url: r.get(3),
            event_type: r.get(4),
            subject: r.get(5),
            state: r.get(6),
            attempts: r.get(7),
            next_attempt_at: r.get(8),
            last_status: r.get(9),
            last_error: r.get(10),
            created_at: r.get(11),
            requeued_at: r.get(12),
            delivered_at: r.get(13),
        })
        .collect())
}

/// Which deliveries a requeue takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// By `id` or by `webhook-id` (`msg_…`).
    One(String),
    AllDead,
}

/// Why a requeue did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("no delivery has the id {0}")]
    NotFound(String),
    #[error("delivery {id} is {state}: only a dead delivery is requeued")]
    NotDead { id: String, state: String },
    #[error(transparent)]
    Database(#[from] LedgerError),
}

impl From<tokio_postgres::Error> for RequeueError {
    fn from(e: tokio_postgres::Error) -> Self {
        RequeueError::Database(e.into())
    }
}

/// Dead deliveries back to pending, due now, with their attempts reset
/// and their age counted from now; the ids requeued.
pub async fn requeue(client: &impl GenericClient, which: &Requeue) -> Result<Vec<i64>, RequeueError> {
    const SET: &str = "UPDATE webhook_deliveries
        SET state = 'pending', attempts = 0, next_attempt_at = now(), requeued_at = now()
        WHERE state = 'dead'";
    match which {
        Requeue::AllDead => Ok(client
            .query(&format!("{SET} RETURNING id"), &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()),
        Requeue::One(key) => {
            let id: Option<i64> = key.parse().ok();
            let found = client
                .query_opt(
                    "SELECT id, state FROM webhook_deliveries WHERE id = $1 OR message_id = $2",
                    &[&id.unwrap_or(0), key],
                )
                .await?
                .ok_or_else(|| RequeueError::NotFound(key.clone()))?;
            let (id, state): (i64, String) = (found.get(0), found.get(1));
            let done = client.query(&format!("{SET} AND id = $1 RETURNING id"), &[&id]).await?;
            if done.is_empty() {
                return Err(RequeueError::NotDead { id: key.clone(), state });
            }
            Ok(vec![id])
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
