//! Tenant self-service keys: `POST/GET /api/v1/api-keys`, `DELETE /api/v1/api-keys/{key_id}`,
//! so a tenant can rotate keys without an operator.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use entity::TenantId;
use freight_core::{
    domain::{
        api_key::{ApiKey, CreateApiKeyRequest},
        audit::Actor,
    },
    store::api_keys,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiJson, ApiPath},
    state::AppState,
    views::{ApiKeyView, CreatedApiKey},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_own_key, list_own_keys))
        .routes(routes!(revoke_own_key))
}

/// Creates a key for `tenant_id`: checks the request, hashes the new secret under the
/// bound key verification shares (a burst of creations waits its turn, or is shed, like a
/// burst of verifications), and stores it. Shared by the operator and self-service routes.
pub async fn create_key(
    state: &AppState,
    tenant_id: TenantId,
    req: CreateApiKeyRequest,
    actor: Actor,
) -> ApiResult<CreatedApiKey> {
    let spec = req.validate(Utc::now())?;
    let key = ApiKey::generate();
    let hashing = key.clone();
    let secret_hash = {
        let _slot = state.auth.authenticator.hashing_slot().await?;
        tokio::task::spawn_blocking(move || hashing.hash_secret())
            .await
            .map_err(|e| ApiError::internal("the argon2 task", e))?
    };
    let row = state
        .services
        .create_key(tenant_id, spec, &key, secret_hash, &actor)
        .await?;
    Ok(CreatedApiKey {
        id: row.id,
        tenant_id: tenant_id.into(),
        key: key.expose(),
        name: row.name,
        prefix: key.prefix(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        scopes: row.scopes,
    })
}

/// Revokes a key (only within `tenant_id` when given), on this replica at once; the others
/// drop it from their caches at their next poll, within a second or two.
pub async fn revoke_key(
    state: &AppState,
    key_id: Uuid,
    tenant_id: Option<TenantId>,
    actor: Actor,
) -> ApiResult<StatusCode> {
    let revoked = state.services.revoke_key(key_id, tenant_id, &actor).await?;
    state
        .auth
        .authenticator
        .forget(&revoked.public_id, key_id)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API key for the caller's tenant.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", security(("api_key" = [])),
    request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "the caller's key lacks the `keys:manage` scope"),
        (status = 422, body = Problem, description = "a bad field, or the tenant holds `TENANT_MAX_API_KEYS` active keys"),
        (status = 503, body = Problem, description = "too many keys are being hashed at once; see `Retry-After`")))]
async fn create_own_key(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<KeyCreated> {
    Ok(KeyCreated(
        create_key(&state, auth.tenant_id, req, auth.actor()).await?,
    ))
}

/// The 201 that carries a new key: never stored by a cache on the way.
pub struct KeyCreated(pub CreatedApiKey);

impl IntoResponse for KeyCreated {
    fn into_response(self) -> Response {
        (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(self.0),
        )
            .into_response()
    }
}

/// The caller's tenant's keys, without secrets.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", security(("api_key" = [])),
    responses((status = 200, body = Vec<ApiKeyView>), (status = 401, body = Problem)))]
async fn list_own_keys(
    State(state): State<AppState>,
    auth: AuthTenant,
) -> ApiResult<Json<Vec<ApiKeyView>>> {
    let keys = api_keys::list(&state.db, auth.tenant_id).await?;
    Ok(Json(keys.into_iter().map(ApiKeyView::from).collect()))
}

/// Revoke one of the caller's tenant's keys (it may be the caller's own).
#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "api-keys", security(("api_key" = [])),
    params(("key_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn revoke_own_key(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(key_id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_key(&state, key_id, Some(auth.tenant_id), auth.actor()).await
}
