//! `GET` and `PUT /api/v1/retry-policies`: the tenant's default retry policy, used by
//! jobs created without `retry`.

use axum::{Json, extract::State};
use freight_core::{
    domain::{
        retry_policy::{RetryPolicy, RetryPolicyInput},
        tenant::default_retry,
    },
    store::tenants,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AuthTenant,
    error::{ApiError, ApiResult, Problem},
    extract::ApiJson,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_retry_policy, put_retry_policy))
}

/// The tenant's default retry policy: the one it set, else the contract's (5 attempts,
/// 500 ms initial, ×2, 60 s max, 0.2 jitter).
#[utoipa::path(get, path = "/api/v1/retry-policies", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, body = RetryPolicy), (status = 401, body = Problem)))]
async fn get_retry_policy(
    State(state): State<AppState>,
    auth: AuthTenant,
) -> ApiResult<Json<RetryPolicy>> {
    let tenant = tenants::get(&state.db, auth.tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))?;
    Ok(Json(default_retry(&tenant)))
}

/// Replace the tenant's default retry policy. Fields left out take the contract's
/// defaults, so `{}` restores them. Jobs already created keep their own policy.
#[utoipa::path(put, path = "/api/v1/retry-policies", tag = "tenant", security(("api_key" = [])),
    request_body = RetryPolicyInput,
    responses((status = 200, body = RetryPolicy, description = "the stored policy"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
async fn put_retry_policy(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiJson(input): ApiJson<RetryPolicyInput>,
) -> ApiResult<Json<RetryPolicy>> {
    let policy = state
        .services
        .set_default_retry(auth.tenant_id, input)
        .await?;
    Ok(Json(policy))
}
