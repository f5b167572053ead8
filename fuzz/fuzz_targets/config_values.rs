//! Configuration values as the environment gives them, through
//! `settlegate::settings::Settings::load_from` (the compiled-in defaults,
//! then the variables). The input is up to eight records separated by
//! 0xFF bytes (never in UTF-8): a record's first byte picks a variable from
//! the keys `config/default.toml` documents (its `SETTLEGATE_…` names, the
//! `OTEL_…` and `TEMPO_RPC_URL` fallbacks, in order of appearance, and one
//! misspelt key), the rest is its value. Secret-carrying values get a
//! marker where their secret sits: a password in each URL's userinfo
//! (`rpc.urls`, `TEMPO_RPC_URL`, the OTLP endpoints, `redis.url`,
//! `ledger.database_url`), inside
//! the whole value (`payment.secret`, `payment.previous_secret`), after the
//! name of each `callers.api_keys` entry whose digest is not 64 hex digits
//! (perhaps a key pasted by mistake); markers are taken out of
//! every other value. Files: every `…_FILE` value is a path under a
//! directory that does not exist, so nothing is read.
//!
//! Nothing panics; no error message ever holds a marker; a misspelt key
//! is refused; and what loads is within the documented bounds (timeouts,
//! intervals, queue sizes, rates, key counts, secret lengths, the ledger,
//! webhooks and admin sections), with the redis and ledger URLs and the
//! payment secrets kept out of `Debug`.
#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use settlegate::settings::Settings;
use settlegate_rules::keys::PrivateKey;

/// In URL userinfo (shown neither in errors nor, for redis, anywhere) and
/// in API key digests.
const PW: &str = "fuzzpw";
/// Inside values that are secrets whole: never in an error, nor in `Debug`.
const SECRET: &str = "fuzzsecret";
/// No such directory: a `…_FILE` value is a path under it.
const NO_DIR: &str = "/nonexistent-settlegate-fuzz";
/// Not a key: loading with it set must fail.
const MISSPELT: &str = "SETTLEGATE_GENOME__PAHT";
const MAX_RECORDS: usize = 8;

static DEFAULTS: &str = include_str!("../../config/default.toml");

/// Every variable `config/default.toml` documents, in order of appearance:
/// the names its comments give, and `SETTLEGATE_<SECTION>__<KEY>` for each
/// key it sets or shows commented out.
static KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut keys: Vec<String> = Vec::new();
    let mut add = |k: String| {
        if !keys.contains(&k) {
            keys.push(k);
        }
    };
    let mut section = None;
    for line in DEFAULTS.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(s.to_ascii_uppercase());
            continue;
        }
        // variable names in the comments: maximal runs of [A-Z0-9_]
        for run in line.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')) {
            let run = run.trim_end_matches('_');
            let named = match run.strip_prefix("SETTLEGATE_") {
                Some(rest) => rest
                    .split_once("__")
                    .is_some_and(|(s, k)| !s.is_empty() && !k.is_empty()),
                None => run.starts_with("OTEL_") || run == "TEMPO_RPC_URL",
            };
            if named {
                add(run.to_owned());
            }
        }
        // `key = value`, set or commented out
        let body = line.trim_start_matches('#').trim_start();
        if let (Some(s), Some((k, _))) = (&section, body.split_once(" = "))
            && !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            add(format!("SETTLEGATE_{s}__{}", k.to_ascii_uppercase()));
        }
    }
    assert!(
        keys.len() >= 50,
        "config/default.toml documents only {} variables",
        keys.len()
    );
    assert!(
        !Path::new(NO_DIR).exists(),
        "{NO_DIR} exists: the *_FILE values would be read"
    );
    keys.push(MISSPELT.to_owned());
    keys
});

static TRUSTED_KEY: LazyLock<String> = LazyLock::new(|| PrivateKey::from_seed([1; 32]).public_key().to_spki_base64());

/// How a variable's secret is marked.
enum Secrecy {
    None,
    /// A password in the userinfo of each URL in it.
    UrlPassword(&'static str),
    /// The whole value.
    Whole,
    /// `name:<digest>` entries: what stands where a digest should.
    Digests,
}

fn secrecy(key: &str) -> Secrecy {
    match key {
        "SETTLEGATE_RPC__URLS"
        | "TEMPO_RPC_URL"
        | "SETTLEGATE_OTEL__ENDPOINT"
        | "OTEL_EXPORTER_OTLP_ENDPOINT"
        | "SETTLEGATE_OTEL__METRICS_ENDPOINT"
        | "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => Secrecy::UrlPassword(PW),
        "SETTLEGATE_REDIS__URL" | "SETTLEGATE_LEDGER__DATABASE_URL" => Secrecy::UrlPassword(SECRET),
        "SETTLEGATE_PAYMENT__SECRET" | "SETTLEGATE_PAYMENT__PREVIOUS_SECRET" => Secrecy::Whole,
        "SETTLEGATE_CALLERS__API_KEYS" => Secrecy::Digests,
        _ => Secrecy::None,
    }
}

/// `s` without any marker, in any letter case: errors are searched for
/// markers case-insensitively (a URL parser may lower a part), so
/// `fuzzseCret` in a value that is no secret must go too. Taking one out
/// can make another.
fn unmarked(s: &str) -> String {
    let mut s = s.to_owned();
    // ASCII lowering keeps every byte where it was.
    while let Some((at, len)) = [PW, SECRET]
        .iter()
        .find_map(|m| s.to_ascii_lowercase().find(m).map(|at| (at, m.len())))
    {
        s.replace_range(at..at + len, "");
    }
    s
}

fn value_for(key: &str, fuzzed: &str) -> String {
    // A URL parser drops tabs and newlines, decodes `%xx` and maps some
    // non-ASCII letters to ASCII (in hosts): any of these could spell a
    // marker out of a value that held none. So none reaches it.
    let mut v: String = fuzzed
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r' | '%'))
        .collect();
    if !matches!(secrecy(key), Secrecy::None) {
        v.retain(|c| c.is_ascii());
    }
    let v = unmarked(&v);
    if key.ends_with("_FILE") {
        return format!("{NO_DIR}/{v}");
    }
    match secrecy(key) {
        Secrecy::None => v,
        // Only the password: errors may name a URL's scheme (`redis URL 1
        // scheme "…"`) and, outside redis, its host and port.
        Secrecy::UrlPassword(marker) => v.replace("://", &format!("://fuzzuser:{marker}@")),
        Secrecy::Whole => {
            let mid = (0..=v.len() / 2).rev().find(|&i| v.is_char_boundary(i)).unwrap_or(0);
            format!("{}{SECRET}{}", &v[..mid], &v[mid..])
        }
        Secrecy::Digests => v
            .split(',')
            .map(|entry| match entry.split_once(':') {
                // a real digest stays one (it is no secret: the key is);
                // anything else there may be a key pasted by mistake
                Some((_, digest)) if is_digest(digest.trim()) => entry.to_owned(),
                Some((name, digest)) => format!("{name}:{PW}{digest}"),
                None => entry.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fuzz_target!(|data: &[u8]| {
    let keys = &*KEYS;
    let mut env: HashMap<String, String> = HashMap::from([
        ("SETTLEGATE_TRUST__KEYS".to_owned(), TRUSTED_KEY.clone()),
        ("SETTLEGATE_GENOME__PATH".to_owned(), format!("{NO_DIR}/genome.json")),
    ]);
    for record in data.split(|&b| b == 0xff).take(MAX_RECORDS) {
        let Some((&pick, value)) = record.split_first() else {
            continue;
        };
        let key = &keys[pick as usize % keys.len()];
        env.insert(key.clone(), value_for(key, &String::from_utf8_lossy(value)));
    }
    match Settings::load_from(None, Some(env.clone())) {
        Err(e) => {
            let m = e.to_string().to_ascii_lowercase();
            assert!(!m.is_empty(), "a refusal says why");
            assert!(
                !m.contains(PW) && !m.contains(SECRET),
                "an error shows a secret: {e}"
            );
        }
        Ok(s) => {
            assert!(
                env.get(MISSPELT).is_none_or(|v| v.is_empty()),
                "{MISSPELT} was not refused"
            );
            check_loaded(&s);
        }
    }
});

fn within(what: &str, d: Duration, lo_ms: u64, hi_ms: u64) {
    assert!(
        (Duration::from_millis(lo_ms)..=Duration::from_millis(hi_ms)).contains(&d),
        "{what} is {d:?}, not within {lo_ms}..={hi_ms} ms"
    );
}

/// The bounds `config/default.toml` and `Settings::validate` document.
fn check_loaded(s: &Settings) {
    let shown = format!("{s:?}");
    assert!(!shown.contains(SECRET), "Debug shows a secret: {shown}");

    let l = &s.ledger;
    assert!((1..=100_000_000).contains(&l.outbox_max));
    assert!((1..=5_000).contains(&l.batch));
    within("ledger.poll_interval_ms", l.poll_interval, 10, 60_000);
    within("ledger.write_timeout_ms", l.write_timeout, 100, 600_000);
    assert!((1..=64).contains(&l.instance.len()) && l.instance.bytes().all(|b| b.is_ascii_graphic()));
    let w = &s.webhooks;
    within("webhooks.timeout_ms", w.timeout, 100, 60_000);
    assert!((1..=1_000).contains(&w.max_attempts));
    within("webhooks.backoff_base_ms", w.backoff_base, 100, 3_600_000);
    assert!(w.backoff_max >= w.backoff_base && w.backoff_max <= Duration::from_millis(86_400_000));
    assert!((1..=256).contains(&w.max_concurrent));
    assert!(!w.enabled() || l.enabled(), "webhooks without the ledger");
    let a = &s.admin;
    assert!(a.deny_refresh >= Duration::from_secs(1) && a.deny_refresh <= Duration::from_secs(3_600));
    within("admin.query_timeout_ms", a.query_timeout, 100, 120_000);
    assert!(a.allow_remote || a.listen.ip().to_canonical().is_loopback(), "a remote admin address loaded unasked");
    assert!(!a.enabled || (l.enabled() && !a.token_digests.is_empty()));

    assert!(s.workers <= 256);
    assert!((1..=100_000).contains(&s.max_connections));
    within(
        "server.client_request_timeout_ms",
        s.client_request_timeout,
        100,
        60_000,
    );
    if let Some(tls) = &s.tls {
        assert!(
            tls.reload_every
                .is_none_or(|d| d > Duration::ZERO && d <= Duration::from_secs(86_400))
        );
    }

    assert!(!s.trusted_keys.is_empty());
    let distinct = settlegate_rules::genome::TrustRoot::new(s.trusted_keys.iter().copied(), 1)
        .keys()
        .len();
    assert!(s.min_threshold >= 1 && s.min_threshold as usize <= distinct);

    assert!(!s.rpc_urls.is_empty());
    for u in &s.rpc_urls {
        assert!(matches!(u.scheme(), "http" | "https") && u.host().is_some(), "{u}");
    }
    within("rpc.timeout_ms", s.rpc_timeout, 50, 60_000);
    within("rpc.lookup_timeout_ms", s.lookup_timeout, 100, 120_000);
    assert!(s.rpc_timeout <= s.lookup_timeout);
    if let Some(p) = s.rpc_probe_interval {
        within("rpc.probe_interval_ms", p, 100, 3_600_000);
    }
    assert!((1..=100_000).contains(&s.max_lookups_in_flight));
    if !s.coalescer_window.is_zero() {
        within("coalescer.window_ms", s.coalescer_window, 1, 10_000);
    }

    within("redis.timeout_ms", s.redis_timeout, 10, 60_000);
    assert!((1..=100_000).contains(&s.redis_max_ops_in_flight));
    assert!(s.redis_key_prefix.len() <= 64);
    assert!(!s.redis_key_prefix.chars().any(|c| c.is_whitespace() || c.is_control()));
    if let Some(r) = &s.redis {
        assert!(!r.urls.is_empty() && r.urls.len() <= 64);
        assert!(r.cluster || r.urls.len() == 1);
        assert!(r.wait_replicas <= 16);
        assert!(r.wait_replicas == 0 || s.redis_timeout >= Duration::from_millis(300));
    }

    assert!(s.replay_min_record_ttl <= Duration::from_secs(365 * 86_400));
    assert!(s.replay_cache_entries <= 10_000_000);
    assert!((64..=1_000_000).contains(&s.log_buffer_lines));

    if let Some(o) = &s.otel {
        for u in [&o.endpoint, &o.metrics_endpoint] {
            assert!(matches!(u.scheme(), "http" | "https") && u.host().is_some(), "{u}");
        }
        within("otel.metrics_interval_ms", o.metrics_interval, 100, 3_600_000);
        assert!((64..=1_000_000).contains(&o.max_queue_size));
    }

    let strong = |secret: &str| settlegate_rules::secret_strength::check(secret.as_bytes()).is_ok();
    if let Some(p) = &s.payment_secret {
        assert!(strong(p.expose()));
    }
    if let Some((prev, _)) = &s.payment_previous_secret {
        let cur = s
            .payment_secret
            .as_ref()
            .expect("a previous secret without a current one");
        assert!(strong(prev.expose()) && prev != cur);
    }

    let c = &s.callers;
    assert!(c.rate_per_caller <= 1_000_000 && c.rate_per_ip <= 1_000_000);
    assert!(c.rate_per_caller == 0 || !c.api_keys.is_empty());
    for (i, (name, digest)) in c.api_keys.iter().enumerate() {
        assert!((1..=64).contains(&name.len()));
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{name:?}"
        );
        assert!(c.api_keys[..i].iter().all(|(n, d)| n != name && d != digest));
    }

    assert!(s.cors_max_age_seconds <= 86_400);
    let star = s.cors_allowed_origins.iter().any(|o| o == "*");
    assert!(
        !star || s.cors_allowed_origins.len() == 1,
        "{:?}",
        s.cors_allowed_origins
    );
}
