//! `settlegate ledger …`: the operator's books at a shell. `migrate` is
//! the only thing that ever creates or changes the schema; `status` says
//! whether this build can write to the database as it is; `reconcile`
//! checks the books against the chain without changing either;
//! `webhooks` lists the webhook deliveries and requeues dead ones. The
//! reads and the deny list's changes are the admin API's, on the same SQL
//! (`settlegate_actors::ledger::read`) and with the same validation, one
//! JSON line per row and a summary line.

use std::future::Future;

use settlegate_actors::ledger::read::{self, BadInput, By, Cursor, Filter, FilterInput};
use settlegate_actors::ledger::reconcile;
use settlegate_actors::ledger::{LedgerError, Pool};
use settlegate_actors::rpc_pool::Lookup;
use settlegate_rules::credential::TxHash;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{FilterArgs, LedgerArgs, LedgerCommand, WebhooksArgs, WebhooksCommand};
use crate::settings::Settings;
use crate::startup::rpc_pool;
use crate::telemetry::metrics::Metrics;
use settlegate_actors::webhooks::db::Requeue;

/// Exit codes: 0, 1 when the database refused or did not answer, 2 for a
/// usage or configuration error (an input the reads refuse included).
pub fn run(args: LedgerArgs) -> i32 {
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: {e}");
            return 2;
        }
    };
    let Some(url) = &settings.ledger.database_url else {
        eprintln!("settlegate ledger needs the database: set ledger.database_url (or ledger.database_url_file)");
        return 2;
    };
    let timeout = settings.admin.query_timeout;
    // The reads are bounded as the admin API's are; a migration and a
    // reconciliation are not.
    let bound = match args.command {
        LedgerCommand::Migrate | LedgerCommand::Status | LedgerCommand::Reconcile { .. } => None,
        _ => Some(timeout),
    };
    let window = match &args.command {
        LedgerCommand::Reconcile { from, to } => match window(from.as_deref(), to.as_deref()) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("settlegate ledger reconcile: {e}");
                return 2;
            }
        },
        _ => None,
    };
    let pool = match settlegate_actors::ledger::pool_with(url.expose(), 2, bound) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: ledger.database_url: {e}");
            return 2;
        }
    };
    let system = actix::System::new();
    system.block_on(async move {
        let ctx = Ctx { pool, timeout };
        match args.command {
            LedgerCommand::Reconcile { .. } => {
                let (from, to) = window.unwrap_or_default();
                run_reconcile(&settings, &ctx.pool, from, to).await
            }
            LedgerCommand::Migrate => migrate(&ctx.pool).await,
            LedgerCommand::Status => status(&ctx.pool).await,
            LedgerCommand::Payments(a) => ctx.payments(&a.filter, a.limit.as_deref(), a.cursor.as_deref()).await,
            LedgerCommand::Revenue(a) => ctx.revenue(&a.by, &a.filter).await,
            LedgerCommand::Denials => ctx.denials().await,
            LedgerCommand::Deny(a) => ctx.deny(&a.payer, &a.reason).await,
            LedgerCommand::Allow(a) => ctx.allow(&a.payer).await,
            LedgerCommand::Webhooks(args) => webhooks(&ctx.pool, args).await,
        }
    })
}

async fn migrate(pool: &Pool) -> i32 {
    match settlegate_actors::ledger::migrate(pool).await {
        Ok(applied) => {
            let (version, _) = settlegate_actors::ledger::schema_version(pool)
                .await
                .unwrap_or((None, 0));
            println!("{}", serde_json::json!({ "applied": applied, "version": version }));
            0
        }
        Err(e) => {
            eprintln!("settlegate: ledger migrate: {e}");
            1
        }
    }
}

async fn status(pool: &Pool) -> i32 {
    match settlegate_actors::ledger::schema_version(pool).await {
        Ok((database, code)) => {
            let current = database == Some(code);
            println!(
                "{}",
                serde_json::json!({ "database_version": database, "code_version": code, "current": current })
            );
            if current { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("settlegate: ledger status: {e}");
            1
        }
    }
}

fn filter_input(f: &FilterArgs) -> FilterInput {
    FilterInput {
        route: f.route.clone(),
        payer: f.payer.clone(),
        scheme: f.scheme.clone(),
        kind: f.kind.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
    }
}

/// A refused input: its message, exit code 2.
fn refused(command: &str, e: BadInput) -> i32 {
    eprintln!("settlegate ledger {command}: {e}");
    2
}

fn line(v: &impl serde::Serialize) {
    // unwrap: strings and numbers always serialise.
    println!("{}", serde_json::to_string(v).unwrap());
}

struct Ctx {
    pool: Pool,
    timeout: std::time::Duration,
}

impl Ctx {
    /// `work` within the timeout; a failure is printed, exit code 1.
    async fn within<T>(&self, command: &str, work: impl Future<Output = Result<T, LedgerError>>) -> Result<T, i32> {
        let e = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => LedgerError::Timeout,
        };
        if e.schema_missing() {
            eprintln!("settlegate ledger {command}: the ledger's tables are missing: run `settlegate ledger migrate`");
        } else {
            eprintln!("settlegate ledger {command}: {e}");
        }
        Err(1)
    }

    async fn client(&self) -> Result<settlegate_actors::ledger::Client, LedgerError> {
        read::connect(&self.pool, self.timeout).await
    }

    async fn payments(&self, f: &FilterArgs, limit: Option<&str>, cursor: Option<&str>) -> i32 {
        let parsed = Filter::parse(&filter_input(f)).and_then(|filter| {
            let limit = read::parse_limit(limit)?;
            let cursor = cursor.map(|c| Cursor::decode(c, &filter)).transpose()?;
            Ok((filter, limit, cursor))
        });
        let (filter, limit, cursor) = match parsed {
            Ok(p) => p,
            Err(e) => return refused("payments", e),
        };
        let page = match self
            .within("payments", async {
                read::payments(&self.client().await?, &filter, limit, cursor).await
            })
            .await
        {
            Ok(p) => p,
            Err(code) => return code,
        };
        for p in &page.payments {
            line(p);
        }
        line(&serde_json::json!({ "payments": page.payments.len(), "next_cursor": page.next_cursor }));
        0
    }

    async fn revenue(&self, by: &str, f: &FilterArgs) -> i32 {
        let parsed = By::parse(Some(by)).and_then(|by| Ok((by, Filter::parse(&filter_input(f))?)));
        let (by, filter) = match parsed {
            Ok(p) => p,
            Err(e) => return refused("revenue", e),
        };
        let revenue = match self
            .within("revenue", async {
                read::revenue(&mut self.client().await?, &filter, by).await
            })
            .await
        {
            Ok(r) => r,
            Err(code) => return code,
        };
        for g in &revenue.groups {
            line(g);
        }
        line(&serde_json::json!({
            "by": revenue.by,
            "totals": revenue.totals,
            "payments": revenue.payments,
            "truncated": revenue.truncated,
        }));
        0
    }

    async fn denials(&self) -> i32 {
        match self
            .within("denials", async { read::denials(&self.client().await?).await })
            .await
        {
            Ok(denials) => {
                for d in &denials {
                    line(d);
                }
                line(&serde_json::json!({ "denials": denials.len() }));
                0
            }
            Err(code) => code,
        }
    }

    async fn deny(&self, payer: &str, reason: &str) -> i32 {
        let payer = match read::parse_payer(payer).and_then(|p| read::check_reason(reason).map(|()| p)) {
            Ok(p) => p,
            Err(e) => return refused("deny", e),
        };
        match self
            .within("deny", async {
                read::deny(&self.client().await?, &payer, reason).await
            })
            .await
        {
            Ok(d) => {
                line(&d);
                0
            }
            Err(code) => code,
        }
    }

    async fn allow(&self, payer: &str) -> i32 {
        let payer = match read::parse_payer(payer) {
            Ok(p) => p,
            Err(e) => return refused("allow", e),
        };
        match self
            .within("allow", async { read::allow(&self.client().await?, &payer).await })
            .await
        {
            Ok(removed) => {
                line(&serde_json::json!({ "payer": payer, "removed": removed }));
                0
            }
            Err(code) => code,
        }
    }
}

/// `[from, to)` in unix seconds, from RFC 3339 (default: the last 24 hours).
fn window(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), String> {
    let parse = |what: &str, v: &str| {
        OffsetDateTime::parse(v, &Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| format!("--{what} must be an RFC 3339 instant (2026-12-01T00:00:00Z), got {v:?}"))
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let to = to.map(|v| parse("to", v)).transpose()?.unwrap_or(now + 1);
    let from = from.map(|v| parse("from", v)).transpose()?.unwrap_or(to - 86_400);
    if from >= to {
        return Err("--from must be before --to".into());
    }
    Ok((from, to))
}

async fn run_reconcile(settings: &Settings, pool: &settlegate_actors::ledger::Pool, from: i64, to: i64) -> i32 {
    let metrics = Metrics::new();
    let rpc = match rpc_pool(settings, &metrics) {
        Ok(r) => actix::Actor::start(r),
        Err(e) => {
            eprintln!("settlegate: the RPC pool: {e}");
            return 1;
        }
    };
    let (mut after, mut checked, mut mismatched, mut unchecked) = (0i64, 0u64, 0u64, 0u64);
    loop {
        let page = match reconcile::page(pool, from, to, after, 200).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("settlegate: ledger reconcile: {e}");
                return 1;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, row) in &page {
            checked += 1;
            let facts = match row.tx_hash.parse::<TxHash>() {
                Ok(hash) => rpc
                    .send(Lookup {
                        hash,
                        chain_id: row.chain_id,
                        need_head: false,
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            match facts {
                Ok(facts) => {
                    let finding = reconcile::judge(row, &facts);
                    if !finding.matches() {
                        mismatched += 1;
                        let mut line = serde_json::to_value(&finding).unwrap_or_default();
                        line["tx_hash"] = row.tx_hash.clone().into();
                        println!("{line}");
                    }
                }
                Err(error) => {
                    unchecked += 1;
                    println!(
                        "{}",
                        serde_json::json!({ "tx_hash": row.tx_hash, "finding": "unchecked", "error": error })
                    );
                }
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({ "checked": checked, "mismatched": mismatched, "unchecked": unchecked, "from": from, "to": to })
    );
    if unchecked > 0 {
        1
    } else if mismatched > 0 {
        3
    } else {
        0
    }
}

async fn webhooks(pool: &settlegate_actors::ledger::Pool, args: WebhooksArgs) -> i32 {
    match args.command {
        None => {
            let state = args.state.map(|s| s.as_str());
            match settlegate_actors::webhooks::list(pool, state, args.after, args.limit).await {
                Ok(listed) => {
                    for d in &listed {
                        // unwrap: plain strings and numbers always serialise.
                        println!("{}", serde_json::to_string(d).unwrap());
                    }
                    eprintln!(
                        "{} deliveries{}{}",
                        listed.len(),
                        state.map(|s| format!(" {s}")).unwrap_or_default(),
                        if listed.len() as i64 == args.limit {
                            format!(" (more with --after {})", listed.last().map_or(0, |d| d.id))
                        } else {
                            String::new()
                        }
                    );
                    0
                }
                Err(e) => {
                    eprintln!("settlegate: ledger webhooks: {e}");
                    1
                }
            }
        }
        Some(WebhooksCommand::Requeue(r)) => {
            let which = match r.id {
                Some(id) => Requeue::One(id),
                None => Requeue::AllDead,
            };
            match settlegate_actors::webhooks::requeue(pool, &which).await {
                Ok(ids) => {
                    println!("{}", serde_json::json!({ "requeued": ids }));
                    0
                }
                Err(e) => {
                    eprintln!("settlegate: ledger webhooks requeue: {e}");
                    1
                }
            }
        }
    }
}
