//! `[cors]`: the origins a browser may call from (`*` alone, or exact
//! origins), and how long a preflight answer is kept.

use url::Url;

use super::SettingsError;
use super::raw::RawCors;

const SECTION: &str = "cors";

#[derive(Debug)]
pub(super) struct Cors {
    pub allowed_origins: Vec<String>,
    pub max_age_seconds: usize,
}

pub(super) fn validate(raw: RawCors) -> Result<Cors, SettingsError> {
    let allowed_origins = origins(&raw.allowed_origins)?;
    if raw.max_age_seconds > 86_400 {
        return Err(SettingsError::invalid(
            SECTION,
            format!(
                "cors.max_age_seconds must be at most 86400, got {}",
                raw.max_age_seconds
            ),
        ));
    }
    Ok(Cors {
        allowed_origins,
        max_age_seconds: raw.max_age_seconds,
    })
}

/// `https://app.example` (scheme, host, optional port; no path), or `*`.
fn origins(raw: &[String]) -> Result<Vec<String>, SettingsError> {
    let mut out = Vec::new();
    let listed: Vec<&str> = raw.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if listed.contains(&"*") && listed.len() > 1 {
        return Err(SettingsError::invalid(
            SECTION,
            "cors.allowed_origins: * allows every origin; list origins or give * alone",
        ));
    }
    for o in listed {
        if o == "*" {
            out.push(o.to_owned());
            continue;
        }
        let ok = Url::parse(o).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && u.username().is_empty()
                && !o.ends_with('/')
        });
        if !ok {
            return Err(SettingsError::invalid(
                SECTION,
                format!(
                    "cors.allowed_origins: {o:?} is not an origin such as https://app.example (scheme, host, port; no path), or *"
                ),
            ));
        }
        out.push(o.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(origins: &[&str], max_age_seconds: usize) -> Result<Cors, SettingsError> {
        validate(RawCors {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            max_age_seconds,
        })
    }

    #[test]
    fn origins_are_exact_or_a_lone_star() {
        let c = with(&["https://app.example", " http://localhost:3000 ", ""], 600).unwrap();
        assert_eq!(c.allowed_origins, ["https://app.example", "http://localhost:3000"]);
        assert_eq!(with(&["*"], 0).unwrap().allowed_origins, ["*"]);
        for bad in [
            &["*", "https://app.example"][..],
            &["https://app.example/"],
            &["https://app.example/path"],
            &["ftp://app.example"],
            &["app.example"],
        ] {
            let e = with(bad, 0).unwrap_err();
            assert!(e.to_string().starts_with("cors.allowed_origins: "), "{bad:?}: {e}");
        }
        let e = with(&[], 86_401).unwrap_err();
        assert!(
            e.to_string().contains("cors.max_age_seconds must be at most 86400"),
            "{e}"
        );
    }
}
