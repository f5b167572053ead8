//! Which MPP challenge secrets are refused. The secret is the HMAC key of
//! every challenge id: whoever can guess it mints challenges this service
//! honours. The rule, on the secret's bytes (the SDKs use the configured
//! text as the key, not decoded):
//!
//! - at least [`MIN_SECRET_LEN`] bytes (as mppx and mpp-rs; the SDKs'
//!   documented example keys, `my-secret` and `my-server-secret`, fail here);
//! - at least [`MIN_DISTINCT_BYTES`] distinct byte values: `aaaa…`,
//!   `0101…`, a secret typed with four keys;
//! - not a repetition of a unit at most half its length: `abcabc…`,
//!   `changeme-changeme-…`, `0123456789` repeated.
//!
//! None of these refuses a random secret in practice: 32 random characters
//! of the smallest alphabet anyone uses, decimal digits, show fewer than six
//! distinct values with probability 6e-8 (hex: 3e-13; `openssl rand -base64
//! 32`: 3e-29), and repeat a unit with probability below 2e-16. The random
//! secret a process makes without configuration (64 hex digits) passes the
//! same rule. Entropy beyond these patterns cannot be judged from one
//! sample; the README says how to make a secret.

/// Secrets shorter than this are refused (as mppx and mpp-rs do).
pub const MIN_SECRET_LEN: usize = 32;
/// Secrets with fewer distinct byte values than this are refused.
pub const MIN_DISTINCT_BYTES: usize = 6;

/// Why a secret is refused, as a predicate ("the secret …"). Never quotes
/// the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    #[error("must be at least {MIN_SECRET_LEN} bytes, got {0} (make one with `openssl rand -base64 32`)")]
    Short(usize),
    #[error(
        "has only {0} distinct byte values, at least {MIN_DISTINCT_BYTES} needed: a pattern, not a random secret \
         (make one with `openssl rand -base64 32`)"
    )]
    FewDistinct(usize),
    #[error("repeats a unit of {0} bytes: a pattern, not a random secret (make one with `openssl rand -base64 32`)")]
    Repeats(usize),
}

/// Checks `secret` against the rule in the module docs.
pub fn check(secret: &[u8]) -> Result<(), WeakSecret> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(WeakSecret::Short(secret.len()));
    }
    let mut seen = [false; 256];
    for &b in secret {
        seen[b as usize] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct < MIN_DISTINCT_BYTES {
        return Err(WeakSecret::FewDistinct(distinct));
    }
    let period = smallest_period(secret);
    if period <= secret.len() / 2 {
        return Err(WeakSecret::Repeats(period));
    }
    Ok(())
}

/// The smallest `p` with `s[i] == s[i - p]` for every `i >= p` (`s` is a
/// prefix of its first `p` bytes repeated), from the prefix function:
/// linear, whatever the secret's length.
fn smallest_period(s: &[u8]) -> usize {
    let mut border = vec![0usize; s.len()];
    let mut k = 0;
    for i in 1..s.len() {
        while k > 0 && s[i] != s[k] {
            k = border[k - 1];
        }
        if s[i] == s[k] {
            k += 1;
        }
        border[i] = k;
    }
    s.len() - border.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_looking_secrets_of_every_usual_alphabet_pass() {
        for s in [
            "test-payment-secret-0123456789abcdef-not-for-production",
            "payment-secret-from-a-file-Hh47vvBq2mXw0Lp",
            // openssl rand -base64 32, -hex 16, and 40 digits of pi
            "q3R0cE0uV2h5SXNUaGlzQVNlY3JldD8xMjM0NTY3OA==",
            "9f86d081884c7d659a2feaa0c55ad015",
            "3141592653589793238462643383279502884197",
        ] {
            assert_eq!(check(s.as_bytes()), Ok(()), "{s}");
        }
        // A unit repeated less than twice over is no pattern.
        let almost = format!("{}{}", "k7#Qz9!pW2", "k7#Qz9!pW2x".repeat(2));
        assert_eq!(check(almost.as_bytes()), Ok(()));
    }

    #[test]
    fn short_uniform_and_repeating_secrets_are_refused_with_their_reason() {
        assert_eq!(check(b"my-server-secret"), Err(WeakSecret::Short(16)));
        assert_eq!(check(&[b'a'; 31]), Err(WeakSecret::Short(31)));
        assert_eq!(check(&[b'a'; 64]), Err(WeakSecret::FewDistinct(1)));
        assert_eq!(check(&[0u8; 32]), Err(WeakSecret::FewDistinct(1)));
        assert_eq!(check("01".repeat(20).as_bytes()), Err(WeakSecret::FewDistinct(2)));
        let mut almost_uniform = vec![b'x'; 40];
        almost_uniform[17] = b'y';
        assert_eq!(check(&almost_uniform), Err(WeakSecret::FewDistinct(2)));
        assert_eq!(
            check(b"abcdeabcdeaabbccddeeeedcbaabcdeedcba"),
            Err(WeakSecret::FewDistinct(5))
        );
        for (s, unit) in [
            ("changeme-".repeat(4), 9),
            ("0123456789abcdef".repeat(2), 16),
            ("12345678901234567890123456789012345".to_owned(), 10),
            (format!("{}passw", "password".repeat(4)), 8),
        ] {
            assert_eq!(check(s.as_bytes()), Err(WeakSecret::Repeats(unit)), "{s}");
        }
        // The message names the rule, never the secret.
        let m = WeakSecret::Repeats(9).to_string();
        assert!(m.starts_with("repeats a unit of 9 bytes"), "{m}");
        assert!(!m.contains("changeme"));
    }

    #[test]
    fn the_period_is_the_smallest_one() {
        assert_eq!(smallest_period(b"abcabcab"), 3);
        assert_eq!(smallest_period(b"aaaa"), 1);
        assert_eq!(smallest_period(b"abcd"), 4);
        assert_eq!(smallest_period(b"abaab"), 3);
        assert_eq!(smallest_period(b""), 0);
    }
}
