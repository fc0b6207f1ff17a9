//! Tenant self-service keys: `POST/GET /api/v1/api-keys`, `DELETE /api/v1/api-keys/{key_id}`,
//! so a tenant can rotate keys without an operator.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use freight_core::{
    domain::api_key::{ApiKey, Scope, Scopes},
    repo::{
        api_keys::{self, NewApiKey},
        audit::{self, Actor},
    },
};
use sea_orm::TransactionTrait;
use serde::Deserialize;
use utoipa::ToSchema;
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

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateApiKeyRequest {
    /// A label, up to 200 characters.
    pub name: Option<String>,
    /// When the key stops working (RFC 3339, in the future). Never, if absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// What the key may do: any of `jobs:read`, `jobs:write`, `keys:manage` (default:
    /// all three). A dashboard's key needs only `jobs:read`.
    pub scopes: Option<Vec<String>>,
}

/// Creates a key for `tenant_id`, with its `key.created` audit event in the same
/// transaction. Shared by the operator and the self-service route.
pub async fn create_key(
    state: &AppState,
    tenant_id: Uuid,
    req: CreateApiKeyRequest,
    actor: Actor,
) -> ApiResult<CreatedApiKey> {
    let mut errors = Vec::new();
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 200)
    {
        errors.push(freight_core::FieldError::new(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    if req.expires_at.is_some_and(|at| at <= Utc::now()) {
        errors.push(freight_core::FieldError::new(
            "expires_at",
            "must be in the future",
        ));
    }
    let scopes = match &req.scopes {
        None => Scopes::all(),
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                if Scope::parse(name).is_none() {
                    errors.push(freight_core::FieldError::new(
                        format!("scopes[{i}]"),
                        "is not a scope: use `jobs:read`, `jobs:write` or `keys:manage`",
                    ));
                }
            }
            let scopes = Scopes::from_names(names);
            if scopes.is_empty() && errors.is_empty() {
                errors.push(freight_core::FieldError::new(
                    "scopes",
                    "must name at least one scope",
                ));
            }
            scopes
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let key = ApiKey::generate();
    let hashing = key.clone();
    let secret_hash = {
        // The hashing slots key verification uses: a burst of creations waits its turn
        // (or is shed) like a burst of verifications.
        let _slot = state.auth.hashing_slot().await?;
        tokio::task::spawn_blocking(move || hashing.hash_secret())
            .await
            .map_err(|e| ApiError::Internal(format!("argon2 task: {e}")))?
    };
    let txn = state.db.begin().await?;
    let max = state.settings.tenant_max_api_keys;
    if api_keys::count_active_locked(&txn, tenant_id).await? >= max {
        return Err(ApiError::Validation(vec![freight_core::FieldError::new(
            "api_keys",
            format!("this tenant already holds {max} active API keys, its limit; revoke one first"),
        )]));
    }
    let row = api_keys::create(
        &txn,
        NewApiKey {
            tenant_id,
            name: req.name,
            public_id: key.public_id().to_owned(),
            secret_hash,
            expires_at: req.expires_at,
            scopes,
        },
    )
    .await?;
    audit::record(
        &txn,
        audit::NewEvent {
            tenant_id: Some(tenant_id),
            actor,
            action: audit::KEY_CREATED,
            target_type: "api_key",
            target_id: Some(row.id),
            details: serde_json::json!({
                "name": row.name,
                "prefix": key.prefix(),
                "expires_at": row.expires_at,
            }),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(CreatedApiKey {
        id: row.id,
        tenant_id,
        key: key.expose(),
        name: row.name,
        prefix: key.prefix(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        scopes: row.scopes,
    })
}

/// Revokes a key (only within `tenant_id` when given) on this replica at once; the others
/// drop it from their caches at their next poll, within a second or two. The first
/// revocation writes a `key.revoked` audit event in the same transaction.
pub async fn revoke_key(
    state: &AppState,
    key_id: Uuid,
    tenant_id: Option<Uuid>,
    actor: Actor,
) -> ApiResult<StatusCode> {
    let txn = state.db.begin().await?;
    let revoked = api_keys::revoke(&txn, key_id, tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("API key not found".into()))?;
    if revoked.now {
        audit::record(
            &txn,
            audit::NewEvent {
                tenant_id: Some(revoked.tenant_id),
                actor,
                action: audit::KEY_REVOKED,
                target_type: "api_key",
                target_id: Some(key_id),
                details: serde_json::json!({"prefix": format!("frk_{}", revoked.public_id)}),
            },
        )
        .await?;
    }
    txn.commit().await?;
    state.auth.forget(&revoked.public_id, key_id).await;
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
