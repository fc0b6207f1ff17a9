//! `POST/GET /api/v1/admin/tenants`, `GET /api/v1/admin/tenants/{id}`, the tenant's keys,
//! and `DELETE /api/v1/admin/api-keys/{key_id}`.

use axum::{Json, extract::State, http::StatusCode};
use freight_core::{
    FieldError,
    repo::{
        api_keys,
        audit::{self, Actor},
        lifecycle,
        page::PageRequest,
        tenants::{self, NewTenant},
    },
};
use sea_orm::TransactionTrait;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Operator,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::api_keys::{CreateApiKeyRequest, KeyCreated, create_key, revoke_key},
    state::AppState,
    views::{ApiKeyView, CreatedApiKey, Page, PageQuery, TenantView},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, update_tenant))
        .routes(routes!(create_tenant_key, list_tenant_keys))
        .routes(routes!(revoke_any_key))
        .routes(routes!(cancel_tenant_jobs))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTenantRequest {
    /// Unique, 1–200 characters.
    pub name: Option<String>,
    /// Jobs running at once (1–10000, default 10); more wait in `queued`.
    pub max_concurrent_jobs: Option<i64>,
    /// Requests per second (1–1000000, default 100; burst twice that).
    pub rate_limit_per_second: Option<i64>,
    /// Most records the tenant may have pending across its unfinished jobs (at least 1).
    /// Absent: the deployment's `TENANT_MAX_PENDING_RECORDS` (by default 10,000,000);
    /// `null`: no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_pending_records: Option<Option<i64>>,
}

/// Create a tenant.
#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin", security(("admin_token" = [])),
    request_body = CreateTenantRequest,
    responses((status = 201, body = TenantView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    let mut errors = Vec::new();
    let name = req.name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
        errors.push(FieldError::new("name", "is required, 1 to 200 characters"));
    }
    let mut bounded = |field: &str, v: Option<i64>, default: i64, hi: i64| -> i32 {
        in_range(&mut errors, field, Some(v.unwrap_or(default)), hi).unwrap_or(1)
    };
    let max_concurrent_jobs = bounded("max_concurrent_jobs", req.max_concurrent_jobs, 10, 10_000);
    let rate_limit_per_second = bounded(
        "rate_limit_per_second",
        req.rate_limit_per_second,
        100,
        1_000_000,
    );
    let max_pending_records = match req.max_pending_records {
        None => state.settings.tenant_max_pending_records,
        Some(v) => at_least_one(&mut errors, "max_pending_records", v),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let txn = state.db.begin().await?;
    let tenant = tenants::create(
        &txn,
        NewTenant {
            name,
            max_concurrent_jobs,
            rate_limit_per_second,
            max_pending_records,
        },
    )
    .await?;
    audit::record(
        &txn,
        audit::NewEvent {
            tenant_id: Some(tenant.id),
            actor: Actor::Operator,
            action: audit::TENANT_CREATED,
            target_type: "tenant",
            target_id: Some(tenant.id),
            details: json!({
                "name": tenant.name,
                "max_concurrent_jobs": tenant.max_concurrent_jobs,
                "rate_limit_per_second": tenant.rate_limit_per_second,
                "max_pending_records": tenant.max_pending_records,
            }),
        },
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// List tenants, newest first.
#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin", security(("admin_token" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<TenantView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_tenants(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<TenantView>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(
        tenants::list(&state.db, page)
            .await?
            .map(TenantView::from)
            .into(),
    ))
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TenantView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<TenantView>> {
    let tenant = find_tenant(&state, id).await?;
    Ok(Json(tenant.into()))
}

/// Create an API key for a tenant. The plaintext key is in this response only.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/api-keys", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)), request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_tenant_key(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<KeyCreated> {
    find_tenant(&state, id).await?;
    Ok(KeyCreated(
        create_key(&state, id, req, Actor::Operator).await?,
    ))
}

/// A tenant's keys, without secrets.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/api-keys", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<ApiKeyView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_tenant_keys(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<ApiKeyView>>> {
    find_tenant(&state, id).await?;
    Ok(Json(
        api_keys::list(&state.db, id)
            .await?
            .into_iter()
            .map(ApiKeyView::from)
            .collect(),
    ))
}

/// Revoke any key. Every api replica refuses it within seconds.
#[utoipa::path(delete, path = "/api/v1/admin/api-keys/{key_id}", tag = "admin", security(("admin_token" = [])),
    params(("key_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_any_key(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(key_id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_key(&state, key_id, None, Actor::Operator).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateTenantRequest {
    /// `active` or `suspended`: a suspended tenant's keys get 403, its open streams end,
    /// and workers start none of its batches (its jobs wait, and resume on `active`).
    pub status: Option<String>,
    pub max_concurrent_jobs: Option<i64>,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_burst: Option<i64>,
    /// Largest job, in records; `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_records_per_job: Option<Option<i64>>,
    /// Most records pending across the tenant's unfinished jobs; `null` removes the limit.
    /// Lowering it below what is pending refuses new records until jobs finish; nothing
    /// already accepted is dropped.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_pending_records: Option<Option<i64>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Change a tenant's status or limits. Applies on every api replica within seconds;
/// raising `max_concurrent_jobs` starts waiting jobs at once.
#[utoipa::path(patch, path = "/api/v1/admin/tenants/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateTenantRequest>,
) -> ApiResult<Json<TenantView>> {
    use freight_core::repo::tenants::{MAX_RATE, TenantPatch};
    let mut errors = Vec::new();
    let mut bounded = |field: &str, v: Option<i64>, hi: i64| in_range(&mut errors, field, v, hi);
    let patch = TenantPatch {
        max_concurrent_jobs: bounded("max_concurrent_jobs", req.max_concurrent_jobs, 10_000),
        rate_limit_per_second: bounded(
            "rate_limit_per_second",
            req.rate_limit_per_second,
            MAX_RATE as i64,
        ),
        rate_limit_burst: bounded("rate_limit_burst", req.rate_limit_burst, MAX_RATE as i64),
        max_records_per_job: req
            .max_records_per_job
            .map(|v| at_least_one(&mut errors, "max_records_per_job", v)),
        max_pending_records: req
            .max_pending_records
            .map(|v| at_least_one(&mut errors, "max_pending_records", v)),
        status: match req.status.as_deref() {
            None => None,
            Some("active") => Some(entity::tenant::TenantStatus::Active),
            Some("suspended") => Some(entity::tenant::TenantStatus::Suspended),
            Some(_) => {
                errors.push(FieldError::new("status", "must be `active` or `suspended`"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let details = patch_details(&patch);
    let txn = state.db.begin().await?;
    let tenant = tenants::update(&txn, id, patch)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))?;
    audit::record(
        &txn,
        audit::NewEvent {
            tenant_id: Some(id),
            actor: Actor::Operator,
            action: audit::TENANT_UPDATED,
            target_type: "tenant",
            target_id: Some(id),
            details,
        },
    )
    .await?;
    txn.commit().await?;
    let active = tenant.status == entity::tenant::TenantStatus::Active;
    if req.status.is_some() {
        // This replica at once; the others at their next revocation poll.
        state.auth.forget_tenant(id, active).await;
    }
    if active {
        // Reinstated (or raised limits): what waited moves now, not at the next
        // reconciler pass. A suspended tenant's work waits: workers claim none of it.
        let batches = lifecycle::resume_tenant(&state.db, id).await?;
        state.dispatch(&batches).await;
    }
    Ok(Json(tenant.into()))
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct CancelledJobs {
    /// Jobs this call cancelled (or set cancelling, for those with running batches).
    pub cancelled: usize,
    pub jobs: Vec<Uuid>,
}

/// Cancel every unfinished job of a tenant (awaiting upload, queued or running): the
/// operator's kill switch, beside suspension (which stops new work but keeps the jobs).
#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/cancel-jobs", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = CancelledJobs), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn cancel_tenant_jobs(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<CancelledJobs>)> {
    find_tenant(&state, id).await?;
    let mut jobs = Vec::new();
    for job_id in lifecycle::unfinished_jobs(&state.db, id).await? {
        match lifecycle::cancel(&state.db, id, job_id, &Actor::Operator).await {
            Ok(done) => {
                state.job_views.forget(id, job_id);
                state.dispatch(&done.to_dispatch).await;
                if done.changed {
                    jobs.push(job_id);
                }
            }
            // Finished meanwhile: nothing to cancel.
            Err(freight_core::Error::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelledJobs {
            cancelled: jobs.len(),
            jobs,
        }),
    ))
}

/// The fields a patch sets, as the audit event's details (limits and status only).
fn patch_details(patch: &freight_core::repo::tenants::TenantPatch) -> Value {
    let mut d = Map::new();
    if let Some(s) = patch.status {
        d.insert("status".into(), json!(s));
    }
    let numbers = [
        (
            "max_concurrent_jobs",
            patch.max_concurrent_jobs.map(i64::from),
        ),
        (
            "rate_limit_per_second",
            patch.rate_limit_per_second.map(i64::from),
        ),
        ("rate_limit_burst", patch.rate_limit_burst.map(i64::from)),
    ];
    for (k, v) in numbers {
        if let Some(v) = v {
            d.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [
        ("max_records_per_job", patch.max_records_per_job),
        ("max_pending_records", patch.max_pending_records),
    ] {
        if let Some(v) = v {
            d.insert(k.into(), json!(v));
        }
    }
    Value::Object(d)
}

/// A nullable limit: `Some(n)` must be at least 1 (else a field error); `None` is "no limit".
fn at_least_one(errors: &mut Vec<FieldError>, field: &str, v: Option<i64>) -> Option<i64> {
    match v {
        Some(n) if n < 1 => {
            errors.push(FieldError::new(
                field,
                "must be at least 1, or null for no limit",
            ));
            None
        }
        other => other,
    }
}

/// `Some(v)` if `v` is within 1..=`hi`; otherwise records a field error. `None` in, `None` out.
fn in_range(errors: &mut Vec<FieldError>, field: &str, v: Option<i64>, hi: i64) -> Option<i32> {
    let v = v?;
    if (1..=hi).contains(&v) {
        Some(v as i32)
    } else {
        errors.push(FieldError::new(
            field,
            format!("must be between 1 and {hi}"),
        ));
        None
    }
}

/// The tenant, or a 404.
async fn find_tenant(state: &AppState, id: Uuid) -> ApiResult<entity::tenant::Model> {
    tenants::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))
}
