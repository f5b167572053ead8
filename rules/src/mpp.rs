//! The Machine Payments Protocol `Payment` HTTP authentication scheme, for
//! the `tempo` method's `charge` intent (and the challenge and credential
//! envelope of its `session` intent, whose rules are [`crate::session`]): challenges
//! with stateless HMAC ids, credentials of both payload types (`hash`: the
//! client broadcast the transaction; `transaction`: the client signed it and
//! this service broadcasts it), the attribution memo that binds a payment to
//! one challenge, and the `Payment-Receipt`.
//!
//! Pure: the secret, the time and the route's price are arguments.
//!
//! The binding is what stops whoever sees a hash on chain from redeeming it
//! first: a `Payment` credential settles only a
//! transfer whose memo names this realm and the challenge id the credential
//! echoes, and that challenge id is an HMAC only this service (and the
//! instances sharing its secret) can mint.

use std::fmt;

use alloy_primitives::{Address, B256, Bytes, keccak256};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::canonical::canonical_value_bytes;
use crate::credential::{TxHash, TxHashError};
use crate::policy::Split;
use crate::primitives::Amount;

pub const METHOD: &str = "tempo";
pub const INTENT: &str = "charge";
pub const SESSION_INTENT: &str = "session";
pub use crate::secret_strength::{MIN_SECRET_LEN, WeakSecret};
/// The longest signed transaction a `transaction` credential may carry.
pub const MAX_TRANSACTION_BYTES: usize = 4096;
/// The longest signature a `proof` credential may carry (an EOA's is 65
/// bytes; longer ones are parsed only to be refused with a reason).
pub const MAX_PROOF_BYTES: usize = 1024;
/// The longest echoed `request` read (mppx and mpp-rs cap it alike),
/// checked before it is decoded. A credential is at most
/// [`crate::credential::MAX_CREDENTIAL_LEN`] bytes anyway; this holds for
/// any caller of [`check_challenge`].
pub const MAX_REQUEST_PARAM_LEN: usize = 16 * 1024;

/// base64url without padding, for everything this service writes.
pub fn b64_encode(bytes: &[u8]) -> String {
    crate::b64url::encode(bytes)
}

/// Strict base64url ([`crate::b64url`]): one spelling per byte string.
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    crate::b64url::decode(s).ok()
}

/// Which payload types a challenge accepts (`methodDetails.supportedModes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modes {
    /// `transaction`: the client signs, this service broadcasts.
    pub pull: bool,
    /// `hash`: the client broadcasts and presents the hash.
    pub push: bool,
}

impl Modes {
    pub const BOTH: Modes = Modes { pull: true, push: true };

    fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(2);
        if self.pull {
            v.push("pull");
        }
        if self.push {
            v.push("push");
        }
        v
    }
}

/// The tempo `charge` request of one route: what a challenge asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChargeRequest {
    pub amount: Amount,
    pub currency: Address,
    pub recipient: Address,
    pub chain_id: u64,
    pub modes: Modes,
    /// `methodDetails.feePayer: true`: this service pays the transaction's
    /// fee (pull mode only).
    pub fee_payer: bool,
    /// `methodDetails.splits`: shares of `amount` for other recipients
    /// (empty: none, and the field is not emitted).
    pub splits: Vec<Split>,
}

impl ChargeRequest {
    /// The request object (`reference/mpp.md` section 3): the token address
    /// in lower case (as TIP-20 tokens are written), the recipient in EIP-55
    /// form, as the SDKs write them; `memo` is never emitted (the
    /// attribution memo is mandatory), `feePayer` only when it is `true`.
    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "amount": self.amount.to_string(),
            "currency": crate::primitives::address_lower(&self.currency),
            "recipient": self.recipient.to_checksum(None),
            "methodDetails": {
                "chainId": self.chain_id,
                "supportedModes": self.modes.names(),
            },
        });
        if self.fee_payer {
            v["methodDetails"]["feePayer"] = Value::Bool(true);
        }
        if !self.splits.is_empty() {
            // Recipients in EIP-55 form like the primary's; a memo only
            // where the split names one.
            v["methodDetails"]["splits"] = self
                .splits
                .iter()
                .map(|s| {
                    let mut e = json!({"amount": s.amount.to_string(), "recipient": s.recipient.to_checksum(None)});
                    if let Some(m) = &s.memo {
                        e["memo"] = Value::String(m.to_string());
                    }
                    e
                })
                .collect();
        }
        v
    }

    /// base64url(JCS(request)): the `request` auth-param.
    pub fn encode(&self) -> String {
        b64_encode(&canonical_value_bytes(&self.to_value()))
    }
}

/// The HMAC secrets: the current one mints and verifies; the previous one,
/// during a rotation, still verifies until `until` (exclusive).
pub struct Secrets {
    current: Zeroizing<Vec<u8>>,
    previous: Option<(Zeroizing<Vec<u8>>, OffsetDateTime)>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("previous_until", &self.previous.as_ref().map(|(_, u)| *u))
            .finish_non_exhaustive()
    }
}

/// Why a secret is refused ([`crate::secret_strength`]).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an MPP challenge secret {0}")]
pub struct RefusedSecret(pub WeakSecret);

impl Secrets {
    /// The secret is used as its bytes (an `openssl rand -base64 32` string
    /// as its ASCII text, not decoded), as the SDKs do. Short, uniform or
    /// repeating secrets are refused ([`crate::secret_strength`]).
    pub fn new(current: Vec<u8>, previous: Option<(Vec<u8>, OffsetDateTime)>) -> Result<Self, RefusedSecret> {
        for s in std::iter::once(&current).chain(previous.as_ref().map(|(p, _)| p)) {
            crate::secret_strength::check(s).map_err(RefusedSecret)?;
        }
        Ok(Secrets {
            current: Zeroizing::new(current),
            previous: previous.map(|(p, u)| (Zeroizing::new(p), u)),
        })
    }

    /// HMAC-SHA256 of `input` under `key`: the raw MAC of a challenge id.
    pub(crate) fn id(key: &[u8], input: &str) -> [u8; 32] {
        // unwrap: HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(input.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// An HMAC-SHA256 of `data` under the current secret, for another use
    /// than challenge ids: `label` (no NUL byte) and a NUL come first, and
    /// a challenge's HMAC input has no NUL (its realm is checked at boot),
    /// so no such MAC is ever a challenge id or the reverse.
    pub fn mac(&self, label: &str, data: &[u8]) -> [u8; 32] {
        Self::labelled(&self.current, label, data)
    }

    /// Whether `mac` is [`Secrets::mac`] of `label` and `data` under a
    /// secret valid at `now` (constant time in the MAC).
    pub fn mac_verifies(&self, label: &str, data: &[u8], mac: &[u8], now: OffsetDateTime) -> bool {
        let current: bool = Self::labelled(&self.current, label, data).ct_eq(mac).into();
        let previous = match &self.previous {
            Some((key, until)) if now < *until => Self::labelled(key, label, data).ct_eq(mac).into(),
            _ => false,
        };
        current | previous
    }

    fn labelled(key: &[u8], label: &str, data: &[u8]) -> [u8; 32] {
        // unwrap: HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `id` is the id minted for `input` with a secret valid at
    /// `now`: the very text minted (unpadded base64url of the MAC), compared
    /// in constant time, never decoded. A 32-byte MAC is 43 characters
    /// whose last carries two unused bits, so a decoder would take four
    /// spellings of it (and padding, and `+/`): one challenge would have
    /// several ids, and so several memos and retry identities. The previous
    /// secret is tried only inside its overlap window.
    fn verifies(&self, input: &str, id: &str, now: OffsetDateTime) -> bool {
        let given = id.as_bytes();
        let minted = |key: &[u8]| -> bool { b64_encode(&Self::id(key, input)).as_bytes().ct_eq(given).into() };
        let current = minted(&self.current);
        let previous = match &self.previous {
            Some((key, until)) if now < *until => minted(key),
            _ => false,
        };
        current | previous
    }
}

/// The HMAC input: `realm|method|intent|request|expires|digest|opaque`,
/// absent optional slots empty. The `|` is not escaped: hence no `|` in a
/// realm ([`crate::policy::check_realm`]); method and intent are constants.
pub(crate) fn hmac_input(
    realm: &str,
    method: &str,
    intent: &str,
    request: &str,
    expires: Option<&str>,
    digest: Option<&str>,
    opaque: Option<&str>,
) -> String {
    [
        realm,
        method,
        intent,
        request,
        expires.unwrap_or(""),
        digest.unwrap_or(""),
        opaque.unwrap_or(""),
    ]
    .join("|")
}

/// A challenge this service issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub id: String,
    pub realm: String,
    /// [`INTENT`] (charge) or [`SESSION_INTENT`].
    pub intent: &'static str,
    pub request: String,
    pub expires: String,
    /// base64url(JCS({"_mpp_nonce": …})): makes every id unique (the key
    /// pympp uses). Without it, two 402s for one price in the same second
    /// would carry the same id, and whoever saw a payment bound to it on
    /// chain could fetch that id and redeem the payment first.
    pub opaque: Option<String>,
}

/// The `opaque` value carrying `nonce`.
pub fn nonce_opaque(nonce: &[u8; 16]) -> String {
    b64_encode(&canonical_value_bytes(
        &json!({ "_mpp_nonce": alloy_primitives::hex::encode(nonce) }),
    ))
}

/// `expires` as the wire carries it: RFC 3339, whole seconds, UTC.
pub fn format_expires(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Challenge {
    /// Mints the challenge for `request` in `realm`, expiring at `expires`.
    pub fn mint(
        secrets: &Secrets,
        realm: &str,
        request: &ChargeRequest,
        expires: OffsetDateTime,
        opaque: Option<String>,
    ) -> Self {
        Self::mint_encoded(secrets, realm, &request.encode(), expires, opaque)
    }

    /// [`Challenge::mint`] for a request already encoded with
    /// [`ChargeRequest::encode`] (a route's request is encoded once).
    pub fn mint_encoded(
        secrets: &Secrets,
        realm: &str,
        request: &str,
        expires: OffsetDateTime,
        opaque: Option<String>,
    ) -> Self {
        Self::mint_intent(secrets, realm, INTENT, request, expires, opaque)
    }

    /// The `session` challenge for `request`: an HMAC id over the same
    /// fields as a charge's, with intent `session`, so neither can be
    /// echoed as the other.
    pub fn mint_session(
        secrets: &Secrets,
        realm: &str,
        request: &crate::session::SessionRequest,
        expires: OffsetDateTime,
        opaque: Option<String>,
    ) -> Self {
        Self::mint_intent(secrets, realm, SESSION_INTENT, &request.encode(), expires, opaque)
    }

    /// A challenge of `intent` over an already encoded `request`: what the
    /// minting functions above share (and what a test forges with the
    /// real secret to probe the checks past the HMAC).
    pub fn mint_intent(
        secrets: &Secrets,
        realm: &str,
        intent: &'static str,
        request: &str,
        expires: OffsetDateTime,
        opaque: Option<String>,
    ) -> Self {
        let expires = format_expires(expires);
        let input = hmac_input(realm, METHOD, intent, request, Some(&expires), None, opaque.as_deref());
        Challenge {
            id: b64_encode(&Secrets::id(&secrets.current, &input)),
            realm: realm.to_owned(),
            intent,
            request: request.to_owned(),
            expires,
            opaque,
        }
    }

    /// The `WWW-Authenticate` value (for either intent).
    pub fn header(&self) -> String {
        ChallengeParams {
            id: &self.id,
            realm: &self.realm,
            method: METHOD,
            intent: self.intent,
            request: &self.request,
            expires: Some(&self.expires),
            digest: None,
            description: None,
            opaque: self.opaque.as_deref(),
        }
        .header()
    }
}

/// The auth-params of a `Payment` challenge. This service fills `expires`
/// and `opaque` and never `digest` or `description`; all are written, as
/// the SDKs write them, for the cross-implementation vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeParams<'a> {
    pub id: &'a str,
    pub realm: &'a str,
    pub method: &'a str,
    pub intent: &'a str,
    pub request: &'a str,
    pub expires: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub description: Option<&'a str>,
    pub opaque: Option<&'a str>,
}

impl ChallengeParams<'_> {
    /// `Payment id="…", realm="…", method="…", intent="…", request="…"`
    /// then, when present, `expires`, `digest`, `description`, `opaque`, in
    /// that order: every value a quoted-string, `, ` between them.
    pub fn header(&self) -> String {
        let mut h = format!(
            "Payment id={}, realm={}, method={}, intent={}, request={}",
            quote(self.id),
            quote(self.realm),
            quote(self.method),
            quote(self.intent),
            quote(self.request),
        );
        for (name, value) in [
            ("expires", self.expires),
            ("digest", self.digest),
            ("description", self.description),
            ("opaque", self.opaque),
        ] {
            if let Some(v) = value {
                h.push_str(", ");
                h.push_str(name);
                h.push('=');
                h.push_str(&quote(v));
            }
        }
        h
    }
}

/// RFC 9110 quoted-string: `"` and `\` as quoted-pairs; everything else
/// (a tab, obs-text) as it is.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The challenge as a credential echoes it. Members the spec defines and
/// this service never issues (`digest`, `description`, `header`) are kept
/// so that an echo carrying one is refused; other members are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Echo {
    pub id: String,
    pub realm: String,
    pub method: String,
    pub intent: String,
    pub request: String,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub opaque: Option<String>,
    /// Any JSON: only whether it is there matters.
    #[serde(default)]
    pub description: Option<Value>,
    /// The spec's optional `header` binding (any JSON, as `description`).
    #[serde(default)]
    pub header: Option<Value>,
}

/// What the client paid with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Push: the client broadcast it.
    Hash(TxHash),
    /// Pull: a signed transaction for this service to broadcast.
    Transaction(Bytes),
    /// No payment: an EIP-712 signature by the `source` over the challenge
    /// ([`crate::proof`]), for a route priced at zero. A credential with
    /// this payload always has a `source`.
    Proof(Bytes),
}

impl Payload {
    /// The transaction's hash: the one a `hash` payload names, or the
    /// keccak-256 of the signed EIP-2718 envelope; a proof has none.
    pub fn tx_hash(&self) -> Option<TxHash> {
        match self {
            Payload::Hash(h) => Some(*h),
            Payload::Transaction(raw) => Some(TxHash::from(keccak256(raw))),
            Payload::Proof(_) => None,
        }
    }
}

/// A parsed `Authorization: Payment` credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentCredential {
    pub challenge: Echo,
    pub payload: Payload,
    /// `did:pkh:eip155:<chain id>:<address>`, when the client gave one.
    pub source: Option<Source>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub chain_id: u64,
    pub address: Address,
}

/// Why a credential is not one (`malformed-credential`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Payment credential: {0}")]
pub struct Malformed(pub String);

/// A credential's envelope, whatever its intent and method: base64url
/// (strict: [`crate::b64url`]) of a JSON object with the echoed
/// `challenge`, a `payload` object read later by the intent's rules, and
/// an optional `source` string.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub challenge: Echo,
    /// As sent: its reader refuses duplicate members, which a `Value`
    /// would silently merge.
    pub payload: Box<RawValue>,
    #[serde(default)]
    pub source: Option<String>,
}

/// Parses the part after `Payment ` into its [`Envelope`].
pub fn parse_envelope(b64: &str) -> Result<Envelope, Malformed> {
    let json = crate::b64url::decode(b64).map_err(|e| Malformed(format!("the credential is not base64url: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| Malformed(format!("the credential JSON: {}", brief(&e.to_string()))))
}

#[derive(Deserialize)]
struct RawPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

/// Parses the part after `Payment ` as a `charge` credential: its
/// [`Envelope`], then a `hash` or `transaction` payload.
pub fn parse_payment_credential(b64: &str) -> Result<PaymentCredential, Malformed> {
    charge_credential(parse_envelope(b64)?)
}

fn charge_credential(envelope: Envelope) -> Result<PaymentCredential, Malformed> {
    let bad = |m: &str| Malformed(m.to_owned());
    let raw: RawPayload = serde_json::from_str(envelope.payload.get())
        .map_err(|e| Malformed(format!("the credential JSON: payload: {}", brief(&e.to_string()))))?;
    let payload = match raw.kind.as_str() {
        "hash" => {
            let h = raw.hash.ok_or_else(|| bad("a hash payload needs `hash`"))?;
            Payload::Hash(
                h.parse()
                    .map_err(|e: TxHashError| Malformed(format!("payload.hash: {e}")))?,
            )
        }
        "transaction" => {
            let s = raw
                .signature
                .ok_or_else(|| bad("a transaction payload needs `signature`"))?;
            let hex = s
                .strip_prefix("0x")
                .ok_or_else(|| bad("payload.signature is 0x-prefixed hex"))?;
            if hex.is_empty() || hex.len() > 2 * MAX_TRANSACTION_BYTES {
                return Err(Malformed(format!(
                    "payload.signature must be 1 to {MAX_TRANSACTION_BYTES} bytes"
                )));
            }
            let bytes = alloy_primitives::hex::decode(hex).map_err(|_| bad("payload.signature is not hex"))?;
            Payload::Transaction(Bytes::from(bytes))
        }
        "proof" => {
            let s = raw.signature.ok_or_else(|| bad("a proof payload needs `signature`"))?;
            let hex = s
                .strip_prefix("0x")
                .ok_or_else(|| bad("payload.signature is 0x-prefixed hex"))?;
            if hex.is_empty() || hex.len() > 2 * MAX_PROOF_BYTES {
                return Err(Malformed(format!(
                    "a proof's payload.signature must be 1 to {MAX_PROOF_BYTES} bytes"
                )));
            }
            let bytes = alloy_primitives::hex::decode(hex).map_err(|_| bad("payload.signature is not hex"))?;
            if envelope.source.is_none() {
                return Err(bad(
                    "a proof payload needs `source` (did:pkh:eip155:<chain id>:<address>): it names the signer",
                ));
            }
            Payload::Proof(Bytes::from(bytes))
        }
        other => {
            return Err(Malformed(format!(
                "payload.type {} is not hash, transaction or proof",
                crate::primitives::quote_bounded(other, 32)
            )));
        }
    };
    let source = envelope.source.as_deref().map(parse_source).transpose()?;
    Ok(PaymentCredential {
        challenge: envelope.challenge,
        payload,
        source,
    })
}

/// A `Payment` credential of either intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyCredential {
    Charge(PaymentCredential),
    Session {
        challenge: Echo,
        action: crate::session::Action,
        source: Option<Source>,
    },
}

/// Why a credential of either intent is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnyMalformed {
    #[error(transparent)]
    Envelope(#[from] Malformed),
    #[error("malformed session credential: {0}")]
    Session(#[from] crate::session::SessionMalformed),
}

/// Parses a credential of either intent, dispatching on the intent of the
/// challenge it echoes (the HMAC check that follows covers that intent, so
/// a charge challenge cannot carry a session payload or the reverse).
pub fn parse_any_credential(b64: &str) -> Result<AnyCredential, AnyMalformed> {
    let envelope = parse_envelope(b64)?;
    if envelope.challenge.intent != SESSION_INTENT {
        return Ok(AnyCredential::Charge(charge_credential(envelope)?));
    }
    let payload: Value = serde_json::from_str(envelope.payload.get())
        .map_err(|e| Malformed(format!("the credential JSON: payload: {}", brief(&e.to_string()))))?;
    let action = crate::session::parse_payload(&payload)?;
    let source = envelope.source.as_deref().map(parse_source).transpose()?;
    Ok(AnyCredential::Session {
        challenge: envelope.challenge,
        action,
        source,
    })
}

/// At most [`MAX_DETAIL_CHARS`] characters of `s`: serde's messages quote
/// the offending value, which can be most of an 8 KiB credential, and they
/// end up in a 402 body and a log line.
fn brief(s: &str) -> std::borrow::Cow<'_, str> {
    crate::primitives::cut_chars(s, MAX_DETAIL_CHARS)
}

/// The longest quote of a parser's message in a `Malformed` detail.
pub const MAX_DETAIL_CHARS: usize = 160;

/// `did:pkh:eip155:(0|[1-9]\d{0,15}):0x<40 hex>`.
fn parse_source(s: &str) -> Result<Source, Malformed> {
    let bad = || Malformed("source must be did:pkh:eip155:<chain id>:<address>".into());
    let rest = s.strip_prefix("did:pkh:eip155:").ok_or_else(bad)?;
    let (chain, addr) = rest.split_once(':').ok_or_else(bad)?;
    let chain_ok = chain == "0"
        || (!chain.is_empty()
            && chain.len() <= 16
            && !chain.starts_with('0')
            && chain.bytes().all(|b| b.is_ascii_digit()));
    let hex = addr.strip_prefix("0x").ok_or_else(bad)?;
    if !chain_ok || hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Source {
        chain_id: chain.parse().map_err(|_| bad())?,
        // unwrap: 40 hex digits were checked above.
        address: hex.parse().unwrap(),
    })
}

/// Why an echoed challenge does not hold for this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChallengeProblem {
    /// `invalid-challenge`: not minted here (or altered), for another
    /// route or price, or without a usable `expires`.
    Invalid(String),
    /// `payment-expired`.
    Expired,
}

/// Checks an echoed challenge, in the SDKs' order: the HMAC, then that
/// every field is what this route's policy issues now, then its expiry.
///
/// Pinned, each against the policy and not only by the HMAC (which proves
/// that a holder of the secret minted it, not for what): `realm`,
/// `method`, `intent`; `request` decoded and compared whole (amount,
/// currency, recipient, every `methodDetails` member, and any member this
/// service does not issue, such as `memo`, `feePayer`, `splits`,
/// `description` or `externalId`); `opaque` present and exactly a nonce
/// opaque ([`nonce_opaque`]); `expires` in the one spelling minted
/// ([`format_expires`]), no further ahead than `max_lifetime` (the policy's
/// `challenge_ttl_seconds` plus clock skew) and not past; `digest`,
/// `description` and `header`, never issued here, absent.
pub fn check_challenge(
    echo: &Echo,
    secrets: &Secrets,
    realm: &str,
    request: &ChargeRequest,
    max_lifetime: time::Duration,
    now: OffsetDateTime,
) -> Result<(), ChallengeProblem> {
    let terms = Terms {
        realm,
        intent: INTENT,
        request: request.to_value(),
        max_lifetime,
    };
    check_echo(echo, secrets, &terms, now)
}

/// [`check_challenge`] for a `session` challenge: minted here, for this
/// realm, intent `session` and the session request the route asks now, and
/// not expired.
pub fn check_session_challenge(
    echo: &Echo,
    secrets: &Secrets,
    realm: &str,
    request: &crate::session::SessionRequest,
    max_lifetime: time::Duration,
    now: OffsetDateTime,
) -> Result<(), ChallengeProblem> {
    let terms = Terms {
        realm,
        intent: SESSION_INTENT,
        request: request.to_value(),
        max_lifetime,
    };
    check_echo(echo, secrets, &terms, now)
}

/// What an echoed challenge must match: the route's terms now.
struct Terms<'a> {
    realm: &'a str,
    intent: &'a str,
    request: Value,
    max_lifetime: time::Duration,
}

fn check_echo(echo: &Echo, secrets: &Secrets, terms: &Terms<'_>, now: OffsetDateTime) -> Result<(), ChallengeProblem> {
    let invalid = |m: &str| Err(ChallengeProblem::Invalid(m.to_owned()));
    if echo.request.len() > MAX_REQUEST_PARAM_LEN {
        return invalid("the challenge's request is longer than 16 KiB");
    }
    let input = hmac_input(
        &echo.realm,
        &echo.method,
        &echo.intent,
        &echo.request,
        echo.expires.as_deref(),
        echo.digest.as_deref(),
        echo.opaque.as_deref(),
    );
    if !secrets.verifies(&input, &echo.id, now) {
        return invalid("the challenge was not issued by this service");
    }
    if echo.realm != terms.realm || echo.method != METHOD || echo.intent != terms.intent {
        return invalid("the challenge is for another realm, method or intent");
    }
    let asked = b64_decode(&echo.request)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(|| ChallengeProblem::Invalid("the challenge's request is not base64url JSON".into()))?;
    if asked != terms.request {
        return invalid("the challenge asks for another payment than this resource costs now");
    }
    if echo.digest.is_some() {
        return invalid("the challenge binds a body digest, which this service never issues");
    }
    if echo.description.is_some() || echo.header.is_some() {
        return invalid("the challenge carries a description or header, which this service never issues");
    }
    if !echo.opaque.as_deref().is_some_and(is_nonce_opaque) {
        return invalid("the challenge's opaque is not the nonce this service issues");
    }
    let Some(expires) = echo.expires.as_deref().and_then(|e| {
        OffsetDateTime::parse(e, &Rfc3339)
            .ok()
            .filter(|t| format_expires(*t) == e)
    }) else {
        return invalid("the challenge has no expires in the form this service issues");
    };
    if expires - now > terms.max_lifetime {
        return invalid("the challenge lives longer than this policy's challenges");
    }
    if expires <= now {
        return Err(ChallengeProblem::Expired);
    }
    Ok(())
}

/// Whether an echoed challenge's request says `methodDetails.feePayer:
/// true` (only meaningful once [`check_challenge`] accepted it).
pub fn echoed_fee_payer(echo: &Echo) -> bool {
    b64_decode(&echo.request)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["methodDetails"]["feePayer"] == Value::Bool(true))
}

/// An echoed challenge's `expires`, if it has a valid one.
pub fn echoed_expires(echo: &Echo) -> Option<OffsetDateTime> {
    echo.expires
        .as_deref()
        .and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok())
}

/// Whether `opaque` is exactly what [`nonce_opaque`] writes for some nonce.
fn is_nonce_opaque(opaque: &str) -> bool {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nonce {
        #[serde(rename = "_mpp_nonce")]
        nonce: String,
    }
    let Some(Nonce { nonce }) = b64_decode(opaque).and_then(|b| serde_json::from_slice(&b).ok()) else {
        return false;
    };
    let mut bytes = [0u8; 16];
    alloy_primitives::hex::decode_to_slice(&nonce, &mut bytes).is_ok() && nonce_opaque(&bytes) == opaque
}

/// The 32-byte attribution memo layout: `ef1ed712` (keccak256("mpp")[..4]),
/// version `01`, keccak256(realm)[..10], keccak256(client id)[..10] or
/// zeros, keccak256(challenge id)[..7].
pub const MEMO_TAG: [u8; 4] = [0xef, 0x1e, 0xd7, 0x12];
pub const MEMO_VERSION: u8 = 0x01;

/// What a memo must carry to bind a payment to one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    server: [u8; 10],
    nonce: [u8; 7],
}

impl Binding {
    pub fn new(realm: &str, challenge_id: &str) -> Self {
        let mut server = [0; 10];
        server.copy_from_slice(&keccak256(realm.as_bytes())[..10]);
        let mut nonce = [0; 7];
        nonce.copy_from_slice(&keccak256(challenge_id.as_bytes())[..7]);
        Binding { server, nonce }
    }

    /// Whether `memo` is an MPP memo bound to this realm and challenge
    /// (any client id).
    pub fn matches(&self, memo: &B256) -> bool {
        is_mpp_memo(memo) && memo[5..15] == self.server && memo[25..32] == self.nonce
    }

    /// The anonymous memo (no client id) for this binding: what a test
    /// client writes.
    pub fn memo(&self) -> B256 {
        let mut m = [0u8; 32];
        m[..4].copy_from_slice(&MEMO_TAG);
        m[4] = MEMO_VERSION;
        m[5..15].copy_from_slice(&self.server);
        m[25..32].copy_from_slice(&self.nonce);
        B256::from(m)
    }
}

pub fn is_mpp_memo(memo: &B256) -> bool {
    memo[..4] == MEMO_TAG && memo[4] == MEMO_VERSION
}

/// The `Payment-Receipt` value for a settled transaction.
pub fn receipt(tx_hash: &TxHash, settled_at: OffsetDateTime) -> String {
    receipt_for(&tx_hash.to_string(), settled_at)
}

/// The `Payment-Receipt` value naming `reference`: a transaction hash, or
/// for a `proof` the challenge id (no transaction exists).
pub fn receipt_for(reference: &str, settled_at: OffsetDateTime) -> String {
    let v = json!({
        "method": METHOD,
        "reference": reference,
        "status": "success",
        "timestamp": format_expires(settled_at),
    });
    b64_encode(&canonical_value_bytes(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use time::macros::datetime;

    const SECRET: &[u8] = b"settlegate-test-secret-0123456789abcdef";
    const REQUEST_B64: &str = "eyJhbW91bnQiOiIxMDAwMDAwIiwiY3VycmVuY3kiOiIweDIwYzAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDEiLCJtZXRob2REZXRhaWxzIjp7ImNoYWluSWQiOjQyNDMxLCJzdXBwb3J0ZWRNb2RlcyI6WyJwdXNoIl19LCJyZWNpcGllbnQiOiIweDcwOTk3OTcwQzUxODEyZGMzQTAxMEM3ZDAxYjUwZTBkMTdkYzc5QzgifQ";
    const ID: &str = "d1pAw-OCELCL1t18fFRjPG727Zz_e08OTlvP1ldBphg";
    const REALM: &str = "api.settlegate.test";
    const EXPIRES: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);
    const BEFORE: OffsetDateTime = datetime!(2029-12-31 23:59:00 UTC);
    const STRANGER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

    /// The challenges below live 60 s (BEFORE to EXPIRES); the policy's
    /// bound is ten minutes.
    const LIFETIME: time::Duration = time::Duration::minutes(10);

    fn secrets() -> Secrets {
        Secrets::new(SECRET.to_vec(), None).unwrap()
    }

    fn nonce() -> Option<String> {
        Some(nonce_opaque(&[0x5a; 16]))
    }

    fn check(
        e: &Echo,
        s: &Secrets,
        realm: &str,
        req: &ChargeRequest,
        now: OffsetDateTime,
    ) -> Result<(), ChallengeProblem> {
        check_challenge(e, s, realm, req, LIFETIME, now)
    }

    fn check_session(
        e: &Echo,
        s: &Secrets,
        realm: &str,
        req: &crate::session::SessionRequest,
        now: OffsetDateTime,
    ) -> Result<(), ChallengeProblem> {
        check_session_challenge(e, s, realm, req, LIFETIME, now)
    }

    fn push_request() -> ChargeRequest {
        ChargeRequest {
            amount: "1000000".parse().unwrap(),
            currency: "0x20c0000000000000000000000000000000000001".parse().unwrap(),
            recipient: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse().unwrap(),
            chain_id: 42431,
            modes: Modes {
                pull: false,
                push: true,
            },
            fee_payer: false,
            splits: Vec::new(),
        }
    }

    #[test]
    fn a_sponsored_request_says_fee_payer_and_is_pinned_as_issued() {
        let plain = ChargeRequest {
            modes: Modes::BOTH,
            ..push_request()
        };
        let sponsored = ChargeRequest {
            modes: Modes {
                pull: true,
                push: false,
            },
            fee_payer: true,
            ..push_request()
        };
        assert_eq!(sponsored.to_value()["methodDetails"]["feePayer"], true);
        assert_eq!(sponsored.to_value()["methodDetails"]["supportedModes"], json!(["pull"]));
        assert!(plain.to_value()["methodDetails"].get("feePayer").is_none());
        let s = secrets();
        let e = echo(&Challenge::mint(&s, REALM, &sponsored, EXPIRES, nonce()));
        assert!(echoed_fee_payer(&e));
        assert!(!echoed_fee_payer(&echo(&Challenge::mint(
            &s, REALM, &plain, EXPIRES, None
        ))));
        assert_eq!(check(&e, &s, REALM, &sponsored, BEFORE), Ok(()));
        // A sponsored challenge is not the route's plain request.
        assert!(matches!(
            check(&e, &s, REALM, &plain, BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
        assert_eq!(echoed_expires(&e), Some(EXPIRES));
    }

    fn echo(c: &Challenge) -> Echo {
        Echo {
            id: c.id.clone(),
            realm: c.realm.clone(),
            method: METHOD.into(),
            intent: INTENT.into(),
            request: c.request.clone(),
            expires: Some(c.expires.clone()),
            opaque: c.opaque.clone(),
            ..Echo::default()
        }
    }

    #[test]
    fn the_sdks_test_vector() {
        let c = Challenge::mint(&secrets(), REALM, &push_request(), EXPIRES, None);
        assert_eq!(c.request, REQUEST_B64);
        assert_eq!(c.id, ID);
        assert_eq!(c.expires, "2030-01-01T00:00:00Z");
        assert_eq!(
            c.header(),
            format!(
                "Payment id=\"{ID}\", realm=\"{REALM}\", method=\"tempo\", intent=\"charge\", request=\"{REQUEST_B64}\", expires=\"2030-01-01T00:00:00Z\""
            )
        );
        // The other vectors of the same challenge, through the input slots.
        let with = |digest: Option<&str>, opaque: Option<&str>, expires: Option<&str>| {
            let input = hmac_input(REALM, METHOD, INTENT, REQUEST_B64, expires, digest, opaque);
            b64_encode(&Secrets::id(SECRET, &input))
        };
        let exp = Some("2030-01-01T00:00:00Z");
        assert_eq!(
            with(None, Some("eyJvcmRlciI6IjQyIn0"), exp),
            "Ft_TtzvLQbtpXsANWvQqBsoxrBBMrTcXicKTg-0pP9U"
        );
        assert_eq!(
            with(
                Some("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
                None,
                exp
            ),
            "N02VxMCxkttLbDtkZOtVaW_obrjWM4YnxdpnQk0GC2c"
        );
        assert_eq!(with(None, None, None), "-ap-K76i-t67yBb35DlsQtNWeSBeamCAiYpCsOLe29Y");
        let with_opaque = Challenge::mint(
            &secrets(),
            REALM,
            &push_request(),
            EXPIRES,
            Some("eyJvcmRlciI6IjQyIn0".into()),
        );
        assert_eq!(with_opaque.id, "Ft_TtzvLQbtpXsANWvQqBsoxrBBMrTcXicKTg-0pP9U");
        assert!(with_opaque.header().ends_with(", opaque=\"eyJvcmRlciI6IjQyIn0\""));
    }

    #[test]
    fn nonces_make_every_challenge_id_unique() {
        let s = secrets();
        let a = Challenge::mint(&s, REALM, &push_request(), EXPIRES, Some(nonce_opaque(&[1; 16])));
        let b = Challenge::mint(&s, REALM, &push_request(), EXPIRES, Some(nonce_opaque(&[2; 16])));
        assert_ne!(a.id, b.id);
        assert_eq!(
            serde_json::from_slice::<Value>(&b64_decode(a.opaque.as_deref().unwrap()).unwrap()).unwrap(),
            json!({"_mpp_nonce": "01".repeat(16)})
        );
        for c in [&a, &b] {
            assert_eq!(check(&echo(c), &s, REALM, &push_request(), BEFORE), Ok(()));
        }
        // Another challenge's nonce, or none, breaks the id.
        let swapped = Echo {
            opaque: b.opaque.clone(),
            ..echo(&a)
        };
        let dropped = Echo {
            opaque: None,
            ..echo(&a)
        };
        for e in [swapped, dropped] {
            assert!(matches!(
                check(&e, &s, REALM, &push_request(), BEFORE),
                Err(ChallengeProblem::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_minted_challenge_checks_and_every_alteration_is_refused() {
        let s = secrets();
        let req = push_request();
        let c = Challenge::mint(&s, REALM, &req, EXPIRES, nonce());
        assert_eq!(check(&echo(&c), &s, REALM, &req, BEFORE), Ok(()));

        let invalid = |e: &Echo| matches!(check(e, &s, REALM, &req, BEFORE), Err(ChallengeProblem::Invalid(_)));
        let dearer = ChargeRequest {
            amount: "1".parse().unwrap(),
            ..req.clone()
        };
        let elsewhere = ChargeRequest {
            recipient: Address::repeat_byte(7),
            ..req.clone()
        };
        for altered in [
            Echo {
                request: dearer.encode(),
                ..echo(&c)
            },
            Echo {
                request: elsewhere.encode(),
                ..echo(&c)
            },
            Echo {
                expires: Some("2031-01-01T00:00:00Z".into()),
                ..echo(&c)
            },
            Echo {
                expires: None,
                ..echo(&c)
            },
            Echo {
                realm: "other".into(),
                ..echo(&c)
            },
            Echo {
                method: "stripe".into(),
                ..echo(&c)
            },
            Echo {
                intent: "session".into(),
                ..echo(&c)
            },
            Echo {
                digest: Some("sha-256=:x:".into()),
                ..echo(&c)
            },
            Echo {
                opaque: Some("e30".into()),
                ..echo(&c)
            },
            Echo {
                id: format!("{}A", &c.id[..42]),
                ..echo(&c)
            },
            Echo {
                id: "".into(),
                ..echo(&c)
            },
            Echo {
                id: "!!".into(),
                ..echo(&c)
            },
        ] {
            assert!(invalid(&altered), "{altered:?}");
        }
        // Minted with another secret.
        let other = Secrets::new(b"another-secret-of-at-least-32-bytes!".to_vec(), None).unwrap();
        let foreign = Challenge::mint(&other, REALM, &req, EXPIRES, nonce());
        assert!(invalid(&echo(&foreign)));
        // Valid, but this route costs something else now (a genome change).
        assert!(matches!(
            check(&echo(&c), &s, REALM, &dearer, BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
        // Or another realm now.
        assert!(matches!(
            check(&echo(&c), &s, "other", &req, BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
        // Expired: at the instant and after.
        for now in [EXPIRES, EXPIRES + time::Duration::seconds(1)] {
            assert_eq!(check(&echo(&c), &s, REALM, &req, now), Err(ChallengeProblem::Expired));
        }
        // Fractions and offsets in expires are RFC 3339 too; the HMAC
        // covers the string as echoed, so only a minted one passes.
        assert!(OffsetDateTime::parse("2030-01-01T01:00:00.123+01:00", &Rfc3339).is_ok());
    }

    #[test]
    fn splits_travel_in_method_details_and_are_pinned() {
        let split = |to: u8, amount: &str, memo: Option<B256>| Split {
            recipient: Address::repeat_byte(to),
            amount: amount.parse().unwrap(),
            memo,
        };
        let req = ChargeRequest {
            splits: vec![
                split(0xa1, "50000", None),
                split(0xc4, "10000", Some(B256::repeat_byte(0xde))),
            ],
            ..push_request()
        };
        assert_eq!(
            req.to_value()["methodDetails"]["splits"],
            json!([
                {"amount": "50000", "recipient": Address::repeat_byte(0xa1).to_checksum(None)},
                {"amount": "10000", "memo": format!("0x{}", "de".repeat(32)),
                 "recipient": Address::repeat_byte(0xc4).to_checksum(None)},
            ])
        );
        // no splits: no field (the request of every other route is unchanged)
        assert!(push_request().to_value()["methodDetails"].get("splits").is_none());
        let s = secrets();
        let c = Challenge::mint(&s, REALM, &req, EXPIRES, nonce());
        assert_eq!(check(&echo(&c), &s, REALM, &req, BEFORE), Ok(()));
        // the route's splits changed (another share, order, memo, none):
        // the challenge is not this route's any more
        for now in [
            ChargeRequest {
                splits: vec![split(0xa1, "50001", None), req.splits[1].clone()],
                ..req.clone()
            },
            ChargeRequest {
                splits: vec![req.splits[1].clone(), req.splits[0].clone()],
                ..req.clone()
            },
            ChargeRequest {
                splits: vec![req.splits[0].clone(), split(0xc4, "10000", None)],
                ..req.clone()
            },
            push_request(),
        ] {
            assert!(
                matches!(
                    check(&echo(&c), &s, REALM, &now, BEFORE),
                    Err(ChallengeProblem::Invalid(_))
                ),
                "{:?}",
                now.splits
            );
        }
        // an echo that drops the splits is not the one minted
        let dropped = Echo {
            request: push_request().encode(),
            ..echo(&c)
        };
        assert!(matches!(
            check(&dropped, &s, REALM, &push_request(), BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
    }

    #[test]
    fn only_the_minted_spelling_of_an_id_verifies() {
        let s = secrets();
        let req = push_request();
        let c = Challenge::mint(&s, REALM, &req, EXPIRES, nonce());
        assert_eq!(c.id.len(), 43);
        let mac = crate::b64url::decode(&c.id).unwrap();
        // The last character carries two unused bits: the three other
        // characters with the same top four bits decode to the same MAC.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = alphabet.find(c.id.chars().last().unwrap()).unwrap();
        let mut spellings: Vec<String> = (0..4)
            .map(|low| alphabet.as_bytes()[(last & !3) | low] as char)
            .filter(|ch| !c.id.ends_with(*ch))
            .map(|ch| format!("{}{ch}", &c.id[..42]))
            .collect();
        assert_eq!(spellings.len(), 3);
        let standard = base64::engine::general_purpose::STANDARD.encode(&mac);
        assert_ne!(
            standard.trim_end_matches('='),
            c.id,
            "this MAC has a + or /: pick another nonce"
        );
        spellings.extend([
            format!("{}=", c.id),
            standard.clone(),
            standard.trim_end_matches('=').to_owned(),
            format!(" {}", c.id),
            format!("{}\n", c.id),
            c.id.to_lowercase(),
        ]);
        for id in spellings {
            assert_eq!(
                check(
                    &Echo {
                        id: id.clone(),
                        ..echo(&c)
                    },
                    &s,
                    REALM,
                    &req,
                    BEFORE
                ),
                Err(ChallengeProblem::Invalid(
                    "the challenge was not issued by this service".into()
                )),
                "{id:?}"
            );
        }
        assert_eq!(check(&echo(&c), &s, REALM, &req, BEFORE), Ok(()));
    }

    #[test]
    fn the_previous_secret_verifies_only_inside_its_window() {
        let req = push_request();
        let old = secrets();
        let minted = Challenge::mint(&old, REALM, &req, EXPIRES, nonce());
        let until = BEFORE + time::Duration::seconds(10);
        let rotated = Secrets::new(
            b"the-new-secret-of-at-least-32-bytes!".to_vec(),
            Some((SECRET.to_vec(), until)),
        )
        .unwrap();
        assert_eq!(check(&echo(&minted), &rotated, REALM, &req, BEFORE), Ok(()));
        assert!(matches!(
            check(&echo(&minted), &rotated, REALM, &req, until),
            Err(ChallengeProblem::Invalid(_))
        ));
        // The new secret mints.
        let fresh = Challenge::mint(&rotated, REALM, &req, EXPIRES, nonce());
        assert_ne!(fresh.id, minted.id);
        assert_eq!(check(&echo(&fresh), &rotated, REALM, &req, until), Ok(()));
    }

    #[test]
    fn short_and_weak_secrets_are_refused() {
        assert_eq!(
            Secrets::new(vec![b'a'; 31], None).unwrap_err(),
            RefusedSecret(WeakSecret::Short(31))
        );
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            Secrets::new(SECRET.to_vec(), Some((vec![b'b'; 5], now))).unwrap_err(),
            RefusedSecret(WeakSecret::Short(5))
        );
        assert_eq!(
            Secrets::new(vec![b'a'; 32], None).unwrap_err(),
            RefusedSecret(WeakSecret::FewDistinct(1))
        );
        assert_eq!(
            Secrets::new(SECRET.to_vec(), Some(("0123456789".repeat(4).into_bytes(), now))).unwrap_err(),
            RefusedSecret(WeakSecret::Repeats(10))
        );
        assert!(
            RefusedSecret(WeakSecret::Short(3))
                .to_string()
                .starts_with("an MPP challenge secret must be at least 32 bytes, got 3")
        );
        assert!(!format!("{:?}", secrets()).contains("settlegate-test-secret"));
    }

    #[test]
    fn the_worked_credential_example_parses() {
        let cred = "eyJjaGFsbGVuZ2UiOnsiZXhwaXJlcyI6IjIwMzAtMDEtMDFUMDA6MDA6MDBaIiwiaWQiOiJkMXBBdy1PQ0VMQ0wxdDE4ZkZSalBHNzI3WnpfZTA4T1RsdlAxbGRCcGhnIiwiaW50ZW50IjoiY2hhcmdlIiwibWV0aG9kIjoidGVtcG8iLCJyZWFsbSI6ImFwaS5zZXR0bGVnYXRlLnRlc3QiLCJyZXF1ZXN0IjoiZXlKaGJXOTFiblFpT2lJeE1EQXdNREF3SWl3aVkzVnljbVZ1WTNraU9pSXdlREl3WXpBd01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TURFaUxDSnRaWFJvYjJSRVpYUmhhV3h6SWpwN0ltTm9ZV2x1U1dRaU9qUXlORE14TENKemRYQndiM0owWldSTmIyUmxjeUk2V3lKd2RYTm9JbDE5TENKeVpXTnBjR2xsYm5RaU9pSXdlRGN3T1RrM09UY3dRelV4T0RFeVpHTXpRVEF4TUVNM1pEQXhZalV3WlRCa01UZGtZemM1UXpnaWZRIn0sInBheWxvYWQiOnsiaGFzaCI6IjB4YWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYiIsInR5cGUiOiJoYXNoIn0sInNvdXJjZSI6ImRpZDpwa2g6ZWlwMTU1OjQyNDMxOjB4ZjM5RmQ2ZTUxYWFkODhGNkY0Y2U2YUI4ODI3Mjc5Y2ZmRmI5MjI2NiJ9";
        let c = parse_payment_credential(cred).unwrap();
        assert_eq!(c.challenge.id, ID);
        assert_eq!(
            c.payload,
            Payload::Hash(format!("0x{}", "ab".repeat(32)).parse().unwrap())
        );
        assert_eq!(
            c.source,
            Some(Source {
                chain_id: 42431,
                address: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse().unwrap()
            })
        );
        // Its challenge carries no nonce opaque: minted by the SDKs'
        // rules, not by this service, which always adds one.
        let s = secrets();
        assert_eq!(
            check(&c.challenge, &s, REALM, &push_request(), BEFORE),
            Err(ChallengeProblem::Invalid(
                "the challenge's opaque is not the nonce this service issues".into()
            ))
        );
    }

    fn encode(v: &Value) -> String {
        b64_encode(&serde_json::to_vec(v).unwrap())
    }

    fn good() -> Value {
        json!({
            "challenge": {"id": ID, "realm": REALM, "method": "tempo", "intent": "charge",
                          "request": REQUEST_B64, "expires": "2030-01-01T00:00:00Z", "description": "ignored"},
            "payload": {"type": "hash", "hash": format!("0x{}", "AB".repeat(32))},
            "source": "did:pkh:eip155:42431:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        })
    }

    #[test]
    fn malformed_credentials_are_refused_with_a_reason() {
        assert!(parse_payment_credential(&encode(&good())).is_ok());
        // Canonical padding decodes (the vectors accept it); the standard
        // alphabet, whitespace and trailing bits do not (no client sends
        // them: mppx 0.11.0 and pympp 0.16.0 write unpadded base64url).
        let mut odd = good();
        odd["x"] = json!("???~~~>>>");
        let bytes = serde_json::to_vec(&odd).unwrap();
        let padded = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        assert!(parse_payment_credential(&padded).is_ok());
        let standard = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(standard.contains(['+', '/']), "{standard}");
        let unpadded = encode(&odd);
        for spelling in [
            standard.clone(),
            standard.trim_end_matches('=').to_owned(),
            format!("{}\n{}", &unpadded[..8], &unpadded[8..]),
            format!("{unpadded}===="),
        ] {
            let e = parse_payment_credential(&spelling).unwrap_err();
            assert!(e.0.starts_with("the credential is not base64url: "), "{e}");
        }

        let with = |pointer: &str, v: Value| {
            let mut g = good();
            *g.pointer_mut(pointer).unwrap() = v;
            encode(&g)
        };
        let without = |parent: &str, key: &str| {
            let mut g = good();
            g.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
            encode(&g)
        };
        let cases = [
            "not base64 at all!".to_owned(),
            b64_encode(b"not json"),
            b64_encode(b"[]"),
            b64_encode(b"{}"),
            with("/payload/type", json!("proof")),
            with("/payload/type", json!(7)),
            with("/payload/hash", json!("0x1234")),
            with("/payload/hash", json!(null)),
            without("/payload", "hash"),
            without("", "payload"),
            without("", "challenge"),
            without("/challenge", "id"),
            with("/challenge/id", json!(5)),
            with("/challenge/expires", json!(2030)),
            with(
                "/source",
                json!("did:pkh:eip155:042431:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            ),
            with("/source", json!("did:pkh:eip155:42431:0xf39F")),
            with("/source", json!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")),
            with("/source", json!(1)),
            encode(&json!({"challenge": good()["challenge"], "payload": {"type": "transaction"}})),
            encode(&json!({"challenge": good()["challenge"], "payload": {"type": "transaction", "signature": "76ab"}})),
            encode(&json!({"challenge": good()["challenge"], "payload": {"type": "transaction", "signature": "0xzz"}})),
            encode(
                &json!({"challenge": good()["challenge"], "payload": {"type": "transaction",
                "signature": format!("0x{}", "ab".repeat(MAX_TRANSACTION_BYTES + 1))}}),
            ),
        ];
        for c in cases {
            assert!(parse_payment_credential(&c).is_err(), "{c}");
        }
    }

    #[test]
    fn a_malformed_credential_is_not_quoted_back_whole() {
        let long = "x".repeat(4000);
        let mut g = good();
        g["challenge"] = json!(long);
        let m = parse_payment_credential(&encode(&g)).unwrap_err().to_string();
        assert!(
            m.starts_with("malformed Payment credential: the credential JSON: invalid type"),
            "{m}"
        );
        assert!(m.ends_with('…'), "{m}");
        assert!(m.chars().count() < 100 + MAX_DETAIL_CHARS, "{m}");
    }

    #[test]
    fn a_payload_type_of_control_characters_is_quoted_within_the_bound() {
        // found by the payment_credential fuzz target in CI: 32 DEL characters
        // were cut before `{:?}` escaped each to six, a 260-character refusal
        let json = format!(
            r#"{{"challenge":{{"id":"d1pAw-OCELCL1t18fFRjPG727Zz_e08Og","realm":"api.settlegate.test","method":"tempo","intent":"charge","request":"eyJhbW"}},"payload":{{"type":"{}transaction","signature":"0x76f8{}"}}}}"#,
            "\u{7f}".repeat(50),
            "0".repeat(60)
        );
        let m = parse_payment_credential(&b64_encode(json.as_bytes()))
            .unwrap_err()
            .to_string();
        assert!(m.contains("is not hash, transaction or proof"), "{m}");
        assert!(
            m.chars().count() <= 100 + MAX_DETAIL_CHARS,
            "{} chars: {m}",
            m.chars().count()
        );
    }

    #[test]
    fn a_transaction_payload_is_named_by_the_keccak_of_its_envelope() {
        let v =
            json!({"challenge": good()["challenge"], "payload": {"type": "transaction", "signature": "0x76c0ffee"}});
        let c = parse_payment_credential(&encode(&v)).unwrap();
        assert_eq!(
            c.payload,
            Payload::Transaction(Bytes::from(vec![0x76, 0xc0, 0xff, 0xee]))
        );
        assert_eq!(
            c.payload.tx_hash(),
            Some(TxHash::from(keccak256([0x76, 0xc0, 0xff, 0xee])))
        );
    }

    #[test]
    fn a_proof_payload_needs_a_signature_and_a_source() {
        let sig = format!("0x{}", "ab".repeat(65));
        let proof = |payload: Value, source: Option<&str>| {
            let mut v = json!({"challenge": good()["challenge"], "payload": payload});
            if let Some(s) = source {
                v["source"] = json!(s);
            }
            parse_payment_credential(&encode(&v))
        };
        let did = "did:pkh:eip155:42431:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        let c = proof(json!({"type": "proof", "signature": sig}), Some(did)).unwrap();
        assert_eq!(c.payload, Payload::Proof(Bytes::from(vec![0xab; 65])));
        assert_eq!(c.payload.tx_hash(), None);
        assert_eq!(c.source.map(|s| s.chain_id), Some(42431));
        for (payload, source) in [
            (json!({"type": "proof", "signature": sig}), None),
            (json!({"type": "proof"}), Some(did)),
            (json!({"type": "proof", "signature": "abab"}), Some(did)),
            (json!({"type": "proof", "signature": "0x"}), Some(did)),
            (json!({"type": "proof", "signature": "0xzz"}), Some(did)),
            (
                json!({"type": "proof", "signature": format!("0x{}", "ab".repeat(MAX_PROOF_BYTES + 1))}),
                Some(did),
            ),
            (
                json!({"type": "proof", "signature": sig}),
                Some("did:pkh:eip155:42431:0x12"),
            ),
            (json!({"type": "Proof", "signature": sig}), Some(did)),
        ] {
            assert!(proof(payload.clone(), source).is_err(), "{payload} {source:?}");
        }
        let m = proof(json!({"type": "proof", "signature": sig}), None)
            .unwrap_err()
            .to_string();
        assert!(m.contains("needs `source`"), "{m}");
    }

    #[test]
    fn attribution_memo_vectors() {
        assert_eq!(&keccak256(b"mpp")[..4], &MEMO_TAG);
        let b = Binding::new(REALM, ID);
        let anonymous: B256 = "0xef1ed712017bb5ab224008c615c7440000000000000000000025d1e5e3e14040"
            .parse()
            .unwrap();
        let with_client: B256 = "0xef1ed712017bb5ab224008c615c7441614c8ec7755b88da72b25d1e5e3e14040"
            .parse()
            .unwrap();
        assert_eq!(b.memo(), anonymous);
        assert!(b.matches(&anonymous));
        assert!(b.matches(&with_client));
        assert!(!Binding::new("other realm", ID).matches(&anonymous));
        assert!(!Binding::new(REALM, "another-challenge-id").matches(&anonymous));
        let mut wrong_version = anonymous;
        wrong_version.0[4] = 2;
        assert!(!b.matches(&wrong_version));
        assert!(!b.matches(&B256::ZERO));
    }

    #[test]
    fn the_receipt_is_jcs_base64url() {
        let h: TxHash = format!("0x{}", "ab".repeat(32)).parse().unwrap();
        let r = receipt(&h, datetime!(2030-01-01 00:00:05 UTC));
        let decoded: Value = serde_json::from_slice(&b64_decode(&r).unwrap()).unwrap();
        assert_eq!(
            decoded,
            json!({"method": "tempo", "reference": h.to_string(), "status": "success", "timestamp": "2030-01-01T00:00:05Z"})
        );
        assert!(!r.contains('='));
    }

    fn session_request() -> crate::session::SessionRequest {
        crate::session::SessionRequest {
            amount: 25,
            currency: "0x20c0000000000000000000000000000000000001".parse().unwrap(),
            recipient: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse().unwrap(),
            escrow: "0xe1c4d3dce17bc111181ddf716f75bae49e61a336".parse().unwrap(),
            chain_id: 42431,
            min_voucher_delta: None,
            suggested_deposit: Some(10_000_000),
        }
    }

    fn session_echo(c: &Challenge) -> Echo {
        Echo {
            intent: c.intent.into(),
            ..echo(c)
        }
    }

    #[test]
    fn a_session_challenge_says_its_intent_and_checks_only_as_a_session() {
        let c = Challenge::mint_session(&secrets(), REALM, &session_request(), EXPIRES, nonce());
        assert!(c.header().contains(r#"intent="session""#), "{}", c.header());
        assert_eq!(
            check_session(&session_echo(&c), &secrets(), REALM, &session_request(), BEFORE),
            Ok(())
        );
        assert_eq!(
            check_session(&session_echo(&c), &secrets(), REALM, &session_request(), EXPIRES),
            Err(ChallengeProblem::Expired)
        );
        let dearer = crate::session::SessionRequest {
            amount: 26,
            ..session_request()
        };
        assert!(matches!(
            check_session(&session_echo(&c), &secrets(), REALM, &dearer, BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
        // The same id echoed with intent charge fails the HMAC, and a charge
        // challenge echoed with intent session too.
        assert!(matches!(
            check_session(&echo(&c), &secrets(), REALM, &session_request(), BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
        let charge = Challenge::mint(&secrets(), REALM, &push_request(), EXPIRES, nonce());
        assert!(charge.header().contains(r#"intent="charge""#));
        let relabelled = Echo {
            intent: SESSION_INTENT.into(),
            ..echo(&charge)
        };
        assert!(matches!(
            check_session(&relabelled, &secrets(), REALM, &session_request(), BEFORE),
            Err(ChallengeProblem::Invalid(_))
        ));
    }

    #[test]
    fn any_credential_dispatches_on_the_echoed_intent() {
        let c = Challenge::mint_session(&secrets(), REALM, &session_request(), EXPIRES, nonce());
        let sig = "0xeb7147c99425f30bf67080d707f7e5151745d9e9f9822be39e159c7fa54139d40392c7165799c3cae89a567723ae001824ef29ebe1205dba19c97162aad0d9aa1b";
        let channel = "0x6d0f4fdf1f2f6a1f6c1b0fbd6a7d5c2c0a8d3d7b1f6a9c1b3e2d4a5b6c7d8e9f";
        let cred = json!({
            "challenge": {"id": c.id, "realm": c.realm, "method": "tempo", "intent": "session",
                "request": c.request, "expires": c.expires, "opaque": c.opaque},
            "payload": {"action": "voucher", "channelId": channel, "cumulativeAmount": "25", "signature": sig},
            "source": "did:pkh:eip155:42431:0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        });
        let b64 = b64_encode(cred.to_string().as_bytes());
        let AnyCredential::Session {
            challenge,
            action,
            source,
        } = parse_any_credential(&b64).unwrap()
        else {
            panic!("not a session credential")
        };
        assert_eq!(challenge, session_echo(&c));
        assert_eq!(
            (action.name(), action.channel_id().to_string()),
            ("voucher", channel.to_owned())
        );
        assert_eq!(source.map(|s| s.chain_id), Some(42431));
        let mut bad = cred.clone();
        bad["payload"]["action"] = json!("refund");
        assert!(matches!(
            parse_any_credential(&b64_encode(bad.to_string().as_bytes())),
            Err(AnyMalformed::Session(_))
        ));
        let charge = json!({
            "challenge": {"id": "x", "realm": REALM, "method": "tempo", "intent": "charge", "request": "e30"},
            "payload": {"type": "hash", "hash": format!("0x{}", "ab".repeat(32))},
        });
        assert!(matches!(
            parse_any_credential(&b64_encode(charge.to_string().as_bytes())),
            Ok(AnyCredential::Charge(_))
        ));
        assert!(matches!(parse_any_credential("%%%"), Err(AnyMalformed::Envelope(_))));
    }

    /// An echo whose id the real secret minted over exactly these fields:
    /// what another instance sharing the secret, under another policy (or
    /// a leaked id oracle), could hand out.
    fn minted_over(
        realm: &str,
        method: &str,
        intent: &str,
        request: &str,
        expires: &str,
        digest: Option<&str>,
        opaque: Option<&str>,
    ) -> Echo {
        let input = hmac_input(realm, method, intent, request, Some(expires), digest, opaque);
        Echo {
            id: b64_encode(&Secrets::id(SECRET, &input)),
            realm: realm.into(),
            method: method.into(),
            intent: intent.into(),
            request: request.into(),
            expires: Some(expires.into()),
            digest: digest.map(Into::into),
            opaque: opaque.map(Into::into),
            ..Echo::default()
        }
    }

    fn jcs(v: &Value) -> String {
        b64_encode(&crate::canonical::canonical_value_bytes(v))
    }

    /// Every request member altered in turn, each echo minted with the real
    /// secret: `invalid-challenge` each time, because the request is
    /// compared whole with what the route issues now.
    fn altered_requests(route: &Value, changes: &[(&str, Value)]) -> Vec<(String, String)> {
        changes
            .iter()
            .map(|(pointer, v)| {
                let mut r = route.clone();
                match (pointer.rsplit_once('/'), v) {
                    (Some((parent, key)), Value::Null) => {
                        r.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
                    }
                    (Some((parent, key)), v) => {
                        r.pointer_mut(parent).unwrap()[key] = v.clone();
                    }
                    (None, _) => unreachable!(),
                }
                ((*pointer).to_owned() + " = " + &v.to_string(), jcs(&r))
            })
            .collect()
    }

    #[test]
    fn every_echoed_field_of_a_charge_challenge_is_pinned_against_the_policy() {
        let s = secrets();
        let req = push_request();
        let route = req.to_value();
        let exp = "2030-01-01T00:00:00Z";
        let n = nonce().unwrap();
        let genuine = minted_over(REALM, METHOD, INTENT, &req.encode(), exp, None, Some(&n));
        assert_eq!(check(&genuine, &s, REALM, &req, BEFORE), Ok(()));
        let invalid = |e: &Echo| matches!(check(e, &s, REALM, &req, BEFORE), Err(ChallengeProblem::Invalid(_)));

        let lower_recipient = crate::primitives::address_lower(&req.recipient);
        let requests = altered_requests(
            &route,
            &[
                ("/amount", json!("1")),
                ("/amount", json!("1000001")),
                ("/amount", json!(1000000)),
                ("/currency", json!("0x20c0000000000000000000000000000000000002")),
                ("/currency", json!("0x20C0000000000000000000000000000000000001")),
                ("/recipient", json!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")),
                ("/recipient", json!(lower_recipient)),
                ("/methodDetails/chainId", json!(4217)),
                ("/methodDetails/chainId", json!("42431")),
                ("/methodDetails/supportedModes", json!(["pull", "push"])),
                ("/methodDetails/supportedModes", json!(["pull"])),
                ("/methodDetails/supportedModes", Value::Null),
                ("/methodDetails/memo", json!(format!("0x{}", "00".repeat(32)))),
                ("/methodDetails/feePayer", json!(true)),
                ("/methodDetails/splits", json!([{"recipient": STRANGER, "amount": "1"}])),
                ("/description", json!("free lunch")),
                ("/externalId", json!("order-1")),
                ("/methodDetails", Value::Null),
                ("/unknown", json!(0)),
            ],
        );
        assert_eq!(requests.len(), 19);
        for (what, request) in &requests {
            let e = minted_over(REALM, METHOD, INTENT, request, exp, None, Some(&n));
            assert!(invalid(&e), "{what}");
        }
        let other_nonces = [
            None,
            Some("e30".to_owned()),
            Some(jcs(&json!({"_mpp_nonce": "5a".repeat(16), "tier": "gold"}))),
            Some(jcs(&json!({"_mpp_nonce": "5A".repeat(16)}))),
            Some(jcs(&json!({"_mpp_nonce": "5a".repeat(15)}))),
            Some(jcs(&json!({"_mpp_nonce": format!("0x{}", "5a".repeat(16))}))),
            Some(format!("{n}=")),
        ];
        for opaque in &other_nonces {
            let e = minted_over(REALM, METHOD, INTENT, &req.encode(), exp, None, opaque.as_deref());
            assert!(invalid(&e), "opaque {opaque:?}");
        }
        let far = format_expires(BEFORE + LIFETIME + time::Duration::seconds(1));
        for (what, e) in [
            (
                "realm",
                minted_over("Other API", METHOD, INTENT, &req.encode(), exp, None, Some(&n)),
            ),
            (
                "method",
                minted_over(REALM, "stripe", INTENT, &req.encode(), exp, None, Some(&n)),
            ),
            (
                "intent",
                minted_over(REALM, METHOD, SESSION_INTENT, &req.encode(), exp, None, Some(&n)),
            ),
            (
                "digest",
                minted_over(
                    REALM,
                    METHOD,
                    INTENT,
                    &req.encode(),
                    exp,
                    Some("sha-256=:X48E9q:"),
                    Some(&n),
                ),
            ),
            (
                "expires too far",
                minted_over(REALM, METHOD, INTENT, &req.encode(), &far, None, Some(&n)),
            ),
            (
                "expires with a fraction",
                minted_over(
                    REALM,
                    METHOD,
                    INTENT,
                    &req.encode(),
                    "2030-01-01T00:00:00.000Z",
                    None,
                    Some(&n),
                ),
            ),
            (
                "expires with an offset",
                minted_over(
                    REALM,
                    METHOD,
                    INTENT,
                    &req.encode(),
                    "2030-01-01T01:00:00+01:00",
                    None,
                    Some(&n),
                ),
            ),
            (
                "expires not a time",
                minted_over(REALM, METHOD, INTENT, &req.encode(), "soon", None, Some(&n)),
            ),
            (
                "description",
                Echo {
                    description: Some(json!("free")),
                    ..genuine.clone()
                },
            ),
            (
                "header",
                Echo {
                    header: Some(json!("x")),
                    ..genuine.clone()
                },
            ),
            (
                "request over 16 KiB",
                minted_over(
                    REALM,
                    METHOD,
                    INTENT,
                    &"e".repeat(MAX_REQUEST_PARAM_LEN + 1),
                    exp,
                    None,
                    Some(&n),
                ),
            ),
        ] {
            assert!(invalid(&e), "{what}");
        }
        let huge = minted_over(
            REALM,
            METHOD,
            INTENT,
            &"e".repeat(MAX_REQUEST_PARAM_LEN + 1),
            exp,
            None,
            Some(&n),
        );
        assert_eq!(
            check(&huge, &s, REALM, &req, BEFORE),
            Err(ChallengeProblem::Invalid(
                "the challenge's request is longer than 16 KiB".into()
            ))
        );
        // A null description is no description.
        let null = Echo {
            description: None,
            header: None,
            ..genuine.clone()
        };
        assert_eq!(check(&null, &s, REALM, &req, BEFORE), Ok(()));
        // At the lifetime's edge it still holds; past its expiry it expired.
        let edge = minted_over(
            REALM,
            METHOD,
            INTENT,
            &req.encode(),
            &format_expires(BEFORE + LIFETIME),
            None,
            Some(&n),
        );
        assert_eq!(check(&edge, &s, REALM, &req, BEFORE), Ok(()));
        assert_eq!(
            check(&genuine, &s, REALM, &req, EXPIRES),
            Err(ChallengeProblem::Expired)
        );
    }

    #[test]
    fn every_echoed_field_of_a_session_challenge_is_pinned_against_the_policy() {
        let s = secrets();
        let req = session_request();
        let exp = "2030-01-01T00:00:00Z";
        let n = nonce().unwrap();
        let genuine = minted_over(REALM, METHOD, SESSION_INTENT, &req.encode(), exp, None, Some(&n));
        assert_eq!(check_session(&genuine, &s, REALM, &req, BEFORE), Ok(()));
        let invalid = |e: &Echo| {
            matches!(
                check_session(e, &s, REALM, &req, BEFORE),
                Err(ChallengeProblem::Invalid(_))
            )
        };
        for (what, request) in altered_requests(
            &req.to_value(),
            &[
                ("/amount", json!("24")),
                ("/unitType", json!("token")),
                ("/currency", json!("0x20c0000000000000000000000000000000000002")),
                ("/recipient", json!(STRANGER)),
                ("/suggestedDeposit", json!("1")),
                ("/suggestedDeposit", Value::Null),
                ("/methodDetails/escrowContract", json!(STRANGER)),
                ("/methodDetails/chainId", json!(4217)),
                ("/methodDetails/sessionProtocol", json!("v2")),
                ("/methodDetails/minVoucherDelta", json!("1")),
                ("/methodDetails/feePayer", json!(true)),
            ],
        ) {
            let e = minted_over(REALM, METHOD, SESSION_INTENT, &request, exp, None, Some(&n));
            assert!(invalid(&e), "{what}");
        }
        for (what, e) in [
            (
                "realm",
                minted_over("Other API", METHOD, SESSION_INTENT, &req.encode(), exp, None, Some(&n)),
            ),
            (
                "intent",
                minted_over(REALM, METHOD, INTENT, &req.encode(), exp, None, Some(&n)),
            ),
            (
                "opaque",
                minted_over(REALM, METHOD, SESSION_INTENT, &req.encode(), exp, None, None),
            ),
            (
                "expires",
                minted_over(
                    REALM,
                    METHOD,
                    SESSION_INTENT,
                    &req.encode(),
                    "2031-01-01T00:00:00Z",
                    None,
                    Some(&n),
                ),
            ),
        ] {
            assert!(invalid(&e), "{what}");
        }
    }
}
