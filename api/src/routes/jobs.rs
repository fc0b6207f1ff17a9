//! Job intake: create, list, read, upload records, start.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use entity::{
    JobId,
    job::{self, JobStatus},
};
use freight_core::{
    FieldError,
    domain::job_spec::{CreateJobRequest, Idempotency, request_fingerprint},
    store::{batches, jobs, page::PageRequest},
};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AuthTenant,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiJsonBytes, ApiPath, ApiQuery, parse_json},
    job_views::Lookup,
    state::AppState,
    upload::RecordUpload,
    views::{JobView, Page},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(upload_records))
        .routes(routes!(start_job))
        .routes(routes!(cancel_job, cancel_job_put))
}

/// A job with its batch counts.
pub async fn job_view(db: &impl ConnectionTrait, job: job::Model) -> ApiResult<JobView> {
    let counts = batches::counts(db, &[job.id])
        .await?
        .remove(&job.id)
        .unwrap_or_default();
    Ok(JobView::new(job, counts))
}

/// Create a job. With `Idempotency-Key`, the same key and body within 24 h return the
/// original job (200); the same key with another body is a 422.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters")),
    request_body = CreateJobRequest,
    responses(
        (status = 201, body = JobView, description = "created; `Location` names the job"),
        (status = 200, body = JobView, description = "the job this Idempotency-Key already created"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem, description = "over the request rate, or the tenant's `max_pending_records` is reached (problem type `urn:freight:problem:pending-records-limit`, no `Retry-After`: retry once jobs finish)")))]
async fn create_job(
    State(state): State<AppState>,
    auth: AuthTenant,
    headers: HeaderMap,
    ApiJsonBytes(body): ApiJsonBytes,
) -> ApiResult<Response> {
    let idempotency = idempotency(&headers, &body)?;
    // Borrowed from the body: inline records stay the text they came as.
    let request: CreateJobRequest = parse_json(&body)?;
    let created = state
        .services
        .create_job(auth.tenant_id, request, idempotency, &auth.actor())
        .await?;
    let status = match created.new {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    let location =
        HeaderValue::from_str(&format!("/api/v1/jobs/{}", created.job.id)).expect("ascii");
    let view = job_view(&state.db, created.job).await?;
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// The `Idempotency-Key` header, if any, with the body's fingerprint.
fn idempotency(headers: &HeaderMap, body: &[u8]) -> ApiResult<Option<Idempotency>> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    let fingerprint = request_fingerprint(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(Some(Idempotency { key, fingerprint }))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().ok().map(str::trim).filter(|k| {
        (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::BadRequest {
            detail: "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            errors: vec![FieldError::new(
                "Idempotency-Key",
                "1 to 255 visible ASCII characters",
            )],
        }),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListJobsQuery {
    /// Only jobs in this state.
    pub status: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("api_key" = [])), params(ListJobsQuery),
    responses((status = 200, body = Page<JobView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 422, body = Problem)))]
async fn list_jobs(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> ApiResult<Json<Page<JobView>>> {
    let status = q
        .status
        .map(|s| {
            <JobStatus as sea_orm::ActiveEnum>::try_from_value(&s).map_err(|_| {
                ApiError::Validation(vec![FieldError::new(
                    "status",
                    format!("`{s}` is not a job state (awaiting_upload, queued, running, completed, completed_with_errors, failed, cancelling, cancelled)"),
                )])
            })
        })
        .transpose()?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let jobs = jobs::list(&state.db, auth.tenant_id, status, page).await?;
    let ids: Vec<JobId> = jobs.data.iter().map(|j| j.id).collect();
    let mut counts = batches::counts(&state.db, &ids).await?;
    Ok(Json(
        jobs.map(|j| {
            let c = counts.remove(&j.id).unwrap_or_default();
            JobView::new(j, c)
        })
        .into(),
    ))
}

/// One job, with its progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("api_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
async fn get_job(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<Response> {
    let body = match state.job_views.lookup(auth.tenant_id, id) {
        Lookup::Hit(body) => body,
        Lookup::Miss(ticket) => {
            let job = jobs::get(&state.db, auth.tenant_id, id).await?;
            let view = job_view(&state.db, job).await?;
            state
                .job_views
                .store_view(ticket, &view)
                .map_err(|e| ApiError::Internal(e.into()))?
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAccepted {
    /// Records accepted by this call.
    pub accepted: i64,
    /// Records the job holds now.
    pub total: i64,
}

/// Add records to an `upload` job: a JSON array (`application/json`) or NDJSON
/// (`application/x-ndjson`), streamed. May be called many times before `start`. A call is
/// all or nothing: one bad record and none of the call's records are kept.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/records", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    request_body(content((Vec<serde_json::Value> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = 202, body = UploadAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem),
        (status = 408, body = Problem, description = "the body arrived slower than `UPLOAD_MIN_RATE`"),
        (status = 429, body = Problem, description = "over the request rate, the tenant's `max_pending_records` is reached (problem type `urn:freight:problem:pending-records-limit`), or the tenant's `TENANT_MAX_CONCURRENT_UPLOADS` uploads stayed busy for 10 s")))]
async fn upload_records(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
    upload: RecordUpload,
) -> ApiResult<(StatusCode, Json<UploadAccepted>)> {
    let max_uploads = state.settings.http.tenant_max_uploads;
    let _tenant_slot = state
        .tenant_uploads
        .take(auth.tenant_id, max_uploads, UPLOAD_SLOT_WAIT)
        .await
        .ok_or(ApiError::TooManyAtOnce {
            what: "uploads",
            limit: max_uploads,
        })?;
    let appended = state
        .services
        .append_records(auth.tenant_id, id, |record_key| {
            upload.parse_ahead(record_key)
        })
        .await?;
    state.job_views.forget(auth.tenant_id, id);
    Ok((
        StatusCode::ACCEPTED,
        Json(UploadAccepted {
            accepted: appended.accepted,
            total: appended.total,
        }),
    ))
}

/// How long an upload waits for one of its tenant's upload slots before a 429.
const UPLOAD_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Close the upload and queue the job: its batches are planned now, and it starts
/// running as soon as its tenant has a free job slot.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/start", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn start_job(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = state.services.start_job(auth.tenant_id, id).await?;
    state.job_views.forget(auth.tenant_id, id);
    Ok((StatusCode::ACCEPTED, Json(job_view(&state.db, job).await?)))
}

/// Cancel a job. Batches not yet running are cancelled with their records; running ones
/// stop between records. The job is `cancelling` until they have, then `cancelled`; a
/// job that had not started is `cancelled` at once. A finished job is a 409.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel_job(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let cancelled = state
        .services
        .cancel_job(auth.tenant_id, id, &auth.actor())
        .await?;
    state.job_views.forget(auth.tenant_id, id);
    Ok((
        StatusCode::ACCEPTED,
        Json(job_view(&state.db, cancelled.job).await?),
    ))
}

/// Cancel a job (`PUT` form of the same action).
#[utoipa::path(put, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel_job_put(
    state: State<AppState>,
    auth: AuthTenant,
    id: ApiPath<JobId>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    cancel_job(state, auth, id).await
}
