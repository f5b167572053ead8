//! Value readers shared by the sections: bounded durations, http(s) URLs
//! (shown without their credentials) and IP networks.

use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::SettingsError;

/// `v` milliseconds, if within `lo..=hi`.
pub(super) fn millis(key: &'static str, v: u64, lo: u64, hi: u64) -> Result<Duration, SettingsError> {
    if (lo..=hi).contains(&v) {
        Ok(Duration::from_millis(v))
    } else {
        Err(SettingsError::Millis { key, lo, hi, got: v })
    }
}

pub(super) fn parse_http_url(key: &str, s: &str) -> Result<Url, SettingsError> {
    let shown = shown_url(s);
    let url = Url::parse(s.trim()).map_err(|e| SettingsError::NotUrl {
        key: key.to_owned(),
        shown: shown.clone(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SettingsError::NotHttpUrl {
            key: key.to_owned(),
            shown,
        });
    }
    Ok(url)
}

/// A URL as an error message may show it: an RPC URL can carry a password
/// or an API key, so only its scheme, host and port (or nothing).
pub(super) fn shown_url(s: &str) -> String {
    match Url::parse(s.trim()) {
        Ok(u) => settlegate_actors::rpc_pool::endpoint_label(&u),
        // A provider's key can sit anywhere in it: describe, never quote.
        Err(_) => format!(
            "(a value of {} characters, not shown: it may hold credentials)",
            s.len()
        ),
    }
}

/// An IP address or CIDR block.
pub(super) fn parse_net(key: &'static str, s: &str) -> Result<IpNet, SettingsError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| SettingsError::NotNet {
            key,
            value: s.to_owned(),
        })
}

/// The non-blank entries of a list, read as networks.
pub(super) fn parse_nets(key: &'static str, list: &[String]) -> Result<Vec<IpNet>, SettingsError> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_net(key, s.trim()))
        .collect()
}
