//! `audit_events`: who changed what. Append-only (a trigger refuses UPDATE, DELETE and
//! TRUNCATE).
//!
//! Every event is written with [`record`] on the connection of the change it describes —
//! inside the change's own transaction — so a change that rolls back leaves no event and
//! a committed change always has one. An event records a change: a request that changes
//! nothing (a repeated revoke, a replayed `Idempotency-Key`, a retry with nothing left to
//! requeue) records none.
//!
//! Details never hold secrets: no API key, no destination URL or header, no payload.

use chrono::{DateTime, Utc};
use entity::TenantId;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::page::{Keyset, Page};
use crate::{domain::audit::NewEvent, error::Result};

/// Appends one event. Call it on the transaction of the change it records.
pub async fn record(db: &impl ConnectionTrait, event: NewEvent) -> Result<()> {
    let details = match event.details {
        Value::Object(_) => event.details,
        _ => Value::Object(Default::default()),
    };
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO audit_events (tenant_id, actor, action, target_type, target_id, details)
         VALUES ($1, $2, $3, $4, $5, $6)",
        [
            event.tenant_id.into(),
            event.actor.as_text().into(),
            event.action.into(),
            event.target_type.into(),
            event.target_id.into(),
            details.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// An event as listed.
#[derive(Debug, Clone, FromQueryResult, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Increasing: a later event has a larger id.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The tenant the change concerns (absent for none).
    pub tenant_id: Option<Uuid>,
    /// `operator`, or `key:<public id>` for a tenant API key.
    pub actor: String,
    /// `key.created`, `key.revoked`, `job.created`, `job.cancelled`, `job.retried`,
    /// `batch.retried`, `dead_letters.requeued`, `tenant.created` or `tenant.updated`.
    pub action: String,
    /// `tenant`, `api_key`, `job`, `batch` or `dead_letters`.
    pub target_type: String,
    pub target_id: Option<Uuid>,
    /// What changed (counts, limits, names); never a secret.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant_id: Option<TenantId>,
    pub action: Option<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Events newest first (by id); the cursor is the last id seen.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: &AuditFilter,
    page: Keyset<i64>,
) -> Result<Page<AuditEvent>> {
    let rows = AuditEvent::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT id, at, tenant_id, actor, action, target_type, target_id, details
         FROM audit_events
         WHERE ($1::uuid IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR action = $2)
           AND ($3::timestamptz IS NULL OR at >= $3)
           AND ($4::bigint IS NULL OR id < $4)
         ORDER BY id DESC
         LIMIT $5",
        [
            filter.tenant_id.into(),
            filter.action.clone().into(),
            filter.since.into(),
            page.after.into(),
            ((page.limit + 1) as i64).into(),
        ],
    ))
    .all(db)
    .await?;
    Ok(page.finish(rows, |e| e.id))
}
