//! The priced routes of a policy, as documents for agents list them (the
//! MPP discovery extension's OpenAPI document, `llms.txt`).
//!
//! Each price rule becomes one path template and one route per method it
//! names (`*`: GET, POST, PUT, PATCH and DELETE; HEAD is priced as GET):
//! - `GET /reports/summary` is `/reports/summary`;
//! - `GET /reports/*` is `/reports/{path}` (it also prices `/reports`);
//! - `GET /rep*` is `/rep{suffix}`;
//!
//! then the default price covers every other path, `/{path}`.
//!
//! The price of a route is what [`SettlementPolicy::price_for`] gives a
//! request for its template itself (`GET /reports/{path}`), so a rule
//! shadowed by an earlier one shows the earlier one's price, as its 402
//! would. The first rule to give a method and template a route keeps it
//! (a document has one operation per path and method). A literal `{` or
//! `}` in a path is percent-encoded in the template so that it cannot read
//! as a parameter.

use crate::policy::{Cover, Price, SettlementPolicy};

/// The methods a `*` rule (and the default price) stand for.
pub const ANY_METHOD: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The parameter of a templated path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `{path}`: one or more segments below a directory.
    Rest,
    /// `{suffix}`: any characters after a prefix.
    Suffix,
}

impl Param {
    pub fn name(self) -> &'static str {
        match self {
            Param::Rest => "path",
            Param::Suffix => "suffix",
        }
    }
}

/// One priced method and path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedRoute {
    /// Upper case, as in the rule.
    pub method: String,
    /// The path template (`/reports/{path}`).
    pub path: String,
    pub param: Option<Param>,
    /// The rule as written in the genome; `None` for the default price.
    pub rule: Option<String>,
    /// For [`Param::Rest`]: the directory, priced too (`/reports`).
    pub also: Option<String>,
    pub price: Price,
}

/// Every priced route of `policy`, rules first in their order, then the
/// default price's.
pub fn routes(policy: &SettlementPolicy) -> Vec<PricedRoute> {
    let mut out: Vec<PricedRoute> = Vec::new();
    let rules = policy
        .prices
        .iter()
        .map(|p| (Some(p.resource.as_str()), p.resource.method(), p.resource.cover()));
    let default = std::iter::once((None, None, Cover::Under("")));
    for (rule, method, cover) in rules.chain(default) {
        let (literal, param) = match cover {
            Cover::Exact(p) => (p, None),
            Cover::Under(dir) => (dir, Some(Param::Rest)),
            Cover::Prefix(prefix) => (prefix, Some(Param::Suffix)),
        };
        let placeholder = match param {
            None => String::new(),
            Some(Param::Rest) => "/{path}".to_owned(),
            Some(Param::Suffix) => "{suffix}".to_owned(),
        };
        let path = format!("{}{placeholder}", escape_braces(literal));
        let methods: Vec<&str> = match method {
            Some(m) => vec![m],
            None => ANY_METHOD.to_vec(),
        };
        for m in methods {
            if out.iter().any(|r| r.method == m && r.path == path) {
                continue;
            }
            out.push(PricedRoute {
                method: m.to_owned(),
                price: policy.price_for(Some(&format!("{m} {literal}{placeholder}"))),
                path: path.clone(),
                param,
                rule: rule.map(str::to_owned),
                also: (param == Some(Param::Rest) && !literal.is_empty()).then(|| escape_braces(literal)),
            });
        }
    }
    out
}

fn escape_braces(path: &str) -> String {
    path.replace('{', "%7B").replace('}', "%7D")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ASSET: &str = "0x20c0000000000000000000000000000000000001";

    fn policy(prices: serde_json::Value) -> SettlementPolicy {
        SettlementPolicy::from_value(Some(&json!({
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "assets": [ASSET],
            "default_price": {"asset": ASSET, "amount": "1000"},
            "prices": prices,
        })))
        .unwrap()
    }

    /// `(METHOD, template, amount)` of each route.
    fn listed(p: &SettlementPolicy) -> Vec<(String, String, String)> {
        routes(p)
            .into_iter()
            .map(|r| (r.method, r.path, r.price.amount.to_string()))
            .collect()
    }

    fn row(m: &str, p: &str, a: &str) -> (String, String, String) {
        (m.into(), p.into(), a.into())
    }

    #[test]
    fn every_rule_and_the_default_are_listed_with_their_price() {
        let p = policy(json!([
            {"resource": "GET /reports/summary", "amount": "5"},
            {"resource": "GET /reports/*", "amount": "2500"},
            {"resource": "POST /Upload*", "amount": "7"},
            {"resource": "HEAD /big", "amount": "9"},
        ]));
        let r = routes(&p);
        assert_eq!(
            listed(&p),
            [
                row("GET", "/reports/summary", "5"),
                row("GET", "/reports/{path}", "2500"),
                row("POST", "/upload{suffix}", "7"),
                row("HEAD", "/big", "9"),
                row("GET", "/{path}", "1000"),
                row("POST", "/{path}", "1000"),
                row("PUT", "/{path}", "1000"),
                row("PATCH", "/{path}", "1000"),
                row("DELETE", "/{path}", "1000"),
            ]
        );
        assert_eq!(r[1].param, Some(Param::Rest));
        assert_eq!(r[1].also.as_deref(), Some("/reports"));
        assert_eq!(r[1].rule.as_deref(), Some("GET /reports/*"));
        assert_eq!(r[2].param, Some(Param::Suffix));
        assert_eq!(r[2].also, None);
        assert_eq!((r[4].rule.as_deref(), r[4].also.as_deref()), (None, None));
        // each listed price is what a request on the route pays
        for (route, request, amount) in [
            (0, "GET /reports/summary", "5"),
            (1, "GET /reports/2024/q1", "2500"),
            (1, "GET /reports", "2500"),
            (2, "POST /uploads/x", "7"),
            (4, "GET /elsewhere", "1000"),
        ] {
            assert_eq!(r[route].price.amount.to_string(), amount);
            assert_eq!(p.price_for(Some(request)).amount.to_string(), amount, "{request}");
        }
    }

    #[test]
    fn a_star_rule_lists_each_method_and_the_first_rule_wins() {
        let p = policy(json!([
            {"resource": "* /a/*", "amount": "3"},
            // shadowed for GET by the rule above: the 402 says 3, so does the route
            {"resource": "GET /a/*", "amount": "4"},
            // shadowed by the wildcard, though listed under its own path
            {"resource": "GET /a/b", "amount": "6"},
            {"resource": "* /*", "amount": "8"},
        ]));
        assert_eq!(
            listed(&p),
            [
                row("GET", "/a/{path}", "3"),
                row("POST", "/a/{path}", "3"),
                row("PUT", "/a/{path}", "3"),
                row("PATCH", "/a/{path}", "3"),
                row("DELETE", "/a/{path}", "3"),
                row("GET", "/a/b", "3"),
                row("GET", "/{path}", "8"),
                row("POST", "/{path}", "8"),
                row("PUT", "/{path}", "8"),
                row("PATCH", "/{path}", "8"),
                row("DELETE", "/{path}", "8"),
            ]
        );
        assert_eq!(p.price_for(Some("GET /a/b")).amount.to_string(), "3");
    }

    #[test]
    fn an_earlier_exact_rule_does_not_price_a_later_wildcard() {
        let p = policy(json!([
            {"resource": "GET /a/x", "amount": "1"},
            {"resource": "GET /a/*", "amount": "2"},
        ]));
        assert_eq!(listed(&p)[..2], [row("GET", "/a/x", "1"), row("GET", "/a/{path}", "2")]);
    }

    #[test]
    fn braces_in_a_path_cannot_read_as_parameters() {
        let p = policy(json!([{"resource": "GET /a{b}/*", "amount": "2"}]));
        let r = &routes(&p)[0];
        assert_eq!(r.path, "/a%7Bb%7D/{path}");
        assert_eq!(r.also.as_deref(), Some("/a%7Bb%7D"));
        assert_eq!(r.price.amount.to_string(), "2");
    }

    #[test]
    fn no_rules_is_the_default_on_every_path() {
        let p = policy(json!([]));
        assert_eq!(listed(&p).len(), ANY_METHOD.len());
        assert!(routes(&p).iter().all(|r| r.path == "/{path}" && r.rule.is_none()));
    }
}
