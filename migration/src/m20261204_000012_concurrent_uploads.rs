//! Concurrent uploads to one job. An upload call used to hold the job's row lock for its
//! whole `COPY`, because the lock is what numbered its records; two calls to one job
//! took turns. Now each call reserves its sequence numbers a chunk at a time, in short
//! statements of their own, against `jobs.last_reserved_seq`, and the calls `COPY` at
//! once. A call that fails after reserving leaves its numbers unused, so a job's
//! sequence numbers may have gaps: a batch covers a range of them and holds at most
//! that many records.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE jobs ADD COLUMN last_reserved_seq bigint NOT NULL DEFAULT 0;
                 UPDATE jobs SET last_reserved_seq = total_records;
                 ALTER TABLE jobs ADD CONSTRAINT jobs_reserved_covers_total
                     CHECK (last_reserved_seq >= total_records);
                 ALTER TABLE batches DROP CONSTRAINT batches_range;
                 ALTER TABLE batches ADD CONSTRAINT batches_range CHECK (
                     first_record_seq >= 1 AND last_record_seq >= first_record_seq
                     AND record_count BETWEEN 1 AND last_record_seq - first_record_seq + 1);",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Batches planned over gaps would break the old range check: down refuses
        // rather than lose them (the ALTER fails on such a row).
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE batches DROP CONSTRAINT batches_range;
                 ALTER TABLE batches ADD CONSTRAINT batches_range CHECK (
                     first_record_seq >= 1 AND last_record_seq >= first_record_seq
                     AND record_count = last_record_seq - first_record_seq + 1);
                 ALTER TABLE jobs DROP COLUMN IF EXISTS last_reserved_seq;",
            )
            .await
            .map(|_| ())
    }
}
