//! The one place where payment outcomes become HTTP answers (`API.md`):
//! 200 with the `Settlement`, 402 with a challenge, 503 with `Retry-After`.
//!
//! 402 and 503 bodies are RFC 9457 problem+json that also carry the fields
//! the Tempo Agentic Layer SDK reads (`error`, `code`, `paymentInfo`), so one
//! body serves both kinds of client.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use serde_json::{Value, json};
use settlegate_rules::primitives::address_lower;
use settlegate_rules::settlement::Reason;

use super::problem::{problem_builder, problem_type};
use crate::outcome::{Challenge, Denial, Outcome, Unavailable};

/// The response for `outcome`.
pub fn respond(outcome: &Outcome) -> HttpResponse {
    match outcome {
        Outcome::Settled(settlement) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(settlement),
        Outcome::Denied(denial, challenge) => denied(denial, challenge),
        Outcome::Unavailable(u) => unavailable(u),
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

/// The seed SDK's `paymentInfo`.
pub fn payment_info(c: &Challenge) -> Value {
    json!({
        "method": "tempo",
        "recipient": address_lower(&c.recipient),
        "amount": c.amount.to_string(),
        "token": address_lower(&c.asset),
        "chainId": c.chain_id,
    })
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

fn denied(denial: &Denial, challenge: &Challenge) -> HttpResponse {
    let mpp = |slug: &str| format!("https://paymentauth.org/problems/{slug}");
    let (kind, title, detail) = match denial {
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
    };
    let mut body = json!({
        "type": kind,
        "title": title,
        "status": 402,
        "detail": detail,
        "code": denial.code(),
        "error": "Payment Required",
        "paymentInfo": payment_info(challenge),
    });
    if let Some(r) = denial.reason() {
        body["reason"] = json!(r.as_str());
    }
    let mut resp = problem_builder(StatusCode::PAYMENT_REQUIRED);
    if let Ok(v) = HeaderValue::from_str(&www_authenticate(challenge)) {
        resp.insert_header((header::WWW_AUTHENTICATE, v));
    }
    if matches!(denial, Denial::Pending { .. }) {
        resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
    }
    resp.body(body.to_string())
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
    };
    let body = json!({
        "type": problem_type(u.code()),
        "title": title,
        "status": 503,
        "detail": detail,
        "code": u.code(),
        "error": "Service Unavailable",
    });
    let mut resp = problem_builder(StatusCode::SERVICE_UNAVAILABLE);
    resp.insert_header((header::RETRY_AFTER, u.retry_after()));
    resp.body(body.to_string())
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
        }
    }
}
