//! A real OpenTelemetry collector for the trace tests: rotel (PyPI, installed
//! by `scripts/otel-collector`), receiving OTLP over gRPC and HTTP on free
//! loopback ports and printing every span it receives (names, ids, parent
//! ids, links, attributes) to a file the tests read.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::helpers::free_port;

fn rotel_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROTEL") {
        return PathBuf::from(p);
    }
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/otel-collector"))
        .output()
        .expect("scripts/otel-collector runs");
    assert!(
        out.status.success(),
        "scripts/otel-collector: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub struct Collector {
    child: Child,
    dir: tempfile::TempDir,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Collector {
    pub fn start() -> Collector {
        Self::start_printing(&["traces"])
    }

    /// A collector that prints the metrics it receives too.
    pub fn start_with_metrics() -> Collector {
        Self::start_printing(&["traces", "metrics"])
    }

    fn start_printing(signals: &[&str]) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        let out = std::fs::File::create(dir.path().join("spans.txt")).unwrap();
        let child = Command::new(rotel_bin())
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "blackhole", "--debug-log-verbosity", "detailed"])
            .args(signals.iter().flat_map(|s| ["--debug-log", s]))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("rotel starts");
        let c = Collector {
            child,
            dir,
            grpc_port,
            http_port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        while !(up(grpc_port) && up(http_port)) {
            assert!(Instant::now() < deadline, "rotel did not start: {}", c.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("spans.txt")).unwrap_or_default()
    }

    /// Stops the collector (a dead collector, for the drop tests).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
        // What it received (spans, their attributes, metric labels) joins
        // the capture the secrets check greps.
        if let Some(dir) = crate::helpers::capture_dir("telemetry") {
            let _ = std::fs::copy(
                self.dir.path().join("spans.txt"),
                dir.join(crate::helpers::unique_prefix().trim_end_matches(':')),
            );
        }
    }
}

/// One span as the collector printed it.
#[derive(Clone, Debug, Default)]
pub struct SpanRec {
    pub trace_id: String,
    pub parent_id: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub attrs: std::collections::HashMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl SpanRec {
    pub fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map(String::as_str).unwrap_or("")
    }
}

/// `Str(x)` / `Int(5)` → `x` / `5`.
fn value(v: &str) -> String {
    match (v.find('('), v.ends_with(')')) {
        (Some(i), true) => v[i + 1..v.len() - 1].to_owned(),
        _ => v.to_owned(),
    }
}

/// Parses rotel's detailed debug log of traces.
pub fn parse_spans(text: &str) -> Vec<SpanRec> {
    let mut spans = Vec::new();
    let mut cur: Option<SpanRec> = None;
    let mut section = "";
    let mut link: (String, String) = Default::default();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Span #") {
            spans.extend(cur.take());
            cur = Some(SpanRec::default());
            section = "";
            continue;
        }
        if t.starts_with("ResourceSpans #") || t.starts_with("ScopeSpans #") || t.starts_with("ResourceMetrics #") {
            spans.extend(cur.take());
            continue;
        }
        let Some(s) = cur.as_mut() else { continue };
        let field = |name: &str| {
            t.strip_prefix(name)
                .and_then(|r| r.trim_start().strip_prefix(':'))
                .map(|r| r.trim().to_owned())
        };
        if t == "Attributes:" {
            section = "attrs";
        } else if t == "Links:" {
            section = "links";
        } else if t.starts_with("SpanLink #") {
            link = Default::default();
        } else if let Some(v) = field("Trace ID").filter(|_| section != "links") {
            s.trace_id = v;
        } else if let Some(v) = field("Parent ID") {
            s.parent_id = v;
        } else if let Some(v) = field("ID").filter(|_| section != "links") {
            s.id = v;
        } else if let Some(v) = field("Name") {
            s.name = v;
        } else if let Some(v) = field("Kind") {
            s.kind = v;
        } else if let Some(rest) = t.strip_prefix("-> ") {
            let Some((k, v)) = rest.split_once(": ") else { continue };
            match section {
                "attrs" => {
                    s.attrs.insert(k.to_owned(), value(v));
                }
                "links" if k == "Trace ID" => link.0 = v.to_owned(),
                "links" if k == "ID" => {
                    link.1 = v.to_owned();
                    s.links.push(std::mem::take(&mut link));
                }
                _ => {}
            }
        }
    }
    spans.extend(cur);
    spans
}

impl Collector {
    /// The spans received so far.
    pub fn spans(&self) -> Vec<SpanRec> {
        parse_spans(&self.output())
    }

    /// Waits (up to 15 s) until the spans received satisfy `done`.
    pub fn wait_for(&self, done: impl Fn(&[SpanRec]) -> bool) -> Vec<SpanRec> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not get the spans: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The data points of the last metrics export rotel printed, keyed as
/// `/metrics` writes them: `name_total{a="x"}` for a monotonic sum,
/// `name_count{…}` for a histogram's count, `name{…}` for a gauge.
pub fn last_metrics_export(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    let (mut name, mut kind) = (String::new(), String::new());
    let mut labels: Vec<String> = Vec::new();
    let mut in_attrs = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("ResourceMetrics #") {
            out.clear();
        } else if let Some(v) = t.strip_prefix("-> Name: ") {
            name = v.to_owned();
        } else if let Some(v) = t.strip_prefix("-> DataType: ") {
            kind = v.to_owned();
        } else if t.starts_with("NumberDataPoints #") || t.starts_with("HistogramDataPoints #") {
            labels.clear();
            in_attrs = false;
        } else if t == "Data point attributes:" {
            in_attrs = true;
        } else if let Some(rest) = t.strip_prefix("-> ").filter(|_| in_attrs) {
            if let Some((k, v)) = rest.split_once(": ") {
                labels.push(format!("{k}=\"{}\"", value(v)));
            }
        } else if let Some(v) = t.strip_prefix("Value: ").or_else(|| t.strip_prefix("Count: ")) {
            in_attrs = false;
            let suffix = match (kind.as_str(), t.starts_with("Count")) {
                ("Sum", false) => "_total",
                ("Histogram", true) => "_count",
                ("Gauge", false) => "",
                _ => continue,
            };
            let key = match labels.is_empty() {
                true => format!("{name}{suffix}"),
                false => format!("{name}{suffix}{{{}}}", labels.join(",")),
            };
            if let Ok(v) = v.parse() {
                out.insert(key, v);
            }
        } else if !t.starts_with("->") {
            in_attrs = false;
        }
    }
    out
}
