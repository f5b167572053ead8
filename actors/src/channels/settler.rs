//! `ChannelSettler`: turns accepted vouchers into tokens on the payee's
//! balance, on chain, before a payer can walk away with them.
//!
//! Owns the payee's key (from a secret file; never logged, its `Debug`
//! shows the address only). Every `scan_interval` it reads every indexed
//! channel's state and on-chain facts and carries out its [`plan`]:
//! `settle` the highest voucher (on the schedule, or at once when the
//! payer asked to close), `close` a channel a `close` credential asked
//! for, and drop finalised channels from the index.
//!
//! Guarantees:
//! - one settlement transaction per channel at a time across every
//!   instance (a store reservation per channel), so two settlers never
//!   race nonces or pay fees twice for one voucher;
//! - a settlement counts once its effect is read on chain (`settled` at
//!   least the voucher's amount), not when the node accepted it;
//! - a voucher is marked public in the channel's state before the
//!   transaction that carries it is sent: from then on it serves nothing;
//! - one scan at a time; a scan that fails for one channel goes on with
//!   the next, and the next scan retries it.
//!
//! Messages: [`Scan`] (also sent by the actor itself on its interval).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use alloy_primitives::{Address, Bytes, U256};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use settlegate_rules::session::abi::{close_call, settle_call};
use settlegate_rules::session::{ChannelId, ChannelState, OnChain};
use settlegate_rules::tx_sign::{Eip1559, PayeeKey};

use super::book::{BookError, CLOSING_KEY, ChannelBook, Step, parse_channel_key};
use super::plan::{Plan, Schedule, plan, unsettled};
use super::read_channel;
use crate::rpc_pool::{Broadcast, PrepareTx, RpcError, RpcPool, Submitted, ask};
use crate::store::{StoreError, unix_now};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettlementLabels {
    /// `settle` or `close`.
    pub action: &'static str,
    /// `ok`, or the failure's cause.
    pub outcome: &'static str,
}

/// The settler's metrics (registered by the binary).
#[derive(Clone, Default)]
pub struct SettlerMetrics {
    /// Accepted and not settled on chain, summed over channels (atomic
    /// units; as an i64 gauge, saturated).
    pub unsettled: Gauge,
    /// Seconds since the oldest unsettled voucher's clock started.
    pub oldest_unsettled: Gauge,
    pub settlements: Family<SettlementLabels, Counter>,
}

/// Why one channel's settlement did not happen. The next scan retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Book(#[from] BookError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("the transaction could not be signed")]
    Sign,
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
    #[error("the transaction was sent but its effect is not on chain")]
    NoEffect,
    #[error("the channel's stored state does not decode")]
    Corrupt,
}

impl SettleError {
    pub fn cause(&self) -> &'static str {
        match self {
            SettleError::Book(e) => e.cause(),
            SettleError::Rpc(e) => e.cause(),
            SettleError::Sign => "sign_failed",
            SettleError::Rejected(_) => "tx_rejected",
            SettleError::NoEffect => "no_effect",
            SettleError::Corrupt => "channel_corrupt_state",
        }
    }
}

pub struct SettlerConfig {
    /// The payee's key; `None`: watch only (metrics and reports, no
    /// transaction).
    pub key: Option<Arc<PayeeKey>>,
    /// Only channels on this chain; `None`: every chain in the index.
    pub chain_id: Option<u64>,
    pub schedule: Schedule,
    pub scan_interval: Duration,
    /// Bound on one JSON-RPC exchange.
    pub rpc_timeout: Duration,
}

/// What one scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub channels: usize,
    pub settled: usize,
    pub closed: usize,
    pub failed: usize,
    pub unsettled: u128,
    /// One row per channel looked at.
    pub rows: Vec<ChannelRow>,
}

/// One channel as a scan saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ChannelRow {
    pub key: String,
    /// The channel's payer and deposit on chain (empty until read).
    pub payer: String,
    pub deposit: String,
    pub accepted: String,
    pub spent: String,
    pub settled: String,
    pub unsettled: String,
    pub close_requested_at: u64,
    pub finalized: bool,
    /// `settle`, `close`, `forget`, `due` (watch only: would settle), or
    /// empty; `failed: <cause>` when the transaction failed.
    pub action: String,
}

/// Scans every channel now (unless a scan is running: then `None`).
#[derive(Message)]
#[rtype(result = "Option<Result<ScanReport, SettleError>>")]
pub struct Scan;

pub struct ChannelSettler {
    inner: Arc<Inner>,
}

struct Inner {
    book: ChannelBook,
    rpc: Addr<RpcPool>,
    cfg: SettlerConfig,
    metrics: SettlerMetrics,
    scanning: AtomicBool,
    /// Per channel key: when its unsettled clock started (unix seconds).
    since: Mutex<HashMap<String, u64>>,
}

impl ChannelSettler {
    pub fn new(book: ChannelBook, rpc: Addr<RpcPool>, cfg: SettlerConfig, metrics: SettlerMetrics) -> Self {
        ChannelSettler {
            inner: Arc::new(Inner {
                book,
                rpc,
                cfg,
                metrics,
                scanning: AtomicBool::new(false),
                since: Mutex::default(),
            }),
        }
    }

    /// The payee address the key settles for (`None`: watch only).
    pub fn payee(&self) -> Option<Address> {
        self.inner.cfg.key.as_ref().map(|k| k.address())
    }

    /// One scan, now, outside any actor (the `channels` command).
    pub async fn scan_once(
        book: ChannelBook,
        rpc: Addr<RpcPool>,
        cfg: SettlerConfig,
        metrics: SettlerMetrics,
    ) -> Result<ScanReport, SettleError> {
        ChannelSettler::new(book, rpc, cfg, metrics).inner.scan().await
    }
}

impl Actor for ChannelSettler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.payee() {
            Some(payee) => tracing::info!(%payee, "channel settler started"),
            None => tracing::info!("channel settler watching only (no payee key): nothing is settled on chain"),
        }
        ctx.run_interval(self.inner.cfg.scan_interval, |_, ctx| ctx.notify(Scan));
    }
}

impl Handler<Scan> for ChannelSettler {
    type Result = ResponseFuture<Option<Result<ScanReport, SettleError>>>;

    fn handle(&mut self, _: Scan, _: &mut Self::Context) -> Self::Result {
        let inner = self.inner.clone();
        Box::pin(async move {
            if inner.scanning.swap(true, Ordering::SeqCst) {
                return None;
            }
            let report = inner.scan().await;
            inner.scanning.store(false, Ordering::SeqCst);
            if let Err(e) = &report {
                tracing::warn!(error = %e, cause = e.cause(), "channel scan failed");
            }
            Some(report)
        })
    }
}

impl Inner {
    async fn scan(&self) -> Result<ScanReport, SettleError> {
        let keys = self.book.channels().await?;
        let closing: std::collections::HashSet<String> = self.book.set(CLOSING_KEY).await?.into_iter().collect();
        let now = unix_now();
        let mut report = ScanReport {
            channels: keys.len(),
            ..ScanReport::default()
        };
        let mut oldest = now;
        for key in keys {
            let mut row = ChannelRow {
                key: key.clone(),
                payer: String::new(),
                deposit: String::new(),
                accepted: String::new(),
                spent: String::new(),
                settled: String::new(),
                unsettled: String::new(),
                close_requested_at: 0,
                finalized: false,
                action: String::new(),
            };
            match self.one(&key, closing.contains(&key), now, &mut row).await {
                Ok(Done { action, owed }) => {
                    report.unsettled = report.unsettled.saturating_add(owed);
                    if owed > 0 {
                        oldest = oldest.min(self.since.lock().get(&key).copied().unwrap_or(now));
                    }
                    match action {
                        Some("settle") => report.settled += 1,
                        Some("close") => report.closed += 1,
                        _ => {}
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    row.action = format!("failed: {}", e.cause());
                    tracing::warn!(channel = %key, error = %e, cause = e.cause(), "channel not settled; the next scan retries");
                }
            }
            report.rows.push(row);
        }
        self.metrics
            .unsettled
            .set(i64::try_from(report.unsettled).unwrap_or(i64::MAX));
        self.metrics.oldest_unsettled.set((now - oldest) as i64);
        Ok(report)
    }

    /// One channel: read, plan, act.
    async fn one(&self, key: &str, closing: bool, now: u64, row: &mut ChannelRow) -> Result<Done, SettleError> {
        let Some((chain_id, escrow, channel)) = parse_channel_key(key) else {
            return Ok(Done::idle(0));
        };
        if self.cfg.chain_id.is_some_and(|c| c != chain_id) {
            return Ok(Done::idle(0));
        }
        let Some(bytes) = self.book.read(key).await? else {
            self.book.forget(key).await?;
            return Ok(Done::idle(0));
        };
        let state: ChannelState = serde_json::from_slice(&bytes).map_err(|_| SettleError::Corrupt)?;
        let chain = self.facts(chain_id, escrow, &channel).await?;
        let owed = unsettled(&state, &chain);
        row.payer = format!("{:#x}", chain.payer);
        row.deposit = chain.deposit.to_string();
        row.accepted = state.accepted.to_string();
        row.spent = state.spent.to_string();
        row.settled = chain.settled.to_string();
        row.unsettled = owed.to_string();
        row.close_requested_at = chain.close_requested_at;
        row.finalized = chain.finalized;
        let since = {
            let mut since = self.since.lock();
            if owed == 0 {
                since.remove(key);
                now
            } else {
                *since.entry(key.to_owned()).or_insert(now)
            }
        };
        let planned = plan(&state, &chain, closing, now, since, &self.cfg.schedule);
        let Some(key_pair) = self.cfg.key.clone() else {
            row.action = match planned {
                Plan::Nothing => String::new(),
                Plan::Forget => "finalized".into(),
                Plan::Settle { .. } | Plan::Close { .. } => "due".into(),
            };
            return Ok(Done::idle(owed));
        };
        let (action, data, cumulative) = match planned {
            Plan::Nothing => return Ok(Done::idle(owed)),
            Plan::Forget => {
                row.action = "forget".into();
                self.book.forget(key).await?;
                self.book.unmark(CLOSING_KEY, key).await?;
                self.since.lock().remove(key);
                return Ok(Done::idle(0));
            }
            Plan::Settle { cumulative, signature } => {
                ("settle", settle_call(&channel, cumulative, &signature), cumulative)
            }
            Plan::Close { cumulative, signature } => {
                ("close", close_call(&channel, cumulative, &signature), cumulative)
            }
        };
        // One settlement per channel at a time, across instances.
        let lock = format!("settling:{key}");
        if !self.book.reserve(&lock, self.cfg.rpc_timeout * 6).await? {
            return Ok(Done::idle(owed));
        }
        // The voucher is public once it is in a transaction: marked first,
        // so that no request is served from it as a retry.
        if let Err(e) = self.publish(key, cumulative).await {
            self.book.release(&lock).await;
            return Err(e);
        }
        let result = self.send(&key_pair, chain_id, escrow, data).await;
        let mut settled_facts = None;
        let result = match result {
            Ok(()) => {
                let after = self.facts(chain_id, escrow, &channel).await?;
                let done = if action == "close" {
                    after.finalized
                } else {
                    after.settled >= cumulative
                };
                settled_facts = Some(after);
                if done { Ok(()) } else { Err(SettleError::NoEffect) }
            }
            Err(e) => Err(e),
        };
        self.book.release(&lock).await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => e.cause(),
        };
        self.metrics
            .settlements
            .get_or_create(&SettlementLabels { action, outcome })
            .inc();
        result?;
        if let Some(after) = settled_facts {
            // The state says what the chain settled (the books' settlement
            // event); a failure here leaves it to the next facts read.
            if let Err(e) = self.record_settled(key, after).await {
                tracing::warn!(channel = %key, error = %e, "a settlement could not be recorded in the channel's state");
            }
        }
        row.action = action.into();
        row.settled = cumulative.to_string();
        row.unsettled = "0".into();
        tracing::info!(channel = %key, action, cumulative = %cumulative, "channel settled on chain");
        if action == "close" {
            self.book.unmark(CLOSING_KEY, key).await?;
        }
        self.since.lock().remove(key);
        Ok(Done {
            action: Some(action),
            owed: 0,
        })
    }

    /// Raises the channel's on-chain facts in its state to `after` (read
    /// once its settlement or close was mined): settled, finalized, the
    /// close request. Never lowers them.
    async fn record_settled(&self, key: &str, after: OnChain) -> Result<(), SettleError> {
        self.change_state(key, |state| {
            let chain = &mut state.chain;
            if chain.settled >= after.settled
                && chain.finalized >= after.finalized
                && chain.close_requested_at >= after.close_requested_at
            {
                return false;
            }
            chain.settled = chain.settled.max(after.settled);
            chain.finalized |= after.finalized;
            chain.close_requested_at = chain.close_requested_at.max(after.close_requested_at);
            true
        })
        .await
    }

    /// Marks `cumulative` as public in the channel's state.
    async fn publish(&self, key: &str, cumulative: u128) -> Result<(), SettleError> {
        self.change_state(key, |state| {
            if state.published >= cumulative {
                return false;
            }
            state.published = cumulative;
            true
        })
        .await
    }

    /// Applies `change` to the channel's state by compare-and-set; it says
    /// whether it changed anything (nothing is written if not). A channel
    /// with no state is left alone.
    async fn change_state(&self, key: &str, change: impl Fn(&mut ChannelState) -> bool) -> Result<(), SettleError> {
        self.book
            .update(key, |bytes| {
                let Some(bytes) = bytes else {
                    return Step::Keep(Ok(()));
                };
                let Ok(mut state) = serde_json::from_slice::<ChannelState>(bytes) else {
                    return Step::Keep(Err(SettleError::Corrupt));
                };
                if !change(&mut state) {
                    return Step::Keep(Ok(()));
                }
                match serde_json::to_vec(&state) {
                    Ok(b) => Step::Write(b, Ok(())),
                    Err(_) => Step::Keep(Err(SettleError::Corrupt)),
                }
            })
            .await?
    }

    async fn facts(&self, chain_id: u64, escrow: Address, channel: &ChannelId) -> Result<OnChain, SettleError> {
        Ok(read_channel(&self.rpc, chain_id, escrow, channel, self.cfg.rpc_timeout * 2).await?)
    }

    /// Prepares, signs and broadcasts one call from the payee to `to`.
    async fn send(&self, key: &PayeeKey, chain_id: u64, to: Address, data: Bytes) -> Result<(), SettleError> {
        let params = ask(
            &self.rpc,
            PrepareTx {
                from: key.address(),
                to,
                data: data.clone(),
                chain_id,
            },
            self.cfg.rpc_timeout * 2,
        )
        .await?;
        let signed = Eip1559 {
            chain_id,
            nonce: params.nonce,
            gas_limit: params.gas_limit,
            max_fee_per_gas: params.max_fee_per_gas,
            max_priority_fee_per_gas: params.max_priority_fee_per_gas,
            to,
            value: U256::ZERO,
            data: data.to_vec(),
        }
        .sign(key)
        .map_err(|_| SettleError::Sign)?;
        let submitted = ask(
            &self.rpc,
            Broadcast {
                raw: signed.raw.into(),
                chain_id,
            },
            self.cfg.rpc_timeout * 3,
        )
        .await?;
        match submitted {
            Submitted::Mined | Submitted::Accepted | Submitted::Known => Ok(()),
            Submitted::Rejected(why) => Err(SettleError::Rejected(why.chars().take(200).collect())),
        }
    }
}

struct Done {
    action: Option<&'static str>,
    owed: u128,
}

impl Done {
    fn idle(owed: u128) -> Self {
        Done { action: None, owed }
    }
}

impl From<StoreError> for SettleError {
    fn from(e: StoreError) -> Self {
        SettleError::Book(BookError::Store(e))
    }
}
