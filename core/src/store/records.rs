//! `job_records`: the staged records of a job.

use entity::{JobId, TenantId};
use futures::{Stream, StreamExt};

use super::pg_txn::{CopyError, PgTxn};
use crate::{domain::record::Staged, pg_copy::BinaryRows};

/// Records per chunk an upload or an inline job is parsed and streamed into `COPY` in.
pub const CHUNK: usize = 5_000;

/// A chunk of records to stage, numbered `first_seq ..` in order.
pub struct Numbered {
    pub first_seq: i64,
    pub records: Vec<Staged>,
}

/// Stages chunks of numbered records with one `COPY`, streaming each chunk as it comes:
/// Postgres stores one chunk while the caller prepares the next. The `payload` column is
/// `json`, so Postgres checks each text as `json_in` does (migration 000005); NDJSON
/// uploads pass each line's own text, so nothing is serialised twice.
/// Returns the records staged; a chunk's error stops the copy and comes back as
/// [`CopyError::Source`].
pub async fn stage<E>(
    txn: &PgTxn,
    tenant_id: TenantId,
    job_id: JobId,
    chunks: impl Stream<Item = std::result::Result<Numbered, E>>,
) -> std::result::Result<u64, CopyError<E>> {
    let rows = chunks.map(move |chunk| {
        chunk.map(|Numbered { first_seq, records }| {
            let size: usize = records.iter().map(|r| r.text.len() + 80).sum();
            let mut data = BinaryRows::with_capacity(size);
            for (seq, r) in (first_seq..).zip(records) {
                data.row(5)
                    .uuid(job_id)
                    .uuid(tenant_id)
                    .int8(seq)
                    .opt_text(r.key.as_deref())
                    .text(&r.text);
            }
            data
        })
    });
    txn.copy_in_binary(
        "COPY job_records (job_id, tenant_id, seq, record_key, payload) FROM STDIN (FORMAT binary)",
        rows,
    )
    .await
}
