//! Re-running dead letters: a job's, one batch's, or chosen ones, across tenants.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use freight_tests::{
    TestApp,
    engine::assert_invariants,
    send_json,
    sink::{Reply, Sink},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A sink that refuses records with an even id until `heal` is set.
async fn healing_sink() -> (Sink, Arc<AtomicBool>) {
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let sink = Sink::start(move |r| {
        if !h.load(Ordering::SeqCst) && r.body["id"].as_i64().unwrap_or(0) % 2 == 0 {
            Reply::status(422)
        } else {
            Reply::ok()
        }
    })
    .await;
    (sink, healed)
}

fn job(url: &str, n: usize) -> Value {
    let records: Vec<Value> = (1..=n).map(|i| json!({"id": i})).collect();
    json!({"source": {"type": "inline", "records": records},
           "destination": {"type": "http", "url": url}, "record_key": "id", "batch_size": 5, "parallelism": 2})
}

async fn terminal_rows(app: &TestApp, job: &str) -> i64 {
    app.scalar(&format!(
        "SELECT count(*) FROM record_logs WHERE job_id = '{job}' AND status IN ('succeeded', 'dead_lettered')"
    ))
    .await
}

#[tokio::test]
async fn retrying_a_job_reruns_only_its_dead_letters() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let (sink, healed) = healing_sink().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let created = app.create_job(&key, &job(&sink.url(), 20)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed_with_errors");
    assert_eq!(done["progress"]["dead_lettered"], 10);
    let dead: Value = app
        .get_json(&key, &format!("/api/v1/jobs/{id}/dead-letters"))
        .await;
    assert_eq!(dead["data"].as_array().unwrap().len(), 10);
    let mut keys: Vec<i64> = dead["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["record_key"].as_str().unwrap().parse().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [2, 4, 6, 8, 10, 12, 14, 16, 18, 20],
        "exactly the refused records"
    );
    assert!(
        dead["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["record_key"].as_str().unwrap().parse::<i64>().ok()
                == d["payload"]["id"].as_i64())
    );

    healed.store(true, Ordering::SeqCst);
    let before = sink.count();
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["requeued"], 10);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 20);
    assert_eq!(
        sink.count() - before,
        10,
        "only the dead letters were sent again"
    );
    // The dead letters keep their rows, marked requeued; each requeued record now has two
    // terminal rows (one per run) and the latest is `succeeded`.
    let dead: Value = app
        .get_json(&key, &format!("/api/v1/jobs/{id}/dead-letters"))
        .await;
    assert!(
        dead["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["requeued_at"].is_string())
    );
    assert_eq!(terminal_rows(&app, &id).await, 30);
    // Nothing left to retry now.
    let again: Value =
        send_json(app.tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/retry"))).await;
    assert_eq!(again["requeued"], 0);
}

#[tokio::test]
async fn a_failed_batch_and_chosen_dead_letters_can_be_rerun_but_not_another_tenants() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let (sink, healed) = healing_sink().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let (_, other_key) = app.tenant_with_key("globex").await;
    let created = app.create_job(&key, &job(&sink.url(), 10)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    healed.store(true, Ordering::SeqCst);

    let batches: Value = app
        .get_json(&key, &format!("/api/v1/jobs/{id}/batches"))
        .await;
    let first = batches["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(batches["data"][0]["status"], "failed");
    // Another tenant cannot see or retry it.
    let res = app
        .tenant(
            &other_key,
            Method::POST,
            &format!("/api/v1/batches/{first}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .tenant(
            &key,
            Method::POST,
            &format!("/api/v1/batches/{first}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["requeued"], 2);
    app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    let res = app
        .tenant(
            &key,
            Method::POST,
            &format!("/api/v1/batches/{first}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "a succeeded batch has nothing to retry"
    );

    // The second batch's dead letters by id: the other tenant's request requeues none.
    let dead: Value = app
        .get_json(
            &key,
            &format!("/api/v1/jobs/{id}/dead-letters?include_requeued=false"),
        )
        .await;
    let ids: Vec<Value> = dead["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    let res = app
        .tenant(&other_key, Method::POST, "/api/v1/dead-letters/requeue")
        .json(&json!({"ids": ids}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["requeued"], 0);
    let res = app
        .tenant(&key, Method::POST, "/api/v1/dead-letters/requeue")
        .json(&json!({"ids": ids}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["requeued"], 3);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    // Bad requests.
    let res = app
        .tenant(&key, Method::POST, "/api/v1/dead-letters/requeue")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .tenant(&key, Method::POST, "/api/v1/dead-letters/requeue")
        .json(&json!({"job_id": Uuid::new_v4()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_job_without_dead_letters_keeps_its_invariants_through_a_retry() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let created = app.create_job(&key, &job(&sink.url(), 7)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(app.job(&key, &id).await["status"], "completed");
    assert_invariants(&app.db, id.parse().unwrap()).await;
}
