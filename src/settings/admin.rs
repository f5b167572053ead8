//! `[admin]`: the operator's API over the books and the deny list, on its
//! own listener. On only with the ledger on and at least one token digest;
//! on loopback unless `allow_remote` says otherwise (an address reachable
//! from elsewhere stops the boot). Tokens are configured as SHA-256
//! digests only, so a leaked configuration leaks no token.

use std::net::SocketAddr;
use std::time::Duration;

use super::SettingsError;
use super::raw::RawAdmin;
use super::secrets::read_side_file;
use super::values::millis;

const SECTION: &str = "admin";

/// Token digests at most (a short list of operators and tools).
const MAX_TOKENS: usize = 64;

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    /// SHA-256 of each accepted bearer token.
    pub token_digests: Vec<[u8; 32]>,
    /// How often each instance reads the deny list again.
    pub deny_refresh: Duration,
    /// Bound on one admin read or write of the database.
    pub query_timeout: Duration,
    /// Whether the admin listener is served: the ledger is on and a token
    /// digest is configured.
    pub enabled: bool,
}

impl AdminSettings {
    /// Why the admin API is off, when it is.
    pub fn off_because(&self, ledger_on: bool) -> Option<&'static str> {
        match (ledger_on, self.token_digests.is_empty()) {
            (false, _) => Some("no ledger (ledger.database_url): there are no books to read"),
            (true, true) => Some("no admin.token_digests (or admin.token_digests_file): nobody could call it"),
            (true, false) => None,
        }
    }
}

/// `sha256:<64 hex>`.
fn parse_digest(entry: &str, key: &str) -> Result<[u8; 32], SettingsError> {
    let bad = || {
        SettingsError::invalid(
            SECTION,
            format!(
                "{key}: an entry must be sha256:<64 hex digits>, the SHA-256 of a token \
                 (`settlegate admin token` prints one; or printf %s \"$TOKEN\" | sha256sum)"
            ),
        )
    };
    let hex = entry.strip_prefix("sha256:").ok_or_else(bad)?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex, &mut bytes).map_err(|_| bad())?;
    Ok(bytes)
}

pub(super) fn validate(raw: RawAdmin, ledger_on: bool) -> Result<AdminSettings, SettingsError> {
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        SettingsError::invalid(
            SECTION,
            format!("admin.listen {:?} is not an IP:port address", raw.listen),
        )
    })?;
    if !listen.ip().to_canonical().is_loopback() && !raw.allow_remote {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "admin.listen {listen} is not a loopback address: the admin API reads the books and changes the \
                 deny list, so it listens on 127.0.0.1 or ::1 unless admin.allow_remote = true says otherwise"
            ),
        ));
    }
    let mut entries: Vec<(String, &'static str)> = raw
        .token_digests
        .iter()
        .map(|e| (e.trim().to_owned(), "admin.token_digests"))
        .collect();
    if let Some(path) = &raw.token_digests_file {
        let text = read_side_file(path, "admin.token_digests_file")?;
        entries.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| (l.to_owned(), "admin.token_digests_file")),
        );
    }
    let mut token_digests: Vec<[u8; 32]> = Vec::new();
    for (entry, key) in entries.iter().filter(|(e, _)| !e.is_empty()) {
        let d = parse_digest(entry, key)?;
        if token_digests.contains(&d) {
            return Err(SettingsError::invalid(
                SECTION,
                format!("{key}: a digest is listed twice"),
            ));
        }
        token_digests.push(d);
    }
    if token_digests.len() > MAX_TOKENS {
        return Err(SettingsError::invalid(
            SECTION,
            format!("admin.token_digests: at most {MAX_TOKENS} digests"),
        ));
    }
    if !(1..=3_600).contains(&raw.deny_refresh_seconds) {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "admin.deny_refresh_seconds must be 1 to 3600, got {}",
                raw.deny_refresh_seconds
            ),
        ));
    }
    let query_timeout = millis("admin.query_timeout_ms", raw.query_timeout_ms, 100, 120_000)?;
    let enabled = ledger_on && !token_digests.is_empty();
    Ok(AdminSettings {
        listen,
        allow_remote: raw.allow_remote,
        token_digests,
        deny_refresh: Duration::from_secs(raw.deny_refresh_seconds),
        query_timeout,
        enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn raw() -> RawAdmin {
        RawAdmin {
            listen: "127.0.0.1:8403".into(),
            allow_remote: false,
            token_digests: vec![DIGEST.into()],
            token_digests_file: None,
            deny_refresh_seconds: 5,
            query_timeout_ms: 10_000,
        }
    }

    #[test]
    fn on_only_with_the_ledger_and_a_digest() {
        assert!(validate(raw(), true).unwrap().enabled);
        let s = validate(raw(), false).unwrap();
        assert!(!s.enabled);
        assert!(s.off_because(false).unwrap().contains("ledger"));
        let s = validate(
            RawAdmin {
                token_digests: vec![],
                ..raw()
            },
            true,
        )
        .unwrap();
        assert!(!s.enabled);
        assert!(s.off_because(true).unwrap().contains("token_digests"));
    }

    #[test]
    fn a_remote_address_needs_allow_remote() {
        for addr in ["0.0.0.0:8403", "[::]:8403", "10.1.2.3:8403", "[::ffff:10.0.0.1]:1"] {
            let e = validate(
                RawAdmin {
                    listen: addr.into(),
                    ..raw()
                },
                true,
            )
            .unwrap_err();
            assert!(e.to_string().contains("allow_remote"), "{addr}: {e}");
            assert!(
                validate(
                    RawAdmin {
                        listen: addr.into(),
                        allow_remote: true,
                        ..raw()
                    },
                    true
                )
                .is_ok()
            );
        }
        for addr in ["127.0.0.1:0", "127.9.9.9:1", "[::1]:8403", "[::ffff:127.0.0.1]:1"] {
            assert!(
                validate(
                    RawAdmin {
                        listen: addr.into(),
                        ..raw()
                    },
                    true
                )
                .is_ok(),
                "{addr}"
            );
        }
    }

    #[test]
    fn digests_are_sha256_entries_inline_or_in_a_file() {
        for bad in [
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sha256:9f86",
            "sha512:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sha256:zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ] {
            let e = validate(
                RawAdmin {
                    token_digests: vec![bad.into()],
                    ..raw()
                },
                true,
            )
            .unwrap_err();
            assert!(e.to_string().contains("sha256:<64 hex digits>"), "{bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("digests");
        let other = format!("sha256:{}", "ab".repeat(32));
        std::fs::write(&f, format!("# operators\n{other}\n\n")).unwrap();
        let s = validate(
            RawAdmin {
                token_digests_file: Some(f.clone()),
                ..raw()
            },
            true,
        )
        .unwrap();
        assert_eq!(s.token_digests.len(), 2);
        std::fs::write(&f, format!("{DIGEST}\n")).unwrap();
        let e = validate(
            RawAdmin {
                token_digests_file: Some(f),
                ..raw()
            },
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn the_intervals_are_bounded() {
        for (r, name) in [
            (
                RawAdmin {
                    deny_refresh_seconds: 0,
                    ..raw()
                },
                "deny_refresh_seconds",
            ),
            (
                RawAdmin {
                    query_timeout_ms: 50,
                    ..raw()
                },
                "query_timeout_ms",
            ),
        ] {
            assert!(validate(r, true).unwrap_err().to_string().contains(name));
        }
    }
}
