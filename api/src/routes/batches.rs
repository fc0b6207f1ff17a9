//! A job's batches, and where its retries stand: `GET /api/v1/jobs/{id}/batches` and
//! `GET /api/v1/jobs/{id}/retry-status`.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use entity::JobId;
use freight_core::store::{
    page::Keyset,
    reads::{self, BatchRow, ScheduledRetryRow},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiResult, Problem},
    extract::{ApiPath, ApiQuery},
    state::AppState,
    views::{Page, PageQuery},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_batches))
        .routes(routes!(retry_status))
}

/// The job's batches, by `seq` ascending.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/batches", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<BatchRow>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_batches(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<BatchRow>>> {
    let page = Keyset::parse(q.limit, q.cursor.as_deref())?;
    reads::require_job(&state.db, auth.tenant_id, id).await?;
    let batches = reads::list_batches(&state.db, auth.tenant_id, id, page).await?;
    Ok(Json(batches.into()))
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
            batch_id: r.batch_id.into(),
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
    ApiPath(id): ApiPath<JobId>,
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
