//! `[payment]`: the MPP challenge secret, and the one before a rotation
//! with when it stops verifying. Secrets are never echoed, only their
//! length.

use std::path::PathBuf;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::SettingsError;
use super::raw::RawPayment;
use super::secrets::{Either, Secret, inline_or_file, read_side_file};

const SECTION: &str = "payment";

pub(super) struct Payment {
    pub secret: Option<Secret>,
    pub previous_secret: Option<(Secret, OffsetDateTime)>,
}

/// `payment.<key>`, inline or from `payment.<key>_file`, long enough.
fn secret(key: &str, value: Option<String>, file: Option<PathBuf>) -> Result<Option<Secret>, SettingsError> {
    let s = match inline_or_file(&format!("payment.{key}"), value, file)? {
        Some(Either::Inline(s)) => s,
        Some(Either::File(path)) => read_side_file(&path, &format!("payment.{key}_file"))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        None => return Ok(None),
    };
    // Never echo the secret, only its length.
    if s.len() < settlegate_rules::mpp::MIN_SECRET_LEN {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "payment.{key} must be at least {} bytes, got {} (e.g. `openssl rand -base64 32`)",
                settlegate_rules::mpp::MIN_SECRET_LEN,
                s.len()
            ),
        ));
    }
    Ok(Some(Secret::new(s)))
}

pub(super) fn validate(p: RawPayment) -> Result<Payment, SettingsError> {
    let fail = |m: &str| Err(SettingsError::invalid(SECTION, m));
    let current = secret("secret", p.secret, p.secret_file)?;
    let previous = secret("previous_secret", p.previous_secret, p.previous_secret_file)?;
    let previous = match (previous, p.previous_secret_until) {
        (None, None) => None,
        (Some(s), Some(until)) => {
            let until = OffsetDateTime::parse(until.trim(), &Rfc3339).map_err(|_| {
                SettingsError::invalid(
                    SECTION,
                    format!(
                        "payment.previous_secret_until {until:?} is not an RFC 3339 time such as 2026-12-02T12:00:00Z"
                    ),
                )
            })?;
            Some((s, until))
        }
        (Some(_), None) => {
            return fail("payment.previous_secret needs payment.previous_secret_until (when the overlap ends)");
        }
        (None, Some(_)) => return fail("payment.previous_secret_until is set without payment.previous_secret"),
    };
    if previous.is_some() && current.is_none() {
        return fail("payment.previous_secret is set without payment.secret");
    }
    if let (Some(cur), Some((prev, _))) = (&current, &previous)
        && cur == prev
    {
        return fail("payment.previous_secret equals payment.secret");
    }
    Ok(Payment {
        secret: current,
        previous_secret: previous,
    })
}
