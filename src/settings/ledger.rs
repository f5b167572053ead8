//! `[ledger]`: the operator's books in PostgreSQL. Off unless a database
//! URL is given (inline or, with a password, in a file; never logged).
//! With it on, every consumed record goes through the replay store's
//! outbox, so the bound on that outbox is a setting too.

use std::time::Duration;

use super::SettingsError;
use super::raw::RawLedger;
use super::secrets::{Either, Secret, inline_or_file, read_side_file};

const SECTION: &str = "ledger";

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// `postgres://…` (or key=value); `None`: no ledger, no outbox.
    pub database_url: Option<Secret>,
    /// Records the outbox holds at most; at the bound consumes are refused
    /// (503 `ledger_outbox_full`), never served without their record.
    pub outbox_max: u64,
    /// Records written to PostgreSQL per transaction at most.
    pub batch: usize,
    /// How often an empty outbox is looked at again.
    pub poll_interval: Duration,
    /// How long one write to PostgreSQL may take before it is retried.
    pub write_timeout: Duration,
    /// This instance's name in the books.
    pub instance: String,
}

impl LedgerSettings {
    pub fn enabled(&self) -> bool {
        self.database_url.is_some()
    }
}

pub(super) fn validate(raw: RawLedger) -> Result<LedgerSettings, SettingsError> {
    let database_url = match inline_or_file("ledger.database_url", raw.database_url, raw.database_url_file)? {
        None => None,
        Some(Either::Inline(v)) => Some(v),
        Some(Either::File(path)) => Some(read_side_file(&path, "ledger.database_url_file")?),
    }
    .map(|u| u.trim().to_owned())
    .filter(|u| !u.is_empty())
    .map(Secret::new);
    let bounded = |name: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(SettingsError::invalid(
                SECTION,
                format!("ledger.{name} must be {lo} to {hi}, got {v}"),
            ))
        }
    };
    let outbox_max = bounded("outbox_max", raw.outbox_max, 1, 100_000_000)?;
    let batch = bounded("batch", raw.batch as u64, 1, 5_000)? as usize;
    let poll_interval = Duration::from_millis(bounded("poll_interval_ms", raw.poll_interval_ms, 10, 60_000)?);
    let write_timeout = Duration::from_millis(bounded("write_timeout_ms", raw.write_timeout_ms, 100, 600_000)?);
    let instance = match raw.instance.filter(|i| !i.is_empty()) {
        Some(i) => i,
        None => default_instance(),
    };
    if instance.len() > 64 || !instance.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SettingsError::invalid(
            SECTION,
            "ledger.instance must be 1 to 64 visible ASCII characters",
        ));
    }
    Ok(LedgerSettings {
        database_url,
        outbox_max,
        batch,
        poll_interval,
        write_timeout,
        instance,
    })
}

/// The host's name, else `settlegate`.
fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "settlegate".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawLedger {
        RawLedger {
            database_url: None,
            database_url_file: None,
            outbox_max: 100_000,
            batch: 500,
            poll_interval_ms: 250,
            write_timeout_ms: 5_000,
            instance: Some("a".into()),
        }
    }

    #[test]
    fn off_without_a_url_and_bounded() {
        let s = validate(raw()).unwrap();
        assert!(!s.enabled());
        assert_eq!(s.instance, "a");
        for (bad, name) in [
            (RawLedger { outbox_max: 0, ..raw() }, "outbox_max"),
            (RawLedger { batch: 5_001, ..raw() }, "batch"),
            (
                RawLedger {
                    poll_interval_ms: 1,
                    ..raw()
                },
                "poll_interval_ms",
            ),
            (
                RawLedger {
                    write_timeout_ms: 0,
                    ..raw()
                },
                "write_timeout_ms",
            ),
            (
                RawLedger {
                    instance: Some("a b".into()),
                    ..raw()
                },
                "instance",
            ),
        ] {
            let e = validate(bad).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn the_url_comes_inline_or_from_a_file_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://app:hunter2@db/books\n").unwrap();
        let s = validate(RawLedger {
            database_url_file: Some(f.clone()),
            ..raw()
        })
        .unwrap();
        assert!(s.enabled());
        assert_eq!(
            s.database_url.as_ref().unwrap().expose(),
            "postgres://app:hunter2@db/books"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        let both = validate(RawLedger {
            database_url: Some("postgres://db".into()),
            database_url_file: Some(f),
            ..raw()
        });
        assert!(both.is_err());
    }
}
