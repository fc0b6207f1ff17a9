//! `job_records`: the staged records of a job.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Result;

/// Records per insert statement. One jsonb array parameter per statement, expanded by
/// Postgres, keeps the statement's bind count at five whatever the chunk holds.
pub const INSERT_CHUNK: usize = 5_000;

/// Inserts records numbered `after + 1 ..`, one statement per chunk. `record_key` names
/// the top-level field whose text becomes the record's `record_key`.
pub async fn insert(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    job_id: Uuid,
    after: i64,
    records: Vec<Value>,
    record_key: Option<&str>,
) -> Result<()> {
    let mut offset = after;
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<Value> = records.by_ref().take(INSERT_CHUNK).collect();
        let n = chunk.len() as i64;
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO job_records (job_id, tenant_id, seq, record_key, payload)
             SELECT $1, $2, $3 + r.ord, r.payload ->> $4::text, r.payload
             FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS r(payload, ord)",
            [
                job_id.into(),
                tenant_id.into(),
                offset.into(),
                record_key.map(str::to_owned).into(),
                Value::Array(chunk).into(),
            ],
        ))
        .await?;
        offset += n;
    }
    Ok(())
}
