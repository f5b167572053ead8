//! `[log]`: the per-request line's level, the log buffer's size and the
//! line format.

use super::SettingsError;
use super::raw::RawLog;

const SECTION: &str = "log";

/// The level of the per-request line for answers below 500 (`log.request_level`).
/// 5xx answers are always logged, at `warn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLog {
    Info,
    Debug,
    Off,
}

#[derive(Debug)]
pub(super) struct Log {
    pub request_level: RequestLog,
    pub buffer_lines: usize,
    /// JSON lines (`true`) or human-readable text.
    pub json: bool,
}

pub(super) fn validate(raw: RawLog) -> Result<Log, SettingsError> {
    let fail = |m: String| Err(SettingsError::invalid(SECTION, m));
    let request_level = match raw.request_level.as_str() {
        "info" => RequestLog::Info,
        "debug" => RequestLog::Debug,
        "off" => RequestLog::Off,
        other => return fail(format!("log.request_level {other:?} is not one of info, debug, off")),
    };
    if !(64..=1_000_000).contains(&raw.buffer_lines) {
        return fail(format!(
            "log.buffer_lines must be between 64 and 1000000, got {}",
            raw.buffer_lines
        ));
    }
    let json = match raw.format.as_str() {
        "json" => true,
        "text" => false,
        other => return fail(format!("log.format {other:?} is not json or text")),
    };
    Ok(Log {
        request_level,
        buffer_lines: raw.buffer_lines,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_format_and_buffer_are_read_or_refused() {
        let raw = |level: &str, lines, format: &str| RawLog {
            request_level: level.to_owned(),
            buffer_lines: lines,
            format: format.to_owned(),
        };
        let l = validate(raw("debug", 64, "text")).unwrap();
        assert_eq!(
            (l.request_level, l.buffer_lines, l.json),
            (RequestLog::Debug, 64, false)
        );
        for (r, says) in [
            (raw("loud", 64, "json"), "log.request_level \"loud\""),
            (raw("info", 63, "json"), "log.buffer_lines must be between 64"),
            (raw("info", 64, "xml"), "log.format \"xml\""),
        ] {
            let e = validate(r).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
    }
}
