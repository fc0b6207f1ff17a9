//! `max_pending_records`: the most records a tenant may have not yet terminal across its
//! unfinished jobs. Intake over it is a 429 (a request that could never fit, a 422);
//! finished and cancelled jobs free the budget; concurrent requests never overshoot.

use std::time::Duration;

use freight_tests::{TestApp, sink::Sink};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};
use uuid::Uuid;

fn inline(url: &str, n: usize) -> Value {
    let records: Vec<Value> = (1..=n).map(|i| json!({"id": i})).collect();
    json!({"source": {"type": "inline", "records": records},
           "destination": {"type": "http", "url": url}, "batch_size": 5})
}

fn upload_job(url: &str) -> Value {
    json!({"source": {"type": "upload"}, "destination": {"type": "http", "url": url}})
}

/// A tenant created with `max_pending_records` and a key for it.
async fn limited_tenant(app: &TestApp, name: &str, max: i64) -> (Uuid, String) {
    let res = app
        .admin(Method::POST, "/api/v1/admin/tenants")
        .json(&json!({"name": name, "max_pending_records": max}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let tenant: Value = res.json().await.unwrap();
    assert_eq!(tenant["max_pending_records"], max);
    let id: Uuid = tenant["id"].as_str().unwrap().parse().unwrap();
    let (_, key) = app.create_key(id, json!({})).await;
    (id, key)
}

fn assert_quota_problem(status: StatusCode, problem: &Value, field: &str) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["type"], "urn:freight:problem:pending-records-limit");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("pending"),
        "{problem}"
    );
}

async fn upload(
    app: &TestApp,
    key: &str,
    job: &str,
    ndjson: bool,
    n: usize,
) -> (StatusCode, Value) {
    let records: Vec<Value> = (1..=n).map(|i| json!({"id": i})).collect();
    let req = app.tenant(key, Method::POST, &format!("/api/v1/jobs/{job}/records"));
    let req = if ndjson {
        let body: String = records.iter().map(|r| format!("{r}\n")).collect();
        req.header("content-type", "application/x-ndjson")
            .body(body)
    } else {
        req.json(&records)
    };
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn inline_jobs_over_the_pending_limit_get_429_until_jobs_finish() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (tenant, key) = limited_tenant(&app, "acme", 10).await;
    // No worker yet: nothing finishes, so every accepted record stays pending.
    app.create_job(&key, &inline(&sink.url(), 6)).await;
    let (status, problem) = app.post_job(&key, &inline(&sink.url(), 5)).await;
    assert_quota_problem(status, &problem, "source.records");
    assert!(
        problem["detail"].as_str().unwrap().contains("11"),
        "says how many it would make: {problem}"
    );
    app.create_job(&key, &inline(&sink.url(), 4)).await; // exactly at the limit
    let (status, _) = app.post_job(&key, &inline(&sink.url(), 1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // A job that alone is over the limit can never fit: 422, not 429.
    let (status, problem) = app.post_job(&key, &inline(&sink.url(), 11)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "source.records");
    assert_eq!(app.scalar("SELECT count(*) FROM jobs").await, 2);
    // Another tenant is not affected.
    let (_, other) = app.tenant_with_key("other").await;
    app.create_job(&other, &inline(&sink.url(), 50)).await;

    // Finished jobs free the budget.
    let _worker = app.start_worker().await;
    let freed = freight_tests::wait_until(Duration::from_secs(60), || async {
        app.scalar(&format!(
            "SELECT count(*) FROM jobs WHERE tenant_id = '{tenant}' AND status = 'completed'"
        ))
        .await
            == 2
    })
    .await;
    assert!(freed, "the jobs did not finish");
    app.create_job(&key, &inline(&sink.url(), 10)).await;

    // Operators change or remove the limit; it must be at least 1.
    let path = format!("/api/v1/admin/tenants/{tenant}");
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({"max_pending_records": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({"max_pending_records": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["max_pending_records"],
        Value::Null
    );
    app.create_job(&key, &inline(&sink.url(), 100)).await;
}

#[tokio::test]
async fn uploads_over_the_pending_limit_are_refused_whole() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let res = app
        .admin(Method::PATCH, &format!("/api/v1/admin/tenants/{tenant}"))
        .json(&json!({"max_pending_records": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let url = "http://127.0.0.1:9/import";
    let a = app.create_job(&key, &upload_job(url)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.create_job(&key, &upload_job(url)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = upload(&app, &key, &a, true, 6).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Upload records count while the job is still open: 6 + 5 > 10.
    let (status, problem) = upload(&app, &key, &b, false, 5).await;
    assert_quota_problem(status, &problem, "records");
    let (status, problem) = upload(&app, &key, &b, true, 5).await;
    assert_quota_problem(status, &problem, "records");
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) FROM job_records WHERE job_id = '{b}'"
        ))
        .await,
        0,
        "a refused upload keeps none of its records"
    );
    assert_eq!(app.job(&key, &b).await["progress"]["total"], 0);
    let (status, _) = upload(&app, &key, &b, true, 4).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Full: refused before the body is even read.
    let (status, problem) = upload(&app, &key, &a, false, 1).await;
    assert_quota_problem(status, &problem, "records");
    // An inline job counts against the same budget.
    let (status, _) = app.post_job(&key, &inline(url, 1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Cancelling a job frees its records.
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{a}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let (status, body) = upload(&app, &key, &b, false, 5).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["total"], 9);
    // One job that alone would be over the limit: 422.
    let c = app.create_job(&key, &upload_job(url)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .admin(Method::PATCH, &format!("/api/v1/admin/tenants/{tenant}"))
        .json(&json!({"max_pending_records": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (status, problem) = upload(&app, &key, &c, true, 21).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "records");
}

#[tokio::test]
async fn concurrent_intake_never_exceeds_the_pending_limit() {
    // Enough connections (and upload slots) for all twelve requests to be in their
    // transactions at once.
    let app = TestApp::spawn_with(|s| {
        s.database.max_connections = 16;
        s.http.tenant_max_uploads = 6;
    })
    .await;
    let (tenant, key) = limited_tenant(&app, "racy", 20).await;
    let url = "http://127.0.0.1:9/import";
    let mut uploads = Vec::new();
    for _ in 0..6 {
        uploads.push(
            app.create_job(&key, &upload_job(url)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Twelve requests of 5 records at once, half inline creates, half uploads (JSON and
    // NDJSON): exactly four fit. To make them truly simultaneous, the test holds the
    // tenant row and the upload jobs' rows until all twelve are waiting on them, then lets
    // them go together: each then counts and commits within the same few milliseconds.
    let blocker = app.db.begin().await.unwrap();
    blocker
        .execute_unprepared(&format!(
            "SELECT 1 FROM tenants WHERE id = '{tenant}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let ids = uploads
        .iter()
        .map(|j| format!("'{j}'"))
        .collect::<Vec<_>>()
        .join(",");
    blocker
        .execute_unprepared(&format!(
            "SELECT 1 FROM jobs WHERE id IN ({ids}) FOR UPDATE"
        ))
        .await
        .unwrap();
    let inline_reqs = (0..6).map(|_| {
        let app = &app;
        let key = key.clone();
        async move { app.post_job(&key, &inline(url, 5)).await.0 }
    });
    let upload_reqs = uploads.iter().enumerate().map(|(i, job)| {
        let app = &app;
        let key = key.clone();
        async move { upload(app, &key, job, i % 2 == 0, 5).await.0 }
    });
    let release = async {
        let all_waiting = freight_tests::wait_until(Duration::from_secs(20), || async {
            app.scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
                >= 12
        })
        .await;
        blocker.commit().await.unwrap();
        all_waiting
    };
    let ((a, b), all_waiting) = futures::future::join(
        futures::future::join(
            futures::future::join_all(inline_reqs),
            futures::future::join_all(upload_reqs),
        ),
        release,
    )
    .await;
    assert!(
        all_waiting,
        "the twelve requests never all waited on the test's locks"
    );
    let statuses: Vec<StatusCode> = a.into_iter().chain(b).collect();
    let ok = statuses.iter().filter(|s| s.is_success()).count();
    let refused = statuses
        .iter()
        .filter(|&&s| s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, refused), (4, 8), "{statuses:?}");
    let pending = app
        .scalar(&format!(
            "SELECT sum(total_records - succeeded_records - dead_lettered_records - cancelled_records)::bigint
             FROM jobs WHERE tenant_id = '{tenant}'"
        ))
        .await;
    assert_eq!(pending, 20);
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) FROM job_records WHERE tenant_id = '{tenant}'"
        ))
        .await,
        20,
        "refused requests left no records behind"
    );
}
