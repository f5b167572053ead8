//! The HTTP transport under alloy's JSON-RPC client (`alloy-rpc-client`).
//!
//! alloy gives us request ids, batching, response matching and typed
//! errors; this file only moves bytes. It exists instead of alloy's own
//! reqwest transport for two reasons that matter when a node misbehaves:
//! the answer is read with a size cap (alloy's reads any body whole), and
//! every failure is a typed [`HttpFault`] without the URL (an RPC URL can
//! carry an API key in its path), so the pool can tell a timeout from a
//! refused connection from garbage.

use std::task::{Context, Poll};
use std::time::Duration;

use alloy_json_rpc::{RequestPacket, ResponsePacket};
use alloy_transport::{TransportError, TransportErrorKind, TransportFut};
use url::Url;

/// A JSON-RPC answer larger than this is garbage, not a receipt.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Why an HTTP exchange with a node failed before JSON-RPC was involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpFault {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("request failed: {0}")]
    Other(String),
}

impl HttpFault {
    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            HttpFault::Timeout(timeout)
        } else if e.is_connect() {
            HttpFault::Connect(e.without_url().to_string())
        } else {
            HttpFault::Other(e.without_url().to_string())
        }
    }
}

fn fault(f: HttpFault) -> TransportError {
    TransportErrorKind::custom(f)
}

/// One node's URL over a shared reqwest client. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct BoundedHttp {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
}

impl BoundedHttp {
    /// `timeout` bounds one exchange, from connecting to the last byte.
    pub fn new(client: reqwest::Client, url: Url, timeout: Duration) -> Self {
        BoundedHttp { client, url, timeout }
    }

    async fn exchange(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let body = serde_json::to_vec(&req).map_err(TransportError::ser_err)?;
        let send = async {
            let mut resp = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| HttpFault::from_reqwest(e, self.timeout))?;
            if !resp.status().is_success() {
                return Err(HttpFault::Status(resp.status().as_u16()));
            }
            if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
                return Err(HttpFault::TooLarge);
            }
            let mut bytes = Vec::with_capacity(resp.content_length().unwrap_or(4096).min(1 << 16) as usize);
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| HttpFault::from_reqwest(e, self.timeout))?
            {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpFault::TooLarge);
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| fault(HttpFault::Timeout(self.timeout)))?
            .map_err(fault)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            // Keep the start of the text only: it goes into a log line.
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            TransportError::deser_err(e, shown)
        })
    }
}

impl tower::Service<RequestPacket> for BoundedHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest queues internally; readiness is always immediate.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        Box::pin(self.clone().exchange(req))
    }
}
