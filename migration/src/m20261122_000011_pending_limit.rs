//! `tenants.max_pending_records`: the most records a tenant may have not yet terminal
//! across its unfinished jobs. `NULL` is no limit (every existing tenant keeps none).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                // The pending sum reads a tenant's unfinished jobs through the existing
                // `jobs_tenant_status_list_idx (tenant_id, status, id)`: no new index.
                "ALTER TABLE tenants ADD COLUMN max_pending_records bigint
                     CHECK (max_pending_records > 0);",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE tenants DROP COLUMN IF EXISTS max_pending_records;")
            .await
            .map(|_| ())
    }
}
