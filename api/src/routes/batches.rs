//! A job's batches, and where its retries stand: `GET /api/v1/jobs/{id}/batches` and
//! `GET /api/v1/jobs/{id}/retry-status`.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use entity::batch::BatchStatus;
use freight_core::repo::{
    page::Keyset,
    reads::{self, BatchRow, ScheduledRetryRow},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiResult, Problem},
    extract::{ApiPath, ApiQuery},
    state::AppState,
    views::Page,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_batches))
        .routes(routes!(retry_status))
}

/// A contiguous range of a job's records, delivered together.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    pub id: Uuid,
    /// 1, 2, … in record order.
    pub seq: i32,
    pub status: BatchStatus,
    /// Deliveries started so far (the first try included).
    pub attempts: i32,
    pub record_count: i32,
    pub first_record_seq: i64,
    pub last_record_seq: i64,
    /// Records of this batch waiting for a retry.
    pub retrying_records: i32,
    /// When the next attempt is due (`retry_scheduled`, or queued with a delay).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The worker running it, or that ran its last attempt.
    pub worker_id: Option<String>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<BatchRow> for BatchView {
    fn from(b: BatchRow) -> Self {
        Self {
            id: b.id,
            seq: b.seq,
            status: b.status,
            attempts: b.attempts,
            record_count: b.record_count,
            first_record_seq: b.first_record_seq,
            last_record_seq: b.last_record_seq,
            retrying_records: b.retrying_records,
            next_attempt_at: b.next_attempt_at,
            last_error: b.last_error,
            worker_id: b.worker_id,
            dispatched_at: b.dispatched_at,
            heartbeat_at: b.heartbeat_at,
            created_at: b.created_at,
            updated_at: b.updated_at,
            finished_at: b.finished_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BatchesQuery {
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The job's batches, by `seq` ascending.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/batches", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path), BatchesQuery),
    responses((status = 200, body = Page<BatchView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_batches(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<BatchesQuery>,
) -> ApiResult<Json<Page<BatchView>>> {
    let page = Keyset::parse(q.limit, q.cursor.as_deref())?;
    reads::require_job(&state.db, auth.tenant_id, id).await?;
    let batches = reads::list_batches(&state.db, auth.tenant_id, id, page).await?;
    Ok(Json(batches.map(BatchView::from).into()))
}

/// A batch waiting for its next attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduledRetry {
    pub batch_id: Uuid,
    /// The attempt that is scheduled (the batch's attempts so far + 1).
    pub attempt: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<ScheduledRetryRow> for ScheduledRetry {
    fn from(r: ScheduledRetryRow) -> Self {
        Self {
            batch_id: r.batch_id,
            attempt: r.attempt,
            next_attempt_at: r.next_attempt_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RetryStatus {
    /// Batches in `retry_scheduled`.
    pub retrying_batches: i64,
    /// Those batches, soonest first (at most 1000 listed; `retrying_batches` counts all).
    pub scheduled: Vec<ScheduledRetry>,
    /// Attempts that failed transiently and were retried: the job's `failed` log rows.
    pub total_retries: i64,
}

/// Where the job's retries stand.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/retry-status", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RetryStatus), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
async fn retry_status(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RetryStatus>> {
    reads::require_job(&state.db, auth.tenant_id, id).await?;
    let (retrying_batches, scheduled) =
        reads::scheduled_retries(&state.db, auth.tenant_id, id).await?;
    let total_retries = reads::count_failed_attempts(&state.db, auth.tenant_id, id).await?;
    Ok(Json(RetryStatus {
        retrying_batches,
        scheduled: scheduled.into_iter().map(ScheduledRetry::from).collect(),
        total_retries,
    }))
}
