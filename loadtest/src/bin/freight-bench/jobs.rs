//! Scenarios about single jobs' timing: pickup, fairness, cancel, retry.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::future::try_join_all;
use serde_json::{Value, json};

use crate::{
    Ctx,
    client::{Tenant, job_id, progress, time_ms},
    pg, records,
    report::{Dist, Report},
    rss::RssWatcher,
    throughput::now_ms,
};

fn inline_records(first: u64, n: u64, extra: impl Fn(u64) -> String) -> Value {
    let recs: Vec<Value> = (first..first + n)
        .map(|i| serde_json::from_str(&records::json(i, &extra(i))).expect("valid JSON"))
        .collect();
    json!({"type": "inline", "records": recs})
}

// ---------------------------------------------------------------- pickup

#[derive(Args, Clone, Debug)]
pub struct PickupArgs {
    /// Jobs, one at a time [quick 50, full 200].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Records per job.
    #[arg(long, default_value_t = 10)]
    pub records: u64,
}

impl Default for PickupArgs {
    fn default() -> Self {
        Self {
            jobs: None,
            records: 10,
        }
    }
}

pub async fn pickup(ctx: &Ctx, a: PickupArgs) -> Result<Report> {
    let n = ctx.size(a.jobs, 50, 200);
    let mut rep = Report::new(
        "pickup",
        ctx.env.clone(),
        json!({"jobs": n, "records_per_job": a.records}),
    );
    println!(
        "pickup: {n} inline jobs of {} records, one at a time",
        a.records
    );
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant("pickup").await?;
    let (mut first, mut done) = (Vec::new(), Vec::new());
    for i in 0..n {
        let spec = json!({
            "name": format!("pickup {i}"),
            "source": inline_records(1, a.records, |_| String::new()),
            "destination": ctx.sink_destination(), "record_key": "id",
            "batch_size": a.records,
        });
        let sent = now_ms();
        let job = job_id(&ctx.freight.create_job(&t, &spec).await?)?;
        let s = ctx
            .sink
            .wait_unique(job, 1, Duration::from_secs(30))
            .await?;
        let Some(first_ms) = s.first_ms else {
            bail!("job {job}: nothing reached the sink within 30 s");
        };
        first.push(first_ms - sent);
        let (view, at) = ctx
            .freight
            .wait_terminal(&t, job, Duration::from_millis(20), Duration::from_secs(60))
            .await?;
        let end = time_ms(&view, "finished_at")
            .unwrap_or_else(|| now_ms() - at.elapsed().as_secs_f64() * 1000.0);
        done.push(end - sent);
        if view["status"] != "completed" {
            rep.note(format!("job {job} ended {}", view["status"]));
        }
    }
    let f = Dist::of(&first);
    let d = Dist::of(&done);
    rep.figure("first_write.p50", f.p50, "ms");
    rep.figure("first_write.p99", f.p99, "ms").below(500.0);
    rep.figure("first_write.max", f.max, "ms");
    rep.figure("completed.p50", d.p50, "ms");
    rep.figure("completed.p99", d.p99, "ms");
    rep.detail("first_write_ms", f);
    rep.detail("completed_ms", d);
    rep.detail("first_write_samples_ms", &first);
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}

// ---------------------------------------------------------------- fairness

#[derive(Args, Clone, Debug)]
pub struct FairnessArgs {
    /// Records in tenant A's big job [quick 200000, full 1000000].
    #[arg(long)]
    pub big: Option<u64>,
    /// Small jobs, one per other tenant, submitted at once.
    #[arg(long, default_value_t = 20)]
    pub small: usize,
    /// Records per small job (to the sink).
    #[arg(long, default_value_t = 100)]
    pub small_records: u64,
    /// The big job's parallelism (64 = as greedy as the API allows).
    #[arg(long, default_value_t = 64)]
    pub big_parallelism: u32,
    #[arg(long, default_value_t = 1000)]
    pub big_batch_size: u32,
}

impl Default for FairnessArgs {
    fn default() -> Self {
        Self {
            big: None,
            small: 20,
            small_records: 100,
            big_parallelism: 64,
            big_batch_size: 1000,
        }
    }
}

/// Submits one small job per tenant at once; each one's POST → terminal, in ms (by the
/// job's `finished_at`, same machine clock).
async fn small_wave(ctx: &Ctx, tenants: &[Tenant], records: u64, wave: &str) -> Result<Vec<f64>> {
    let futs = tenants.iter().enumerate().map(|(i, t)| async move {
        let spec = json!({
            "name": format!("fairness {wave} {i}"),
            "source": inline_records(1, records, |_| String::new()),
            "destination": ctx.sink_destination(), "record_key": "id", "batch_size": 100,
        });
        let sent = now_ms();
        let job = job_id(&ctx.freight.create_job(t, &spec).await?)?;
        let (view, at) = ctx
            .freight
            .wait_terminal(t, job, Duration::from_millis(200), Duration::from_secs(300))
            .await?;
        if view["status"] != "completed" {
            bail!("small job {job} ended {}", view["status"]);
        }
        let end = time_ms(&view, "finished_at")
            .unwrap_or_else(|| now_ms() - at.elapsed().as_secs_f64() * 1000.0);
        Ok::<f64, anyhow::Error>(end - sent)
    });
    try_join_all(futs).await
}

pub async fn fairness(ctx: &Ctx, a: FairnessArgs) -> Result<Report> {
    let big = ctx.size(a.big, 200_000, 1_000_000);
    let mut rep = Report::new(
        "fairness",
        ctx.env.clone(),
        json!({"big_records": big, "big_parallelism": a.big_parallelism, "big_batch_size": a.big_batch_size,
               "small_jobs": a.small, "small_records": a.small_records}),
    );
    println!(
        "fairness: {} small jobs of {} records, idle and beside a {big}-record job",
        a.small, a.small_records
    );
    let watch = RssWatcher::start(&ctx.watch);
    let mut smalls = Vec::new();
    for i in 0..a.small {
        smalls.push(ctx.tenant(&format!("fair-{i}")).await?);
    }
    let big_tenant = ctx.tenant("fair-big").await?;

    let idle = small_wave(ctx, &smalls, a.small_records, "idle").await?;

    let mut conn = ctx.dest_conn().await?;
    pg::recreate_dest_table(&mut conn, "bench_fairness").await?;
    let chunks = records::ndjson_chunks(1, big, 50_000);
    let spec = json!({
        "name": format!("fairness big {big}"), "source": {"type": "upload"},
        "destination": ctx.postgres_destination("bench_fairness"), "record_key": "id",
        "batch_size": a.big_batch_size, "parallelism": a.big_parallelism,
    });
    let job = job_id(&ctx.freight.create_job(&big_tenant, &spec).await?)?;
    for c in chunks {
        ctx.freight.upload_ndjson(&big_tenant, job, c).await?;
    }
    ctx.freight.start(&big_tenant, job).await?;
    let progress_mark = (big / 20).min(20_000) as i64;
    let before = ctx
        .freight
        .wait_until(&big_tenant, job, Duration::from_secs(300), |v| {
            progress(v, "succeeded") >= progress_mark
        })
        .await?;
    let loaded = small_wave(ctx, &smalls, a.small_records, "loaded").await;
    let after = ctx.freight.get_job(&big_tenant, job).await?;
    crate::throughput::cancel_cleanup(ctx, &big_tenant, job, &mut rep).await;
    let end = ctx.freight.get_job(&big_tenant, job).await?;
    let loaded = loaded?;
    if after["status"] != "running" {
        rep.note(format!(
            "the big job was {} (not running) when the small jobs finished: the loaded figure is not fully under load",
            after["status"]
        ));
    }
    let (i, l) = (Dist::of(&idle), Dist::of(&loaded));
    rep.figure("idle.p50", i.p50, "ms");
    rep.figure("idle.p99", i.p99, "ms");
    rep.figure("loaded.p50", l.p50, "ms");
    rep.figure("loaded.p99", l.p99, "ms")
        .baseline("idle p99", i.p99, "ms")
        .ratio_at_most(3.0);
    rep.detail("idle_ms", i);
    rep.detail("loaded_ms", l);
    rep.detail(
        "big_job",
        json!({"job_id": job, "succeeded_before_wave": progress(&before, "succeeded"),
               "succeeded_after_wave": progress(&after, "succeeded"),
               "status_after_wave": after["status"], "final_status": end["status"]}),
    );
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}

// ---------------------------------------------------------------- cancel

#[derive(Args, Clone, Debug)]
pub struct CancelArgs {
    /// Jobs, cancelled one after the other [quick 30, full 100].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Records per job (to the sink).
    #[arg(long, default_value_t = 2000)]
    pub records: u64,
    /// Latency the sink adds to every request while this runs.
    #[arg(long, default_value_t = 5)]
    pub latency_ms: u64,
    /// Records the sink must have received before the cancel.
    #[arg(long, default_value_t = 50)]
    pub after: u64,
    /// Wait after the last job so late writes are seen.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub settle: Duration,
}

impl Default for CancelArgs {
    fn default() -> Self {
        Self {
            jobs: None,
            records: 2000,
            latency_ms: 5,
            after: 50,
            settle: Duration::from_secs(3),
        }
    }
}

pub async fn cancel(ctx: &Ctx, a: CancelArgs) -> Result<Report> {
    ctx.sink.faults(a.latency_ms, 0.0).await?;
    let r = cancel_inner(ctx, a).await;
    ctx.sink.faults(0, 0.0).await?;
    r
}

async fn cancel_inner(ctx: &Ctx, a: CancelArgs) -> Result<Report> {
    let n = ctx.size(a.jobs, 30, 100);
    let mut rep = Report::new(
        "cancel",
        ctx.env.clone(),
        json!({"jobs": n, "records_per_job": a.records, "sink_latency_ms": a.latency_ms,
               "cancel_after_records": a.after, "settle_s": a.settle.as_secs_f64(),
               "batch_size": 100, "parallelism": 4}),
    );
    println!(
        "cancel: {n} jobs of {} records, sink latency {} ms, cancelled after {} records",
        a.records, a.latency_ms, a.after
    );
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant("cancel").await?;
    let mut cancelled = Vec::new();
    let (mut to_terminal, mut answer) = (Vec::new(), Vec::new());
    for i in 0..n {
        let spec = json!({
            "name": format!("cancel {i}"),
            "source": inline_records(1, a.records, |_| String::new()),
            "destination": ctx.sink_destination(), "record_key": "id",
            "batch_size": 100, "parallelism": 4,
        });
        let job = job_id(&ctx.freight.create_job(&t, &spec).await?)?;
        let s = ctx
            .sink
            .wait_unique(job, a.after, Duration::from_secs(60))
            .await?;
        if s.unique < a.after {
            bail!(
                "job {job}: only {} records reached the sink in 60 s",
                s.unique
            );
        }
        let at = now_ms();
        let t0 = Instant::now();
        ctx.freight.cancel(&t, job).await?;
        answer.push(t0.elapsed().as_secs_f64() * 1000.0);
        let (view, seen) = ctx
            .freight
            .wait_terminal(&t, job, Duration::from_millis(20), Duration::from_secs(60))
            .await?;
        to_terminal.push(
            time_ms(&view, "finished_at")
                .map(|f| f - at)
                .unwrap_or_else(|| (seen - t0).as_secs_f64() * 1000.0),
        );
        if view["status"] != "cancelled" {
            rep.note(format!(
                "job {job} ended {} rather than cancelled",
                view["status"]
            ));
        }
        cancelled.push((job, at, view));
    }
    tokio::time::sleep(a.settle).await;
    let (mut last_write, mut after_cancel) = (Vec::new(), Vec::new());
    let mut per_job = Vec::new();
    for (job, at, view) in &cancelled {
        let s = ctx.sink.job(*job).await?;
        let attempts = ctx.sink.attempts(*job).await?;
        let late = attempts.values().flatten().filter(|t| **t > *at).count();
        let last = s.last_ms.map(|l| l - at).unwrap_or(0.0);
        last_write.push(last);
        after_cancel.push(late as f64);
        per_job.push(json!({"job_id": job, "last_write_after_cancel_ms": last,
                            "requests_after_cancel": late, "sink": s,
                            "status": view["status"], "progress": view["progress"]}));
    }
    let lw = Dist::of(&last_write);
    let tt = Dist::of(&to_terminal);
    rep.figure("last_write_after_cancel.p50", lw.p50, "ms");
    rep.figure("last_write_after_cancel.p99", lw.p99, "ms")
        .below(1000.0);
    rep.figure("last_write_after_cancel.max", lw.max, "ms");
    rep.figure("cancel_to_terminal.p50", tt.p50, "ms");
    rep.figure("cancel_to_terminal.p99", tt.p99, "ms");
    rep.figure("cancel_answer.p99", Dist::of(&answer).p99, "ms");
    rep.figure(
        "requests_after_cancel.mean",
        Dist::of(&after_cancel).mean,
        "requests/job",
    );
    rep.detail("last_write_after_cancel_ms", lw);
    rep.detail("cancel_to_terminal_ms", tt);
    rep.detail("jobs", per_job);
    rep.note("a negative last-write figure means the job's last write arrived before the cancel request was sent");
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}

// ---------------------------------------------------------------- retry

#[derive(Args, Clone, Debug)]
pub struct RetryArgs {
    /// Records in the job [quick 200, full 1000]; a third fail once, a third twice.
    #[arg(long)]
    pub records: Option<u64>,
    #[arg(long, default_value_t = 500)]
    pub initial_interval_ms: u64,
    #[arg(long, default_value_t = 2.0)]
    pub multiplier: f64,
    #[arg(long, default_value_t = 20)]
    pub batch_size: u64,
    #[arg(long, default_value_t = 4)]
    pub parallelism: u32,
}

impl Default for RetryArgs {
    fn default() -> Self {
        Self {
            records: None,
            initial_interval_ms: 500,
            multiplier: 2.0,
            batch_size: 20,
            parallelism: 4,
        }
    }
}

pub async fn retry(ctx: &Ctx, a: RetryArgs) -> Result<Report> {
    let n = ctx.size(a.records, 200, 1000);
    let mut rep = Report::new(
        "retry",
        ctx.env.clone(),
        json!({"records": n, "initial_interval_ms": a.initial_interval_ms, "multiplier": a.multiplier,
               "jitter": 0.0, "batch_size": a.batch_size, "parallelism": a.parallelism,
               "failures": "record i fails its first (i mod 3) attempts with 503"}),
    );
    println!(
        "retry: {n} records, a third failing once and a third twice; delay {} ms x{}",
        a.initial_interval_ms, a.multiplier
    );
    let watch = RssWatcher::start(&ctx.watch);
    let t = ctx.tenant("retry").await?;
    let spec = json!({
        "name": "retry lateness",
        "source": inline_records(1, n, |i| match i % 3 { 0 => String::new(), k => format!("\"_fail_first\":{k}") }),
        "destination": ctx.sink_destination(), "record_key": "id",
        "batch_size": a.batch_size, "parallelism": a.parallelism,
        "retry": {"max_attempts": 5, "initial_interval_ms": a.initial_interval_ms,
                  "multiplier": a.multiplier, "max_interval_ms": 600_000, "jitter": 0.0},
    });
    let job = job_id(&ctx.freight.create_job(&t, &spec).await?)?;
    let (view, _) = ctx
        .freight
        .wait_terminal(
            &t,
            job,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )
        .await?;
    if view["status"] != "completed" {
        rep.note(format!(
            "the job ended {} ({})",
            view["status"], view["progress"]
        ));
    }
    let attempts = ctx.sink.attempts(job).await?;
    // Record seq → its attempts' arrivals; seqs are 1..=n in submission order.
    let mut by_seq: HashMap<u64, Vec<f64>> = HashMap::new();
    for (key, mut arrivals) in attempts {
        let seq: u64 = key
            .rsplit_once(':')
            .and_then(|(_, s)| s.parse().ok())
            .with_context(|| format!("odd key {key}"))?;
        arrivals.sort_by(|a, b| a.total_cmp(b));
        by_seq.insert(seq, arrivals);
    }
    // The end of each batch attempt as the sink saw it: its last arrival.
    let mut batch_end: HashMap<(u64, usize), f64> = HashMap::new();
    for (seq, arrivals) in &by_seq {
        let b = (seq - 1) / a.batch_size;
        for (k, at) in arrivals.iter().enumerate() {
            let e = batch_end.entry((b, k)).or_insert(*at);
            *e = e.max(*at);
        }
    }
    let delay = |k: usize| a.initial_interval_ms as f64 * a.multiplier.powi(k as i32 - 1);
    let (mut from_batch, mut from_record) = (Vec::new(), Vec::new());
    let mut wrong_attempts = 0;
    for (seq, arrivals) in &by_seq {
        let b = (seq - 1) / a.batch_size;
        let expected_attempts = (seq % 3) as usize + 1;
        if arrivals.len() != expected_attempts {
            wrong_attempts += 1;
        }
        for k in 1..arrivals.len() {
            // arrivals[k] is attempt k+1; the delay before it is delay(k).
            from_batch.push(arrivals[k] - (batch_end[&(b, k - 1)] + delay(k)));
            from_record.push(arrivals[k] - (arrivals[k - 1] + delay(k)));
        }
    }
    if by_seq.len() as u64 != n {
        rep.note(format!("the sink saw {} of {n} records", by_seq.len()));
    }
    if wrong_attempts > 0 {
        rep.note(format!(
            "{wrong_attempts} record(s) were attempted a different number of times than their failures call for"
        ));
    }
    let fb = Dist::of(&from_batch);
    let fr = Dist::of(&from_record);
    rep.figure("lateness.p50", fb.p50, "ms");
    rep.figure("lateness.p99", fb.p99, "ms").below(250.0);
    rep.figure("lateness.min", fb.min, "ms");
    rep.figure("lateness_from_record_arrival.p99", fr.p99, "ms");
    rep.figure("retries", from_batch.len() as f64, "retries");
    rep.detail(
        "lateness_ms",
        json!({
            "definition": "arrival of attempt k+1 minus (end of the batch's attempt k, i.e. the last arrival of that batch attempt at the sink, plus the policy's delay initial x multiplier^(k-1))",
            "from_batch_end": fb,
            "from_record_arrival": fr,
        }),
    );
    rep.detail(
        "job",
        json!({"job_id": job, "status": view["status"], "progress": view["progress"]}),
    );
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}
