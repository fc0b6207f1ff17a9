//! Scenarios that push many records: throughput, intake, scale, batch-sizes, soak.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Ctx,
    client::{Tenant, job_id, progress, time_ms},
    pg::{self, Shape},
    records,
    report::{Dist, Report, fmt_num},
    rss::RssWatcher,
};

/// Uploads of the same job in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dest {
    Postgres,
    Sink,
    Both,
}

#[derive(Args, Clone, Debug)]
pub struct ThroughputArgs {
    /// Records in the job [1000000; the sink's run: quick 200000, full 1000000].
    #[arg(long)]
    pub records: Option<u64>,
    #[arg(long, default_value_t = 5000)]
    pub batch_size: u32,
    #[arg(long, default_value_t = 8)]
    pub parallelism: u32,
    #[arg(long, value_enum, default_value = "both")]
    pub dest: Dest,
    /// Records per upload call.
    #[arg(long, default_value_t = 50_000)]
    pub chunk: u64,
}

impl Default for ThroughputArgs {
    fn default() -> Self {
        Self {
            records: None,
            batch_size: 5000,
            parallelism: 8,
            dest: Dest::Both,
            chunk: 50_000,
        }
    }
}

/// How often a timed job is polled: its end is seen at most this late (a `GET` of the
/// job costs the api about a millisecond).
const POLL: Duration = Duration::from_millis(25);

/// One upload job, timed from its first request.
pub struct JobRun {
    pub job: Uuid,
    pub records: u64,
    /// First POST → `start` answered.
    pub intake: Duration,
    /// First POST → the poll (every [`POLL`]) that saw the job terminal.
    pub total: Duration,
    /// First POST → the job's `finished_at` (server clock, same machine).
    pub total_server: Option<Duration>,
    pub view: Value,
}

impl JobRun {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.total.as_secs_f64()
    }

    pub fn json(&self) -> Value {
        json!({
            "job_id": self.job,
            "records": self.records,
            "intake_s": self.intake.as_secs_f64(),
            "total_s": self.total.as_secs_f64(),
            "total_s_by_finished_at": self.total_server.map(|d| d.as_secs_f64()),
            "records_per_s": self.rate(),
            "records_per_s_by_finished_at": self.total_server.map(|d| self.records as f64 / d.as_secs_f64()),
            "delivery_records_per_s": self.records as f64 / (self.total - self.intake).as_secs_f64(),
            "status": self.view["status"],
            "progress": self.view["progress"],
        })
    }
}

pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// Creates an upload job with `spec` (destination, batch size, ...), uploads `chunks`
/// (NDJSON, [`UPLOAD_CONCURRENCY`] calls at a time), starts it and waits until it is
/// terminal. The clock starts just before the first request.
pub async fn run_upload_job(
    ctx: &Ctx,
    t: &Tenant,
    chunks: &[Bytes],
    records: u64,
    mut spec: Value,
) -> Result<JobRun> {
    spec["source"] = json!({"type": "upload"});
    let t0 = Instant::now();
    let t0_ms = now_ms();
    let job = job_id(&ctx.freight.create_job(t, &spec).await?)?;
    upload(ctx, t, job, chunks).await?;
    ctx.freight.start(t, job).await?;
    let intake = t0.elapsed();
    let limit = Duration::from_secs(600 + records / 500);
    let (view, at) = ctx.freight.wait_terminal(t, job, POLL, limit).await?;
    let total = at - t0;
    let total_server = time_ms(&view, "finished_at")
        .map(|f| Duration::from_secs_f64((f - t0_ms).max(0.0) / 1000.0));
    Ok(JobRun {
        job,
        records,
        intake,
        total,
        total_server,
        view,
    })
}

async fn upload(ctx: &Ctx, t: &Tenant, job: Uuid, chunks: &[Bytes]) -> Result<()> {
    stream::iter(chunks.iter().cloned())
        .map(|body| ctx.freight.upload_ndjson(t, job, body))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// COPY of the same rows into a fresh destination-shaped table and a `record_logs`-shaped
/// one, one after the other: what the engine must at least write.
pub struct CopyBaseline {
    pub dest: Duration,
    pub log: Duration,
    pub mirrored: pg::Mirrored,
}

impl CopyBaseline {
    pub fn rate(&self, n: u64) -> f64 {
        n as f64 / (self.dest + self.log).as_secs_f64()
    }

    pub fn json(&self, n: u64) -> Value {
        json!({
            "what": "COPY FROM STDIN of the same rows into a fresh table like the destination (text format, as Freight writes a destination), then of one `succeeded` row per record into a table shaped like record_logs (binary format, as Freight writes its log)",
            "records": n,
            "dest_copy_s": self.dest.as_secs_f64(),
            "log_copy_s": self.log.as_secs_f64(),
            "records_per_s": self.rate(n),
            "dest_only_records_per_s": n as f64 / self.dest.as_secs_f64(),
            "log_table": self.mirrored,
        })
    }
}

pub async fn copy_baseline(ctx: &Ctx, n: u64, batch_size: u64) -> Result<CopyBaseline> {
    let dest_rows = records::dest_copy_rows(1, n);
    let (job, tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let log_rows = records::log_copy_rows(job, tenant, n, batch_size);
    let mut conn = ctx.dest_conn().await?;
    pg::recreate_dest_table(&mut conn, "bench_copy_dest").await?;
    let mut freight = ctx.freight_conn().await?;
    let mirrored = pg::mirror(
        &mut conn,
        freight.as_mut(),
        Shape::RecordLogs,
        "bench_log",
        job,
        tenant,
    )
    .await?;
    let (_, dest) = pg::timed(pg::copy_in(
        &mut conn,
        "COPY bench_copy_dest (id, name, email, amount, created_at) FROM STDIN",
        &dest_rows,
    ))
    .await?;
    let (_, log) = pg::timed(pg::copy_in(
        &mut conn,
        "COPY bench_log (job_id, tenant_id, batch_id, record_seq, attempt, status, duration_ms) FROM STDIN (FORMAT binary)",
        &log_rows,
    ))
    .await?;
    pg::exec(
        &mut conn,
        "DROP TABLE bench_copy_dest; DROP TABLE bench_log".into(),
    )
    .await?;
    Ok(CopyBaseline {
        dest,
        log,
        mirrored,
    })
}

/// One postgres-destination job of `n` records into a fresh table; checks every row landed.
async fn postgres_job(
    ctx: &Ctx,
    t: &Tenant,
    table: &str,
    n: u64,
    batch_size: u32,
    parallelism: u32,
    chunk: u64,
) -> Result<JobRun> {
    let chunks = records::ndjson_chunks(1, n, chunk);
    let mut conn = ctx.dest_conn().await?;
    pg::recreate_dest_table(&mut conn, table).await?;
    let spec = json!({
        "name": format!("throughput {n} into {table}"),
        "destination": ctx.postgres_destination(table),
        "record_key": "id", "batch_size": batch_size, "parallelism": parallelism,
    });
    let run = run_upload_job(ctx, t, &chunks, n, spec).await?;
    let rows = pg::count_rows(&mut conn, table).await?;
    if rows as u64 != n || run.view["status"] != "completed" {
        bail!(
            "job {} ended {} with {rows} of {n} rows in {table} (progress {})",
            run.job,
            run.view["status"],
            run.view["progress"]
        );
    }
    Ok(run)
}

pub async fn throughput(ctx: &Ctx, a: ThroughputArgs) -> Result<Report> {
    // The Postgres run is the million records at every size: a smaller job
    // measures its ramp-up and last wave as much as its rate. The sink's path is slower,
    // so its quick run is smaller.
    let n = a.records.unwrap_or(1_000_000);
    let n_sink = ctx.size(a.records, 200_000, 1_000_000);
    let mut rep = Report::new(
        "throughput",
        ctx.env.clone(),
        json!({"records": n, "sink_records": n_sink, "batch_size": a.batch_size, "parallelism": a.parallelism,
               "dest": format!("{:?}", a.dest).to_lowercase(), "upload_chunk": a.chunk,
               "upload_concurrency": UPLOAD_CONCURRENCY}),
    );
    println!(
        "throughput: {n} records, batch size {}, parallelism {}",
        a.batch_size, a.parallelism
    );
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant("throughput").await?;
    if matches!(a.dest, Dest::Postgres | Dest::Both) {
        let base = copy_baseline(ctx, n, a.batch_size as u64).await?;
        let run = postgres_job(
            ctx,
            &t,
            "bench_throughput",
            n,
            a.batch_size,
            a.parallelism,
            a.chunk,
        )
        .await?;
        rep.figure("postgres.records_per_s", run.rate(), "records/s")
            .baseline("COPY dest+log", base.rate(n), "records/s")
            .at_least(50_000.0)
            .ratio_at_least(0.5);
        rep.figure("postgres.intake_s", run.intake.as_secs_f64(), "s");
        rep.figure("postgres.total_s", run.total.as_secs_f64(), "s");
        rep.detail("postgres", run.json());
        rep.detail("baseline", base.json(n));
    }
    if matches!(a.dest, Dest::Sink | Dest::Both) {
        let n = n_sink;
        let chunks = records::ndjson_chunks(1, n, a.chunk);
        let spec = json!({
            "name": format!("throughput {n} into the sink"),
            "destination": ctx.sink_destination(),
            "record_key": "id", "batch_size": a.batch_size, "parallelism": a.parallelism,
        });
        let run = run_upload_job(ctx, &t, &chunks, n, spec).await?;
        let s = ctx.sink.job(run.job).await?;
        // The sink's ceiling, so that a slow sink cannot pass for a slow Freight.
        let probe = n.min(100_000);
        let bodies = (1..=probe)
            .map(|i| Bytes::from(records::json(i, "")))
            .collect();
        let ceiling = ctx.sink.capacity(bodies, 128).await?;
        rep.figure("sink.records_per_s", run.rate(), "records/s")
            .baseline(
                "sink capacity (bench -> sink, 128 connections)",
                ceiling,
                "requests/s",
            );
        rep.figure("sink.intake_s", run.intake.as_secs_f64(), "s");
        rep.figure("sink.total_s", run.total.as_secs_f64(), "s");
        let mut detail = run.json();
        detail["sink"] = serde_json::to_value(s)?;
        rep.detail("sink", detail);
        if s.unique != n || run.view["status"] != "completed" {
            rep.note(format!(
                "sink job {} ended {} with {} unique of {n} records ({} duplicates)",
                run.job, run.view["status"], s.unique, s.duplicates
            ));
        }
        if s.duplicates > 0 {
            rep.note(format!(
                "the sink saw {} duplicate deliveries",
                s.duplicates
            ));
        }
    }
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}

#[derive(Args, Clone, Debug)]
pub struct IntakeArgs {
    /// Records uploaded [quick and full 100000].
    #[arg(long)]
    pub records: Option<u64>,
    /// Records per upload call.
    #[arg(long, default_value_t = 50_000)]
    pub chunk: u64,
}

impl Default for IntakeArgs {
    fn default() -> Self {
        Self {
            records: None,
            chunk: 50_000,
        }
    }
}

pub async fn intake(ctx: &Ctx, a: IntakeArgs) -> Result<Report> {
    let n = ctx.size(a.records, 100_000, 100_000);
    let mut rep = Report::new(
        "intake",
        ctx.env.clone(),
        json!({"records": n, "upload_chunk": a.chunk, "upload_concurrency": UPLOAD_CONCURRENCY}),
    );
    println!("intake: {n} records in calls of {}", a.chunk);
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant("intake").await?;
    let chunks = records::ndjson_chunks(1, n, a.chunk);
    let bytes: usize = chunks.iter().map(|c| c.len()).sum();

    // Baseline first: COPY of the same records into a job_records-shaped table.
    let (job, tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let rows = records::job_records_copy_rows(job, tenant, 1, n);
    let mut conn = ctx.dest_conn().await?;
    let mut freight = ctx.freight_conn().await?;
    let mirrored = pg::mirror(
        &mut conn,
        freight.as_mut(),
        Shape::JobRecords,
        "bench_job_records",
        job,
        tenant,
    )
    .await?;
    let (_, copy) = pg::timed(pg::copy_in(
        &mut conn,
        "COPY bench_job_records (job_id, seq, tenant_id, record_key, payload) FROM STDIN (FORMAT binary)",
        &rows,
    ))
    .await?;
    pg::exec(&mut conn, "DROP TABLE bench_job_records".into()).await?;

    let spec = json!({
        "name": format!("intake {n}"), "source": {"type": "upload"},
        "destination": ctx.sink_destination(), "record_key": "id",
    });
    let job = job_id(&ctx.freight.create_job(&t, &spec).await?)?;
    let t0 = Instant::now();
    upload(ctx, &t, job, &chunks).await?;
    let took = t0.elapsed();
    let t1 = Instant::now();
    let started = ctx.freight.start(&t, job).await?;
    let start_took = t1.elapsed();
    // Free the system: the job's delivery is not what this measures.
    ctx.freight.cancel(&t, job).await?;
    ctx.freight
        .wait_terminal(
            &t,
            job,
            Duration::from_millis(100),
            Duration::from_secs(120),
        )
        .await?;
    if progress(&started, "total") as u64 != n {
        rep.note(format!(
            "the started job counts {} records, not {n}",
            started["progress"]["total"]
        ));
    }
    let rate = n as f64 / took.as_secs_f64();
    let base = n as f64 / copy.as_secs_f64();
    rep.figure("upload.records_per_s", rate, "records/s")
        .baseline("COPY into job_records shape", base, "records/s")
        .ratio_at_least(0.5);
    rep.figure("upload.s", took.as_secs_f64(), "s");
    rep.figure(
        "upload.mib_per_s",
        bytes as f64 / 1048576.0 / took.as_secs_f64(),
        "MiB/s",
    );
    rep.figure("start.ms", start_took.as_secs_f64() * 1000.0, "ms");
    rep.detail(
        "baseline",
        json!({"copy_s": copy.as_secs_f64(), "records_per_s": base, "table": mirrored}),
    );
    rep.detail(
        "upload",
        json!({"job_id": job, "bytes": bytes, "calls": chunks.len()}),
    );
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}

/// Cancels a job the scenario no longer needs and waits for it to stop. A failure is a
/// note on the report (with the error), not the end of the scenario: its figures stand.
pub async fn cancel_cleanup(ctx: &Ctx, t: &Tenant, job: Uuid, rep: &mut Report) {
    for attempt in 1..=3 {
        match ctx.freight.cancel(t, job).await {
            Ok(_) => break,
            Err(e) => {
                rep.note(format!(
                    "FREIGHT ERROR: cancelling job {job} (attempt {attempt}): {e:#}"
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    if let Err(e) = ctx
        .freight
        .wait_terminal(t, job, Duration::from_millis(100), Duration::from_secs(300))
        .await
    {
        rep.note(format!(
            "FREIGHT ERROR: job {job} did not stop after the cancel: {e:#}"
        ));
    }
}

#[derive(Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Records in the job [quick 200000, full 1000000].
    #[arg(long)]
    pub records: Option<u64>,
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u32,
    /// High enough for 4 workers x WORKER_CONCURRENCY batches.
    #[arg(long, default_value_t = 32)]
    pub parallelism: u32,
}

/// Throughput into Postgres once; appended to `<out>/scale.json` for `--workers`.
pub async fn scale(ctx: &Ctx, a: ScaleArgs) -> Result<Report> {
    let n = ctx.size(a.records, 200_000, 1_000_000);
    let workers = ctx.env["workers"].as_u64().unwrap_or(1);
    let mut rep = Report::new(
        &format!("scale-w{workers}"),
        ctx.env.clone(),
        json!({"records": n, "workers": workers, "batch_size": a.batch_size, "parallelism": a.parallelism}),
    );
    println!("scale: {n} records with {workers} worker process(es)");
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant(&format!("scale-w{workers}")).await?;
    let run = postgres_job(
        ctx,
        &t,
        "bench_scale",
        n,
        a.batch_size,
        a.parallelism,
        50_000,
    )
    .await?;
    let path = ctx.out.join("scale.json");
    let mut entries: Vec<Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["runs"].as_array().cloned())
        .unwrap_or_default();
    entries.retain(|e| e["workers"].as_u64() != Some(workers));
    entries.push(
        json!({"workers": workers, "records": n, "records_per_s": run.rate(),
                        "batch_size": a.batch_size, "parallelism": a.parallelism,
                        "at": chrono::Utc::now()}),
    );
    entries.sort_by_key(|e| e["workers"].as_u64());
    let one = entries
        .iter()
        .find(|e| e["workers"] == 1)
        .and_then(|e| e["records_per_s"].as_f64());
    let fig = rep.figure("postgres.records_per_s", run.rate(), "records/s");
    if let (Some(one), true) = (one, workers > 1) {
        fig.baseline("1 worker", one, "records/s");
    }
    rep.detail("postgres", run.json());
    std::fs::create_dir_all(&ctx.out)?;
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({
            "scenario": "scale", "unit": "records/s",
            "what": "throughput into Postgres with W worker processes (loadtest/run scale restarts the fleet)",
            "runs": entries,
        }))?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    rep.memory = watch.stop(Duration::ZERO);
    let rep = rep.finish(&ctx.out)?;
    println!("  -> {} (appended)", path.display());
    Ok(rep)
}

#[derive(Args, Clone, Debug)]
pub struct BatchSizesArgs {
    /// Records per run [quick 100000, full 1000000].
    #[arg(long)]
    pub records: Option<u64>,
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,5000,10000")]
    pub sizes: Vec<u32>,
    #[arg(long, default_value_t = 8)]
    pub parallelism: u32,
}

impl Default for BatchSizesArgs {
    fn default() -> Self {
        Self {
            records: None,
            sizes: vec![100, 500, 1000, 5000, 10_000],
            parallelism: 8,
        }
    }
}

pub async fn batch_sizes(ctx: &Ctx, a: BatchSizesArgs) -> Result<Report> {
    let n = ctx.size(a.records, 100_000, 1_000_000);
    let mut rep = Report::new(
        "batch-sizes",
        ctx.env.clone(),
        json!({"records": n, "sizes": a.sizes, "parallelism": a.parallelism}),
    );
    println!(
        "batch-sizes: {n} records each for batch sizes {:?}",
        a.sizes
    );
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant("batch-sizes").await?;
    let base = copy_baseline(ctx, n, 1000).await?;
    let base_rate = base.rate(n);
    let mut rows = Vec::new();
    let mut table = String::from(
        "| batch size | records/s | s | ratio to COPY |\n| ---: | ---: | ---: | ---: |\n",
    );
    for &b in &a.sizes {
        let run = postgres_job(ctx, &t, "bench_batch_sizes", n, b, a.parallelism, 50_000).await?;
        rep.figure(&format!("batch_{b}.records_per_s"), run.rate(), "records/s")
            .baseline("COPY dest+log", base_rate, "records/s");
        table += &format!(
            "| {b} | {} | {:.1} | {:.2} |\n",
            fmt_num(run.rate()),
            run.total.as_secs_f64(),
            run.rate() / base_rate
        );
        let mut row = run.json();
        row["batch_size"] = json!(b);
        rows.push(row);
    }
    println!("{table}");
    rep.detail("runs", rows);
    rep.detail("baseline", base.json(n));
    rep.detail("markdown", table);
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}

#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    /// How long to keep submitting [quick 120s, full 600s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// RSS growth is measured from the end of the warm-up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub warmup: Duration,
    /// One job every this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub every: Duration,
    /// Records per job (postgres destination).
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// A tick is skipped while this many of the soak's jobs are unfinished.
    #[arg(long, default_value_t = 4)]
    pub max_in_flight: usize,
}

impl Default for SoakArgs {
    fn default() -> Self {
        Self {
            duration: None,
            warmup: Duration::from_secs(60),
            every: Duration::from_secs(5),
            records: 20_000,
            max_in_flight: 4,
        }
    }
}

/// One `rss.<process>.growth_after_warmup` figure (target < 10 %) per watched process
/// that `keep` names; false when no process was watched.
pub fn rss_growth_figures(rep: &mut Report, memory: &Value, keep: impl Fn(&str) -> bool) -> bool {
    let Some(procs) = memory.as_object() else {
        return false;
    };
    for (name, m) in procs.iter().filter(|(name, _)| keep(name)) {
        if let Some(g) = m["growth_pct"].as_f64() {
            rep.figure(&format!("rss.{name}.growth_after_warmup"), g, "%")
                .below(10.0);
        }
    }
    true
}

/// POST → `finished_at` of a terminal job, in seconds (the poll that saw it may be late).
pub fn job_seconds(view: &Value, sent_ms: f64) -> f64 {
    (time_ms(view, "finished_at").unwrap_or_else(now_ms) - sent_ms) / 1000.0
}

pub async fn soak(ctx: &Ctx, a: SoakArgs) -> Result<Report> {
    let duration = ctx.size(
        a.duration,
        Duration::from_secs(120),
        Duration::from_secs(600),
    );
    let mut rep = Report::new(
        "soak",
        ctx.env.clone(),
        json!({"duration_s": duration.as_secs_f64(), "warmup_s": a.warmup.as_secs_f64(),
               "every_s": a.every.as_secs_f64(), "records_per_job": a.records,
               "max_in_flight": a.max_in_flight}),
    );
    println!(
        "soak: a {}-record postgres job every {:?} for {:?} (warm-up {:?})",
        a.records, a.every, duration, a.warmup
    );
    let t = ctx.tenant("soak").await?;
    let mut conn = ctx.dest_conn().await?;
    pg::recreate_dest_table(&mut conn, "bench_soak").await?;
    let watch = RssWatcher::start(&ctx.watch);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(a.every);
    let mut in_flight: Vec<(Uuid, f64)> = Vec::new();
    let (mut submitted, mut skipped, mut completed, mut records_done) = (0u64, 0u64, 0u64, 0u64);
    let mut job_secs = Vec::new();
    let mut bad = Vec::new();
    while t0.elapsed() < duration {
        tick.tick().await;
        // Reap finished jobs.
        let mut still = Vec::new();
        for (job, at) in in_flight.drain(..) {
            let view = ctx.freight.get_job(&t, job).await?;
            if crate::client::is_terminal(&view) {
                completed += 1;
                records_done += progress(&view, "succeeded") as u64;
                job_secs.push(job_seconds(&view, at));
                if view["status"] != "completed" {
                    bad.push(
                        json!({"job": job, "status": view["status"], "progress": view["progress"]}),
                    );
                }
            } else {
                still.push((job, at));
            }
        }
        in_flight = still;
        if t0.elapsed() >= duration {
            break;
        }
        if in_flight.len() >= a.max_in_flight {
            skipped += 1;
            continue;
        }
        let first = 1 + submitted * a.records;
        let body = records::ndjson_chunks(first, a.records, a.records);
        let spec = json!({
            "name": format!("soak {submitted}"), "source": {"type": "upload"},
            "destination": ctx.postgres_destination("bench_soak"),
            "record_key": "id", "batch_size": 1000, "parallelism": 4,
        });
        let at = now_ms();
        let job = job_id(&ctx.freight.create_job(&t, &spec).await?)?;
        upload(ctx, &t, job, &body).await?;
        ctx.freight.start(&t, job).await?;
        in_flight.push((job, at));
        submitted += 1;
    }
    let memory = watch.stop(a.warmup);
    // Let the last jobs finish (not counted in the RSS window).
    for (job, at) in in_flight {
        let (view, _) = ctx
            .freight
            .wait_terminal(
                &t,
                job,
                Duration::from_millis(100),
                Duration::from_secs(600),
            )
            .await?;
        completed += 1;
        records_done += progress(&view, "succeeded") as u64;
        job_secs.push(job_seconds(&view, at));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    rep.figure("jobs_submitted", submitted as f64, "jobs");
    rep.figure("jobs_completed", completed as f64, "jobs");
    rep.figure("ticks_skipped", skipped as f64, "ticks");
    rep.figure("records_per_s", records_done as f64 / elapsed, "records/s");
    let d = Dist::of(&job_secs);
    rep.figure("job_duration.p50", d.p50, "s");
    rep.figure("job_duration.p99", d.p99, "s");
    if !rss_growth_figures(&mut rep, &memory, |_| true) {
        rep.note("no --watch-pid given: no RSS figures");
    }
    if skipped > 0 {
        rep.note(format!(
            "{skipped} tick(s) skipped: {} jobs were still unfinished (Freight slower than the submission rate)",
            a.max_in_flight
        ));
    }
    if !bad.is_empty() {
        rep.note(format!("{} job(s) did not complete cleanly", bad.len()));
        rep.detail("bad_jobs", bad);
    }
    rep.detail("job_duration_s", d);
    rep.memory = memory;
    rep.finish(&ctx.out)
}
