//! Layers, later wins: `config/default.toml` (compiled in), an optional file
//! given on the command line, then `SETTLEGATE_…` environment variables with
//! `__` between sections. Variables outside that namespace (OpenTelemetry's
//! standard `OTEL_*` ones and the seed's `TEMPO_RPC_URL`) are collected
//! apart, for the sections that fall back to them.

use std::collections::HashMap;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};

use super::SettingsError;
use super::raw::Raw;

const DEFAULTS: &str = include_str!("../../config/default.toml");

/// The settings whose `SETTLEGATE_*` variables are comma-separated lists.
const LIST_KEYS: [&str; 8] = [
    "trust.keys",
    "rpc.urls",
    "authorize.trusted_proxies",
    "callers.api_keys",
    "callers.trusted_proxies",
    "cors.allowed_origins",
    "discovery.categories",
    "admin.token_digests",
];

/// Variables read outside the `SETTLEGATE_` namespace.
fn outside_variable(k: &str) -> bool {
    k.starts_with("OTEL_") || k == "TEMPO_RPC_URL"
}

/// The document as written, and the variables outside our namespace. With
/// `env`, that environment instead of the process's (tests).
pub(super) fn layered(
    file: Option<&Path>,
    env: Option<HashMap<String, String>>,
) -> Result<(Raw, HashMap<String, String>), SettingsError> {
    let outside_env: HashMap<String, String> = match &env {
        Some(m) => m
            .iter()
            .filter(|(k, _)| outside_variable(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => std::env::vars().filter(|(k, _)| outside_variable(k)).collect(),
    };
    let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(SettingsError::NoSuchFile(path.to_owned()));
        }
        builder = builder.add_source(File::from(path).required(true));
    }
    // Two sources: config-rs splits lists only when it guesses types,
    // and its guess is lossy for strings (a secret of digits came back
    // as a float's spelling, "007" as "7", "TRUE" as "true"). So only
    // the list variables are guessed; every other value stays the
    // string it was until its field's type reads it.
    let env: HashMap<String, String> = match env {
        Some(env) => env,
        None => {
            let mut vars = HashMap::new();
            for (k, v) in std::env::vars_os() {
                let Some(k) = k
                    .to_str()
                    .filter(|k| k.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("SETTLEGATE_")))
                else {
                    continue;
                };
                let v = v.into_string().map_err(|_| SettingsError::NotUtf8(k.to_owned()))?;
                vars.insert(k.to_owned(), v);
            }
            vars
        }
    };
    // `SETTLEGATE_TRUST__KEYS` names `trust.keys`
    let is_list = |k: &str| {
        LIST_KEYS.iter().any(|l| {
            k.get(11..)
                .is_some_and(|rest| rest.eq_ignore_ascii_case(&l.replace('.', "__")))
        })
    };
    let (lists, scalars): (HashMap<_, _>, HashMap<_, _>) = env.into_iter().partition(|(k, _)| is_list(k));
    let variables = |parse: bool, source: HashMap<String, String>| {
        let e = Environment::with_prefix("SETTLEGATE")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(parse)
            .ignore_empty(true)
            .source(Some(source));
        if !parse {
            return e;
        }
        LIST_KEYS
            .iter()
            .fold(e.list_separator(","), |e, k| e.with_list_parse_key(k))
    };
    let raw: Raw = builder
        .add_source(variables(false, scalars))
        .add_source(variables(true, lists))
        .build()?
        .try_deserialize()?;
    Ok((raw, outside_env))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{env, key, load};
    use super::super::{RequestLog, Secret, Settings};
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn environment_overrides_defaults_with_double_underscore_sections() {
        let k = key(1);
        let s = load(&[
            ("SETTLEGATE_GENOME__PATH", "/tmp/g.json"),
            ("SETTLEGATE_TRUST__KEYS", &format!("{k},{}", key(2))),
            ("SETTLEGATE_RPC__URLS", "http://127.0.0.1:1,http://127.0.0.1:2"),
            ("SETTLEGATE_SERVER__LISTEN", "127.0.0.1:0"),
            ("SETTLEGATE_TRUST__MIN_THRESHOLD", "2"),
        ])
        .unwrap();
        assert_eq!(s.genome_path.as_deref(), Some(Path::new("/tmp/g.json")));
        assert_eq!(s.trusted_keys.len(), 2);
        assert_eq!(s.rpc_urls.len(), 2);
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.min_threshold, 2);
        assert_eq!(s.genome_reload_interval_seconds, 30);
        assert_eq!(s.coalescer_window, Duration::from_millis(250));
        assert_eq!(s.rpc_probe_interval, Some(Duration::from_secs(5)));
        assert_eq!(s.replay_cache_entries, 4096);
        assert_eq!(s.idempotency_retry_window, Duration::from_secs(60));
        assert_eq!(s.idempotency_max_retries, 3);
        assert_eq!(s.log_request_level, RequestLog::Info);
    }

    #[test]
    fn string_values_are_kept_as_written() {
        // config-rs's type guessing read these as numbers or booleans and
        // gave back another spelling: a secret of digits lost its entropy
        // to a float ("3.1415926535897933e34"), a prefix its zeros
        let digits = "31415926535897932384626433832795028";
        let s = load(&[
            ("SETTLEGATE_TRUST__KEYS", &key(1)),
            ("SETTLEGATE_PAYMENT__SECRET", digits),
            ("SETTLEGATE_REDIS__KEY_PREFIX", "007"),
            ("SETTLEGATE_GENOME__PATH", "1e3"),
            ("SETTLEGATE_RPC__URLS", "http://127.0.0.1:1"),
        ])
        .unwrap();
        assert_eq!(s.payment_secret.as_ref().map(Secret::expose), Some(digits));
        assert_eq!(s.redis_key_prefix, "007");
        assert_eq!(s.genome_path.as_deref(), Some(Path::new("1e3")));
        assert_eq!(s.rpc_urls.len(), 1);
        // numbers are still read as numbers, and a fraction is no timeout
        let with_key = |extra: (&str, &str)| load(&[("SETTLEGATE_TRUST__KEYS", &key(1)), extra]);
        assert_eq!(
            with_key(("SETTLEGATE_RPC__TIMEOUT_MS", "700")).unwrap().rpc_timeout,
            Duration::from_millis(700)
        );
        for bad in ["-3.0", "NaN", "1.5"] {
            assert!(with_key(("SETTLEGATE_RPC__TIMEOUT_MS", bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_config_files_load() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
            let path = entry.unwrap().path();
            let s = Settings::load_from(Some(&path), Some(env(&[("SETTLEGATE_TRUST__KEYS", &key(1))])));
            assert!(s.is_ok(), "{}: {:?}", path.display(), s.err());
        }
    }
}
