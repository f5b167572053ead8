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

#[derive(Debug)]
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
    // Never echo the secret: the rule it breaks, and its length.
    settlegate_rules::secret_strength::check(s.as_bytes())
        .map_err(|weak| SettingsError::invalid(SECTION, format!("payment.{key} {weak}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "a-secret-of-at-least-thirty-two-bytes!";
    const OTHER: &str = "another-secret-of-thirty-two-bytes-or-more";

    fn raw(secret: Option<&str>, previous: Option<&str>, until: Option<&str>) -> RawPayment {
        RawPayment {
            secret: secret.map(str::to_owned),
            previous_secret: previous.map(str::to_owned),
            previous_secret_until: until.map(str::to_owned),
            ..RawPayment::default()
        }
    }

    #[test]
    fn a_rotation_needs_both_secrets_an_end_and_a_change() {
        assert!(validate(raw(None, None, None)).unwrap().secret.is_none());
        let p = validate(raw(Some(LONG), Some(OTHER), Some("2026-12-02T12:00:00Z"))).unwrap();
        assert_eq!(p.secret.unwrap().expose(), LONG);
        assert_eq!(p.previous_secret.unwrap().0.expose(), OTHER);
        for (r, says) in [
            (
                raw(Some(LONG), Some(OTHER), None),
                "needs payment.previous_secret_until",
            ),
            (
                raw(Some(LONG), None, Some("2026-12-02T12:00:00Z")),
                "is set without payment.previous_secret",
            ),
            (
                raw(None, Some(OTHER), Some("2026-12-02T12:00:00Z")),
                "is set without payment.secret",
            ),
            (
                raw(Some(LONG), Some(LONG), Some("2026-12-02T12:00:00Z")),
                "equals payment.secret",
            ),
            (raw(Some(LONG), Some(OTHER), Some("tomorrow")), "not an RFC 3339 time"),
        ] {
            let e = validate(r).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn uniform_and_repeating_secrets_are_refused_without_being_shown() {
        for (secret, says) in [
            ("x".repeat(40), "payment.secret has only 1 distinct byte values"),
            ("changeme-".repeat(4), "payment.secret repeats a unit of 9 bytes"),
        ] {
            let e = validate(raw(Some(&secret), None, None)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains(&secret[..9]), "{e}");
        }
        let e = validate(raw(Some(LONG), Some(&"ab".repeat(20)), Some("2026-12-02T12:00:00Z")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("payment.previous_secret has only 2 distinct"), "{e}");
    }

    #[test]
    fn a_short_secret_is_refused_by_its_length_alone() {
        let e = validate(raw(Some("short-secret"), None, None)).unwrap_err();
        assert!(e.to_string().contains("got 12"), "{e}");
        assert!(!e.to_string().contains("short-secret"), "{e}");
        let e = validate(RawPayment {
            secret_file: Some("/nonexistent".into()),
            ..raw(Some(LONG), None, None)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "set payment.secret or payment.secret_file, not both");
    }
}
