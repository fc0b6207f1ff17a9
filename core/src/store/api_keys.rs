//! `api_keys`.

use chrono::{DateTime, Utc};
use entity::{TenantId, api_key, tenant::TenantStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, Set, Statement,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use crate::{domain::api_key::Scopes, error::Result};

pub struct NewApiKey {
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub public_id: String,
    pub secret_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Scopes,
}

pub async fn create(db: &impl ConnectionTrait, new: NewApiKey) -> Result<api_key::Model> {
    let model = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(new.tenant_id),
        name: Set(new.name),
        public_id: Set(new.public_id),
        secret_hash: Set(new.secret_hash),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
        scopes: Set(new.scopes.names()),
    };
    Ok(model.insert(db).await?)
}

/// The tenant's keys that still work (neither revoked nor expired), counted under the
/// tenant row's lock: two creations for one tenant take turns, so neither can take the
/// tenant past its limit of active keys. Call it in the creating transaction.
pub async fn count_active_locked(db: &impl ConnectionTrait, tenant_id: TenantId) -> Result<i64> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
        [tenant_id.into()],
    ))
    .await?;
    use api_key::Column as K;
    let live = Condition::any()
        .add(K::ExpiresAt.is_null())
        .add(Expr::col(K::ExpiresAt).gt(Expr::current_timestamp()));
    let n = api_key::Entity::find()
        .filter(K::TenantId.eq(tenant_id))
        .filter(K::RevokedAt.is_null())
        .filter(live)
        .count(db)
        .await?;
    Ok(n as i64)
}

/// The tenant's keys, newest first, revoked ones included.
pub async fn list(db: &impl ConnectionTrait, tenant_id: TenantId) -> Result<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .order_by_desc(api_key::Column::CreatedAt)
        .all(db)
        .await?)
}

/// What authentication needs to know about a key.
#[derive(Debug, Clone, FromQueryResult)]
pub struct KeyForAuth {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub secret_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub tenant_status: TenantStatus,
    pub rate_limit_per_second: i32,
    pub rate_limit_burst: i32,
    /// Which version of the tenant row this is: a replica that cached the key drops it
    /// when the tenant's `updated_at` moves (its status or limits changed).
    pub tenant_updated_at: DateTime<Utc>,
    pub scopes: Vec<String>,
}

/// Looks a key up by its public id, with its tenant's status (one indexed read).
pub async fn find_for_auth(
    db: &impl ConnectionTrait,
    public_id: &str,
) -> Result<Option<KeyForAuth>> {
    Ok(KeyForAuth::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT k.id, k.tenant_id, k.secret_hash, k.expires_at, k.revoked_at, t.status AS tenant_status,
                t.rate_limit_per_second, t.rate_limit_burst, t.updated_at AS tenant_updated_at, k.scopes
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.public_id = $1",
        [public_id.into()],
    ))
    .one(db)
    .await?)
}

/// A key [`revoke`] found.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Revoked {
    pub public_id: String,
    pub tenant_id: TenantId,
    /// True if this call revoked it; false if it already was.
    pub now: bool,
}

/// Revokes a key, optionally only if it belongs to `tenant_id`. Returns the key when it
/// exists (revoking twice is harmless and keeps the first time). `now()` is the
/// transaction's start time, so `revoked_at = now()` afterwards means this call set it.
pub async fn revoke(
    db: &impl ConnectionTrait,
    key_id: Uuid,
    tenant_id: Option<TenantId>,
) -> Result<Option<Revoked>> {
    Ok(Revoked::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)
         RETURNING public_id, tenant_id, revoked_at = now() AS now",
        [key_id.into(), tenant_id.into()],
    ))
    .one(db)
    .await?)
}

/// A key an api replica may have to drop from its auth cache.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Invalidated {
    pub key_id: Uuid,
    pub public_id: String,
    pub tenant_id: TenantId,
    /// The key itself was revoked.
    pub revoked: bool,
    /// The tenant row's `updated_at` now: a cache entry read from an older version of
    /// the row is stale, one read from this version is not.
    pub tenant_updated_at: DateTime<Utc>,
    pub tenant_status: TenantStatus,
}

/// Keys revoked at or after `since`, and every key of a tenant changed (suspended, say)
/// since then: what each api replica must check against its auth cache.
pub async fn invalidated_since(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<Vec<Invalidated>> {
    Ok(
        Invalidated::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT k.id AS key_id, k.public_id, k.tenant_id, true AS revoked,
                t.updated_at AS tenant_updated_at, t.status AS tenant_status
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.revoked_at >= $1
         UNION ALL
         SELECT k.id, k.public_id, k.tenant_id, false, t.updated_at, t.status
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE t.updated_at >= $1",
            [since.into()],
        ))
        .all(db)
        .await?,
    )
}

/// Writes back `last_used_at` for many keys in one statement (never one per request).
pub async fn touch_last_used(
    db: &impl ConnectionTrait,
    used: &[(Uuid, DateTime<Utc>)],
) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = used.iter().map(|u| u.0).collect();
    let times: Vec<DateTime<Utc>> = used.iter().map(|u| u.1).collect();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.at)
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) WHERE k.id = u.id",
        [ids.into(), times.into()],
    ))
    .await?;
    Ok(())
}
