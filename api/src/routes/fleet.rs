//! Operator views of the fleet: `GET /api/v1/workers` and `GET /api/v1/queues`.

use axum::{Json, extract::State};
use freight_core::{
    queue::RedisDepth,
    store::fleet::{self, Depth, LiveWorker},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Operator,
    error::{ApiResult, Problem},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(workers))
        .routes(routes!(queues))
}

/// A worker counts as live while its last heartbeat is younger than this many intervals.
pub const LIVE_HEARTBEATS: u32 = 3;

/// Live workers: those that heartbeated within three heartbeat intervals. A killed
/// worker leaves this list within that time.
#[utoipa::path(get, path = "/api/v1/workers", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Vec<LiveWorker>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn workers(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Vec<LiveWorker>>> {
    let within = state.settings.worker.heartbeat_interval * LIVE_HEARTBEATS;
    Ok(Json(fleet::live_workers(&state.db, within).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDepth {
    /// The queue (Redis key prefix, `REDIS_QUEUE`).
    pub name: String,
    /// Batches by state, from Postgres (the truth).
    #[serde(flatten)]
    pub batches: Depth,
    /// Messages in Redis (a hint: Postgres rebuilds them if lost).
    pub redis: RedisDepth,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queues {
    pub queues: Vec<QueueDepth>,
}

/// Queue depth: batches pending, queued, running and retry-scheduled, open dead letters,
/// and the messages waiting in Redis.
#[utoipa::path(get, path = "/api/v1/queues", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Queues), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem)))]
async fn queues(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Queues>> {
    let batches = fleet::depth(&state.db).await?;
    let redis = state.services.dispatcher.redis_depth().await?;
    Ok(Json(Queues {
        queues: vec![QueueDepth {
            name: state.settings.redis.queue.clone(),
            batches,
            redis,
        }],
    }))
}

/// Keeps the queue-depth and worker gauges fresh: one pass every few seconds per api
/// replica, so a scrape never runs a query.
pub async fn refresh_gauges(state: AppState, stop: tokio_util::sync::CancellationToken) {
    use freight_core::metrics::{QUEUE_DEPTH, WORKERS};
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(d) = fleet::depth(&state.db).await {
            for (s, n) in [
                ("pending", d.pending),
                ("queued", d.queued),
                ("running", d.running),
                ("retry_scheduled", d.retry_scheduled),
                ("dead", d.dead),
            ] {
                metrics::gauge!(QUEUE_DEPTH, "state" => s).set(n as f64);
            }
        }
        if let Ok(r) = state.services.dispatcher.redis_depth().await {
            metrics::gauge!(QUEUE_DEPTH, "state" => "redis_ready").set(r.ready as f64);
            metrics::gauge!(QUEUE_DEPTH, "state" => "redis_scheduled").set(r.scheduled as f64);
        }
        let within = state.settings.worker.heartbeat_interval * LIVE_HEARTBEATS;
        if let Ok(w) = fleet::live_workers(&state.db, within).await {
            metrics::gauge!(WORKERS).set(w.len() as f64);
        }
    }
}
