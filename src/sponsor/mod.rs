//! The fee sponsor at run time: its key, the shared budget in the store,
//! the simulation before a co-signature, and the watch of its balance.
//!
//! - Challenges offer sponsorship only while the last read says the
//!   sponsor's fee-token balance is at least the genome's `min_balance`
//!   and the budget can hold one more transaction at its cap: when either
//!   runs out, challenges stop offering it (a plain charge still works),
//!   rather than fail.
//! - The budget is one ledger per period in the shared store, changed only
//!   by compare-and-set ([`settlegate_rules::sponsor::budget`]): a hold
//!   before the broadcast, the on-chain fee (or nothing) after.
//! - A store or node that cannot answer is a 503 for a sponsored payment
//!   and withdraws the offer; it never lets a transaction through unheld.
//! - The key never leaves this module's `PayeeKey` (its `Debug` shows the
//!   address only); errors and logs name the address, never the key.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use alloy_primitives::{Address, Bytes, U256};
use parking_lot::Mutex;
use settlegate_actors::Traced;
use settlegate_actors::replay_guard::StoreError;
use settlegate_actors::rpc_pool::{EthCall, RpcError, RpcPool, Simulate};
use settlegate_actors::store::{Bounded, Cas};
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::primitives::address_lower;
use settlegate_rules::sponsor::SponsorPolicy;
use settlegate_rules::sponsor::budget::{Exhausted, Ledger};
use settlegate_rules::tx_sign::PayeeKey;

use crate::telemetry::metrics::{SponsorLabels, SponsorMetrics};

/// Compare-and-set attempts on the ledger before giving up (a 503).
const CAS_ATTEMPTS: usize = 32;
/// `balanceOf(address)`.
const BALANCE_OF: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];

/// Why a hold was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("the sponsorship budget: {0}")]
    Store(#[from] StoreError),
}

/// A fee held from the budget: where, to settle it after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    key: String,
    id: String,
    ttl: Duration,
}

/// What the last read found.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    balance: Option<U256>,
    remaining: Option<u128>,
}

/// What `/readyz` shows of the sponsor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SponsorStatus {
    pub address: String,
    pub fee_token: Option<String>,
    /// Atomic units, as a decimal string (`None`: not read yet or failing).
    pub balance: Option<String>,
    pub budget_remaining: Option<String>,
    pub offered: bool,
}

pub struct Sponsor {
    key: PayeeKey,
    store: Bounded,
    rpc: Addr<RpcPool>,
    rpc_timeout: Duration,
    seen: Mutex<Seen>,
    /// Whether the last read offered sponsorship (`None`: no read yet).
    last_offered: Mutex<Option<bool>>,
    metrics: SponsorMetrics,
}

impl std::fmt::Debug for Sponsor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sponsor")
            .field("address", &self.key.address())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sponsor {
    pub fn new(
        key: PayeeKey,
        store: Bounded,
        rpc: Addr<RpcPool>,
        rpc_timeout: Duration,
        metrics: SponsorMetrics,
    ) -> Self {
        Sponsor {
            key,
            store,
            rpc,
            rpc_timeout,
            seen: Mutex::default(),
            last_offered: Mutex::default(),
            metrics,
        }
    }

    pub fn address(&self) -> Address {
        self.key.address()
    }

    pub fn key(&self) -> &PayeeKey {
        &self.key
    }

    /// Counts one sponsored transaction's outcome.
    pub fn count(&self, outcome: &'static str) {
        self.metrics
            .transactions
            .get_or_create(&SponsorLabels { outcome })
            .inc();
    }

    /// Whether a challenge under `policy` may offer sponsorship now.
    pub fn offers(&self, policy: &SettlementPolicy) -> bool {
        let Some(sp) = &policy.sponsorship else {
            return false;
        };
        let seen = *self.seen.lock();
        seen.balance.is_some_and(|b| b >= U256::from(sp.min_balance))
            && seen.remaining.is_some_and(|r| r >= sp.max_total_fee)
    }

    /// Whether the last read found the fee-token balance at least the
    /// genome's `min_balance` (unknown: no).
    pub fn balance_ok(&self, sp: &SponsorPolicy) -> bool {
        self.seen
            .lock()
            .balance
            .is_some_and(|b| b >= U256::from(sp.min_balance))
    }

    /// The ledger key of the period `now` falls in.
    fn ledger_key(&self, sp: &SponsorPolicy, now: u64) -> String {
        format!(
            "sponsor:budget:{}:{}:{}",
            address_lower(&self.address()),
            sp.period_seconds,
            now / sp.period_seconds
        )
    }

    async fn read_ledger(&self, key: &str) -> Result<Ledger, StoreError> {
        let k = key.to_owned();
        let raw = self
            .store
            .run("sponsor_budget_read", move |s| async move { s.get(&k).await }, |_| "ok")
            .await?;
        match raw {
            None => Ok(Ledger::default()),
            Some(b) => Ledger::from_bytes(&b).map_err(|e| StoreError::Corrupt(format!("sponsorship budget: {e}"))),
        }
    }

    /// Changes the ledger at `key` with `change` (compare-and-set, retried
    /// on a concurrent change): the ledger written.
    async fn change<E: From<StoreError>>(
        &self,
        key: &str,
        ttl: Duration,
        change: impl Fn(&Ledger) -> Result<Ledger, E>,
    ) -> Result<Ledger, E> {
        let k = key.to_owned();
        let mut current = self
            .store
            .run("sponsor_budget_read", move |s| async move { s.get(&k).await }, |_| "ok")
            .await?;
        for _ in 0..CAS_ATTEMPTS {
            let ledger = match &current {
                None => Ledger::default(),
                Some(b) => {
                    Ledger::from_bytes(b).map_err(|e| StoreError::Corrupt(format!("sponsorship budget: {e}")))?
                }
            };
            let next = change(&ledger)?;
            let (k, expected, new) = (key.to_owned(), current.clone(), next.to_bytes());
            let cas = self
                .store
                .run(
                    "sponsor_budget_cas",
                    move |s| async move { s.compare_and_set(&k, expected.as_deref(), &new, ttl).await },
                    |c| if matches!(c, Cas::Set) { "set" } else { "conflict" },
                )
                .await?;
            match cas {
                Cas::Set => return Ok(next),
                Cas::Current(now) => current = now,
            }
        }
        Err(StoreError::Timeout.into())
    }

    /// Holds `max_fee` for transaction `id` of `sender` (valid until
    /// `valid_before`) from this period's budget; refused while another
    /// transaction of the same sender is held.
    pub async fn hold(
        &self,
        sp: &SponsorPolicy,
        id: &str,
        sender: &Address,
        max_fee: u128,
        valid_before: u64,
    ) -> Result<Held, HoldError> {
        let sender = address_lower(sender);
        let now = unix_now();
        let key = self.ledger_key(sp, now);
        let ttl = Duration::from_secs(sp.period_seconds.saturating_mul(2));
        // A hold nobody settles counts in full once the transaction can no
        // longer be mined (plus a margin for the node's clock).
        let until = valid_before.max(now) + 120;
        let ledger = self
            .change(&key, ttl, |l| {
                l.hold(id, &sender, max_fee, sp.budget, now, until)
                    .map_err(HoldError::from)
            })
            .await?;
        self.note_remaining(ledger.remaining(sp.budget, now), sp);
        Ok(Held {
            key,
            id: id.to_owned(),
            ttl,
        })
    }

    /// Replaces `held` by the fee paid on chain (`None`: it never reached
    /// the chain).
    pub async fn settle(&self, sp: &SponsorPolicy, held: &Held, fee: Option<u128>) -> Result<(), StoreError> {
        let now = unix_now();
        let ledger = self
            .change(&held.key, held.ttl, |l| {
                Ok::<_, StoreError>(l.settle(&held.id, fee, now))
            })
            .await?;
        if held.key == self.ledger_key(sp, now) {
            self.note_remaining(ledger.remaining(sp.budget, now), sp);
        }
        Ok(())
    }

    fn note_remaining(&self, remaining: u128, sp: &SponsorPolicy) {
        self.seen.lock().remaining = Some(remaining);
        self.metrics.budget_remaining.set(remaining as f64);
        let _ = sp;
    }

    /// Simulates a sponsored transaction (see [`Simulate`]): `Ok(false)`
    /// when it would revert or run out of gas.
    pub async fn simulate(&self, msg: Simulate) -> Result<bool, RpcError> {
        // Calls simulated one by one each see the sender's whole balance:
        // a batch must hold the sum of its transfers, token by token.
        if msg.calls.len() > 1 {
            let calls: Vec<(Address, &[u8])> = msg.calls.iter().map(|(t, d)| (*t, d.as_ref())).collect();
            for (token, total) in settlegate_rules::sponsor::transfer_totals(&calls) {
                if self.balance_of(msg.chain_id, token, msg.from).await? < total {
                    return Ok(false);
                }
            }
        }
        let wait = self.rpc_timeout * (2 + msg.calls.len() as u32);
        let sent = self.rpc.send(Traced::new(msg)).timeout(wait).await;
        match sent.unwrap_or(Err(RpcError::Timeout(wait))) {
            Ok(()) => Ok(true),
            Err(RpcError::Reverted(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the balance and the budget once, and updates what challenges
    /// offer. A failed read withdraws the offer until a read succeeds.
    pub async fn refresh(&self, policy: &SettlementPolicy) {
        let Some(sp) = &policy.sponsorship else {
            self.metrics.offered.set(0);
            return;
        };
        let balance = self.balance(policy.chain_id, sp.fee_token()).await;
        let now = unix_now();
        let remaining = self
            .read_ledger(&self.ledger_key(sp, now))
            .await
            .map(|l| l.remaining(sp.budget, now));
        // Why sponsorship is withdrawn, logged when it changes (not at
        // every read).
        let why = match (&balance, &remaining) {
            (Err(e), _) => Some(format!("the fee-token balance cannot be read ({})", e.cause())),
            (_, Err(e)) => Some(format!("the budget cannot be read ({})", e.cause())),
            (Ok(b), _) if *b < U256::from(sp.min_balance) => Some(format!(
                "the fee-token balance {b} is below min_balance {}",
                sp.min_balance
            )),
            (_, Ok(r)) if *r < sp.max_total_fee => Some(format!(
                "the budget has {r} left, less than one transaction at max_total_fee {}",
                sp.max_total_fee
            )),
            _ => None,
        };
        let (balance, remaining) = (balance.ok(), remaining.ok());
        *self.seen.lock() = Seen { balance, remaining };
        self.metrics
            .balance
            .set(balance.map_or(-1.0, |b| u128::try_from(b).map_or(f64::MAX, |v| v as f64)));
        self.metrics.budget_remaining.set(remaining.map_or(-1.0, |r| r as f64));
        let offered = self.offers(policy);
        self.metrics.offered.set(i64::from(offered));
        let was_offered = self.last_offered.lock().replace(offered);
        if was_offered != Some(offered) {
            match why {
                Some(why) => tracing::warn!(sponsor = %self.address(), why,
                    "fee sponsorship withdrawn: challenges do not offer it"),
                None => tracing::info!(sponsor = %self.address(), balance = ?balance, budget_remaining = ?remaining,
                    "fee sponsorship offered"),
            }
        }
    }

    async fn balance(&self, chain_id: u64, token: Address) -> Result<U256, RpcError> {
        self.balance_of(chain_id, token, self.address()).await
    }

    /// `token.balanceOf(who)` at the latest block.
    async fn balance_of(&self, chain_id: u64, token: Address, who: Address) -> Result<U256, RpcError> {
        let mut data = BALANCE_OF.to_vec();
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(who.as_slice());
        let wait = self.rpc_timeout * 3;
        let out = self
            .rpc
            .send(Traced::new(EthCall {
                to: token,
                data: Bytes::from(data),
                chain_id,
            }))
            .timeout(wait)
            .await
            .unwrap_or(Err(RpcError::Timeout(wait)))?;
        if out.len() != 32 {
            return Err(RpcError::Malformed(format!(
                "balanceOf returned {} bytes, not 32",
                out.len()
            )));
        }
        Ok(U256::from_be_slice(&out))
    }

    /// What `/readyz` shows.
    pub fn status(&self, policy: &SettlementPolicy) -> SponsorStatus {
        let seen = *self.seen.lock();
        SponsorStatus {
            address: address_lower(&self.address()),
            fee_token: policy.sponsorship.as_ref().map(|s| address_lower(&s.fee_token())),
            balance: seen.balance.map(|b| b.to_string()),
            budget_remaining: seen.remaining.map(|r| r.to_string()),
            offered: self.offers(policy),
        }
    }
}

/// Reads the sponsor's balance and budget every `every`, under the genome
/// active at each read, on the current arbiter.
pub fn watch(sponsor: Arc<Sponsor>, genome: settlegate_actors::genome_supervisor::ActiveGenome, every: Duration) {
    actix::spawn(async move {
        loop {
            let policy = genome.current().policy.clone();
            sponsor.refresh(&policy).await;
            tokio::time::sleep(every).await;
        }
    });
}
