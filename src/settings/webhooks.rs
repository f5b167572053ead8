//! `[webhooks]`: signed notifications (Standard Webhooks) of each
//! consumed payment, to the endpoints listed under
//! `[webhooks.endpoints.<name>]`. Each endpoint's secret comes from a file
//! (`whsec_<base64>`, at least 24 random bytes), is checked here so a weak
//! one stops the boot, and is never shown. Deliveries live in the
//! ledger's database, so webhooks need the ledger.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use settlegate_actors::webhooks::{Endpoint, SigningKey};

use super::SettingsError;
use super::raw::{RawWebhookEndpoint, RawWebhooks};
use super::secrets::read_side_file;
use super::values::{millis, parse_http_url, shown_url};

const SECTION: &str = "webhooks";
const MAX_ENDPOINTS: usize = 16;

#[derive(Debug, Clone)]
pub struct WebhooksSettings {
    /// By name; empty: no webhooks.
    pub endpoints: Vec<Endpoint>,
    /// One attempt's bound, connecting to last byte.
    pub timeout: Duration,
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    /// Age (since created or requeued) past which a failed delivery is
    /// dead whatever its attempts.
    pub max_age: Duration,
    /// The first retry's delay; doubled each time up to `backoff_max`,
    /// each drawn between half and all of it.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts in flight at most, per instance.
    pub max_concurrent: usize,
    /// How often due deliveries are looked for.
    pub poll_interval: Duration,
}

impl WebhooksSettings {
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }
}

fn endpoint(name: &str, raw: RawWebhookEndpoint) -> Result<Endpoint, SettingsError> {
    let key = |k: &str| format!("webhooks.endpoints.{name}.{k}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(SettingsError::invalid(
            SECTION,
            format!("webhooks.endpoints: an endpoint's name must be 1 to 64 of [a-z0-9_-], got {name:?}"),
        ));
    }
    let url = parse_http_url(&key("url"), &raw.url)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "{}: {} carries credentials; a receiver authenticates the signature, and the URL is kept in the \
                 database and shown by `settlegate ledger webhooks`",
                key("url"),
                shown_url(&raw.url)
            ),
        ));
    }
    let path: PathBuf = raw.secret_file.ok_or_else(|| {
        SettingsError::invalid(
            SECTION,
            format!("{} is required: a file holding whsec_<base64>", key("secret_file")),
        )
    })?;
    let text = read_side_file(&path, &key("secret_file"))?;
    let signing = SigningKey::parse(&text)
        .map_err(|e| SettingsError::invalid(SECTION, format!("{} {}: {e}", key("secret_file"), path.display())))?;
    Ok(Endpoint {
        name: name.to_owned(),
        url,
        key: signing,
    })
}

pub(super) fn validate(raw: RawWebhooks) -> Result<WebhooksSettings, SettingsError> {
    let bounded = |name: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(SettingsError::invalid(
                SECTION,
                format!("webhooks.{name} must be {lo} to {hi}, got {v}"),
            ))
        }
    };
    let endpoints: BTreeMap<String, RawWebhookEndpoint> = raw.endpoints;
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "webhooks.endpoints: at most {MAX_ENDPOINTS} endpoints, got {}",
                endpoints.len()
            ),
        ));
    }
    let endpoints = endpoints
        .into_iter()
        .map(|(name, e)| endpoint(&name, e))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = millis("webhooks.timeout_ms", raw.timeout_ms, 100, 60_000)?;
    let max_attempts = bounded("max_attempts", raw.max_attempts.into(), 1, 1_000)? as u32;
    let max_age = Duration::from_secs(bounded("max_age_seconds", raw.max_age_seconds, 1, 30 * 86_400)?);
    let backoff_base = millis("webhooks.backoff_base_ms", raw.backoff_base_ms, 100, 3_600_000)?;
    let backoff_max = millis("webhooks.backoff_max_ms", raw.backoff_max_ms, 100, 86_400_000)?;
    if backoff_max < backoff_base {
        return Err(SettingsError::invalid(
            SECTION,
            "webhooks.backoff_max_ms must be at least webhooks.backoff_base_ms",
        ));
    }
    let max_concurrent = bounded("max_concurrent", raw.max_concurrent as u64, 1, 256)? as usize;
    let poll_interval = millis("webhooks.poll_interval_ms", raw.poll_interval_ms, 10, 60_000)?;
    Ok(WebhooksSettings {
        endpoints,
        timeout,
        max_attempts,
        max_age,
        backoff_base,
        backoff_max,
        max_concurrent,
        poll_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn raw(endpoints: BTreeMap<String, RawWebhookEndpoint>) -> RawWebhooks {
        RawWebhooks {
            endpoints,
            timeout_ms: 10_000,
            max_attempts: 12,
            max_age_seconds: 86_400,
            backoff_base_ms: 5_000,
            backoff_max_ms: 3_600_000,
            max_concurrent: 8,
            poll_interval_ms: 500,
        }
    }

    fn one(name: &str, url: &str, secret_file: Option<PathBuf>) -> BTreeMap<String, RawWebhookEndpoint> {
        BTreeMap::from([(
            name.to_owned(),
            RawWebhookEndpoint {
                url: url.to_owned(),
                secret_file,
            },
        )])
    }

    #[test]
    fn off_without_endpoints_and_bounded() {
        let s = validate(raw(BTreeMap::new())).unwrap();
        assert!(!s.enabled());
        assert_eq!(s.timeout, Duration::from_secs(10));
        for (bad, says) in [
            (
                RawWebhooks {
                    timeout_ms: 50,
                    ..raw(BTreeMap::new())
                },
                "timeout_ms",
            ),
            (
                RawWebhooks {
                    max_attempts: 0,
                    ..raw(BTreeMap::new())
                },
                "max_attempts",
            ),
            (
                RawWebhooks {
                    backoff_max_ms: 1_000,
                    ..raw(BTreeMap::new())
                },
                "backoff_max_ms",
            ),
            (
                RawWebhooks {
                    max_concurrent: 0,
                    ..raw(BTreeMap::new())
                },
                "max_concurrent",
            ),
        ] {
            let e = validate(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn an_endpoint_needs_a_name_a_url_and_a_strong_secret_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{SECRET}\n")).unwrap();
        let s = validate(raw(one("billing", "https://hooks.example/in", Some(good.clone())))).unwrap();
        assert_eq!(s.endpoints[0].name, "billing");
        assert_eq!(s.endpoints[0].url.as_str(), "https://hooks.example/in");
        assert!(!format!("{s:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));

        let short = dir.path().join("short");
        std::fs::write(&short, "whsec_c2hvcnQtc2VjcmV0").unwrap();
        let weak = dir.path().join("weak");
        std::fs::write(&weak, format!("whsec_{}", "QUFB".repeat(10))).unwrap();
        for (name, url, file, says) in [
            ("billing", "https://hooks.example/in", Some(short), "at least 24"),
            ("billing", "https://hooks.example/in", Some(weak), "repeat"),
            ("billing", "https://hooks.example/in", None, "secret_file is required"),
            ("billing", "ftp://hooks.example/in", Some(good.clone()), "http(s)"),
            (
                "billing",
                "https://u:hunter2@hooks.example/in",
                Some(good.clone()),
                "credentials",
            ),
            ("Bill ing", "https://hooks.example/in", Some(good.clone()), "[a-z0-9_-]"),
        ] {
            let e = validate(raw(one(name, url, file))).unwrap_err().to_string();
            assert!(e.contains(says), "{name} {url}: {e}");
            assert!(
                !e.contains("c2hvcnQtc2VjcmV0") && !e.contains("QUFB") && !e.contains("hunter2"),
                "{e}"
            );
        }
    }

    #[test]
    fn endpoints_come_from_variables_and_need_the_ledger() {
        use super::super::testing::{key, load};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("billing.whsec");
        std::fs::write(&f, SECRET).unwrap();
        let k = key(1);
        let vars = [
            ("SETTLEGATE_TRUST__KEYS", k.as_str()),
            (
                "SETTLEGATE_WEBHOOKS__ENDPOINTS__BILLING__URL",
                "http://127.0.0.1:9/hook",
            ),
            (
                "SETTLEGATE_WEBHOOKS__ENDPOINTS__BILLING__SECRET_FILE",
                f.to_str().unwrap(),
            ),
            ("SETTLEGATE_WEBHOOKS__BACKOFF_BASE_MS", "1000"),
        ];
        let e = load(&vars).unwrap_err().to_string();
        assert!(e.contains("needs the ledger"), "{e}");
        let mut with_ledger = vars.to_vec();
        with_ledger.push(("SETTLEGATE_LEDGER__DATABASE_URL", "postgres://127.0.0.1/books"));
        let s = load(&with_ledger).unwrap().webhooks;
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.endpoints[0].name, "billing", "names are the variables' lower case");
        assert_eq!(s.backoff_base, Duration::from_secs(1));
        assert_eq!((s.max_attempts, s.max_concurrent), (12, 8), "the shipped defaults");
        with_ledger.push(("SETTLEGATE_WEBHOOKS__ENDPOINTS__BILLING__SECRET", "whsec_inline"));
        assert!(load(&with_ledger).is_err(), "no inline secret");
    }
}
