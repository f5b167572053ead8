//! `[callers]`: who may call `/v1/verify` (API keys, kept as SHA-256
//! digests so a leaked configuration leaks no key) and at what rate, per
//! caller and per client IP.

use ipnet::IpNet;

use super::SettingsError;
use super::raw::RawCallers;
use super::secrets::read_side_file;
use super::values::parse_nets;

const SECTION: &str = "callers";

/// Caller authentication and rate limits (`[callers]`).
#[derive(Debug, Clone, Default)]
pub struct Callers {
    /// (name, SHA-256 of the key): with any, `/v1/verify` needs
    /// `Authorization: Bearer <key>`.
    pub api_keys: Vec<(String, [u8; 32])>,
    /// Requests per second per API key / per client IP (0: unlimited).
    pub rate_per_caller: u32,
    pub rate_per_ip: u32,
    /// The same keys and rates admit `/v1/authorize` too, the key in
    /// `X-Settlegate-Key` (`Authorization` carries the payment there).
    pub authorize: bool,
    /// Peers whose `X-Forwarded-For` names the client for the per-IP rate
    /// (empty: the peer is the client, whatever it sends).
    pub trusted_proxies: Vec<IpNet>,
}

/// `name:<64 hex>` entries: a caller's name and the SHA-256 of its key
/// (`printf %s "$KEY" | sha256sum`). The keys themselves are never
/// configured, so a leaked configuration leaks no key.
pub(super) fn validate(raw: RawCallers) -> Result<Callers, SettingsError> {
    let mut entries: Vec<(String, &'static str)> =
        raw.api_keys.iter().map(|e| (e.clone(), "callers.api_keys")).collect();
    if let Some(path) = &raw.api_keys_file {
        let text = read_side_file(path, "callers.api_keys_file")?;
        entries.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| (l.to_owned(), "callers.api_keys_file")),
        );
    }
    let mut api_keys: Vec<(String, [u8; 32])> = Vec::new();
    for (entry, key) in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let bad = || {
            SettingsError::invalid(
                SECTION,
                format!(
                    "{key}: an entry must be name:<SHA-256 of the key, 64 hex digits> (printf %s \"$KEY\" | sha256sum)"
                ),
            )
        };
        let (name, digest) = entry.split_once(':').ok_or_else(bad)?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(SettingsError::invalid(
                SECTION,
                format!("{key}: a caller name must be 1 to 64 of [A-Za-z0-9._-], got {name:?}"),
            ));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digest.trim(), &mut bytes).map_err(|_| bad())?;
        if api_keys.iter().any(|(n, d)| n == name || *d == bytes) {
            return Err(SettingsError::invalid(
                SECTION,
                format!("{key}: caller {name:?} or its key is listed twice"),
            ));
        }
        api_keys.push((name.to_owned(), bytes));
    }
    for (what, rate) in [
        ("callers.rate_per_caller_per_second", raw.rate_per_caller_per_second),
        ("callers.rate_per_ip_per_second", raw.rate_per_ip_per_second),
    ] {
        if rate > 1_000_000 {
            return Err(SettingsError::invalid(
                SECTION,
                format!("{what} must be at most 1000000, got {rate}"),
            ));
        }
    }
    if raw.rate_per_caller_per_second > 0 && api_keys.is_empty() {
        return Err(SettingsError::invalid(
            SECTION,
            "callers.rate_per_caller_per_second needs callers.api_keys (or api_keys_file) to tell callers apart",
        ));
    }
    let trusted_proxies = parse_nets("callers.trusted_proxies", &raw.trusted_proxies)?;
    if raw.authorize && api_keys.is_empty() && raw.rate_per_ip_per_second == 0 {
        return Err(SettingsError::invalid(
            SECTION,
            "callers.authorize needs callers.api_keys (or api_keys_file) or callers.rate_per_ip_per_second: \
             there is nothing to apply to /v1/authorize",
        ));
    }
    Ok(Callers {
        api_keys,
        rate_per_caller: raw.rate_per_caller_per_second,
        rate_per_ip: raw.rate_per_ip_per_second,
        authorize: raw.authorize,
        trusted_proxies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawCallers {
        RawCallers {
            api_keys: vec![],
            api_keys_file: None,
            rate_per_caller_per_second: 0,
            rate_per_ip_per_second: 0,
            authorize: false,
            trusted_proxies: vec![],
        }
    }

    #[test]
    fn api_keys_are_named_digests_each_listed_once() {
        let digest = "ab".repeat(32);
        let ok = validate(RawCallers {
            api_keys: vec![format!(" billing:{digest} ")],
            ..raw()
        })
        .unwrap();
        assert_eq!(ok.api_keys, [("billing".to_owned(), [0xab; 32])]);
        for (entries, says) in [
            (vec!["billing".to_owned()], "an entry must be name:"),
            (vec![format!("billing:{}", "zz".repeat(32))], "an entry must be name:"),
            (vec![format!("bad name:{digest}")], "a caller name must be"),
            (vec![format!("a:{digest}"), format!("b:{digest}")], "listed twice"),
        ] {
            let e = validate(RawCallers {
                api_keys: entries.clone(),
                ..raw()
            })
            .unwrap_err();
            assert!(e.to_string().starts_with("callers.api_keys: "), "{e}");
            assert!(e.to_string().contains(says), "{entries:?}: {e}");
        }
    }

    #[test]
    fn rates_and_authorize_need_something_to_apply() {
        let e = validate(RawCallers {
            rate_per_caller_per_second: 5,
            ..raw()
        })
        .unwrap_err();
        assert!(e.to_string().contains("needs callers.api_keys"), "{e}");
        let e = validate(RawCallers {
            authorize: true,
            ..raw()
        })
        .unwrap_err();
        assert!(e.to_string().contains("nothing to apply"), "{e}");
        let e = validate(RawCallers {
            rate_per_ip_per_second: 1_000_001,
            ..raw()
        })
        .unwrap_err();
        assert!(e.to_string().contains("at most 1000000"), "{e}");
        let ip_only = validate(RawCallers {
            authorize: true,
            rate_per_ip_per_second: 10,
            ..raw()
        })
        .unwrap();
        assert!(ip_only.authorize && ip_only.api_keys.is_empty());
    }
}
