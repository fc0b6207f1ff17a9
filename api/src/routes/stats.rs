//! `GET /api/v1/stats`: the tenant's usage, from its jobs' counters.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use entity::job::JobStatus;
use freight_core::store::reads::{self, StatusUsage};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AuthTenant,
    error::{ApiResult, Problem},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// The tenant's jobs in each state; every state is present, 0 when none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct JobsByStatus {
    pub awaiting_upload: i64,
    pub queued: i64,
    pub running: i64,
    pub completed: i64,
    pub completed_with_errors: i64,
    pub failed: i64,
    pub cancelling: i64,
    pub cancelled: i64,
}

/// Records over all the tenant's jobs. `pending + succeeded + dead_lettered + cancelled =
/// total`; `retrying` is the part of `pending` waiting for a retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct RecordTotals {
    pub total: i64,
    pub succeeded: i64,
    pub dead_lettered: i64,
    pub cancelled: i64,
    pub pending: i64,
    pub retrying: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    pub jobs: JobsByStatus,
    pub records: RecordTotals,
    pub generated_at: DateTime<Utc>,
}

impl Stats {
    fn new(usage: Vec<StatusUsage>, generated_at: DateTime<Utc>) -> Self {
        let mut jobs = JobsByStatus::default();
        let mut records = RecordTotals::default();
        for u in usage {
            *match u.status {
                JobStatus::AwaitingUpload => &mut jobs.awaiting_upload,
                JobStatus::Queued => &mut jobs.queued,
                JobStatus::Running => &mut jobs.running,
                JobStatus::Completed => &mut jobs.completed,
                JobStatus::CompletedWithErrors => &mut jobs.completed_with_errors,
                JobStatus::Failed => &mut jobs.failed,
                JobStatus::Cancelling => &mut jobs.cancelling,
                JobStatus::Cancelled => &mut jobs.cancelled,
            } += u.jobs;
            records.total += u.total;
            records.succeeded += u.succeeded;
            records.dead_lettered += u.dead_lettered;
            records.cancelled += u.cancelled;
            records.retrying += u.retrying;
        }
        records.pending =
            records.total - records.succeeded - records.dead_lettered - records.cancelled;
        Self {
            jobs,
            records,
            generated_at,
        }
    }
}

/// The tenant's usage: its jobs by state, and its records by outcome.
#[utoipa::path(get, path = "/api/v1/stats", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, body = Stats), (status = 401, body = Problem)))]
async fn stats(State(state): State<AppState>, auth: AuthTenant) -> ApiResult<Json<Stats>> {
    let usage = reads::usage_by_status(&state.db, auth.tenant_id).await?;
    Ok(Json(Stats::new(usage, Utc::now())))
}
