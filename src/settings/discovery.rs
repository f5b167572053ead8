//! `[discovery]`: what the discovery documents say about the paid API
//! beyond its routes and prices (which come from the genome): a title, a
//! description, categories and links. Presentation, not money policy, so
//! it is configuration rather than signed genome: changing a sentence
//! needs no new signature, and nothing here can change a price.
//!
//! Bounded and checked like any input the service repeats to the world: a
//! title of one line, categories in the extension's vocabulary form
//! (lower-case letters, digits, hyphens; at most five, as registries
//! keep), links an absolute http(s) URL or a path on the paid API.

use url::Url;

use super::SettingsError;
use super::raw::RawDiscovery;

const SECTION: &str = "discovery";
const MAX_TITLE: usize = 128;
const MAX_DESCRIPTION: usize = 2048;
const MAX_CATEGORIES: usize = 5;
const MAX_CATEGORY: usize = 32;
const MAX_LINK: usize = 2048;

/// The discovery documents' service information; `None`/empty: not said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// `info.title` and the `llms.txt` heading; `None`: the genome's realm.
    pub title: Option<String>,
    pub description: Option<String>,
    pub categories: Vec<String>,
    /// `x-service-info.docs.homepage`.
    pub homepage: Option<String>,
    /// `x-service-info.docs.llms`: where the proxy publishes `llms.txt`.
    pub llms: Option<String>,
}

pub(super) fn validate(raw: RawDiscovery) -> Result<DiscoverySettings, SettingsError> {
    let refuse = |reason: String| SettingsError::invalid(SECTION, reason);
    let title = non_empty(raw.title);
    if let Some(t) = &title
        && (t.chars().count() > MAX_TITLE || t.chars().any(char::is_control))
    {
        return Err(refuse(format!(
            "discovery.title must be one line of at most {MAX_TITLE} characters"
        )));
    }
    let description = non_empty(raw.description);
    if let Some(d) = &description
        && (d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err(refuse(format!(
            "discovery.description must be at most {MAX_DESCRIPTION} characters, without control characters but newlines"
        )));
    }
    let mut categories: Vec<String> = Vec::new();
    for c in raw.categories.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        let ok = c.len() <= MAX_CATEGORY
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(refuse(format!(
                "discovery.categories: {c:?} must be 1 to {MAX_CATEGORY} lower-case letters, digits and hyphens \
                 (e.g. data, search, developer-tools)"
            )));
        }
        if categories.iter().any(|k| k == c) {
            return Err(refuse(format!("discovery.categories lists {c:?} twice")));
        }
        categories.push(c.to_owned());
    }
    if categories.len() > MAX_CATEGORIES {
        return Err(refuse(format!(
            "discovery.categories lists {} categories; at most {MAX_CATEGORIES}",
            categories.len()
        )));
    }
    Ok(DiscoverySettings {
        title,
        description,
        categories,
        homepage: link("homepage", raw.homepage)?,
        llms: link("llms", raw.llms)?,
    })
}

fn non_empty(s: String) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// An absolute http(s) URL, or a path on the paid API (`/llms.txt`):
/// visible ASCII, at most [`MAX_LINK`] bytes. Empty: none.
fn link(key: &str, raw: String) -> Result<Option<String>, SettingsError> {
    let Some(v) = non_empty(raw) else {
        return Ok(None);
    };
    let visible = v.len() <= MAX_LINK && v.bytes().all(|b| b.is_ascii_graphic());
    let ok = visible
        && if v.starts_with('/') {
            !v.starts_with("//")
        } else {
            Url::parse(&v).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        };
    if !ok {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "discovery.{key}: {v:?} must be an http(s) URL or a path starting with / \
                 (visible ASCII, at most {MAX_LINK} bytes)"
            ),
        ));
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawDiscovery {
        RawDiscovery {
            title: String::new(),
            description: String::new(),
            categories: Vec::new(),
            homepage: String::new(),
            llms: "/llms.txt".into(),
        }
    }

    #[test]
    fn the_defaults_say_only_where_llms_txt_is() {
        assert_eq!(
            validate(raw()).unwrap(),
            DiscoverySettings {
                llms: Some("/llms.txt".into()),
                ..DiscoverySettings::default()
            }
        );
    }

    #[test]
    fn values_are_bounded_and_checked() {
        let ok = validate(RawDiscovery {
            title: " Reports API ".into(),
            description: "Monthly reports.\nPaid per request.".into(),
            categories: vec!["data".into(), " developer-tools".into(), "".into()],
            homepage: "https://reports.example/docs".into(),
            llms: "".into(),
        })
        .unwrap();
        assert_eq!(ok.title.as_deref(), Some("Reports API"));
        assert_eq!(ok.categories, ["data", "developer-tools"]);
        assert_eq!(ok.llms, None);
        let refused = |f: fn(&mut RawDiscovery)| {
            let mut r = raw();
            f(&mut r);
            validate(r).unwrap_err().to_string()
        };
        assert!(refused(|r| r.title = "a\nb".into()).starts_with("discovery.title"));
        assert!(refused(|r| r.title = "t".repeat(129)).starts_with("discovery.title"));
        assert!(refused(|r| r.description = "a\u{7}".into()).starts_with("discovery.description"));
        assert!(refused(|r| r.description = "d".repeat(2049)).starts_with("discovery.description"));
        for bad in ["Data", "data tools", "data_tools", "é", &"c".repeat(33)] {
            let e = validate(RawDiscovery {
                categories: vec![bad.to_owned()],
                ..raw()
            })
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("discovery.categories"), "{bad}: {e}");
        }
        assert!(refused(|r| r.categories = vec!["data".into(), "data".into()]).contains("twice"));
        assert!(
            refused(|r| r.categories = ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec()).contains("at most 5")
        );
        for bad in [
            "ftp://x/y",
            "javascript:alert(1)",
            "//host/x",
            "llms.txt",
            "/a b",
            "https://",
            "/é",
        ] {
            let e = validate(RawDiscovery {
                homepage: bad.to_owned(),
                ..raw()
            })
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("discovery.homepage"), "{bad}: {e}");
        }
        assert!(refused(|r| r.llms = "llms.txt".into()).starts_with("discovery.llms"));
    }
}
