//! The API's error codes: the one list every problem+json `code` comes
//! from, with its HTTP status and its `urn:settlegate:problem:` type. The
//! renderers (`http::problem`, `http::respond`) and the OpenAPI enums
//! (`PaymentCode`, `ErrorCode` in `http::openapi`) are derived from it.
//!
//! A code is `SCREAMING_SNAKE_CASE`, unique, and names one status; its
//! problem type is its kebab-case form under `urn:settlegate:problem:`.
//! Codes are public API: a client branches on them, so one is never renamed.

use std::fmt;
use std::sync::LazyLock;

/// Declares [`Code`] and its table in one place, so [`Code::ALL`] lists
/// every variant, in declaration order.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal, $status:literal;)*) => {
        /// A `code` of a problem+json answer.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order (`ALL[c as usize] == c`).
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The wire form (`PAYMENT_REQUIRED`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }
        }
    };
}

codes! {
    // 402: not paid; nothing consumed.
    PaymentRequired = "PAYMENT_REQUIRED", 402;
    MalformedCredential = "MALFORMED_CREDENTIAL", 402;
    VerificationFailed = "VERIFICATION_FAILED", 402;
    PaymentPending = "PAYMENT_PENDING", 402;
    Replayed = "REPLAYED", 402;
    /// A session credential refused: the problem type names why.
    SessionRefused = "SESSION_REFUSED", 402;
    /// The session's channel is not on chain, finalised, or closing.
    ChannelGone = "CHANNEL_GONE", 410;
    // 503: no trustworthy answer now; nothing consumed.
    RpcUnavailable = "RPC_UNAVAILABLE", 503;
    ReplayStoreUnavailable = "REPLAY_STORE_UNAVAILABLE", 503;
    GenomeUnavailable = "GENOME_UNAVAILABLE", 503;
    // Every other error.
    CapabilityDenied = "CAPABILITY_DENIED", 403;
    NotFound = "NOT_FOUND", 404;
    MethodNotAllowed = "METHOD_NOT_ALLOWED", 405;
    InvalidRequest = "INVALID_REQUEST", 400;
    InvalidTxHash = "INVALID_TX_HASH", 400;
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", 413;
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", 415;
    Unauthorized = "UNAUTHORIZED", 401;
    RateLimited = "RATE_LIMITED", 429;
    UriTooLong = "URI_TOO_LONG", 414;
    HeadersTooLarge = "HEADERS_TOO_LARGE", 431;
    RequestTimeout = "REQUEST_TIMEOUT", 408;
    /// The admin API: the ledger's database did not answer in time.
    LedgerUnavailable = "LEDGER_UNAVAILABLE", 503;
    /// The admin API: the channel book or the chain did not answer in time.
    ChannelsUnavailable = "CHANNELS_UNAVAILABLE", 503;
}

/// The prefix of every settlegate problem type.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:settlegate:problem:";

impl Code {
    /// `urn:settlegate:problem:<code in kebab case>`, built once per code
    /// (402s and 503s are answered many thousand times a second).
    pub fn problem_type(self) -> &'static str {
        static TYPES: LazyLock<Vec<String>> = LazyLock::new(|| {
            Code::ALL
                .iter()
                .map(|c| {
                    format!(
                        "{PROBLEM_TYPE_PREFIX}{}",
                        c.as_str().to_ascii_lowercase().replace('_', "-")
                    )
                })
                .collect()
        });
        &TYPES[self as usize]
    }

    /// Whether it is a payment check's answer (402, 410 for a session's
    /// gone channel, or a 503 of the check: the body `PaymentProblem`)
    /// rather than an error of the request (`Problem`). The admin API's
    /// 503s are errors of their own.
    pub const fn is_payment(self) -> bool {
        matches!(self.status(), 402 | 410 | 503) && !matches!(self, Code::LedgerUnavailable | Code::ChannelsUnavailable)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }

    #[test]
    fn codes_are_unique_screaming_snake_case_and_serialise_as_such() {
        let mut seen = HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{s}"
            );
            assert!(!s.starts_with('_') && !s.ends_with('_') && !s.contains("__"), "{s}");
            assert_eq!(serde_json::to_value(c).unwrap(), s);
            assert_eq!(c.to_string(), s);
        }
    }

    #[test]
    fn each_problem_type_is_the_kebab_case_urn_and_leads_back_to_its_code() {
        let mut seen = HashSet::new();
        for c in Code::ALL {
            let t = c.problem_type();
            assert!(seen.insert(t), "{t} twice");
            let kebab = t.strip_prefix(PROBLEM_TYPE_PREFIX).unwrap();
            assert!(kebab.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{t}");
            let back: Vec<&Code> = Code::ALL
                .iter()
                .filter(|d| d.as_str() == kebab.to_ascii_uppercase().replace('-', "_"))
                .collect();
            assert_eq!(back, [c]);
        }
        assert_eq!(Code::Replayed.problem_type(), "urn:settlegate:problem:replayed");
        assert_eq!(
            Code::ReplayStoreUnavailable.problem_type(),
            "urn:settlegate:problem:replay-store-unavailable"
        );
    }

    #[test]
    fn payment_codes_are_the_402s_and_503s_and_the_rest_are_client_errors() {
        for c in Code::ALL {
            let s = c.status();
            assert!(s == 402 || s == 503 || (400..500).contains(&s), "{c}: {s}");
            let admin = matches!(c, Code::LedgerUnavailable | Code::ChannelsUnavailable);
            assert_eq!(c.is_payment(), !admin && (s == 402 || s == 410 || s == 503), "{c}");
        }
        assert_eq!(Code::ALL.iter().filter(|c| c.is_payment()).count(), 10);
    }
}
