//! The `api` scenario: request rates and latencies of the tenant API under concurrency,
//! against a bare `GET /health` in the same session.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Ctx,
    client::{Tenant, job_id},
    report::{Latency, Report},
    rss::RssWatcher,
};

#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// Tenants, each with its own key.
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    /// Concurrent clients in every phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Length of each of the three phases [quick 20s, full 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

impl Default for ApiArgs {
    fn default() -> Self {
        Self {
            tenants: 8,
            concurrency: 64,
            duration: None,
        }
    }
}

/// Request kinds of the mixed phase, one in ten of each cycle creating a job.
const MIX: [Kind; 10] = [
    Kind::Create,
    Kind::Get,
    Kind::List,
    Kind::Get,
    Kind::Get,
    Kind::List,
    Kind::Get,
    Kind::Get,
    Kind::List,
    Kind::Get,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Create,
    List,
    Get,
    Health,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Create => "create_job",
            Kind::List => "list_jobs",
            Kind::Get => "get_job",
            Kind::Health => "health",
        }
    }
}

#[derive(Default)]
struct Tally {
    latency: BTreeMap<Kind, Latency>,
    errors: BTreeMap<(Kind, String), u64>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for (k, l) in o.latency {
            self.latency.entry(k).or_default().add(&l);
        }
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

fn small_job(seq: u64) -> Value {
    json!({
        "name": format!("api bench {seq}"),
        "source": {"type": "inline", "records": (0..5).map(|i| json!({"id": seq * 10 + i, "v": "x"})).collect::<Vec<_>>()},
        "record_key": "id", "batch_size": 5,
    })
}

async fn one(
    ctx: &Ctx,
    t: &Tenant,
    kind: Kind,
    job: Uuid,
    seq: u64,
    dest: &Value,
) -> Result<(bool, String, Option<Uuid>)> {
    let f = &ctx.freight;
    let req = match kind {
        Kind::Create => {
            let mut body = small_job(seq);
            body["destination"] = dest.clone();
            f.tenant_req(t, Method::POST, "/api/v1/jobs").json(&body)
        }
        Kind::List => f.tenant_req(t, Method::GET, "/api/v1/jobs?limit=20"),
        Kind::Get => f.tenant_req(t, Method::GET, &format!("/api/v1/jobs/{job}")),
        Kind::Health => f.http.get(f.url("/health")),
    };
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let created = if kind == Kind::Create && status.is_success() {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| job_id(&v).ok())
    } else {
        None
    };
    Ok((status.is_success(), status.as_u16().to_string(), created))
}

/// Runs `concurrency` clients for `duration`; client `i` speaks for tenant `i % tenants`
/// and cycles through `kinds`.
async fn phase(
    ctx: &Arc<Ctx>,
    tenants: &[(Tenant, Vec<Uuid>)],
    concurrency: usize,
    duration: Duration,
    kinds: &'static [Kind],
) -> (Tally, Duration) {
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let ctx = ctx.clone();
        let (tenant, mut jobs) = tenants[i % tenants.len()].clone();
        tasks.push(tokio::spawn(async move {
            let ctx = &*ctx;
            let dest = ctx.sink_destination();
            let mut tally = Tally::default();
            let mut n = i as u64;
            while Instant::now() < deadline {
                let kind = kinds[n as usize % kinds.len()];
                let job = jobs[(n as usize / kinds.len()) % jobs.len()];
                let seq = (i as u64) << 32 | n;
                n += 1;
                let start = Instant::now();
                match one(ctx, &tenant, kind, job, seq, &dest).await {
                    Ok((ok, status, created)) => {
                        tally
                            .latency
                            .entry(kind)
                            .or_default()
                            .record(start.elapsed());
                        if !ok {
                            *tally.errors.entry((kind, status)).or_default() += 1;
                        }
                        if let Some(id) = created {
                            jobs.push(id);
                        }
                    }
                    Err(e) => {
                        let what = if e.to_string().contains("timed out") {
                            "timeout"
                        } else {
                            "transport"
                        };
                        *tally.errors.entry((kind, what.into())).or_default() += 1;
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(tally) = t.await {
            total.merge(tally);
        }
    }
    (total, t0.elapsed())
}

fn summarise(
    rep: &mut Report,
    phase: &str,
    tally: &mut Tally,
    took: Duration,
) -> BTreeMap<Kind, f64> {
    let mut rates = BTreeMap::new();
    let mut table = serde_json::Map::new();
    for (kind, lat) in tally.latency.iter_mut() {
        let rps = lat.count() as f64 / took.as_secs_f64();
        rates.insert(*kind, rps);
        let errors: u64 = tally
            .errors
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, n)| n)
            .sum();
        let mut s = lat.summary();
        s["requests_per_s"] = json!(rps);
        s["errors"] = json!(errors);
        table.insert(kind.name().into(), s);
    }
    let errors: BTreeMap<String, u64> = tally
        .errors
        .iter()
        .map(|((k, s), n)| (format!("{}:{s}", k.name()), *n))
        .collect();
    if !errors.is_empty() {
        rep.note(format!("{phase}: non-2xx or failed requests: {errors:?}"));
    }
    rep.detail(
        phase,
        json!({"seconds": took.as_secs_f64(), "kinds": table, "errors": errors}),
    );
    rates
}

pub async fn api(ctx: &Ctx, a: ApiArgs) -> Result<Report> {
    let duration = ctx.size(a.duration, Duration::from_secs(20), Duration::from_secs(60));
    let mut rep = Report::new(
        "api",
        ctx.env.clone(),
        json!({"tenants": a.tenants, "concurrency": a.concurrency, "phase_duration_s": duration.as_secs_f64(),
               "mix": "per 10 requests: 1 create (inline, 5 records, to the sink), 3 list (limit 20), 6 get"}),
    );
    println!(
        "api: {} tenants, {} clients, three phases of {:?}",
        a.tenants, a.concurrency, duration
    );
    let watch = RssWatcher::start(&ctx.watch);
    let dest = ctx.sink_destination();
    let mut tenants = Vec::new();
    for i in 0..a.tenants.max(1) {
        let t = ctx.tenant(&format!("api-{i}")).await?;
        let mut jobs = Vec::new();
        for j in 0..4 {
            let mut body = small_job(j);
            body["destination"] = dest.clone();
            jobs.push(job_id(&ctx.freight.create_job(&t, &body).await?)?);
        }
        tenants.push((t, jobs));
    }
    let shared = Arc::new(ctx.clone());

    println!("  phase 1: mixed create/list/get");
    let (mut mixed, took) = phase(&shared, &tenants, a.concurrency, duration, &MIX).await;
    let mixed_rates = summarise(&mut rep, "mixed", &mut mixed, took);
    for kind in [Kind::Create, Kind::List, Kind::Get] {
        if let Some(l) = mixed.latency.get_mut(&kind) {
            let n = kind.name();
            rep.figure(
                &format!("mixed.{n}.requests_per_s"),
                mixed_rates[&kind],
                "requests/s",
            );
            rep.figure(&format!("mixed.{n}.p50"), l.ms(0.5), "ms");
            rep.figure(&format!("mixed.{n}.p99"), l.ms(0.99), "ms");
            rep.figure(&format!("mixed.{n}.p999"), l.ms(0.999), "ms");
        }
    }

    println!("  phase 2: GET /api/v1/jobs/{{id}} only");
    let (mut gets, took) = phase(&shared, &tenants, a.concurrency, duration, &[Kind::Get]).await;
    let get_rates = summarise(&mut rep, "get_only", &mut gets, took);

    println!("  phase 3: GET /health (baseline)");
    let (mut health, took) =
        phase(&shared, &tenants, a.concurrency, duration, &[Kind::Health]).await;
    let health_rates = summarise(&mut rep, "health", &mut health, took);

    let health_rps = health_rates.get(&Kind::Health).copied().unwrap_or(0.0);
    if let Some(l) = gets.latency.get_mut(&Kind::Get) {
        rep.figure(
            "get_job.requests_per_s",
            get_rates[&Kind::Get],
            "requests/s",
        )
        .baseline("GET /health", health_rps, "requests/s")
        .ratio_at_least(0.5);
        rep.figure("get_job.p50", l.ms(0.5), "ms");
        rep.figure("get_job.p99", l.ms(0.99), "ms").below(10.0);
        rep.figure("get_job.p999", l.ms(0.999), "ms");
    }
    if let Some(l) = health.latency.get_mut(&Kind::Health) {
        rep.figure("health.requests_per_s", health_rps, "requests/s");
        rep.figure("health.p50", l.ms(0.5), "ms");
        rep.figure("health.p99", l.ms(0.99), "ms");
    }
    rep.note(format!(
        "the bench's {} clients share the machine's {} cores with Freight",
        a.concurrency, ctx.env["cores"]
    ));
    rep.memory = watch.stop(Duration::ZERO);
    rep.finish(&ctx.out)
}
