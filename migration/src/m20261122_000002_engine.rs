//! What the processing engine needs beyond the initial schema: how many records a
//! retry-scheduled batch holds back (so the job's `retrying` counter is exact), and
//! attempt 0 in the log for records cancelled before any attempt.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE batches ADD COLUMN retrying_records integer NOT NULL DEFAULT 0
    CHECK (retrying_records >= 0);
ALTER TABLE record_logs DROP CONSTRAINT record_logs_attempt_check;
ALTER TABLE record_logs ADD CONSTRAINT record_logs_attempt_check CHECK (attempt >= 0);
"#;

const DOWN: &str = r#"
ALTER TABLE record_logs DROP CONSTRAINT record_logs_attempt_check;
ALTER TABLE record_logs ADD CONSTRAINT record_logs_attempt_check CHECK (attempt >= 1);
ALTER TABLE batches DROP COLUMN retrying_records;
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
