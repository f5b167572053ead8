//! `[idempotency]`: how long, and how often, a request whose payment was
//! consumed may be retried with its `Idempotency-Key`.

use std::time::Duration;

use super::SettingsError;
use super::raw::RawIdempotency;

const SECTION: &str = "idempotency";

pub(super) struct Idempotency {
    pub retry_window: Duration,
    pub max_retries: u32,
}

pub(super) fn validate(raw: RawIdempotency) -> Result<Idempotency, SettingsError> {
    if raw.retry_window_seconds > 3_600 {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "idempotency.retry_window_seconds must be at most 3600, got {}",
                raw.retry_window_seconds
            ),
        ));
    }
    if raw.max_retries > 100 {
        return Err(SettingsError::invalid(
            SECTION,
            format!("idempotency.max_retries must be at most 100, got {}", raw.max_retries),
        ));
    }
    Ok(Idempotency {
        retry_window: Duration::from_secs(raw.retry_window_seconds),
        max_retries: raw.max_retries,
    })
}
