//! Who may call `POST /v1/verify` (and, with `callers.authorize`,
//! `/v1/authorize`), and how often: per client IP and per API key token
//! buckets (429 with `Retry-After`), and API keys (401). Runs as the route's
//! middleware, before the body is read, so an unknown caller costs no
//! parsing and learns nothing about the body's rules.
//!
//! On `/v1/verify` the key is `Authorization: Bearer <key>`; on
//! `/v1/authorize`, where `Authorization` is the paying client's credential,
//! it is [`KEY_HEADER`], which the proxy sets.
//!
//! Keys are configured as SHA-256 digests only; a presented key is hashed
//! and compared with every digest in constant time (`subtle`), all of them,
//! so neither the match nor its position shows in the timing. No key or
//! digest is ever logged; the caller's configured name is.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use ipnet::IpNet;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::ApiError;
use crate::settings::Callers;

/// The header a proxy sends its API key in on `/v1/authorize`.
pub const KEY_HEADER: &str = "x-settlegate-key";

/// Where a request carries its caller's API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyIn {
    /// `Authorization: Bearer <key>` (`/v1/verify`).
    Bearer,
    /// `X-Settlegate-Key: <key>` (`/v1/authorize`).
    Header,
}

/// Distinct keys a limiter tracks before it forgets idle ones.
const MAX_TRACKED: usize = 65_536;

/// Token buckets, one per key, refilled at `rate` per second up to one
/// second's worth.
pub struct Limiter<K> {
    rate: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: u32) -> Self {
        Limiter {
            rate: f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            // Forget the buckets that are full again (idle callers). If
            // that frees nothing, this is a flood of distinct keys: a new
            // key waits (forgetting would reset everyone's limit).
            let (rate, burst) = (self.rate, self.rate.max(1.0));
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let burst = self.rate.max(1.0);
        let (tokens, at) = buckets.entry(key.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// The admission rules of `/v1/verify`.
pub struct Gatekeeper {
    keys: Vec<(String, [u8; 32])>,
    per_caller: Option<Limiter<usize>>,
    per_ip: Option<Limiter<IpAddr>>,
    /// `callers.trusted_proxies`: its own list, not `/v1/authorize`'s
    /// (whose default, loopback, would let any local caller name its bucket).
    trusted_proxies: Vec<IpNet>,
    /// Whether `/v1/authorize` is admitted by these rules too.
    pub on_authorize: bool,
}

impl Gatekeeper {
    pub fn new(callers: &Callers) -> Self {
        Gatekeeper {
            keys: callers.api_keys.clone(),
            per_caller: (callers.rate_per_caller > 0).then(|| Limiter::new(callers.rate_per_caller)),
            per_ip: (callers.rate_per_ip > 0).then(|| Limiter::new(callers.rate_per_ip)),
            trusted_proxies: callers.trusted_proxies.clone(),
            on_authorize: callers.authorize,
        }
    }

    /// Whether the gate admits nobody unchecked (for the middleware to skip).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty() && self.per_ip.is_none()
    }

    /// Admits `req`, naming its caller when keys are configured.
    pub fn admit(&self, req: &HttpRequest, key_in: KeyIn) -> Result<Option<&str>, ApiError> {
        let now = Instant::now();
        if let Some(limiter) = &self.per_ip
            && let Some(ip) = self.client_ip(req)
        {
            limiter.take(&ip, now).map_err(limited)?;
        }
        if self.keys.is_empty() {
            return Ok(None);
        }
        let index = self.caller(req, key_in)?;
        if let Some(limiter) = &self.per_caller {
            limiter.take(&index, now).map_err(limited)?;
        }
        Ok(Some(&self.keys[index].0))
    }

    /// The index of the configured key the request's token hashes to.
    fn caller(&self, req: &HttpRequest, key_in: KeyIn) -> Result<usize, ApiError> {
        let token = match key_in {
            KeyIn::Bearer => req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                }),
            KeyIn::Header => req
                .headers()
                .get(KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim),
        }
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized(match key_in {
                KeyIn::Bearer => "this endpoint needs Authorization: Bearer <api key>".into(),
                KeyIn::Header => "this endpoint needs X-Settlegate-Key: <api key> (the proxy sets it)".into(),
            })
        })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (i, (_, d)) in self.keys.iter().enumerate() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found.ok_or_else(|| ApiError::Unauthorized("the API key is not valid".into()))
    }

    /// The peer, or behind a trusted proxy (`callers.trusted_proxies`) the
    /// last address of `X-Forwarded-For` that is not a trusted proxy, read from the right
    /// (what the proxies appended) and never past an entry that does not
    /// parse: what lies left of it may be the client's own forgery. IPv6
    /// clients count by their /64, which one client holds whole; an
    /// IPv4-mapped address (`::ffff:a.b.c.d`, a dual-stack listener's view of
    /// an IPv4 client) counts as the IPv4 address, not as the /64 `::` that
    /// every IPv4 client would share.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip().to_canonical();
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        let mut client = peer;
        if trusted(&peer) {
            let entries: Vec<String> = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|a| a.trim().to_owned())
                .collect();
            for entry in entries.iter().rev() {
                let Some(ip) = parse_forwarded(entry) else {
                    break;
                };
                let ip = ip.to_canonical();
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
        }
        Some(match client {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        })
    }
}

/// An `X-Forwarded-For` entry: `ip`, `ip:port` or `[v6]:port`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn limited(wait: Duration) -> ApiError {
    ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_seconds_worth_and_refills() {
        let l = Limiter::new(5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take(&1, t0).is_ok());
        }
        let wait = l.take(&1, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // another key has its own bucket
        assert!(l.take(&2, t0).is_ok());
        // 200 ms later one token is back, not more
        let t1 = t0 + Duration::from_millis(200);
        assert!(l.take(&1, t1).is_ok());
        assert!(l.take(&1, t1).is_err());
        // never more than a burst after a long idle
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| l.take(&1, t2).is_ok()).count(), 5);
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let l = Limiter::new(1);
        let t = Instant::now();
        for k in 0..(MAX_TRACKED + 10) {
            let _ = l.take(&k, t);
        }
        assert!(l.buckets.lock().len() <= MAX_TRACKED);
        // the known keys keep their (spent) buckets; a new one waits
        assert!(l.take(&0, t).is_err());
        assert!(l.take(&(MAX_TRACKED + 20), t).is_err());
        // once buckets refill, idle ones are forgotten and room comes back
        assert!(l.take(&(MAX_TRACKED + 20), t + Duration::from_secs(2)).is_ok());
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    #[test]
    fn forwarded_entries_with_ports_parse_and_junk_does_not() {
        assert_eq!(parse_forwarded("203.0.113.9"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            parse_forwarded("203.0.113.9:4711"),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            parse_forwarded("[2001:db8::1]:443"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse_forwarded("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        for junk in ["unknown", "", "203.0.113.9:port", "_hidden"] {
            assert_eq!(parse_forwarded(junk), None, "{junk}");
        }
    }
}
