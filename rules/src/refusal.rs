//! A refusal of `GET /v1/authorize`, sealed for a proxy that cannot pass it
//! on itself. nginx `auth_request` hands the client only a 2xx, 401 or 403
//! of its auth request, without the body (anything else becomes a 500), so
//! the gate answers such a proxy 401 with the whole refusal sealed in one
//! header, and the proxy's `error_page` hands the seal back to get the
//! refusal answered as it was: the 402 with every challenge, its JSON body
//! and typed reason, a 503 with its `Retry-After`.
//!
//! Invariants:
//! - a seal opens only under the secret that made it (or the previous one
//!   inside its overlap), before its expiry, with its MAC intact;
//! - what opens is a refusal: a status of 400 to 599, the headers a client
//!   reads ([`SEALED_HEADERS`]) with visible-ASCII values, a UTF-8 body.
//!   No seal can let a request through;
//! - bounded: a seal is at most [`MAX_SEALED`] bytes; a refusal that would
//!   not fit is not sealed (the proxy then fails closed);
//! - the MAC is labelled ([`LABEL`]), so it is never a challenge id.
//!
//! The content is what the client gets anyway: it is authenticated, not
//! encrypted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::mpp::Secrets;

/// The MAC label of a sealed refusal.
pub const LABEL: &str = "settlegate sealed refusal v1";

/// The longest seal: it travels in one response header and one request
/// header (the gate reads at most 16 KiB of headers).
pub const MAX_SEALED: usize = 12 * 1024;

/// The headers of a refusal that are sealed with it (lower case): the
/// challenges, when to retry, how to cache and read the body.
pub const SEALED_HEADERS: &[&str] = &["www-authenticate", "retry-after", "cache-control", "content-type"];

/// How many header lines a refusal may carry.
const MAX_HEADER_LINES: usize = 16;

const PREFIX: &str = "v1.";

/// A refusal as the client gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// `(lower-case name, value)`, in order; only [`SEALED_HEADERS`].
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The sealed form: the refusal and its expiry (Unix seconds).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    expires: i64,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Sealed {
    fn refusal(self) -> Refusal {
        Refusal {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }
}

/// Why a refusal is not sealed, or a seal does not open.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefusalError {
    #[error("a sealed refusal must have a status of 400 to 599, got {0}")]
    NotARefusal(u16),
    #[error("a sealed refusal carries only {SEALED_HEADERS:?}, in visible ASCII, at most {MAX_HEADER_LINES} lines")]
    Header,
    #[error("the sealed refusal would be longer than {MAX_SEALED} bytes")]
    TooLong,
    #[error("the sealed refusal is not one this service sealed (malformed or altered)")]
    Forged,
    #[error("the sealed refusal has expired")]
    Expired,
}

fn check(r: &Refusal) -> Result<(), RefusalError> {
    if !(400..=599).contains(&r.status) {
        return Err(RefusalError::NotARefusal(r.status));
    }
    let header_ok = |(name, value): &(String, String)| {
        SEALED_HEADERS.contains(&name.as_str()) && value.bytes().all(|b| (b' '..=b'~').contains(&b))
    };
    if r.headers.len() > MAX_HEADER_LINES || !r.headers.iter().all(header_ok) {
        return Err(RefusalError::Header);
    }
    Ok(())
}

/// `refusal`, sealed under the current secret until `expires`.
pub fn seal(secrets: &Secrets, refusal: &Refusal, expires: OffsetDateTime) -> Result<String, RefusalError> {
    check(refusal)?;
    let sealed = Sealed {
        expires: expires.unix_timestamp(),
        status: refusal.status,
        headers: refusal.headers.clone(),
        body: refusal.body.clone(),
    };
    // unwrap: strings and numbers always serialise.
    let payload = B64.encode(serde_json::to_vec(&sealed).unwrap());
    let mac = B64.encode(secrets.mac(LABEL, payload.as_bytes()));
    let out = format!("{PREFIX}{payload}.{mac}");
    if out.len() > MAX_SEALED {
        return Err(RefusalError::TooLong);
    }
    Ok(out)
}

/// The refusal sealed in `sealed`, if this service sealed it and it has
/// not expired at `now`.
pub fn open(secrets: &Secrets, sealed: &str, now: OffsetDateTime) -> Result<Refusal, RefusalError> {
    if sealed.len() > MAX_SEALED {
        return Err(RefusalError::TooLong);
    }
    let (payload, mac) = sealed
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .ok_or(RefusalError::Forged)?;
    // Strict base64url without padding: one seal has one spelling.
    let mac = B64.decode(mac).map_err(|_| RefusalError::Forged)?;
    if mac.len() != 32 || !secrets.mac_verifies(LABEL, payload.as_bytes(), &mac, now) {
        return Err(RefusalError::Forged);
    }
    let bytes = B64.decode(payload).map_err(|_| RefusalError::Forged)?;
    let sealed: Sealed = serde_json::from_slice(&bytes).map_err(|_| RefusalError::Forged)?;
    if now.unix_timestamp() >= sealed.expires {
        return Err(RefusalError::Expired);
    }
    let refusal = sealed.refusal();
    check(&refusal)?;
    Ok(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn secrets(s: &str) -> Secrets {
        Secrets::new(s.as_bytes().to_vec(), None).unwrap()
    }

    fn refusal() -> Refusal {
        Refusal {
            status: 402,
            headers: vec![
                ("content-type".into(), "application/problem+json".into()),
                ("www-authenticate".into(), r#"Tempo realm="Tempo API""#.into()),
                ("www-authenticate".into(), r#"Payment id="x", intent="charge""#.into()),
            ],
            body: r#"{"code":"REPLAYED","detail":"déjà"}"#.into(),
        }
    }

    const A: &str = "a-test-secret-0123456789abcdef-0123456789";
    const B: &str = "b-test-secret-0123456789abcdef-0123456789";

    #[test]
    fn a_seal_opens_to_the_same_refusal_under_its_secret_before_it_expires() {
        let (k, now) = (secrets(A), OffsetDateTime::now_utc());
        let s = seal(&k, &refusal(), now + Duration::seconds(60)).unwrap();
        assert!(s.starts_with("v1.") && s.bytes().all(|b| b.is_ascii_graphic()), "{s}");
        assert_eq!(open(&k, &s, now).unwrap(), refusal());
        assert_eq!(open(&k, &s, now + Duration::seconds(59)).unwrap(), refusal());
        assert_eq!(open(&k, &s, now + Duration::seconds(60)), Err(RefusalError::Expired));
        // another secret, or the previous one past its overlap: forged
        assert_eq!(open(&secrets(B), &s, now), Err(RefusalError::Forged));
        let rotated = Secrets::new(B.into(), Some((A.into(), now + Duration::seconds(10)))).unwrap();
        assert_eq!(open(&rotated, &s, now).unwrap(), refusal());
        assert_eq!(
            open(&rotated, &s, now + Duration::seconds(10)),
            Err(RefusalError::Forged)
        );
    }

    #[test]
    fn an_altered_or_respelt_seal_does_not_open() {
        let (k, now) = (secrets(A), OffsetDateTime::now_utc());
        let s = seal(&k, &refusal(), now + Duration::seconds(60)).unwrap();
        let (payload, mac) = s["v1.".len()..].split_once('.').unwrap();
        let mut flipped = s.clone().into_bytes();
        let i = 3 + payload.len() / 2;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        // A payload the MAC covers but whose refusal would let a request
        // through: a 200, sealed with the right key by hand.
        let r = refusal();
        let mut ok = serde_json::to_value(Sealed {
            expires: (now + Duration::seconds(60)).unix_timestamp(),
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
        .unwrap();
        ok["status"] = 200.into();
        let ok_payload = B64.encode(serde_json::to_vec(&ok).unwrap());
        let ok_mac = B64.encode(k.mac(LABEL, ok_payload.as_bytes()));
        // the same MAC under a challenge-id input: not this label
        let unlabelled = {
            use hmac::{Hmac, KeyInit, Mac};
            let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(A.as_bytes()).unwrap();
            m.update(payload.as_bytes());
            B64.encode(m.finalize().into_bytes())
        };
        for (bad, why) in [
            (flipped, RefusalError::Forged),
            (format!("v2.{payload}.{mac}"), RefusalError::Forged),
            (format!("v1.{payload}.{mac}="), RefusalError::Forged),
            (format!("v1.{payload}={mac}"), RefusalError::Forged),
            (format!("v1.{payload}"), RefusalError::Forged),
            (format!("v1.{payload}.{unlabelled}"), RefusalError::Forged),
            (format!("v1.{payload}.{}", &mac[..20]), RefusalError::Forged),
            (format!("v1.{ok_payload}.{ok_mac}"), RefusalError::NotARefusal(200)),
            (String::new(), RefusalError::Forged),
            ("v1.".repeat(5000), RefusalError::TooLong),
        ] {
            assert_eq!(open(&k, &bad, now), Err(why), "{}", &bad[..bad.len().min(80)]);
        }
    }

    #[test]
    fn only_refusals_with_client_headers_are_sealed() {
        let (k, later) = (secrets(A), OffsetDateTime::now_utc() + Duration::seconds(60));
        for status in [200, 204, 302, 399, 600] {
            let r = Refusal { status, ..refusal() };
            assert_eq!(seal(&k, &r, later), Err(RefusalError::NotARefusal(status)));
        }
        for (name, value) in [
            ("x-settlement-payer", "0xabc"),
            ("set-cookie", "a=b"),
            ("WWW-Authenticate", "Tempo"),
            ("www-authenticate", "Tempo\r\nX-Evil: 1"),
            ("retry-after", "1\n"),
        ] {
            let mut r = refusal();
            r.headers.push((name.into(), value.into()));
            assert_eq!(seal(&k, &r, later), Err(RefusalError::Header), "{name}");
        }
        let many = Refusal {
            headers: vec![("retry-after".into(), "1".into()); 17],
            ..refusal()
        };
        assert_eq!(seal(&k, &many, later), Err(RefusalError::Header));
        let long = Refusal {
            body: "x".repeat(MAX_SEALED),
            ..refusal()
        };
        assert_eq!(seal(&k, &long, later), Err(RefusalError::TooLong));
        for status in [400, 401, 402, 403, 410, 429, 503, 599] {
            let r = Refusal { status, ..refusal() };
            assert!(seal(&k, &r, later).is_ok(), "{status}");
        }
    }
}
