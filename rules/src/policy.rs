//! The `settlement` policy inside a genome: which chain, which token, which
//! recipient, what price, how old a payment may be. Parsed strictly: an
//! unknown key is refused (a typo such as `max_age_second` must not silently
//! fall back to a default), every address and amount is checked, and every
//! bound that later protects money is range-checked here, at boot.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::GenomeError;
use crate::primitives::{Address, Amount, address_lower, parse_address};

pub const DEFAULT_MAX_AGE_SECONDS: u64 = 300;
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 30;
pub const DEFAULT_MIN_CONFIRMATIONS: u64 = 1;
pub const DEFAULT_CHALLENGE_TTL_SECONDS: u64 = 300;

/// How a payment's memo is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemoPolicy {
    /// Any memo, or none.
    #[default]
    Optional,
    /// A `TransferWithMemo` is required.
    Required,
    /// The memo must bind the payment to the challenge it answers.
    ChallengeBound,
}

/// Which credential schemes a genome accepts (and every 402 offers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Schemes {
    pub tempo: bool,
    pub payment: bool,
}

impl Schemes {
    fn parse(raw: Option<&[String]>) -> Result<Self, String> {
        let Some(raw) = raw else {
            return Ok(Schemes {
                tempo: true,
                payment: true,
            });
        };
        let mut s = Schemes {
            tempo: false,
            payment: false,
        };
        for name in raw {
            let slot = match name.as_str() {
                "tempo" => &mut s.tempo,
                "payment" => &mut s.payment,
                other => return Err(format!("{other:?} is not a scheme (tempo, payment)")),
            };
            if std::mem::replace(slot, true) {
                return Err(format!("{name:?} is listed twice"));
            }
        }
        if !s.tempo && !s.payment {
            return Err("at least one scheme must be accepted".into());
        }
        Ok(s)
    }

    pub fn names(&self) -> Vec<&'static str> {
        [("tempo", self.tempo), ("payment", self.payment)]
            .into_iter()
            .filter_map(|(n, on)| on.then_some(n))
            .collect()
    }
}

/// A price for requests whose resource matches `resource`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PriceRule {
    pub resource: ResourcePattern,
    pub asset: Address,
    pub amount: Amount,
}

/// A verified, typed settlement policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementPolicy {
    pub chain_id: u64,
    pub realm: String,
    pub recipient: Address,
    pub assets: Vec<Address>,
    pub default_price: Price,
    pub prices: Vec<PriceRule>,
    pub max_age_seconds: u64,
    pub clock_skew_seconds: u64,
    pub min_confirmations: u64,
    pub memo: MemoPolicy,
    pub allow_summed_transfers: bool,
    pub challenge_ttl_seconds: u64,
    /// The credential schemes accepted; both unless the genome says.
    pub schemes: Schemes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Price {
    pub asset: Address,
    pub amount: Amount,
}

impl SettlementPolicy {
    /// The price for a resource: the first matching rule, else the default.
    pub fn price_for(&self, resource: Option<&str>) -> Price {
        resource
            .and_then(|r| self.prices.iter().find(|p| p.resource.matches(r)))
            .map(|p| Price {
                asset: p.asset,
                amount: p.amount,
            })
            .unwrap_or(self.default_price)
    }

    /// Parses and checks the `settlement` value of a genome.
    pub fn from_value(value: Option<&Value>) -> Result<Self, GenomeError> {
        let invalid = |m: String| GenomeError::PolicyInvalid(m);
        let value = value.ok_or_else(|| invalid("the genome has no `settlement` policy".into()))?;
        let raw: RawPolicy = serde_json::from_value(value.clone()).map_err(|e| invalid(format!("settlement: {e}")))?;

        if raw.chain_id == 0 {
            return Err(invalid("settlement.chain_id must be positive".into()));
        }
        let realm = raw.realm;
        if realm.is_empty() || realm.len() > 128 || realm.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "settlement.realm must be 1 to 128 characters without control characters".into(),
            ));
        }
        let field = |name: &str, s: &str| parse_address(s).map_err(|e| invalid(format!("settlement.{name}: {e}")));
        let recipient = field("recipient", &raw.recipient)?;
        if recipient == Address::ZERO {
            return Err(invalid("settlement.recipient must not be the zero address".into()));
        }
        if raw.assets.is_empty() {
            return Err(invalid("settlement.assets must list at least one token".into()));
        }
        let mut assets = Vec::with_capacity(raw.assets.len());
        for (i, a) in raw.assets.iter().enumerate() {
            let asset = field(&format!("assets[{i}]"), a)?;
            if assets.contains(&asset) {
                return Err(invalid(format!("settlement.assets lists {a} twice")));
            }
            assets.push(asset);
        }
        let accepted = |name: &str, s: &str| -> Result<Address, GenomeError> {
            let a = field(name, s)?;
            if !assets.contains(&a) {
                return Err(invalid(format!(
                    "settlement.{name} {s} is not one of settlement.assets"
                )));
            }
            Ok(a)
        };
        let amount = |name: &str, s: &str| {
            s.parse::<Amount>()
                .map_err(|e| invalid(format!("settlement.{name}: {e}")))
        };

        let default_price = Price {
            asset: accepted("default_price.asset", &raw.default_price.asset)?,
            amount: amount("default_price.amount", &raw.default_price.amount)?,
        };
        let mut seen = HashSet::new();
        let mut prices = Vec::with_capacity(raw.prices.len());
        for (i, p) in raw.prices.iter().enumerate() {
            let resource = ResourcePattern::parse(&p.resource)
                .map_err(|e| invalid(format!("settlement.prices[{i}].resource: {e}")))?;
            if !seen.insert(p.resource.clone()) {
                return Err(invalid(format!("settlement.prices lists {:?} twice", p.resource)));
            }
            let asset = match &p.asset {
                Some(a) => accepted(&format!("prices[{i}].asset"), a)?,
                None => default_price.asset,
            };
            prices.push(PriceRule {
                resource,
                asset,
                amount: amount(&format!("prices[{i}].amount"), &p.amount)?,
            });
        }

        let bounded = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(format!(
                    "settlement.{name} must be between {lo} and {hi}, got {v}"
                )))
            }
        };
        Ok(SettlementPolicy {
            chain_id: raw.chain_id,
            realm,
            recipient,
            assets,
            default_price,
            prices,
            max_age_seconds: bounded("max_age_seconds", raw.max_age_seconds, 1, 7 * 86_400)?,
            clock_skew_seconds: bounded("clock_skew_seconds", raw.clock_skew_seconds, 0, 300)?,
            min_confirmations: bounded("min_confirmations", raw.min_confirmations, 1, 1_000)?,
            memo: raw.memo,
            allow_summed_transfers: raw.allow_summed_transfers,
            challenge_ttl_seconds: bounded("challenge_ttl_seconds", raw.challenge_ttl_seconds, 1, 86_400)?,
            schemes: Schemes::parse(raw.schemes.as_deref()).map_err(|e| invalid(format!("settlement.schemes: {e}")))?,
        })
    }

    /// A JSON summary for `GET /v1/genome` and `genome inspect`.
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "chain_id": self.chain_id,
            "realm": self.realm,
            "recipient": address_lower(&self.recipient),
            "assets": self.assets.iter().map(address_lower).collect::<Vec<_>>(),
            "default_price": { "asset": address_lower(&self.default_price.asset), "amount": self.default_price.amount },
            "prices": self.prices.iter().map(|p| serde_json::json!({
                "resource": p.resource.as_str(), "asset": address_lower(&p.asset), "amount": p.amount,
            })).collect::<Vec<_>>(),
            "max_age_seconds": self.max_age_seconds,
            "clock_skew_seconds": self.clock_skew_seconds,
            "min_confirmations": self.min_confirmations,
            "memo": self.memo,
            "allow_summed_transfers": self.allow_summed_transfers,
            "challenge_ttl_seconds": self.challenge_ttl_seconds,
            "schemes": self.schemes.names(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    chain_id: u64,
    realm: String,
    recipient: String,
    assets: Vec<String>,
    default_price: RawPrice,
    #[serde(default)]
    prices: Vec<RawPriceRule>,
    #[serde(default = "default_max_age")]
    max_age_seconds: u64,
    #[serde(default = "default_skew")]
    clock_skew_seconds: u64,
    #[serde(default = "default_confirmations")]
    min_confirmations: u64,
    #[serde(default)]
    memo: MemoPolicy,
    #[serde(default)]
    allow_summed_transfers: bool,
    #[serde(default = "default_challenge_ttl")]
    challenge_ttl_seconds: u64,
    #[serde(default)]
    schemes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    asset: String,
    amount: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriceRule {
    resource: String,
    #[serde(default)]
    asset: Option<String>,
    amount: String,
}

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECONDS
}
fn default_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECONDS
}
fn default_confirmations() -> u64 {
    DEFAULT_MIN_CONFIRMATIONS
}
fn default_challenge_ttl() -> u64 {
    DEFAULT_CHALLENGE_TTL_SECONDS
}

/// A resource pattern such as `GET /reports/*`: an upper-case method (or `*`
/// for any), one space, and a path starting with `/` that may end in `*`
/// (prefix match). `*` anywhere else is refused so a pattern means one thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ResourcePattern {
    text: String,
}

impl From<ResourcePattern> for String {
    fn from(p: ResourcePattern) -> String {
        p.text
    }
}

impl ResourcePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (method, path) = s
            .split_once(' ')
            .ok_or_else(|| format!("{s:?} must be \"METHOD /path\""))?;
        let method_ok = method == "*"
            || (!method.is_empty() && method.len() <= 16 && method.bytes().all(|b| b.is_ascii_uppercase()));
        if !method_ok {
            return Err(format!("{s:?}: the method must be upper-case letters or *"));
        }
        if !path.starts_with('/')
            || path.len() > 1024
            || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{s:?}: the path must start with / and contain no spaces"));
        }
        if path.trim_end_matches('*').contains('*') || path.ends_with("**") {
            return Err(format!("{s:?}: * is only allowed once, at the end of the path"));
        }
        Ok(ResourcePattern { text: s.to_owned() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request resource (`"GET /reports/42"`) matches.
    pub fn matches(&self, resource: &str) -> bool {
        let (method, path) = self.text.split_once(' ').unwrap_or(("", ""));
        let Some((r_method, r_path)) = resource.split_once(' ') else {
            return false;
        };
        if method != "*" && method != r_method {
            return false;
        }
        match path.strip_suffix('*') {
            Some(prefix) => r_path.starts_with(prefix),
            None => path == r_path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "assets": ["0x20c0000000000000000000000000000000000001"],
            "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"},
            "prices": [{"resource": "GET /reports/*", "amount": "2500000"}]
        })
    }

    fn with(path: &str, v: Value) -> Result<SettlementPolicy, GenomeError> {
        let mut doc = base();
        match doc.pointer_mut(path) {
            Some(slot) => *slot = v,
            None => {
                doc[&path[1..]] = v;
            }
        }
        SettlementPolicy::from_value(Some(&doc))
    }

    #[test]
    fn defaults_apply_and_prices_match_by_resource() {
        let p = SettlementPolicy::from_value(Some(&base())).unwrap();
        assert_eq!(
            (p.max_age_seconds, p.min_confirmations, p.memo),
            (300, 1, MemoPolicy::Optional)
        );
        assert_eq!(p.price_for(Some("GET /reports/42")).amount.to_string(), "2500000");
        assert_eq!(p.price_for(Some("POST /reports/42")).amount.to_string(), "1000000");
        assert_eq!(p.price_for(None).amount.to_string(), "1000000");
        assert_eq!(
            p.schemes,
            Schemes {
                tempo: true,
                payment: true
            }
        );
        let only = with("/schemes", json!(["payment"])).unwrap();
        assert_eq!(
            only.schemes,
            Schemes {
                tempo: false,
                payment: true
            }
        );
        assert_eq!(only.summary()["schemes"], json!(["payment"]));
    }

    #[test]
    fn bad_policies_are_policy_invalid() {
        let cases = [
            ("/recipient", json!("0x1234")),
            ("/recipient", json!("0x70997970c51812dc3A010C7d01b50e0d17dc79C8")),
            ("/recipient", json!("0x0000000000000000000000000000000000000000")),
            ("/default_price/amount", json!("0")),
            ("/default_price/amount", json!(1000000)),
            ("/default_price/amount", json!("-5")),
            (
                "/default_price/asset",
                json!("0x20c0000000000000000000000000000000000002"),
            ),
            ("/prices/0/resource", json!("GET /a*b")),
            ("/prices/0/amount", json!("0")),
            ("/assets", json!([])),
            ("/chain_id", json!(0)),
            ("/realm", json!("")),
            ("/schemes", json!([])),
            ("/schemes", json!(["tempo", "tempo"])),
            ("/schemes", json!(["stripe"])),
            ("/schemes", json!("tempo")),
        ];
        for (path, v) in cases {
            let err = with(path, v.clone()).unwrap_err();
            assert_eq!(err.code(), "GENOME_POLICY_INVALID", "{path} = {v}: {err}");
        }
    }

    #[test]
    fn missing_and_unknown_fields_are_policy_invalid() {
        for field in ["recipient", "chain_id", "assets", "default_price", "realm"] {
            let mut doc = base();
            doc.as_object_mut().unwrap().remove(field);
            assert_eq!(
                SettlementPolicy::from_value(Some(&doc)).unwrap_err().code(),
                "GENOME_POLICY_INVALID",
                "{field}"
            );
        }
        let mut doc = base();
        doc["max_age_second"] = json!(10);
        assert!(
            SettlementPolicy::from_value(Some(&doc))
                .unwrap_err()
                .to_string()
                .contains("max_age_second")
        );
        assert_eq!(
            SettlementPolicy::from_value(None).unwrap_err().code(),
            "GENOME_POLICY_INVALID"
        );
    }

    #[test]
    fn resource_patterns() {
        let p = ResourcePattern::parse("GET /reports/*").unwrap();
        assert!(p.matches("GET /reports/42") && p.matches("GET /reports/"));
        assert!(!p.matches("GET /report") && !p.matches("POST /reports/1"));
        assert!(ResourcePattern::parse("* /x").unwrap().matches("DELETE /x"));
        for bad in ["GET", "get /x", "GET x", "GET /a b", "GET /*/x", "GET /x**"] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad}");
        }
    }
}
