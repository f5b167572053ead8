//! What of an endpoint's URL may leave the process: its name or
//! `scheme://host[:port]`, and a node's words with every secret part of
//! the URL scrubbed out ([`Redactor`]).

use url::Url;

/// Scrubs what a node says of every part of its endpoint's URL that may
/// be secret: user and password, each query value, each path segment and,
/// unless hosts are exposed, the host. A node's error text (a JSON-RPC
/// message, a garbage body) often quotes the URL it was called at; it goes
/// into log lines and errors only through [`Redactor::scrub`].
#[derive(Debug, Default)]
pub struct Redactor {
    /// Lower-case, longest first.
    secrets: Vec<String>,
}

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// The most of a node's text an error keeps, escaped, after scrubbing.
const NODE_TEXT_CHARS: usize = 200;

impl Redactor {
    pub fn for_url(u: &Url, expose_host: bool) -> Self {
        let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let mut parts: Vec<String> = vec![u.username().to_owned(), u.password().unwrap_or("").to_owned()];
        if let Some(segments) = u.path_segments() {
            parts.extend(segments.map(str::to_owned));
        }
        if let Some(q) = u.query() {
            for pair in q.split('&') {
                parts.push(pair.split_once('=').map_or(pair, |(_, v)| v).to_owned());
            }
        }
        parts.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
        if !expose_host && let Some(host) = u.host_str() {
            parts.push(host.to_owned());
        }
        let mut secrets: Vec<String> = parts
            .iter()
            .flat_map(|p| [p.clone(), decoded(p)])
            .filter(|p| !p.is_empty())
            .map(|p| p.to_ascii_lowercase())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret (any ASCII case) replaced by
    /// [`REDACTED`], then quoted and cut to [`NODE_TEXT_CHARS`] escaped
    /// characters: the whole text is scrubbed before it is cut, so a cut
    /// never leaves a secret's beginning behind.
    pub fn scrub(&self, text: &str) -> String {
        let lower = text.to_ascii_lowercase();
        let mut hits: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            for (at, _) in lower.match_indices(secret.as_str()) {
                hits.push((at, at + secret.len()));
            }
        }
        hits.sort();
        let mut out = String::with_capacity(text.len().min(4 * NODE_TEXT_CHARS));
        let mut from = 0;
        for (start, end) in hits {
            if end <= from {
                continue;
            }
            if start > from {
                out.push_str(&text[from..start]);
                out.push_str(REDACTED);
            } else if !out.ends_with(REDACTED) {
                out.push_str(REDACTED);
            }
            from = end;
        }
        out.push_str(&text[from..]);
        settlegate_rules::primitives::quote_bounded(&out, NODE_TEXT_CHARS)
    }
}

/// How an endpoint is named wherever it leaves the process (`/readyz`,
/// metric labels, spans, logs) unless the operator opts in to its host:
/// whoever reaches the port must not learn the provider or its address.
pub fn endpoint_name(index: usize) -> String {
    format!("rpc{index}")
}

/// `scheme://host[:port]`: the most of an RPC URL anything may show (the
/// boot's configuration errors, and labels with `rpc.expose_endpoint_hosts`).
pub fn endpoint_label(u: &Url) -> String {
    format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")) + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_never_show_a_url_path() {
        let u = Url::parse("https://user:pw@rpc.example.com:8443/v1/SECRETKEY?x=1").unwrap();
        assert_eq!(endpoint_label(&u), "https://rpc.example.com:8443");
    }
}
