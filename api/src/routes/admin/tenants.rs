//! `POST/GET /api/v1/admin/tenants`, `GET /api/v1/admin/tenants/{id}`, the tenant's keys,
//! and `DELETE /api/v1/admin/api-keys/{key_id}`.

use axum::{Json, extract::State, http::StatusCode};
use entity::TenantId;
use freight_core::{
    domain::{
        api_key::CreateApiKeyRequest,
        audit::Actor,
        tenant::{CreateTenantRequest, UpdateTenantRequest},
    },
    store::{api_keys, page::PageRequest, tenants},
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Operator,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::api_keys::{KeyCreated, create_key, revoke_key},
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
    let tenant = state.services.create_tenant(req).await?;
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
    ApiPath(id): ApiPath<TenantId>,
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
    ApiPath(id): ApiPath<TenantId>,
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
    ApiPath(id): ApiPath<TenantId>,
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

/// Change a tenant's status or limits. Applies on every api replica within seconds;
/// raising `max_concurrent_jobs` starts waiting jobs at once.
#[utoipa::path(patch, path = "/api/v1/admin/tenants/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(req): ApiJson<UpdateTenantRequest>,
) -> ApiResult<Json<TenantView>> {
    let status_changed = req.status.is_some();
    let tenant = state.services.update_tenant(id, req).await?;
    if status_changed {
        // This replica at once; the others at their next revocation poll.
        let active = tenant.status == entity::tenant::TenantStatus::Active;
        state.auth.authenticator.forget_tenant(id, active).await;
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
    ApiPath(id): ApiPath<TenantId>,
) -> ApiResult<(StatusCode, Json<CancelledJobs>)> {
    let cancelled = state.services.cancel_all_jobs(id).await?;
    for done in &cancelled {
        state.job_views.forget(id, done.job.id);
    }
    let jobs: Vec<Uuid> = cancelled
        .iter()
        .filter(|done| done.changed)
        .map(|done| done.job.id.into())
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelledJobs {
            cancelled: jobs.len(),
            jobs,
        }),
    ))
}

/// The tenant, or a 404.
async fn find_tenant(state: &AppState, id: TenantId) -> ApiResult<entity::tenant::Model> {
    tenants::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))
}
