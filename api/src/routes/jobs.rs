//! Job intake: create, list, read, upload records, start.

use std::collections::VecDeque;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use entity::job::{self, JobStatus};
use freight_core::{
    FieldError,
    domain::{
        decode::{CheckedRecord, DecodeErrorKind, RecordDecoder},
        job_spec::{CreateJobRequest, request_fingerprint},
        json_array::JsonArrayDecoder,
        ndjson::NdjsonDecoder,
        record::Staged,
    },
    pg_txn::PgTxn,
    repo::{
        batches,
        jobs::{self, Created, Idempotency},
        page::PageRequest,
        records, tenants,
    },
};
use futures::{StreamExt, stream::BoxStream};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiJsonBytes, ApiPath, ApiQuery, media_type, parse_json},
    job_views::Lookup,
    state::AppState,
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
    let idempotency_key = idempotency_key(&headers)?;
    // Borrowed from the body: inline records stay the text they came as.
    let request: CreateJobRequest = parse_json(&body)?;
    let tenant = tenants::get(&state.db, auth.tenant_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("tenant no longer exists".into()))?;
    let new = request.validate(
        tenants::default_retry(&tenant),
        state.settings.http.max_record_bytes,
    )?;
    if let Some(max) = tenant.max_records_per_job
        && new.record_count > max
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "source.records",
            format!("this tenant's jobs hold at most {max} records"),
        )]));
    }
    new.destination
        .check_network(state.settings.allow_private_destinations)
        .await
        .map_err(|m| ApiError::Validation(vec![FieldError::new("destination.url", m)]))?;
    let idempotency = match idempotency_key {
        Some(key) => Some(Idempotency {
            key,
            fingerprint: request_fingerprint(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?,
        }),
        None => None,
    };
    let (status, job) = match jobs::create(
        &state.db,
        auth.tenant_id,
        new,
        idempotency,
        &auth.actor(),
        &state.settings.secrets,
    )
    .await?
    {
        Created::New(job) => {
            freight_core::metrics::job_created(auth.tenant_id);
            (StatusCode::CREATED, job)
        }
        Created::Existing(job) => (StatusCode::OK, job),
    };
    let job = if job.status == JobStatus::Queued {
        state.admit(auth.tenant_id).await?;
        jobs::get(&state.db, auth.tenant_id, job.id).await?
    } else {
        job
    };
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)).expect("ascii");
    let view = job_view(&state.db, job).await?;
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
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
    let ids: Vec<Uuid> = jobs.data.iter().map(|j| j.id).collect();
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
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let body = match state.job_views.lookup(auth.tenant_id, id) {
        Lookup::Hit(body) => body,
        Lookup::Miss(ticket) => {
            let job = jobs::get(&state.db, auth.tenant_id, id).await?;
            let view = job_view(&state.db, job).await?;
            state
                .job_views
                .store_view(ticket, &view)
                .map_err(|e| ApiError::Internal(e.to_string()))?
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
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: Body,
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
    let max_record = state.settings.http.max_record_bytes;
    let decoder: Box<dyn RecordDecoder> = match media_type(&headers).as_str() {
        "application/json" => Box::new(JsonArrayDecoder::new(max_record)),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            Box::new(NdjsonDecoder::new(max_record))
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send records as application/json (an array) or application/x-ndjson, not `{other}`"
            )));
        }
    };
    let tenant = tenants::get(&state.db, auth.tenant_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("tenant no longer exists".into()))?;
    let max_records = tenant.max_records_per_job;
    // Fail fast, before reading the body, when the tenant has no room at all; the
    // guarded check runs again before commit.
    if let Some(max) = tenant.max_pending_records
        && tenants::pending_records(&state.db, auth.tenant_id).await? >= max
    {
        return Err(ApiError::OverQuota(FieldError::new(
            "records",
            format!(
                "this tenant already has {max} or more records pending across its unfinished jobs, its limit; retry once running jobs have finished, or cancel some"
            ),
        )));
    }
    // The job unlocked: a job that takes no uploads fails fast, before the body is read,
    // and its `record_key` never changes. The locked read below is the one that counts.
    let unlocked = jobs::get(&state.db, auth.tenant_id, id).await?;
    jobs::require_awaiting_upload(&unlocked, "records can be added")?;
    let key = unlocked.record_key;
    let chunks = parse_ahead(body, key, decoder);
    let _upload = state
        .uploads
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let txn = PgTxn::begin(&state.db).await?;
    let job = jobs::lock_for_upload(&txn, auth.tenant_id, id).await?;
    let appended = jobs::append_records(&state.db, &txn, &job, max_records, chunks).await?;
    tenants::enforce_pending_limit(&txn, auth.tenant_id, "records", appended.total).await?;
    txn.commit().await?;
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

/// Chunks of parsed records an upload may hold ahead of what Postgres has taken: about
/// 80,000 records (some 20 MiB). Parsing starts before the upload's transaction, so an
/// upload waiting for a turn (`AppState::uploads`, or a start holding the job) parses
/// meanwhile, and then streams into `COPY` as fast as Postgres takes it.
const PARSE_AHEAD: usize = 16;

/// Reads and checks a body in a task of its own, up to [`PARSE_AHEAD`] chunks ahead of
/// the returned stream. The task ends at the body's end, at its first error (the
/// stream's last item), or when the stream is dropped.
fn parse_ahead(
    body: Body,
    key: Option<String>,
    decoder: Box<dyn RecordDecoder>,
) -> BoxStream<'static, ApiResult<Vec<Staged>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(PARSE_AHEAD);
    tokio::spawn(async move {
        let mut chunks = RecordChunks::new(body, key, decoder);
        loop {
            let next = chunks.next_chunk().await;
            if matches!(&next, Ok(chunk) if chunk.is_empty()) {
                break;
            }
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                break;
            }
        }
    });
    let mut rx = rx;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// A body read as chunks of at most [`records::CHUNK`] checked records.
struct RecordChunks {
    stream: axum::body::BodyDataStream,
    decoder: Box<dyn RecordDecoder>,
    /// The frame being decoded and how much of it the decoder has had.
    frame: Bytes,
    fed: usize,
    /// Parsed and checked, not handed out yet: each record's own text.
    pending: VecDeque<Staged>,
    /// The records of the slice being decoded.
    decoded: Vec<CheckedRecord>,
    /// Records handed out so far (record indices in errors count from the body's start).
    handed_out: usize,
    ended: bool,
    /// The job's `record_key` field.
    key: Option<String>,
}

/// How much of a frame the decoder takes at a time: a frame can be large, and a slice of
/// empty objects decodes to a record per three bytes.
const DECODE_SLICE: usize = 64 << 10;

impl RecordChunks {
    fn new(body: Body, key: Option<String>, decoder: Box<dyn RecordDecoder>) -> Self {
        Self {
            stream: body.into_data_stream(),
            decoder,
            frame: Bytes::new(),
            fed: 0,
            pending: VecDeque::new(),
            decoded: Vec::new(),
            handed_out: 0,
            ended: false,
            key,
        }
    }

    /// The next chunk, as the records' texts (stored as sent, not serialised again);
    /// empty once the body is read. A body that is not JSON is a 400; a record that
    /// breaks a rule, or is over the size limit, a 422; each names the record's index
    /// (and an NDJSON body's line). Holds at most a chunk and a slice's records.
    async fn next_chunk(&mut self) -> ApiResult<Vec<Staged>> {
        while self.pending.len() < records::CHUNK && !self.ended {
            let step = if self.fed < self.frame.len() {
                let end = (self.fed + DECODE_SLICE).min(self.frame.len());
                let slice = &self.frame[self.fed..end];
                self.fed = end;
                self.decoder
                    .push(slice, self.key.as_deref(), &mut self.decoded)
            } else {
                match self.stream.next().await.transpose().map_err(stream_error)? {
                    Some(frame) => {
                        (self.frame, self.fed) = (frame, 0);
                        continue;
                    }
                    None => {
                        self.ended = true;
                        self.decoder.finish(self.key.as_deref(), &mut self.decoded)
                    }
                }
            };
            for record in self.decoded.drain(..) {
                if let Err(m) = record.verdict {
                    return Err(ApiError::Validation(vec![FieldError::new(
                        format!("records[{}]", self.handed_out + self.pending.len()),
                        m,
                    )]));
                }
                self.pending.push_back(record.record);
            }
            if let Err(e) = step {
                let field = format!("records[{}]", self.handed_out + self.pending.len());
                let at = e.line.map(|l| format!("line {l}: ")).unwrap_or_default();
                return Err(match e.kind {
                    DecodeErrorKind::TooLarge { .. } => {
                        ApiError::Validation(vec![FieldError::new(
                            field,
                            format!("{at}{}", e.message()),
                        )])
                    }
                    DecodeErrorKind::Syntax(ref m) => ApiError::BadRequest {
                        detail: format!("{at}{}", e.message()),
                        errors: vec![FieldError::new(field, m.clone())],
                    },
                });
            }
        }
        // Exactly sized: a chunk waits in the parse-ahead queue with its capacity.
        let n = self.pending.len().min(records::CHUNK);
        let chunk: Vec<Staged> = self.pending.drain(..n).collect();
        self.handed_out += chunk.len();
        Ok(chunk)
    }
}

/// A body that failed mid-stream: over the limit (413), too slow (408) or cut off (400).
fn stream_error(err: axum::Error) -> ApiError {
    if crate::limits::is_slow_body(&err) {
        return ApiError::RequestTimeout(crate::extract::slow_body_message());
    }
    if crate::extract::over_limit(&err) {
        return ApiError::PayloadTooLarge(
            "the request body is larger than the configured limit (HTTP_BODY_LIMIT); split the upload into several calls"
                .into(),
        );
    }
    ApiError::bad_request(format!("could not read the request body: {err}"))
}

/// Close the upload and queue the job: its batches are planned now, and it starts
/// running as soon as its tenant has a free job slot.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/start", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn start_job(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    jobs::start(&state.db, auth.tenant_id, id).await?;
    state.job_views.forget(auth.tenant_id, id);
    state.admit(auth.tenant_id).await?;
    let job = jobs::get(&state.db, auth.tenant_id, id).await?;
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
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let cancelled =
        freight_core::repo::lifecycle::cancel(&state.db, auth.tenant_id, id, &auth.actor()).await?;
    state.job_views.forget(auth.tenant_id, id);
    if cancelled.job.status == JobStatus::Cancelled && cancelled.changed {
        freight_core::metrics::job_finished(auth.tenant_id, "cancelled");
        metrics::histogram!(freight_core::metrics::CANCEL_LATENCY).record(0.0);
    }
    state.dispatch(&cancelled.to_dispatch).await;
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
    id: ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    cancel_job(state, auth, id).await
}
