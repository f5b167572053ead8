//! `[sponsor]`: the fee sponsor's key (a file only, never inline, never
//! logged) and how often its balance and budget are read. Whether and
//! under which caps sponsorship is offered is the genome's decision.

use std::time::Duration;

use super::SettingsError;
use super::raw::RawSponsor;
use super::secrets::{Secret, read_side_file};

const SECTION: &str = "sponsor";

#[derive(Debug, Clone)]
pub struct SponsorSettings {
    /// The sponsor's secp256k1 key (`0x` + 64 hex), from
    /// `sponsor.key_file`; `None`: nothing is sponsored.
    pub key: Option<Secret>,
    /// How often the balance and the shared budget are read.
    pub balance_interval: Duration,
}

pub(super) fn validate(raw: RawSponsor) -> Result<SponsorSettings, SettingsError> {
    let key = match raw.key_file {
        None => None,
        Some(path) => Some(Secret::new(
            read_side_file(&path, "sponsor.key_file")?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        )),
    };
    if !(1..=300).contains(&raw.balance_interval_seconds) {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "sponsor.balance_interval_seconds must be 1 to 300, got {}",
                raw.balance_interval_seconds
            ),
        ));
    }
    Ok(SponsorSettings {
        key,
        balance_interval: Duration::from_secs(raw.balance_interval_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_a_file_and_the_interval_is_bounded() {
        let s = validate(RawSponsor {
            key_file: None,
            balance_interval_seconds: 10,
        })
        .unwrap();
        assert!(s.key.is_none());
        for bad in [0, 301] {
            let e = validate(RawSponsor {
                key_file: None,
                balance_interval_seconds: bad,
            })
            .unwrap_err();
            assert!(e.to_string().contains("balance_interval_seconds"), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("sg-sponsor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "0xabc\n").unwrap();
        let s = validate(RawSponsor {
            key_file: Some(path),
            balance_interval_seconds: 10,
        })
        .unwrap();
        assert_eq!(s.key.unwrap().expose(), "0xabc");
        assert!(
            !format!(
                "{:?}",
                validate(RawSponsor {
                    key_file: Some(dir.join("key")),
                    balance_interval_seconds: 10
                })
                .unwrap()
            )
            .contains("0xabc")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
