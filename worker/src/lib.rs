//! Freight's worker process: an apalis worker pulling "deliver this batch" messages from
//! Redis, plus three companions — the heartbeater, the cancel listener and (on one worker
//! at a time) the reconciler.
//!
//! Lifecycle: connect, check (or apply) the schema, register a row in `workers` under an
//! id unique to this process start, run until SIGTERM; then stop fetching, let in-flight
//! batches finish within `WORKER_SHUTDOWN_GRACE`, mark the row stopped and exit 0. If the
//! apalis worker stops by itself (a Redis error), the process exits non-zero so its
//! supervisor restarts it; its claimed batches are taken over once their heartbeats expire.

#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod batch_handler;
pub mod cancel_listener;
pub mod engine;
pub mod heartbeater;
pub mod inflight;
pub mod reconciler;
pub mod upkeep;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use apalis::{
    layers::WorkerBuilderExt,
    prelude::{Monitor, ParallelizeExt, PollSnapshot, PollStrategy, WorkerBuilder},
};
use apalis_core::backend::ext::BackendExt;
use apalis_redis::RedisStorage;
use freight_core::{
    config::Settings,
    connectors::Connectors,
    queue::{DeliverBatch, Dispatcher, connection, queue_config},
    service::Services,
    store::db,
    store::workers::{self, NewWorker},
};
use futures::task::AtomicWaker;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    engine::Engine,
    inflight::Inflight,
    reconciler::{Reconciler, ReconcilerConfig},
};

/// Wakes the queue worker every `WORKER_POLL_INTERVAL` to look for due tasks, and at
/// once when this process has just queued a batch ([`Wakeup`]). apalis-redis only fetches
/// when woken, and its own interval strategies stall, so this one always
/// re-arms its timer.
struct Tick {
    interval: tokio::time::Interval,
    wakeup: Arc<Wakeup>,
}

impl Tick {
    fn every(d: Duration, wakeup: Arc<Wakeup>) -> Self {
        let mut interval = tokio::time::interval(d);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { interval, wakeup }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        self.wakeup.waker.register(cx.waker());
        let mut fired = self.wakeup.pending.swap(false, Ordering::AcqRel);
        while self.interval.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// A nudge for this process's queue worker: a finished batch whose ledger queued its
/// job's next batch pushes it and wakes the fetch at once. Waiting for the next tick
/// instead left the slot idle for half a poll interval per batch on average, about a
/// tenth of a 5,000-record batch's time.
#[derive(Default)]
pub struct Wakeup {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wakeup {
    pub fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }
}

pub struct Worker {
    engine: Arc<Engine>,
    redis: redis::aio::ConnectionManager,
    host: String,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        freight_core::metrics::handle();
        freight_core::metrics::set_tenant_labels(settings.metrics_tenant_labels);
        let db = db::connect(&settings.database)
            .await
            .context("cannot connect to Postgres (DATABASE_URL)")?;
        db::prepare_schema(&db, settings.migrate_on_start).await?;
        let mut redis = connection::connect(&settings.redis)
            .await
            .context("cannot connect to Redis (REDIS_URL)")?;
        connection::ping(&mut redis)
            .await
            .context("Redis does not answer PING (REDIS_URL)")?;
        let host = hostname();
        let dispatcher = Dispatcher::new(redis.clone(), &settings.redis.queue);
        let settings = Arc::new(settings);
        let engine = Engine {
            services: Services::new(db.clone(), dispatcher.clone(), settings.clone()),
            dispatcher,
            connectors: Connectors::new(settings.allow_private_destinations),
            worker_id: worker_id(&host),
            inflight: Arc::new(Inflight::default()),
            wakeup: Arc::new(Wakeup::default()),
            draining: AtomicBool::new(false),
            settings,
            db,
        };
        Ok(Self {
            engine: Arc::new(engine),
            redis,
            host,
        })
    }

    /// This process's worker id: host, pid and a random suffix, so replicas (and a
    /// restart under the same pid in a fresh container) never share one.
    pub fn id(&self) -> &str {
        &self.engine.worker_id
    }

    /// Runs until `shutdown` resolves (drains, exits Ok) or the apalis worker dies (Err).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        self.register().await?;
        let companions = CancellationToken::new();
        let mut tasks = self.start_companions(&companions).await?;
        let outcome = self.run_queue(shutdown).await;
        companions.cancel();
        while tasks.join_next().await.is_some() {}
        match tokio::time::timeout(
            Duration::from_secs(5),
            workers::mark_stopped(&engine.db, &engine.worker_id),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(worker.id = %engine.worker_id, "worker stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not mark the worker stopped"),
            Err(_) => tracing::warn!("timed out marking the worker stopped"),
        }
        outcome
    }

    /// This process's row in `workers`, which the fleet's fair share counts.
    async fn register(&self) -> anyhow::Result<()> {
        let (engine, settings) = (&self.engine, &self.engine.settings);
        let row = NewWorker {
            id: engine.worker_id.clone(),
            host: self.host.clone(),
            pid: std::process::id() as i32,
            queue: settings.redis.queue.clone(),
            concurrency: settings.worker.concurrency as i32,
        };
        workers::register(&engine.db, row)
            .await
            .context("cannot register in the workers table")?;
        tracing::info!(worker.id = %engine.worker_id, concurrency = settings.worker.concurrency, "worker started");
        Ok(())
    }

    /// The heartbeater, the cancel listener, the reconciler and the metrics server, until
    /// `stop`.
    async fn start_companions(&self, stop: &CancellationToken) -> anyhow::Result<JoinSet<()>> {
        let (engine, settings) = (&self.engine, &self.engine.settings);
        let mut tasks = JoinSet::new();
        tasks.spawn(heartbeater::run(engine.clone(), stop.clone()));
        tasks.spawn(cancel_listener::run(engine.clone(), stop.clone()));
        let config = ReconcilerConfig {
            interval: settings.worker.reconciler_interval,
            heartbeat_timeout: settings.worker.batch_stale_after,
            overdue_after: settings.worker.reconciler_overdue_after,
            scan_limit: 500,
            table_upkeep_interval: settings.worker.table_upkeep_interval,
        };
        tasks.spawn(Reconciler::new(engine.clone(), config).run(stop.clone()));
        if let Some(addr) = settings.worker.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (WORKER_METRICS_ADDR)"))?;
            tracing::info!(%addr, "worker metrics at /metrics");
            let token = settings.http.metrics_token.clone();
            tasks.spawn(serve_metrics(listener, token, stop.clone()));
        }
        Ok(tasks)
    }

    /// Runs the apalis queue worker until `shutdown` (then drains in-flight batches within
    /// `WORKER_SHUTDOWN_GRACE`). apalis stops a worker on any Redis error (a timeout, a
    /// flushed key); Postgres still holds every batch, so a fresh queue worker starts, and
    /// only if that keeps failing does this return an error for the supervisor to act on.
    async fn run_queue(&self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (engine, settings) = (&self.engine, &self.engine.settings);
        tokio::pin!(shutdown);
        let mut restarts: Vec<Instant> = Vec::new();
        loop {
            let monitor = queue_monitor(engine, self.redis.clone());
            let ctx = monitor.context();
            let run = monitor.run();
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => {
                    restarts.retain(|t| t.elapsed() < Duration::from_secs(60));
                    restarts.push(Instant::now());
                    let why = match r { Ok(()) => "it returned".to_owned(), Err(e) => e.to_string() };
                    if restarts.len() > MAX_RESTARTS_PER_MINUTE {
                        return Err(anyhow::anyhow!("the queue worker keeps stopping ({why}); giving up"));
                    }
                    tracing::error!(reason = %why, "the queue worker stopped; starting a new one");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                _ = &mut shutdown => {
                    tracing::info!(grace = ?settings.worker.shutdown_grace, "draining in-flight batches");
                    engine.draining.store(true, Ordering::Release);
                    let _ = ctx.shutdown();
                    if tokio::time::timeout(settings.worker.shutdown_grace, &mut run).await.is_err() {
                        tracing::warn!("shutdown grace expired; unfinished batches will be taken over by other workers");
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// The worker's own `/metrics` (Prometheus) and `/health`. With `METRICS_TOKEN` set,
/// `/metrics` answers only `Authorization: Bearer <token>`, as on the api.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    token: Option<secrecy::SecretString>,
    stop: CancellationToken,
) {
    use secrecy::ExposeSecret;
    let handle = freight_core::metrics::handle();
    let metrics = move |headers: axum::http::HeaderMap| {
        let allowed = token.as_ref().is_none_or(|token| {
            let sent = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            freight_core::secrets::tokens_match(sent.trim(), token.expose_secret())
        });
        let body = if allowed {
            Ok(handle.render())
        } else {
            Err(axum::http::StatusCode::UNAUTHORIZED)
        };
        std::future::ready(body)
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/health", axum::routing::get(|| std::future::ready("ok")));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "the worker metrics server stopped");
    }
}

/// More queue-worker restarts than this within a minute and the process gives up.
const MAX_RESTARTS_PER_MINUTE: usize = 5;

/// The apalis monitor with one queue worker. A fresh worker name each time: apalis
/// refuses a name whose heartbeat is recent.
fn queue_monitor(engine: &Arc<Engine>, redis: redis::aio::ConnectionManager) -> Monitor {
    let settings = engine.settings.clone();
    let concurrency = settings.worker.concurrency;
    let data = engine.clone();
    let wakeup = engine.wakeup.clone();
    Monitor::new().register(move |_| {
        // One message per fetch, and apalis fetches only for a free slot: a message is
        // never held here waiting for a slot, where the queue (and so
        // `Engine::next_in_slot`'s check for waiting work) could not see it.
        let storage = RedisStorage::<DeliverBatch>::new(redis.clone())
            .with_config(queue_config(&settings.redis.queue, 1));
        WorkerBuilder::new(format!("freight-{}", uuid::Uuid::new_v4()))
            .backend(
                storage
                    .poll_with_strategy(Tick::every(settings.worker.poll_interval, wakeup.clone())),
            )
            .data(data.clone())
            .concurrency(concurrency)
            .retry(apalis::prelude::RetryPolicy::retries(0))
            .timeout(settings.worker.batch_timeout)
            .layer(apalis::layers::prometheus::PrometheusLayer::default())
            .catch_panic()
            .parallelize(tokio::spawn)
            .build(batch_handler::deliver_batch)
    })
}

/// `freight worker`: build, then run until SIGTERM or Ctrl-C.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Worker::build(settings)
        .await?
        .run_until_stopped(shutdown)
        .await
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

fn worker_id(host: &str) -> String {
    let suffix: u32 = rand::rngs::OsRng.r#gen();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}
