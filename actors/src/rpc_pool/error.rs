//! Why no trustworthy answer came from the chain: [`RpcError`], its stable
//! causes (metric labels) and categories (`/readyz`), and [`classify`],
//! which turns alloy's error into ours. Every text a node supplied is
//! scrubbed of its endpoint's secrets ([`super::redact`]) and bounded
//! before it is kept.

use std::time::Duration;

use alloy_json_rpc::{ErrorPayload, RpcError as AlloyError};
use alloy_primitives::Bytes;
use alloy_transport::{TransportError, TransportErrorKind};

use super::redact::Redactor;
use crate::rpc_transport::HttpFault;

/// Why no trustworthy answer came from the chain. Each is a 503.
/// Serialisable: one instance's failed lookup answers the checks of the
/// others that waited for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RpcError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("transport: {0}")]
    Transport(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc { code: i64, message: String },
    #[error("the node is on chain {got}, the policy's is {want}")]
    WrongChain { got: u64, want: u64 },
    #[error("every endpoint's circuit is open")]
    AllCircuitsOpen,
    /// As many lookups as allowed are waiting on the nodes already.
    #[error("{0} lookups are in flight already")]
    Saturated(usize),
    /// A part of this instance is gone (it is shutting down): a fault of
    /// this instance, not of the chain, so never shared with others.
    #[error("transport: the {0} stopped")]
    Stopped(Stopped),
    /// The call reverted: an answer about the call, not a fault of the
    /// endpoint (its health is unchanged and no other endpoint is asked).
    /// The revert data, cut to [`MAX_REVERT_BYTES`].
    #[error("the call reverted ({} bytes of revert data)", .0.len())]
    Reverted(Bytes),
    /// The fee the node suggests is above the ceiling: refused, never
    /// signed. In wei per gas (saturated: the ceiling is far below
    /// `u64::MAX`, and the enum stays eight-byte aligned).
    #[error("max fee per gas {max_fee_per_gas} is above the ceiling {ceiling}")]
    FeeAboveCeiling { max_fee_per_gas: u64, ceiling: u64 },
    /// The gas the node estimates is above the ceiling.
    #[error("gas limit {gas_limit} is above the ceiling {ceiling}")]
    GasAboveCeiling { gas_limit: u64, ceiling: u64 },
    /// A request larger than the pool sends (call data).
    #[error("call data of {len} bytes is above the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
}

/// The most revert data an error keeps.
pub const MAX_REVERT_BYTES: usize = 1024;

/// Which part of the instance stopped answering its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stopped {
    Pool,
    Coalescer,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::Pool => "RPC pool",
            Stopped::Coalescer => "coalescer",
        })
    }
}

impl RpcError {
    /// A stable label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            RpcError::Timeout(_) => "rpc_timeout",
            RpcError::Transport(_) | RpcError::Connect(_) | RpcError::HttpStatus(_) | RpcError::Stopped(_) => {
                "rpc_transport"
            }
            RpcError::Malformed(_) => "rpc_malformed",
            RpcError::JsonRpc { .. } => "rpc_error_response",
            RpcError::WrongChain { .. } => "rpc_wrong_chain",
            RpcError::AllCircuitsOpen => "rpc_circuits_open",
            RpcError::Saturated(_) => "rpc_saturated",
            RpcError::Reverted(_) => "rpc_reverted",
            RpcError::FeeAboveCeiling { .. } => "rpc_fee_ceiling",
            RpcError::GasAboveCeiling { .. } => "rpc_gas_ceiling",
            RpcError::TooLarge { .. } => "rpc_too_large",
        }
    }

    /// Whether the connection itself failed: the next use of the endpoint
    /// re-checks its chain id first.
    pub(super) fn lost_connection(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout(_) | RpcError::Transport(_) | RpcError::Connect(_) | RpcError::HttpStatus(_)
        )
    }

    /// What kind of failure, in words of ours only (`timeout`, `connect`,
    /// `http 401`, `json_rpc_error -32000`, …): what `/readyz` shows. A
    /// node's own text may quote its URL, key and host.
    pub fn category(&self) -> String {
        match self {
            RpcError::Timeout(_) => "timeout".into(),
            RpcError::Transport(_) => "transport".into(),
            RpcError::Connect(_) => "connect".into(),
            RpcError::HttpStatus(code) => format!("http {code}"),
            RpcError::Malformed(_) => "malformed".into(),
            RpcError::JsonRpc { code, .. } => format!("json_rpc_error {code}"),
            RpcError::WrongChain { got, .. } => format!("wrong_chain {got}"),
            RpcError::AllCircuitsOpen => "circuits_open".into(),
            RpcError::Saturated(_) => "saturated".into(),
            RpcError::Stopped(_) => "transport".into(),
            RpcError::Reverted(_) => "reverted".into(),
            RpcError::FeeAboveCeiling { .. } => "fee_ceiling".into(),
            RpcError::GasAboveCeiling { .. } => "gas_ceiling".into(),
            RpcError::TooLarge { .. } => "too_large".into(),
        }
    }
}

/// alloy's error, as one of ours. Every text a node supplied (its
/// JSON-RPC message, a body that does not parse, a connection error's
/// words) is scrubbed of the endpoint's secrets and bounded: it ends up in
/// log lines and answers to other instances.
pub(super) fn classify(e: TransportError, redactor: &Redactor) -> RpcError {
    match e {
        AlloyError::ErrorResp(p) => RpcError::JsonRpc {
            code: p.code,
            // The node's wording of "known already" matters to a broadcast;
            // it is kept as our own words, before any scrubbing.
            message: if already_known(&p.message) {
                ALREADY_KNOWN.to_owned()
            } else {
                redactor.scrub(&p.message)
            },
        },
        AlloyError::NullResp => RpcError::Malformed("a null result where a value was expected".into()),
        AlloyError::DeserError { err, text } => RpcError::Malformed(format!(
            "{} in {}",
            redactor.scrub(&err.to_string()),
            redactor.scrub(&text)
        )),
        AlloyError::Transport(TransportErrorKind::Custom(inner)) => match inner.downcast_ref::<HttpFault>() {
            Some(HttpFault::Timeout(d)) => RpcError::Timeout(*d),
            Some(HttpFault::TooLarge) => RpcError::Malformed(HttpFault::TooLarge.to_string()),
            Some(HttpFault::Status(code)) => RpcError::HttpStatus(*code),
            Some(HttpFault::Connect(detail)) => RpcError::Connect(redactor.scrub(detail)),
            Some(f) => RpcError::Transport(redactor.scrub(&f.to_string())),
            None => RpcError::Transport(redactor.scrub(&inner.to_string())),
        },
        AlloyError::Transport(TransportErrorKind::MissingBatchResponse(id)) => {
            RpcError::Malformed(format!("no answer for call {id} of the batch"))
        }
        other => RpcError::Transport(redactor.scrub(&other.to_string())),
    }
}

/// A call's error, unless it is a revert: then `Ok` with the revert data
/// (cut to [`MAX_REVERT_BYTES`]; empty when the node gave none). A revert
/// is code 3 (EIP-1474's "execution reverted", with data) or a message
/// that says so.
pub(super) fn as_revert(e: TransportError) -> Result<Bytes, TransportError> {
    match e {
        AlloyError::ErrorResp(p) if is_revert(&p) => {
            let mut data: Bytes = p
                .data
                .as_deref()
                .and_then(|raw| serde_json::from_str::<Bytes>(raw.get()).ok())
                .unwrap_or_default();
            if data.len() > MAX_REVERT_BYTES {
                data = data.slice(..MAX_REVERT_BYTES);
            }
            Ok(data)
        }
        other => Err(other),
    }
}

fn is_revert(p: &ErrorPayload) -> bool {
    p.code == 3 || p.message.to_ascii_lowercase().starts_with("execution reverted")
}

/// What a node's "this transaction is known already" becomes.
pub(super) const ALREADY_KNOWN: &str = "already known";

/// Node messages that mean "this transaction is known already" (in the
/// pool or mined): the broadcast happened, by this or an earlier attempt.
pub(super) fn already_known(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "already known",
        "known transaction",
        "already imported",
        "already exists",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// Whether a node's error to `eth_sendRawTransactionSync` says the
/// transaction is in its pool but was not mined within the method's wait
/// (EIP-7966's error code 4: "added to the mempool but wasn't processed"):
/// sent, its fate unknown, not refused. Read as a refusal, a transaction
/// that a nonce gap holds back could be mined later, unaccounted for.
pub(super) fn pooled_not_mined(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == 4
        || [
            "added to the mempool",
            "added to mempool",
            "wasn't processed",
            "not processed within",
            // anvil 1.7.1, after 30 s with the transaction queued
            "transaction confirmation timeout",
        ]
        .iter()
        .any(|k| m.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn a_sync_send_that_timed_out_in_the_pool_is_not_a_refusal() {
        assert!(pooled_not_mined(
            4,
            "the transaction was added to the mempool but wasn't processed in 2s"
        ));
        assert!(pooled_not_mined(
            -32000,
            "Transaction was added to mempool but not processed within 5000ms"
        ));
        assert!(pooled_not_mined(-32603, "Transaction confirmation timeout"));
        assert!(!pooled_not_mined(-32000, "nonce too low"));
        assert!(!pooled_not_mined(-32003, "insufficient funds for gas * price + value"));
    }

    #[test]
    fn errors_are_classified_by_kind() {
        let r = Redactor::default();
        let timeout = TransportErrorKind::custom(HttpFault::Timeout(Duration::from_millis(5)));
        assert_eq!(classify(timeout, &r), RpcError::Timeout(Duration::from_millis(5)));
        let refused = TransportErrorKind::custom(HttpFault::Connect("refused".into()));
        assert!(matches!(classify(refused, &r), RpcError::Connect(_)));
        let status = TransportErrorKind::custom(HttpFault::Status(401));
        assert_eq!(classify(status, &r).category(), "http 401");
        let big = TransportErrorKind::custom(HttpFault::TooLarge);
        assert!(matches!(classify(big, &r), RpcError::Malformed(_)));
        let garbage = TransportError::deser_err(serde_json::from_str::<u8>("x").unwrap_err(), "x".repeat(500));
        let RpcError::Malformed(m) = classify(garbage, &r) else {
            panic!()
        };
        assert!(m.len() < 500, "{m}");
        assert!(
            classify(
                TransportErrorKind::missing_batch_response(alloy_json_rpc::Id::Number(2)),
                &r
            )
            .cause()
                == "rpc_malformed"
        );
    }

    fn node_error(message: &str) -> TransportError {
        AlloyError::ErrorResp(alloy_json_rpc::ErrorPayload {
            code: -32000,
            message: message.to_owned().into(),
            data: None,
        })
    }

    /// The probe's finding: a node's error message quoting its URL reached
    /// `/readyz` and the logs verbatim.
    #[test]
    fn a_nodes_words_lose_every_secret_part_of_its_url() {
        let u =
            Url::parse("https://us%65r:p%40ss@Secret-Host.example:8443/v2/KEY-S3CRET?apikey=Q-VAL&x=y%2Fz").unwrap();
        let said = "invalid api key key-s3cret for https://user:p@ss@secret-host.EXAMPLE:8443/v2/KEY-S3CRET?apikey=Q-VAL&x=y/z \u{1b}[2J";
        let err = classify(node_error(said), &Redactor::for_url(&u, false));
        let shown = err.to_string();
        for secret in [
            "s3cret",
            "user",
            "p@ss",
            "secret-host",
            "q-val",
            "y/z",
            "y%2fz",
            "\u{1b}[2J",
        ] {
            assert!(
                !shown.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()),
                "{secret}: {shown}"
            );
        }
        assert!(
            shown.starts_with("JSON-RPC error -32000: \"invalid api key [redacted] for https://"),
            "{shown}"
        );
        assert_eq!(err.category(), "json_rpc_error -32000");
        // with hosts exposed the host may show, never the key
        let shown = classify(node_error(said), &Redactor::for_url(&u, true)).to_string();
        assert!(
            shown.contains("secret-host.EXAMPLE") && !shown.contains("S3CRET"),
            "{shown}"
        );
        // bounded, and the whole text is scrubbed before the cut
        let long = format!("{}KEY-S3CRET", "a".repeat(195));
        let shown = classify(node_error(&long), &Redactor::for_url(&u, false)).to_string();
        assert!(!shown.contains("KEY-S") && shown.chars().count() < 260, "{shown}");
        // "known already" survives as our own words
        let known = classify(
            node_error("Known transaction: KEY-S3CRET"),
            &Redactor::for_url(&u, false),
        );
        assert_eq!(
            known,
            RpcError::JsonRpc {
                code: -32000,
                message: ALREADY_KNOWN.into()
            }
        );
    }

    #[test]
    fn a_revert_keeps_its_data_bounded_and_other_errors_pass() {
        let reverted = |code: i64, message: &str, data: Option<&str>| {
            AlloyError::ErrorResp(ErrorPayload {
                code,
                message: message.to_owned().into(),
                data: data.map(|d| serde_json::value::RawValue::from_string(d.to_owned()).unwrap()),
            })
        };
        let got = as_revert(reverted(3, "execution reverted: custom error", Some("\"0x832f98b5\""))).unwrap();
        assert_eq!(got.as_ref(), [0x83, 0x2f, 0x98, 0xb5]);
        let long = format!("\"0x{}\"", "ab".repeat(5000));
        assert_eq!(
            as_revert(reverted(3, "x", Some(&long))).unwrap().len(),
            MAX_REVERT_BYTES
        );
        assert!(
            as_revert(reverted(-32000, "Execution reverted", None))
                .unwrap()
                .is_empty()
        );
        assert!(as_revert(reverted(-32000, "nonce too low", None)).is_err());
        assert!(as_revert(TransportErrorKind::custom(HttpFault::Status(500))).is_err());
        let e = RpcError::Reverted(Bytes::from_static(&[1, 2]));
        assert_eq!((e.cause(), e.category().as_str()), ("rpc_reverted", "reverted"));
        let wire = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<RpcError>(&wire).unwrap(), e);
    }

    #[test]
    fn a_stopped_pool_is_a_transport_failure_of_this_instance() {
        let e = RpcError::Stopped(Stopped::Pool);
        assert_eq!(e.to_string(), "transport: the RPC pool stopped");
        assert_eq!(
            RpcError::Stopped(Stopped::Coalescer).to_string(),
            "transport: the coalescer stopped"
        );
        assert_eq!((e.cause(), e.category().as_str()), ("rpc_transport", "transport"));
        let wire = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<RpcError>(&wire).unwrap(), e);
    }
}
