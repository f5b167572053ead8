//! `settlegate ledger …`: the operator's books at a shell. `migrate` is
//! the only thing that ever creates or changes the schema; `status` says
//! whether this build can write to the database as it is.

use super::{LedgerArgs, LedgerCommand};
use crate::settings::Settings;
use crate::startup::ledger_pool;

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
    let system = actix::System::new();
    system.block_on(async move {
        match args.command {
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
        }
    })
}
