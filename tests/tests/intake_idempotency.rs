//! `Idempotency-Key` on `POST /api/v1/jobs`: a retried request returns the job it already
//! created, scoped per tenant, and a reused key with another body is refused.

use freight_tests::{TestApp, inline_job};
use reqwest::{Method, Response, StatusCode, header::CONTENT_TYPE};
use serde_json::Value;

use crate::intake_support::{expect_problem, scalar};

async fn post_with_key(
    app: &TestApp,
    key: &str,
    idem: &str,
    body: impl Into<reqwest::Body>,
) -> Response {
    app.tenant(key, Method::POST, "/api/v1/jobs")
        .header("idempotency-key", idem)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Status, `Location` and body of a create.
async fn created(res: Response) -> (StatusCode, String, Value) {
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
    (status, location, body)
}

async fn jobs_with_key(app: &TestApp, idem: &str) -> i64 {
    scalar(
        app,
        &format!("SELECT count(*) AS n FROM jobs WHERE idempotency_key = '{idem}'"),
    )
    .await
}

#[tokio::test]
async fn a_retried_create_returns_the_original_job() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let body = inline_job(3).to_string();

    let (status, location, first) =
        created(post_with_key(&app, &key, "order-42", body.clone()).await).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/jobs/{id}"));

    for _ in 0..2 {
        let (status, location, again) =
            created(post_with_key(&app, &key, "order-42", body.clone()).await).await;
        assert_eq!(status, StatusCode::OK, "a replay is 200, not 201: {again}");
        assert_eq!(again["id"], first["id"]);
        assert_eq!(location, format!("/api/v1/jobs/{id}"));
        assert_eq!(again["progress"]["total"], 3);
        assert_eq!(again["created_at"], first["created_at"]);
    }
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM jobs").await,
        1,
        "a replay created a job"
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM job_records").await,
        3,
        "a replay staged records again"
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM batches").await,
        1,
        "a replay planned batches again"
    );

    // Key order and white space do not make another body.
    let reordered = r#"
        {
          "batch_size" : 10 ,
          "record_key": "id",
          "destination": {"url": "http://127.0.0.1:9/import", "type": "http"},
          "source": {"records": [
              {"email": "u1@example.com", "id": 1},
              {"email": "u2@example.com", "id": 2},
              {"email": "u3@example.com", "id": 3}
          ], "type": "inline"},
          "name": "inline test job"
        }"#;
    assert_eq!(
        serde_json::from_str::<Value>(reordered).unwrap(),
        inline_job(3),
        "the test's bodies must be equal"
    );
    let (status, _, again) = created(post_with_key(&app, &key, "order-42", reordered).await).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(jobs_with_key(&app, "order-42").await, 1);
}

#[tokio::test]
async fn a_reused_key_with_another_body_is_422() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let (status, _, first) =
        created(post_with_key(&app, &key, "k-1", inline_job(3).to_string()).await).await;
    assert_eq!(status, StatusCode::CREATED);

    let mut other = inline_job(3);
    other["batch_size"] = serde_json::json!(20);
    let mut fewer = inline_job(2);
    fewer["name"] = first["name"].clone();
    for (what, body) in [("another batch size", other), ("other records", fewer)] {
        let res = post_with_key(&app, &key, "k-1", body.to_string()).await;
        expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, what).await;
    }
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 1);
    // The original is untouched and still replays.
    let (status, _, again) =
        created(post_with_key(&app, &key, "k-1", inline_job(3).to_string()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["batch_size"], 10);
}

#[tokio::test]
async fn keys_name_requests_not_bodies_and_are_scoped_per_tenant() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant_with_key("acme").await;
    let (_, b) = app.tenant_with_key("globex").await;
    let body = inline_job(2).to_string();

    let (s1, _, j1) = created(post_with_key(&app, &a, "shared-key", body.clone()).await).await;
    // The same body under another key is another job.
    let (s2, _, j2) = created(post_with_key(&app, &a, "other-key", body.clone()).await).await;
    // Without a key, every request is a new job.
    let (s3, _, j3) = created(
        app.tenant(&a, Method::POST, "/api/v1/jobs")
            .json(&inline_job(2))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (s4, _, j4) = created(
        app.tenant(&a, Method::POST, "/api/v1/jobs")
            .json(&inline_job(2))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Another tenant using the same key string gets its own job.
    let (s5, _, j5) = created(post_with_key(&app, &b, "shared-key", body.clone()).await).await;
    assert_eq!([s1, s2, s3, s4, s5], [StatusCode::CREATED; 5]);
    let ids: std::collections::BTreeSet<&str> = [&j1, &j2, &j3, &j4, &j5]
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "every one of these is a different job");

    // Each tenant's replay finds its own job, never the other's.
    let (status, _, again) =
        created(post_with_key(&app, &b, "shared-key", body.clone()).await).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &j5["id"]));
    let (status, _, again) =
        created(post_with_key(&app, &a, "shared-key", body.clone()).await).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &j1["id"]));
    // B reusing the key with a different body conflicts only with B's own job.
    let (status, _, _) =
        created(post_with_key(&app, &b, "other-key", inline_job(5).to_string()).await).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "A's `other-key` must not bind B"
    );
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_key() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let mut bad = inline_job(2);
    bad["batch_size"] = serde_json::json!(0);
    let res = post_with_key(&app, &key, "retry-me", bad.to_string()).await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "bad batch size").await;
    // Fixed and sent again with the same key: created.
    let (status, _, job) =
        created(post_with_key(&app, &key, "retry-me", inline_job(2).to_string()).await).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let body = inline_job(1).to_string();
    for (what, idem) in [
        ("300 characters", "k".repeat(300)),
        ("empty", String::new()),
        ("blank", "   ".to_owned()),
    ] {
        let res = post_with_key(&app, &key, &idem, body.clone()).await;
        expect_problem(res, StatusCode::BAD_REQUEST, what).await;
    }
    let res = app
        .tenant(&key, Method::POST, "/api/v1/jobs")
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .json(&inline_job(1))
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::BAD_REQUEST, "non-ASCII").await;
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 0);
    // 255 characters is the longest key allowed.
    let (status, _, job) = created(post_with_key(&app, &key, &"k".repeat(255), body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_job() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let body = inline_job(50).to_string();
    let results = futures::future::join_all((0..4).map(|_| async {
        let (status, _, job) =
            created(post_with_key(&app, &key, "burst", body.clone()).await).await;
        (status, job["id"].as_str().map(str::to_owned))
    }))
    .await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    let ids: std::collections::BTreeSet<_> = results.iter().map(|r| r.1.clone()).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM jobs").await, 1);
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM job_records").await,
        50
    );
}
