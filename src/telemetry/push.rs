//! Metrics over OTLP, with the names and values of `/metrics`.
//!
//! There is one source of truth, the Prometheus registry of
//! [`super::metrics::Metrics`]: every `otel.metrics_interval_ms` a task
//! has its [`Source`] refresh the scrape-time state (endpoint health,
//! genome expiry) as a scrape does, encodes it, and maps each family to an OTLP metric
//! ([`to_otlp`]): counters become cumulative monotonic sums, gauges gauges,
//! histograms explicit-bucket histograms. An OTLP metric carries the
//! family's name (`settlegate_http_requests`); the Collector's Prometheus
//! exporter adds `_total` to a monotonic sum, so a dashboard reads the same
//! series from either path.
//!
//! The export runs on its own task with a timeout: a dead or hung collector
//! costs one failed push per interval (counted in
//! `settlegate_otel_metric_exports_total{outcome="failed"}`), never a request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::TelemetryError;
use super::metrics::Metrics;
use crate::settings::{Otel, OtlpProtocol};

/// Bound on one push.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One sample line of the text encoding.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
}

/// Parses `name{a="x",b="y"} value` (the registry's own output: label
/// values escaped with `\\`, `\"` and `\n`).
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r.find("=\"")?;
            let key = r[..eq].trim_start_matches(',').to_owned();
            let mut value = String::new();
            let mut chars = r[eq + 2..].char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break eq + 2 + i + 1,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            r = &r[end..];
        }
        rest = r;
    }
    let value = rest.trim().split(' ').next()?.to_owned();
    (!value.is_empty()).then_some(Sample { name, labels, value })
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| kv(k, v)).collect()
}

fn number(value: &str) -> Option<number_data_point::Value> {
    match value.parse::<i64>() {
        Ok(i) => Some(number_data_point::Value::AsInt(i)),
        Err(_) => parse_f64(value).map(number_data_point::Value::AsDouble),
    }
}

fn parse_f64(value: &str) -> Option<f64> {
    match value {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

struct Family {
    name: String,
    help: String,
    kind: String,
    samples: Vec<Sample>,
}

fn families(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(Family {
                name: name.to_owned(),
                help: help.to_owned(),
                kind: String::new(),
                samples: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match out.last_mut() {
                Some(f) if f.name == name => f.kind = kind.to_owned(),
                _ => out.push(Family {
                    name: name.to_owned(),
                    help: String::new(),
                    kind: kind.to_owned(),
                    samples: Vec::new(),
                }),
            }
        } else if !line.starts_with('#')
            && let (Some(s), Some(f)) = (parse_sample(line), out.last_mut())
        {
            f.samples.push(s);
        }
    }
    out
}

/// Maps the registry's OpenMetrics text to OTLP metrics, cumulative since
/// `start_ns`, observed at `now_ns`. Families of other kinds (info,
/// unknown) are left out.
pub fn to_otlp(text: &str, start_ns: u64, now_ns: u64) -> Vec<Metric> {
    let point = |labels: &[(String, String)], value: &str| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: number(value),
        ..Default::default()
    };
    let mut metrics = Vec::new();
    for f in families(text) {
        let data = match f.kind.as_str() {
            "counter" => {
                let total = format!("{}_total", f.name);
                metric::Data::Sum(Sum {
                    data_points: f
                        .samples
                        .iter()
                        .filter(|s| s.name == total)
                        .map(|s| point(&s.labels, &s.value))
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            }
            "gauge" => metric::Data::Gauge(Gauge {
                data_points: f
                    .samples
                    .iter()
                    .filter(|s| s.name == f.name)
                    .map(|s| point(&s.labels, &s.value))
                    .collect(),
            }),
            "histogram" => metric::Data::Histogram(Histogram {
                data_points: histogram_points(&f, start_ns, now_ns),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
            _ => continue,
        };
        metrics.push(Metric {
            name: f.name,
            description: f.help,
            data: Some(data),
            ..Default::default()
        });
    }
    metrics
}

/// One point per label set: Prometheus buckets are cumulative and end with
/// `+Inf`; OTLP's are per bucket, with the bounds of all but the last.
fn histogram_points(f: &Family, start_ns: u64, now_ns: u64) -> Vec<HistogramDataPoint> {
    #[derive(Default)]
    struct Acc {
        sum: Option<f64>,
        count: u64,
        buckets: Vec<(f64, u64)>,
    }
    let mut series: Vec<(Vec<(String, String)>, Acc)> = Vec::new();
    for s in &f.samples {
        let Some(suffix) = s.name.strip_prefix(f.name.as_str()) else {
            continue;
        };
        let mut labels = s.labels.clone();
        let le = labels.iter().position(|(k, _)| k == "le").map(|i| labels.remove(i).1);
        let i = match series.iter().position(|(l, _)| *l == labels) {
            Some(i) => i,
            None => {
                series.push((labels, Acc::default()));
                series.len() - 1
            }
        };
        let acc = &mut series[i].1;
        match (suffix, le) {
            ("_sum", _) => acc.sum = parse_f64(&s.value),
            ("_count", _) => acc.count = parse_f64(&s.value).unwrap_or(0.0) as u64,
            ("_bucket", Some(le)) => {
                if let Some(bound) = parse_f64(&le) {
                    acc.buckets.push((bound, parse_f64(&s.value).unwrap_or(0.0) as u64));
                }
            }
            _ => {}
        }
    }
    series
        .into_iter()
        .map(|(labels, mut acc)| {
            acc.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut explicit_bounds = Vec::new();
            let mut bucket_counts = Vec::new();
            let mut below = 0;
            for (bound, cumulative) in &acc.buckets {
                if bound.is_finite() {
                    explicit_bounds.push(*bound);
                    bucket_counts.push(cumulative.saturating_sub(below));
                    below = *cumulative;
                }
            }
            bucket_counts.push(acc.count.saturating_sub(below));
            HistogramDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count: acc.count,
                sum: acc.sum,
                bucket_counts,
                explicit_bounds,
                ..Default::default()
            }
        })
        .collect()
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The export request for one push.
pub fn request(config: &Otel, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    let resource = attributes(&config.resource_attributes());
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "settlegate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

enum Sink {
    Grpc(MetricsServiceClient<tonic::transport::Channel>),
    Http(reqwest::Client, url::Url),
}

impl Sink {
    fn new(config: &Otel) -> Result<Sink, TelemetryError> {
        Ok(match config.protocol {
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Channel::from_shared(config.metrics_endpoint.to_string())
                    .map_err(|e| TelemetryError::MetricsEndpoint {
                        endpoint: config.metrics_endpoint.clone(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(EXPORT_TIMEOUT)
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                Sink::Grpc(MetricsServiceClient::new(channel))
            }
            OtlpProtocol::HttpProtobuf => Sink::Http(
                reqwest::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(TelemetryError::MetricsClient)?,
                config.metrics_endpoint.clone(),
            ),
        })
    }

    async fn send(&mut self, req: ExportMetricsServiceRequest) -> Result<(), TelemetryError> {
        match self {
            Sink::Grpc(client) => Ok(client.export(req).await.map(|_| ())?),
            Sink::Http(client, url) => {
                let body = prost::Message::encode_to_vec(&req);
                let r = client
                    .post(url.clone())
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map_err(TelemetryError::Http)?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(TelemetryError::Refused(r.status()))
                }
            }
        }
    }
}

/// What a push exports: the registry, with its scrape-time state brought
/// up to date first (the HTTP surface's state implements it).
pub trait Source: 'static {
    /// Brings the scrape-time gauges up to date, as a scrape does.
    fn refresh(&self) -> impl Future<Output = ()>;
    fn metrics(&self) -> &Metrics;
}

/// Pushes the metrics: every `config.metrics_interval` once started, and
/// once more at shutdown ([`Pusher::push`]), so the last counts reach the
/// collector.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<tokio::sync::Mutex<PushState>>,
    config: Otel,
    start_ns: u64,
}

struct PushState {
    sink: Sink,
    failing: bool,
}

impl Pusher {
    /// One push of every metric, bounded by 5 s, counted.
    pub async fn push(&self, source: &impl Source) {
        let mut inner = self.inner.lock().await;
        source.refresh().await;
        let text = source.metrics().encode();
        let req = request(&self.config, to_otlp(&text, self.start_ns, unix_ns(SystemTime::now())));
        let result = tokio::time::timeout(EXPORT_TIMEOUT, inner.sink.send(req))
            .await
            .unwrap_or(Err(TelemetryError::TimedOut));
        source.metrics().observe_metric_export(result.is_ok());
        let endpoint = &self.config.metrics_endpoint;
        match result {
            Ok(()) if inner.failing => {
                inner.failing = false;
                tracing::info!(endpoint = %endpoint, "OTLP metrics export works again");
            }
            Ok(()) => {}
            Err(e) if !inner.failing => {
                inner.failing = true;
                tracing::warn!(endpoint = %endpoint, error = %e,
                    "OTLP metrics export failed; each failed push is counted until it works");
            }
            Err(_) => {}
        }
    }
}

/// Starts pushing the metrics every `config.metrics_interval` on the
/// current arbiter. Fails (a boot error) when the client cannot be built.
pub fn start(config: &Otel, source: impl Source) -> Result<Pusher, TelemetryError> {
    let pusher = Pusher {
        inner: Arc::new(tokio::sync::Mutex::new(PushState {
            sink: Sink::new(config)?,
            failing: false,
        })),
        config: config.clone(),
        start_ns: unix_ns(SystemTime::now()),
    };
    let every = config.metrics_interval;
    let ticking = pusher.clone();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            ticking.push(&source).await;
        }
    });
    Ok(pusher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_escapes() {
        assert_eq!(
            parse_sample(r#"a_total{x="1",y="q\"u\\o\nte"} 3"#),
            Some(Sample {
                name: "a_total".into(),
                labels: vec![("x".into(), "1".into()), ("y".into(), "q\"u\\o\nte".into())],
                value: "3".into(),
            })
        );
        assert_eq!(
            parse_sample("g 1.5").map(|s| (s.name, s.labels.len(), s.value)),
            Some(("g".into(), 0, "1.5".into()))
        );
        assert_eq!(parse_sample(r#"a{x="unterminated} 1"#), None);
        assert_eq!(parse_sample("novalue"), None);
    }

    fn int(p: &NumberDataPoint) -> i64 {
        match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            ref v => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_registry_maps_to_otlp_with_its_names_and_values() {
        let m = Metrics::new();
        m.observe_request("/v1/verify", 402);
        m.observe_request("/v1/verify", 402);
        m.observe_request("/v1/verify", 200);
        m.observe_verification("/v1/verify", "SETTLED", 0.003);
        m.observe_verification("/v1/verify", "SETTLED", 0.2);
        m.observe_verification("/v1/verify", "SETTLED", 100.0);
        m.set_state(&[], Some(90.5));
        let out = to_otlp(&m.encode(), 1, 2);
        let find = |n: &str| {
            out.iter()
                .find(|x| x.name == n)
                .unwrap_or_else(|| panic!("{n}: {out:#?}"))
        };

        let Some(metric::Data::Sum(s)) = &find("settlegate_http_requests").data else {
            panic!()
        };
        assert!(s.is_monotonic);
        assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        let by_status = |status: &str| {
            s.data_points
                .iter()
                .find(|p| {
                    p.attributes
                        .iter()
                        .any(|a| a.key == "status" && a.value == kv("", status).value)
                })
                .map(int)
        };
        assert_eq!(
            (by_status("402"), by_status("200"), by_status("503")),
            (Some(2), Some(1), None)
        );
        assert_eq!(
            (s.data_points[0].start_time_unix_nano, s.data_points[0].time_unix_nano),
            (1, 2)
        );

        let Some(metric::Data::Gauge(g)) = &find("settlegate_genome_expires_in_seconds").data else {
            panic!()
        };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(90.5)));

        let Some(metric::Data::Histogram(h)) = &find("settlegate_verification_duration_seconds").data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 3);
        assert!((p.sum.unwrap() - 100.203).abs() < 1e-9);
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3, "{p:?}");
        assert_eq!(*p.bucket_counts.last().unwrap(), 1, "100 s is past every bound");
        assert!(p.attributes.iter().all(|a| a.key != "le"));
        assert!(p.explicit_bounds.windows(2).all(|w| w[0] < w[1]));

        // every family of /metrics is there under its own name
        let text = m.encode();
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = line.split(' ').next().unwrap();
            find(name);
        }
    }
}
