//! Requests that would cost the server far more than they cost the sender: one long
//! NDJSON line in tiny chunks, bodies of empty objects, made-up HTTP methods that would
//! each add a metric series, slow bodies and never-ending connections.

use bytes::Bytes;
use freight_tests::TestApp;
use futures::stream;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::intake_support::{NDJSON, error_fields, expect_problem};

async fn upload_job(app: &TestApp, key: &str) -> String {
    let job = app
        .create_job(
            key,
            &json!({"source": {"type": "upload"},
                    "destination": {"type": "http", "url": "http://127.0.0.1:9/x"}}),
        )
        .await;
    job["id"].as_str().unwrap().to_owned()
}

/// A body sent as many small chunks (each its own frame at the server).
fn chunked(bytes: Vec<u8>, size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(stream::iter(chunks))
}

/// One NDJSON line far longer than a record may be, sent 512 bytes at a time: refused as
/// a 422 naming its line once the record limit is passed, and nothing of the upload is
/// kept. (Before, the decoder rescanned the unfinished line for every chunk: quadratic.)
#[tokio::test]
async fn a_long_ndjson_line_is_refused_at_the_record_limit() {
    let app = TestApp::spawn_with(|s| s.http.max_record_bytes = 64 << 10).await;
    let (_, key) = app.tenant_with_key("mallory").await;
    let id = upload_job(&app, &key).await;
    let mut body = b"{\"id\": 1}\n{\"blob\": \"".to_vec();
    body.resize(2 << 20, b'x');
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", NDJSON)
        .body(chunked(body, 512))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "long line").await;
    assert_eq!(error_fields(&problem), ["records[1]"]);
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("line 2: ") && message.contains("65536"),
        "{message}"
    );
    let job = app.job(&key, &id).await;
    assert_eq!(job["progress"]["total"], 0, "{job}");

    // A record of exactly the limit is fine.
    let mut line = b"{\"blob\": \"".to_vec();
    line.resize((64 << 10) - 2, b'x');
    line.extend_from_slice(b"\"}\n");
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", NDJSON)
        .body(chunked(line, 512))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

/// A JSON array upload is read as a stream, element by element: many empty objects are
/// accepted without building a value per element, and a bad element is named by index.
#[tokio::test]
async fn json_array_uploads_are_streamed_and_name_the_bad_element() {
    let app = TestApp::spawn_with(|s| s.http.max_record_bytes = 1024).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let id = upload_job(&app, &key).await;
    let n = 60_000;
    let mut body = b"[".to_vec();
    for i in 0..n {
        body.extend_from_slice(if i == 0 { b"{}" } else { b",{}" });
    }
    body.push(b']');
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", "application/json")
        .body(chunked(body, 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["accepted"], n);

    let big = format!(r#"[{{"a": 1}}, {{"blob": "{}"}}]"#, "x".repeat(2000));
    for (body, status, field) in [
        (
            r#"[{"a": 1}, 5, {"b": 2}]"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "records[1]",
        ),
        (big, StatusCode::UNPROCESSABLE_ENTITY, "records[1]"),
        (
            r#"[{"a": 1}, {"b": }]"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "records[1]",
        ),
        (
            r#"[{"a": 1}, {"b": 2}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "records[1]",
        ),
        (
            r#"{"a": 1}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "records[0]",
        ),
    ] {
        let res = app
            .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
            .header("content-type", "application/json")
            .body(chunked(body.clone().into_bytes(), 7))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(res, status, &body).await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
    }
    let job = app.job(&key, &id).await;
    assert_eq!(
        job["progress"]["total"], n,
        "refused uploads add nothing: {job}"
    );
}

/// Made-up HTTP methods are counted under one `OTHER` label: a client cannot add metric
/// series without end (each label value was a new series for ever).
#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let app = TestApp::spawn().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("M{i:06}").as_bytes()).unwrap();
        let res = app.request(method, "/health").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        let _ = app
            .request(Method::GET, &format!("/no/such/route/{i}"))
            .send()
            .await
            .unwrap();
    }
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("M000001"),
        "a made-up method became a label"
    );
    assert!(
        !metrics.contains("/no/such/route"),
        "a raw path became a label"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("freight_http_requests_total") && l.contains("method=\"OTHER\"")),
        "{metrics}"
    );
    // Every series names a method of the fixed set (the recorder is the test process's,
    // shared with the other tests: count labels, not series).
    const METHODS: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
    ];
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("freight_http_requests_total{"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        assert!(method.is_some_and(|m| METHODS.contains(&m)), "{line}");
    }
}
