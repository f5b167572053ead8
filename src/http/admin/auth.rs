//! Who may call the admin API: `Authorization: Bearer <token>` whose
//! SHA-256 is one of `admin.token_digests`.
//!
//! The presented token is hashed and compared with every digest in
//! constant time (`subtle`), all of them, whatever matched before, so
//! neither a match nor its position shows in the timing. A missing,
//! malformed or unknown token is one 401 with `WWW-Authenticate: Bearer`;
//! no token or digest is ever logged or echoed.

use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::http::problem::ApiError;

/// Longest token accepted (longer is malformed, not hashed).
const MAX_TOKEN: usize = 512;

/// The accepted digests.
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    pub fn new(digests: Vec<[u8; 32]>) -> Self {
        Tokens { digests }
    }

    /// Admits a request whose bearer token hashes to a configured digest.
    pub fn admit(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = bearer(headers)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = Choice::from(0);
        for d in &self.digests {
            found |= d.ct_eq(&digest);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid".into()))
        }
    }
}

/// The token of the one `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let malformed = || {
        ApiError::Unauthorized(
            "the admin API needs one Authorization: Bearer <token> header, the token 1 to 512 visible ASCII \
             characters"
                .into(),
        )
    };
    let mut values = headers.get_all(AUTHORIZATION);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(malformed());
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed());
    }
    Ok(token)
}

/// A fresh token (`sga_` and 43 base64url characters: 256 random bits) and
/// its `sha256:<hex>` digest, as `admin.token_digests` takes it.
pub fn mint() -> Result<(String, String), getrandom::Error> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    let token = format!("sga_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b));
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
    Ok((token, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_minted_token_is_admitted_by_its_digest_only() {
        let (token, digest) = mint().unwrap();
        let (other, other_digest) = mint().unwrap();
        assert_ne!(token, other);
        assert!(token.starts_with("sga_") && token.len() == 47, "{token}");
        let parse = |d: &str| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(d.strip_prefix("sha256:").unwrap(), &mut b).unwrap();
            b
        };
        let tokens = Tokens::new(vec![parse(&other_digest), parse(&digest)]);
        assert!(tokens.admit(&headers(&[&format!("Bearer {token}")])).is_ok());
        assert!(tokens.admit(&headers(&[&format!("bearer {other}")])).is_ok());
        let only_other = Tokens::new(vec![parse(&other_digest)]);
        let e = only_other.admit(&headers(&[&format!("Bearer {token}")])).unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
    }

    #[test]
    fn a_malformed_header_is_refused_without_echoing_it() {
        let (token, digest) = mint().unwrap();
        let mut d = [0u8; 32];
        hex::decode_to_slice(digest.strip_prefix("sha256:").unwrap(), &mut d).unwrap();
        let tokens = Tokens::new(vec![d]);
        for h in [
            vec![],
            vec![token.as_str()],
            vec!["Bearer"],
            vec!["Bearer "],
            vec!["Basic dXNlcjpwYXNz"],
        ] {
            let e = tokens.admit(&headers(&h)).unwrap_err();
            assert!(e.to_string().contains("Bearer <token>"), "{h:?}: {e}");
        }
        let twice = format!("Bearer {token}");
        assert!(tokens.admit(&headers(&[&twice, &twice])).is_err(), "two headers");
        let spaced = format!("Bearer  {token}");
        assert!(tokens.admit(&headers(&[&spaced])).is_err());
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        assert!(tokens.admit(&headers(&[&long])).is_err());
        let e = tokens.admit(&headers(&[&format!("Bearer {token}x")])).unwrap_err();
        assert!(!e.to_string().contains(&token));
    }
}
