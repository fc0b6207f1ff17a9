//! Talking to Freight (as an operator and as tenants) and to the sink, over HTTP.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Job states after which nothing changes.
pub const TERMINAL: &[&str] = &["completed", "completed_with_errors", "failed", "cancelled"];

/// A reqwest client sized for many concurrent connections to one host.
pub fn http_client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(300))
        .build()
        .expect("a reqwest client with these settings always builds")
}

#[derive(Clone)]
pub struct Freight {
    pub api: String,
    pub http: Client,
    admin_token: String,
}

/// A tenant the bench created, with its key.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub key: String,
}

/// Error unless 2xx; the message carries the status and the body.
pub async fn check(resp: Response, what: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: HTTP {status}: {}", truncate(&body, 600))
}

/// At most the first `n` characters of `s`.
pub fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

#[derive(Deserialize)]
struct CreatedKey {
    key: String,
}

impl Freight {
    pub fn new(api: &str, admin_token: &str) -> Self {
        Self {
            api: api.trim_end_matches('/').to_owned(),
            http: http_client(),
            admin_token: admin_token.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
    }

    pub fn tenant_req(&self, t: &Tenant, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&t.key)
    }

    /// A new tenant with its own key, limits raised so the bench measures the engine,
    /// not the rate limiter: 1,000,000 requests/s, 1,000 concurrent jobs.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let resp = self
            .admin(Method::POST, "/api/v1/admin/tenants")
            .json(&json!({"name": name}))
            .send()
            .await?;
        let Created { id } = check(resp, "create tenant").await?.json().await?;
        let resp = self
            .admin(Method::PATCH, &format!("/api/v1/admin/tenants/{id}"))
            .json(&json!({
                "rate_limit_per_second": 1_000_000,
                "rate_limit_burst": 1_000_000,
                "max_concurrent_jobs": 1_000,
            }))
            .send()
            .await?;
        check(resp, "raise tenant limits").await?;
        let resp = self
            .admin(
                Method::POST,
                &format!("/api/v1/admin/tenants/{id}/api-keys"),
            )
            .json(&json!({"name": "bench"}))
            .send()
            .await?;
        let CreatedKey { key } = check(resp, "create api key").await?.json().await?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
            key,
        })
    }

    /// `POST /api/v1/jobs`; returns the job object.
    pub async fn create_job(&self, t: &Tenant, spec: &Value) -> Result<Value> {
        let resp = self
            .tenant_req(t, Method::POST, "/api/v1/jobs")
            .json(spec)
            .send()
            .await?;
        Ok(check(resp, "create job").await?.json().await?)
    }

    /// `POST /api/v1/jobs/{id}/records` with an NDJSON body.
    pub async fn upload_ndjson(&self, t: &Tenant, job: Uuid, body: Bytes) -> Result<Value> {
        let resp = self
            .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{job}/records"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        Ok(check(resp, "upload records").await?.json().await?)
    }

    pub async fn start(&self, t: &Tenant, job: Uuid) -> Result<Value> {
        let resp = self
            .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{job}/start"))
            .send()
            .await?;
        Ok(check(resp, "start job").await?.json().await?)
    }

    pub async fn get_job(&self, t: &Tenant, job: Uuid) -> Result<Value> {
        let resp = self
            .tenant_req(t, Method::GET, &format!("/api/v1/jobs/{job}"))
            .send()
            .await?;
        Ok(check(resp, "get job").await?.json().await?)
    }

    /// Cancels; a job already finished (409) is not an error here.
    pub async fn cancel(&self, t: &Tenant, job: Uuid) -> Result<StatusCode> {
        let resp = self
            .tenant_req(t, Method::POST, &format!("/api/v1/jobs/{job}/cancel"))
            .send()
            .await?;
        if resp.status() == StatusCode::CONFLICT {
            return Ok(StatusCode::CONFLICT);
        }
        Ok(check(resp, "cancel job").await?.status())
    }

    /// Polls `GET /jobs/{id}` every `every` until the job is terminal; returns the job and
    /// the instant the poll saw it terminal. Fails after `limit`.
    pub async fn wait_terminal(
        &self,
        t: &Tenant,
        job: Uuid,
        every: Duration,
        limit: Duration,
    ) -> Result<(Value, Instant)> {
        let deadline = Instant::now() + limit;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let view = self.get_job(t, job).await?;
            if is_terminal(&view) {
                return Ok((view, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!(
                    "job {job} not terminal after {limit:?} (stuck?): status {}, progress {}",
                    view["status"],
                    view["progress"]
                );
            }
        }
    }

    /// Polls until `pred(job)` holds (or the job is terminal); returns the job.
    pub async fn wait_until(
        &self,
        t: &Tenant,
        job: Uuid,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let view = self.get_job(t, job).await?;
            if pred(&view) || is_terminal(&view) {
                return Ok(view);
            }
            if Instant::now() > deadline {
                bail!(
                    "job {job}: condition not reached after {limit:?}: status {}, progress {}",
                    view["status"],
                    view["progress"]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `/ready` to answer 200.
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.http.get(self.url("/ready")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not become ready within {limit:?}", self.api);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn is_terminal(job: &Value) -> bool {
    job["status"]
        .as_str()
        .is_some_and(|s| TERMINAL.contains(&s))
}

pub fn job_id(job: &Value) -> Result<Uuid> {
    job["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no job id in {job}"))
}

pub fn progress(job: &Value, field: &str) -> i64 {
    job["progress"][field].as_i64().unwrap_or(0)
}

/// `finished_at` (or another RFC 3339 field) as unix ms.
pub fn time_ms(job: &Value, field: &str) -> Option<f64> {
    let s = job[field].as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp_micros() as f64 / 1000.0)
}

/// The sink's per-job figures (`GET /_stats/{job}`).
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
pub struct SinkJob {
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub transient_failures: u64,
    pub permanent_failures: u64,
    pub first_ms: Option<f64>,
    pub last_ms: Option<f64>,
}

#[derive(Clone)]
pub struct SinkClient {
    pub base: String,
    http: Client,
}

impl SinkClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: http_client(),
        }
    }

    /// Where Freight should send records (any path but the `/_` control ones).
    pub fn records_url(&self) -> String {
        format!("{}/records", self.base)
    }

    pub async fn job(&self, job: Uuid) -> Result<SinkJob> {
        let resp = self
            .http
            .get(format!("{}/_stats/{job}", self.base))
            .send()
            .await
            .context("sink unreachable")?;
        Ok(check(resp, "sink stats").await?.json().await?)
    }

    pub async fn attempts(&self, job: Uuid) -> Result<std::collections::HashMap<String, Vec<f64>>> {
        let resp = self
            .http
            .get(format!("{}/_attempts?job={job}", self.base))
            .send()
            .await?;
        Ok(check(resp, "sink attempts").await?.json().await?)
    }

    pub async fn faults(&self, latency_ms: u64, failure_rate: f64) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/_faults", self.base))
            .json(&json!({"latency_ms": latency_ms, "failure_rate": failure_rate}))
            .send()
            .await?;
        check(resp, "sink faults").await?;
        Ok(())
    }

    pub async fn reset(&self) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/_reset", self.base))
            .send()
            .await
            .context("sink unreachable")?;
        check(resp, "sink reset").await?;
        Ok(())
    }

    /// The sink's own ceiling: `bodies` sent straight to it (one request each, with the
    /// idempotency keys of a made-up job, `concurrency` at a time), in requests/s.
    pub async fn capacity(&self, bodies: Vec<Bytes>, concurrency: usize) -> Result<f64> {
        use futures::{StreamExt, TryStreamExt, stream};
        let job = Uuid::new_v4();
        let n = bodies.len();
        let url = self.records_url();
        let t0 = Instant::now();
        stream::iter(bodies.into_iter().enumerate())
            .map(|(i, body)| {
                let req = self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("{job}:{}", i + 1))
                    .body(body);
                async move { check(req.send().await?, "sink capacity").await.map(drop) }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    }

    /// Waits until the sink has `n` unique writes for the job, or `limit` passes.
    pub async fn wait_unique(&self, job: Uuid, n: u64, limit: Duration) -> Result<SinkJob> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.job(job).await?;
            if s.unique >= n || Instant::now() > deadline {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
