//! The operator's reads of the books and the deny list's writes: the one
//! place their SQL lives, shared by the admin API and `settlegate ledger`.
//!
//! Invariants:
//! - every input is validated here, before any SQL, with a message that
//!   names the parameter ([`BadInput`]); the SQL is fixed text with bound
//!   parameters, never built from input;
//! - amounts leave PostgreSQL as decimal text (`NUMERIC` sums are exact
//!   for any uint256) and are never parsed into a number here;
//! - pages go newest first by `id`; a cursor is the last `id` of a page
//!   and a fingerprint of its filter, so a page with another filter
//!   refuses it instead of skipping rows silently;
//! - a revenue report and its totals are read in one snapshot, so the
//!   totals are the sum of the groups.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{LedgerError, Pool};

/// Rows per page at most, and by default.
pub const MAX_LIMIT: u32 = 500;
pub const DEFAULT_LIMIT: u32 = 100;
/// Longest `route` filter (a genome's route is far shorter).
pub const MAX_ROUTE: usize = 256;
/// Longest reason of a denial, in characters.
pub const MAX_REASON: usize = 256;
/// Groups (key × asset) of a revenue report at most; the totals are whole.
pub const MAX_GROUPS: i64 = 10_000;

/// An input refused before any SQL: the message names the parameter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

fn bad(msg: impl Into<String>) -> BadInput {
    BadInput(msg.into())
}

/// A filter as given (query parameters, command-line flags).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct FilterInput {
    pub route: Option<String>,
    pub payer: Option<String>,
    pub scheme: Option<String>,
    pub kind: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Which payments: each field `None` matches all; `from` and `to` are
/// unix seconds of `consumed_at`, `from <= consumed_at < to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub route: Option<String>,
    pub payer: Option<String>,
    pub scheme: Option<String>,
    pub kind: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// `0x` + 40 hex digits, any case, as lower case.
pub fn parse_payer(s: &str) -> Result<String, BadInput> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    match hex {
        Some(h) if h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(format!("0x{}", h.to_ascii_lowercase()))
        }
        _ => Err(bad(format!("payer must be 0x and 40 hex digits, got {:?}", shown(s)))),
    }
}

/// At most 80 characters of an input, for a message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// An RFC 3339 time as unix seconds, rounded up: `consumed_at` is whole
/// seconds, so `>= from` and `< to` mean the same rounded up.
fn parse_time(name: &str, s: &str) -> Result<i64, BadInput> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        bad(format!(
            "{name} must be an RFC 3339 time such as 2026-01-31T00:00:00Z, got {:?}",
            shown(s)
        ))
    })?;
    let secs = t.unix_timestamp();
    Ok(if t.nanosecond() > 0 { secs + 1 } else { secs })
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl Filter {
    pub fn parse(input: &FilterInput) -> Result<Filter, BadInput> {
        let route = match input.route.as_deref() {
            None => None,
            Some(r) if r.is_empty() || r.chars().count() > MAX_ROUTE || r.chars().any(char::is_control) => {
                return Err(bad(format!(
                    "route must be 1 to {MAX_ROUTE} characters without control characters, as the books spell it \
                     (\"GET /reports/*\", \"default\")"
                )));
            }
            Some(r) => Some(r.to_owned()),
        };
        let payer = input.payer.as_deref().map(parse_payer).transpose()?;
        let scheme = match input.scheme.as_deref() {
            None => None,
            Some(s @ ("tempo" | "payment")) => Some(s.to_owned()),
            Some(s) => return Err(bad(format!("scheme must be tempo or payment, got {:?}", shown(s)))),
        };
        let kind = match input.kind.as_deref() {
            None => None,
            Some(k @ ("charge" | "proof")) => Some(k.to_owned()),
            Some(k) => return Err(bad(format!("kind must be charge or proof, got {:?}", shown(k)))),
        };
        let from = input.from.as_deref().map(|s| parse_time("from", s)).transpose()?;
        let to = input.to.as_deref().map(|s| parse_time("to", s)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(bad(format!("from ({}) is after to ({})", rfc3339(f), rfc3339(t))));
        }
        Ok(Filter {
            route,
            payer,
            scheme,
            kind,
            from,
            to,
        })
    }

    /// What a cursor is bound to: 8 bytes of SHA-256 of the filter.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.route, &self.payer, &self.scheme, &self.kind] {
            h.update(part.as_deref().unwrap_or("\u{0}").as_bytes());
            h.update([0xff]);
        }
        for t in [self.from, self.to] {
            h.update(t.map_or("-".to_owned(), |v| v.to_string()).as_bytes());
            h.update([0xff]);
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when not given.
pub fn parse_limit(s: Option<&str>) -> Result<u32, BadInput> {
    match s {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit must be 1 to {MAX_LIMIT}, got {:?}", shown(s)))),
    }
}

/// Where the next page starts: before row `id`, under the filter it was
/// made for. Opaque to clients: base64url of `p1.<id>.<fingerprint>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub before: i64,
}

const CURSOR_MAX: usize = 128;

impl Cursor {
    pub fn encode(&self, filter: &Filter) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p1.{}.{}", self.before, filter.fingerprint()))
    }

    pub fn decode(s: &str, filter: &Filter) -> Result<Cursor, BadInput> {
        use base64::Engine;
        let refused = || bad("cursor is not one this API handed out: pass next_cursor of the previous page as it is");
        if s.is_empty() || s.len() > CURSOR_MAX {
            return Err(refused());
        }
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(refused)?;
        let mut parts = text.split('.');
        let (Some("p1"), Some(id), Some(fp), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(refused());
        };
        let before = id.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(refused)?;
        if fp != filter.fingerprint() {
            return Err(bad(
                "cursor belongs to a page with other filters: repeat the filters of the page that handed it out",
            ));
        }
        Ok(Cursor { before })
    }
}

/// One payment as the admin API and `settlegate ledger payments` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    /// Ascending in write order; pages go newest first.
    pub id: i64,
    #[schema(pattern = "^0x[0-9a-f]{64}$")]
    pub tx_hash: String,
    /// `charge` or `proof` (a free route's claimed challenge, amount 0).
    pub kind: String,
    /// `tempo` or `payment`.
    pub scheme: String,
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub payer: String,
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub recipient: String,
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub asset: String,
    /// Atomic units, decimal.
    #[schema(pattern = "^[0-9]+$")]
    pub amount: String,
    pub memo: Option<String>,
    pub chain_id: i64,
    pub block_number: i64,
    /// RFC 3339.
    pub block_time: String,
    /// `METHOD /target` of the consuming request, when it named one.
    pub resource: Option<String>,
    /// The genome's price rule that priced it (`default` when none matched).
    pub route: String,
    pub request_digest: Option<String>,
    pub genome_id: String,
    /// RFC 3339: when it was consumed (what `from` and `to` filter on).
    pub consumed_at: String,
    /// `ledger.instance` of the instance that consumed it.
    pub instance: String,
    /// RFC 3339: when the ledger wrote the row.
    pub recorded_at: String,
}

/// A page of payments, newest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentPage {
    pub payments: Vec<PaymentView>,
    /// Pass as `cursor` (with the same filters) for the next page; `null`:
    /// this was the last.
    pub next_cursor: Option<String>,
}

const PAGE: &str = "SELECT id, tx_hash, kind, scheme, payer, recipient, asset, amount::text, memo, chain_id,
    block_number, extract(epoch FROM block_time)::int8, resource, route, request_digest, genome_id,
    extract(epoch FROM consumed_at)::int8, instance, extract(epoch FROM recorded_at)::int8
FROM payments
WHERE ($1::text IS NULL OR route = $1::text) AND ($2::text IS NULL OR payer = $2::text)
  AND ($3::text IS NULL OR scheme = $3::text) AND ($4::text IS NULL OR kind = $4::text)
  AND ($5::int8 IS NULL OR consumed_at >= to_timestamp($5::int8))
  AND ($6::int8 IS NULL OR consumed_at < to_timestamp($6::int8))
  AND ($7::int8 IS NULL OR id < $7::int8)
ORDER BY id DESC
LIMIT $8::int8";

/// One page of `filter` after `cursor`.
pub async fn payments(
    client: &impl GenericClient,
    filter: &Filter,
    limit: u32,
    cursor: Option<Cursor>,
) -> Result<PaymentPage, LedgerError> {
    let before = cursor.map(|c| c.before);
    // One more than asked: whether there is a next page.
    let fetch = i64::from(limit) + 1;
    let rows = client
        .query(
            PAGE,
            &[
                &filter.route,
                &filter.payer,
                &filter.scheme,
                &filter.kind,
                &filter.from,
                &filter.to,
                &before,
                &fetch,
            ],
        )
        .await?;
    let more = rows.len() > limit as usize;
    let payments: Vec<PaymentView> = rows
        .iter()
        .take(limit as usize)
        .map(|r| PaymentView {
            id: r.get(0),
            tx_hash: r.get(1),
            kind: r.get(2),
            scheme: r.get(3),
            payer: r.get(4),
            recipient: r.get(5),
            asset: r.get(6),
            amount: r.get(7),
            memo: r.get(8),
            chain_id: r.get(9),
            block_number: r.get(10),
            block_time: rfc3339(r.get(11)),
            resource: r.get(12),
            route: r.get(13),
            request_digest: r.get(14),
            genome_id: r.get(15),
            consumed_at: rfc3339(r.get(16)),
            instance: r.get(17),
            recorded_at: rfc3339(r.get(18)),
        })
        .collect();
    let next_cursor = match payments.last() {
        Some(last) if more => Some(Cursor { before: last.id }.encode(filter)),
        _ => None,
    };
    Ok(PaymentPage { payments, next_cursor })
}

/// What revenue is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Route,
    Payer,
    /// The UTC day of `consumed_at`, `YYYY-MM-DD`.
    Day,
}

impl By {
    pub fn parse(s: Option<&str>) -> Result<By, BadInput> {
        match s {
            Some("route") => Ok(By::Route),
            Some("payer") => Ok(By::Payer),
            Some("day") => Ok(By::Day),
            Some(other) => Err(bad(format!("by must be route, payer or day, got {:?}", shown(other)))),
            None => Err(bad("by is required: route, payer or day")),
        }
    }

    /// The group's key, as SQL over `payments` (fixed text).
    fn key_sql(self) -> &'static str {
        match self {
            By::Route => "route",
            By::Payer => "payer",
            By::Day => "to_char(consumed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        }
    }
}

/// The payments of one group in one asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RevenueGroup {
    /// The route, the payer or the day (`YYYY-MM-DD`, UTC).
    pub key: String,
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub asset: String,
    pub payments: i64,
    /// Atomic units, decimal; exact.
    #[schema(pattern = "^[0-9]+$")]
    pub amount: String,
}

/// Every payment of the filter in one asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AssetTotal {
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub asset: String,
    pub payments: i64,
    #[schema(pattern = "^[0-9]+$")]
    pub amount: String,
}

/// Revenue per group and asset, with the totals per asset.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Revenue {
    pub by: By,
    /// Ordered by key, then asset.
    pub groups: Vec<RevenueGroup>,
    /// Per asset, over every payment of the filter (never truncated).
    pub totals: Vec<AssetTotal>,
    /// Payments of the filter, every asset.
    pub payments: i64,
    /// More than 10,000 groups: only the first are listed.
    pub truncated: bool,
}

const FILTERS: &str = "($1::text IS NULL OR route = $1::text) AND ($2::text IS NULL OR payer = $2::text)
  AND ($3::text IS NULL OR scheme = $3::text) AND ($4::text IS NULL OR kind = $4::text)
  AND ($5::int8 IS NULL OR consumed_at >= to_timestamp($5::int8))
  AND ($6::int8 IS NULL OR consumed_at < to_timestamp($6::int8))";

/// Revenue of `filter` by `by`, groups and totals in one snapshot.
pub async fn revenue(client: &mut deadpool_postgres::Client, filter: &Filter, by: By) -> Result<Revenue, LedgerError> {
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &filter.route,
        &filter.payer,
        &filter.scheme,
        &filter.kind,
        &filter.from,
        &filter.to,
    ];
    let groups_sql = format!(
        "SELECT {key} AS k, asset, count(*)::int8, COALESCE(sum(amount), 0)::text FROM payments WHERE {FILTERS}
         GROUP BY k, asset ORDER BY k, asset LIMIT {}",
        MAX_GROUPS + 1,
        key = by.key_sql(),
    );
    let rows = txn.query(&groups_sql, &params).await?;
    let truncated = rows.len() as i64 > MAX_GROUPS;
    let groups = rows
        .iter()
        .take(MAX_GROUPS as usize)
        .map(|r| RevenueGroup {
            key: r.get(0),
            asset: r.get(1),
            payments: r.get(2),
            amount: r.get(3),
        })
        .collect();
    let totals_sql = format!(
        "SELECT asset, count(*)::int8, COALESCE(sum(amount), 0)::text FROM payments WHERE {FILTERS}
         GROUP BY asset ORDER BY asset"
    );
    let totals: Vec<AssetTotal> = txn
        .query(&totals_sql, &params)
        .await?
        .iter()
        .map(|r| AssetTotal {
            asset: r.get(0),
            payments: r.get(1),
            amount: r.get(2),
        })
        .collect();
    txn.commit().await?;
    Ok(Revenue {
        by,
        groups,
        payments: totals.iter().map(|t| t.payments).sum(),
        totals,
        truncated,
    })
}

/// A payer on the deny list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Denial {
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub payer: String,
    pub reason: String,
    /// RFC 3339: when the payer was first denied.
    pub created_at: String,
}

/// A reason: at most [`MAX_REASON`] characters, no control characters.
pub fn check_reason(reason: &str) -> Result<(), BadInput> {
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(bad(format!(
            "reason must be at most {MAX_REASON} characters without control characters"
        )));
    }
    Ok(())
}

/// Every denial, by payer.
pub async fn denials(client: &impl GenericClient) -> Result<Vec<Denial>, LedgerError> {
    Ok(client
        .query(
            "SELECT payer, reason, extract(epoch FROM created_at)::int8 FROM payer_denials ORDER BY payer",
            &[],
        )
        .await?
        .iter()
        .map(|r| Denial {
            payer: r.get(0),
            reason: r.get(1),
            created_at: rfc3339(r.get(2)),
        })
        .collect())
}

/// Denies `payer` (already [`parse_payer`]d) with `reason` (already
/// [`check_reason`]ed); denying again replaces the reason and keeps the
/// first time.
pub async fn deny(client: &impl GenericClient, payer: &str, reason: &str) -> Result<Denial, LedgerError> {
    let r = client
        .query_one(
            "INSERT INTO payer_denials (payer, reason) VALUES ($1, $2)
             ON CONFLICT (payer) DO UPDATE SET reason = EXCLUDED.reason
             RETURNING payer, reason, extract(epoch FROM created_at)::int8",
            &[&payer, &reason],
        )
        .await?;
    Ok(Denial {
        payer: r.get(0),
        reason: r.get(1),
        created_at: rfc3339(r.get(2)),
    })
}

/// Takes `payer` off the list; whether it was on it.
pub async fn allow(client: &impl GenericClient, payer: &str) -> Result<bool, LedgerError> {
    Ok(client
        .execute("DELETE FROM payer_denials WHERE payer = $1", &[&payer])
        .await?
        > 0)
}

/// A pooled connection for one read, within `timeout` (a database that
/// does not answer is a timeout, not a hang).
pub async fn connect(pool: &Pool, timeout: std::time::Duration) -> Result<deadpool_postgres::Client, LedgerError> {
    tokio::time::timeout(timeout, pool.get())
        .await
        .map_err(|_| LedgerError::Timeout)?
        .map_err(LedgerError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(pairs: &[(&str, &str)]) -> FilterInput {
        let mut f = FilterInput::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "route" => f.route = v,
                "payer" => f.payer = v,
                "scheme" => f.scheme = v,
                "kind" => f.kind = v,
                "from" => f.from = v,
                "to" => f.to = v,
                _ => unreachable!(),
            }
        }
        f
    }

    #[test]
    fn a_filter_is_validated_and_normalised() {
        let f = Filter::parse(&input(&[
            ("route", "GET /reports/*"),
            ("payer", "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            ("scheme", "tempo"),
            ("kind", "charge"),
            ("from", "2026-01-01T00:00:00Z"),
            ("to", "2026-01-02T00:00:00.5+00:00"),
        ]))
        .unwrap();
        assert_eq!(f.payer.as_deref(), Some("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"));
        assert_eq!(f.from, Some(1_767_225_600));
        assert_eq!(f.to, Some(1_767_312_001), "rounded up: consumed_at is whole seconds");
        assert_eq!(Filter::parse(&FilterInput::default()).unwrap(), Filter::default());
    }

    #[test]
    fn bad_filters_are_refused_naming_the_parameter() {
        for (pairs, names) in [
            (vec![("payer", "0x1234")], "payer"),
            (vec![("payer", "f39fd6e51aad88f6f4ce6ab8827279cfffb92266")], "payer"),
            (vec![("payer", "0xg39fd6e51aad88f6f4ce6ab8827279cfffb92266")], "payer"),
            (vec![("scheme", "hash")], "scheme"),
            (vec![("kind", "refund")], "kind"),
            (vec![("from", "yesterday")], "from"),
            (vec![("to", "2026-01-01")], "to"),
            (
                vec![("from", "2026-01-02T00:00:00Z"), ("to", "2026-01-01T00:00:00Z")],
                "after",
            ),
            (vec![("route", "")], "route"),
            (vec![("route", "GET /\n")], "route"),
        ] {
            let e = Filter::parse(&input(&pairs)).unwrap_err();
            assert!(e.0.contains(names), "{pairs:?}: {e}");
        }
        let long = "x".repeat(MAX_ROUTE + 1);
        assert!(Filter::parse(&input(&[("route", &long)])).is_err());
        // An equal from and to is an empty range, not an error.
        assert!(
            Filter::parse(&input(&[
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("500")), Ok(500));
        for bad in ["0", "501", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).unwrap_err().0.contains("limit"), "{bad}");
        }
    }

    #[test]
    fn a_cursor_round_trips_under_its_filter_only() {
        let f = Filter::parse(&input(&[("route", "default")])).unwrap();
        let c = Cursor { before: 42 };
        let s = c.encode(&f);
        assert!(
            s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{s}"
        );
        assert_eq!(Cursor::decode(&s, &f), Ok(c));
        let other = Filter::parse(&input(&[("route", "GET /x")])).unwrap();
        assert!(Cursor::decode(&s, &other).unwrap_err().0.contains("other filters"));
        for junk in ["", "!!", "cDEuNDI", &"A".repeat(200), "cDEuLTEuMDA"] {
            assert!(Cursor::decode(junk, &f).unwrap_err().0.contains("cursor"), "{junk}");
        }
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let fp = f.fingerprint();
        for forged in [
            format!("p1.0.{fp}"),
            format!("p1.x.{fp}"),
            format!("p2.5.{fp}"),
            format!("p1.5.{fp}.x"),
        ] {
            assert!(Cursor::decode(&b64(&forged), &f).is_err(), "{forged}");
        }
        assert_eq!(
            Cursor::decode(&b64(&format!("p1.5.{fp}")), &f),
            Ok(Cursor { before: 5 })
        );
    }

    #[test]
    fn by_reasons_and_times() {
        assert_eq!(By::parse(Some("day")), Ok(By::Day));
        assert!(By::parse(None).unwrap_err().0.contains("required"));
        assert!(By::parse(Some("week")).unwrap_err().0.contains("route, payer or day"));
        assert!(check_reason(&"é".repeat(MAX_REASON)).is_ok());
        assert!(check_reason(&"é".repeat(MAX_REASON + 1)).is_err());
        assert!(check_reason("fraud\u{7}").is_err());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
