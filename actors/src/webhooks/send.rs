//! One attempt: a signed POST and the status it got back.
//!
//! The whole exchange, from connecting to the last byte read, is bounded
//! by the attempt's timeout, and the answer's body is read to at most
//! [`MAX_ANSWER_BYTES`] (a receiver's body says nothing we act on; a few
//! bytes of a refusal go into `last_error` for the operator). Redirects
//! are not followed: a 3xx is a failed attempt like any non-2xx.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;

use super::db::Claimed;
use super::sign::SigningKey;
use crate::rpc_transport::HttpClient;

/// What is read of an answer at most.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;
/// What of a refusal's body is kept in `last_error`.
const ERROR_SNIPPET_CHARS: usize = 200;

/// Why an attempt did not get a 2xx. The messages never hold the URL or
/// a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { status: u16, body: String },
    #[error("request failed: {0}")]
    Other(String),
}

impl SendError {
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The headers of one attempt at `timestamp` (unix seconds).
pub fn headers(key: &SigningKey, claimed: &Claimed, timestamp: i64) -> [(&'static str, String); 4] {
    [
        ("content-type", "application/json".to_owned()),
        ("webhook-id", claimed.message_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            key.sign(&claimed.message_id, timestamp, claimed.body.as_bytes()),
        ),
    ]
}

/// POSTs `claimed` to `uri`; the 2xx status, or why not.
pub async fn send(
    client: &HttpClient,
    uri: &Uri,
    key: &SigningKey,
    claimed: &Claimed,
    timestamp: i64,
    timeout: Duration,
) -> Result<u16, SendError> {
    let exchange = async {
        let mut request = hyper::Request::post(uri.clone()).header(hyper::header::USER_AGENT, "settlegate-webhooks");
        for (name, value) in headers(key, claimed, timestamp) {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(claimed.body.clone())))
            .map_err(|e| SendError::Other(e.to_string()))?;
        let resp = client.request(request).await.map_err(|e| {
            // The error's display never holds the URL; its source says more.
            let detail = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            if e.is_connect() {
                SendError::Connect(detail)
            } else {
                SendError::Other(detail)
            }
        })?;
        let status = resp.status().as_u16();
        // Read (bounded) so the connection can be reused; a body over the
        // bound only ends the read.
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(SendError::Status {
                status,
                body: snippet(&body),
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SendError::Timeout(timeout))?
}

/// The start of a refusal's body, on one line of printable text.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(ERROR_SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_kept_short_and_on_one_line() {
        assert_eq!(snippet(b"  boom\r\nagain "), "boom  again");
        assert_eq!(snippet(&[b'x'; 1000]).len(), ERROR_SNIPPET_CHARS);
        let e = SendError::Status {
            status: 500,
            body: String::new(),
        };
        assert_eq!(e.to_string(), "HTTP 500");
        assert_eq!(e.status(), Some(500));
    }
}
