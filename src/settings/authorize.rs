//! `[authorize]`: whom `/v1/authorize` believes about the original request
//! (the proxies), and by which header pair.

use ipnet::IpNet;

use super::SettingsError;
use super::raw::RawAuthorize;
use super::values::parse_nets;

/// Which header pair a reverse proxy names the original request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-Method` + `X-Forwarded-Uri` (Caddy, Traefik).
    XForwarded,
    /// `X-Original-Method` + `X-Original-URI` (nginx `auth_request`).
    XOriginal,
}

impl ForwardedHeaders {
    /// (method, URI) header names of this pair.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            ForwardedHeaders::XForwarded => ("x-forwarded-method", "x-forwarded-uri"),
            ForwardedHeaders::XOriginal => ("x-original-method", "x-original-uri"),
        }
    }

    /// The other pair, whose presence makes a request ambiguous.
    pub fn other(self) -> Self {
        match self {
            ForwardedHeaders::XForwarded => ForwardedHeaders::XOriginal,
            ForwardedHeaders::XOriginal => ForwardedHeaders::XForwarded,
        }
    }
}

#[derive(Debug)]
pub(super) struct Authorize {
    pub trusted_proxies: Vec<IpNet>,
    pub forwarded_headers: ForwardedHeaders,
}

pub(super) fn validate(raw: RawAuthorize) -> Result<Authorize, SettingsError> {
    let trusted_proxies = parse_nets("authorize.trusted_proxies", &raw.trusted_proxies)?;
    let forwarded_headers = match raw.forwarded_headers.as_str() {
        "x-forwarded" => ForwardedHeaders::XForwarded,
        "x-original" => ForwardedHeaders::XOriginal,
        other => {
            return Err(SettingsError::invalid(
                "authorize",
                format!(
                    "authorize.forwarded_headers must be \"x-forwarded\" or \"x-original\", got {}",
                    settlegate_rules::primitives::quote_bounded(other, 40)
                ),
            ));
        }
    };
    Ok(Authorize {
        trusted_proxies,
        forwarded_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_pair_is_one_of_two_and_proxies_are_networks() {
        let raw = |proxies: &[&str], pair: &str| RawAuthorize {
            trusted_proxies: proxies.iter().map(|p| p.to_string()).collect(),
            forwarded_headers: pair.to_owned(),
        };
        let a = validate(raw(&["127.0.0.1", " ::1 ", ""], "x-original")).unwrap();
        assert_eq!(a.forwarded_headers, ForwardedHeaders::XOriginal);
        assert_eq!(a.trusted_proxies.len(), 2);
        assert_eq!(a.forwarded_headers.other().names().0, "x-forwarded-method");
        let e = validate(raw(&[], "forwarded")).unwrap_err();
        assert!(e.to_string().starts_with("authorize.forwarded_headers must be"), "{e}");
        let e = validate(raw(&["proxy.internal"], "x-forwarded")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("authorize.trusted_proxies: \"proxy.internal\""),
            "{e}"
        );
    }
}
