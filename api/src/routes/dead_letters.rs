//! `GET /api/v1/jobs/{id}/dead-letters`: the records that failed for good, with their
//! payloads, oldest first. Requeuing them is `routes::retries`.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use entity::JobId;
use freight_core::store::{
    page::Keyset,
    reads::{self, DeadLetterRow},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiResult, Problem},
    extract::{ApiPath, ApiQuery},
    state::AppState,
    views::Page,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_dead_letters))
}

/// A record that failed for good: a permanent failure, or its attempts ran out.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: Uuid,
    pub record_seq: i64,
    /// The record's `record_key` field, as text.
    pub record_key: Option<String>,
    /// The record as it was submitted.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub error: String,
    /// Attempts made before it was dead-lettered.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// Set once it was requeued: the row stays, and the record runs again.
    pub requeued_at: Option<DateTime<Utc>>,
    pub requeue_count: i32,
    pub batch_id: Uuid,
}

impl From<DeadLetterRow> for DeadLetterView {
    fn from(d: DeadLetterRow) -> Self {
        Self {
            id: d.id,
            record_seq: d.record_seq,
            record_key: d.record_key,
            payload: d.payload,
            error: d.error,
            attempts: d.attempts,
            created_at: d.created_at,
            requeued_at: d.requeued_at,
            requeue_count: d.requeue_count,
            batch_id: d.batch_id.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeadLettersQuery {
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Include dead letters already requeued (`requeued_at` set). Default `true`; `false`
    /// lists only those still open.
    pub include_requeued: Option<bool>,
}

/// The job's dead letters, by `created_at` then `id`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/dead-letters", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path), DeadLettersQuery),
    responses((status = 200, body = Page<DeadLetterView>), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_dead_letters(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
    ApiQuery(q): ApiQuery<DeadLettersQuery>,
) -> ApiResult<Json<Page<DeadLetterView>>> {
    let page = Keyset::parse(q.limit, q.cursor.as_deref())?;
    reads::require_job(&state.db, auth.tenant_id, id).await?;
    let include_requeued = q.include_requeued.unwrap_or(true);
    let dead =
        reads::list_dead_letters(&state.db, auth.tenant_id, id, include_requeued, page).await?;
    Ok(Json(dead.map(DeadLetterView::from).into()))
}
