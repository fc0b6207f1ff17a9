//! Property tests of intake against one running app: whatever arrives, the answer is
//! never a 5xx, every refusal is a problem document, and uploads stay all or nothing.
//!
//! Inputs come from proptest strategies sampled with a `TestRunner` (random seed; set
//! `PROPTEST_RNG_SEED` to replay). A failure message carries the offending input.

use freight_tests::TestApp;
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use reqwest::{Method, Response, StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};

use crate::intake_support::{
    NDJSON, busy_tenant_with_key, media_type, remove, rows, set, upload_job,
};

/// `n` values drawn from `strategy`.
fn sample<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::new(Config {
        cases: n as u32,
        ..Config::default()
    });
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

const KEYS: &[&str] = &[
    "name",
    "source",
    "destination",
    "record_key",
    "batch_size",
    "parallelism",
    "retry",
    "type",
    "records",
    "url",
    "method",
    "headers",
    "timeout_ms",
    "table",
    "key",
    "mode",
    "max_attempts",
    "initial_interval_ms",
    "multiplier",
    "max_interval_ms",
    "jitter",
    "id",
];

const WORDS: &[&str] = &[
    "inline",
    "upload",
    "http",
    "postgres",
    "POST",
    "GET",
    "insert",
    "upsert",
    "http://127.0.0.1:9/x",
    "https://u:p@example.com/x",
    "postgres://u:p@127.0.0.1/db",
    "contacts",
    "public.contacts",
    "Content-Length",
    "Authorization",
    "",
    " ",
    "id",
    "\u{0}",
];

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => any::<String>()]
}

fn arb_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            2,
            64,
            65,
            100,
            10_000,
            10_001,
            300_000,
            i64::MAX,
            i64::MIN
        ])
        .prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![0.0f64, 0.5, 1.0, 1.5, 2.0, 10.0, 10.5, -0.1])
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_owned())),
    ]
    .boxed()
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid job with every optional part present, for mutation.
fn full_job() -> Value {
    json!({
        "name": "fuzz",
        "source": {"type": "inline", "records": [{"id": 1, "email": "a@example.com"}, {"id": 2}]},
        "destination": {"type": "http", "url": "http://127.0.0.1:9/import", "method": "PUT",
                        "headers": {"X-Tenant": "acme"}, "timeout_ms": 5000},
        "record_key": "id",
        "batch_size": 1,
        "parallelism": 2,
        "retry": {"max_attempts": 3, "initial_interval_ms": 100, "multiplier": 1.5, "max_interval_ms": 1000, "jitter": 0.1},
    })
}

const PATHS: &[&str] = &[
    "name",
    "source",
    "source.type",
    "source.records",
    "destination",
    "destination.type",
    "destination.url",
    "destination.method",
    "destination.headers",
    "destination.headers.X-Extra",
    "destination.timeout_ms",
    "destination.table",
    "destination.key",
    "destination.mode",
    "record_key",
    "batch_size",
    "parallelism",
    "retry",
    "retry.max_attempts",
    "retry.initial_interval_ms",
    "retry.multiplier",
    "retry.max_interval_ms",
    "retry.jitter",
    "unknown_field",
];

/// A valid job with one to three fields replaced by arbitrary JSON or removed.
fn mutated_job() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            prop::sample::select(PATHS),
            prop::option::weighted(0.8, arb_json()),
        ),
        1..4,
    )
    .prop_map(|edits| {
        let mut body = full_job();
        for (path, value) in edits {
            match value {
                Some(v) => set(&mut body, path, v),
                None => remove(&mut body, path),
            }
        }
        body
    })
}

fn arb_int() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-5i64..20_000).prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, 64, 65, 100, 10_000, 10_001, 300_000, 300_001])
            .prop_map(Value::from),
    ]
    .boxed()
}

fn arb_float() -> BoxedStrategy<Value> {
    prop_oneof![
        (-2.0f64..12.0).prop_map(|f| json!(f)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
    .boxed()
}

fn arb_text() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_owned())),
    ]
    .boxed()
}

/// A value of the type the field at `path` takes (so that the request gets past the
/// parser and into validation and the store), often out of range.
fn typed_value(path: &'static str) -> BoxedStrategy<Value> {
    match path {
        "batch_size"
        | "parallelism"
        | "destination.timeout_ms"
        | "retry.max_attempts"
        | "retry.initial_interval_ms"
        | "retry.max_interval_ms" => arb_int(),
        "retry.multiplier" | "retry.jitter" => arb_float(),
        "destination.headers" => {
            prop::collection::btree_map(any::<String>(), any::<String>(), 0..4)
                .prop_map(|m| json!(m))
                .boxed()
        }
        "destination.key" => prop::collection::vec(arb_text(), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        "source.records" => prop::collection::vec(arb_json(), 0..5)
            .prop_map(Value::Array)
            .boxed(),
        "source" | "destination" | "retry" => {
            prop::collection::btree_map(arb_key(), arb_json(), 0..5)
                .prop_map(|m| json!(m))
                .boxed()
        }
        _ => arb_text(),
    }
}

/// A valid job with one to three fields given values of the right type, or removed.
fn retyped_job() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        prop::sample::select(PATHS)
            .prop_flat_map(|path| (Just(path), prop::option::weighted(0.9, typed_value(path)))),
        1..4,
    )
    .prop_map(|edits| {
        let mut body = full_job();
        for (path, value) in edits {
            match value {
                Some(v) => set(&mut body, path, v),
                None => remove(&mut body, path),
            }
        }
        body
    })
}

/// Any JSON document as a job body: objects with job-like keys, valid jobs with fields
/// changed (to anything, or to values of the right type), and documents that are not
/// objects at all.
fn arb_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => prop::collection::btree_map(arb_key(), arb_json(), 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        2 => mutated_job(),
        3 => retyped_job(),
        1 => arb_json().prop_filter("not an object", |v| !v.is_object()),
    ]
}

/// Checks the invariants of any answer to `POST /api/v1/jobs`; returns the status.
async fn check_answer(res: Response, input: &dyn std::fmt::Display) -> StatusCode {
    let status = res.status();
    let ct = media_type(&res);
    let location = res.headers().get("location").is_some();
    let text = res.text().await.unwrap();
    assert!(
        !status.is_server_error(),
        "{status} for the body {input}\nanswer: {text}"
    );
    if status.is_success() {
        assert_eq!(status, StatusCode::CREATED, "for the body {input}");
        let job: Value = serde_json::from_str(&text).unwrap();
        assert!(
            job["id"].is_string() && location,
            "a 201 names its job: {text}"
        );
    } else {
        assert_eq!(
            ct.as_deref(),
            Some("application/problem+json"),
            "{status} without a problem for {input}: {text}"
        );
        let problem: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
        assert_eq!(problem["status"], status.as_u16(), "{text}");
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let errors = problem["errors"].as_array().map(Vec::len).unwrap_or(0);
            assert!(
                errors > 0,
                "a 422 lists the broken rules: {text} for {input}"
            );
        }
    }
    status
}

#[tokio::test]
async fn arbitrary_json_bodies_never_cause_a_5xx() {
    let app = TestApp::spawn().await;
    let (_, key) = busy_tenant_with_key(&app, "fuzz").await;
    let bodies = sample(arb_body(), 160);
    let mut seen = std::collections::BTreeMap::new();
    for body in &bodies {
        let res = app
            .tenant(&key, Method::POST, "/api/v1/jobs")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        *seen
            .entry(check_answer(res, body).await.as_u16())
            .or_insert(0) += 1;
    }
    println!("statuses: {seen:?}");
    // The inputs reached both the validator's refusals and the store.
    assert!(
        seen.contains_key(&201) && seen.contains_key(&422) && seen.contains_key(&400),
        "{seen:?}"
    );
}

/// Arbitrary bytes, or a valid body with a few bytes changed or cut short.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    let valid = full_job().to_string().into_bytes();
    let len = valid.len();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (prop::collection::vec((0..len, any::<u8>()), 1..6), 0..=len).prop_map(
            move |(edits, cut)| {
                let mut bytes = valid.clone();
                for (at, b) in edits {
                    bytes[at] = b;
                }
                bytes.truncate(cut.max(len / 2));
                bytes
            }
        ),
    ]
}

#[tokio::test]
async fn arbitrary_bytes_never_cause_a_5xx() {
    let app = TestApp::spawn().await;
    let (_, key) = busy_tenant_with_key(&app, "fuzz").await;
    let job = app.create_job(&key, &upload_job(10, Some("id"))).await;
    let upload_path = format!("/api/v1/jobs/{}/records", job["id"].as_str().unwrap());
    for bytes in sample(arb_bytes(), 128) {
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let res = app
            .tenant(&key, Method::POST, "/api/v1/jobs")
            .header(CONTENT_TYPE, "application/json")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        check_answer(res, &format!("{bytes:?} ({shown})")).await;
        // The same bytes as an upload.
        for ct in ["application/json", NDJSON] {
            let res = app
                .tenant(&key, Method::POST, &upload_path)
                .header(CONTENT_TYPE, ct)
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            let status = res.status();
            let text = res.text().await.unwrap();
            assert!(
                !status.is_server_error(),
                "{status} for a {ct} upload of {bytes:?} ({shown}): {text}"
            );
        }
    }
}

/// One NDJSON line: a good record, arbitrary JSON, arbitrary text or a blank line.
fn arb_line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (any::<i64>(), any::<String>()).prop_map(|(id, s)| json!({"id": id, "note": s}).to_string()),
        2 => arb_json().prop_map(|v| v.to_string()),
        1 => any::<String>().prop_map(|s| s.replace('\n', " ")),
        1 => Just(String::new()),
    ]
}

#[tokio::test]
async fn uploads_are_all_or_nothing_whatever_the_lines() {
    let app = TestApp::spawn().await;
    let (_, key) = busy_tenant_with_key(&app, "fuzz").await;
    let job = app.create_job(&key, &upload_job(10, Some("id"))).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/jobs/{id}/records");
    let mut expected_total = 0i64;
    let mut statuses = std::collections::BTreeMap::new();
    for lines in sample(prop::collection::vec(arb_line(), 0..12), 64) {
        let body = lines.join("\n");
        let res = app
            .tenant(&key, Method::POST, &path)
            .header(CONTENT_TYPE, NDJSON)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let ct = media_type(&res);
        let text = res.text().await.unwrap();
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
        assert!(
            !status.is_server_error(),
            "{status} for the upload {body:?}: {text}"
        );
        if status == StatusCode::ACCEPTED {
            let v: Value = serde_json::from_str(&text).unwrap();
            let records = lines
                .iter()
                .filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()))
                .count() as i64;
            assert_eq!(v["accepted"], records, "{body:?}");
            expected_total += records;
            assert_eq!(v["total"], expected_total, "{body:?}");
        } else {
            assert_eq!(ct.as_deref(), Some("application/problem+json"), "{text}");
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{status}: {text}"
            );
        }
    }
    println!("statuses: {statuses:?}");
    assert!(
        statuses.contains_key(&202),
        "no upload was accepted: {statuses:?}"
    );
    let got = rows(
        &app,
        &format!("SELECT count(*) AS n, count(DISTINCT seq) AS d, coalesce(max(seq), 0) AS m FROM job_records WHERE job_id = '{id}'"),
    )
    .await;
    let (n, d, m): (i64, i64, i64) = (
        got[0].try_get("", "n").unwrap(),
        got[0].try_get("", "d").unwrap(),
        got[0].try_get("", "m").unwrap(),
    );
    assert_eq!(
        (n, d, m),
        (expected_total, expected_total, expected_total),
        "stored records vs accepted ones"
    );
}
