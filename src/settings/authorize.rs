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
