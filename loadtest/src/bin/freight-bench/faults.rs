//! `fault-soak`: jobs at a steady share of peak throughput for ten minutes while
//! `loadtest/run fault-soak` injects one fault a minute (a worker SIGKILLed, every
//! Postgres connection terminated, Redis restarted, the destination failing). The bench
//! behaves like a careful tenant: it retries what the API documents as retryable (503,
//! a dropped connection) with an `Idempotency-Key` on creates, and counts it; anything
//! else is an error a tenant would see. At the end every job must be `completed` with
//! every record delivered exactly once: rows in the destination table (upsert by id) and
//! unique idempotency keys at the sink.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::Args;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Ctx,
    client::{Tenant, is_terminal, job_id, progress, truncate},
    pg, records,
    report::{Dist, Report},
    rss::RssWatcher,
    throughput::{job_seconds, now_ms, rss_growth_figures},
};

#[derive(Args, Clone, Debug)]
pub struct FaultSoakArgs {
    /// How long jobs are submitted, e.g. `10m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub duration: Duration,
    /// Memory is compared from this point on.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub warmup: Duration,
    /// Offered load in records/s; default `--share` of the last `throughput` report's
    /// end-to-end rate into Postgres (or of 50,000 without one).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 0.8)]
    pub share: f64,
    /// Records per job. Jobs alternate between a Postgres table (upsert) and the sink.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,
}

/// One submitted job and how to check it.
struct Submitted {
    id: Uuid,
    sent_ms: f64,
    to_sink: bool,
}

#[derive(Default)]
struct Tally {
    retries: u64,
    errors: Vec<String>,
}

/// Sends a request again while it fails the way the API says is retryable: a 503
/// (a dependency is down; `Retry-After` says when to come back) or no answer at all.
/// Gives up after two minutes. Anything else is returned, error status included.
async fn send_retrying(
    tally: &mut Tally,
    what: &str,
    build: impl Fn() -> RequestBuilder,
) -> Result<(StatusCode, Value)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let wait = match build().send().await {
            Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Duration::from_millis(500), Duration::from_secs),
            Ok(resp) => {
                let status = resp.status();
                let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                return Ok((status, body));
            }
            Err(_) => Duration::from_millis(500),
        };
        if Instant::now() > deadline {
            bail!("{what}: still unavailable after 2 minutes");
        }
        tally.retries += 1;
        tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
    }
}

fn expect(tally: &mut Tally, what: &str, got: (StatusCode, Value), ok: &[u16]) -> Option<Value> {
    if ok.contains(&got.0.as_u16()) {
        Some(got.1)
    } else {
        tally.errors.push(format!(
            "{what}: {} {}",
            got.0,
            truncate(&got.1.to_string(), 300)
        ));
        None
    }
}

/// Creates (idempotently), uploads and starts one job; `None` when a step failed in a
/// way a tenant would see (recorded in `tally`).
async fn submit(
    ctx: &Ctx,
    t: &Tenant,
    spec: &Value,
    body: Bytes,
    tally: &mut Tally,
) -> Result<Option<Uuid>> {
    let key = Uuid::new_v4().to_string();
    let create = send_retrying(tally, "create", || {
        ctx.freight
            .tenant_req(t, Method::POST, "/api/v1/jobs")
            .header("idempotency-key", &key)
            .json(spec)
    })
    .await?;
    let Some(job) = expect(tally, "create", create, &[200, 201]) else {
        return Ok(None);
    };
    let id = job_id(&job)?;
    let upload = send_retrying(tally, "upload", || {
        ctx.freight
            .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{id}/records"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
    })
    .await?;
    // A retried upload whose first try had committed would answer 409-free but double
    // the job: the final check (total == n) catches it.
    if expect(tally, "upload", upload, &[202]).is_none() {
        return Ok(None);
    }
    let start = send_retrying(tally, "start", || {
        ctx.freight
            .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{id}/start"))
    })
    .await?;
    // A start retried after it had committed answers 409 (already started): fine.
    if expect(tally, "start", start, &[202, 409]).is_none() {
        return Ok(None);
    }
    Ok(Some(id))
}

/// The offered rate: `--rate`, or `--share` of the last throughput report's figure.
fn offered_rate(ctx: &Ctx, a: &FaultSoakArgs) -> (f64, String) {
    if let Some(r) = a.rate {
        return (r, "--rate".into());
    }
    let peak = std::fs::read_to_string(ctx.out.join("throughput.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| {
            v["figures"]
                .as_array()?
                .iter()
                .find(|f| f["name"] == "postgres.records_per_s")?["value"]
                .as_f64()
        });
    match peak {
        Some(p) => (
            p * a.share,
            format!("{} x throughput.json's {p:.0} records/s", a.share),
        ),
        None => (
            50_000.0 * a.share,
            format!("{} x 50,000 records/s (no throughput.json)", a.share),
        ),
    }
}

pub async fn fault_soak(ctx: &Ctx, a: FaultSoakArgs) -> Result<Report> {
    let (rate, rate_from) = offered_rate(ctx, &a);
    let every = Duration::from_secs_f64(a.records as f64 / rate);
    let mut rep = Report::new(
        "fault-soak",
        ctx.env.clone(),
        json!({"duration_s": a.duration.as_secs_f64(), "offered_records_per_s": rate,
               "offered_from": rate_from, "records_per_job": a.records,
               "job_every_s": every.as_secs_f64()}),
    );
    println!(
        "fault-soak: a {}-record job every {:.2} s ({rate:.0} records/s, {rate_from}) for {:?}",
        a.records,
        every.as_secs_f64(),
        a.duration
    );
    let t = ctx.tenant("fault-soak").await?;
    pg::recreate_dest_table(&mut ctx.dest_conn().await?, "bench_fault_soak").await?;
    let mut dest = ctx.postgres_destination("bench_fault_soak");
    dest["mode"] = json!("upsert");
    let watch = RssWatcher::start(&ctx.watch);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tally = Tally::default();
    let mut jobs: Vec<Submitted> = Vec::new();
    let mut n_jobs = 0u64;
    while t0.elapsed() < a.duration {
        tick.tick().await;
        let to_sink = n_jobs % 2 == 1;
        let first = 1 + n_jobs * a.records;
        n_jobs += 1;
        let body = records::ndjson_chunks(first, a.records, a.records).remove(0);
        let spec = json!({
            "name": format!("fault-soak {n_jobs}"), "source": {"type": "upload"},
            "destination": if to_sink { ctx.sink_destination() } else { dest.clone() },
            "record_key": "id", "batch_size": 5000, "parallelism": 8,
            "retry": {"max_attempts": 20, "initial_interval_ms": 500, "multiplier": 2.0,
                      "max_interval_ms": 10000, "jitter": 0.2},
        });
        let sent_ms = now_ms();
        if let Some(id) = submit(ctx, &t, &spec, body, &mut tally).await? {
            jobs.push(Submitted {
                id,
                sent_ms,
                to_sink,
            });
        }
    }
    let memory = watch.stop(a.warmup);
    let submitted_s = t0.elapsed().as_secs_f64();
    println!(
        "fault-soak: {} jobs submitted in {submitted_s:.0} s; waiting for them to finish",
        jobs.len()
    );

    // Every job must finish `completed` with every record once.
    let mut job_secs = Vec::new();
    let mut bad = Vec::new();
    let mut delivered = 0u64;
    let drain_deadline = Instant::now() + Duration::from_secs(1800);
    for j in &jobs {
        let view = loop {
            let got = send_retrying(&mut tally, "get job", || {
                ctx.freight
                    .tenant_req(&t, Method::GET, &format!("/api/v1/jobs/{}", j.id))
            })
            .await?;
            if got.0 == StatusCode::OK && is_terminal(&got.1) {
                break got.1;
            }
            if Instant::now() > drain_deadline {
                bail!("job {} not finished after 30 minutes: {}", j.id, got.1);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        job_secs.push(job_seconds(&view, j.sent_ms));
        let succeeded = progress(&view, "succeeded") as u64;
        let total = progress(&view, "total") as u64;
        delivered += succeeded;
        let sink_unique = if j.to_sink {
            Some(ctx.sink.job(j.id).await?.unique)
        } else {
            None
        };
        if view["status"] != "completed"
            || succeeded != a.records
            || total != a.records
            || sink_unique.is_some_and(|u| u != a.records)
        {
            bad.push(
                json!({"job": j.id, "status": view["status"], "progress": view["progress"],
                            "sink_unique": sink_unique}),
            );
        }
    }
    let pg_jobs = jobs.iter().filter(|j| !j.to_sink).count() as u64;
    // A fresh connection: the faults terminate every connection to this database.
    let rows = pg::count_rows(&mut ctx.dest_conn().await?, "bench_fault_soak").await? as u64;
    let elapsed = t0.elapsed().as_secs_f64();

    rep.figure("jobs_submitted", n_jobs as f64, "jobs");
    rep.figure("jobs_bad", bad.len() as f64, "jobs").below(0.5);
    rep.figure("tenant_visible_errors", tally.errors.len() as f64, "errors")
        .below(0.5);
    rep.figure("retried_requests", tally.retries as f64, "requests");
    rep.figure(
        "destination_rows_missing_or_extra",
        (rows as i64 - (pg_jobs * a.records) as i64).unsigned_abs() as f64,
        "rows",
    )
    .below(0.5);
    rep.figure("records_per_s", delivered as f64 / elapsed, "records/s");
    rep.figure("offered_records_per_s", rate, "records/s");
    let d = Dist::of(&job_secs);
    rep.figure("job_duration.p50", d.p50, "s");
    rep.figure("job_duration.p99", d.p99, "s");
    // Workers are killed and restarted by the faults, and the sink is the load generator
    // (it keeps every idempotency key it saw): only the api lives through the whole run
    // as Freight.
    rss_growth_figures(&mut rep, &memory, |name| name == "api");
    if !tally.errors.is_empty() {
        rep.detail("tenant_visible_errors", &tally.errors);
    }
    if !bad.is_empty() {
        rep.detail("bad_jobs", bad);
    }
    rep.detail("job_duration_s", d);
    rep.detail(
        "faults",
        "injected by loadtest/run: see loadtest/results/logs/faults.log",
    );
    rep.memory = memory;
    rep.finish(&ctx.out)
}
