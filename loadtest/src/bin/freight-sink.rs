//! `freight-sink`: an HTTP endpoint that accepts records the way a tenant's would, counts
//! them, and injects faults on request.
//!
//! Freight's HTTP connector sends one request per record, the record as the JSON body and
//! `Idempotency-Key: {job_id}:{record_seq}`. For every request the sink:
//!
//! - notes the arrival instant (unix ms) under its key, for `GET /_attempts?job=<id>`;
//! - answers 422 if the record carries `"_fail": "permanent"`;
//! - answers 503 while the key has had no more than `_fail_first` attempts;
//! - answers 503 with probability `failure_rate` (`POST /_faults`);
//! - otherwise counts a *write*: unique the first time the key is written, a duplicate
//!   after that; per job, the first and last write instants (taken at arrival);
//! - waits `latency_ms` (`POST /_faults`) before answering, whatever the answer.
//!
//! Control: `GET /_stats`, `GET /_stats/{job_id}`, `GET /_attempts?job=<id>`,
//! `POST /_faults` `{latency_ms, failure_rate}`, `POST /_reset` (counters and faults).
//!
//! State is split into shards by key (each a `Mutex<HashMap>` held for a few hundred
//! nanoseconds); per-job figures live in the shard too and are summed on read, so no lock
//! is shared by all requests.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    serve::ListenerExt,
};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

const SHARDS: usize = 64;

#[derive(Parser)]
#[command(
    name = "freight-sink",
    about = "A counting, fault-injecting HTTP destination for Freight load tests"
)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: SocketAddr,
}

/// One idempotency key: `{job_id}:{record_seq}`.
type Key = (Uuid, u64);

#[derive(Default)]
struct KeyState {
    /// Arrival instants of every attempt, unix ms.
    arrivals: Vec<f64>,
    written: bool,
}

#[derive(Default, Clone, Copy, Serialize)]
struct JobStats {
    /// Requests received for the job (every attempt, whatever the answer).
    received: u64,
    /// Keys written once.
    unique: u64,
    /// Writes of keys already written.
    duplicates: u64,
    /// Answered 503 (`_fail_first` or the failure rate).
    transient_failures: u64,
    /// Answered 422 (`_fail: permanent`).
    permanent_failures: u64,
    /// First and last write, unix ms (at arrival).
    first_ms: Option<f64>,
    last_ms: Option<f64>,
}

impl JobStats {
    fn merge(&mut self, o: &JobStats) {
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.transient_failures += o.transient_failures;
        self.permanent_failures += o.permanent_failures;
        self.first_ms = min_opt(self.first_ms, o.first_ms);
        self.last_ms = max_opt(self.last_ms, o.last_ms);
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[derive(Default)]
struct Shard {
    keys: HashMap<Key, KeyState>,
    jobs: HashMap<Uuid, JobStats>,
}

struct Sink {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Requests without a usable `Idempotency-Key`: answered 200, counted only here.
    unkeyed: AtomicU64,
    latency_ms: AtomicU64,
    /// Failure rate in parts per million.
    failure_ppm: AtomicU64,
    rng: AtomicU64,
}

impl Sink {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            | 1;
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            unkeyed: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
            failure_ppm: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// A random draw in 0..1_000_000 (splitmix64 over an atomic counter).
    fn draw_ppm(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 1_000_000
    }

    fn job_stats(&self, job: Option<Uuid>) -> (JobStats, HashMap<Uuid, JobStats>) {
        let mut total = JobStats::default();
        let mut jobs: HashMap<Uuid, JobStats> = HashMap::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("not poisoned");
            for (id, s) in &shard.jobs {
                if job.is_some_and(|j| j != *id) {
                    continue;
                }
                total.merge(s);
                jobs.entry(*id).or_default().merge(s);
            }
        }
        (total, jobs)
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

fn parse_key(headers: &HeaderMap) -> Option<Key> {
    let raw = headers.get("idempotency-key")?.to_str().ok()?;
    let (job, seq) = raw.split_once(':')?;
    Some((job.parse().ok()?, seq.parse().ok()?))
}

/// What a record asks of the sink: nothing (the usual case, found without parsing), a
/// permanent failure, or transient failures for its first N attempts.
enum Marker {
    None,
    Permanent,
    FailFirst(u64),
}

fn marker(body: &[u8]) -> Marker {
    if !body.windows(6).any(|w| w == b"\"_fail") {
        return Marker::None;
    }
    let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(body) else {
        return Marker::None;
    };
    if record.get("_fail").and_then(Value::as_str) == Some("permanent") {
        return Marker::Permanent;
    }
    match record.get("_fail_first").and_then(Value::as_u64) {
        Some(n) if n > 0 => Marker::FailFirst(n),
        _ => Marker::None,
    }
}

async fn accept(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = now_ms();
    let status = match parse_key(&headers) {
        None => {
            sink.unkeyed.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
        Some(key) => {
            let marker = marker(&body);
            let random_failure = {
                let ppm = sink.failure_ppm.load(Ordering::Relaxed);
                ppm > 0 && sink.draw_ppm() < ppm
            };
            let mut shard = sink.shard(&key).lock().expect("not poisoned");
            let state = shard.keys.entry(key).or_default();
            state.arrivals.push(at);
            let attempt = state.arrivals.len() as u64;
            let outcome = match marker {
                Marker::Permanent => StatusCode::UNPROCESSABLE_ENTITY,
                Marker::FailFirst(n) if attempt <= n => StatusCode::SERVICE_UNAVAILABLE,
                _ if random_failure => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::OK,
            };
            let first_write = outcome == StatusCode::OK && !state.written;
            if outcome == StatusCode::OK {
                state.written = true;
            }
            let job = shard.jobs.entry(key.0).or_default();
            job.received += 1;
            match outcome {
                StatusCode::OK => {
                    if first_write {
                        job.unique += 1;
                    } else {
                        job.duplicates += 1;
                    }
                    job.first_ms = min_opt(job.first_ms, Some(at));
                    job.last_ms = max_opt(job.last_ms, Some(at));
                }
                StatusCode::UNPROCESSABLE_ENTITY => job.permanent_failures += 1,
                _ => job.transient_failures += 1,
            }
            outcome
        }
    };
    let latency = sink.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    status
}

async fn stats(State(sink): State<Arc<Sink>>) -> Json<Value> {
    let (total, jobs) = sink.job_stats(None);
    Json(json!({
        "totals": total,
        "unkeyed": sink.unkeyed.load(Ordering::Relaxed),
        "faults": faults_view(&sink),
        "jobs": jobs,
    }))
}

async fn job_stats(State(sink): State<Arc<Sink>>, Path(job): Path<Uuid>) -> Json<JobStats> {
    Json(sink.job_stats(Some(job)).0)
}

#[derive(Deserialize)]
struct AttemptsQuery {
    job: Uuid,
}

/// Per key of the job (`{job_id}:{seq}`), the arrival instants of its attempts, unix ms.
async fn attempts(
    State(sink): State<Arc<Sink>>,
    Query(q): Query<AttemptsQuery>,
) -> Json<HashMap<String, Vec<f64>>> {
    let mut out = HashMap::new();
    for shard in &sink.shards {
        let shard = shard.lock().expect("not poisoned");
        for ((job, seq), state) in &shard.keys {
            if *job == q.job {
                out.insert(format!("{job}:{seq}"), state.arrivals.clone());
            }
        }
    }
    Json(out)
}

#[derive(Deserialize)]
struct Faults {
    latency_ms: Option<u64>,
    failure_rate: Option<f64>,
}

fn faults_view(sink: &Sink) -> Value {
    json!({
        "latency_ms": sink.latency_ms.load(Ordering::Relaxed),
        "failure_rate": sink.failure_ppm.load(Ordering::Relaxed) as f64 / 1_000_000.0,
    })
}

async fn set_faults(
    State(sink): State<Arc<Sink>>,
    Json(f): Json<Faults>,
) -> Result<Json<Value>, (StatusCode, String)> {
    if let Some(rate) = f.failure_rate {
        if !(0.0..=1.0).contains(&rate) {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                "failure_rate must be between 0 and 1".into(),
            ));
        }
        sink.failure_ppm
            .store((rate * 1_000_000.0).round() as u64, Ordering::Relaxed);
    }
    if let Some(ms) = f.latency_ms {
        sink.latency_ms.store(ms, Ordering::Relaxed);
    }
    Ok(Json(faults_view(&sink)))
}

async fn reset(State(sink): State<Arc<Sink>>) -> StatusCode {
    for shard in &sink.shards {
        *shard.lock().expect("not poisoned") = Shard::default();
    }
    sink.unkeyed.store(0, Ordering::Relaxed);
    sink.latency_ms.store(0, Ordering::Relaxed);
    sink.failure_ppm.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = Arc::new(Sink::new());
    let app = Router::new()
        .route("/_stats", get(stats))
        .route("/_stats/{job_id}", get(job_stats))
        .route("/_attempts", get(attempts))
        .route("/_faults", post(set_faults))
        .route("/_reset", post(reset))
        .fallback(accept)
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!(
        "freight-sink listening on http://{}",
        listener.local_addr()?
    );
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
