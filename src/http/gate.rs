//! What `POST /v1/verify` and `GET /v1/authorize` share: from a credential
//! (either scheme), the resource asked for and an optional
//! `Idempotency-Key`, to an [`Outcome`] under the genome read once.
//!
//! A request with an `Idempotency-Key` is summed up in one
//! [`RequestDigest`]: scheme, full target, body digest, the challenge a
//! `Payment` credential answers, and the key. Only a request with the same
//! digest can be an idempotent retry; the key must be long enough not to
//! be guessed ([`valid_idempotency_key`]).
//!
//! A `Payment` credential is checked here before anything touches the
//! chain, in the Machine Payments Protocol's order: it parses
//! (`malformed-credential`), its challenge was minted by this service for
//! this route's price and realm (`invalid-challenge`) and has not expired
//! (`payment-expired`), and its `source` names the policy's chain. Then
//! both schemes take the same settlement flow (`settle`), so one payment is
//! consumed once whichever scheme presents it.
//!
//! A route priced at zero takes a `proof` credential and nothing else (a
//! transfer, whichever scheme, is `proof_required`; a proof for a priced
//! route `proof_unexpected`): its signature must recover its `source` for
//! the challenge it echoes, and the challenge id is then claimed once in
//! the replay store, as a payment's hash is ([`proof`]).
//!
//! A payer on the deny list (the ledger's `payer_denials`) is refused
//! `payer_denied` before anything is consumed: a charge once the chain
//! says who paid (`settle`), a proof once its signature names its source,
//! a session on its channel's payer (`session`).

use actix_web::http::header::HeaderMap;
use alloy_primitives::{Address, U256};
use settlegate_actors::Traced;
use settlegate_actors::replay_guard::{Consume, Consumed, StoreError};
use settlegate_rules::accept_payment::AcceptPayment;
use settlegate_rules::credential::Credential;
use settlegate_rules::credential::TxHash;
use settlegate_rules::genome::VerifiedGenome;
use settlegate_rules::mpp::{self, AnyCredential, Binding, ChallengeProblem, Payload};
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::replay::{
    MAX_IDEMPOTENCY_KEY, MIN_IDEMPOTENCY_KEY, RECORD_TTL_MARGIN, ReplayRecord, RequestDigest, RetryIdentity, Scheme,
    Settlement, record_ttl, valid_body_digest, valid_idempotency_key,
};
use settlegate_rules::settlement::{PayerRule, Payment, Reason};
use settlegate_rules::target::normalise;
use time::OffsetDateTime;

use super::problem::ApiError;
use super::sponsor;
use super::{AppState, Summary};
use crate::outcome::{Challenge, Denial, Outcome, Proven, Unavailable};
use crate::session::{SessionAnswer, SessionCall};
use crate::settle::SettleRequest;

const MAX_RESOURCE: usize = 2048;

/// One payment check, as asked.
pub struct Asked {
    pub credential: Option<Credential>,
    /// `METHOD /path`: picks the genome's price rule.
    pub resource: Option<String>,
    /// `METHOD /path?query` as the client sent it: what an idempotent
    /// retry must repeat (`resource` may be normalised for pricing).
    pub target: Option<String>,
    /// The digest of the request's body, when the caller gives one.
    pub body_digest: Option<String>,
    pub idempotency_key: Option<String>,
    /// Why a `Payment` credential could not even be split off its scheme
    /// (empty, too long): `malformed-credential`.
    pub malformed: Option<String>,
    /// The genome capability the endpoint needs.
    pub action: &'static str,
}

/// Decides `asked`. `Err` only for a capability the genome denies (403).
pub async fn decide(state: &AppState, asked: Asked) -> Result<(Summary, Outcome), ApiError> {
    // The genome is read once: the challenge and the verdict come from the
    // same, valid policy. An expired genome hands out nothing, not even a
    // challenge.
    let now = OffsetDateTime::now_utc();
    let genome = match state.genome.usable(now) {
        Ok(g) => g,
        Err(e) => return Ok((Summary::default(), Outcome::Unavailable(Unavailable::Genome(e)))),
    };
    if !genome.allows(asked.action) {
        return Err(ApiError::CapabilityDenied(asked.action));
    }
    let policy = &genome.policy;
    let price = policy.price_for(asked.resource.as_deref());
    let mut challenge = Challenge::new(policy, &price);
    // The route may offer sponsorship (the genome), and the sponsor can pay
    // now (its key, balance and budget): else the challenge does not offer
    // it, and a plain charge still works.
    // A free route is answered by a `proof`: nothing to sponsor.
    let route_sponsored = policy.fee_payer_for(asked.resource.as_deref()) && !challenge.is_free();
    challenge.fee_payer = route_sponsored && state.sponsor.as_ref().is_some_and(|s| s.offers(policy));
    let mut summary = Summary {
        genome_id: Some(genome.id.clone()),
        ..Summary::default()
    };
    let digest = |scheme: Scheme, challenge_id: Option<&str>| {
        asked.idempotency_key.as_deref().map(|key| {
            RequestDigest::of(&RetryIdentity {
                scheme,
                target: asked.target.as_deref(),
                body_digest: asked.body_digest.as_deref(),
                challenge_id,
                key,
            })
        })
    };
    let denied = |s: &Summary, d: Denial, c: Challenge| Ok((s.clone(), Outcome::Denied(d, c)));

    if let Some(why) = asked.malformed {
        return denied(&summary, Denial::MalformedCredential(why), challenge);
    }
    let request = match asked.credential {
        None => {
            return denied(
                &summary,
                Denial::PaymentRequired(
                    "no payment credential: pay, then present it with the Payment or Tempo scheme".into(),
                ),
                challenge,
            );
        }
        Some(Credential::Tempo(_)) if challenge.is_free() => {
            return denied(&summary, Denial::Failed(Reason::ProofRequired), challenge);
        }
        Some(Credential::Tempo(_)) if !challenge.splits.is_empty() => {
            return denied(
                &summary,
                Denial::PaymentRequired(
                    "this route's price is split between recipients, which a Tempo challenge cannot say; \
                     pay with the Payment scheme"
                        .into(),
                ),
                challenge,
            );
        }
        Some(Credential::Tempo(_)) if !policy.schemes.tempo => {
            return denied(
                &summary,
                Denial::PaymentRequired(
                    "this policy does not accept the Tempo scheme; pay with the Payment scheme".into(),
                ),
                challenge,
            );
        }
        Some(Credential::Payment(_)) if !policy.schemes.payment => {
            return denied(
                &summary,
                Denial::PaymentRequired(
                    "this policy does not accept the Payment scheme; pay with the Tempo scheme".into(),
                ),
                challenge,
            );
        }
        Some(Credential::Tempo(hash)) => SettleRequest {
            hash,
            scheme: Scheme::Tempo,
            request_digest: digest(Scheme::Tempo, None),
            resource: asked.resource,
            binding: None,
            payer: PayerRule::Any,
            submit: None,
            sponsored: None,
        },
        Some(Credential::Payment(encoded)) => {
            let cred = match mpp::parse_any_credential(&encoded) {
                Ok(AnyCredential::Charge(c)) if challenge.charge => c,
                Ok(AnyCredential::Charge(_)) => {
                    return denied(
                        &summary,
                        Denial::PaymentRequired(
                            "this policy does not offer the charge intent; pay with a session".into(),
                        ),
                        challenge,
                    );
                }
                Ok(AnyCredential::Session {
                    challenge: echo,
                    action,
                    source,
                }) => {
                    let outcome = session(state, &challenge, echo, action, source, now).await;
                    return Ok((summary, outcome.unwrap_or_else(|d| Outcome::Denied(d, challenge))));
                }
                Err(e) => return denied(&summary, Denial::MalformedCredential(e.to_string()), challenge),
            };
            summary.tx_hash = cred.payload.tx_hash().map(|h| h.to_string());
            // A sponsored challenge is pinned as issued (feePayer, pull mode
            // only), and only where the genome lets the route sponsor.
            let sponsored = mpp::echoed_fee_payer(&cred.challenge);
            if sponsored && !route_sponsored {
                tracing::debug!("a sponsored challenge for a route that does not sponsor");
                return denied(&summary, Denial::Failed(Reason::ChallengeInvalid), challenge);
            }
            match mpp::check_challenge(
                &cred.challenge,
                &state.challenges.secrets,
                &policy.realm,
                &challenge.charge_request_for(sponsored),
                challenge.max_lifetime(),
                now,
            ) {
                Ok(()) => {}
                Err(ChallengeProblem::Invalid(why)) => {
                    tracing::debug!(why, "Payment credential with an invalid challenge");
                    return denied(&summary, Denial::Failed(Reason::ChallengeInvalid), challenge);
                }
                Err(ChallengeProblem::Expired) => {
                    return denied(&summary, Denial::Failed(Reason::ChallengeExpired), challenge);
                }
            }
            let is_proof = matches!(cred.payload, Payload::Proof(_));
            if is_proof != challenge.is_free() {
                let reason = if is_proof {
                    Reason::ProofUnexpected
                } else {
                    Reason::ProofRequired
                };
                return denied(&summary, Denial::Failed(reason), challenge);
            }
            let Some(hash) = cred.payload.tx_hash() else {
                let outcome = proof(state, &genome, asked.resource, &cred, challenge.asset, now).await;
                return Ok((summary, outcome.unwrap_or_else(|d| Outcome::Denied(d, challenge))));
            };
            let payer = match cred.source {
                Some(s) if s.chain_id != policy.chain_id => {
                    return denied(&summary, Denial::Failed(Reason::WrongChain), challenge);
                }
                Some(s) => PayerRule::Is(s.address),
                None => PayerRule::Sender,
            };
            if sponsored {
                match sponsor::request(state, policy, &cred, payer, now) {
                    Ok(mut request) => {
                        request.request_digest = digest(Scheme::Payment, Some(&cred.challenge.id));
                        request.resource = asked.resource;
                        request
                    }
                    Err(d) => return denied(&summary, d, challenge),
                }
            } else {
                let submit = match cred.payload {
                    Payload::Transaction(raw) => Some(raw),
                    Payload::Hash(_) | Payload::Proof(_) => None,
                };
                SettleRequest {
                    hash,
                    scheme: Scheme::Payment,
                    // The challenge id binds a retry to the payer: whoever
                    // watches the chain sees the hash, never the challenge.
                    request_digest: digest(Scheme::Payment, Some(&cred.challenge.id)),
                    resource: asked.resource,
                    binding: Some(Binding::new(&policy.realm, &cred.challenge.id)),
                    payer,
                    submit,
                    sponsored: None,
                }
            }
        }
    };
    summary.tx_hash = Some(request.hash.to_string());
    let outcome = state
        .settler
        .settle_on_actors(genome.clone(), price, request, challenge)
        .await;
    Ok((summary, outcome))
}

/// A free route's `proof` credential (its challenge already checked): the
/// `source` on the policy's chain, the signature recovering it for this
/// challenge, then the challenge id claimed once in the replay store,
/// across instances. `Err`: a denial that claimed nothing.
async fn proof(
    state: &AppState,
    genome: &VerifiedGenome,
    resource: Option<String>,
    cred: &mpp::PaymentCredential,
    asset: Address,
    now: OffsetDateTime,
) -> Result<Outcome, Denial> {
    let policy = &genome.policy;
    let (Payload::Proof(signature), Some(source)) = (&cred.payload, cred.source) else {
        return Err(Denial::MalformedCredential(
            "a proof credential needs its signature and source".into(),
        ));
    };
    if source.chain_id != policy.chain_id {
        return Err(Denial::Failed(Reason::WrongChain));
    }
    let challenge_id = &cred.challenge.id;
    if let Err(why) = settlegate_rules::proof::verify(
        signature,
        source.address,
        policy.chain_id,
        challenge_id,
        &cred.challenge.realm,
    ) {
        tracing::debug!(%why, "proof credential refused");
        return Err(Denial::Failed(Reason::ProofInvalid));
    }
    // The source signed: it is the payer of this free request. Denied, its
    // challenge is not claimed (usable if it is allowed again in time).
    if state.settler.denied.contains(&source.address) {
        return Err(Denial::Failed(Reason::PayerDenied));
    }
    let key = settlegate_rules::proof::replay_key(challenge_id);
    let payment = Payment {
        payer: source.address,
        recipient: policy.recipient,
        asset,
        amount: U256::ZERO,
        memo: None,
        chain_id: policy.chain_id,
        block_number: 0,
        block_timestamp: now.unix_timestamp().max(0) as u64,
    };
    let record = proof_record(
        policy,
        &genome.id,
        key,
        &payment,
        resource,
        state.settler.min_record_ttl,
    );
    let claimed = state.replay.send(Traced::new(Consume { hash: key, record })).await;
    match claimed {
        Ok(Ok(Consumed::Inserted)) => Ok(Outcome::Proven(Proven {
            payer: source.address,
            challenge_id: challenge_id.clone(),
            chain_id: policy.chain_id,
            genome_id: genome.id.clone(),
        })),
        Ok(Ok(Consumed::Existing(_))) => Err(Denial::Replayed),
        Ok(Err(e)) => Ok(Outcome::Unavailable(Unavailable::Store(e))),
        Err(_) => Ok(Outcome::Unavailable(Unavailable::Store(StoreError::Stopped))),
    }
}

/// The replay record that claims a proof's challenge: no transaction, so
/// no block; it lives past the challenge's last instant on any instance's
/// clock (and at least as long as a payment's record).
fn proof_record(
    policy: &SettlementPolicy,
    genome_id: &str,
    key: TxHash,
    claim: &Payment,
    resource: Option<String>,
    floor: std::time::Duration,
) -> ReplayRecord {
    let now = claim.block_timestamp;
    let challenge_life = policy
        .challenge_ttl_seconds
        .saturating_add(policy.clock_skew_seconds.saturating_mul(2))
        .saturating_add(RECORD_TTL_MARGIN.as_secs());
    let ttl = record_ttl(policy, floor).as_secs().max(challenge_life);
    let route = policy.route_for(resource.as_deref());
    ReplayRecord {
        settlement: Settlement::new(key, Scheme::Payment, claim, genome_id),
        resource,
        request_digest: None,
        consumed_at: now,
        expires_at: now.saturating_add(ttl),
        route: Some(route),
        instance: None,
        proof: true,
    }
}

/// A `session` credential: its challenge checked like a charge's (minted
/// here, for this route's session terms now, not expired), then carried
/// out on its channel. `Err`: a denial before the channel is touched.
async fn session(
    state: &AppState,
    challenge: &Challenge,
    echo: mpp::Echo,
    action: settlegate_rules::session::Action,
    source: Option<mpp::Source>,
    now: OffsetDateTime,
) -> Result<Outcome, Denial> {
    let (Some(request), Some(terms)) = (challenge.session_request(), challenge.session_terms()) else {
        return Err(Denial::PaymentRequired(
            "this policy does not offer sessions for this request; pay with the charge intent".into(),
        ));
    };
    let secrets = &state.challenges.secrets;
    match mpp::check_session_challenge(
        &echo,
        secrets,
        &challenge.realm,
        &request,
        challenge.max_lifetime(),
        now,
    ) {
        Ok(()) => {}
        Err(ChallengeProblem::Invalid(why)) => {
            tracing::debug!(why, "session credential with an invalid challenge");
            return Err(Denial::Failed(Reason::ChallengeInvalid));
        }
        Err(ChallengeProblem::Expired) => return Err(Denial::Failed(Reason::ChallengeExpired)),
    }
    if source.is_some_and(|s| s.chain_id != challenge.chain_id) {
        return Err(Denial::Failed(Reason::WrongChain));
    }
    let call = SessionCall {
        action,
        challenge_id: echo.id,
        terms,
    };
    Ok(match state.sessions.handle_to_end(call).await {
        SessionAnswer::Served(s) => Outcome::Served(s),
        // A denied payer is refused as a charge's payer is.
        SessionAnswer::Refused(settlegate_rules::session::SessionProblem::PayerDenied) => {
            return Err(Denial::Failed(Reason::PayerDenied));
        }
        SessionAnswer::Refused(p) => return Err(Denial::Session(p)),
        SessionAnswer::Unavailable(u) => Outcome::Unavailable(Unavailable::Session(u)),
    })
}

/// `Idempotency-Key`: 16 to 255 visible ASCII characters. A short key
/// could be guessed by anyone who saw the payment on chain.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = single_header(headers, "idempotency-key")? else {
        return Ok(None);
    };
    let v = v.to_str().ok().filter(|s| valid_idempotency_key(s)).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "Idempotency-Key must be {MIN_IDEMPOTENCY_KEY} to {MAX_IDEMPOTENCY_KEY} visible ASCII characters \
             (a UUID, say): a shorter key could be guessed"
        ))
    })?;
    Ok(Some(v.to_owned()))
}

/// The client's `Accept-Payment`: its lines joined as the list rule
/// allows (RFC 9110 §5.3), at most `accept_payment::MAX_BYTES` in all. Unlike the headers the gate decides on, a
/// second line is no ambiguity: it only adds preferences, and changes no
/// price. A value that is not visible ASCII, too long or malformed states
/// nothing: the 402 then carries every challenge, as without the header.
pub fn accept_payment(headers: &HeaderMap) -> AcceptPayment {
    // The head is bounded (`MAX_HEADER_BYTES`); `parse` bounds the value.
    let lines: Result<Vec<&str>, _> = headers.get_all("accept-payment").map(|v| v.to_str()).collect();
    match lines {
        Ok(lines) if !lines.is_empty() => AcceptPayment::from_header(Some(&lines.join(", "))),
        _ => AcceptPayment::any(),
    }
}

/// The one value of a header the gate decides on, refused when it is given
/// more than once: a proxy passes every line upstream, and an upstream may
/// read them joined (RFC 9110) or the last one, where the gate would have
/// read the first. A retry with a second `Idempotency-Key` line would be
/// one request to the gate and a new one to the upstream.
pub fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h actix_web::http::header::HeaderValue>, ApiError> {
    let mut values = headers.get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::InvalidRequest(format!("{name} is given more than once")));
    }
    Ok(first)
}

/// A body digest (`Content-Digest`, `body_digest`): 1 to
/// [`MAX_BODY_DIGEST`](settlegate_rules::replay::MAX_BODY_DIGEST) printable
/// ASCII characters, compared exactly.
pub fn check_body_digest(what: &str, v: &str) -> Result<String, ApiError> {
    if valid_body_digest(v) {
        Ok(v.to_owned())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "{what} must be 1 to {} printable ASCII characters without surrounding spaces, \
             e.g. \"sha-256=:<base64>:\"",
            settlegate_rules::replay::MAX_BODY_DIGEST
        )))
    }
}

/// A resource is `METHOD /target`; what a price rule matches against is
/// its method and the target's path in normal form
/// ([`settlegate_rules::target`]): `GET /%72eports/1?x` is `GET /reports/1`.
/// A target with no single meaning is refused, as on `/v1/authorize`.
pub fn check_resource(r: String) -> Result<String, ApiError> {
    let refuse = |why: String| {
        ApiError::InvalidRequest(format!(
            "resource must be \"METHOD /path\" (at most {MAX_RESOURCE} characters), e.g. \"GET /reports/42\"{why}"
        ))
    };
    if r.chars().count() > MAX_RESOURCE {
        return Err(refuse(String::new()));
    }
    let Some((method, target)) = r.split_once(' ') else {
        return Err(refuse(String::new()));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return Err(refuse(String::new()));
    }
    let path = normalise(target).map_err(|e| refuse(format!(": its path {e}")))?;
    Ok(format!("{method} {path}"))
}
