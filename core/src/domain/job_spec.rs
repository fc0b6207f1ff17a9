//! `POST /api/v1/jobs`: the request shape and its validation into a [`NewJob`].
//!
//! Every broken rule is collected with its dotted field path, so one 422 lists them all.
//! After this, nothing downstream checks these values again.
//!
//! Inline records are never built as JSON values: the request borrows them as the text
//! of their array ([`RawRecords`]), which is checked element by element here and staged
//! chunk by chunk at intake, so a body's memory stays a small multiple of its size.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{
    decode::{CheckedRecord, DecodeError, DecodeErrorKind, RecordDecoder},
    destination::{Destination, DestinationInput},
    json_array::JsonArrayDecoder,
    record::Staged,
    retry_policy::{RetryPolicy, RetryPolicyInput},
};
use crate::error::{Problems, Result};

pub const DEFAULT_BATCH_SIZE: i64 = 100;
pub const DEFAULT_PARALLELISM: i64 = 4;

/// How long an `Idempotency-Key` keeps returning the job it created.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

/// An `Idempotency-Key` header with the fingerprint of the body it came with
/// ([`request_fingerprint`]).
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateJobRequest<'a> {
    /// A label for humans, up to 200 characters.
    pub name: Option<String>,
    #[serde(borrow)]
    pub source: Option<SourceInput<'a>>,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceInput<'a> {
    /// `inline` (records in this request) or `upload` (records sent afterwards with
    /// `POST /api/v1/jobs/{id}/records`, then `POST /api/v1/jobs/{id}/start`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `inline` only: the records, each a JSON object.
    #[serde(borrow)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub records: Option<RawRecords<'a>>,
}

/// Inline records as sent: the text of a JSON array, borrowed from the request body.
#[derive(Debug, Clone, Copy)]
pub struct RawRecords<'a>(&'a RawValue);

impl<'a> RawRecords<'a> {
    pub fn text(&self) -> &'a str {
        self.0.get()
    }

    /// The records in chunks of at most `chunk`, each kept as its own text, with its
    /// `record_key`. One chunk at a time is in memory.
    pub fn chunks(
        self,
        key: Option<&'a str>,
        max_record: usize,
        chunk: usize,
    ) -> impl Iterator<Item = std::result::Result<Vec<Staged>, DecodeError>> + 'a {
        self.checked_chunks(key, max_record, chunk)
            .map(|c| c.map(|records| records.into_iter().map(|r| r.record).collect()))
    }

    /// [`chunks`](Self::chunks), each record with the rule it breaks, if any.
    fn checked_chunks(
        self,
        key: Option<&'a str>,
        max_record: usize,
        chunk: usize,
    ) -> impl Iterator<Item = std::result::Result<Vec<CheckedRecord>, DecodeError>> + 'a {
        let mut pieces = self.text().as_bytes().chunks(64 << 10);
        let mut decoder = JsonArrayDecoder::new(max_record);
        let mut decoded: Vec<CheckedRecord> = Vec::new();
        let mut ready: std::collections::VecDeque<CheckedRecord> = Default::default();
        let mut done = false;
        // An error comes after the records decoded before it, so its index is right.
        let mut failed: Option<DecodeError> = None;
        std::iter::from_fn(move || {
            while ready.len() < chunk && !done {
                let step = match pieces.next() {
                    Some(piece) => decoder.push(piece, key, &mut decoded),
                    None => {
                        done = true;
                        decoder.finish(key, &mut decoded)
                    }
                };
                ready.extend(decoded.drain(..));
                if let Err(e) = step {
                    done = true;
                    failed = Some(e);
                }
            }
            if ready.is_empty() {
                return failed.take().map(Err);
            }
            let n = ready.len().min(chunk);
            Some(Ok(ready.drain(..n).collect()))
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawRecords<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        if !raw.get().starts_with('[') {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Other("a JSON value that is not an array"),
                &"an array of records",
            ));
        }
        Ok(Self(raw))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Inline,
    Upload,
}

impl SourceKind {
    pub fn as_json(self) -> serde_json::Value {
        match self {
            SourceKind::Inline => serde_json::json!({"type": "inline"}),
            SourceKind::Upload => serde_json::json!({"type": "upload"}),
        }
    }
}

/// A validated job, ready to store.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub name: Option<String>,
    pub source: SourceKind,
    pub destination: Destination,
    pub record_key: Option<String>,
    pub batch_size: i32,
    pub parallelism: i32,
    pub retry: RetryPolicy,
    /// Inline records, checked; `None` for uploads.
    pub records: Option<RawRecords<'a>>,
    /// How many inline records there are (0 for uploads).
    pub record_count: i64,
    /// The largest record accepted (`MAX_RECORD_BYTES`).
    pub max_record_bytes: usize,
}

impl<'a> CreateJobRequest<'a> {
    /// Validates the whole request. `default_retry` is the tenant's default policy;
    /// `max_record_bytes` the largest record accepted. Network checks on the destination
    /// are the connectors' (`connectors::network::check_destination`).
    pub fn validate(
        self,
        default_retry: RetryPolicy,
        max_record_bytes: usize,
    ) -> Result<NewJob<'a>> {
        let mut problems = Problems::default();
        // A name counts characters; a key bytes, its index's limit.
        let name = text_field(&mut problems, "name", self.name, 200, |n| {
            !n.trim().is_empty() && n.chars().count() <= 200
        });
        let record_key = text_field(&mut problems, "record_key", self.record_key, 256, |k| {
            !k.is_empty() && k.len() <= 256
        });
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
        let source = validate_source(self.source, max_record_bytes, &mut problems)?;
        problems.into_result(|| ())?;
        // Every `None` below pushed a problem above, so none is left by now.
        let (
            Some((source, records, record_count)),
            Some(destination),
            Some(batch_size),
            Some(parallelism),
            Some(retry),
        ) = (source, destination, batch_size, parallelism, retry)
        else {
            return Err(crate::Error::internal(
                "a field failed validation without a problem",
            ));
        };
        Ok(NewJob {
            name,
            source,
            destination,
            record_key,
            batch_size: batch_size as i32,
            parallelism: parallelism as i32,
            retry,
            records,
            record_count,
            max_record_bytes,
        })
    }
}

/// An optional text field that must pass `fits` (1 to `max` characters) and hold no NUL,
/// which Postgres text cannot store.
fn text_field(
    problems: &mut Problems,
    field: &str,
    value: Option<String>,
    max: usize,
    fits: impl Fn(&str) -> bool,
) -> Option<String> {
    match value {
        Some(v) if !fits(&v) || v.contains('\0') => {
            let message = format!("must be 1 to {max} characters, without NUL (\\u0000)");
            problems.push(field, message);
            None
        }
        other => other,
    }
}

/// The source: its kind, inline records (checked, not built) and how many there are.
#[allow(clippy::type_complexity)]
fn validate_source<'a>(
    source: Option<SourceInput<'a>>,
    max_record_bytes: usize,
    problems: &mut Problems,
) -> Result<Option<(SourceKind, Option<RawRecords<'a>>, i64)>> {
    let Some(src) = source else {
        problems.push("source", "is required");
        return Ok(None);
    };
    Ok(match src.kind.as_deref() {
        Some("inline") => {
            let count = check_inline(src.records, max_record_bytes, problems)?;
            Some((SourceKind::Inline, src.records, count))
        }
        Some("upload") => {
            if src.records.is_some() {
                problems.push(
                    "source.records",
                    "an upload job receives its records through POST /api/v1/jobs/{id}/records",
                );
            }
            Some((SourceKind::Upload, None, 0))
        }
        None => {
            problems.push("source.type", "is required: `inline` or `upload`");
            None
        }
        Some(other) => {
            problems.push(
                "source.type",
                format!("`{other}` is not a source type: use `inline` or `upload`"),
            );
            None
        }
    })
}

/// Checks every inline record without building it; returns how many there are. The
/// first few broken records are named, a list of a million helps nobody. A record nested
/// past what the parser reads is not JSON it can read: an error of its own (a 400).
fn check_inline(
    records: Option<RawRecords>,
    max_record: usize,
    problems: &mut Problems,
) -> Result<i64> {
    let Some(records) = records else {
        problems.push("source.records", "is required for an inline source");
        return Ok(0);
    };
    let mut count = 0i64;
    let mut named = 0;
    for chunk in records.checked_chunks(None, max_record, 4096) {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let field = format!("source.records[{count}]");
                if let DecodeErrorKind::Syntax(_) = e.kind {
                    return Err(crate::Error::Malformed(format!(
                        "`{field}`: {}",
                        e.message()
                    )));
                }
                problems.push(field, e.message());
                return Ok(count);
            }
        };
        for record in chunk {
            if let Err(message) = record.verdict
                && named < 20
            {
                problems.push(format!("source.records[{count}]"), message);
                named += 1;
            }
            count += 1;
        }
    }
    if count == 0 {
        problems.push("source.records", "must hold at least one record");
    }
    Ok(count)
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

/// Fingerprint of a request body for `Idempotency-Key`: the same for bodies that are the
/// same JSON, whatever their key order and white space, and computed in one pass without
/// building the body (a 10 MiB inline job must not cost a tree of values). Each value's
/// digest is SHA-256 of its kind and content; an object's combines its members' digests
/// by addition (mod 2^64 per lane), which no member order changes. The body must be JSON.
pub fn request_fingerprint(body: &[u8]) -> std::result::Result<String, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    let digest = Digesting.deserialize(&mut de)?;
    de.end()?;
    Ok(hex::encode(digest))
}

/// Deserializes a value into its digest (see [`request_fingerprint`]).
struct Digesting;

type Digest32 = [u8; 32];

fn leaf(text: &str) -> Digest32 {
    let mut h = Sha256::new();
    h.update(b"s");
    h.update(text.as_bytes());
    h.finalize().into()
}

impl<'de> serde::de::DeserializeSeed<'de> for Digesting {
    type Value = Digest32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Digest32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Digesting {
    type Value = Digest32;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> std::result::Result<Digest32, E> {
        Ok(leaf("null"))
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Digest32, E> {
        Ok(leaf(if v { "true" } else { "false" }))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Digest32, E> {
        Ok(leaf(&serde_json::Value::from(v).to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Digest32, E> {
        Ok(leaf(&serde_json::Value::from(v).to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Digest32, E> {
        Ok(leaf(&serde_json::Value::from(v).to_string()))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Digest32, E> {
        Ok(leaf(&serde_json::Value::from(v).to_string()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Digest32, A::Error> {
        let mut h = Sha256::new();
        h.update(b"[");
        while let Some(d) = seq.next_element_seed(Digesting)? {
            h.update(d);
        }
        Ok(h.finalize().into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Digest32, A::Error> {
        let mut sum = [0u64; 4];
        let mut members = 0u64;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = map.next_value_seed(Digesting)?;
            let mut h = Sha256::new();
            h.update(b"k");
            h.update(serde_json::Value::from(key.as_ref()).to_string().as_bytes());
            h.update(value);
            let member: Digest32 = h.finalize().into();
            for (lane, bytes) in sum.iter_mut().zip(member.chunks_exact(8)) {
                *lane = lane.wrapping_add(u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
            }
            members += 1;
        }
        let mut h = Sha256::new();
        h.update(b"{");
        h.update(members.to_le_bytes());
        for lane in sum {
            h.update(lane.to_le_bytes());
        }
        Ok(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A request as the api parses one: borrowed from the body's text (leaked, for tests).
    fn request(v: Value) -> CreateJobRequest<'static> {
        serde_json::from_str(Box::leak(v.to_string().into_boxed_str())).unwrap()
    }

    const MAX: usize = 1 << 20;

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
        .validate(RetryPolicy::default(), MAX)
        .unwrap();
        assert_eq!(job.record_count, 2);
        assert_eq!(job.retry.max_attempts, 3);
        assert_eq!(job.retry.initial_interval_ms, 500);
        let chunks: Vec<Vec<Staged>> = job
            .records
            .unwrap()
            .chunks(Some("id"), MAX, 1)
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1][0].text, r#"{"id":2}"#);
        assert_eq!(chunks[1][0].key.as_deref(), Some("2"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = request(json!({
            "name": "",
            "source": {"type": "inline", "records": [{"id": 1}, 5, {"big": "x".repeat(64)}]},
            "destination": {"type": "http", "url": "ftp://x", "method": "GET", "timeout_ms": 0},
            "batch_size": 0, "parallelism": 65,
            "retry": {"jitter": 3}
        }))
        .validate(RetryPolicy::default(), 32)
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
                "source.records[1]",
                "source.records[2]"
            ]
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let err = request(json!({}))
            .validate(RetryPolicy::default(), MAX)
            .unwrap_err();
        assert_eq!(fields(err), ["destination", "source"]);
        let err = request(json!({"source": {"type": "ftp"}, "destination": {"type": "s3"}}))
            .validate(RetryPolicy::default(), MAX)
            .unwrap_err();
        assert_eq!(fields(err), ["destination.type", "source.type"]);
        let err = request(json!({"source": {"type": "inline", "records": []}, "destination": {"type": "http", "url": "https://x.example.com/"}}))
            .validate(RetryPolicy::default(), MAX)
            .unwrap_err();
        assert_eq!(fields(err), ["source.records"]);
        assert!(
            serde_json::from_str::<CreateJobRequest>(r#"{"source": {"records": {"a": 1}}}"#)
                .is_err(),
            "records that are not an array are a wrong type"
        );
    }

    #[test]
    fn fingerprint_ignores_key_order_and_white_space_only() {
        let fp = |s: &str| request_fingerprint(s.as_bytes()).unwrap();
        assert_eq!(
            fp(r#"{"a":1,"b":[1,{"x":"y","z":null}]}"#),
            fp(r#"{ "b" : [1, {"z": null, "x": "y"}], "a": 1 }"#)
        );
        for other in [
            r#"{"a":2,"b":[1,{"x":"y","z":null}]}"#,
            r#"{"a":1,"b":[{"x":"y","z":null},1]}"#,
            r#"{"a":1,"b":[1,{"x":"y"}]}"#,
            r#"{"a":"1","b":[1,{"x":"y","z":null}]}"#,
            r#"{"a":1,"b":[1,{"x":"y","z":null}],"c":{}}"#,
        ] {
            assert_ne!(
                fp(r#"{"a":1,"b":[1,{"x":"y","z":null}]}"#),
                fp(other),
                "{other}"
            );
        }
        assert!(request_fingerprint(b"{").is_err());
    }
}
