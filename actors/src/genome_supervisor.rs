//! `GenomeSupervisor`: owns the active genome.
//!
//! At boot, [`GenomeSupervisor::boot`] verifies the genome file *before*
//! anything else starts; the caller stops the actor system on failure, so a
//! bad genome never gets a socket. Afterwards the actor re-verifies the file
//! on SIGHUP and on an interval:
//!
//! - a valid genome with a strictly greater version is swapped in atomically
//!   (readers see the old or the new one, never a mix);
//! - an invalid, older or equal-version genome is refused: the verified one
//!   in memory keeps serving, and the refusal is logged and counted;
//! - an expired active genome makes [`ActiveGenome::usable`] fail, so
//!   verifications answer 503 (fail closed) until a valid newer one arrives.
//!
//! Messages: [`Reload`]. Guarantee: the genome readers see has passed every
//! check of `settlegate_rules::genome` against the pinned keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use settlegate_rules::GenomeError;
use settlegate_rules::genome::{MAX_GENOME_BYTES, ParsedGenome, TrustRoot, VerifiedGenome};
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::replay::{RECORD_TTL_MARGIN, record_ttl};
use settlegate_rules::seed::SeedVars;
use time::OffsetDateTime;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::Instrument;

/// Where the genome comes from and what it is checked against.
#[derive(Clone, Debug)]
pub struct GenomeSource {
    pub path: PathBuf,
    /// Root for `build_manifest` paths.
    pub manifest_root: PathBuf,
    pub trust: TrustRoot,
    /// The seed's `TEMPO_*` variables, checked against every genome loaded.
    pub seed: SeedVars,
    /// `replay.min_record_ttl_seconds`: a genome whose age window (with
    /// skew and margin) outlasts it is refused, at boot and on reload.
    /// `None`: not checked (`genome verify` without the service's settings).
    pub record_floor: Option<Duration>,
}

impl GenomeSource {
    /// Reads and fully verifies the file. Blocking (file I/O): call it at
    /// boot or from a blocking task, never on an arbiter.
    pub fn load(&self, now: OffsetDateTime) -> Result<VerifiedGenome, GenomeError> {
        let bytes = read_limited(&self.path)?;
        let genome =
            ParsedGenome::parse(&bytes)?.verify(&self.trust, now, |rel| std::fs::read(self.manifest_root.join(rel)))?;
        self.seed.check_against(&genome.policy)?;
        if let Some(floor) = self.record_floor {
            check_record_floor(&genome.policy, floor)?;
        }
        Ok(genome)
    }
}

/// A replay record lives as long as the genome in force when it was
/// written allows; a later genome with a wider age window would accept
/// again a payment whose record has expired. Every accepted genome's window
/// (plus twice the skew and the margin) therefore fits in the floor, the
/// least any record lives: then every record outlives every window.
/// `GENOME_POLICY_CONFLICT`: the policy is valid, the configuration
/// contradicts it.
pub fn check_record_floor(policy: &SettlementPolicy, floor: Duration) -> Result<(), GenomeError> {
    let needed = record_ttl(policy, Duration::ZERO);
    if needed > floor {
        return Err(GenomeError::PolicyConflict(format!(
            "settlement.max_age_seconds {} (+ 2 x clock_skew_seconds {} + {} s) outlasts \
             replay.min_record_ttl_seconds {}: a consumed payment's record could expire while the payment \
             is still acceptable; raise the floor to at least {} or narrow the window",
            policy.max_age_seconds,
            policy.clock_skew_seconds,
            RECORD_TTL_MARGIN.as_secs(),
            floor.as_secs(),
            needed.as_secs()
        )));
    }
    Ok(())
}

fn read_limited(path: &std::path::Path) -> Result<Vec<u8>, GenomeError> {
    use std::io::{ErrorKind, Read};
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => GenomeError::Missing(format!("no genome file at {shown}")),
        _ => GenomeError::Unreadable(format!("{shown}: {e}")),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_GENOME_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| GenomeError::Unreadable(format!("{shown}: {e}")))?;
    // ParsedGenome::parse refuses anything over the limit.
    Ok(bytes)
}

/// The shared, lock-free view of the active genome. Cloned into every
/// handler; only the supervisor swaps it.
#[derive(Clone)]
pub struct ActiveGenome(Arc<ArcSwap<VerifiedGenome>>);

impl ActiveGenome {
    pub fn new(genome: VerifiedGenome) -> Self {
        ActiveGenome(Arc::new(ArcSwap::from_pointee(genome)))
    }

    /// The active genome, whether or not it is still within its window.
    pub fn current(&self) -> Arc<VerifiedGenome> {
        self.0.load_full()
    }

    /// The active genome if it may govern a decision at `now`.
    pub fn usable(&self, now: OffsetDateTime) -> Result<Arc<VerifiedGenome>, GenomeError> {
        let g = self.current();
        g.check_validity(now)?;
        Ok(g)
    }

    fn swap(&self, genome: VerifiedGenome) {
        self.0.store(Arc::new(genome));
    }
}

/// What triggered a reload; it decides how loudly a refusal is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadCause {
    Signal,
    Interval,
    Request,
}

/// The result of a successful reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file holds the genome already active.
    Unchanged,
    Swapped {
        from: String,
        to: String,
    },
}

/// Re-verify the genome file now.
#[derive(Message)]
#[rtype(result = "Result<ReloadOutcome, GenomeError>")]
pub struct Reload(pub ReloadCause);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: &'static str,
    pub code: &'static str,
}

/// `settlegate_genome_reloads_total{outcome, code}`.
pub type ReloadCounter = Family<ReloadLabels, Counter>;

pub struct GenomeSupervisor {
    source: Arc<GenomeSource>,
    active: ActiveGenome,
    interval: Option<Duration>,
    hangup: Option<Signal>,
    reloads: ReloadCounter,
    /// The last refusal logged for an interval check, so an unchanged bad
    /// file is logged once rather than every interval.
    last_refusal: Option<String>,
    expiry_logged: bool,
}

impl GenomeSupervisor {
    /// Verifies the genome and, only if it passes, returns the supervisor
    /// ready to start and the shared view of its genome. Must be called
    /// inside the actix system (the SIGHUP handler is installed here, before
    /// any socket exists, so an early SIGHUP cannot kill the process).
    pub fn boot(
        source: GenomeSource,
        interval: Option<Duration>,
        reloads: ReloadCounter,
    ) -> Result<(Self, ActiveGenome), GenomeError> {
        let genome = source.load(OffsetDateTime::now_utc())?;
        let hangup = signal(SignalKind::hangup())
            .map_err(|e| GenomeError::Unreadable(format!("cannot install the SIGHUP handler: {e}")))?;
        let active = ActiveGenome::new(genome);
        let supervisor = GenomeSupervisor {
            source: Arc::new(source),
            active: active.clone(),
            interval,
            hangup: Some(hangup),
            reloads,
            last_refusal: None,
            expiry_logged: false,
        };
        Ok((supervisor, active))
    }

    /// Decides whether `candidate` replaces the active genome.
    fn accept(&self, candidate: VerifiedGenome) -> Result<ReloadOutcome, GenomeError> {
        let active = self.active.current();
        if candidate.id == active.id {
            return Ok(ReloadOutcome::Unchanged);
        }
        if candidate.version <= active.version {
            return Err(GenomeError::Rollback(format!(
                "version {} is not greater than the active version {}",
                candidate.version, active.version
            )));
        }
        let outcome = ReloadOutcome::Swapped {
            from: active.id.clone(),
            to: candidate.id.clone(),
        };
        self.active.swap(candidate);
        Ok(outcome)
    }

    fn record(&mut self, cause: ReloadCause, result: &Result<ReloadOutcome, GenomeError>) {
        let path = self.source.path.display().to_string();
        match result {
            Ok(ReloadOutcome::Unchanged) => {
                self.reloads
                    .get_or_create(&ReloadLabels {
                        outcome: "unchanged",
                        code: "",
                    })
                    .inc();
                self.last_refusal = None;
                tracing::debug!(?cause, %path, "genome unchanged");
            }
            Ok(ReloadOutcome::Swapped { from, to }) => {
                self.reloads
                    .get_or_create(&ReloadLabels {
                        outcome: "swapped",
                        code: "",
                    })
                    .inc();
                self.last_refusal = None;
                self.expiry_logged = false;
                let g = self.active.current();
                tracing::info!(?cause, %path, from_genome_id = %from, genome_id = %to, version = %g.version, "genome swapped in");
            }
            Err(e) => {
                self.reloads
                    .get_or_create(&ReloadLabels {
                        outcome: "refused",
                        code: e.code(),
                    })
                    .inc();
                let key = format!("{}: {e}", e.code());
                if cause != ReloadCause::Interval || self.last_refusal.as_deref() != Some(key.as_str()) {
                    tracing::error!(
                        ?cause, %path, code = e.code(), error = %e,
                        genome_id = %self.active.current().id,
                        "genome reload refused; the verified genome in memory keeps serving"
                    );
                }
                self.last_refusal = Some(key);
            }
        }
    }

    fn check_expiry(&mut self) {
        let g = self.active.current();
        match g.check_validity(OffsetDateTime::now_utc()) {
            Err(e) if !self.expiry_logged => {
                self.expiry_logged = true;
                tracing::error!(genome_id = %g.id, code = e.code(), error = %e,
                    "the active genome is no longer valid; verifications fail closed (503) until a newer genome is loaded");
            }
            _ => {}
        }
    }
}

impl Actor for GenomeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(mut hangup) = self.hangup.take() {
            let addr = ctx.address();
            ctx.spawn(
                async move {
                    while hangup.recv().await.is_some() {
                        addr.do_send(Reload(ReloadCause::Signal));
                    }
                }
                .into_actor(self),
            );
        }
        if let Some(every) = self.interval {
            ctx.run_interval(every, |act, ctx| {
                act.check_expiry();
                ctx.notify(Reload(ReloadCause::Interval));
            });
        }
        let g = self.active.current();
        tracing::info!(genome_id = %g.id, name = %g.name, version = %g.version, "genome supervisor started");
    }
}

impl Handler<Reload> for GenomeSupervisor {
    type Result = AtomicResponse<Self, Result<ReloadOutcome, GenomeError>>;

    /// Reads and verifies on a blocking thread, then decides and swaps on the
    /// actor. `AtomicResponse` keeps reloads one at a time, so two SIGHUPs
    /// cannot race a rollback check.
    fn handle(&mut self, Reload(cause): Reload, _ctx: &mut Self::Context) -> Self::Result {
        let source = self.source.clone();
        // A reload is its own trace (no request asked for it).
        let span = tracing::info_span!(
            target: crate::TRACE_TARGET,
            "genome_reload",
            otel.name = "GenomeSupervisor Reload",
            cause = ?cause,
            outcome = tracing::field::Empty,
        );
        let load = async move {
            tokio::task::spawn_blocking(move || source.load(OffsetDateTime::now_utc()))
                .await
                .unwrap_or_else(|e| Err(GenomeError::Unreadable(format!("genome load task failed: {e}"))))
        }
        .instrument(span.clone());
        AtomicResponse::new(Box::pin(load.into_actor(self).map(move |loaded, act, _| {
            let result = loaded.and_then(|g| act.accept(g));
            act.record(cause, &result);
            span.record(
                "outcome",
                match &result {
                    Ok(o) => format!("{o:?}"),
                    Err(e) => e.code().to_owned(),
                },
            );
            result
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_age: u64, skew: u64) -> SettlementPolicy {
        let mut p = SettlementPolicy::from_value(Some(&serde_json::json!({
            "chain_id": 42431,
            "realm": "r",
            "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
            "assets": ["0x20c0000000000000000000000000000000000001"],
            "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1"}
        })))
        .unwrap();
        p.max_age_seconds = max_age;
        p.clock_skew_seconds = skew;
        p
    }

    #[test]
    fn a_window_must_fit_in_the_record_floor() {
        let floor = Duration::from_secs(420);
        // 300 + 2 x 30 + 60 = 420: exactly fits
        assert!(check_record_floor(&policy(300, 30), floor).is_ok());
        let e = check_record_floor(&policy(301, 30), floor).unwrap_err();
        assert_eq!(e.code(), "GENOME_POLICY_CONFLICT");
        assert!(e.to_string().contains("at least 421"), "{e}");
        assert!(check_record_floor(&policy(7 * 86_400, 300), Duration::from_secs(86_400)).is_err());
    }
}
