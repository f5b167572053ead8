//! The HTTP transport under alloy's JSON-RPC client (`alloy-rpc-client`).
//!
//! alloy gives us request ids, batching, response matching and typed
//! errors; this file only moves bytes, over hyper-util's pooled HTTP/1.1
//! client (rustls with the platform's roots for `https` endpoints). It
//! exists instead of alloy's own HTTP transport for two reasons that matter
//! when a node misbehaves: the answer is read with a size cap (alloy's reads
//! any body whole), and every failure is a typed [`HttpFault`] without the
//! URL (an RPC URL can carry an API key in its path), so the pool can tell
//! a timeout from a refused connection from garbage. hyper-util rather than
//! reqwest: the same hyper underneath, without the layers (redirects,
//! per-request timer, URL re-parsing) that cost about 40 µs a call here
//! (`BENCHMARKS.md`).

use std::task::{Context, Poll};
use std::time::Duration;

use alloy_json_rpc::{RequestPacket, ResponsePacket};
use alloy_transport::{TransportError, TransportErrorKind, TransportFut};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::Url;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The HTTP client shared by every endpoint of the pool.
pub type HttpClient = Client<Https, Full<Bytes>>;

/// Why the pool's HTTP transport cannot be built: a boot error. The
/// messages name the endpoint by [`crate::rpc_pool::endpoint_label`] only.
#[derive(Debug, thiserror::Error)]
pub enum TransportBuildError {
    /// The platform's TLS roots cannot be loaded.
    #[error("TLS roots: {0}")]
    TlsRoots(#[from] rustls::Error),
    /// The URL (its label) cannot be sent to as it is.
    #[error("{0} is not a usable HTTP URI")]
    UnusableUri(String),
}

/// Builds the shared client; `connect_timeout` bounds each TCP connect.
pub fn http_client(connect_timeout: Duration) -> Result<HttpClient, TransportBuildError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

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
    fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        // The error's display never holds the URL; its source may say more.
        let detail = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        if e.is_connect() {
            HttpFault::Connect(detail)
        } else {
            HttpFault::Other(detail)
        }
    }
}

fn fault(f: HttpFault) -> TransportError {
    TransportErrorKind::custom(f)
}

/// One node's URL over the shared client. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct BoundedHttp {
    client: HttpClient,
    /// The URL without its credentials: hyper keys (and, at debug level,
    /// logs) its connection pool by this URI's authority.
    uri: Uri,
    /// `Basic` credentials from the URL's user and password, sent as a
    /// header marked sensitive.
    authorization: Option<hyper::header::HeaderValue>,
    timeout: Duration,
}

impl BoundedHttp {
    /// `timeout` bounds one exchange, from connecting to the last byte.
    pub fn new(client: HttpClient, url: &Url, timeout: Duration) -> Result<Self, TransportBuildError> {
        let unusable = || TransportBuildError::UnusableUri(crate::rpc_pool::endpoint_label(url));
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            use base64::Engine as _;
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or("")));
            let mut value = hyper::header::HeaderValue::try_from(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .map_err(|_| unusable())?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut bare = url.clone();
        bare.set_username("").map_err(|_| unusable())?;
        bare.set_password(None).map_err(|_| unusable())?;
        let uri = bare.as_str().parse().map_err(|_| unusable())?;
        Ok(BoundedHttp {
            client,
            uri,
            authorization,
            timeout,
        })
    }

    async fn exchange(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let body = serde_json::to_vec(&req).map_err(TransportError::ser_err)?;
        let send = async {
            let mut request =
                hyper::Request::post(self.uri.clone()).header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(auth) = &self.authorization {
                request = request.header(hyper::header::AUTHORIZATION, auth.clone());
            }
            let request = request
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| HttpFault::Other(e.to_string()))?;
            let resp = self.client.request(request).await.map_err(HttpFault::from_client)?;
            if !resp.status().is_success() {
                return Err(HttpFault::Status(resp.status().as_u16()));
            }
            // The cap holds whatever the node claims in Content-Length.
            match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(HttpFault::TooLarge),
                Err(e) => Err(HttpFault::Other(e.to_string())),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn url_credentials_become_a_sensitive_basic_header_and_leave_the_uri() {
        let client = http_client(Duration::from_secs(1)).unwrap();
        let url = Url::parse("http://us%40er:p%3Ass@node.example:8545/v1/?apikey=k").unwrap();
        let t = BoundedHttp::new(client.clone(), &url, Duration::from_secs(1)).unwrap();
        assert_eq!(t.uri.to_string(), "http://node.example:8545/v1/?apikey=k");
        let auth = t.authorization.clone().unwrap();
        assert!(auth.is_sensitive());
        // base64("us@er:p:ss")
        assert_eq!(auth.to_str().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(!format!("{t:?}").contains("cDpzcw"), "Debug hides it");
        let plain = BoundedHttp::new(
            client,
            &Url::parse("http://node.example:8545").unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(plain.authorization.is_none());
    }
}
