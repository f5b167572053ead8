//! `[rpc]` and `[coalescer]`: the Tempo endpoints (from `rpc.urls`, a URL
//! file, or the seed's `TEMPO_RPC_URL`; never echoed with what they carry),
//! per-call and per-lookup deadlines, how long a lookup's refusal is kept
//! for the requests that follow it, and whether instances on one Redis
//! share their lookups.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::SettingsError;
use super::raw::{RawCoalescer, RawRpc};
use super::secrets::read_side_file;
use super::values::{millis, parse_http_url};

const SECTION: &str = "rpc";

/// The endpoint when neither `rpc.urls` nor `TEMPO_RPC_URL` is set (a local node).
const DEFAULT_RPC_URL: &str = "http://127.0.0.1:8545";

#[derive(Debug)]
pub(super) struct Rpc {
    pub urls: Vec<Url>,
    pub timeout: Duration,
    pub lookup_timeout: Duration,
    pub probe_interval: Option<Duration>,
    pub expose_endpoint_hosts: bool,
    pub max_lookups_in_flight: usize,
    pub coalescer_window: Duration,
    pub share_across_instances: bool,
}

pub(super) fn validate(
    raw: RawRpc,
    coalescer: RawCoalescer,
    outside_env: &HashMap<String, String>,
) -> Result<Rpc, SettingsError> {
    let urls = urls(raw.urls, raw.urls_file, outside_env)?;
    let timeout = millis("rpc.timeout_ms", raw.timeout_ms, 50, 60_000)?;
    let lookup_timeout = millis("rpc.lookup_timeout_ms", raw.lookup_timeout_ms, 100, 120_000)?;
    if timeout > lookup_timeout {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "rpc.timeout_ms ({}) must not exceed rpc.lookup_timeout_ms ({}): a lookup includes at least one call",
                raw.timeout_ms, raw.lookup_timeout_ms
            ),
        ));
    }
    let probe_interval = match raw.probe_interval_ms {
        0 => None,
        v => Some(millis("rpc.probe_interval_ms", v, 100, 3_600_000)?),
    };
    let coalescer_window = match coalescer.window_ms {
        0 => Duration::ZERO,
        v => millis("coalescer.window_ms", v, 1, 10_000)?,
    };
    in_flight_bound("rpc.max_lookups_in_flight", raw.max_lookups_in_flight)?;
    Ok(Rpc {
        urls,
        timeout,
        lookup_timeout,
        probe_interval,
        expose_endpoint_hosts: raw.expose_endpoint_hosts,
        max_lookups_in_flight: raw.max_lookups_in_flight,
        coalescer_window,
        share_across_instances: coalescer.share_across_instances,
    })
}

/// A bound on work in flight (lookups, store operations): 1 to 100000.
pub(super) fn in_flight_bound(key: &str, v: usize) -> Result<(), SettingsError> {
    if (1..=100_000).contains(&v) {
        Ok(())
    } else {
        Err(SettingsError::invalid(
            SECTION,
            format!("{key} must be between 1 and 100000, got {v}"),
        ))
    }
}

/// The endpoints: the seed's `TEMPO_RPC_URL` is the endpoint when rpc.urls
/// is not set; set both and they must agree, or the boot stops.
fn urls(
    inline: Option<Vec<String>>,
    file: Option<PathBuf>,
    outside_env: &HashMap<String, String>,
) -> Result<Vec<Url>, SettingsError> {
    let fail = |m: String| Err(SettingsError::invalid(SECTION, m));
    let seed_rpc = outside_env
        .get("TEMPO_RPC_URL")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| parse_http_url("TEMPO_RPC_URL", v))
        .transpose()?;
    let configured: Option<Vec<String>> = match (inline, file) {
        (Some(_), Some(_)) => return Err(SettingsError::Both("rpc.urls".into(), "rpc.urls_file".into())),
        (Some(urls), None) => Some(urls),
        (None, Some(path)) => Some(
            read_side_file(&path, "rpc.urls_file")?
                .split([',', '\n'])
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
        ),
        (None, None) => None,
    };
    let urls = match configured {
        Some(urls) => {
            if urls.is_empty() {
                return fail("rpc.urls is empty: settlegate needs at least one Tempo RPC endpoint".into());
            }
            let urls = urls
                .iter()
                .map(|u| parse_http_url("rpc.urls", u))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(seed) = &seed_rpc
                && urls != [seed.clone()]
            {
                return fail(format!(
                    "TEMPO_RPC_URL ({}) and rpc.urls ({}) disagree: set one of them, \
                     rpc.urls for several endpoints",
                    settlegate_actors::rpc_pool::endpoint_label(seed),
                    urls.iter()
                        .map(settlegate_actors::rpc_pool::endpoint_label)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            urls
        }
        None => vec![match seed_rpc {
            Some(seed) => seed,
            None => parse_http_url("rpc.urls", DEFAULT_RPC_URL)?,
        }],
    };
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key, load};

    #[test]
    fn the_seeds_tempo_rpc_url_is_the_endpoint_when_rpc_urls_is_not_set() {
        let k = key(1);
        let base = [
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
        ];
        let urls = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            load(&pairs).map(|s| s.rpc_urls.iter().map(|u| u.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(urls(&[]).unwrap(), ["http://127.0.0.1:8545/"]);
        assert_eq!(
            urls(&[("TEMPO_RPC_URL", "https://rpc.moderato.tempo.xyz")]).unwrap(),
            ["https://rpc.moderato.tempo.xyz/"]
        );
        // both, naming the same endpoint: fine
        assert_eq!(
            urls(&[("TEMPO_RPC_URL", "http://n:1"), ("SETTLEGATE_RPC__URLS", "http://n:1")]).unwrap(),
            ["http://n:1/"]
        );
        for (rpc_urls, says) in [("http://other:1", "disagree"), ("http://n:1,http://n:2", "disagree")] {
            let e = urls(&[("TEMPO_RPC_URL", "http://n:1"), ("SETTLEGATE_RPC__URLS", rpc_urls)]).unwrap_err();
            assert!(
                e.to_string().contains(says) && e.to_string().contains("TEMPO_RPC_URL"),
                "{rpc_urls}: {e:?}"
            );
        }
        let e = urls(&[("TEMPO_RPC_URL", "not a url")]).unwrap_err();
        assert!(e.to_string().contains("TEMPO_RPC_URL"), "{e:?}");
    }

    #[test]
    fn rpc_urls_come_from_a_file_and_are_never_echoed_with_their_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rpc-urls");
        std::fs::write(
            &f,
            "# providers\nhttps://u:rpc-pass-1@a.example/v1?key=k1\n\nhttps://b.example,https://c.example\n",
        )
        .unwrap();
        let k = key(1);
        let s = load(&[
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
            ("SETTLEGATE_RPC__URLS_FILE", f.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(s.rpc_urls.len(), 3);
        assert_eq!(s.rpc_urls[0].password(), Some("rpc-pass-1"));
        let e = load(&[
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
            ("SETTLEGATE_RPC__URLS_FILE", f.to_str().unwrap()),
            ("SETTLEGATE_RPC__URLS", "http://n:1"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e:?}");
        // A refused URL is described without what it carries.
        for bad in [
            "ftp://u:rpc-pass-2@a.example/?key=k2",
            "https://u:rpc-pass-2@[bad/?key=k2",
        ] {
            let e = load(&[("SETTLEGATE_TRUST__KEYS", &k as &str), ("SETTLEGATE_RPC__URLS", bad)]).unwrap_err();
            assert!(e.to_string().starts_with("rpc.urls"), "{e:?}");
            assert!(
                !e.to_string().contains("rpc-pass-2") && !e.to_string().contains("k2"),
                "{e:?}"
            );
        }
        let e = load(&[
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
            ("SETTLEGATE_RPC__URLS", "https://u:rpc-pass-3@a.example"),
            ("TEMPO_RPC_URL", "https://v:rpc-pass-4@b.example"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("disagree") && !e.to_string().contains("rpc-pass"),
            "{e:?}"
        );
    }

    #[test]
    fn lookups_are_shared_across_instances_unless_turned_off() {
        let k = key(1);
        let share = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("SETTLEGATE_TRUST__KEYS", &k as &str)];
            pairs.extend_from_slice(extra);
            load(&pairs).map(|s| s.coalescer_share_across_instances)
        };
        assert!(share(&[]).unwrap(), "on by default");
        assert!(!share(&[("SETTLEGATE_COALESCER__SHARE_ACROSS_INSTANCES", "false")]).unwrap());
        assert!(share(&[("SETTLEGATE_COALESCER__SHARE_ACROSS_INSTANCES", "maybe")]).is_err());
    }
}
