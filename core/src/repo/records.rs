//! `job_records`: the staged records of a job.

use std::convert::Infallible;

use futures::{Stream, StreamExt, stream};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    domain::record,
    error::{Error, Result},
    pg_txn::{CopyError, PgTxn},
};

/// Records per chunk an upload is parsed and sent in.
pub const INSERT_CHUNK: usize = 5_000;

/// One record to stage: its JSON text (already checked) and its `record_key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub text: String,
    pub key: Option<String>,
}

impl Staged {
    /// A record held as a built value, stored as its serialisation.
    pub fn of(record: &Value, key: Option<&str>) -> Self {
        Self {
            text: record.to_string(),
            key: key.and_then(|k| record::key_of(record, k)),
        }
    }
}

/// Stages records numbered `after + 1 ..` with one `COPY`, streaming each chunk as it
/// comes: Postgres stores one chunk while the caller prepares the next. The `payload`
/// column is `json`, so Postgres checks each text as `json_in` does (migration 000005);
/// NDJSON uploads pass each line's own text, so nothing is serialised twice.
/// Returns the records staged; a chunk's error stops the copy and comes back as
/// [`CopyError::Source`].
pub async fn stage<E>(
    txn: &PgTxn,
    tenant_id: Uuid,
    job_id: Uuid,
    after: i64,
    chunks: impl Stream<Item = std::result::Result<Vec<Staged>, E>>,
) -> std::result::Result<u64, CopyError<E>> {
    let prefix = format!("{job_id}\t{tenant_id}\t");
    let mut seq = after;
    let rows = chunks.map(move |chunk| {
        chunk.map(|records| {
            let size: usize = records.iter().map(|r| r.text.len() + 64).sum();
            let mut buf = Vec::with_capacity(size);
            for r in records {
                seq += 1;
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(seq.to_string().as_bytes());
                buf.push(b'\t');
                match &r.key {
                    Some(k) => copy_text(k, &mut buf),
                    None => buf.extend_from_slice(b"\\N"),
                }
                buf.push(b'\t');
                copy_text(&r.text, &mut buf);
                buf.push(b'\n');
            }
            buf
        })
    });
    txn.copy_in(
        "COPY job_records (job_id, tenant_id, seq, record_key, payload) FROM STDIN",
        rows,
    )
    .await
}

/// [`stage`] for records already in hand.
pub async fn stage_all(
    txn: &PgTxn,
    tenant_id: Uuid,
    job_id: Uuid,
    after: i64,
    records: Vec<Staged>,
) -> Result<u64> {
    let once = stream::iter([Ok::<_, Infallible>(records)]);
    stage(txn, tenant_id, job_id, after, once)
        .await
        .map_err(|e| match e {
            CopyError::Database(e) => Error::from(e),
            CopyError::Source(never) => match never {},
        })
}

/// Appends `s` as a field of COPY's text format: backslash, tab, newline and carriage
/// return are escaped (JSON text may hold a tab or CR as whitespace between tokens).
fn copy_text(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut out = Vec::new();
        copy_text("{\"a\":\t\"x\\\\y\\n\"}\r", &mut out);
        assert_eq!(out, b"{\"a\":\\t\"x\\\\\\\\y\\\\n\"}\\r");
    }
}
