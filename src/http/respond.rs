//! The one place where payment outcomes become HTTP answers (`API.md`):
//! 200 with the `Settlement`, 402 with a challenge, 503 with `Retry-After`.
//!
//! 402 and 503 bodies are RFC 9457 problem+json that also carry the fields
//! the Tempo Agentic Layer SDK reads (`error`, `code`, `paymentInfo`), so one
//! body serves both kinds of client.
//!
//! A 402's `Payment` challenges (`charge`, then `session`: the server's
//! order) are filtered and ordered by the client's `Accept-Payment`
//! ([`AcceptPayment`]); the `Tempo` challenge, another scheme, always comes
//! first. With more than one `Payment` challenge possible the answer says
//! `Vary: Accept-Payment`.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::value::RawValue;
use settlegate_rules::accept_payment::AcceptPayment;
use settlegate_rules::mpp::{self, Secrets};
use settlegate_rules::primitives::address_lower;
use settlegate_rules::replay::{Scheme, Settlement};
use settlegate_rules::session;
use settlegate_rules::settlement::Reason;
use time::OffsetDateTime;

use super::problem::problem_builder;
use crate::code::Code;
use crate::outcome::{Challenge, Denial, Outcome, Proven, Unavailable};
use crate::session::{Served, SessionUnavailable};

/// The response for `outcome` on `POST /v1/verify`, a 402's challenges
/// as `offers` asks.
pub fn respond(outcome: &Outcome, challenges: &Challenges, offers: &AcceptPayment) -> HttpResponse {
    match outcome {
        Outcome::Settled(settlement) => {
            let mut resp = HttpResponse::Ok();
            settled_headers(&mut resp, settlement);
            resp.json(settlement)
        }
        Outcome::Served(served) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store, private"))
            .insert_header(("Payment-Receipt", session_receipt(served)))
            .json(ServedBody::of(served)),
        Outcome::Proven(p) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store, private"))
            .insert_header(("Payment-Receipt", proof_receipt(p)))
            .json(ProvenBody::of(p)),
        Outcome::Denied(denial, challenge) => denied(denial, challenge, challenges, offers),
        Outcome::Unavailable(u) => unavailable(u),
    }
}

/// The `Payment-Receipt` of a session request: the channel, what its
/// vouchers cover and what requests have spent.
fn session_receipt(s: &Served) -> String {
    session::request::encode_receipt(&session::receipt(
        &s.challenge_id,
        &s.channel,
        s.accepted,
        s.spent,
        s.tx_hash.as_ref(),
        OffsetDateTime::now_utc(),
    ))
}

/// The `Payment-Receipt` of a proof: its `reference` is the challenge id
/// (no transaction exists).
fn proof_receipt(p: &Proven) -> String {
    mpp::receipt_for(&p.challenge_id, OffsetDateTime::now_utc())
}

/// The 200 body of `POST /v1/verify`, for the OpenAPI document: a
/// settlement, a request served from a session channel, or a free route's
/// proof.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum VerifyOk {
    Settled(Settlement),
    Served(ServedBody),
    Proven(ProvenBody),
}

/// The 200 body of `POST /v1/verify` for a route priced at zero: a `proof`
/// credential, claimed for this request (once per challenge).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProvenBody {
    #[schema(value_type = String, pattern = "^proven$")]
    status: &'static str,
    #[schema(value_type = String, pattern = "^payment$")]
    scheme: &'static str,
    /// The signer: the credential's `source`.
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    payer: String,
    /// Always `0`: nothing was paid.
    #[schema(value_type = String, pattern = "^0$")]
    amount: &'static str,
    /// The challenge the proof answers (the receipt's `reference`).
    challenge_id: String,
    chain_id: u64,
    /// The id of the genome whose policy prices the route at zero.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    genome_id: String,
}

impl ProvenBody {
    fn of(p: &Proven) -> Self {
        ProvenBody {
            status: "proven",
            scheme: "payment",
            payer: address_lower(&p.payer),
            amount: "0",
            challenge_id: p.challenge_id.clone(),
            chain_id: p.chain_id,
            genome_id: p.genome_id.clone(),
        }
    }
}

/// The 200 body of `POST /v1/verify` for a request paid from a session
/// channel.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedBody {
    #[schema(value_type = String, pattern = "^served$")]
    status: &'static str,
    #[schema(value_type = String, pattern = "^session$")]
    intent: &'static str,
    /// `open`, `topUp`, `voucher` or `close`.
    #[schema(value_type = String)]
    action: &'static str,
    #[schema(pattern = "^0x[0-9a-f]{64}$")]
    channel_id: String,
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    payer: String,
    /// This request's price, deducted, in atomic units.
    #[schema(pattern = "^[0-9]+$")]
    amount: String,
    /// The highest voucher accepted on the channel.
    #[schema(pattern = "^[0-9]+$")]
    accepted_cumulative: String,
    /// What the channel's requests have spent, this one included.
    #[schema(pattern = "^[0-9]+$")]
    spent: String,
    /// The `open` or `topUp` transaction this request carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^0x[0-9a-f]{64}$")]
    tx_hash: Option<String>,
}

impl ServedBody {
    fn of(s: &Served) -> Self {
        ServedBody {
            status: "served",
            intent: "session",
            action: s.action,
            channel_id: s.channel.to_string(),
            payer: address_lower(&s.payer),
            amount: s.amount.to_string(),
            accepted_cumulative: s.accepted.to_string(),
            spent: s.spent.to_string(),
            tx_hash: s.tx_hash.map(|h| h.to_string()),
        }
    }
}

/// The response for `outcome` on `GET /v1/authorize` (forward-auth): a 200
/// has no body and carries the settlement in headers for the proxy to copy
/// upstream; 402 and 503 are the same as `/v1/verify`'s, for the proxy to
/// hand to the client unchanged.
///
/// Every header a proxy is told to copy is on every 200, `Payment-Receipt`
/// for the Tempo scheme too: Caddy 2.6's `copy_headers` sends the upstream
/// a header the gate did not return as its literal placeholder
/// (`{http.reverse_proxy.header.Payment-Receipt}`).
pub fn respond_authorize(outcome: &Outcome, challenges: &Challenges, offers: &AcceptPayment) -> HttpResponse {
    match outcome {
        Outcome::Settled(s) => {
            let mut resp = HttpResponse::Ok();
            settled_headers(&mut resp, s);
            if s.scheme != Scheme::Payment {
                resp.insert_header(("Payment-Receipt", mpp::receipt(&s.tx_hash, OffsetDateTime::now_utc())));
            }
            resp.insert_header(("X-Settlement-Payer", address_lower(&s.payer)))
                .insert_header(("X-Settlement-Tx", s.tx_hash.to_string()))
                .insert_header(("X-Settlement-Amount", s.amount.to_string()))
                .finish()
        }
        // The proxy copies the same headers whichever intent paid: the
        // payer, the channel (where a charge has its transaction) and this
        // request's price.
        Outcome::Served(s) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store, private"))
            .insert_header(("Payment-Receipt", session_receipt(s)))
            .insert_header(("X-Settlement-Payer", address_lower(&s.payer)))
            .insert_header(("X-Settlement-Tx", s.channel.to_string()))
            .insert_header(("X-Settlement-Amount", s.amount.to_string()))
            .finish(),
        // A proof has no transaction: the challenge it answers stands in
        // its place, as in its receipt.
        Outcome::Proven(p) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store, private"))
            .insert_header(("Payment-Receipt", proof_receipt(p)))
            .insert_header(("X-Settlement-Payer", address_lower(&p.payer)))
            .insert_header(("X-Settlement-Tx", p.challenge_id.clone()))
            .insert_header(("X-Settlement-Amount", "0"))
            .finish(),
        other => respond(other, challenges, offers),
    }
}

/// `Cache-Control` of a 200, and the `Payment-Receipt` of the Payment
/// scheme (which asks for `private` besides).
fn settled_headers(resp: &mut actix_web::HttpResponseBuilder, s: &Settlement) {
    if s.scheme == Scheme::Payment {
        resp.insert_header((header::CACHE_CONTROL, "no-store, private"))
            .insert_header(("Payment-Receipt", mpp::receipt(&s.tx_hash, OffsetDateTime::now_utc())));
    } else {
        resp.insert_header((header::CACHE_CONTROL, "no-store"));
    }
}

/// A challenge as it goes on the wire: the `Tempo` `WWW-Authenticate` value,
/// the encoded `Payment` request (its id and expiry are minted per answer)
/// and the `paymentInfo` JSON.
pub struct Rendered {
    tempo: Option<HeaderValue>,
    payment_request: Option<String>,
    session_request: Option<String>,
    /// `None` where one transfer cannot pay (a free route, splits): the
    /// seed SDK would pay the whole price to the recipient and be refused.
    payment_info: Option<Box<RawValue>>,
}

/// Challenges rendered once per genome and price rather than per 402 (a
/// storm of unpaid or replayed requests is answered many thousand times a
/// second). Bounded: a genome has few prices; past [`MAX_RENDERED`] distinct
/// challenges the cache starts over. `Payment` challenge ids are HMACs of
/// the request and its expiry, minted with `secrets` for each answer.
pub struct Challenges {
    rendered: Mutex<HashMap<Challenge, Arc<Rendered>>>,
    pub secrets: Arc<Secrets>,
}

const MAX_RENDERED: usize = 256;

impl Challenges {
    pub fn new(secrets: Arc<Secrets>) -> Self {
        Challenges {
            rendered: Mutex::default(),
            secrets,
        }
    }

    pub fn render(&self, c: &Challenge) -> Arc<Rendered> {
        if let Some(r) = self.rendered.lock().get(c) {
            return r.clone();
        }
        let rendered = Arc::new(Rendered {
            // A free route, or one with splits, cannot be paid with one
            // transfer: no Tempo offer.
            tempo: c
                .tempo_payable()
                .then(|| HeaderValue::from_str(&www_authenticate(c)).ok())
                .flatten(),
            payment_request: (c.schemes.payment && c.charge).then(|| c.charge_request().encode()),
            session_request: c.session_request().map(|r| r.encode()),
            // unwrap: a struct of strings and a number always serialises.
            payment_info: (!c.is_free() && c.splits.is_empty())
                .then(|| serde_json::value::to_raw_value(&payment_info(c)).unwrap()),
        });
        let mut map = self.rendered.lock();
        if map.len() >= MAX_RENDERED {
            map.clear();
        }
        map.insert(c.clone(), rendered.clone());
        rendered
    }

    /// A fresh `Payment` challenge for `c`, as its `WWW-Authenticate` value.
    fn mint(&self, c: &Challenge, request: &str) -> Option<HeaderValue> {
        let expires = OffsetDateTime::now_utc() + time::Duration::seconds(c.ttl_seconds as i64);
        let mut nonce = [0u8; 16];
        // A challenge without its nonce would share its id with every other
        // one minted in the same second: refuse to mint rather than do that.
        getrandom::fill(&mut nonce).ok()?;
        let minted = mpp::Challenge::mint_encoded(
            &self.secrets,
            &c.realm,
            request,
            expires,
            Some(mpp::nonce_opaque(&nonce)),
        );
        HeaderValue::from_str(&minted.header()).ok()
    }

    /// A fresh `session` challenge for `c`, as its `WWW-Authenticate` value.
    fn mint_session(&self, c: &Challenge) -> Option<HeaderValue> {
        let request = c.session_request()?;
        let expires = OffsetDateTime::now_utc() + time::Duration::seconds(c.ttl_seconds as i64);
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).ok()?;
        let minted = mpp::Challenge::mint_session(
            &self.secrets,
            &c.realm,
            &request,
            expires,
            Some(mpp::nonce_opaque(&nonce)),
        );
        HeaderValue::from_str(&minted.header()).ok()
    }
}

/// `Tempo realm="…", asset="…", amount="…", destination="…", chainId="…"`.
pub fn www_authenticate(c: &Challenge) -> String {
    format!(
        "Tempo realm={}, asset={}, amount={}, destination={}, chainId={}",
        quoted(&c.realm),
        quoted(&address_lower(&c.asset)),
        quoted(&c.amount.to_string()),
        quoted(&address_lower(&c.recipient)),
        quoted(&c.chain_id.to_string()),
    )
}

/// The seed SDK's `paymentInfo`: what to pay, for a client that reads the
/// body rather than `WWW-Authenticate`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentInfo {
    #[schema(value_type = String, pattern = "^tempo$")]
    method: &'static str,
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    recipient: String,
    /// Atomic units of `token`, in decimal.
    #[schema(pattern = "^[0-9]+$")]
    amount: String,
    /// The TIP-20 token to pay in.
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    token: String,
    #[serde(rename = "chainId")]
    chain_id: u64,
}

pub fn payment_info(c: &Challenge) -> PaymentInfo {
    PaymentInfo {
        method: "tempo",
        recipient: address_lower(&c.recipient),
        amount: c.amount.to_string(),
        token: address_lower(&c.asset),
        chain_id: c.chain_id,
    }
}

/// A 402 or 503 body: RFC 9457 fields, plus `error`, `code` and
/// `paymentInfo` for the Tempo Agentic Layer SDK.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PaymentProblem)]
pub(crate) struct Problem<'a> {
    /// A Machine Payments Protocol problem URI, or `urn:settlegate:problem:<code>`.
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[schema(value_type = super::openapi::PaymentCode)]
    code: Code,
    /// Why verification failed (`VERIFICATION_FAILED`; sometimes `PAYMENT_PENDING`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Reason>)]
    reason: Option<&'a str>,
    /// `Payment Required` on a 402, `Service Unavailable` on a 503 (the seed SDK's field).
    error: &'a str,
    /// On every 402 one transfer can pay (not a free route, not one with
    /// splits): what to pay with the seed scheme.
    #[serde(rename = "paymentInfo", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PaymentInfo>)]
    payment_info: Option<&'a RawValue>,
    /// On a session's `insufficient-balance`: the cumulative amount a
    /// voucher must reach to pay for this request.
    #[serde(rename = "requiredCumulative", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[0-9]+$")]
    required_cumulative: Option<&'a str>,
}

impl Problem<'_> {
    fn bytes(&self) -> Vec<u8> {
        // unwrap: these fields always serialise.
        serde_json::to_vec(self).unwrap()
    }
}

/// RFC 7230 quoted-string: `"` and `\` are escaped. Control characters
/// cannot occur (the realm is checked at boot, the rest is hex and digits).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    if !s.contains(['"', '\\']) {
        out.push_str(s);
        out.push('"');
        return out;
    }
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A `Payment` challenge a 402 can carry.
#[derive(Clone, Copy)]
enum Offer {
    Charge,
    Session,
}

impl Offer {
    /// `method/intent`, as `Accept-Payment` names it.
    fn token(self) -> (&'static str, &'static str) {
        match self {
            Offer::Charge => ("tempo", "charge"),
            Offer::Session => ("tempo", "session"),
        }
    }
}

fn denied(denial: &Denial, c: &Challenge, challenges: &Challenges, accepted: &AcceptPayment) -> HttpResponse {
    let challenge = challenges.render(c);
    let session_type;
    let session_detail;
    let (kind, title, detail): (&str, &str, &str) = match denial {
        Denial::PaymentRequired(d) => (
            "https://paymentauth.org/problems/payment-required",
            "Payment Required",
            d,
        ),
        Denial::MalformedCredential(d) => (
            "https://paymentauth.org/problems/malformed-credential",
            "Malformed credential",
            d,
        ),
        Denial::Failed(r @ Reason::ChallengeInvalid) => (
            "https://paymentauth.org/problems/invalid-challenge",
            "Invalid challenge",
            failure_detail(*r),
        ),
        Denial::Failed(r @ Reason::ChallengeExpired) => (
            "https://paymentauth.org/problems/payment-expired",
            "Challenge expired",
            failure_detail(*r),
        ),
        Denial::Pending { detail, .. } => (denial.code().problem_type(), "Payment pending", detail),
        Denial::Failed(r) => (
            "https://paymentauth.org/problems/verification-failed",
            "Payment verification failed",
            failure_detail(*r),
        ),
        Denial::Replayed => (
            denial.code().problem_type(),
            "Payment already used",
            "this payment was already used for another request",
        ),
        Denial::Session(p) => {
            session_type = p.problem_type();
            session_detail = p.to_string();
            let title = if p.status() == 410 {
                "Channel gone"
            } else {
                "Session credential refused"
            };
            (&session_type, title, &session_detail)
        }
    };
    let required_cumulative = match denial {
        Denial::Session(session::SessionProblem::InsufficientBalance { required_cumulative }) => {
            Some(required_cumulative.to_string())
        }
        _ => None,
    };
    let status = denial.code().status();
    let body = Problem {
        kind,
        title,
        status,
        detail,
        code: denial.code(),
        reason: denial.reason().map(|r| r.as_str()),
        error: if status == 402 { "Payment Required" } else { "Gone" },
        payment_info: challenge.payment_info.as_deref(),
        required_cumulative: required_cumulative.as_deref(),
    };
    let mut resp = problem_builder(StatusCode::from_u16(status).unwrap_or(StatusCode::PAYMENT_REQUIRED));
    if let Some(v) = &challenge.tempo {
        resp.append_header((header::WWW_AUTHENTICATE, v.clone()));
    }
    // The offers in the server's order; only those the client takes are
    // minted (each costs an HMAC and a random nonce).
    let mut offers = Vec::with_capacity(2);
    if challenge.payment_request.is_some() {
        offers.push(Offer::Charge);
    }
    if challenge.session_request.is_some() {
        offers.push(Offer::Session);
    }
    let tokens: Vec<_> = offers.iter().map(|o| o.token()).collect();
    for i in accepted.order(&tokens) {
        let minted = match offers[i] {
            Offer::Charge => challenge.payment_request.as_deref().and_then(|r| challenges.mint(c, r)),
            Offer::Session => challenges.mint_session(c),
        };
        if let Some(v) = minted {
            resp.append_header((header::WWW_AUTHENTICATE, v));
        }
    }
    if offers.len() > 1 {
        resp.insert_header((header::VARY, HeaderValue::from_static("Accept-Payment")));
    }
    if matches!(denial, Denial::Pending { .. }) {
        resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
    }
    resp.body(body.bytes())
}

/// The detail is for logs; clients get a stable sentence.
pub fn unavailable(u: &Unavailable) -> HttpResponse {
    let (title, detail) = match u {
        Unavailable::Rpc(_) => (
            "Chain RPC unavailable",
            "no Tempo RPC endpoint on the policy's chain gave a trustworthy answer; retry later",
        ),
        Unavailable::Store(_) => (
            "Replay store unavailable",
            "the replay store did not answer; retry later",
        ),
        Unavailable::Genome(_) => (
            "Genome unavailable",
            "the active policy genome is not valid now; retry later",
        ),
        Unavailable::Session(SessionUnavailable::Rpc(_)) => (
            "Chain RPC unavailable",
            "no Tempo RPC endpoint gave a trustworthy answer about the channel; nothing was deducted; retry later",
        ),
        Unavailable::Session(SessionUnavailable::NotYetOnChain) => (
            "Chain RPC unavailable",
            "the channel's transaction is not on chain yet; nothing was deducted; retry with the same credential",
        ),
        Unavailable::Session(SessionUnavailable::Book(_) | SessionUnavailable::Corrupt) => (
            "Replay store unavailable",
            "the channel's state could not be updated; retry with the same voucher",
        ),
    };
    let body = Problem {
        kind: u.code().problem_type(),
        title,
        status: 503,
        detail,
        code: u.code(),
        reason: None,
        error: "Service Unavailable",
        payment_info: None,
        required_cumulative: None,
    };
    let mut resp = problem_builder(StatusCode::SERVICE_UNAVAILABLE);
    resp.insert_header((header::RETRY_AFTER, u.retry_after()));
    resp.body(body.bytes())
}

fn failure_detail(r: Reason) -> &'static str {
    match r {
        Reason::TxReverted => "the transaction reverted",
        Reason::WrongChain => "the credential names another chain than the policy's",
        Reason::NoTransfer => "the transaction moved no TIP-20 funds",
        Reason::WrongAsset => "no transfer in the required token",
        Reason::WrongRecipient => "no transfer to the recipient",
        Reason::InsufficientAmount => "the transfer to the recipient is less than the price",
        Reason::Expired => "the payment is older than the policy allows",
        Reason::FutureTimestamp => "the payment's block is dated in the future",
        Reason::InsufficientConfirmations => "the payment does not have enough confirmations yet",
        Reason::MemoMismatch => "the payment's memo does not satisfy the policy",
        Reason::ChallengeInvalid => "the challenge was not issued by this service",
        Reason::ChallengeExpired => "the challenge has expired",
        Reason::PayerMismatch => "the payment was not made by the expected payer",
        Reason::TxRejected => "the node refused the signed transaction; it was not broadcast",
        Reason::SponsorshipRefused => {
            "the sponsored transaction is outside the sponsor's caps (gas, fees, validity, fee token or shape); \
             nothing was broadcast"
        }
        Reason::SponsorshipNeedsPull => {
            "a sponsored challenge takes a signed transaction (pull mode), never a hash; nothing was consumed"
        }
        Reason::SponsorshipUnavailable => {
            "fee sponsorship is not available now; pay with the fresh challenge, which does not offer it"
        }
        Reason::WouldRevert => "the transaction would revert; it was neither co-signed nor broadcast",
        Reason::ProofRequired => "this route is free: present a proof credential (no payment), signed by its source",
        Reason::ProofUnexpected => "a proof credential is accepted only for a route priced at zero; pay this one",
        Reason::ProofInvalid => "the proof's signature does not recover its source for this challenge",
        Reason::SplitMissing => "a split's recipient got no transfer of the token from the payer",
        Reason::SplitShort => "the transfer to a split's recipient is less than its share",
        Reason::PayerDenied => {
            "the payer is on this service's deny list; nothing was consumed or deducted, nothing was broadcast"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settlegate_actors::replay_guard::StoreError;
    use settlegate_actors::rpc_pool::RpcError;
    use settlegate_rules::GenomeError;

    #[test]
    fn quoted_strings_escape_quotes_and_backslashes() {
        assert_eq!(quoted(r#"Tempo "API" \ x"#), r#""Tempo \"API\" \\ x""#);
    }

    #[test]
    fn every_503_has_one_retry_after_per_code_and_no_internal_detail() {
        let cases = [
            (Unavailable::Rpc(RpcError::Transport("http://secret@host".into())), "2"),
            (Unavailable::Store(StoreError::Corrupt("raw bytes".into())), "2"),
            (Unavailable::Genome(GenomeError::Expired("at noon".into())), "30"),
        ];
        for (u, after) in cases {
            let resp = unavailable(&u);
            assert_eq!(resp.status(), 503);
            assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), after, "{u:?}");
            assert_eq!(
                resp.headers().get(header::CONTENT_TYPE).unwrap(),
                "application/problem+json"
            );
            let body = match actix_web::body::MessageBody::try_into_bytes(resp.into_body()) {
                Ok(b) => String::from_utf8(b.to_vec()).unwrap(),
                Err(_) => panic!("a fixed body"),
            };
            for secret in ["secret", "raw bytes", "at noon"] {
                assert!(!body.contains(secret), "{body}");
            }
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], u.code().as_str());
            assert_eq!(json["type"], u.code().problem_type());
            assert_eq!(json["status"], u.code().status());
        }
    }
}
