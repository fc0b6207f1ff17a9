//! Helpers shared by the job-intake test modules (`intake_*`, `isolation`, `redaction`).
//! Kept here rather than in the harness so that those modules stand on their own.

use freight_tests::TestApp;
use reqwest::{Method, Response, StatusCode, header::CONTENT_TYPE};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const NDJSON: &str = "application/x-ndjson";

/// The media type of a response, without parameters.
pub fn media_type(res: &Response) -> Option<String> {
    res.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Reads a response that must be an RFC 9457 problem document and returns its status and
/// body, asserting the media type and that `status` repeats the HTTP status.
pub async fn problem_of(res: Response, what: &str) -> (StatusCode, Value) {
    let status = res.status();
    let ct = media_type(&res);
    let text = res.text().await.unwrap();
    assert_eq!(
        ct.as_deref(),
        Some(PROBLEM_JSON),
        "{what}: {status} came without a problem document: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{what}: {status}: the problem document is not JSON ({e}): {text}")
    });
    assert_eq!(
        body["status"],
        status.as_u16(),
        "{what}: `status` differs from the HTTP status: {body}"
    );
    assert!(
        body["title"].is_string() && body["type"].is_string(),
        "{what}: a problem has `type` and `title`: {body}"
    );
    (status, body)
}

/// `problem_of`, also asserting the status.
pub async fn expect_problem(res: Response, expected: StatusCode, what: &str) -> Value {
    let (status, body) = problem_of(res, what).await;
    assert_eq!(status, expected, "{what}: {body}");
    body
}

/// The `field`s of a problem's `errors`, each with a non-empty message.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    assert!(
                        e["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "an error without a message: {problem}"
                    );
                    e["field"]
                        .as_str()
                        .unwrap_or_else(|| panic!("an error without a field: {problem}"))
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `value` at a dotted path (`retry.max_attempts`), creating objects on the way.
pub fn set(body: &mut Value, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = body;
    for p in parts {
        if !cur.get(p).is_some_and(Value::is_object) {
            cur[p] = json!({});
        }
        cur = &mut cur[p];
    }
    cur[last] = value;
}

/// Removes the value at a dotted path, if there is one.
pub fn remove(body: &mut Value, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = body;
    for p in parts {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
    }
}

/// Whether a job status is one a started job may have before any worker touched it:
/// `queued`, or `running` when its tenant had a free job slot (contract: a job waits in
/// `queued` only while its tenant is at `max_concurrent_jobs`).
pub fn is_started(status: &Value) -> bool {
    status == "queued" || status == "running"
}

/// A valid `upload` job body.
pub fn upload_job(batch_size: i64, record_key: Option<&str>) -> Value {
    let mut body = json!({
        "name": "upload test job",
        "source": {"type": "upload"},
        "destination": {"type": "http", "url": "http://127.0.0.1:9/import"},
        "batch_size": batch_size,
    });
    if let Some(k) = record_key {
        body["record_key"] = json!(k);
    }
    body
}

/// `POST /api/v1/jobs` with a raw body and content type.
pub async fn post_job_raw(
    app: &TestApp,
    key: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = app.tenant(key, Method::POST, "/api/v1/jobs").body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.send().await.unwrap()
}

/// `POST /api/v1/jobs/{id}/records` with a raw body and content type.
pub async fn upload(
    app: &TestApp,
    key: &str,
    job_id: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Response {
    app.tenant(key, Method::POST, &format!("/api/v1/jobs/{job_id}/records"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// An upload that must be accepted: returns `(accepted, total)`.
pub async fn upload_ok(
    app: &TestApp,
    key: &str,
    job_id: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (i64, i64) {
    let res = upload(app, key, job_id, content_type, body).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "upload: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    (
        v["accepted"].as_i64().unwrap(),
        v["total"].as_i64().unwrap(),
    )
}

/// `GET /api/v1/jobs/{id}` as JSON, asserting 200.
pub async fn get_job(app: &TestApp, key: &str, job_id: &str) -> Value {
    let res = app
        .tenant(key, Method::GET, &format!("/api/v1/jobs/{job_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// `POST /api/v1/jobs/{id}/start`.
pub async fn start(app: &TestApp, key: &str, job_id: &str) -> Response {
    app.tenant(key, Method::POST, &format!("/api/v1/jobs/{job_id}/start"))
        .send()
        .await
        .unwrap()
}

/// Rows of a raw SQL query against the test database.
pub async fn rows(app: &TestApp, sql: &str) -> Vec<QueryResult> {
    app.db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
}

/// A single `bigint` from a raw SQL query (`SELECT count(*) AS n ...`).
pub async fn scalar(app: &TestApp, sql: &str) -> i64 {
    app.scalar(sql).await
}

/// How many `job_records` rows a job holds.
pub async fn stored_records(app: &TestApp, job_id: &str) -> i64 {
    let id: Uuid = job_id.parse().unwrap();
    scalar(
        app,
        &format!("SELECT count(*) AS n FROM job_records WHERE job_id = '{id}'"),
    )
    .await
}

/// A client that never reuses connections: for requests the server may answer before
/// reading their whole body (413), after which it closes the connection.
pub fn one_shot_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A streamed (chunked, no `Content-Length`) body of `bytes`, in 8 KiB chunks.
pub fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Creates a tenant with a very high rate limit (for tests that send many requests) and
/// a key for it.
pub async fn busy_tenant_with_key(app: &TestApp, name: &str) -> (Uuid, String) {
    let res = app
        .admin(Method::POST, "/api/v1/admin/tenants")
        .json(&json!({"name": name, "rate_limit_per_second": 100_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let tenant: Uuid = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, key) = app.create_key(tenant, json!({})).await;
    (tenant, key)
}
