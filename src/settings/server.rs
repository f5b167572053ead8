//! `[server]`: where and how connections are served: the address, workers
//! and connection cap, the slow-client deadlines, and TLS from files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::SettingsError;
use super::raw::RawServer;
use super::values::millis;

const SECTION: &str = "server";

/// The certificate and key files, and how often they are checked.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `None`: never re-read.
    pub reload_every: Option<Duration>,
}

#[derive(Debug)]
pub(super) struct Server {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_connections: usize,
    pub client_request_timeout: Duration,
    pub request_body_timeout: Duration,
    pub send_timeout: Duration,
    pub tls: Option<TlsFiles>,
}

/// The address, the worker count and the connection cap.
fn validate_listen(raw: &RawServer) -> Result<SocketAddr, SettingsError> {
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        SettingsError::invalid(
            SECTION,
            format!("server.listen {:?} is not an IP:port address", raw.listen),
        )
    })?;
    if raw.workers > 256 {
        return Err(SettingsError::invalid(
            SECTION,
            format!("server.workers is {}, at most 256", raw.workers),
        ));
    }
    if !(1..=100_000).contains(&raw.max_connections) {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "server.max_connections must be between 1 and 100000, got {}",
                raw.max_connections
            ),
        ));
    }
    Ok(listen)
}

pub(super) fn validate(raw: RawServer) -> Result<Server, SettingsError> {
    let listen = validate_listen(&raw)?;
    let client_request_timeout = millis(
        "server.client_request_timeout_ms",
        raw.client_request_timeout_ms,
        100,
        60_000,
    )?;
    let request_body_timeout = millis(
        "server.request_body_timeout_ms",
        raw.request_body_timeout_ms,
        100,
        120_000,
    )?;
    let send_timeout = millis("server.send_timeout_ms", raw.send_timeout_ms, 1000, 300_000)?;
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            reload_every: (raw.tls_reload_seconds > 0).then(|| Duration::from_secs(raw.tls_reload_seconds)),
        }),
        (None, None) => None,
        _ => {
            return Err(SettingsError::invalid(
                SECTION,
                "set both server.tls_cert_file and server.tls_key_file, or neither",
            ));
        }
    };
    if raw.tls_reload_seconds > 86_400 {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "server.tls_reload_seconds must be at most 86400, got {}",
                raw.tls_reload_seconds
            ),
        ));
    }
    Ok(Server {
        listen,
        workers: raw.workers,
        max_connections: raw.max_connections,
        client_request_timeout,
        request_body_timeout,
        send_timeout,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipnet::IpNet;

    use super::super::testing::{key, load};

    #[test]
    fn the_body_deadline_and_the_rates_trusted_proxies_are_bounded_and_off_by_default() {
        let k = key(1);
        let with_key = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("SETTLEGATE_TRUST__KEYS", k.as_str())];
            pairs.extend_from_slice(extra);
            load(&pairs)
        };
        let s = with_key(&[]).unwrap();
        assert_eq!(s.request_body_timeout, Duration::from_secs(10));
        // X-Forwarded-For is believed from nobody unless configured, even
        // though /v1/authorize trusts loopback by default
        assert!(s.callers.trusted_proxies.is_empty());
        assert!(!s.trusted_proxies.is_empty());
        let s = with_key(&[
            ("SETTLEGATE_SERVER__REQUEST_BODY_TIMEOUT_MS", "1500"),
            ("SETTLEGATE_CALLERS__TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7"),
        ])
        .unwrap();
        assert_eq!(s.request_body_timeout, Duration::from_millis(1500));
        assert_eq!(
            s.callers.trusted_proxies,
            ["10.0.0.0/8".parse::<IpNet>().unwrap(), "192.0.2.7/32".parse().unwrap()]
        );
        for bad in ["99", "120001", "-1"] {
            let e = with_key(&[("SETTLEGATE_SERVER__REQUEST_BODY_TIMEOUT_MS", bad)]).unwrap_err();
            assert!(e.to_string().contains("request_body_timeout_ms"), "{bad}: {e}");
        }
        let e = with_key(&[("SETTLEGATE_CALLERS__TRUSTED_PROXIES", "lb.internal")]).unwrap_err();
        assert!(
            e.to_string().starts_with("callers.trusted_proxies: \"lb.internal\""),
            "{e}"
        );
    }

    #[test]
    fn the_send_timeout_is_bounded_and_on_by_default() {
        let k = key(1);
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("SETTLEGATE_TRUST__KEYS", k.as_str())];
            pairs.extend_from_slice(extra);
            load(&pairs)
        };
        assert_eq!(with(&[]).unwrap().send_timeout, Duration::from_secs(10));
        let s = with(&[("SETTLEGATE_SERVER__SEND_TIMEOUT_MS", "2500")]).unwrap();
        assert_eq!(s.send_timeout, Duration::from_millis(2500));
        // No "off": 0 and anything outside 1 s to 5 min is refused.
        for bad in ["0", "999", "300001", "-1"] {
            let e = with(&[("SETTLEGATE_SERVER__SEND_TIMEOUT_MS", bad)]).unwrap_err();
            assert!(e.to_string().contains("send_timeout_ms"), "{bad}: {e}");
        }
    }
}
