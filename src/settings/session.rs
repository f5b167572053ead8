//! `[session]`: how this instance keeps and settles payment channels (MPP
//! `session`). Whether sessions are offered, and on which escrow, is the
//! genome's decision; these are the operator's: the payee key the settler
//! signs with (a file only, never inline, never logged), when it settles,
//! and how long on-chain facts and channel state are kept.

use std::time::Duration;

use super::SettingsError;
use super::raw::RawSession;
use super::secrets::{Secret, read_side_file};

const SECTION: &str = "session";

/// The 900 s the escrow gives a payee between a close request and the
/// payer's withdrawal: facts must be re-read, and the settler must scan,
/// well inside it.
const GRACE_SECONDS: u64 = 900;

#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The payee's secp256k1 key (`0x` + 64 hex), from
    /// `session.settler_key_file`; `None`: the settler is off.
    pub settler_key: Option<Secret>,
    /// Settle a channel once this many atomic units are unsettled (0: by
    /// interval only).
    pub settle_amount: u128,
    /// Settle what is unsettled at least this often.
    pub settle_interval: Duration,
    /// How often the settler scans the channels (and their close requests).
    pub scan_interval: Duration,
    /// How long on-chain facts of a channel are trusted before a re-read.
    pub facts_ttl: Duration,
    /// How long a channel's state outlives its last change.
    pub channel_ttl: Duration,
}

pub(super) fn validate(raw: RawSession) -> Result<SessionSettings, SettingsError> {
    let fail = |m: String| Err(SettingsError::invalid(SECTION, m));
    let settler_key = match raw.settler_key_file {
        None => None,
        Some(path) => Some(Secret::new(
            read_side_file(&path, "session.settler_key_file")?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        )),
    };
    let settle_amount = match raw.settle_amount.trim().parse::<u128>() {
        Ok(a) => a,
        Err(_) => {
            return fail(format!(
                "session.settle_amount must be atomic units in decimal (0: by interval only), got {:?}",
                raw.settle_amount.chars().take(40).collect::<String>()
            ));
        }
    };
    if !(10..=86_400).contains(&raw.settle_interval_seconds) {
        return fail(format!(
            "session.settle_interval_seconds must be 10 to 86400, got {}",
            raw.settle_interval_seconds
        ));
    }
    // A close request is seen at the next scan and settled then: two scans
    // and a facts read must fit in the grace period with room to spare.
    if !(1..=GRACE_SECONDS / 4).contains(&raw.scan_interval_seconds) {
        return fail(format!(
            "session.scan_interval_seconds must be 1 to {} (a quarter of the escrow's {GRACE_SECONDS} s grace period), got {}",
            GRACE_SECONDS / 4,
            raw.scan_interval_seconds
        ));
    }
    if !(1..=GRACE_SECONDS / 4).contains(&raw.facts_ttl_seconds) {
        return fail(format!(
            "session.facts_ttl_seconds must be 1 to {}, got {}",
            GRACE_SECONDS / 4,
            raw.facts_ttl_seconds
        ));
    }
    if !(1..=365).contains(&raw.channel_ttl_days) {
        return fail(format!(
            "session.channel_ttl_days must be 1 to 365, got {}",
            raw.channel_ttl_days
        ));
    }
    Ok(SessionSettings {
        settler_key,
        settle_amount,
        settle_interval: Duration::from_secs(raw.settle_interval_seconds),
        scan_interval: Duration::from_secs(raw.scan_interval_seconds),
        facts_ttl: Duration::from_secs(raw.facts_ttl_seconds),
        channel_ttl: Duration::from_secs(raw.channel_ttl_days * 86_400),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSession {
        RawSession {
            settler_key_file: None,
            settle_amount: "0".into(),
            settle_interval_seconds: 300,
            scan_interval_seconds: 10,
            facts_ttl_seconds: 30,
            channel_ttl_days: 30,
        }
    }

    #[test]
    fn the_defaults_hold_and_every_bound_is_checked() {
        let s = validate(raw()).unwrap();
        assert!(s.settler_key.is_none());
        assert_eq!(s.facts_ttl, Duration::from_secs(30));
        for (tweak, words) in [
            (
                RawSession {
                    settle_amount: "-1".into(),
                    ..raw()
                },
                "settle_amount",
            ),
            (
                RawSession {
                    settle_amount: "1e6".into(),
                    ..raw()
                },
                "settle_amount",
            ),
            (
                RawSession {
                    settle_interval_seconds: 5,
                    ..raw()
                },
                "settle_interval_seconds",
            ),
            (
                RawSession {
                    scan_interval_seconds: 0,
                    ..raw()
                },
                "scan_interval_seconds",
            ),
            (
                RawSession {
                    scan_interval_seconds: 300,
                    ..raw()
                },
                "scan_interval_seconds",
            ),
            (
                RawSession {
                    facts_ttl_seconds: 226,
                    ..raw()
                },
                "facts_ttl_seconds",
            ),
            (
                RawSession {
                    channel_ttl_days: 0,
                    ..raw()
                },
                "channel_ttl_days",
            ),
        ] {
            let e = validate(tweak).unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        }
    }

    #[test]
    fn the_key_comes_from_a_file_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("payee.key");
        std::fs::write(
            &f,
            "0xfeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface\n",
        )
        .unwrap();
        let s = validate(RawSession {
            settler_key_file: Some(f),
            ..raw()
        })
        .unwrap();
        let key = s.settler_key.as_ref().unwrap();
        assert_eq!(key.expose().len(), 66, "the newline is trimmed");
        assert!(!format!("{s:?}").contains("feedface"));
        let missing = validate(RawSession {
            settler_key_file: Some(dir.path().join("absent")),
            ..raw()
        });
        assert!(missing.unwrap_err().to_string().contains("session.settler_key_file"));
    }
}
