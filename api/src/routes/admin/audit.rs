//! `GET /api/v1/admin/audit`: the audit trail, newest first, for operators only.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use entity::TenantId;
use freight_core::{
    FieldError,
    store::{
        audit::{self, AuditEvent, AuditFilter},
        page::Keyset,
    },
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Operator,
    error::{ApiError, ApiResult, Problem},
    extract::ApiQuery,
    state::AppState,
    views::Page,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_events))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only events of this tenant.
    pub tenant_id: Option<Uuid>,
    /// Only this action: `key.created`, `key.revoked`, `job.created`, `job.cancelled`,
    /// `job.retried`, `batch.retried`, `dead_letters.requeued`, `tenant.created`,
    /// `tenant.updated`.
    pub action: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The audit trail: who created or revoked keys, created, cancelled or retried jobs,
/// requeued dead letters, created or changed tenants. Newest first. Never holds secrets.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("admin_token" = [])),
    params(AuditQuery),
    responses((status = 200, body = Page<AuditEvent>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_audit_events(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEvent>>> {
    if let Some(action) = &q.action
        && !freight_core::domain::audit::ACTIONS.contains(&action.as_str())
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "action",
            format!(
                "`{action}` is not an audit action ({})",
                freight_core::domain::audit::ACTIONS.join(", ")
            ),
        )]));
    }
    let page = Keyset::parse(q.limit, q.cursor.as_deref())?;
    let filter = AuditFilter {
        tenant_id: q.tenant_id.map(TenantId::from),
        action: q.action,
        since: q.since,
    };
    Ok(Json(audit::list(&state.db, &filter, page).await?.into()))
}
