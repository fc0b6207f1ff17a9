//! Re-running what failed for good: a job's dead letters, one failed batch, or chosen
//! dead letters. Each re-opens exactly those records as new attempts.

use axum::{Json, extract::State, http::StatusCode};
use entity::{BatchId, JobId};
use freight_core::{
    service::{Requeued as Done, RetryTarget},
    store::jobs,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiJson, ApiPath},
    routes::jobs::job_view,
    state::AppState,
    views::JobView,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(retry_job))
        .routes(routes!(retry_batch))
        .routes(routes!(requeue_dead_letters))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    /// Dead letters re-opened as new attempts.
    pub requeued: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

/// Re-run the job's dead-lettered records as new attempts.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = Requeued), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 429, body = Problem, description = "the re-opened records would take the tenant past `max_pending_records`")))]
async fn retry_job(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<(StatusCode, Json<Requeued>)> {
    let done = retry(&state, &auth, RetryTarget::Job(id)).await?;
    let job = jobs::get(&state.db, auth.tenant_id, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Requeued {
            requeued: done.requeued,
            job: Some(job_view(&state.db, job).await?),
        }),
    ))
}

/// Re-run one failed batch's dead-lettered records.
#[utoipa::path(post, path = "/api/v1/batches/{id}/retry", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = Requeued), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 429, body = Problem, description = "the re-opened records would take the tenant past `max_pending_records`")))]
async fn retry_batch(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<BatchId>,
) -> ApiResult<(StatusCode, Json<Requeued>)> {
    let done = retry(&state, &auth, RetryTarget::Batch(id)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Requeued {
            requeued: done.requeued,
            job: None,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequeueRequest {
    /// Requeue every open dead letter of this job...
    pub job_id: Option<Uuid>,
    /// ...or these dead letters (other tenants' ids are neither requeued nor counted).
    pub ids: Option<Vec<Uuid>>,
}

/// Requeue dead letters, by job or by id.
#[utoipa::path(post, path = "/api/v1/dead-letters/requeue", tag = "jobs", security(("api_key" = [])),
    request_body = RequeueRequest,
    responses((status = 202, body = Requeued), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem, description = "the re-opened records would take the tenant past `max_pending_records`")))]
async fn requeue_dead_letters(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiJson(req): ApiJson<RequeueRequest>,
) -> ApiResult<(StatusCode, Json<Requeued>)> {
    let target = match (req.job_id, req.ids) {
        (Some(job_id), None) => RetryTarget::DeadLettersOfJob(job_id.into()),
        (None, Some(ids)) if !ids.is_empty() && ids.len() <= 10_000 => {
            RetryTarget::DeadLetters(ids)
        }
        _ => {
            return Err(ApiError::Validation(vec![freight_core::FieldError::new(
                "job_id",
                "send either `job_id` or `ids` (1 to 10000 dead letter ids), not both",
            )]));
        }
    };
    let done = retry(&state, &auth, target).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Requeued {
            requeued: done.requeued,
            job: None,
        }),
    ))
}

/// Runs a retry and forgets the cached views of the jobs it touched (only those: another
/// tenant's cached views stay).
async fn retry(state: &AppState, auth: &AuthTenant, target: RetryTarget) -> ApiResult<Done> {
    let done = state
        .services
        .retry(auth.tenant_id, target, &auth.actor())
        .await?;
    for job_id in &done.jobs {
        state.job_views.forget(auth.tenant_id, *job_id);
    }
    Ok(done)
}
