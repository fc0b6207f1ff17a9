//! One tenant must not hold the fleet: not with destinations that never answer, not
//! while suspended, not with records it never lets finish.

use std::time::{Duration, Instant};

use freight_tests::{
    TestApp,
    fake_pg::FakePostgres,
    query_i64,
    sink::{Reply, Sink},
    wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn inline(n: usize, destination: Value, batch_size: usize, parallelism: usize) -> Value {
    let records: Vec<Value> = (1..=n).map(|i| json!({"id": i})).collect();
    json!({
        "source": {"type": "inline", "records": records},
        "destination": destination,
        "record_key": "id", "batch_size": batch_size, "parallelism": parallelism,
        "retry": {"max_attempts": 3, "initial_interval_ms": 2000},
    })
}

async fn running_batches(app: &TestApp, job: Uuid) -> i64 {
    query_i64(
        &app.db,
        "SELECT count(*) FROM batches WHERE job_id = $1 AND status = 'running'",
        vec![job.into()],
    )
    .await
}

/// Tenant A's jobs deliver to tarpits, an HTTP and a Postgres listener that accept
/// connections and never answer, and hold every worker slot while A is alone. Tenant B's
/// 1,000-record job must still finish within three times what it takes on an idle fleet:
/// once B runs, the fleet is shared (its real slots, not twice them), A's batches over
/// their share yield, and those stuck in a tarpit give up their writes after a grace.
#[tokio::test]
async fn a_tarpit_tenant_does_not_hold_the_fleet() {
    let app = TestApp::spawn().await;
    let _worker = app
        .start_worker_with(|s| s.worker.preempt_grace = Duration::from_secs(1))
        .await; // concurrency 4
    assert!(
        wait_until(Duration::from_secs(10), || async {
            app.scalar("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
                .await
                == 1
        })
        .await
    );
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(50),
    })
    .await;
    let (_, a) = app.tenant_with_key("tarpit").await;
    let (_, b) = app.tenant_with_key("neighbour").await;
    let b_job = || inline(1000, json!({"type": "http", "url": sink.url()}), 5, 8);

    // B alone: the reference.
    let started = Instant::now();
    let job = app.create_job(&b, &b_job()).await;
    let done = app
        .wait_finished(&b, job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let idle = started.elapsed();

    // A's tarpits take the fleet.
    let http_tarpit = FakePostgres::tarpit().await;
    let pg_tarpit = FakePostgres::tarpit().await;
    let http = app
        .create_job(
            &a,
            &inline(
                400,
                json!({"type": "http", "url": format!("http://127.0.0.1:{}/x", http_tarpit.port()),
                       "timeout_ms": 300_000}),
                10,
                8,
            ),
        )
        .await;
    let http_id: Uuid = http["id"].as_str().unwrap().parse().unwrap();
    app.create_job(
        &a,
        &inline(
            400,
            json!({"type": "postgres", "url": format!("postgres://app@127.0.0.1:{}/db", pg_tarpit.port()),
                   "table": "t"}),
            10,
            8,
        ),
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            running_batches(&app, http_id).await >= 3
        })
        .await,
        "the tarpit never filled the worker"
    );

    // B again, with A in the tarpits.
    let started = Instant::now();
    let job = app.create_job(&b, &b_job()).await;
    let done = app
        .wait_finished(&b, job["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let loaded = started.elapsed();
    eprintln!("B alone {idle:?}, beside the tarpits {loaded:?}");
    assert!(
        loaded <= idle * 3,
        "B took {loaded:?} beside the tarpits, {idle:?} alone"
    );
    assert!(http_tarpit.accepted() > 0, "the tarpit was reached");
}

/// Suspension is a kill switch for dispatch: within seconds no new batch of the tenant
/// starts (its jobs wait, nothing is lost); reinstatement resumes them to the end.
#[tokio::test]
async fn a_suspended_tenants_jobs_stop_and_resume_on_reinstatement() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(40),
    })
    .await;
    let tenant = app.create_tenant("acme").await;
    let (_, key) = app.create_key(tenant, json!({})).await;
    let job = app
        .create_job(
            &key,
            &inline(400, json!({"type": "http", "url": sink.url()}), 5, 4),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(20), || async { sink.count() >= 20 }).await);

    app.patch_tenant(tenant, json!({"status": "suspended"}))
        .await;
    // Batches already started finish (or yield); then nothing more starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = sink.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sink.count(),
        settled,
        "a suspended tenant's records are still delivered"
    );
    assert!(
        settled < 400,
        "the job finished before the suspension could show"
    );

    app.patch_tenant(tenant, json!({"status": "active"})).await;
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 400);
    freight_tests::engine::assert_invariants(&app.db, id.parse().unwrap()).await;
}

/// An operator cancels every unfinished job of a tenant in one call; another tenant's
/// jobs are untouched, and only the operator may call it.
#[tokio::test]
async fn operators_cancel_all_of_a_tenants_jobs_at_once() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (_, key) = app.create_key(tenant, json!({})).await;
    let (_, other) = app.tenant_with_key("other").await;
    let dest = json!({"type": "http", "url": "http://127.0.0.1:9/x"});
    let mut ids = Vec::new();
    for source in [
        json!({"type": "upload"}),
        json!({"type": "inline", "records": [{"id": 1}]}),
    ] {
        let job = app
            .create_job(&key, &json!({"source": source, "destination": dest}))
            .await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let theirs = app
        .create_job(
            &other,
            &json!({"source": {"type": "upload"}, "destination": dest}),
        )
        .await;
    let path = format!("/api/v1/admin/tenants/{tenant}/cancel-jobs");
    let res = app.tenant(&key, Method::POST, &path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app.admin(Method::POST, &path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["cancelled"], 2, "{body}");
    for id in &ids {
        let job = app.job(&key, id).await;
        assert!(
            matches!(job["status"].as_str(), Some("cancelled" | "cancelling")),
            "{job}"
        );
    }
    let job = app.job(&other, theirs["id"].as_str().unwrap()).await;
    assert_eq!(
        job["status"], "awaiting_upload",
        "another tenant's job was cancelled"
    );
    for (path, status) in [
        (
            format!("/api/v1/admin/tenants/{}/cancel-jobs", Uuid::new_v4()),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/admin/tenants/not-a-uuid/cancel-jobs".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let res = app.admin(Method::POST, &path).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
    }
}

/// A tenant's pending records are bounded by default (10,000,000), and re-opening dead
/// letters counts like adding records: a retry that would pass the limit is a 429.
#[tokio::test]
async fn retries_respect_the_pending_limit() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let created: Value = freight_tests::send_json(
        app.admin(Method::POST, "/api/v1/admin/tenants")
            .json(&json!({"name": "defaulted"})),
    )
    .await;
    assert_eq!(created["max_pending_records"], 10_000_000, "{created}");

    let res = app
        .admin(Method::POST, "/api/v1/admin/tenants")
        .json(&json!({"name": "acme", "max_pending_records": 6}))
        .send()
        .await
        .unwrap();
    let tenant: Uuid = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, key) = app.create_key(tenant, json!({})).await;
    let refusing = Sink::start(|_| Reply::status(422)).await;
    let failed = app
        .create_job(
            &key,
            &inline(5, json!({"type": "http", "url": refusing.url()}), 5, 1),
        )
        .await;
    let failed_id = failed["id"].as_str().unwrap().to_owned();
    let done = app
        .wait_finished(&key, &failed_id, Duration::from_secs(30))
        .await;
    assert_eq!(done["progress"]["dead_lettered"], 5, "{done}");
    // Three records pending in an upload job that was never started.
    let waiting = app
        .create_job(
            &key,
            &json!({"source": {"type": "upload"}, "destination": {"type": "http", "url": refusing.url()}}),
        )
        .await;
    let res = app
        .tenant(
            &key,
            Method::POST,
            &format!("/api/v1/jobs/{}/records", waiting["id"].as_str().unwrap()),
        )
        .json(&json!([{"id": 1}, {"id": 2}, {"id": 3}]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // 3 + 5 re-opened > 6.
    for req in [
        app.tenant(
            &key,
            Method::POST,
            &format!("/api/v1/jobs/{failed_id}/retry"),
        ),
        app.tenant(&key, Method::POST, "/api/v1/dead-letters/requeue")
            .json(&json!({"job_id": failed_id})),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let problem: Value = res.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:freight:problem:pending-records-limit",
            "{problem}"
        );
    }
    let job = app.job(&key, &failed_id).await;
    assert_eq!(
        job["status"], "completed_with_errors",
        "the refused retry changed nothing: {job}"
    );
    assert_eq!(job["progress"]["dead_lettered"], 5);
}
