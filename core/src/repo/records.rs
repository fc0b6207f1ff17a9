//! `job_records`: the staged records of a job.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

use crate::error::Result;

/// Records per insert statement.
pub const INSERT_CHUNK: usize = 5_000;

/// Inserts records (each a JSON object's text, already validated) numbered `after + 1 ..`,
/// one statement per chunk. `record_key` names the top-level field whose text becomes the
/// record's `record_key`.
///
/// Each record travels as its own element of one `text[]` parameter and Postgres checks
/// each with `json_in` (the column is `json`: see migration 000005), as `COPY` would.
/// (One `jsonb` array parameter expanded with `jsonb_array_elements` made Postgres build
/// the whole array before copying each element out of it.) NDJSON uploads pass each
/// line's own text, so nothing is serialised twice.
pub async fn insert(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    job_id: Uuid,
    after: i64,
    records: Vec<String>,
    record_key: Option<&str>,
) -> Result<()> {
    let mut offset = after;
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let texts: Vec<String> = records.by_ref().take(INSERT_CHUNK).collect();
        let n = texts.len() as i64;
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO job_records (job_id, tenant_id, seq, record_key, payload)
             SELECT $1, $2, $3 + r.ord, r.payload ->> $4::text, r.payload
             FROM (SELECT t::json AS payload, ord FROM unnest($5::text[]) WITH ORDINALITY AS u(t, ord)) AS r",
            [
                job_id.into(),
                tenant_id.into(),
                offset.into(),
                record_key.map(str::to_owned).into(),
                texts.into(),
            ],
        ))
        .await?;
        offset += n;
    }
    Ok(())
}
