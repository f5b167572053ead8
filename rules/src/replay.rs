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

/// SHA-256 of an `Idempotency-Key`. The key itself is never stored: a
/// record in a shared Redis should not hand out what a caller sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Constant time: the comparison must not tell an attacker how much of a
    /// guessed key matched.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for KeyDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeyDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(|_| D::Error::custom("a key digest is 64 hex digits"))?;
        Ok(KeyDigest(out))
    }
}

/// What a payment was consumed for, and the answer it bought.
///
/// Unknown fields are tolerated (a newer instance may add some during a
/// rolling upgrade); a missing or malformed field makes the record
/// unreadable, which the store reports as corrupt (503), never as free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// The body of the 200 that consumed the payment.
    pub settlement: Settlement,
    /// The `resource` of the consuming request.
    pub resource: Option<String>,
    /// The digest of the consuming request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<KeyDigest>,
    /// Unix seconds.
    pub consumed_at: u64,
    /// Unix seconds: `consumed_at` + [`record_ttl`]. The store forgets the
    /// record then, and so does every in-process cache of it.
    pub expires_at: u64,
}

/// The parts of a request that decide whether it is a retry of the request
/// that consumed a payment.
#[derive(Clone, Copy, Debug)]
pub struct RequestIdentity<'a> {
    pub scheme: Scheme,
    pub resource: Option<&'a str>,
    pub idempotency_key: Option<&'a KeyDigest>,
}

/// What a consumed payment means for a request that presents it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// A retry of the consuming request: the original settlement again,
    /// marked `idempotent_replay`. Nothing is consumed a second time.
    Retry(Box<Settlement>),
    /// Any other request: 402 `REPLAYED`.
    Replayed,
}

/// A retry is the same scheme, the same resource, and an `Idempotency-Key`
/// whose digest matches the record's. Without a key on both sides a retry
/// and a replay cannot be told apart, so it is a replay (`API.md`).
pub fn judge_replay(record: &ReplayRecord, req: &RequestIdentity<'_>) -> ReplayVerdict {
    let (Some(stored), Some(given)) = (record.idempotency_key.as_ref(), req.idempotency_key) else {
        return ReplayVerdict::Replayed;
    };
    // Compare the key first and always, so the time taken does not depend
    // on which of the other fields differ.
    let key_matches = stored.matches(given);
    if key_matches && record.resource.as_deref() == req.resource && record.settlement.scheme == req.scheme {
        let mut settlement = record.settlement.clone();
        settlement.idempotent_replay = true;
        ReplayVerdict::Retry(Box::new(settlement))
    } else {
        ReplayVerdict::Replayed
    }
}

/// Slack on top of the age window: a record must outlive the last moment at
/// which its payment could still be accepted.
pub const RECORD_TTL_MARGIN: Duration = Duration::from_secs(60);

/// How long a replay record lives: past the payment's acceptable age (plus
/// skew on both sides and a margin), and never less than the operator's
/// floor. A later genome that widens the age window would reopen payments
/// whose records expired, so no genome whose window outlasts the floor is
/// accepted (`GenomeSource::load`): every record outlives every window. The
/// seed kept its records 300 s and accepted payments of any age (hole 1).
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

    fn record(key: Option<&str>, resource: Option<&str>) -> ReplayRecord {
        ReplayRecord {
            settlement: settlement(),
            resource: resource.map(str::to_owned),
            idempotency_key: key.map(KeyDigest::of),
            consumed_at: 1_795_272_000,
            expires_at: 1_795_358_400,
        }
    }

    fn ask(r: &ReplayRecord, scheme: Scheme, resource: Option<&str>, key: Option<&str>) -> ReplayVerdict {
        let digest = key.map(KeyDigest::of);
        judge_replay(
            r,
            &RequestIdentity {
                scheme,
                resource,
                idempotency_key: digest.as_ref(),
            },
        )
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
        let r = record(Some("order-7"), Some("GET /reports/7"));
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("order-7"), "{text}");
        assert_eq!(serde_json::from_str::<ReplayRecord>(&text).unwrap(), r);
        // an unreadable record is an error, never a "free" slot
        assert!(serde_json::from_str::<ReplayRecord>(r#"{"settlement":{}}"#).is_err());
        assert!(serde_json::from_str::<ReplayRecord>(&text.replace("\"1000000\"", "\"-1\"")).is_err());
    }

    #[test]
    fn only_the_same_key_resource_and_scheme_is_a_retry() {
        let r = record(Some("order-7"), Some("GET /reports/7"));
        let ReplayVerdict::Retry(s) = ask(&r, Scheme::Tempo, Some("GET /reports/7"), Some("order-7")) else {
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
        for (scheme, resource, key) in [
            (Scheme::Tempo, Some("GET /reports/7"), Some("order-8")),
            (Scheme::Tempo, Some("GET /reports/8"), Some("order-7")),
            (Scheme::Tempo, None, Some("order-7")),
            (Scheme::Payment, Some("GET /reports/7"), Some("order-7")),
            (Scheme::Tempo, Some("GET /reports/7"), None),
        ] {
            assert_eq!(
                ask(&r, scheme, resource, key),
                ReplayVerdict::Replayed,
                "{scheme:?} {resource:?} {key:?}"
            );
        }
        // the consuming request had no key: nothing is a retry of it
        let keyless = record(None, Some("GET /reports/7"));
        assert_eq!(
            ask(&keyless, Scheme::Tempo, Some("GET /reports/7"), Some("order-7")),
            ReplayVerdict::Replayed
        );
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
    fn key_digests_compare_by_value() {
        assert!(KeyDigest::of("a").matches(&KeyDigest::of("a")));
        assert!(!KeyDigest::of("a").matches(&KeyDigest::of("b")));
        assert!(!format!("{:?}", KeyDigest::of("secret-key")).contains("secret-key"));
    }
}
