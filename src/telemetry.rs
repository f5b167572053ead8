//! Logging: structured JSON lines on stdout, one per event, with the fields
//! of the enclosing request span (request id, method, path). `RUST_LOG`
//! controls the level (default `info`). stderr is kept for the one-line boot
//! failure, so a supervisor can read the reason without parsing JSON.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`, for `serve`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}
