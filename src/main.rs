//! The `settlegate` binary: parse the command line, then either run the
//! genome tooling or boot the service. All the work is in the library.

use clap::Parser;
use settlegate::cli::{Cli, Command, ServeArgs};
use settlegate::settings::Settings;
use settlegate::{Application, telemetry};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Genome(cmd) => settlegate::cli::genome::run(*cmd),
        Command::Channels(args) => settlegate::cli::channels::run(args),
        Command::Ledger(args) => settlegate::cli::ledger::run(args),
        Command::Admin(cmd) => settlegate::cli::admin::run(cmd),
        Command::Openapi => {
            print!("{}", settlegate::http::openapi::document());
            0
        }
    };
    std::process::exit(code);
}

/// Boots inside an actix system. Any boot failure stops the whole system
/// with a non-zero code before a socket is bound, and prints exactly one
/// line `settlegate: <CODE>: <detail>` on stderr.
fn serve(args: ServeArgs) -> i32 {
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: {e}");
            return 1;
        }
    };
    let _telemetry = match telemetry::init(settings.log_buffer_lines, settings.log_json, settings.otel.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("settlegate: CONFIG_INVALID: {e}");
            return 1;
        }
    };
    settlegate::memory::start_trimmer();
    let system = actix::System::new();
    system.block_on(async move {
        match Application::build(settings).await {
            Ok(app) => {
                actix::spawn(async move {
                    let result = app.run_until_stopped().await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "server stopped with an error");
                    }
                    actix::System::current().stop_with_code(i32::from(result.is_err()));
                });
            }
            Err(e) => {
                tracing::error!(code = e.code(), error = %e, "boot refused");
                eprintln!("settlegate: {}: {e}", e.code());
                actix::System::current().stop_with_code(1);
            }
        }
    });
    system.run_with_code().unwrap_or(1)
}
