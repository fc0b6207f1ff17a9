//! Indexes found missing in review: dead letters by batch (batch retry, and the cascade
//! from batches), and jobs by status alone (the reconciler's scans across tenants).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX dead_letters_batch_idx ON dead_letters (batch_id);
             CREATE INDEX jobs_status_idx ON jobs (status) WHERE status IN ('queued', 'running', 'cancelling');",
        )
        .await
        .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX dead_letters_batch_idx; DROP INDEX jobs_status_idx;")
            .await
            .map(|_| ())
    }
}
