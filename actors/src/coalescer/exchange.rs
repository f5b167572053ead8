//! The lookup exchange between instances on one store (Redis): claim a
//! lookup key, ask the node while renewing the claim, publish the result;
//! or find another instance's claim and poll for its result.
//!
//! What instances exchange is one typed value, [`Publication`], as JSON
//! (the store keeps bytes). A result another instance published is never
//! fresh: it may refuse, and a check it would settle waits for that
//! instance's consume record instead, then asks the node itself if none
//! comes. So whoever can write to the store can delay or refuse a payment
//! but never mint a 200 with forged facts. A publication that does not
//! decode is no result: the caller claims again. If the store cannot
//! coordinate, the instance looks up alone.
//!
//! A lookup's keys sit in its payment's record slot, so the claim reads the
//! record first: a payment another instance consumed is answered from its
//! record ([`Found::Consumed`]) with no lookup at the node. That record
//! only ever refuses (REPLAYED, or an idempotent retry counted by the
//! store); one that does not decode is corrupt, a 503, never "free". A
//! record still waiting for its replicas is no answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use settlegate_rules::settlement::ChainFacts;

use settlegate_rules::replay::ReplayRecord;

use super::{CoalescerMetrics, Source, ask_node};
use crate::replay_guard::lost_reply;
use crate::rpc_pool::{Lookup, RpcError, RpcPool};
use crate::store::{Bounded, Claim, LookupKeys, Store, StoreError};

/// What a claim's holder published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// The claim it ends.
    pub claim: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// What the chain said: held for new checks through the hold window.
    Facts(ChainFacts),
    /// A fault of the chain, for the claim's waiters only.
    Error(RpcError),
    /// The holder gave up (a fault of its own): the waiters look up.
    Abandoned,
}

impl Publication {
    fn decode(raw: &[u8]) -> Option<Self> {
        serde_json::from_slice(raw).ok()
    }
}

/// The store, as the coalescer uses it to share lookups.
#[derive(Clone)]
pub struct Exchange {
    store: Bounded,
}

impl Exchange {
    pub fn new(store: Bounded) -> Self {
        Exchange { store }
    }

    /// The keys `key`'s lookup is shared under, made once per lookup.
    pub(super) fn keys(&self, key: &Lookup) -> Arc<LookupKeys> {
        Arc::new(self.store.store().lookup_keys(&record_key(key), &shared_key(key)))
    }

    pub(super) async fn claim(
        &self,
        keys: &Arc<LookupKeys>,
        id: &Arc<str>,
        ttl: Duration,
        want_held: bool,
    ) -> Result<Claim, StoreError> {
        let (keys, id) = (keys.clone(), id.clone());
        self.store
            .run(
                "lookup_claim",
                move |s: Arc<dyn Store>| async move { s.claim(&keys, &id, ttl, want_held).await },
                |c| match c {
                    Claim::Consumed(_) => "consumed",
                    Claim::Held(..) => "held",
                    Claim::Claimed => "claimed",
                    Claim::Wait(_) => "wait",
                },
            )
            .await
    }

    /// The publication of `keys` (if any, and readable), its claim now,
    /// and the payment's record if the store read it.
    pub(super) async fn poll(&self, keys: &Arc<LookupKeys>) -> Result<Polled, StoreError> {
        let keys = keys.clone();
        let poll = self
            .store
            .run(
                "lookup_poll",
                move |s: Arc<dyn Store>| async move { s.poll(&keys).await },
                |p| {
                    if p.consumed.is_some() {
                        "consumed"
                    } else if p.published.is_some() {
                        "published"
                    } else {
                        "waiting"
                    }
                },
            )
            .await?;
        Ok(Polled {
            published: poll.published.as_deref().and_then(Publication::decode),
            claim: poll.claim,
            consumed: poll.consumed.as_deref().map(record),
        })
    }

    /// Publishes for the other instances, held `hold` for new checks and
    /// readable by the claim's waiters for `ttl`; only while the claim is
    /// still ours (a late result never overwrites a newer one).
    pub(super) async fn publish(
        &self,
        keys: Arc<LookupKeys>,
        publication: &Publication,
        hold: Duration,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(publication).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = publication.claim.clone();
        self.store
            .run(
                "lookup_publish",
                move |s: Arc<dyn Store>| async move { s.publish(&keys, &id, &body, hold, ttl).await },
                |_| "ok",
            )
            .await
    }

    async fn renew(&self, keys: &Arc<LookupKeys>, id: &Arc<str>, ttl: Duration) -> Result<bool, StoreError> {
        let (keys, id) = (keys.clone(), id.clone());
        self.store
            .run(
                "lookup_renew",
                move |s: Arc<dyn Store>| async move { s.renew(&keys, &id, ttl).await },
                |kept| if *kept { "renewed" } else { "lost" },
            )
            .await
    }
}

/// What to publish for `result` under claim `id`, and for how long it is
/// held for new checks: facts for `window`, the rest not at all.
pub(super) fn publication(
    id: String,
    result: &Result<Arc<ChainFacts>, RpcError>,
    window: Duration,
) -> (Publication, Duration) {
    let (outcome, hold) = match result {
        Ok(facts) => (Outcome::Facts((**facts).clone()), window),
        Err(e) if shareable(e) => (Outcome::Error(e.clone()), Duration::ZERO),
        Err(_) => (Outcome::Abandoned, Duration::ZERO),
    };
    (Publication { claim: id, outcome }, hold)
}

/// Whether another instance may take this error as its own answer: a fault
/// of the chain, not of this instance (its pool stopped, its circuits open).
pub(super) fn shareable(e: &RpcError) -> bool {
    !matches!(
        e,
        RpcError::AllCircuitsOpen | RpcError::Saturated(_) | RpcError::Stopped(_)
    )
}

/// What a poll of another instance's claim found.
pub(super) struct Polled {
    published: Option<Publication>,
    claim: Option<String>,
    pub(super) consumed: Option<Result<Arc<ReplayRecord>, StoreError>>,
}

/// What the exchange answered a lookup with.
pub(super) enum Found {
    /// The chain's facts (or its fault), and where they came from.
    Facts(Result<Arc<ChainFacts>, RpcError>, Source),
    /// The payment's record: it was consumed already.
    Consumed(Result<Arc<ReplayRecord>, StoreError>),
}

/// A record read from the store, decoded as the guard writes it: one that
/// does not decode is corrupt, never "not consumed".
pub(super) fn record(raw: &[u8]) -> Result<Arc<ReplayRecord>, StoreError> {
    lost_reply::decode(raw).map(|(record, _)| Arc::new(record))
}

/// The payment's record key (the guard's).
fn record_key(key: &Lookup) -> String {
    crate::replay_guard::records::record_key(&key.hash)
}

/// What the lookup reads beyond the payment: the chain, whether it needs
/// the head. With the record's key, the key instances share a lookup under.
pub(super) fn shared_key(key: &Lookup) -> String {
    format!("{}:{}", key.chain_id, u8::from(key.need_head))
}

/// A claim id unique across instances and lookups.
fn claim_id() -> Arc<str> {
    crate::store::unique_id().into()
}

/// Poll intervals while another instance looks up: quick at first (a
/// lookup on a near node takes milliseconds), then every 50 ms.
const POLL: [u64; 6] = [2, 4, 8, 16, 32, 50];

/// How long a claim lives without renewal: a dead holder holds its
/// waiters no longer than this (a live one renews it at half of it).
pub fn claim_ttl(lookup_timeout: Duration) -> Duration {
    (lookup_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
}

/// The lookup of `traced`'s key, shared with the other instances on the
/// store: the payment's record (it was consumed), a held result (with
/// `want_held`), the result of another instance's claim, or this
/// instance's own lookup under its claim. Bounded by `timeout` as a whole.
pub(super) async fn shared_lookup(
    exchange: &Exchange,
    pool: &Addr<RpcPool>,
    traced: crate::Traced<Lookup>,
    timeout: Duration,
    mut want_held: bool,
    metrics: &CoalescerMetrics,
) -> Found {
    let deadline = Instant::now() + timeout;
    let keys = exchange.keys(&traced.msg);
    let ttl = claim_ttl(timeout);
    let id = claim_id();
    let parent = traced.parent.clone();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Found::Facts(Err(RpcError::Timeout(timeout)), Source::Node(None));
        }
        let claim = parent.in_scope(|| exchange.claim(&keys, &id, ttl, want_held));
        match tokio::time::timeout(left, claim).await {
            Ok(Ok(Claim::Consumed(raw))) => return Found::Consumed(record(&raw)),
            Ok(Ok(Claim::Held(raw, hold))) => match Publication::decode(&raw).map(|p| p.outcome) {
                Some(Outcome::Facts(facts)) => return Found::Facts(Ok(Arc::new(facts)), Source::Remote { hold }),
                _ => want_held = false,
            },
            Ok(Ok(Claim::Claimed)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let result = ask_node_holding(exchange, pool, traced, left, &keys, &id, ttl).await;
                return Found::Facts(result, Source::Node(Some(Claimed { id, keys })));
            }
            Ok(Ok(Claim::Wait(other))) => match wait_for(exchange, &keys, &other, deadline, &parent).await {
                Some(Heard::Consumed(record)) => return Found::Consumed(record),
                Some(Heard::Outcome(Outcome::Facts(facts))) => {
                    return Found::Facts(Ok(Arc::new(facts)), Source::Remote { hold: Duration::ZERO });
                }
                Some(Heard::Outcome(Outcome::Error(e))) => {
                    return Found::Facts(Err(e), Source::Remote { hold: Duration::ZERO });
                }
                // The claim ended without a result (its holder died or
                // gave up): claim it again.
                Some(Heard::Outcome(Outcome::Abandoned)) | None => {}
            },
            Err(_) => return Found::Facts(Err(RpcError::Timeout(timeout)), Source::Node(None)),
            Ok(Err(_)) => {
                // The claim may have been taken all the same: publish under
                // it (only a claim still ours is published to).
                metrics.fallbacks.inc();
                let left = deadline.saturating_duration_since(Instant::now());
                let result = ask_node(pool, traced, left).await;
                return Found::Facts(result, Source::Node(Some(Claimed { id, keys })));
            }
        }
    }
}

/// A claim this instance took: its id and the lookup's keys, to publish
/// under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) id: Arc<str>,
    pub(crate) keys: Arc<LookupKeys>,
}

/// Asks the node while renewing claim `id` at half its life, so a slow
/// node does not let another instance start the same lookup.
async fn ask_node_holding(
    exchange: &Exchange,
    pool: &Addr<RpcPool>,
    traced: crate::Traced<Lookup>,
    left: Duration,
    keys: &Arc<LookupKeys>,
    id: &Arc<str>,
    ttl: Duration,
) -> Result<Arc<ChainFacts>, RpcError> {
    let ask = ask_node(pool, traced, left);
    let renew = async {
        loop {
            tokio::time::sleep(ttl / 2).await;
            if !matches!(exchange.renew(keys, id, ttl).await, Ok(true)) {
                // Lost (expired under a stalled store): nothing to renew.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = ask => result,
        () = renew => unreachable!("renewal never ends"),
    }
}

/// What a waiter heard while polling another instance's claim.
enum Heard {
    Outcome(Outcome),
    Consumed(Result<Arc<ReplayRecord>, StoreError>),
}

/// Polls for the outcome of claim `other` until it is published (or the
/// payment's record is there), the claim ends without one, or `deadline`
/// (`None`: claim again).
async fn wait_for(
    exchange: &Exchange,
    keys: &Arc<LookupKeys>,
    other: &str,
    deadline: Instant,
    parent: &tracing::Span,
) -> Option<Heard> {
    if other.is_empty() {
        return None;
    }
    for step in 0.. {
        let pause = Duration::from_millis(POLL[step.min(POLL.len() - 1)]);
        if Instant::now() + pause >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return None;
        }
        tokio::time::sleep(pause).await;
        let polled = match parent.in_scope(|| exchange.poll(keys)).await {
            Ok(polled) => polled,
            Err(_) => return None,
        };
        if let Some(record) = polled.consumed {
            return Some(Heard::Consumed(record));
        }
        if let Some(p) = polled.published
            && p.claim == other
        {
            return Some(Heard::Outcome(p.outcome));
        }
        if polled.claim.as_deref() != Some(other) {
            return None;
        }
    }
    None
}
