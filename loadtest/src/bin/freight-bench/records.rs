//! The generated records: `{id, name, email, amount, created_at}`, as NDJSON for Freight
//! and as COPY rows for the baselines, in the format Freight itself uses for each table
//! (text for the destination, binary for its own tables, with Freight's own encoder).
//! Generated before any clock starts.

use std::fmt::Write;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use freight_core::pg_copy::BinaryRows;

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}

struct Fields {
    id: u64,
    name: String,
    email: String,
    amount: String,
    created_at: String,
}

fn fields(id: u64) -> Fields {
    Fields {
        id,
        name: format!("Customer {id}"),
        email: format!("customer{id}@example.com"),
        amount: format!("{}.{:02}", (id * 7919) % 100_000, id % 100),
        created_at: (base_time() + Duration::seconds(id as i64))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    }
}

/// One record as a JSON object (no trailing newline). `extra` is spliced in as more
/// fields, e.g. `"_fail_first":1`.
pub fn json(id: u64, extra: &str) -> String {
    let f = fields(id);
    let mut s = format!(
        r#"{{"id":{},"name":"{}","email":"{}","amount":{},"created_at":"{}""#,
        f.id, f.name, f.email, f.amount, f.created_at
    );
    if !extra.is_empty() {
        s.push(',');
        s.push_str(extra);
    }
    s.push('}');
    s
}

/// Records `first..first + n` as NDJSON bodies of at most `chunk` records each.
pub fn ndjson_chunks(first: u64, n: u64, chunk: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut id = first;
    let end = first + n;
    while id < end {
        let stop = (id + chunk).min(end);
        let mut body = String::with_capacity(((stop - id) * 110) as usize);
        for i in id..stop {
            body.push_str(&json(i, ""));
            body.push('\n');
        }
        out.push(Bytes::from(body));
        id = stop;
    }
    out
}

/// The same records as COPY text rows for the destination table
/// `(id, name, email, amount, created_at)`.
pub fn dest_copy_rows(first: u64, n: u64) -> Vec<u8> {
    let mut s = String::with_capacity((n * 90) as usize);
    for id in first..first + n {
        let f = fields(id);
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}",
            f.id, f.name, f.email, f.amount, f.created_at
        );
    }
    s.into_bytes()
}

/// One `succeeded` log row per record, as the engine writes them (binary `COPY`, as the
/// engine does), for `(job_id, tenant_id, batch_id, record_seq, attempt, status,
/// duration_ms)`.
pub fn log_copy_rows(job: Uuid, tenant: Uuid, n: u64, batch_size: u64) -> Vec<u8> {
    let mut rows = BinaryRows::whole((n * 100) as usize);
    let mut batch = Uuid::new_v4();
    for seq in 1..=n {
        if (seq - 1).is_multiple_of(batch_size.max(1)) {
            batch = Uuid::new_v4();
        }
        rows.row(7)
            .uuid(job)
            .uuid(tenant)
            .uuid(batch)
            .int8(seq as i64)
            .int4(1)
            .text("succeeded")
            .int4((seq % 7) as i32);
    }
    rows.finish()
}

/// `job_records` rows `(job_id, seq, tenant_id, record_key, payload)` for the records
/// (binary `COPY`, as the engine stages them).
pub fn job_records_copy_rows(job: Uuid, tenant: Uuid, first: u64, n: u64) -> Vec<u8> {
    let mut rows = BinaryRows::whole((n * 150) as usize);
    for (seq, id) in (first..first + n).enumerate() {
        rows.row(5)
            .uuid(job)
            .int8(seq as i64 + 1)
            .uuid(tenant)
            .text(&id.to_string())
            .text(&json(id, ""));
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_json() {
        let v: serde_json::Value =
            serde_json::from_str(&super::json(42, r#""_fail_first":1"#)).expect("valid JSON");
        assert_eq!(v["id"], 42);
        assert_eq!(v["_fail_first"], 1);
        let chunks = super::ndjson_chunks(1, 5, 2);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2].iter().filter(|b| **b == b'\n').count(), 1);
    }
}
