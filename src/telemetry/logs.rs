//! Logging: structured JSON lines on stdout, one per event, with the fields
//! of the enclosing request span (request id, method, path) under `span`,
//! and what the handler found out (tx hash, code, reason, cause of a 503) on
//! the request's own line. `RUST_LOG` controls the level (default `info`).
//! stderr is kept for the one-line boot failure, so a supervisor can read
//! the reason without parsing JSON.
//!
//! Lines are formatted on the calling thread by [`JsonLines`] (written for
//! the request path: span fields are stored as JSON once and copied, not
//! re-parsed for every event as tracing-subscriber's JSON formatter does)
//! and appended to a bounded in-memory buffer ([`LogBuffer`],
//! `log.buffer_lines`) that a dedicated thread writes to stdout every
//! [`FLUSH_EVERY`], one `write` per batch. A request never waits for stdout
//! and never wakes another thread to log (tracing-appender's writer wakes
//! its thread for every line, which showed in the latency of a lone
//! request). When the buffer is full, lines are dropped and counted
//! (`settlegate_log_lines_dropped_total`), never waited for.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

static BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// How often the writer thread writes what was logged.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Lines waiting for the writer thread, at most `max_lines` of them.
pub struct LogBuffer {
    state: Mutex<Pending>,
    wake: Condvar,
    max_lines: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    stopping: bool,
}

impl LogBuffer {
    pub fn new(max_lines: usize) -> Arc<Self> {
        Arc::new(LogBuffer {
            state: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            max_lines,
            dropped: AtomicU64::new(0),
        })
    }

    /// Appends one formatted event; drops it when the buffer is full.
    fn push(&self, line: &[u8]) {
        let mut p = self.state.lock();
        if p.lines >= self.max_lines {
            drop(p);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.bytes.extend_from_slice(line);
        p.lines += 1;
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The writer thread: every [`FLUSH_EVERY`], or at once when stopping,
    /// takes what is pending and writes it out.
    fn run(&self, mut out: impl std::io::Write) {
        let mut spare = Vec::new();
        loop {
            let stopping = {
                let mut p = self.state.lock();
                if !p.stopping {
                    self.wake.wait_for(&mut p, FLUSH_EVERY);
                }
                std::mem::swap(&mut p.bytes, &mut spare);
                p.lines = 0;
                p.stopping
            };
            if !spare.is_empty() {
                // Nowhere to report a failing stdout: the lines are lost.
                let _ = out.write_all(&spare).and_then(|_| out.flush());
                spare.clear();
            }
            if stopping {
                return;
            }
        }
    }
}

/// A [`tracing_subscriber::fmt::MakeWriter`] into a [`LogBuffer`]; the fmt
/// layer writes each event with one `write` call.
#[derive(Clone)]
pub struct BufferWriter(Arc<LogBuffer>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferWriter {
    type Writer = BufferWriter;

    fn make_writer(&'a self) -> BufferWriter {
        self.clone()
    }
}

/// Writes what is still buffered and stops the writer thread when dropped:
/// keep it alive until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    buffer: Arc<LogBuffer>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.buffer.state.lock().stopping = true;
        self.buffer.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the writer thread for `buffer` into `out`.
pub fn spawn_writer(buffer: Arc<LogBuffer>, out: impl std::io::Write + Send + 'static) -> LogGuard {
    let b = buffer.clone();
    let thread = std::thread::Builder::new()
        .name("settlegate-log".into())
        .spawn(move || b.run(out))
        .ok();
    LogGuard { buffer, thread }
}

/// The log layer of the global subscriber: lines (JSON, or text) into the
/// process's buffer of `buffer_lines`, which the returned guard's thread
/// writes to stdout. `RUST_LOG` filters them (default `info`).
pub(super) fn layer<S>(buffer_lines: usize, json: bool) -> (LogGuard, impl tracing_subscriber::Layer<S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;

    let buffer = BUFFER.get_or_init(|| LogBuffer::new(buffer_lines)).clone();
    let log = spawn_writer(buffer.clone(), std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans that exist for traces only never reach the log layer.
    let filter = filter.add_directive(
        format!("{}=off", super::traces::TRACE_TARGET)
            .parse()
            .expect("a valid directive"),
    );
    // hyper-util logs each RPC connection's address at debug level: an
    // endpoint's host is shown only with `rpc.expose_endpoint_hosts`.
    let filter = filter.add_directive("hyper_util=info".parse().expect("a valid directive"));
    let writer = BufferWriter(buffer);
    let lines = if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .with_writer(writer)
            .boxed()
    } else {
        // tracing-subscriber's own human-readable format, colour off (the
        // lines go through a buffer, not straight to a terminal)
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
            .boxed()
    }
    .with_filter(filter);
    (log, lines)
}

/// Lines dropped so far because the buffer was full (0 before `init`).
pub fn dropped_lines() -> u64 {
    BUFFER.get().map_or(0, |b| b.dropped())
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC, microseconds),
/// `level`, `message`, the event's fields at the top level, and the
/// innermost span as `span` (`name` and its fields).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = time::OffsetDateTime::now_utc();
        let level = if is_client_parse_error(event) {
            Level::WARN
        } else {
            *event.metadata().level()
        };
        write!(
            w,
            "{{\"timestamp\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\",\"level\":\"{}\"",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond(),
            level,
        )?;
        let mut fields = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        if let Some(span) = ctx.parent_span() {
            w.write_str(",\"span\":{\"name\":")?;
            write_json_str(&mut w, span.name())?;
            let ext = span.extensions();
            // JsonSpanFields stored the span's fields as JSON object
            // members: copy them as they are.
            if let Some(stored) = ext.get::<FormattedFields<N>>() {
                w.write_str(&stored.fields)?;
            }
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// actix-http logs a request it cannot parse (a header with a NUL byte, say)
/// as `ERROR stream error: request parse error: …` and answers 400 itself.
/// The client is at fault, not the service: such lines are WARN here, so an
/// error alert cannot be raised by anyone who can send bytes.
fn is_client_parse_error(event: &Event<'_>) -> bool {
    struct Message(bool);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}").starts_with("stream error: request parse error");
            }
        }
    }
    let m = event.metadata();
    if *m.level() != Level::ERROR || !m.target().starts_with("actix_http::h1") {
        return false;
    }
    let mut found = Message(false);
    event.record(&mut found);
    found.0
}

/// Stores a span's fields as JSON object members, each with its leading
/// comma (`,"request_id":"…","path":"…"`), so an event copies them verbatim.
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Fields {
            w: &mut w,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        // Members carry their own commas: appending keeps the JSON valid.
        let mut w = current.as_writer();
        let mut v = Fields {
            w: &mut w,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_char(',')?;
        write_json_str(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|_| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| write_json_str(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| {
            let mut text = String::with_capacity(64);
            write!(text, "{value:?}")?;
            write_json_str(w, &text)
        });
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        w.write_str(&s[start..i])?;
        if escaped.is_empty() {
            write!(w, "\\u{b:04x}")?;
        } else {
            w.write_str(escaped)?;
        }
        start = i + 1;
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_buffer_writes_every_line_it_kept_and_counts_what_it_dropped() {
        use std::io::Write;
        let buffer = LogBuffer::new(3);
        let sink = Sink::default();
        // No writer thread yet: a full buffer drops and counts.
        let mut w = BufferWriter(buffer.clone());
        for i in 0..5 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(buffer.dropped(), 2);
        let guard = spawn_writer(buffer.clone(), sink.clone());
        std::thread::sleep(FLUSH_EVERY * 3);
        w.write_all(b"after\n").unwrap();
        drop(guard); // writes what is left, then stops
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "line 0\nline 1\nline 2\nafter\n");
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        let mut out = String::new();
        write_json_str(&mut out, "a\"b\\c\nd\u{1}e\u{7f}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001e\u007fé""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}e\u{7f}é");
    }

    #[test]
    fn events_are_one_json_object_each_with_their_span() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "http_request",
                request_id = "r-1",
                path = "/v1/\"verify\"",
                late = tracing::field::Empty
            );
            tracing::info!(parent: &span, status = 402u64, elapsed_ms = 1.5, ok = true, code = Some("REPLAYED"),
                reason = None::<&str>, n = -3i64, "request served");
            span.in_scope(|| tracing::warn!(error = ?"bad\nthing", "inner"));
            span.record("late", 7u64);
            tracing::info!(parent: &span, "after a record");
            tracing::info!(nan = f64::NAN, "no span");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4, "{text}");
        let l = &lines[0];
        assert_eq!(l["message"], "request served");
        assert_eq!(l["level"], "INFO");
        assert_eq!((l["status"].as_u64(), l["elapsed_ms"].as_f64()), (Some(402), Some(1.5)));
        assert_eq!((l["ok"].as_bool(), l["n"].as_i64()), (Some(true), Some(-3)));
        assert_eq!(l["code"], "REPLAYED");
        assert!(l.get("reason").is_none(), "an absent Option is no field");
        assert_eq!(l["span"]["name"], "http_request");
        assert_eq!(l["span"]["request_id"], "r-1");
        assert_eq!(l["span"]["path"], "/v1/\"verify\"");
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["span"]["request_id"], "r-1");
        assert_eq!(lines[1]["error"], "\"bad\\nthing\"");
        assert_eq!(
            (lines[2]["span"]["late"].as_u64(), &lines[2]["span"]["request_id"]),
            (Some(7), &serde_json::json!("r-1"))
        );
        assert!(lines[3].get("span").is_none());
        assert!(lines[3]["nan"].is_null());
    }
}
