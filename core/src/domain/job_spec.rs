//! `POST /api/v1/jobs`: the request shape and its validation into a [`NewJob`].
//!
//! Every broken rule is collected with its dotted field path, so one 422 lists them all.
//! After this, nothing downstream checks these values again.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{
    destination::{Destination, DestinationInput},
    record,
    retry_policy::{RetryPolicy, RetryPolicyInput},
};
use crate::error::{Problems, Result};

pub const DEFAULT_BATCH_SIZE: i64 = 100;
pub const DEFAULT_PARALLELISM: i64 = 4;

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CreateJobRequest {
    /// A label for humans, up to 200 characters.
    pub name: Option<String>,
    pub source: Option<SourceInput>,
    pub destination: Option<DestinationInput>,
    /// The top-level field that identifies a record in the tenant's own terms; logs and
    /// dead letters echo it as `record_key`.
    pub record_key: Option<String>,
    /// Records per batch, 1–10000 (default 100).
    pub batch_size: Option<i64>,
    /// Batches of this job in flight at once, 1–64 (default 4).
    pub parallelism: Option<i64>,
    pub retry: Option<RetryPolicyInput>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct SourceInput {
    /// `inline` (records in this request) or `upload` (records sent afterwards with
    /// `POST /api/v1/jobs/{id}/records`, then `POST /api/v1/jobs/{id}/start`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `inline` only: the records, each a JSON object.
    #[schema(value_type = Option<Vec<Object>>)]
    pub records: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Inline,
    Upload,
}

impl SourceKind {
    pub fn as_json(self) -> Value {
        match self {
            SourceKind::Inline => serde_json::json!({"type": "inline"}),
            SourceKind::Upload => serde_json::json!({"type": "upload"}),
        }
    }
}

/// A validated job, ready to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: Option<String>,
    pub source: SourceKind,
    pub destination: Destination,
    pub record_key: Option<String>,
    pub batch_size: i32,
    pub parallelism: i32,
    pub retry: RetryPolicy,
    /// Inline records; empty for uploads.
    pub records: Vec<Value>,
}

impl CreateJobRequest {
    /// Validates the whole request. `default_retry` is the tenant's default policy.
    /// Network checks on the destination are separate ([`Destination::check_network`]).
    pub fn validate(self, default_retry: RetryPolicy) -> Result<NewJob> {
        let mut problems = Problems::default();
        let name = match self.name {
            Some(n) if n.trim().is_empty() || n.chars().count() > 200 || n.contains('\0') => {
                problems.push("name", "must be 1 to 200 characters, without NUL (\\u0000)");
                None
            }
            other => other,
        };
        let record_key = match self.record_key {
            Some(k) if k.is_empty() || k.len() > 256 || k.contains('\0') => {
                problems.push(
                    "record_key",
                    "must be 1 to 256 characters, without NUL (\\u0000)",
                );
                None
            }
            other => other,
        };
        let batch_size = range(
            &mut problems,
            "batch_size",
            self.batch_size,
            DEFAULT_BATCH_SIZE,
            1,
            10_000,
        );
        let parallelism = range(
            &mut problems,
            "parallelism",
            self.parallelism,
            DEFAULT_PARALLELISM,
            1,
            64,
        );
        let retry = self
            .retry
            .unwrap_or_default()
            .validate(default_retry, "retry", &mut problems);
        let destination = match &self.destination {
            None => {
                problems.push("destination", "is required");
                None
            }
            Some(d) => d.validate(&mut problems),
        };
        let (source, records) = match self.source {
            None => {
                problems.push("source", "is required");
                (None, Vec::new())
            }
            Some(src) => match src.kind.as_deref() {
                Some("inline") => {
                    let records = check_inline(src.records, &mut problems);
                    (Some(SourceKind::Inline), records)
                }
                Some("upload") => {
                    if src.records.is_some() {
                        problems.push("source.records", "an upload job receives its records through POST /api/v1/jobs/{id}/records");
                    }
                    (Some(SourceKind::Upload), Vec::new())
                }
                None => {
                    problems.push("source.type", "is required: `inline` or `upload`");
                    (None, Vec::new())
                }
                Some(other) => {
                    problems.push(
                        "source.type",
                        format!("`{other}` is not a source type: use `inline` or `upload`"),
                    );
                    (None, Vec::new())
                }
            },
        };
        if !problems.is_empty() {
            return problems.into_result(|| unreachable!());
        }
        Ok(NewJob {
            name,
            source: source.expect("checked"),
            destination: destination.expect("checked"),
            record_key,
            batch_size: batch_size.expect("checked") as i32,
            parallelism: parallelism.expect("checked") as i32,
            retry: retry.expect("checked"),
            records,
        })
    }
}

fn check_inline(records: Option<Vec<Value>>, problems: &mut Problems) -> Vec<Value> {
    let Some(records) = records else {
        problems.push("source.records", "is required for an inline source");
        return Vec::new();
    };
    if records.is_empty() {
        problems.push("source.records", "must hold at least one record");
    }
    // Name the first few bad records; a list of a million helps nobody.
    for (i, message) in records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| record::check(r).err().map(|m| (i, m)))
        .take(20)
    {
        problems.push(format!("source.records[{i}]"), message);
    }
    records
}

fn range(
    problems: &mut Problems,
    field: &str,
    value: Option<i64>,
    default: i64,
    lo: i64,
    hi: i64,
) -> Option<i64> {
    let v = value.unwrap_or(default);
    problems.check(
        field,
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("must be between {lo} and {hi}"))
        },
    )
}

/// Fingerprint of a request body for `Idempotency-Key`: SHA-256 of its canonical JSON
/// (object keys sorted), so key order and white space do not make two bodies differ.
pub fn request_fingerprint(body: &Value) -> String {
    let mut hasher = Sha256::new();
    canonical(body, &mut hasher);
    hex::encode(hasher.finalize())
}

/// Feeds `v` to the hasher with object keys sorted. Written out rather than relying on
/// `Value::to_string`, whose key order depends on serde_json's `preserve_order` feature,
/// which any crate in the build may switch on.
fn canonical(v: &Value, out: &mut Sha256) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.update(b"{");
            for k in keys {
                out.update(Value::String(k.clone()).to_string().as_bytes());
                out.update(b":");
                canonical(&map[k], out);
                out.update(b",");
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for i in items {
                canonical(i, out);
                out.update(b",");
            }
            out.update(b"]");
        }
        scalar => out.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> CreateJobRequest {
        serde_json::from_value(v).unwrap()
    }

    fn fields(err: crate::Error) -> Vec<String> {
        match err {
            crate::Error::Validation(f) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_request_validates() {
        let job = request(json!({
            "name": "contacts",
            "source": {"type": "inline", "records": [{"id": 1}, {"id": 2}]},
            "destination": {"type": "http", "url": "https://crm.example.com/import", "headers": {"Authorization": "x"}},
            "record_key": "id", "batch_size": 500, "parallelism": 4,
            "retry": {"max_attempts": 3}
        }))
        .validate(RetryPolicy::default())
        .unwrap();
        assert_eq!(job.records.len(), 2);
        assert_eq!(job.retry.max_attempts, 3);
        assert_eq!(job.retry.initial_interval_ms, 500);
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = request(json!({
            "name": "",
            "source": {"type": "inline", "records": [{"id": 1}, 5]},
            "destination": {"type": "http", "url": "ftp://x", "method": "GET", "timeout_ms": 0},
            "batch_size": 0, "parallelism": 65,
            "retry": {"jitter": 3}
        }))
        .validate(RetryPolicy::default())
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "name",
                "batch_size",
                "parallelism",
                "retry.jitter",
                "destination.url",
                "destination.method",
                "destination.timeout_ms",
                "source.records[1]"
            ]
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let err = request(json!({}))
            .validate(RetryPolicy::default())
            .unwrap_err();
        assert_eq!(fields(err), ["destination", "source"]);
        let err = request(json!({"source": {"type": "ftp"}, "destination": {"type": "s3"}}))
            .validate(RetryPolicy::default())
            .unwrap_err();
        assert_eq!(fields(err), ["destination.type", "source.type"]);
    }

    #[test]
    fn fingerprint_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b":[1,2], "a":1 }"#).unwrap();
        assert_eq!(request_fingerprint(&a), request_fingerprint(&b));
    }
}
