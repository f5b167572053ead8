//! Logging: structured JSON lines on stdout, one per event, with the fields
//! of the enclosing request span (request id, method, path, and what the
//! handler recorded: tx hash, code, reason, cause). `RUST_LOG` controls the
//! level (default `info`). stderr is kept for the one-line boot failure, so
//! a supervisor can read the reason without parsing JSON.
//!
//! Lines are formatted on the calling thread and written by a dedicated
//! thread through a bounded queue (`log.buffer_lines`): a slow or blocked
//! stdout never stalls a request. When the queue is full, lines are
//! dropped and counted (`settlegate_log_lines_dropped_total`), never
//! waited for.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Flushes the log writer when dropped: keep it alive until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the global subscriber with a bounded queue of `buffer_lines`.
/// Call once, from `main`, for `serve`.
pub fn init(buffer_lines: usize) -> LogGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffer_lines)
        .thread_name("settlegate-log")
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    LogGuard(guard)
}

/// Lines dropped so far because the queue was full (0 before `init`).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
