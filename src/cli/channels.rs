//! `settlegate channels`: the payment channels in the store, what each has
//! accepted, spent and settled on chain, and (with `--settle` and the
//! payee's key) a settlement of everything unsettled now. For a deployment
//! that leaves the settler off, and for an operator who wants to see.

use std::time::Duration;

use settlegate_actors::channels::plan::Schedule;
use settlegate_actors::channels::{ChannelBook, ChannelSettler, SettlerConfig, SettlerMetrics};
use settlegate_actors::store::Bounded;

use super::ChannelsArgs;
use crate::settings::Settings;
use crate::startup::{open_store, rpc_pool, store_timeout};
use crate::telemetry::metrics::Metrics;

/// Prints one JSON line per channel, then a summary line; exit code 0, or
/// 1 when a channel could not be read or settled, 2 for a usage error.
pub fn run(args: ChannelsArgs) -> i32 {
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: {e}");
            return 2;
        }
    };
    let key = match (&settings.session.settler_key, args.settle) {
        (_, false) => None,
        (None, true) => {
            eprintln!("settlegate channels --settle needs the payee's key: set session.settler_key_file");
            return 2;
        }
        (Some(k), true) => match settlegate_rules::tx_sign::PayeeKey::parse(k.expose()) {
            Ok(k) => Some(std::sync::Arc::new(k)),
            Err(e) => {
                eprintln!("settlegate: CONFIG_INVALID: session.settler_key_file: {e}");
                return 2;
            }
        },
    };
    let system = actix::System::new();
    system.block_on(async move {
        let metrics = Metrics::new();
        let store = match open_store(&settings) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("settlegate: the replay store: {e}");
                return 1;
            }
        };
        let rpc = match rpc_pool(&settings, &metrics) {
            Ok(r) => actix::Actor::start(r),
            Err(e) => {
                eprintln!("settlegate: the RPC pool: {e}");
                return 1;
            }
        };
        let book = ChannelBook::new(
            Bounded::new(store, store_timeout(&settings), metrics.store_ops.clone()),
            settings.session.channel_ttl,
            1_000,
        );
        let cfg = SettlerConfig {
            key,
            chain_id: None,
            // Everything unsettled is due now.
            schedule: Schedule { amount: 1, interval: 0 },
            scan_interval: Duration::from_secs(1),
            rpc_timeout: settings.rpc_timeout,
        };
        match ChannelSettler::scan_once(book, rpc, cfg, SettlerMetrics::default()).await {
            Ok(report) => {
                for row in &report.rows {
                    // unwrap: strings and numbers always serialise.
                    println!("{}", serde_json::to_string(row).unwrap());
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "channels": report.channels,
                        "unsettled": report.unsettled.to_string(),
                        "settled": report.settled,
                        "closed": report.closed,
                        "failed": report.failed,
                    })
                );
                i32::from(report.failed > 0)
            }
            Err(e) => {
                eprintln!("settlegate channels: {e}");
                1
            }
        }
    })
}
