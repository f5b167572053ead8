//! What a consumed payment leaves behind, and the money rules around it:
//! the [`Settlement`] a 200 carries, the [`ReplayRecord`] the replay store
//! keeps, how long it lives ([`record_ttl`]) and which later request counts
//! as a retry of the one that consumed it ([`judge_replay`]).
//!
//! Pure: the `ReplayGuard` stores and fetches records; this decides what a
//! record means for a request.

use std::fmt;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::credential::TxHash;
use crate::policy::SettlementPolicy;
use crate::settlement::Payment;

/// How a credential was presented. One payment is consumed once, whichever
/// scheme presents it: the replay key is the canonical hash alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `Authorization: Tempo 0x<hash>` (the Tempo Agentic Layer scheme).
    Tempo,
    /// `Authorization: Payment <credential>` (Machine Payments Protocol).
    Payment,
}

impl Scheme {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Tempo => "tempo",
            Scheme::Payment => "payment",
        }
    }
}

/// `"status": "settled"`: the only status a `Settlement` has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SettledStatus {
    Settled,
}

/// The body of a 200 (`API.md`, `Settlement`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settlement {
    pub status: SettledStatus,
    /// The scheme the credential was presented with.
    pub scheme: Scheme,
    /// The canonical transaction hash: lower-case, `0x` and 32 bytes.
    #[schema(value_type = String, pattern = "^0x[0-9a-f]{64}$")]
    pub tx_hash: TxHash,
    /// Who paid: the sender of the matching transfer.
    #[serde(with = "lower_address")]
    #[schema(value_type = String, pattern = "^0x[0-9a-f]{40}$")]
    pub payer: Address,
    #[serde(with = "lower_address")]
    #[schema(value_type = String, pattern = "^0x[0-9a-f]{40}$")]
    pub recipient: Address,
    /// The TIP-20 token paid in.
    #[serde(with = "lower_address")]
    #[schema(value_type = String, pattern = "^0x[0-9a-f]{40}$")]
    pub asset: Address,
    /// Atomic units, in decimal (a string: it can exceed 2^53).
    #[serde(with = "decimal")]
    #[schema(value_type = String, pattern = "^[0-9]+$")]
    pub amount: U256,
    /// The transfer's 32-byte memo (`TransferWithMemo`), when it had one.
    #[schema(value_type = Option<String>, pattern = "^0x[0-9a-f]{64}$")]
    pub memo: Option<B256>,
    pub chain_id: u64,
    pub block_number: u64,
    /// Seconds since the Unix epoch.
    pub block_timestamp: u64,
    /// The id of the genome whose policy accepted the payment.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub genome_id: String,
    /// True when this is the original settlement returned again to a retry
    /// with the same `Idempotency-Key`: nothing was consumed a second time.
    pub idempotent_replay: bool,
}

impl Settlement {
    /// The settlement of `payment`, presented with `scheme`, under the
    /// genome `genome_id`.
    pub fn new(tx_hash: TxHash, scheme: Scheme, payment: &Payment, genome_id: &str) -> Self {
        Settlement {
            status: SettledStatus::Settled,
            scheme,
            tx_hash,
            payer: payment.payer,
            recipient: payment.recipient,
            asset: payment.asset,
            amount: payment.amount,
            memo: payment.memo,
            chain_id: payment.chain_id,
            block_number: payment.block_number,
            block_timestamp: payment.block_timestamp,
            genome_id: genome_id.to_owned(),
            idempotent_replay: false,
        }
    }
}

/// The shortest and longest `Idempotency-Key` accepted. Whoever watches
/// the chain knows every hash, so the key is what stands between a stranger
/// and a paid request's retry: 16 characters at least (a UUID has 36).
pub const MIN_IDEMPOTENCY_KEY: usize = 16;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The longest body digest (`Content-Digest` value or `body_digest`) taken.
pub const MAX_BODY_DIGEST: usize = 1024;

/// Whether `key` keeps the key rule: [`MIN_IDEMPOTENCY_KEY`] to
/// [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters (no spaces).
pub fn valid_idempotency_key(key: &str) -> bool {
    (MIN_IDEMPOTENCY_KEY..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Whether `digest` can be a body digest: 1 to [`MAX_BODY_DIGEST`]
/// printable ASCII characters (spaces allowed inside, as between the
/// members of a `Content-Digest` list), compared exactly.
pub fn valid_body_digest(digest: &str) -> bool {
    !digest.is_empty()
        && digest.len() <= MAX_BODY_DIGEST
        && digest.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !digest.starts_with(' ')
        && !digest.ends_with(' ')
}

/// One SHA-256 over everything the gate sees of a request that carries an
/// `Idempotency-Key`: the scheme, the full request target (method, path and
/// query), the body digest the caller gave, the challenge a `Payment`
/// credential answers, and the key. A retry must reproduce all of it. The
/// key itself is never stored: a record in a shared Redis should not hand
/// out what a caller sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestDigest([u8; 32]);

/// What goes into a [`RequestDigest`].
#[derive(Clone, Copy, Debug)]
pub struct RetryIdentity<'a> {
    pub scheme: Scheme,
    /// `METHOD /path?query` as the client sent it (`/v1/authorize`: the
    /// forwarded method and URI, fragment dropped; `/v1/verify`: the
    /// `resource`).
    pub target: Option<&'a str>,
    /// The request body's digest (`Content-Digest`, `body_digest`).
    pub body_digest: Option<&'a str>,
    /// The id of the challenge a `Payment` credential answers: the payer's
    /// proof, which nobody watching the chain sees.
    pub challenge_id: Option<&'a str>,
    pub key: &'a str,
}

impl RequestDigest {
    pub fn of(id: &RetryIdentity<'_>) -> Self {
        let mut h = Sha256::new();
        h.update(b"settlegate idempotent retry v1");
        // Each part length-prefixed, absent distinct from empty: no two
        // different requests spell the same bytes.
        let mut part = |v: Option<&str>| match v {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        };
        part(Some(id.scheme.as_str()));
        part(id.target);
        part(id.body_digest);
        part(id.challenge_id);
        part(Some(id.key));
        RequestDigest(h.finalize().into())
    }

    /// Constant time: the comparison must not tell an attacker how much of
    /// a guessed request matched.
    pub fn matches(&self, other: &RequestDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestDigest({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for RequestDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for RequestDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(|_| D::Error::custom("a request digest is 64 hex digits"))?;
        Ok(RequestDigest(out))
    }
}

/// What a consumed payment was consumed for, and the answer it bought.
///
/// Unknown fields are tolerated (a newer instance may add some during a
/// rolling upgrade); a missing or malformed field makes the record
/// unreadable, which the store reports as corrupt (503), never as free.
/// A record without `request_digest` (no key, or written before it
/// existed) has no idempotent retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// The body of the 200 that consumed the payment.
    pub settlement: Settlement,
    /// The `resource` of the consuming request (the priced one).
    pub resource: Option<String>,
    /// The digest of the consuming request, if it had an `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<RequestDigest>,
    /// Unix seconds.
    pub consumed_at: u64,
    /// Unix seconds: `consumed_at` + [`record_ttl`]. The store forgets the
    /// record then, and so does every in-process cache of it.
    pub expires_at: u64,
    /// For the ledger: the price rule that priced the request
    /// ([`SettlementPolicy::route_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// For the ledger: the instance that consumed it (`ledger.instance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A free route's proof claimed its challenge: nothing was paid.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proof: bool,
}

/// The parts of a request that decide whether it is a retry of the request
/// that consumed a payment.
#[derive(Clone, Copy, Debug)]
pub struct RequestIdentity<'a> {
    pub scheme: Scheme,
    /// `None`: the request has no `Idempotency-Key`.
    pub request_digest: Option<&'a RequestDigest>,
}

/// What a consumed payment means for a request that presents it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// A retry of the consuming request: the original settlement again,
    /// marked `idempotent_replay`, once the retry limit is checked
    /// ([`within_retry_limit`]). Nothing is consumed a second time.
    Retry(Box<Settlement>),
    /// Any other request: 402 `REPLAYED`.
    Replayed,
}

/// How long after its consume a request may be retried: the configured
/// window, never longer than the policy's age window.
pub fn retry_window(configured: Duration, policy: &SettlementPolicy) -> Duration {
    configured.min(Duration::from_secs(policy.max_age_seconds))
}

/// A retry is the same request digest (scheme, full target, body digest,
/// challenge, key) within `window` of the consume (`now`, unix seconds).
/// Without a key on both sides a retry and a replay cannot be told apart,
/// so it is a replay (`API.md`); so is a record from before the digest.
pub fn judge_replay(record: &ReplayRecord, req: &RequestIdentity<'_>, now: u64, window: Duration) -> ReplayVerdict {
    let (Some(stored), Some(given)) = (record.request_digest.as_ref(), req.request_digest) else {
        return ReplayVerdict::Replayed;
    };
    // Compare the digest first and always, so the time taken does not
    // depend on which of the other checks fail.
    let same = stored.matches(given);
    // Instances' clocks differ a little: a consume "in the future" is now.
    let inside = !window.is_zero() && now.saturating_sub(record.consumed_at) <= window.as_secs();
    if same && inside && record.settlement.scheme == req.scheme {
        let mut settlement = record.settlement.clone();
        settlement.idempotent_replay = true;
        ReplayVerdict::Retry(Box::new(settlement))
    } else {
        ReplayVerdict::Replayed
    }
}

/// Whether the `count`th retry of one payment (counted atomically by the
/// replay store, the first retry being 1) may have its 200.
pub fn within_retry_limit(count: u64, max_retries: u32) -> bool {
    count >= 1 && count <= u64::from(max_retries)
}

/// Slack on top of the age window: a record must outlive the last moment at
/// which its payment could still be accepted.
pub const RECORD_TTL_MARGIN: Duration = Duration::from_secs(60);

/// How long a replay record lives: past the payment's acceptable age (plus
/// skew on both sides and a margin), and never less than the operator's
/// floor. A later genome that widens the age window would reopen payments
/// whose records expired, so no genome whose window outlasts the floor is
/// accepted (`GenomeSource::load`): every record outlives every window.
pub fn record_ttl(policy: &SettlementPolicy, floor: Duration) -> Duration {
    let window = Duration::from_secs(
        policy
            .max_age_seconds
            .saturating_add(policy.clock_skew_seconds.saturating_mul(2)),
    ) + RECORD_TTL_MARGIN;
    window.max(floor)
}

mod lower_address {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{a:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        Address::deserialize(d)
    }
}

mod decimal {
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom("an amount is a decimal string"));
        }
        U256::from_str_radix(&s, 10).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;
    use serde_json::json;

    fn settlement() -> Settlement {
        Settlement::new(
            "0xabababababababababababababababababababababababababababababababab"
                .parse()
                .unwrap(),
            Scheme::Tempo,
            &Payment {
                payer: address!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
                recipient: address!("70997970c51812dc3a010c7d01b50e0d17dc79c8"),
                asset: address!("20c0000000000000000000000000000000000001"),
                amount: U256::from(1_000_000),
                memo: None,
                chain_id: 42431,
                block_number: 7,
                block_timestamp: 1_795_271_973,
            },
            &"ab".repeat(32),
        )
    }

    const KEY: &str = "order-7-3f9c2a1b8d";
    const CONSUMED: u64 = 1_795_272_000;
    const WINDOW: Duration = Duration::from_secs(60);

    fn id<'a>(target: Option<&'a str>, key: &'a str) -> RetryIdentity<'a> {
        RetryIdentity {
            scheme: Scheme::Tempo,
            target,
            body_digest: None,
            challenge_id: None,
            key,
        }
    }

    fn record(identity: Option<RetryIdentity<'_>>) -> ReplayRecord {
        ReplayRecord {
            settlement: settlement(),
            resource: Some("GET /reports/7".into()),
            request_digest: identity.as_ref().map(RequestDigest::of),
            consumed_at: CONSUMED,
            expires_at: CONSUMED + 86_400,
            route: None,
            instance: None,
            proof: false,
        }
    }

    fn ask_at(r: &ReplayRecord, asked: Option<RetryIdentity<'_>>, now: u64) -> ReplayVerdict {
        let digest = asked.as_ref().map(RequestDigest::of);
        judge_replay(
            r,
            &RequestIdentity {
                scheme: asked.map_or(Scheme::Tempo, |a| a.scheme),
                request_digest: digest.as_ref(),
            },
            now,
            WINDOW,
        )
    }

    fn ask(r: &ReplayRecord, asked: Option<RetryIdentity<'_>>) -> ReplayVerdict {
        ask_at(r, asked, CONSUMED + 1)
    }

    #[test]
    fn the_settlement_has_the_wire_format_of_api_md() {
        let v = serde_json::to_value(settlement()).unwrap();
        assert_eq!(
            v,
            json!({"status": "settled", "scheme": "tempo",
                "tx_hash": "0xabababababababababababababababababababababababababababababababab",
                "payer": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                "asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000", "memo": null,
                "chain_id": 42431, "block_number": 7, "block_timestamp": 1_795_271_973u64,
                "genome_id": "ab".repeat(32), "idempotent_replay": false})
        );
        let back: Settlement = serde_json::from_value(v).unwrap();
        assert_eq!(back, settlement());
    }

    #[test]
    fn records_round_trip_and_never_hold_the_key_itself() {
        let r = record(Some(id(Some("GET /reports/7?page=2"), KEY)));
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains(KEY) && !text.contains("page=2"), "{text}");
        assert_eq!(serde_json::from_str::<ReplayRecord>(&text).unwrap(), r);
        // an unreadable record is an error, never a "free" slot
        assert!(serde_json::from_str::<ReplayRecord>(r#"{"settlement":{}}"#).is_err());
        assert!(serde_json::from_str::<ReplayRecord>(&text.replace("\"1000000\"", "\"-1\"")).is_err());
        assert!(
            serde_json::from_str::<ReplayRecord>(&text.replace("\"request_digest\":\"", "\"request_digest\":\"zz"))
                .is_err()
        );
    }

    #[test]
    fn only_the_same_request_is_a_retry() {
        let target = Some("GET /reports/7?page=2");
        let original = id(target, KEY);
        let r = record(Some(original));
        let ReplayVerdict::Retry(s) = ask(&r, Some(original)) else {
            panic!("a retry")
        };
        assert!(s.idempotent_replay);
        assert_eq!(
            Settlement {
                idempotent_replay: false,
                ..*s
            },
            settlement()
        );
        let other_key = "order-8-3f9c2a1b8d";
        for changed in [
            id(target, other_key),
            id(Some("GET /reports/7?page=3"), KEY),
            id(Some("GET /reports/7"), KEY),
            id(Some("POST /reports/7?page=2"), KEY),
            id(None, KEY),
            RetryIdentity {
                scheme: Scheme::Payment,
                ..original
            },
            RetryIdentity {
                body_digest: Some("sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"),
                ..original
            },
            RetryIdentity {
                challenge_id: Some("ch-1"),
                ..original
            },
        ] {
            assert_eq!(ask(&r, Some(changed)), ReplayVerdict::Replayed, "{changed:?}");
        }
        // no key on the retry
        assert_eq!(ask(&r, None), ReplayVerdict::Replayed);
        // the consuming request had no key: nothing is a retry of it
        assert_eq!(ask(&record(None), Some(original)), ReplayVerdict::Replayed);
    }

    #[test]
    fn the_body_digest_and_the_challenge_must_match_too() {
        let paid = RetryIdentity {
            scheme: Scheme::Payment,
            target: Some("POST /orders"),
            body_digest: Some("sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"),
            challenge_id: Some("ch-1"),
            key: KEY,
        };
        let mut r = record(Some(paid));
        r.settlement.scheme = Scheme::Payment;
        assert!(matches!(ask(&r, Some(paid)), ReplayVerdict::Retry(_)));
        for changed in [
            RetryIdentity {
                body_digest: Some("sha-256=:AAAAqy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"),
                ..paid
            },
            RetryIdentity {
                body_digest: None,
                ..paid
            },
            RetryIdentity {
                challenge_id: Some("ch-2"),
                ..paid
            },
            RetryIdentity {
                challenge_id: None,
                ..paid
            },
        ] {
            assert_eq!(ask(&r, Some(changed)), ReplayVerdict::Replayed, "{changed:?}");
        }
        // absent and empty are different requests
        let a = RequestDigest::of(&RetryIdentity {
            body_digest: None,
            ..paid
        });
        let b = RequestDigest::of(&RetryIdentity {
            body_digest: Some(""),
            ..paid
        });
        assert!(!a.matches(&b));
    }

    #[test]
    fn a_retry_counts_only_inside_its_window() {
        let original = id(Some("GET /reports/7"), KEY);
        let r = record(Some(original));
        let at = |now| matches!(ask_at(&r, Some(original), now), ReplayVerdict::Retry(_));
        assert!(at(CONSUMED));
        assert!(at(CONSUMED + 60));
        assert!(!at(CONSUMED + 61));
        assert!(!at(CONSUMED + 395));
        // another instance's clock a little ahead: not refused for it
        assert!(at(CONSUMED - 2));
        // a window of 0: no retries at all
        let digest = RequestDigest::of(&original);
        let asked = RequestIdentity {
            scheme: Scheme::Tempo,
            request_digest: Some(&digest),
        };
        assert_eq!(
            judge_replay(&r, &asked, CONSUMED, Duration::ZERO),
            ReplayVerdict::Replayed
        );
    }

    #[test]
    fn old_records_have_no_retry() {
        // written before the request digest: a key digest and a resource
        let old = r#"{"settlement":SETTLEMENT,"resource":"GET /reports/7",
            "idempotency_key":"1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988",
            "consumed_at":1795272000,"expires_at":1795358400}"#
            .replace("SETTLEMENT", &serde_json::to_string(&settlement()).unwrap());
        let r: ReplayRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(r.request_digest, None);
        assert_eq!(ask(&r, Some(id(Some("GET /reports/7"), KEY))), ReplayVerdict::Replayed);
    }

    #[test]
    fn the_retry_limit() {
        assert!(!within_retry_limit(0, 3));
        assert!(within_retry_limit(1, 3));
        assert!(within_retry_limit(3, 3));
        assert!(!within_retry_limit(4, 3));
        assert!(!within_retry_limit(1, 0));
    }

    #[test]
    fn the_window_is_never_longer_than_the_age_window() {
        let policy = |age: u64| {
            SettlementPolicy::from_value(Some(&json!({
                "chain_id": 42431, "realm": "r", "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                "assets": ["0x20c0000000000000000000000000000000000001"],
                "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1"},
                "max_age_seconds": age, "clock_skew_seconds": 5
            })))
            .unwrap()
        };
        assert_eq!(retry_window(WINDOW, &policy(300)), WINDOW);
        assert_eq!(retry_window(WINDOW, &policy(30)), Duration::from_secs(30));
    }

    #[test]
    fn the_key_rule() {
        for good in [
            "0f8b3c2e-6a1d-4c57-9e0b-2d4f6a8c1e3b",
            "abcdefghijklmnop",
            &"k".repeat(MAX_IDEMPOTENCY_KEY),
            "!~#$%&'()*+,-./:",
        ] {
            assert!(valid_idempotency_key(good), "{good}");
        }
        for bad in [
            "",
            "k1",
            "req-7f3a",
            "abcdefghijklmno",
            &"k".repeat(MAX_IDEMPOTENCY_KEY + 1),
            "abcdefgh ijklmnop",
            "abcdefghijklmnopé",
            "abcdefghijklmnop\t",
        ] {
            assert!(!valid_idempotency_key(bad), "{bad:?}");
        }
        assert!(valid_body_digest(
            "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:, sha-512=:x:"
        ));
        for bad in [
            "",
            " sha-256=:x:",
            "sha-256=:x: ",
            "a\tb",
            "é",
            &"d".repeat(MAX_BODY_DIGEST + 1),
        ] {
            assert!(!valid_body_digest(bad), "{bad:?}");
        }
    }

    #[test]
    fn records_outlive_the_age_window_and_the_floor() {
        let policy = |age: u64, skew: u64| {
            SettlementPolicy::from_value(Some(&json!({
                "chain_id": 42431, "realm": "r", "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                "assets": ["0x20c0000000000000000000000000000000000001"],
                "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1"},
                "max_age_seconds": age, "clock_skew_seconds": skew
            })))
            .unwrap()
        };
        assert_eq!(
            record_ttl(&policy(300, 30), Duration::ZERO),
            Duration::from_secs(300 + 60 + 60)
        );
        assert_eq!(
            record_ttl(&policy(300, 30), Duration::from_secs(86_400)),
            Duration::from_secs(86_400)
        );
        let week = 7 * 86_400;
        assert_eq!(
            record_ttl(&policy(week, 300), Duration::from_secs(86_400)),
            Duration::from_secs(week + 600 + 60)
        );
    }

    #[test]
    fn request_digests_compare_by_value() {
        let a = RequestDigest::of(&id(Some("GET /a"), KEY));
        assert!(a.matches(&RequestDigest::of(&id(Some("GET /a"), KEY))));
        assert!(!a.matches(&RequestDigest::of(&id(Some("GET /b"), KEY))));
        assert!(!format!("{a:?}").contains(KEY));
    }
}
