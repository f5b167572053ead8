//! Pay-as-you-go channels (MPP `session`): carries out what [`step`]
//! decides, on the [`ChannelBook`] (state shared by every instance) and
//! the [`RpcPool`] (the channel's facts, the client's signed `open` and
//! `topUp` transactions).
//!
//! Guarantees:
//! - a voucher costs one signature check and one compare-and-set when
//!   the channel's facts are fresh: no JSON-RPC call. The check is a
//!   verification against the key of the channel's last accepted voucher
//!   when there is one (the same answer as a recovery, at half its cost),
//!   a recovery otherwise; only keys of accepted vouchers are kept, so a
//!   stranger's signatures cannot push the payer's key out;
//! - facts are read through the pool, one read per channel at a time in
//!   this process (the others wait for it and use it), and re-read on
//!   `open`, `topUp` and when they are older than `facts_ttl`;
//! - a client's `open` or `topUp` transaction is broadcast by one instance
//!   only (a reservation in the store per transaction hash); the others
//!   wait for its effect on chain;
//! - a request whose state change has begun runs to its end even if the
//!   caller goes away: a deduction is never written without its answer
//!   being decided;
//! - a denied payer's channel serves nothing and accepts no voucher, and
//!   its `open` or `topUp` is refused before its broadcast.

pub mod step;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use alloy_primitives::{Address, Bytes, keccak256};
use settlegate_actors::channels::{BookError, CLOSING_KEY, ChannelBook, channel_key, read_channel};
use settlegate_actors::ledger::deny::DenyList;
use settlegate_actors::rpc_pool::{Broadcast, Lookup, RpcError, RpcPool, Submitted, ask};
use settlegate_actors::store::{StoreError, unix_now};
use settlegate_rules::credential::TxHash;
use settlegate_rules::session::{
    Action, ChannelId, ChannelState, Domain, Expected, Open, SessionProblem, SignerKey, TopUp, Voucher, judge_open,
    judge_top_up,
};
use tracing::Instrument;

use step::Ctx;
pub use step::{Facts, SessionTerms, Verdict};

/// What a served session request tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub action: &'static str,
    pub channel: ChannelId,
    pub payer: Address,
    pub accepted: u128,
    pub spent: u128,
    /// This request's price, deducted.
    pub amount: u128,
    pub challenge_id: String,
    /// The `open` or `topUp` transaction this request broadcast or saw.
    pub tx_hash: Option<TxHash>,
}

/// Why a session request got no answer. Each is a 503; nothing deducted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionUnavailable {
    #[error(transparent)]
    Book(#[from] BookError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("the channel's stored state does not decode")]
    Corrupt,
    /// The `open` or `topUp` was broadcast (here or by another instance)
    /// and its effect is not on chain yet.
    #[error("the transaction is not on chain yet")]
    NotYetOnChain,
}

impl SessionUnavailable {
    pub fn cause(&self) -> &'static str {
        match self {
            SessionUnavailable::Book(e) => e.cause(),
            SessionUnavailable::Rpc(e) => e.cause(),
            SessionUnavailable::Corrupt => "channel_corrupt_state",
            SessionUnavailable::NotYetOnChain => "channel_not_on_chain_yet",
        }
    }
}

/// The answer to one session credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionAnswer {
    Served(Served),
    Refused(SessionProblem),
    Unavailable(SessionUnavailable),
}

/// One session credential to carry out.
#[derive(Clone, Debug)]
pub struct SessionCall {
    pub action: Action,
    pub challenge_id: String,
    pub terms: SessionTerms,
}

type FactsCell = Arc<tokio::sync::Mutex<Option<Facts>>>;

/// Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    pub book: ChannelBook,
    pub rpc: Addr<RpcPool>,
    pub facts_ttl: Duration,
    /// Bound on one JSON-RPC exchange through the pool.
    pub rpc_timeout: Duration,
    /// How long an `open` or `topUp` may take to show on chain.
    pub open_wait: Duration,
    facts: Arc<quick_cache::sync::Cache<String, FactsCell>>,
    /// Per channel: the key that signed its last voucher accepted here.
    signers: Arc<quick_cache::sync::Cache<String, SignerKey>>,
    /// Payers whose channels serve nothing.
    denied: DenyList,
}

impl Sessions {
    pub fn new(book: ChannelBook, rpc: Addr<RpcPool>, facts_ttl: Duration, rpc_timeout: Duration) -> Self {
        Sessions {
            book,
            rpc,
            facts_ttl,
            rpc_timeout,
            open_wait: rpc_timeout * 2,
            facts: Arc::new(quick_cache::sync::Cache::new(10_000)),
            signers: Arc::new(quick_cache::sync::Cache::new(10_000)),
            denied: DenyList::default(),
        }
    }

    /// Refuses the channels of the payers on `list` (and their `open` and
    /// `topUp` transactions, before any broadcast).
    pub fn denying(mut self, list: DenyList) -> Self {
        self.denied = list;
        self
    }

    /// [`Sessions::handle`], run to its end on this worker even if the
    /// caller goes away.
    pub async fn handle_to_end(&self, call: SessionCall) -> SessionAnswer {
        let me = self.clone();
        let span = tracing::Span::current();
        let task = actix_web::rt::spawn(async move { me.handle(call).await }.instrument(span));
        task.await
            .unwrap_or(SessionAnswer::Unavailable(SessionUnavailable::Book(BookError::Store(
                StoreError::Stopped,
            ))))
    }

    pub async fn handle(&self, call: SessionCall) -> SessionAnswer {
        let terms = call.terms;
        let served = match call.action {
            Action::Voucher(v) => self.voucher(&terms, &v, None, false).await,
            Action::Open(o) => self.open(&terms, &o).await,
            Action::TopUp(t) => self.top_up(&terms, &t).await,
            Action::Close(v) => self.voucher(&terms, &v, None, true).await,
        };
        match served {
            Ok(Ok((state, channel, tx_hash, action))) => SessionAnswer::Served(Served {
                action,
                channel,
                payer: state.chain.payer,
                accepted: state.accepted,
                spent: state.spent,
                amount: terms.price,
                challenge_id: call.challenge_id,
                tx_hash,
            }),
            Ok(Err(p)) => SessionAnswer::Refused(p),
            Err(e) => SessionAnswer::Unavailable(e),
        }
    }

    fn key(terms: &SessionTerms, channel: &ChannelId) -> String {
        channel_key(terms.chain_id, terms.escrow, channel)
    }

    /// A voucher (or a close): one compare-and-set when the facts are
    /// fresh; a facts read first otherwise.
    async fn voucher(
        &self,
        terms: &SessionTerms,
        v: &Voucher,
        fresh: Option<Facts>,
        close: bool,
    ) -> Result<Result<Done, SessionProblem>, SessionUnavailable> {
        let domain = Domain {
            chain_id: terms.chain_id,
            escrow: terms.escrow,
        };
        let key = Self::key(terms, &v.channel_id);
        let digest = domain.digest(v);
        let (signer, recovered) = match self.signers.get(&key) {
            Some(known) if v.signature.is_by(&digest, &known) => (known.address(), None),
            _ => match v.signature.recover_key(&digest) {
                Ok(k) => (k.address(), Some(k)),
                Err(p) => return Ok(Err(SessionProblem::InvalidSignature(p))),
            },
        };
        let mut facts = fresh;
        let mut read_once = fresh.is_some();
        let denied = self.denied.snapshot();
        loop {
            let now = unix_now();
            let ctx = Ctx {
                terms,
                now,
                facts_ttl: self.facts_ttl.as_secs(),
                facts: facts.as_ref(),
                denied: Some(&denied),
            };
            let verdict = self
                .book
                .update(&key, |bytes| {
                    if close {
                        step::on_close(bytes, &ctx, v, signer)
                    } else {
                        step::on_voucher(bytes, &ctx, v, signer)
                    }
                })
                .await?;
            match verdict {
                Verdict::NeedFacts if !read_once => {
                    facts = Some(self.facts(terms, &v.channel_id, &key, now).await?);
                    read_once = true;
                }
                // Facts just read are older than the ttl: a clock step.
                Verdict::NeedFacts => return Err(SessionUnavailable::NotYetOnChain),
                Verdict::Corrupt => return Err(SessionUnavailable::Corrupt),
                Verdict::Refused(p) => {
                    if close && matches!(p, SessionProblem::InsufficientBalance { .. }) {
                        // The close voucher was accepted: close it anyway.
                        self.mark_closing(&key).await?;
                    }
                    return Ok(Err(p));
                }
                Verdict::Served(state) => {
                    if let Some(k) = recovered {
                        self.signers.insert(key.clone(), k);
                    }
                    if close {
                        self.mark_closing(&key).await?;
                    }
                    let action = if close { "close" } else { "voucher" };
                    return Ok(Ok((*state, v.channel_id, None, action)));
                }
            }
        }
    }

    async fn mark_closing(&self, key: &str) -> Result<(), SessionUnavailable> {
        Ok(self.book.mark(CLOSING_KEY, key).await?)
    }

    /// An `open`: the transaction judged, broadcast once, its channel read
    /// on chain and checked, then its first voucher.
    async fn open(&self, terms: &SessionTerms, o: &Open) -> Result<Result<Done, SessionProblem>, SessionUnavailable> {
        let expected = expected(terms);
        let opened = match judge_open(&o.transaction, o, &expected) {
            Ok(f) => f,
            Err(p) => return Ok(Err(p)),
        };
        // A denied payer's deposit is never moved through this service.
        if self.denied.contains(&opened.payer) {
            return Ok(Err(SessionProblem::PayerDenied));
        }
        let hash = TxHash::from(keccak256(&o.transaction));
        if let Err(p) = self.broadcast_once(terms, &o.transaction, &hash).await? {
            return Ok(Err(p));
        }
        if let Err(p) = self.mined(terms, &hash).await? {
            return Ok(Err(p));
        }
        let key = Self::key(terms, &o.channel_id);
        let facts = self
            .facts_until(terms, &o.channel_id, &key, |c| c.exists() || c.finalized)
            .await?;
        let chain = &facts.chain;
        if chain.authorized_signer != opened.authorized_signer {
            return Ok(Err(SessionProblem::AuthorizedSignerMismatch));
        }
        if chain.deposit < terms.min_deposit {
            return Ok(Err(SessionProblem::DepositTooLow {
                deposit: chain.deposit,
                min: terms.min_deposit,
            }));
        }
        Ok(self
            .voucher(terms, &o.voucher, Some(facts), false)
            .await?
            .map(|(s, c, _, _)| (s, c, Some(hash), "open")))
    }

    /// A `topUp`: judged, broadcast once, the new deposit read, then the
    /// request served from the balance if it covers the price.
    async fn top_up(
        &self,
        terms: &SessionTerms,
        t: &TopUp,
    ) -> Result<Result<Done, SessionProblem>, SessionUnavailable> {
        let expected = expected(terms);
        let payer = match judge_top_up(&t.transaction, &t.channel_id, t.additional_deposit, &expected) {
            Ok(payer) => payer,
            Err(p) => return Ok(Err(p)),
        };
        if self.denied.contains(&payer) {
            return Ok(Err(SessionProblem::PayerDenied));
        }
        let key = Self::key(terms, &t.channel_id);
        // Only the channel's payer can top it up (the escrow reverts anyone
        // else's): refused before a doomed broadcast.
        let since = unix_now().saturating_sub(self.facts_ttl.as_secs());
        let known = self.facts(terms, &t.channel_id, &key, since).await?.chain;
        if known.finalized {
            return Ok(Err(SessionProblem::ChannelFinalized));
        }
        if !known.exists() {
            return Ok(Err(SessionProblem::ChannelNotFound));
        }
        if known.payer != payer {
            return Ok(Err(SessionProblem::SignerMismatch {
                signer: payer,
                expected: known.payer,
            }));
        }
        let hash = TxHash::from(keccak256(&t.transaction));
        // Mined before this request brought it: public, so it proves
        // nothing about who presents it (nodes answer a mined
        // transaction's broadcast with its receipt, as if it were new).
        let mined_before = self.receipt(terms, &hash).await?.is_some();
        let ours = match self.broadcast_once(terms, &t.transaction, &hash).await? {
            Ok(ours) => ours && !mined_before,
            Err(p) => return Ok(Err(p)),
        };
        // Its receipt, not a deposit computed from what the book held: a
        // topUp presented again (a retry, a lost reply) adds nothing more.
        if let Err(p) = self.mined(terms, &hash).await? {
            return Ok(Err(p));
        }
        let facts = self.facts_until(terms, &t.channel_id, &key, |_| true).await?;
        let denied = self.denied.snapshot();
        let ctx = Ctx {
            terms,
            now: unix_now(),
            facts_ttl: self.facts_ttl.as_secs(),
            facts: Some(&facts),
            denied: Some(&denied),
        };
        match self
            .book
            .update(&key, |bytes| step::on_top_up(bytes, &ctx, ours))
            .await?
        {
            Verdict::Served(state) => Ok(Ok((*state, t.channel_id, Some(hash), "topUp"))),
            Verdict::Refused(p) => Ok(Err(p)),
            Verdict::Corrupt => Err(SessionUnavailable::Corrupt),
            Verdict::NeedFacts => Err(SessionUnavailable::NotYetOnChain),
        }
    }

    /// Broadcasts `raw` unless another request (of any instance) did in the
    /// last minute; a node's refusal is the client's problem (402). `true`:
    /// this request brought the transaction to the node first (it was not
    /// public before).
    async fn broadcast_once(
        &self,
        terms: &SessionTerms,
        raw: &Bytes,
        hash: &TxHash,
    ) -> Result<Result<bool, SessionProblem>, SessionUnavailable> {
        let reservation = format!("broadcast:{hash}");
        let mine = self.book.reserve(&reservation, Duration::from_secs(60)).await?;
        if !mine {
            return Ok(Ok(false));
        }
        let broadcast = Broadcast {
            raw: raw.clone(),
            chain_id: terms.chain_id,
        };
        let sent = ask(&self.rpc, broadcast, self.open_wait).await;
        let release = || self.book.release(&reservation);
        match sent {
            Ok(Submitted::Mined | Submitted::Accepted) => Ok(Ok(true)),
            // Known already: public before this request brought it.
            Ok(Submitted::Known) => Ok(Ok(false)),
            // A transaction mined already (broadcast earlier, by us or by
            // the client) is refused again ("nonce too low"): its receipt
            // says it was broadcast.
            Ok(Submitted::Rejected(_)) if matches!(self.receipt(terms, hash).await, Ok(Some(_))) => {
                release().await;
                Ok(Ok(false))
            }
            Ok(Submitted::Rejected(why)) => {
                tracing::info!(%hash, why = %why.chars().take(200).collect::<String>(), "the node refused a session transaction");
                release().await;
                Ok(Err(SessionProblem::TxRejected))
            }
            Err(e) => {
                release().await;
                Err(e.into())
            }
        }
    }

    /// Whether `hash` is mined: `Some(true)` succeeded, `Some(false)`
    /// reverted, `None` not known to the node.
    async fn receipt(&self, terms: &SessionTerms, hash: &TxHash) -> Result<Option<bool>, SessionUnavailable> {
        let lookup = Lookup {
            hash: *hash,
            chain_id: terms.chain_id,
            need_head: false,
        };
        let facts = ask(&self.rpc, lookup, self.rpc_timeout * 2).await?;
        Ok(facts
            .receipt
            .map(|r| r.status.is_some_and(|s| s == alloy_primitives::U64::from(1))))
    }

    /// Waits (at most `open_wait`) for the `open` or `topUp` transaction
    /// `hash` to be mined; a reverted one is the client's problem (402).
    async fn mined(
        &self,
        terms: &SessionTerms,
        hash: &TxHash,
    ) -> Result<Result<(), SessionProblem>, SessionUnavailable> {
        let until = Instant::now() + self.open_wait;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.receipt(terms, hash).await? {
                Some(true) => return Ok(Ok(())),
                Some(false) => {
                    tracing::info!(%hash, "a session transaction reverted");
                    return Ok(Err(SessionProblem::TxReverted));
                }
                None if Instant::now() + pause > until => return Err(SessionUnavailable::NotYetOnChain),
                None => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// The channel's facts, read once per channel at a time in this
    /// process: a task that waited for another's read uses it when it is
    /// newer than `since`.
    async fn facts(
        &self,
        terms: &SessionTerms,
        channel: &ChannelId,
        key: &str,
        since: u64,
    ) -> Result<Facts, SessionUnavailable> {
        let cell = match self.facts.get(key) {
            Some(c) => c,
            None => {
                let fresh: FactsCell = Arc::default();
                self.facts
                    .get_or_insert_with(key, || Ok::<_, std::convert::Infallible>(fresh))
                    .unwrap_or_else(|never| match never {})
            }
        };
        let mut held = cell.lock().await;
        if let Some(f) = *held
            && f.read_at >= since
        {
            return Ok(f);
        }
        let f = self.read_chain(terms, channel).await?;
        *held = Some(f);
        Ok(f)
    }

    async fn read_chain(&self, terms: &SessionTerms, channel: &ChannelId) -> Result<Facts, SessionUnavailable> {
        let read_at = unix_now();
        let chain = read_channel(&self.rpc, terms.chain_id, terms.escrow, channel, self.rpc_timeout * 2).await?;
        Ok(Facts { chain, read_at })
    }

    /// Facts read until `done` holds of them (the effect of a transaction
    /// just broadcast), for at most `open_wait`.
    async fn facts_until(
        &self,
        terms: &SessionTerms,
        channel: &ChannelId,
        key: &str,
        done: impl Fn(&settlegate_rules::session::OnChain) -> bool,
    ) -> Result<Facts, SessionUnavailable> {
        let until = Instant::now() + self.open_wait;
        let mut pause = Duration::from_millis(50);
        loop {
            let f = self.facts(terms, channel, key, unix_now() + 1).await?;
            if done(&f.chain) {
                return Ok(f);
            }
            if Instant::now() + pause > until {
                return Err(SessionUnavailable::NotYetOnChain);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// The state after a served request, its channel, the transaction it
/// carried and the action's name.
type Done = (ChannelState, ChannelId, Option<TxHash>, &'static str);

fn expected(terms: &SessionTerms) -> Expected {
    Expected {
        chain_id: terms.chain_id,
        escrow: terms.escrow,
        payee: terms.payee,
        token: terms.token,
        min_deposit: terms.min_deposit,
    }
}
