//! `[idempotency]`: how long, and how often, a request whose payment was
//! consumed may be retried with its `Idempotency-Key`.

use std::time::Duration;

use super::SettingsError;
use super::raw::RawIdempotency;

const SECTION: &str = "idempotency";

#[derive(Debug)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_and_the_retries_are_bounded() {
        let raw = |retry_window_seconds, max_retries| RawIdempotency {
            retry_window_seconds,
            max_retries,
        };
        let i = validate(raw(3_600, 0)).unwrap();
        assert_eq!((i.retry_window, i.max_retries), (Duration::from_secs(3_600), 0));
        assert!(
            validate(raw(3_601, 3))
                .unwrap_err()
                .to_string()
                .contains("at most 3600")
        );
        assert!(validate(raw(60, 101)).unwrap_err().to_string().contains("at most 100"));
    }
}
