//! `freight`: one binary, six commands. Each arm calls a library entry point; there is
//! no logic here beyond parsing the command and the environment.

#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod health;

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
    /// Manage the key destination secrets are encrypted with at rest.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Exit 0 if this host's api (or worker) answers GET /health with 200, else 1: a
    /// container health check for an image without curl.
    Health(health::HealthArgs),
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new random key, a value for FREIGHT_SECRET_KEY.
    GenerateKey,
    /// Re-encrypt every stored destination with FREIGHT_SECRET_KEY (after a key change,
    /// or to encrypt secrets stored before a key was set). Safe to run again.
    Rotate {
        /// Jobs read and rewritten per statement.
        #[arg(long, default_value_t = 500)]
        batch_size: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no settings: it must work while FREIGHT_SECRET_KEY is missing or malformed,
    // which is when the configuration error sends the operator here.
    if let Command::Secrets {
        command: SecretsCommand::GenerateKey,
    } = cli.command
    {
        println!("{}", freight_core::secrets::generate_key());
        return ExitCode::SUCCESS;
    }
    // Nor does a health check: it reads only the address it probes, so a probe cannot
    // fail on a setting the process it asks does not use.
    if let Command::Health(args) = &cli.command {
        return health::run(args).await;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("freight: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    if matches!(cli.command, Command::Api | Command::Worker | Command::All) {
        report_secret_keys(&settings);
    }
    let result = match cli.command {
        Command::Api => freight_api::run(settings, shutdown::signal()).await,
        Command::Worker => freight_worker::run(settings, shutdown::signal()).await,
        Command::All => all(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Secrets {
            command: SecretsCommand::GenerateKey,
        }
        | Command::Health(_) => unreachable!("answered before the settings are read"),
        Command::Secrets {
            command: SecretsCommand::Rotate { batch_size },
        } => rotate(settings, batch_size).await,
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
    let db = freight_core::store::db::connect(&settings.database).await?;
    let applied = migration::migrate(&db).await?;
    if applied.is_empty() {
        println!("schema is up to date");
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}

/// One line at start-up saying whether destination secrets are encrypted at rest, and
/// with which keys (ids only).
fn report_secret_keys(settings: &Settings) {
    let keys = &settings.secrets;
    match keys.current_id() {
        Some(current) => tracing::info!(
            current_key = current,
            old_keys = ?keys.old_ids(),
            "destination secrets are encrypted at rest"
        ),
        None => tracing::warn!(
            "FREIGHT_SECRET_KEY is not set: destination secrets (header values, URL passwords) are stored in Postgres UNENCRYPTED; set it to encrypt them at rest (docs/operations.md, \"Rotating the secret key\")"
        ),
    }
}

/// `freight secrets rotate`: re-seals every stored destination with the current key.
async fn rotate(settings: Settings, batch_size: u64) -> anyhow::Result<()> {
    let Some(current) = settings.secrets.current_id() else {
        anyhow::bail!("FREIGHT_SECRET_KEY is not set: there is no key to encrypt with");
    };
    let db = freight_core::store::db::connect(&settings.database).await?;
    let report = freight_core::service::secrets::rotate(&db, &settings.secrets, batch_size).await?;
    println!(
        "{} of {} jobs re-encrypted with key {current}",
        report.changed, report.scanned
    );
    for (job, why) in &report.failed {
        eprintln!("job {job} left as it was: {why}");
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} jobs could not be re-encrypted; add the keys named above to FREIGHT_SECRET_KEYS_OLD and run again",
            report.failed.len()
        );
    }
    Ok(())
}
