//! `[redis]` and `[replay]`: where consumed payments are recorded. The
//! Redis URL (one, or a cluster's seed nodes) is a secret: never quoted in
//! a refusal, only counted and described. Without one, a local file holds
//! the records, for a single instance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::SettingsError;
use super::raw::{RawRedis, RawReplay};
use super::secrets::{Either, Secret, inline_or_file, read_side_file};
use super::values::millis;

const SECTION: &str = "redis";

/// Where the Redis replay store is.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL, or a cluster's seed nodes.
    pub urls: Vec<Secret>,
    pub cluster: bool,
    /// PEM roots to verify `rediss://` servers with (else the system's).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Replicas a new record must reach before its 200 (`WAIT`); 0: none.
    pub wait_replicas: u32,
}

#[derive(Debug)]
pub(super) struct Replay {
    pub redis: Option<RedisSettings>,
    pub key_prefix: String,
    pub timeout: Duration,
    pub max_ops_in_flight: usize,
    pub local_path: PathBuf,
    pub min_record_ttl: Duration,
    pub cache_entries: usize,
}

/// The store's location first (its URL and mode, TLS roots, replicas),
/// then its deadlines and bounds.
pub(super) fn validate(raw: RawRedis, replay: RawReplay) -> Result<Replay, SettingsError> {
    let fail = |m: String| Err(SettingsError::invalid(SECTION, m));
    let redis_url = match inline_or_file("redis.url", raw.url, raw.url_file)? {
        Some(Either::Inline(u)) => Some(u),
        Some(Either::File(path)) => Some(read_side_file(&path, "redis.url_file")?.trim().to_owned()),
        None => None,
    };
    let redis = match redis_url {
        None => {
            if raw.tls_ca_file.is_some() {
                return fail("redis.tls_ca_file is set but no redis.url".into());
            }
            None
        }
        Some(u) => Some(redis_settings(&u, &raw.mode, raw.tls_ca_file.as_deref())?),
    };
    match (&redis, raw.wait_replicas) {
        (_, 0) => {}
        (_, n) if n > 16 => return fail(format!("redis.wait_replicas must be at most 16, got {n}")),
        (None, _) => return fail("redis.wait_replicas is set but no redis.url".into()),
        (Some(_), _) if raw.timeout_ms < 300 => {
            return fail(format!(
                "redis.wait_replicas needs redis.timeout_ms of at least 300 (a third each for the consume, the replicas and a withdrawal), got {}",
                raw.timeout_ms
            ));
        }
        (Some(_), _) => {}
    }
    let redis = redis.map(|r| RedisSettings {
        wait_replicas: raw.wait_replicas,
        ..r
    });
    let timeout = millis("redis.timeout_ms", raw.timeout_ms, 10, 60_000)?;
    if raw.key_prefix.len() > 64 || raw.key_prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail("redis.key_prefix must be at most 64 characters without spaces".into());
    }
    if replay.min_record_ttl_seconds > 365 * 86_400 {
        return Err(SettingsError::invalid(
            "replay",
            "replay.min_record_ttl_seconds must be at most a year",
        ));
    }
    if replay.cache_entries > 10_000_000 {
        return Err(SettingsError::invalid(
            "replay",
            "replay.cache_entries must be at most 10000000",
        ));
    }
    super::rpc::in_flight_bound("redis.max_ops_in_flight", raw.max_ops_in_flight)?;
    Ok(Replay {
        redis,
        key_prefix: raw.key_prefix,
        timeout,
        max_ops_in_flight: raw.max_ops_in_flight,
        local_path: replay.local_path,
        min_record_ttl: Duration::from_secs(replay.min_record_ttl_seconds),
        cache_entries: replay.cache_entries,
    })
}

/// At most this many cluster seed nodes.
const MAX_REDIS_NODES: usize = 64;

/// `redis.url` read for `redis.mode`: one URL, or (cluster) seed nodes
/// separated by commas or whitespace (a file's lines).
fn redis_settings(text: &str, mode: &str, ca_file: Option<&Path>) -> Result<RedisSettings, SettingsError> {
    let cluster = match mode {
        "single" => false,
        "cluster" => true,
        other => {
            return Err(SettingsError::invalid(
                SECTION,
                format!(
                    "redis.mode must be \"single\" or \"cluster\", got {}",
                    settlegate_rules::primitives::quote_bounded(other, 32)
                ),
            ));
        }
    };
    // One URL may hold a comma (its password may); only a cluster's seed
    // list is split on commas. A second URL in single mode is refused.
    let urls: Vec<&str> = if cluster {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|u| !u.is_empty())
            .collect()
    } else {
        let one = text.trim();
        let several =
            one.split_whitespace().nth(1).is_some() || one.contains(",redis://") || one.contains(",rediss://");
        match (
            one.trim_matches(|c: char| c == ',' || c.is_whitespace()).is_empty(),
            several,
        ) {
            (true, _) => vec![],
            (false, true) => vec![one, one],
            (false, false) => vec![one],
        }
    };
    match (cluster, urls.len()) {
        (_, 0) => return Err(SettingsError::invalid(SECTION, "redis.url is empty")),
        (false, 1) => {}
        (false, _) => {
            return Err(SettingsError::invalid(
                SECTION,
                "redis.url holds several URLs: set redis.mode = \"cluster\" for a cluster's seed nodes",
            ));
        }
        (true, n) if n > MAX_REDIS_NODES => {
            return Err(SettingsError::invalid(
                SECTION,
                format!("redis.url lists more than {MAX_REDIS_NODES} nodes"),
            ));
        }
        (true, _) => {}
    }
    let mut schemes = std::collections::BTreeSet::new();
    for (i, u) in urls.iter().enumerate() {
        // Never echo a URL itself: it may carry a password.
        let parsed = Url::parse(u)
            .map_err(|_| SettingsError::invalid(SECTION, format!("redis URL {} does not parse", i + 1)))?;
        let scheme = parsed.scheme();
        let allowed: &[&str] = if cluster {
            &["redis", "rediss"]
        } else {
            &["redis", "rediss", "redis+unix"]
        };
        if !allowed.contains(&scheme) {
            return Err(SettingsError::invalid(
                SECTION,
                format!("redis URL {} scheme {scheme:?} is not {}", i + 1, allowed.join(" or ")),
            ));
        }
        if scheme != "redis+unix" && parsed.host_str().is_none_or(str::is_empty) {
            return Err(SettingsError::invalid(
                SECTION,
                format!("redis URL {} has no host", i + 1),
            ));
        }
        schemes.insert(scheme.to_owned());
    }
    if schemes.len() > 1 {
        return Err(SettingsError::invalid(
            SECTION,
            "the cluster's redis URLs mix redis:// and rediss://: use TLS for all or none",
        ));
    }
    let tls = schemes.contains("rediss");
    let tls_ca_pem = match ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(SettingsError::invalid(
                SECTION,
                "redis.tls_ca_file is set but redis.url is not rediss:// (TLS)",
            ));
        }
        Some(path) => {
            let pem = read_side_file(path, "redis.tls_ca_file")?;
            let certs =
                <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        SettingsError::invalid(SECTION, format!("redis.tls_ca_file {} is not PEM", path.display()))
                    })?;
            if certs.is_empty() {
                return Err(SettingsError::invalid(
                    SECTION,
                    format!("redis.tls_ca_file {} holds no certificate", path.display()),
                ));
            }
            Some(pem.into_bytes())
        }
    };
    Ok(RedisSettings {
        urls: urls.into_iter().map(|u| Secret::new(u.to_owned())).collect(),
        cluster,
        tls_ca_pem,
        wait_replicas: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key, load};

    #[test]
    fn redis_modes_tls_roots_and_replica_waits_are_checked_at_boot() {
        let k = key(1);
        let base = [
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &k as &str),
        ];
        let redis = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            load(&pairs).map(|s| s.redis)
        };
        let seeds = "redis://:pw@10.0.0.1:7000, redis://:pw@10.0.0.2:7000\nredis://:pw@10.0.0.3:7000";
        let cluster = redis(&[("SETTLEGATE_REDIS__URL", seeds), ("SETTLEGATE_REDIS__MODE", "cluster")])
            .unwrap()
            .unwrap();
        assert!(cluster.cluster);
        assert_eq!(cluster.urls.len(), 3);
        assert_eq!(cluster.urls[2].expose(), "redis://:pw@10.0.0.3:7000");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        // a real certificate, in PEM
        std::fs::write(
            &ca,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-ca.pem")),
        )
        .unwrap();
        let (ca, not_pem) = (ca.display().to_string(), not_pem.display().to_string());
        let tls = redis(&[
            ("SETTLEGATE_REDIS__URL", "rediss://:pw@r.example:6380"),
            ("SETTLEGATE_REDIS__TLS_CA_FILE", &ca),
            ("SETTLEGATE_REDIS__WAIT_REPLICAS", "1"),
            ("SETTLEGATE_REDIS__TIMEOUT_MS", "900"),
        ])
        .unwrap()
        .unwrap();
        assert!(!tls.cluster && tls.tls_ca_pem.is_some() && tls.wait_replicas == 1);
        // A comma is legal in a password (found by review): one URL.
        let comma = redis(&[("SETTLEGATE_REDIS__URL", " redis://:ab,cd@r.example:6379 ")])
            .unwrap()
            .unwrap();
        assert_eq!(comma.urls.len(), 1);
        assert_eq!(comma.urls[0].expose(), "redis://:ab,cd@r.example:6379");
        for (extra, says) in [
            (vec![("SETTLEGATE_REDIS__URL", seeds)], "redis.mode"),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://a:1"),
                    ("SETTLEGATE_REDIS__MODE", "sentinel"),
                ],
                "redis.mode",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1,rediss://:pw@b:1"),
                    ("SETTLEGATE_REDIS__MODE", "cluster"),
                ],
                "mix",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis+unix:///r.sock"),
                    ("SETTLEGATE_REDIS__MODE", "cluster"),
                ],
                "scheme",
            ),
            (vec![("SETTLEGATE_REDIS__URL", " , ")], "empty"),
            (
                vec![("SETTLEGATE_REDIS__URL", "redis://:pw@a:1,redis://:pw@b:1")],
                "several URLs",
            ),
            (
                vec![("SETTLEGATE_REDIS__URL", "redis://:pw@a:1 redis://:pw@b:1")],
                "several URLs",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1"),
                    ("SETTLEGATE_REDIS__TLS_CA_FILE", &ca),
                ],
                "not rediss",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "rediss://:pw@a:1"),
                    ("SETTLEGATE_REDIS__TLS_CA_FILE", &not_pem),
                ],
                "certificate",
            ),
            (vec![("SETTLEGATE_REDIS__TLS_CA_FILE", &ca)], "no redis.url"),
            (vec![("SETTLEGATE_REDIS__WAIT_REPLICAS", "1")], "no redis.url"),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1"),
                    ("SETTLEGATE_REDIS__WAIT_REPLICAS", "17"),
                ],
                "at most 16",
            ),
            (
                vec![
                    ("SETTLEGATE_REDIS__URL", "redis://:pw@a:1"),
                    ("SETTLEGATE_REDIS__WAIT_REPLICAS", "1"),
                    ("SETTLEGATE_REDIS__TIMEOUT_MS", "200"),
                ],
                "at least 300",
            ),
        ] {
            let e = redis(&extra).unwrap_err();
            assert!(e.to_string().contains(says), "{extra:?}: {e:?}");
            assert!(!e.to_string().contains(":pw@"), "never quotes a URL: {e:?}");
        }
    }
}
