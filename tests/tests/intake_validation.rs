//! `POST /api/v1/jobs` refuses bad input with the right status and a problem document:
//! 422 naming each broken rule by its dotted path, 400 for unreadable JSON, 413, 415, and
//! the SSRF guard on destinations.

use freight_tests::{TestApp, inline_job};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::intake_support::{
    chunked, error_fields, expect_problem, one_shot_client, post_job_raw, problem_of, remove,
    scalar, set, upload, upload_job,
};

/// One way to break a valid job body, and the field the 422 must name.
struct Case {
    what: &'static str,
    patch: fn(&mut Value),
    field: &'static str,
}

fn postgres_destination() -> Value {
    json!({"type": "postgres", "url": "postgres://app@127.0.0.1:5432/crm", "table": "contacts", "key": ["id"], "mode": "upsert"})
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "batch_size 0",
            patch: |b| set(b, "batch_size", json!(0)),
            field: "batch_size",
        },
        Case {
            what: "batch_size 10001",
            patch: |b| set(b, "batch_size", json!(10_001)),
            field: "batch_size",
        },
        Case {
            what: "batch_size negative",
            patch: |b| set(b, "batch_size", json!(-5)),
            field: "batch_size",
        },
        Case {
            what: "parallelism 0",
            patch: |b| set(b, "parallelism", json!(0)),
            field: "parallelism",
        },
        Case {
            what: "parallelism 65",
            patch: |b| set(b, "parallelism", json!(65)),
            field: "parallelism",
        },
        Case {
            what: "max_attempts 0",
            patch: |b| set(b, "retry.max_attempts", json!(0)),
            field: "retry.max_attempts",
        },
        Case {
            what: "max_attempts 101",
            patch: |b| set(b, "retry.max_attempts", json!(101)),
            field: "retry.max_attempts",
        },
        Case {
            what: "multiplier 0.5",
            patch: |b| set(b, "retry.multiplier", json!(0.5)),
            field: "retry.multiplier",
        },
        Case {
            what: "multiplier 11",
            patch: |b| set(b, "retry.multiplier", json!(11.0)),
            field: "retry.multiplier",
        },
        Case {
            what: "jitter -0.1",
            patch: |b| set(b, "retry.jitter", json!(-0.1)),
            field: "retry.jitter",
        },
        Case {
            what: "jitter 1.5",
            patch: |b| set(b, "retry.jitter", json!(1.5)),
            field: "retry.jitter",
        },
        Case {
            what: "initial_interval_ms 0",
            patch: |b| set(b, "retry.initial_interval_ms", json!(0)),
            field: "retry.initial_interval_ms",
        },
        Case {
            what: "initial_interval_ms negative",
            patch: |b| set(b, "retry.initial_interval_ms", json!(-1)),
            field: "retry.initial_interval_ms",
        },
        Case {
            what: "max_interval_ms below initial_interval_ms",
            patch: |b| {
                set(
                    b,
                    "retry",
                    json!({"initial_interval_ms": 5000, "max_interval_ms": 1000}),
                )
            },
            field: "retry.max_interval_ms",
        },
        Case {
            what: "unknown destination type",
            patch: |b| set(b, "destination.type", json!("ftp")),
            field: "destination.type",
        },
        Case {
            what: "destination without type",
            patch: |b| set(b, "destination", json!({"url": "http://127.0.0.1:9/x"})),
            field: "destination.type",
        },
        Case {
            what: "http destination without url",
            patch: |b| set(b, "destination", json!({"type": "http"})),
            field: "destination.url",
        },
        Case {
            what: "url with a bad scheme",
            patch: |b| set(b, "destination.url", json!("ftp://example.com/import")),
            field: "destination.url",
        },
        Case {
            what: "url that is not a URL",
            patch: |b| set(b, "destination.url", json!("not a url")),
            field: "destination.url",
        },
        Case {
            what: "url without a host",
            patch: |b| set(b, "destination.url", json!("http://")),
            field: "destination.url",
        },
        Case {
            what: "method GET",
            patch: |b| set(b, "destination.method", json!("GET")),
            field: "destination.method",
        },
        Case {
            what: "timeout_ms 0",
            patch: |b| set(b, "destination.timeout_ms", json!(0)),
            field: "destination.timeout_ms",
        },
        Case {
            what: "timeout_ms 300001",
            patch: |b| set(b, "destination.timeout_ms", json!(300_001)),
            field: "destination.timeout_ms",
        },
        Case {
            what: "reserved header Content-Length",
            patch: |b| set(b, "destination.headers", json!({"Content-Length": "10"})),
            field: "destination.headers.Content-Length",
        },
        Case {
            what: "reserved header Idempotency-Key",
            patch: |b| {
                set(
                    b,
                    "destination.headers",
                    json!({"X-Ok": "fine", "Idempotency-Key": "mine"}),
                )
            },
            field: "destination.headers.Idempotency-Key",
        },
        Case {
            what: "reserved header host (any case)",
            patch: |b| {
                set(
                    b,
                    "destination.headers",
                    json!({"hOsT": "evil.example.com"}),
                )
            },
            field: "destination.headers.hOsT",
        },
        Case {
            what: "header value with a newline",
            patch: |b| {
                set(
                    b,
                    "destination.headers",
                    json!({"X-Token": "a\r\nInjected: yes"}),
                )
            },
            field: "destination.headers.X-Token",
        },
        Case {
            what: "postgres table with SQL in it",
            patch: |b| {
                set(b, "destination", postgres_destination());
                set(b, "destination.table", json!("contacts; drop table jobs"));
            },
            field: "destination.table",
        },
        Case {
            what: "postgres table starting with a digit",
            patch: |b| {
                set(b, "destination", postgres_destination());
                set(b, "destination.table", json!("1contacts"));
            },
            field: "destination.table",
        },
        Case {
            what: "postgres mode merge",
            patch: |b| {
                set(b, "destination", postgres_destination());
                set(b, "destination.mode", json!("merge"));
            },
            field: "destination.mode",
        },
        Case {
            what: "postgres without table",
            patch: |b| {
                set(b, "destination", postgres_destination());
                remove(b, "destination.table");
            },
            field: "destination.table",
        },
        Case {
            what: "postgres destination with an http url",
            patch: |b| {
                set(b, "destination", postgres_destination());
                set(b, "destination.url", json!("http://127.0.0.1:5432/crm"));
            },
            field: "destination.url",
        },
        Case {
            what: "unknown source type",
            patch: |b| set(b, "source.type", json!("s3")),
            field: "source.type",
        },
        Case {
            what: "source without type",
            patch: |b| set(b, "source", json!({"records": [{"id": 1}]})),
            field: "source.type",
        },
        Case {
            what: "empty inline records",
            patch: |b| set(b, "source.records", json!([])),
            field: "source.records",
        },
        Case {
            what: "inline source without records",
            patch: |b| set(b, "source", json!({"type": "inline"})),
            field: "source.records",
        },
        Case {
            what: "second record is not an object",
            patch: |b| set(b, "source.records", json!([{"id": 1}, 5, {"id": 3}])),
            field: "source.records[1]",
        },
        Case {
            what: "third record is an array",
            patch: |b| set(b, "source.records", json!([{"id": 1}, {"id": 2}, [1, 2]])),
            field: "source.records[2]",
        },
        Case {
            what: "upload source with inline records",
            patch: |b| {
                set(
                    b,
                    "source",
                    json!({"type": "upload", "records": [{"id": 1}]}),
                )
            },
            field: "source.records",
        },
        Case {
            what: "empty name",
            patch: |b| set(b, "name", json!("")),
            field: "name",
        },
        Case {
            what: "blank name",
            patch: |b| set(b, "name", json!("   ")),
            field: "name",
        },
        Case {
            what: "name of 201 characters",
            patch: |b| set(b, "name", json!("n".repeat(201))),
            field: "name",
        },
        Case {
            what: "empty record_key",
            patch: |b| set(b, "record_key", json!("")),
            field: "record_key",
        },
        Case {
            what: "missing source",
            patch: |b| remove(b, "source"),
            field: "source",
        },
        Case {
            what: "missing destination",
            patch: |b| remove(b, "destination"),
            field: "destination",
        },
    ]
}

#[tokio::test]
async fn each_broken_rule_is_a_422_naming_its_field() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    for case in cases() {
        let mut body = inline_job(3);
        (case.patch)(&mut body);
        let res = app
            .tenant(&key, Method::POST, "/api/v1/jobs")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, case.what).await;
        // One entry per broken rule: exactly one rule is broken here.
        assert_eq!(
            error_fields(&problem),
            [case.field],
            "{}: {problem}",
            case.what
        );
    }
    // None of them stored anything.
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 0);
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM job_records").await,
        0
    );
    // The unbroken body is accepted, with a Location naming the job.
    let res = app
        .tenant(&key, Method::POST, "/api/v1/jobs")
        .json(&inline_job(3))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let job: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert!(crate::intake_support::is_started(&job["status"]), "{job}");
    assert_eq!(job["progress"]["total"], 3);
}

#[tokio::test]
async fn every_broken_rule_of_one_request_is_listed() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let body = json!({
        "name": "",
        "source": {"type": "inline", "records": [{"id": 1}, "two"]},
        "destination": {"type": "http", "url": "ftp://example.com/x", "method": "DELETE", "timeout_ms": 0},
        "batch_size": 0,
        "parallelism": 65,
        "retry": {"max_attempts": 0, "multiplier": 0.1, "jitter": 3.0},
    });
    let (status, problem) = app.post_job(&key, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let mut fields = error_fields(&problem);
    fields.sort();
    let mut expected = vec![
        "name",
        "source.records[1]",
        "destination.url",
        "destination.method",
        "destination.timeout_ms",
        "batch_size",
        "parallelism",
        "retry.max_attempts",
        "retry.multiplier",
        "retry.jitter",
    ];
    expected.sort();
    assert_eq!(fields, expected, "{problem}");
}

#[tokio::test]
async fn unreadable_json_and_wrong_types_are_400() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let mut wrong_type = inline_job(1);
    wrong_type["batch_size"] = json!("ten");
    let mut float_size = inline_job(1);
    float_size["batch_size"] = json!(1.5);
    let mut string_source = inline_job(1);
    string_source["source"] = json!("inline");
    let mut header_number = inline_job(1);
    header_number["destination"]["headers"] = json!({"X-Count": 5});
    let cases: Vec<(&str, String)> = vec![
        ("truncated JSON", r#"{"name": "x", "source": "#.to_owned()),
        ("not JSON at all", "name=x&batch_size=10".to_owned()),
        ("empty body", String::new()),
        ("single quotes", "{'name': 'x'}".to_owned()),
        ("batch_size as a string", wrong_type.to_string()),
        ("batch_size as a fraction", float_size.to_string()),
        ("source as a string", string_source.to_string()),
        ("header value as a number", header_number.to_string()),
        ("an empty array", "[]".to_owned()),
        ("a bare string", r#""a job""#.to_owned()),
        ("a bare number", "42".to_owned()),
        ("null", "null".to_owned()),
        (
            "a number beyond f64",
            r#"{"name": "x", "batch_size": 1e400}"#.to_owned(),
        ),
        ("a lone surrogate", r#"{"name": "\ud800"}"#.to_owned()),
    ];
    for (what, body) in cases {
        let res = post_job_raw(&app, &key, Some("application/json"), body.clone()).await;
        expect_problem(res, StatusCode::BAD_REQUEST, what).await;
    }
    // Raw invalid UTF-8 bytes, not just an odd character.
    let res = post_job_raw(
        &app,
        &key,
        Some("application/json"),
        b"{\"name\": \"\xff\xfe\"}".to_vec(),
    )
    .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "raw invalid UTF-8").await;
    // A wrong type names the field it is in.
    let res = post_job_raw(&app, &key, Some("application/json"), wrong_type.to_string()).await;
    let problem = expect_problem(res, StatusCode::BAD_REQUEST, "batch_size as a string").await;
    assert!(
        problem.to_string().contains("batch_size"),
        "the 400 does not say where: {problem}"
    );
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 0);
}

#[tokio::test]
async fn only_json_bodies_are_accepted() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let body = inline_job(1).to_string();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/x-ndjson"),
        Some("text/json"),
    ] {
        let res = post_job_raw(&app, &key, ct, body.clone()).await;
        expect_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, &format!("{ct:?}")).await;
    }
    // Parameters and case do not matter.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let res = post_job_raw(&app, &key, Some(ct), body.clone()).await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{ct}: {}",
            res.text().await.unwrap()
        );
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let limit = 64 * 1024;
    let app = TestApp::spawn_with(|s| s.http.body_limit = limit).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let client = one_shot_client();
    // Just under the limit is fine.
    let small = inline_job(600).to_string();
    assert!(small.len() < limit, "{}", small.len());
    let (status, job) = app
        .post_job(&key, &serde_json::from_str(&small).unwrap())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    // Over it: with a Content-Length, and streamed without one.
    let big = inline_job(3000).to_string().into_bytes();
    assert!(big.len() > limit);
    for (what, body) in [
        ("sized", reqwest::Body::from(big.clone())),
        ("chunked", chunked(big.clone())),
    ] {
        let res = client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_problem(res, StatusCode::PAYLOAD_TOO_LARGE, &format!("job, {what}")).await;
    }
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 1);

    // The records upload has the same limit, whether JSON or NDJSON, sized or streamed.
    let job = app.create_job(&key, &upload_job(100, None)).await;
    let id = job["id"].as_str().unwrap();
    let lines: String = (0..3000)
        .map(|i| format!("{{\"id\":{i},\"email\":\"user{i}@example.com\"}}\n"))
        .collect();
    let array = serde_json::to_vec(
        &(0..3000)
            .map(|i| json!({"id": i, "email": format!("user{i}@example.com")}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(lines.len() > limit && array.len() > limit);
    let path = format!("/api/v1/jobs/{id}/records");
    for (what, ct, body) in [
        (
            "ndjson sized",
            "application/x-ndjson",
            reqwest::Body::from(lines.clone()),
        ),
        (
            "ndjson chunked",
            "application/x-ndjson",
            chunked(lines.clone().into_bytes()),
        ),
        (
            "array sized",
            "application/json",
            reqwest::Body::from(array.clone()),
        ),
        ("array chunked", "application/json", chunked(array.clone())),
    ] {
        let res = client
            .post(app.url(&path))
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        expect_problem(res, StatusCode::PAYLOAD_TOO_LARGE, what).await;
    }
    // Nothing of the refused uploads was kept.
    let job = crate::intake_support::get_job(&app, &key, id).await;
    assert_eq!(job["progress"]["total"], 0, "{job}");
    assert_eq!(crate::intake_support::stored_records(&app, id).await, 0);
}

#[tokio::test]
async fn bad_and_unknown_job_ids() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    for (method, suffix) in [(Method::GET, ""), (Method::POST, "/start")] {
        for bad in ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"] {
            let res = app
                .tenant(&key, method.clone(), &format!("/api/v1/jobs/{bad}{suffix}"))
                .send()
                .await
                .unwrap();
            expect_problem(
                res,
                StatusCode::BAD_REQUEST,
                &format!("{method} {bad}{suffix}"),
            )
            .await;
        }
        let unknown = uuid::Uuid::now_v7();
        let res = app
            .tenant(
                &key,
                method.clone(),
                &format!("/api/v1/jobs/{unknown}{suffix}"),
            )
            .send()
            .await
            .unwrap();
        expect_problem(
            res,
            StatusCode::NOT_FOUND,
            &format!("{method} unknown{suffix}"),
        )
        .await;
    }
    let res = upload(
        &app,
        &key,
        "not-a-uuid",
        "application/x-ndjson",
        "{\"id\":1}\n",
    )
    .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "upload to a bad id").await;
    let res = upload(
        &app,
        &key,
        &uuid::Uuid::now_v7().to_string(),
        "application/x-ndjson",
        "{\"id\":1}\n",
    )
    .await;
    expect_problem(res, StatusCode::NOT_FOUND, "upload to an unknown id").await;
}

/// `{"n": {"n": ... 1}}`, `depth` objects deep, as text.
fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"n\":".repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn pathological_records() {
    let app = TestApp::spawn_with(|s| s.http.body_limit = 4 * 1024 * 1024).await;
    let (_, key) = app.tenant_with_key("acme").await;

    // A NUL character cannot be stored: 422 naming the record (in a value or a field name).
    let mut body = inline_job(3);
    body["source"]["records"][1]["note"] = json!("before\u{0}after");
    let (status, problem) = app.post_job(&key, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(error_fields(&problem), ["source.records[1]"]);
    let mut body = inline_job(3);
    body["source"]["records"][2]["deep"] = json!({"list": [{"na\u{0}me": 1}]});
    let (status, problem) = app.post_job(&key, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(error_fields(&problem), ["source.records[2]"]);

    // 70 levels of nesting parse, but are more than a record may have.
    let template = r#"{"source": {"type": "inline", "records": [{"id": 1}, RECORD]}, "destination": {"type": "http", "url": "http://127.0.0.1:9/x"}}"#;
    let res = post_job_raw(
        &app,
        &key,
        Some("application/json"),
        template.replace("RECORD", &nested(70)),
    )
    .await;
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "70 levels").await;
    assert_eq!(error_fields(&problem), ["source.records[1]"]);
    // 150 levels are past the parser's recursion limit: unreadable, 400.
    let res = post_job_raw(
        &app,
        &key,
        Some("application/json"),
        template.replace("RECORD", &nested(150)),
    )
    .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "150 levels").await;
    // A modest depth is fine.
    let res = post_job_raw(
        &app,
        &key,
        Some("application/json"),
        template.replace("RECORD", &nested(20)),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );

    // A number beyond f64 inside a record is unreadable.
    let res = post_job_raw(
        &app,
        &key,
        Some("application/json"),
        template.replace("RECORD", r#"{"id": 1e400}"#),
    )
    .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "1e400").await;

    // A record of exactly MAX_RECORD_BYTES (1 MiB by default) is an ordinary record,
    // stored whole; one byte more is refused, naming it.
    let overhead = r#"{"id":1,"blob":""}"#.len();
    let record = |blob_len: usize| {
        json!({
            "source": {"type": "inline", "records": [{"id": 1, "blob": "x".repeat(blob_len)}]},
            "destination": {"type": "http", "url": "http://127.0.0.1:9/x"},
        })
    };
    let job = app.create_job(&key, &record((1 << 20) - overhead)).await;
    let id = job["id"].as_str().unwrap();
    let n = crate::intake_support::scalar(
        &app,
        &format!(
            "SELECT length(payload::text)::bigint AS n FROM job_records WHERE job_id = '{id}'"
        ),
    )
    .await;
    assert_eq!(n, 1 << 20);
    let (status, problem) = app.post_job(&key, &record((1 << 20) - overhead + 1)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(error_fields(&problem), ["source.records[0]"]);
    assert!(
        problem.to_string().contains("MAX_RECORD_BYTES"),
        "{problem}"
    );
}

/// Free text that cannot be stored (a NUL character) is a broken rule, never a 500.
#[tokio::test]
async fn nul_characters_in_name_or_record_key_are_422() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let mut outcomes = Vec::new();
    for (field, value) in [("name", "legacy\u{0}crm"), ("record_key", "i\u{0}d")] {
        let mut body = inline_job(2);
        body[field] = json!(value);
        let res = app
            .tenant(&key, Method::POST, "/api/v1/jobs")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, problem) = problem_of(res, field).await;
        outcomes.push((field, status, error_fields(&problem)));
    }
    for (field, status, fields) in &outcomes {
        assert!(
            *status == StatusCode::UNPROCESSABLE_ENTITY && fields == &[field.to_string()],
            "expected 422 naming the field, got: {outcomes:?}"
        );
    }
}

/// A body is one JSON document: anything after it makes the body malformed.
#[tokio::test]
async fn trailing_input_after_the_json_document_is_400() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let one = inline_job(1).to_string();
    for (what, body) in [
        ("trailing garbage", format!("{one} trailing")),
        ("two documents", format!("{one}{one}")),
        ("a stray bracket", format!("{one}]")),
    ] {
        let res = post_job_raw(&app, &key, Some("application/json"), body).await;
        expect_problem(res, StatusCode::BAD_REQUEST, what).await;
    }
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM jobs").await,
        0,
        "a malformed body created a job"
    );
    // The same holds for a JSON-array upload: nothing is kept.
    let job = app.create_job(&key, &upload_job(100, None)).await;
    let id = job["id"].as_str().unwrap();
    let res = upload(
        &app,
        &key,
        id,
        "application/json",
        r#"[{"id": 1}, {"id": 2}] [{"id": 3}]"#,
    )
    .await;
    expect_problem(
        res,
        StatusCode::BAD_REQUEST,
        "array upload with trailing input",
    )
    .await;
    assert_eq!(crate::intake_support::stored_records(&app, id).await, 0);
}

#[tokio::test]
async fn private_destinations_are_refused_unless_the_operator_allows_them() {
    let app = TestApp::spawn_with(|s| s.allow_private_destinations = false).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let private = [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://localhost:8080/x",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://172.16.5.4/x",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://[fd00::1]/x",
        "http://[fe80::1]/x",
        "https://user:pw@127.0.0.1:8443/x",
    ];
    for url in private {
        let mut body = inline_job(1);
        body["destination"]["url"] = json!(url);
        let (status, problem) = app.post_job(&key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert_eq!(
            error_fields(&problem),
            ["destination.url"],
            "{url}: {problem}"
        );
    }
    // Postgres destinations too.
    let mut body = inline_job(1);
    body["destination"] =
        json!({"type": "postgres", "url": "postgres://app@10.0.0.5:5432/crm", "table": "contacts"});
    let (status, problem) = app.post_job(&key, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(error_fields(&problem), ["destination.url"]);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 0);

    // A public address is fine.
    let mut body = inline_job(1);
    body["destination"]["url"] = json!("http://93.184.216.34/import");
    let (status, job) = app.post_job(&key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");

    // With the operator's permission (the default test setting), loopback is accepted.
    let open = TestApp::spawn().await;
    let (_, key) = open.tenant_with_key("acme").await;
    let mut body = inline_job(1);
    body["destination"]["url"] = json!("http://127.0.0.1/x");
    assert_eq!(open.post_job(&key, &body).await.0, StatusCode::CREATED);
}
