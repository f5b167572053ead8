//! `put_if_absent` on Redis: bounded by a deadline in the server's clock,
//! optionally confirmed by replicas (`redis.wait_replicas`), and read back
//! when its answer is lost.
//!
//! A record written under `wait_replicas` is *pending* until its writer's
//! budget is over, `until` in the server's clock: `P<until>|<value>`.
//! While it is, the writer may withdraw it (WAIT found too few replicas),
//! so every reader answers 503 ([`StoreError::Unconfirmed`]) and nobody
//! caches it; afterwards a withdrawal is refused by the server and the
//! record reads as consumed. Without this, another instance could serve
//! a record's idempotent 200 and then see it withdrawn.

use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_redis::redis;

use super::connection::{redis_error, wait_for_replicas};
use super::{RedisStore, script, unexpected};
use crate::store::{CLOCK_MARGIN_MS, Put, StoreError, is_record_key};

script!(PUT_IF_ABSENT, "put_if_absent.lua");
script!(CONSUME_BEFORE, "consume_before.lua");
script!(WITHDRAW, "withdraw.lua");
script!(PROMOTE, "promote.lua");
script!(READ_BACK, "read_back.lua");

/// `value` pending until `until_ms` (server clock).
#[doc(hidden)]
pub fn pending(until_ms: i64, value: &[u8]) -> Vec<u8> {
    let mut v = format!("P{until_ms}|").into_bytes();
    v.extend_from_slice(value);
    v
}

/// The value in a stored value, pending or not.
pub(super) fn settled_part(raw: &[u8]) -> &[u8] {
    match raw.first() {
        Some(b'P') => raw.iter().position(|&b| b == b'|').map_or(raw, |i| &raw[i + 1..]),
        _ => raw,
    }
}

type Attempt = (Vec<Vec<u8>>, Option<redis::RedisResult<i64>>);

impl RedisStore {
    /// Consumes `key` unless the server sees the command after `deadline`
    /// (our unix ms): a consume still queued when its request was answered
    /// 503 (a paused or stalled server) must never land later, or the
    /// payment would be spent without its 200.
    pub(super) async fn consume(&self, key: &str, value: &[u8], ttl_ms: u64, deadline: i64) -> Result<Put, StoreError> {
        let outbox = self.outbox.filter(|_| is_record_key(key)).map(|_| self.outbox_key());
        let outbox_max = self.outbox.unwrap_or(0);
        let key = self.key(key);
        let wanted = self.wait_replicas;
        let wait_ms = if wanted > 0 {
            self.timeout.as_millis() as u64 / 3
        } else {
            0
        };
        if self.deadlines.load(Ordering::Relaxed) {
            let server_deadline = deadline + self.server_offset().await?;
            // Pending until the end of the budget: the consume's third,
            // the replicas' and the withdrawal's, and the clock's margin.
            let until = server_deadline + 2 * wait_ms as i64 + CLOCK_MARGIN_MS;
            let stored = if wanted > 0 {
                pending(until, value)
            } else {
                value.to_vec()
            };
            let attempt: Result<Attempt, StoreError> = self
                .with_conn(|mut c| {
                    let (key, stored, outbox) = (key.clone(), stored.clone(), outbox.clone());
                    async move {
                        let mut script = CONSUME_BEFORE.key(&key);
                        if let Some(stream) = &outbox {
                            script.key(stream);
                        }
                        let answer: Vec<Vec<u8>> = script
                            .arg(&stored)
                            .arg(ttl_ms)
                            .arg(server_deadline)
                            .arg(outbox_max)
                            .invoke_async(&mut c)
                            .await?;
                        // WAIT on the connection that wrote: it counts the
                        // replicas that have this connection's writes.
                        let acked = if wanted > 0 && answer.first().is_some_and(|k| k.as_slice() == b"inserted") {
                            Some(wait_for_replicas(&mut c, &key, wanted, wait_ms).await)
                        } else {
                            None
                        };
                        if matches!(acked, Some(Ok(n)) if n >= i64::from(wanted)) {
                            // Confirmed: no longer pending, for the others.
                            // Not awaited; if it is lost the record is
                            // pending until `until`, then consumed anyway.
                            let settled = settled_part(&stored).to_vec();
                            tokio::spawn(async move {
                                let promoted: redis::RedisResult<i64> =
                                    PROMOTE.key(&key).arg(stored).arg(settled).invoke_async(&mut c).await;
                                if let Err(e) = promoted {
                                    tracing::debug!(error = %redis_error(e), "a confirmed record stays pending until its time");
                                }
                            });
                        }
                        Ok((answer, acked))
                    }
                })
                .await;
            match attempt {
                Ok((answer, acked)) => {
                    return match answer.as_slice() {
                        [k, entry @ ..] if k == b"inserted" && entry.len() <= 1 => match acked {
                            Some(acked) if acked.as_ref().map_or(true, |&n| n < i64::from(wanted)) => {
                                let acked = acked.unwrap_or(-1);
                                let entry = entry.first().map(|e| String::from_utf8_lossy(e).into_owned());
                                let _ = self.withdraw_entry(&key, &stored, until, entry.as_deref()).await;
                                Err(StoreError::Unreplicated { wanted, acked })
                            }
                            _ => Ok(Put::Inserted),
                        },
                        [k] if k == b"outbox_full" => Err(StoreError::OutboxFull(outbox_max)),
                        [k, raw] if k == b"existing" => Ok(Put::Existing(settled_part(raw).to_vec())),
                        [k] if k == b"inflight" => Err(StoreError::Unconfirmed),
                        // The request was answered already; nothing written.
                        [k] if k == b"late" => Err(StoreError::Timeout),
                        _ => Err(unexpected("a consume")),
                    };
                }
                Err(StoreError::Refused(_)) | Err(StoreError::Connection(_))
                    if wanted == 0 && self.is_old_server().await =>
                {
                    tracing::info!(
                        "the replay store cannot bound consumes by time (Redis before 5.0); consuming without"
                    );
                    self.deadlines.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if wanted > 0 {
            // WAIT goes with the deadline script: never consume unconfirmed.
            return Err(StoreError::Refused("redis.wait_replicas needs Redis 5 or later".into()));
        }
        if outbox.is_some() {
            // The outbox is a stream, written by the deadline script.
            return Err(StoreError::Refused("the ledger's outbox needs Redis 5 or later".into()));
        }
        let existing: Option<Vec<u8>> = if self.set_nx_get.load(Ordering::Relaxed) {
            let attempt = self
                .with_conn(|mut c| {
                    let key = key.clone();
                    async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl_ms)
                            .arg("GET")
                            .query_async(&mut c)
                            .await
                    }
                })
                .await;
            match attempt {
                Err(StoreError::Refused(_)) => {
                    tracing::info!("the replay store refuses SET NX GET (Redis before 7.0); using a script");
                    self.set_nx_get.store(false, Ordering::Relaxed);
                    self.by_script(&key, value, ttl_ms).await?
                }
                other => other?,
            }
        } else {
            self.by_script(&key, value, ttl_ms).await?
        };
        Ok(existing.map_or(Put::Inserted, Put::Existing))
    }

    async fn by_script(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_conn(|mut c| async move { PUT_IF_ABSENT.key(key).arg(value).arg(ttl_ms).invoke_async(&mut c).await })
            .await
    }

    /// Whether the server is older than Redis 5 (no effects replication, so
    /// no TIME before a write in a script).
    async fn is_old_server(&self) -> bool {
        let info: Result<String, StoreError> = self
            .with_conn(|mut c| async move { redis::cmd("INFO").arg("server").query_async(&mut c).await })
            .await;
        info.ok()
            .and_then(|i| {
                i.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok())
            })
            .is_some_and(|major| major < 5)
    }

    /// Deletes a record that did not reach its replicas, if it is still
    /// ours and still pending (`until`, server ms). If this fails too the
    /// record stays: a retry with the same `Idempotency-Key` gets its 200
    /// once it is no longer pending, without one it is REPLAYED.
    /// `key` is the full key. 1: withdrawn; 0: not ours; -1: too late.
    #[doc(hidden)]
    pub async fn withdraw(&self, key: &str, stored: &[u8], until: i64) -> Result<i64, StoreError> {
        self.withdraw_entry(key, stored, until, None).await
    }

    /// [`RedisStore::withdraw`], with the record's outbox entry (deleted
    /// with it, in the same script).
    async fn withdraw_entry(
        &self,
        key: &str,
        stored: &[u8],
        until: i64,
        entry: Option<&str>,
    ) -> Result<i64, StoreError> {
        let stream = entry.map(|_| self.outbox_key());
        let done: Result<i64, StoreError> = self
            .with_conn(|mut c| async move {
                let mut script = WITHDRAW.key(key);
                if let Some(stream) = &stream {
                    script.key(stream);
                }
                script
                    .arg(stored)
                    .arg(until)
                    .arg(entry.unwrap_or(""))
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match &done {
            Ok(-1) => tracing::error!(
                cause = "store_unreplicated",
                "a consume did not reach its replicas and its withdrawal came too late; it stays consumed"
            ),
            Ok(_) => tracing::warn!(
                cause = "store_unreplicated",
                "a consume did not reach redis.wait_replicas replicas in time; it was withdrawn"
            ),
            Err(e) => tracing::error!(
                cause = "store_unreplicated",
                error = %e,
                "a consume did not reach its replicas in time and could not be withdrawn; it stays consumed"
            ),
        }
        done
    }

    /// [`crate::store::Store::read_back`]: waits (on fresh answers of the
    /// server's clock) until `deadline` is past for the server, so the
    /// lost consume can no longer land, then reads; our own pending copy
    /// is withdrawn in the same script.
    pub(super) async fn read_back_after(
        &self,
        key: &str,
        value: &[u8],
        deadline: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let outbox = self.outbox.filter(|_| is_record_key(key)).map(|_| self.outbox_key());
        let key = self.key(key);
        if !self.deadlines.load(Ordering::Relaxed) {
            // Without the deadline script a late write cannot be ruled out.
            return Err(StoreError::Refused("this server cannot bound writes by time".into()));
        }
        // The consume's deadline in the server's clock, as it was sent:
        // a fresh measure may differ by its uncertainty, so allow the margin.
        let server_deadline = deadline + self.server_offset().await? + CLOCK_MARGIN_MS;
        loop {
            let answer: Vec<Vec<u8>> = self
                .with_conn(|mut c| {
                    let (key, outbox) = (key.clone(), outbox.clone());
                    async move {
                        let mut script = READ_BACK.key(key);
                        if let Some(stream) = outbox {
                            script.key(stream);
                        }
                        script.arg(server_deadline).arg(value).invoke_async(&mut c).await
                    }
                })
                .await?;
            match answer.as_slice() {
                [k, ms] if k == b"early" => {
                    let ms = std::str::from_utf8(ms)
                        .ok()
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(10u64);
                    tokio::time::sleep(Duration::from_millis(ms.min(1_000))).await;
                }
                [] => return Ok(None),
                [k] if k == b"inflight" => return Err(StoreError::Unconfirmed),
                [k, v] if k == b"found" => return Ok(Some(v.clone())),
                _ => return Err(unexpected("a read-back")),
            }
        }
    }
}
