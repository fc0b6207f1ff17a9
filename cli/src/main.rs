//! `freight`: one binary, four commands. Each arm calls a library entry point; there is
//! no logic here beyond parsing the command and the environment.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use freight_core::{config::Settings, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: an upload builds and frees millions of small
/// strings, which glibc served with twice the CPU (its free lists and consolidation were
/// a third of the api's profile) and kept as fragmented, never-returned RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "freight",
    version,
    about = "Record migration jobs as a service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Api,
    /// Run a worker.
    Worker,
    /// Run the API and a worker in one process (local use).
    All,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("freight: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    let result = match cli.command {
        Command::Api => freight_api::run(settings, shutdown::signal()).await,
        Command::Worker => freight_worker::run(settings, shutdown::signal()).await,
        Command::All => all(settings).await,
        Command::Migrate => migrate(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "freight stopped on an error");
            eprintln!("freight: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The api and a worker as two tasks sharing one shutdown signal.
async fn all(settings: Settings) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        on_signal.cancel();
    });
    let api = freight_api::run(settings.clone(), stop.clone().cancelled_owned());
    let worker = freight_worker::run(settings, stop.clone().cancelled_owned());
    // Whichever fails first stops the other.
    let (a, w) = tokio::join!(
        async {
            let r = api.await;
            stop.cancel();
            r
        },
        async {
            let r = worker.await;
            stop.cancel();
            r
        }
    );
    a.and(w)
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = freight_core::db::connect(&settings.database).await?;
    let applied = migration::migrate(&db).await?;
    if applied.is_empty() {
        println!("schema is up to date");
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}
