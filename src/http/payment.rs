//! The payment answers of API.md: 402 with a challenge, 503 when no
//! trustworthy answer exists, 200 with a `Settlement`.
//!
//! 402 bodies are RFC 9457 problem+json that also carry the fields the Tempo
//! Agentic Layer SDK reads (`error`, `code`, `paymentInfo`), so one body
//! serves both kinds of client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde_json::{Value, json};
use settlegate_rules::policy::{Price, SettlementPolicy};
use settlegate_rules::primitives::{Address, Amount, address_lower};
use settlegate_rules::settlement::Reason;

use super::problem::{PROBLEM_JSON, problem_type};

/// What a paying client needs to pay for this request.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub realm: String,
    pub asset: Address,
    pub amount: Amount,
    pub recipient: Address,
    pub chain_id: u64,
}

impl Challenge {
    pub fn new(policy: &SettlementPolicy, price: Price) -> Self {
        Challenge {
            realm: policy.realm.clone(),
            asset: price.asset,
            amount: price.amount,
            recipient: policy.recipient,
            chain_id: policy.chain_id,
        }
    }

    /// `Tempo realm="…", asset="…", amount="…", destination="…", chainId="…"`.
    pub fn www_authenticate(&self) -> String {
        format!(
            "Tempo realm={}, asset={}, amount={}, destination={}, chainId={}",
            quoted(&self.realm),
            quoted(&address_lower(&self.asset)),
            quoted(&self.amount.to_string()),
            quoted(&address_lower(&self.recipient)),
            quoted(&self.chain_id.to_string()),
        )
    }

    /// The seed SDK's `paymentInfo`.
    pub fn payment_info(&self) -> Value {
        json!({
            "method": "tempo",
            "recipient": address_lower(&self.recipient),
            "amount": self.amount.to_string(),
            "token": address_lower(&self.asset),
            "chainId": self.chain_id,
        })
    }
}

/// RFC 7230 quoted-string: `"` and `\` are escaped. Control characters
/// cannot occur (the realm is checked at boot, the rest is hex and digits).
pub fn quoted(s: &str) -> String {
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

/// Why a request is not (yet) paid: the 402 answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No usable credential.
    PaymentRequired(String),
    /// Not visible or not confirmed yet; nothing consumed.
    Pending { reason: Option<Reason>, detail: String },
    /// The payment does not satisfy the policy.
    Failed(Reason),
    /// Already consumed by another request.
    Replayed,
}

/// The 503 answers: no trustworthy answer now; nothing consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    Rpc(String),
    Store(String),
    Genome(String),
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::PaymentRequired(_) => "PAYMENT_REQUIRED",
            Denial::Pending { .. } => "PAYMENT_PENDING",
            Denial::Failed(_) => "VERIFICATION_FAILED",
            Denial::Replayed => "REPLAYED",
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Denial::Failed(r) => Some(*r),
            Denial::Pending { reason, .. } => *reason,
            _ => None,
        }
    }

    fn problem(&self) -> (String, &'static str, String) {
        let mpp = |slug: &str| format!("https://paymentauth.org/problems/{slug}");
        match self {
            Denial::PaymentRequired(d) => (mpp("payment-required"), "Payment Required", d.clone()),
            Denial::Pending { detail, .. } => (problem_type("PAYMENT_PENDING"), "Payment pending", detail.clone()),
            Denial::Failed(r) => (
                mpp("verification-failed"),
                "Payment verification failed",
                failure_detail(*r).into(),
            ),
            Denial::Replayed => (
                problem_type("REPLAYED"),
                "Payment already used",
                "this payment was already used for another request".into(),
            ),
        }
    }

    pub fn response(&self, challenge: &Challenge) -> HttpResponse {
        let (kind, title, detail) = self.problem();
        let mut body = json!({
            "type": kind,
            "title": title,
            "status": 402,
            "detail": detail,
            "code": self.code(),
            "error": "Payment Required",
            "paymentInfo": challenge.payment_info(),
        });
        if let Some(r) = self.reason() {
            body["reason"] = json!(r.as_str());
        }
        let mut resp = problem_builder(StatusCode::PAYMENT_REQUIRED);
        if let Ok(v) = HeaderValue::from_str(&challenge.www_authenticate()) {
            resp.insert_header((header::WWW_AUTHENTICATE, v));
        }
        if matches!(self, Denial::Pending { .. }) {
            resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        resp.body(body.to_string())
    }
}

impl Unavailable {
    pub fn code(&self) -> &'static str {
        match self {
            Unavailable::Rpc(_) => "RPC_UNAVAILABLE",
            Unavailable::Store(_) => "REPLAY_STORE_UNAVAILABLE",
            Unavailable::Genome(_) => "GENOME_UNAVAILABLE",
        }
    }

    /// The detail is for logs; clients get a stable sentence.
    pub fn response(&self) -> HttpResponse {
        let (title, detail) = match self {
            Unavailable::Rpc(_) => (
                "Chain RPC unavailable",
                "no Tempo RPC endpoint gave a trustworthy answer; retry later",
            ),
            Unavailable::Store(_) => (
                "Replay store unavailable",
                "the replay store did not answer; retry later",
            ),
            Unavailable::Genome(_) => (
                "Genome unavailable",
                "the active policy genome is not valid now; retry later",
            ),
        };
        let body = json!({
            "type": problem_type(self.code()),
            "title": title,
            "status": 503,
            "detail": detail,
            "code": self.code(),
            "error": "Service Unavailable",
        });
        let mut resp = problem_builder(StatusCode::SERVICE_UNAVAILABLE);
        resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("2")));
        resp.body(body.to_string())
    }
}

fn problem_builder(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

fn failure_detail(r: Reason) -> &'static str {
    match r {
        Reason::TxReverted => "the transaction reverted",
        Reason::WrongChain => "the RPC node is on another chain than the policy's",
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_escape_quotes_and_backslashes() {
        assert_eq!(quoted(r#"Tempo "API" \ x"#), r#""Tempo \"API\" \\ x""#);
    }
}
