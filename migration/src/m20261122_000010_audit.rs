//! `audit_events`: an append-only record of who changed what — keys, jobs, retries,
//! tenants. One row per change, written in the same transaction as the change itself
//! (`core/src/repo/audit.rs`). A trigger refuses UPDATE, DELETE and TRUNCATE, so not even
//! a bug in Freight can rewrite history; only dropping the table (a migration) can.
//!
//! `tenant_id` has no foreign key on purpose: the trail of a tenant must outlive the
//! tenant (its other rows go with `ON DELETE CASCADE`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid,
    -- `operator`, or `key:<public id>` for a tenant API key (never the secret).
    actor       text NOT NULL CHECK (actor = 'operator' OR actor LIKE 'key:%'),
    action      text NOT NULL CHECK (action IN (
                    'key.created', 'key.revoked', 'job.created', 'job.cancelled', 'job.retried',
                    'batch.retried', 'dead_letters.requeued', 'tenant.created', 'tenant.updated')),
    target_type text NOT NULL,
    target_id   uuid,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object')
);
-- The list is newest first (id order), filtered by tenant, action or time.
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, id DESC);
CREATE INDEX audit_events_action_idx ON audit_events (action, id DESC);
CREATE INDEX audit_events_at_idx ON audit_events (at);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP;
END
$$;
CREATE TRIGGER audit_events_no_rewrite BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS audit_events;
DROP FUNCTION IF EXISTS audit_events_append_only();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(UP)
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(DOWN)
            .await
            .map(|_| ())
    }
}
