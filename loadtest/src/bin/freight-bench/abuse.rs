//! What a hostile tenant's cheap requests cost the api: the CPU time of one long NDJSON
//! line sent in small chunks, and the peak memory of a JSON array (upload) and an inline
//! job (create) of empty objects. Each figure is measured on the api process itself
//! (`/proc/PID`), so the api must be watched (`--watch-pid api=PID`, as loadtest/run does).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::stream;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    Ctx,
    client::{Tenant, job_id},
    report::Report,
    rss::{self, Watched},
};

#[derive(Args, Clone, Debug)]
pub struct AbuseArgs {
    /// Size of the long NDJSON line, and of each JSON body, in MiB.
    #[arg(long, default_value_t = 10)]
    pub mib: usize,
    /// The chunk size the long line is sent in (each one a chunk of its own).
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    /// Only one of the three measurements (`long-line`, `array`, `inline`), so that each
    /// can start from a freshly started api (loadtest/run does).
    #[arg(long)]
    pub only: Option<Part>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    LongLine,
    Array,
    Inline,
}

impl Default for AbuseArgs {
    fn default() -> Self {
        Self {
            mib: 10,
            chunk: 512,
            only: None,
        }
    }
}

pub async fn abuse(ctx: &Ctx, a: AbuseArgs) -> Result<Report> {
    let api = ctx
        .watch
        .iter()
        .find(|w| w.name == "api")
        .cloned()
        .context("abuse measures the api process: pass --watch-pid api=PID (loadtest/run does)")?;
    let name = match a.only {
        None => "abuse".to_owned(),
        Some(part) => format!(
            "abuse-{}",
            part.to_possible_value().expect("named").get_name()
        ),
    };
    let mut rep = Report::new(
        &name,
        ctx.env.clone(),
        json!({"body_mib": a.mib, "line_chunk_bytes": a.chunk}),
    );
    let bytes = a.mib << 20;
    let t = ctx.tenant("abuse").await?;
    let wants = |part| a.only.is_none_or(|only| only == part);
    if wants(Part::LongLine) {
        long_line_cpu(ctx, &api, &t, &a, &mut rep).await?;
    }
    if wants(Part::Array) {
        array_upload(ctx, &api, &t, bytes, &mut rep).await?;
    }
    if wants(Part::Inline) {
        inline_create(ctx, &api, &t, bytes, &mut rep).await?;
    }
    rep.finish(&ctx.out)
}

/// One line of `--mib` MiB (a JSON object with one long string) in `--chunk`-byte chunks:
/// the api's CPU time for it.
async fn long_line_cpu(
    ctx: &Ctx,
    api: &Watched,
    t: &Tenant,
    a: &AbuseArgs,
    rep: &mut Report,
) -> Result<()> {
    let line = long_line(a.mib << 20);
    let job = upload_job(ctx, t).await?;
    let cpu_before = cpu_seconds(api)?;
    let started = Instant::now();
    let chunks: Vec<Result<Bytes, std::io::Error>> = line
        .chunks(a.chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let resp = ctx
        .freight
        .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{job}/records"))
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .timeout(Duration::from_secs(600))
        .send()
        .await;
    let (status, body) = outcome(resp).await;
    let took = started.elapsed();
    // The parse may outlive the response (a timed-out request): let the api settle.
    let cpu = settle_cpu(api, cpu_before).await?;
    println!(
        "abuse: one {} MiB NDJSON line in {}-byte chunks: HTTP {status} after {:.1} s, api CPU {cpu:.2} s",
        a.mib,
        a.chunk,
        took.as_secs_f64()
    );
    rep.figure("long_line.api_cpu_s", cpu, "s");
    rep.figure("long_line.wall_s", took.as_secs_f64(), "s");
    rep.detail(
        "long_line",
        json!({"status": status, "body": body, "bytes": line.len(), "chunks": line.len().div_ceil(a.chunk)}),
    );
    Ok(())
}

/// A JSON array of empty objects, uploaded: the api's peak memory for it.
async fn array_upload(
    ctx: &Ctx,
    api: &Watched,
    t: &Tenant,
    bytes: usize,
    rep: &mut Report,
) -> Result<()> {
    let array = empty_objects(bytes);
    let job = upload_job(ctx, t).await?;
    let (answer, mem) = peak_during(api, async {
        let resp = ctx
            .freight
            .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{job}/records"))
            .header("content-type", "application/json")
            .body(array.clone())
            .timeout(Duration::from_secs(600))
            .send()
            .await;
        outcome(resp).await
    })
    .await?;
    memory_figures(rep, "array_upload", array.len(), mem, answer);
    Ok(())
}

/// The same records inline in a create: the api's peak memory for it. The job then runs;
/// nothing here waits for it.
async fn inline_create(
    ctx: &Ctx,
    api: &Watched,
    t: &Tenant,
    bytes: usize,
    rep: &mut Report,
) -> Result<()> {
    let mut inline = br#"{"name":"abuse inline","destination":{"type":"http","url":""#.to_vec();
    inline.extend_from_slice(ctx.sink.records_url().as_bytes());
    inline.extend_from_slice(br#""},"batch_size":10000,"source":{"type":"inline","records":"#);
    let records = empty_objects(bytes - inline.len() - 2);
    inline.extend_from_slice(&records);
    inline.extend_from_slice(b"}}");
    let (answer, mem) = peak_during(api, async {
        let resp = ctx
            .freight
            .tenant_req(t, Method::POST, "/api/v1/jobs")
            .header("content-type", "application/json")
            .body(inline.clone())
            .timeout(Duration::from_secs(600))
            .send()
            .await;
        outcome(resp).await
    })
    .await?;
    if let Some(id) = answer.1.get("id").and_then(Value::as_str) {
        ctx.freight.cancel(t, id.parse()?).await.ok();
    }
    memory_figures(rep, "inline_create", inline.len(), mem, answer);
    Ok(())
}

async fn upload_job(ctx: &Ctx, t: &Tenant) -> Result<uuid::Uuid> {
    let spec = json!({"name": "abuse", "source": {"type": "upload"},
                      "destination": ctx.sink_destination()});
    job_id(&ctx.freight.create_job(t, &spec).await?)
}

/// `{"blob":"xxxx…"}` of exactly `bytes` bytes, without a newline.
fn long_line(bytes: usize) -> Vec<u8> {
    let mut line = br#"{"blob":""#.to_vec();
    line.resize(bytes - 2, b'x');
    line.extend_from_slice(b"\"}");
    line
}

/// `[{},{},…]` of about `bytes` bytes.
fn empty_objects(bytes: usize) -> Vec<u8> {
    let n = (bytes.saturating_sub(2) / 3).max(1);
    let mut body = Vec::with_capacity(n * 3 + 1);
    body.push(b'[');
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{}");
    }
    body.push(b']');
    body
}

async fn outcome(resp: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        // The api answering before the body is all sent (a refused upload) closes the
        // connection under the client, which then reports the send, not the answer.
        Err(e) => (
            0,
            Value::String(format!(
                "no answer read (connection closed while sending?): {e:#}"
            )),
        ),
    }
}

/// The api's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_seconds(p: &Watched) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
        .with_context(|| format!("reading /proc/{}/stat", p.pid))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}

/// CPU seconds used since `before`, once the process has been idle for a second.
async fn settle_cpu(p: &Watched, before: f64) -> Result<f64> {
    let mut last = cpu_seconds(p)?;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_seconds(p)?;
        if now - last < 0.05 {
            return Ok(now - before);
        }
        last = now;
    }
    Ok(last - before)
}

/// Resident memory around one request: at rest before, and the peak during it (the
/// kernel's high-water mark, reset first; or samples every 5 ms where it cannot be).
struct Memory {
    before_kib: u64,
    peak_kib: u64,
    exact: bool,
}

async fn peak_during<T>(p: &Watched, request: impl Future<Output = T>) -> Result<(T, Memory)>
where
    T: Send,
{
    let before_kib = rss::rss_kib(p.pid).context("api RSS")?;
    let exact = std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5").is_ok();
    let pid = p.pid;
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss::rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        #[allow(unreachable_code)]
        peak
    });
    let out = request.await;
    let sampled = {
        sampler.abort();
        rss::rss_kib(p.pid).unwrap_or(0)
    };
    let hwm = exact.then(|| hwm_kib(p.pid)).flatten();
    Ok((
        out,
        Memory {
            before_kib,
            peak_kib: hwm.unwrap_or(sampled).max(before_kib),
            exact: hwm.is_some(),
        },
    ))
}

fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn memory_figures(
    rep: &mut Report,
    name: &str,
    body_bytes: usize,
    mem: Memory,
    (code, answer): (u16, Value),
) {
    let body_mib = body_bytes as f64 / 1048576.0;
    let growth_mib = mem.peak_kib.saturating_sub(mem.before_kib) as f64 / 1024.0;
    println!(
        "abuse: {name}: {body_mib:.1} MiB body: HTTP {code}; api RSS {:.1} MiB at rest, peak {:.1} MiB (+{growth_mib:.1} MiB, {:.1}x the body){}",
        mem.before_kib as f64 / 1024.0,
        mem.peak_kib as f64 / 1024.0,
        growth_mib / body_mib,
        if mem.exact { "" } else { " (sampled)" }
    );
    rep.figure(
        &format!("{name}.rss_growth_per_body"),
        growth_mib / body_mib,
        "x",
    )
    .below(4.0);
    rep.figure(
        &format!("{name}.peak_rss_mib"),
        mem.peak_kib as f64 / 1024.0,
        "MiB",
    );
    rep.detail(
        name,
        json!({"status": code, "answer": answer, "body_bytes": body_bytes,
               "rss_before_kib": mem.before_kib, "rss_peak_kib": mem.peak_kib,
               "peak_from": if mem.exact { "VmHWM" } else { "5 ms samples" },
               "ok": code == StatusCode::ACCEPTED.as_u16() || code == StatusCode::CREATED.as_u16()}),
    );
}
