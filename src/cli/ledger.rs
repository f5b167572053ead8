//! `settlegate ledger …`: the operator's books at a shell. `migrate` is
//! the only thing that ever creates or changes the schema; `status` says
//! whether this build can write to the database as it is; `reconcile`
//! checks the books against the chain without changing either;
//! `webhooks` lists the webhook deliveries and requeues dead ones.

use settlegate_actors::ledger::reconcile;
use settlegate_actors::rpc_pool::Lookup;
use settlegate_rules::credential::TxHash;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{LedgerArgs, LedgerCommand, WebhooksArgs, WebhooksCommand};
use crate::settings::Settings;
use crate::startup::{ledger_pool, rpc_pool};
use crate::telemetry::metrics::Metrics;
use settlegate_actors::webhooks::db::Requeue;

/// Exit code 0, 1 when the database refused or did not answer, 2 for a
/// usage or configuration error.
pub fn run(args: LedgerArgs) -> i32 {
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: {e}");
            return 2;
        }
    };
    let pool = match ledger_pool(&settings) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("settlegate ledger needs the database: set ledger.database_url (or ledger.database_url_file)");
            return 2;
        }
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: {e}");
            return 2;
        }
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
    let system = actix::System::new();
    system.block_on(async move {
        match args.command {
            LedgerCommand::Reconcile { .. } => {
                let (from, to) = window.unwrap_or_default();
                run_reconcile(&settings, &pool, from, to).await
            }
            LedgerCommand::Migrate => match settlegate_actors::ledger::migrate(&pool).await {
                Ok(applied) => {
                    let (version, _) = settlegate_actors::ledger::schema_version(&pool)
                        .await
                        .unwrap_or((None, 0));
                    println!("{}", serde_json::json!({ "applied": applied, "version": version }));
                    0
                }
                Err(e) => {
                    eprintln!("settlegate: ledger migrate: {e}");
                    1
                }
            },
            LedgerCommand::Status => match settlegate_actors::ledger::schema_version(&pool).await {
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
            },
            LedgerCommand::Webhooks(args) => webhooks(&pool, args).await,
        }
    })
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
