//! `[otel]`: where traces and metrics are exported over OTLP. Each key
//! falls back to its OpenTelemetry standard variable; ours wins, being the
//! one an operator set for this service.

use std::collections::HashMap;
use std::time::Duration;

use url::Url;

use super::SettingsError;
use super::raw::RawOtel;
use super::values::parse_http_url;

const SECTION: &str = "otel";

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318), to `<endpoint>/v1/traces`.
    HttpProtobuf,
}

/// Where and how traces are exported. Each value comes from settlegate's
/// own key when set, else from the OpenTelemetry standard variable
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
#[derive(Clone, Debug)]
pub struct Otel {
    /// For HTTP, the full traces URL (`/v1/traces` appended to a bare
    /// endpoint, as the OTLP specification says for the base variable).
    pub endpoint: Url,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// `key=value` pairs from `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    /// Spans queued for export at most; beyond it they are dropped and counted.
    pub max_queue_size: usize,
    /// Where metrics go: for HTTP the full metrics URL (`/v1/metrics`), for
    /// gRPC the same endpoint as traces.
    pub metrics_endpoint: Url,
    /// How often the metrics are pushed (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub metrics_interval: Duration,
}

impl Otel {
    /// The resource of every export, spans and metrics alike:
    /// `service.name`, `service.version`, then `OTEL_RESOURCE_ATTRIBUTES`
    /// (whose `service.name` gives way to the configured one).
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("service.name".to_owned(), self.service_name.clone()),
            ("service.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ];
        out.extend(self.resource.iter().filter(|(k, _)| k != "service.name").cloned());
        out
    }
}

/// `otel.*`, each key falling back to its `OTEL_*` variable (ours wins:
/// it is the one an operator set for this service).
pub(super) fn validate(raw: RawOtel, env: &HashMap<String, String>) -> Result<Option<Otel>, SettingsError> {
    let from_env = |k: &str| env.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let (endpoint, endpoint_key) = match (raw.endpoint, from_env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(e), _) => (e, "otel.endpoint"),
        (None, Some(e)) => (e, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (None, None) => return Ok(None),
    };
    let mut endpoint = parse_http_url(endpoint_key, &endpoint)?;
    let protocol = match raw
        .protocol
        .or_else(|| from_env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
        .unwrap_or("http/protobuf")
    {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => {
            return Err(SettingsError::invalid(
                SECTION,
                format!("otel.protocol {other:?} is not grpc or http/protobuf"),
            ));
        }
    };
    let bare = matches!(endpoint.path(), "" | "/");
    let metrics_endpoint = match raw.metrics_endpoint {
        Some(e) => parse_http_url("otel.metrics_endpoint", &e)?,
        None => match from_env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some(e) => parse_http_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &e)?,
            None if protocol == OtlpProtocol::Grpc => endpoint.clone(),
            None => {
                // the traces URL's sibling: `/v1/traces` becomes `/v1/metrics`,
                // a base path gets `/v1/metrics` appended
                let mut m = endpoint.clone();
                let path = endpoint.path().trim_end_matches('/');
                let base = path.strip_suffix("/v1/traces").unwrap_or(path);
                m.set_path(&format!("{base}/v1/metrics"));
                m
            }
        },
    };
    if protocol == OtlpProtocol::HttpProtobuf && bare {
        endpoint.set_path("/v1/traces");
    }
    let interval_ms = match raw.metrics_interval_ms {
        Some(ms) => ms,
        None => match from_env("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => v.parse().map_err(|_| {
                SettingsError::invalid(
                    SECTION,
                    format!("OTEL_METRIC_EXPORT_INTERVAL {v:?} is not a number of milliseconds"),
                )
            })?,
            None => 60_000,
        },
    };
    if !(100..=3_600_000).contains(&interval_ms) {
        return Err(SettingsError::invalid(
            SECTION,
            format!("otel.metrics_interval_ms must be between 100 and 3600000, got {interval_ms}"),
        ));
    }
    let service_name = raw
        .service_name
        .or_else(|| from_env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "settlegate".into());
    let mut resource = Vec::new();
    for pair in from_env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default().split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((k, v)) = pair.split_once('=') else {
            return Err(SettingsError::invalid(
                SECTION,
                format!("OTEL_RESOURCE_ATTRIBUTES: {pair:?} is not key=value"),
            ));
        };
        resource.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if !(64..=1_000_000).contains(&raw.max_queue_size) {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "otel.max_queue_size must be between 64 and 1000000, got {}",
                raw.max_queue_size
            ),
        ));
    }
    Ok(Some(Otel {
        endpoint,
        protocol,
        service_name,
        resource,
        max_queue_size: raw.max_queue_size,
        metrics_endpoint,
        metrics_interval: Duration::from_millis(interval_ms),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key, load};
    use std::time::Duration;

    #[test]
    fn the_metrics_endpoint_is_the_traces_endpoints_sibling_unless_set() {
        let base = [
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &key(1) as &str),
        ];
        let otel = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            let o = load(&pairs).unwrap().otel.unwrap();
            (
                o.endpoint.to_string(),
                o.metrics_endpoint.to_string(),
                o.metrics_interval,
            )
        };
        let c = "http://c:4318";
        for (endpoint, traces, metrics) in [
            (c, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
            (
                "http://c:4318/v1/traces",
                "http://c:4318/v1/traces",
                "http://c:4318/v1/metrics",
            ),
            (
                "http://c:4318/otlp/",
                "http://c:4318/otlp/",
                "http://c:4318/otlp/v1/metrics",
            ),
        ] {
            let got = otel(&[("SETTLEGATE_OTEL__ENDPOINT", endpoint)]);
            assert_eq!((got.0.as_str(), got.1.as_str()), (traces, metrics), "{endpoint}");
            assert_eq!(got.2, Duration::from_secs(60));
        }
        let grpc = otel(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!((grpc.0.as_str(), grpc.1.as_str()), ("http://c:4317/", "http://c:4317/"));
        let set = otel(&[
            ("SETTLEGATE_OTEL__ENDPOINT", c),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/in"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
        ]);
        assert_eq!((set.1.as_str(), set.2), ("http://m:9/in", Duration::from_millis(1500)));
        let ours = otel(&[
            ("SETTLEGATE_OTEL__ENDPOINT", c),
            ("SETTLEGATE_OTEL__METRICS_ENDPOINT", "http://ours:1/m"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/in"),
            ("SETTLEGATE_OTEL__METRICS_INTERVAL_MS", "250"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
        ]);
        assert_eq!(
            (ours.1.as_str(), ours.2),
            ("http://ours:1/m", Duration::from_millis(250))
        );
    }
}
