//! `freight-bench`: drives a running Freight over HTTP, as tenants would, and reports each
//! scenario's figures against a baseline measured in the same run and against its target.
//!
//! It starts nothing: `loadtest/run` starts Freight (api + workers), the sink and
//! Postgres/Redis, then calls this. Every scenario prints a summary and writes
//! `<out>/<scenario>.json`. Size flags default to the quick size; `--full` switches every
//! size left unset to the full one (see `docs/performance.md`).

mod abuse;
mod client;
mod faults;
mod jobs;
mod latency;
mod pg;
mod records;
mod report;
mod rss;
mod throughput;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::{
    client::{Freight, SinkClient, Tenant},
    rss::Watched,
};

#[derive(Parser)]
#[command(
    name = "freight-bench",
    about = "Load scenarios against a running Freight"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
struct Common {
    /// Freight's api.
    #[arg(
        long,
        global = true,
        env = "FREIGHT_API",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// The operator token (ADMIN_TOKEN of the api), to create tenants and keys.
    #[arg(
        long,
        global = true,
        env = "ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    admin_token: String,
    /// The Postgres server (any database on it): destination tables and COPY baselines
    /// go to its database `freight_bench_dest`, created if missing.
    #[arg(
        long,
        global = true,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Freight's own database: the baselines then copy the constraints and indexes of
    /// its `record_logs` and `job_records` as they are now.
    #[arg(long, global = true, env = "FREIGHT_DATABASE_URL")]
    freight_database_url: Option<String>,
    /// The sink (`freight-sink`).
    #[arg(
        long,
        global = true,
        env = "BENCH_SINK",
        default_value = "http://127.0.0.1:9100"
    )]
    sink: String,
    /// Where `<scenario>.json` goes.
    #[arg(long, global = true, default_value = "loadtest/results")]
    out: PathBuf,
    /// A process whose RSS is sampled every second during each scenario (repeatable).
    #[arg(long = "watch-pid", global = true, value_parser = rss::parse_watch)]
    watch_pid: Vec<Watched>,
    /// Full sizes for every size flag left unset.
    #[arg(long, global = true)]
    full: bool,
    /// Worker processes serving this Freight (recorded in the reports; set by the run script).
    #[arg(long, global = true, env = "WORKERS", default_value_t = 1)]
    workers: u32,
}

#[derive(Subcommand)]
enum Scenario {
    /// One upload job of N records into Postgres and/or the sink; vs COPY.
    Throughput(throughput::ThroughputArgs),
    /// Uploading N records to an upload job; vs COPY into a `job_records`-shaped table.
    Intake(throughput::IntakeArgs),
    /// Many tenants creating, listing and reading jobs; then GET-job only; then /health.
    Api(latency::ApiArgs),
    /// Time from POST /jobs to the sink's first write, one small job at a time.
    Pickup(jobs::PickupArgs),
    /// Small jobs of 20 tenants while one tenant's big job runs, vs the same idle.
    Fairness(jobs::FairnessArgs),
    /// Time from a cancel request to the sink's last write for that job.
    Cancel(jobs::CancelArgs),
    /// Lateness of retries against the policy's delay (jitter 0).
    Retry(jobs::RetryArgs),
    /// Throughput once, appended to `<out>/scale.json` under `--workers`.
    Scale(throughput::ScaleArgs),
    /// Throughput into Postgres for batch sizes 100, 500, 1000, 5000.
    BatchSizes(throughput::BatchSizesArgs),
    /// Jobs at a steady rate for a long time; RSS growth of the watched processes.
    Soak(throughput::SoakArgs),
    /// What a hostile tenant's cheap requests cost the api: CPU time of one long NDJSON
    /// line in small chunks, peak RSS of 10 MiB JSON bodies of empty objects.
    Abuse(abuse::AbuseArgs),
    /// Ten minutes at a share of peak while loadtest/run injects a fault a minute;
    /// every job must complete with every record delivered once.
    FaultSoak(faults::FaultSoakArgs),
    /// Every scenario but `scale` (which needs worker restarts) and `soak` (which starts
    /// from fresh processes): loadtest/run runs those two after this.
    All,
}

/// What every scenario needs.
#[derive(Clone)]
pub struct Ctx {
    pub freight: Freight,
    pub sink: SinkClient,
    pub server_url: String,
    /// `freight_bench_dest` on the server: where Freight's postgres destination writes.
    pub dest_url: String,
    pub freight_db: Option<String>,
    pub out: PathBuf,
    pub watch: Vec<Watched>,
    pub full: bool,
    pub env: Value,
    /// Makes tenant names unique across runs against the same database.
    pub run_id: String,
}

pub const DEST_DB: &str = "freight_bench_dest";

impl Ctx {
    /// A tenant named `bench-<run>-<what>`.
    pub async fn tenant(&self, what: &str) -> Result<Tenant> {
        self.freight
            .create_tenant(&format!("bench-{}-{what}", self.run_id))
            .await
    }

    /// Quick or full size, unless the flag was given.
    pub fn size<T>(&self, given: Option<T>, quick: T, full: T) -> T {
        given.unwrap_or(if self.full { full } else { quick })
    }

    pub fn sink_destination(&self) -> Value {
        json!({"type": "http", "url": self.sink.records_url()})
    }

    pub fn postgres_destination(&self, table: &str) -> Value {
        json!({"type": "postgres", "url": self.dest_url, "table": table,
               "key": ["id"], "mode": "insert"})
    }

    pub async fn dest_conn(&self) -> Result<sqlx::PgConnection> {
        pg::connect(&self.dest_url).await
    }

    pub async fn freight_conn(&self) -> Result<Option<sqlx::PgConnection>> {
        match &self.freight_db {
            Some(url) => Ok(Some(pg::connect(url).await?)),
            None => Ok(None),
        }
    }
}

fn environment(common: &Common) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        "workers": common.workers,
        "git_rev": std::env::var("BENCH_GIT_REV").ok(),
        "api": common.api,
        "full": common.full,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let c = cli.common;
    anyhow::ensure!(
        !c.admin_token.is_empty(),
        "--admin-token (or ADMIN_TOKEN) is required: the operator token of the api"
    );
    let freight = Freight::new(&c.api, &c.admin_token);
    freight.wait_ready(Duration::from_secs(10)).await?;
    let sink = SinkClient::new(&c.sink);
    sink.reset()
        .await
        .with_context(|| format!("the sink at {} does not answer", c.sink))?;
    pg::ensure_database(&c.database_url, DEST_DB).await?;
    let ctx = Ctx {
        env: environment(&c),
        freight,
        sink,
        dest_url: pg::with_database(&c.database_url, DEST_DB),
        server_url: c.database_url.clone(),
        freight_db: c.freight_database_url.clone(),
        out: c.out.clone(),
        watch: c.watch_pid.clone(),
        full: c.full,
        run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
    };
    match cli.scenario {
        Scenario::Throughput(a) => throughput::throughput(&ctx, a).await.map(drop),
        Scenario::Intake(a) => throughput::intake(&ctx, a).await.map(drop),
        Scenario::Api(a) => latency::api(&ctx, a).await.map(drop),
        Scenario::Pickup(a) => jobs::pickup(&ctx, a).await.map(drop),
        Scenario::Fairness(a) => jobs::fairness(&ctx, a).await.map(drop),
        Scenario::Cancel(a) => jobs::cancel(&ctx, a).await.map(drop),
        Scenario::Retry(a) => jobs::retry(&ctx, a).await.map(drop),
        Scenario::Scale(a) => throughput::scale(&ctx, a).await.map(drop),
        Scenario::BatchSizes(a) => throughput::batch_sizes(&ctx, a).await.map(drop),
        Scenario::Soak(a) => throughput::soak(&ctx, a).await.map(drop),
        Scenario::FaultSoak(a) => faults::fault_soak(&ctx, a).await.map(drop),
        Scenario::Abuse(a) => abuse::abuse(&ctx, a).await.map(drop),
        Scenario::All => all(&ctx).await,
    }
}

/// Every scenario in order, each at its default size; one failing does not stop the
/// rest, but makes the exit status non-zero.
async fn all(ctx: &Ctx) -> Result<()> {
    let mut failed = Vec::new();
    let mut missed = Vec::new();
    macro_rules! run {
        ($name:literal, $fut:expr) => {
            println!();
            // One scenario's writes must not be flushed or vacuumed during the next one's
            // measurement.
            match pg::settle(&ctx.server_url, Duration::from_secs(120)).await {
                Ok(took) => println!(
                    "settled in {:.1} s (checkpoint, autovacuum, sync)",
                    took.as_secs_f64()
                ),
                Err(e) => eprintln!("could not settle the server before {}: {e:#}", $name),
            }
            match $fut.await {
                Ok(report) => {
                    if !report.passed {
                        missed.push($name);
                    }
                }
                Err(e) => {
                    eprintln!("!! {} failed: {e:#}", $name);
                    failed.push($name);
                }
            }
            ctx.sink.reset().await.ok();
        };
    }
    run!(
        "throughput",
        throughput::throughput(ctx, throughput::ThroughputArgs::default())
    );
    run!(
        "intake",
        throughput::intake(ctx, throughput::IntakeArgs::default())
    );
    run!("api", latency::api(ctx, latency::ApiArgs::default()));
    run!("pickup", jobs::pickup(ctx, jobs::PickupArgs::default()));
    run!(
        "fairness",
        jobs::fairness(ctx, jobs::FairnessArgs::default())
    );
    run!("cancel", jobs::cancel(ctx, jobs::CancelArgs::default()));
    run!("retry", jobs::retry(ctx, jobs::RetryArgs::default()));
    run!(
        "batch-sizes",
        throughput::batch_sizes(ctx, throughput::BatchSizesArgs::default())
    );
    println!();
    println!(
        "all: {} scenario(s) errored {:?}; targets missed in {:?}; reports in {}",
        failed.len(),
        failed,
        missed,
        ctx.out.display()
    );
    anyhow::ensure!(failed.is_empty(), "scenarios errored: {failed:?}");
    Ok(())
}
