//! Metrics, the workers list and queue depth, observed from outside: worker processes run
//! as real binaries so their metrics are this test's alone.

use std::{collections::HashMap, process::Child, time::Duration};

use freight_tests::{
    TestApp, free_port,
    freight_all::FreightAll,
    send_json, sigterm_and_wait,
    sink::{Reply, Sink},
    wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn worker_binary(app: &TestApp, metrics_port: Option<u16>) -> Child {
    worker_binary_with(app, metrics_port, &[])
}

fn worker_binary_with(app: &TestApp, metrics_port: Option<u16>, extra: &[(&str, &str)]) -> Child {
    let addr = metrics_port.map(|p| format!("127.0.0.1:{p}"));
    let mut vars: Vec<(&str, &str)> = vec![("WORKER_HEARTBEAT_INTERVAL", "300ms")];
    if let Some(addr) = &addr {
        vars.push(("WORKER_METRICS_ADDR", addr));
    }
    vars.extend_from_slice(extra);
    app.spawn_worker_binary(&vars)
}

/// Parses the Prometheus text format into `name{labels} -> value`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn worker_metrics_move_with_a_job_and_match_its_counters() {
    let app = TestApp::spawn().await;
    let port = free_port();
    let mut worker = worker_binary(&app, Some(port));
    let sink = Sink::start(|r| {
        if r.body["id"].as_i64().unwrap_or(0) % 5 == 0 {
            Reply::status(422)
        } else {
            Reply::ok()
        }
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let records: Vec<Value> = (1..=50).map(|i| json!({"id": i})).collect();
    let job = app
        .create_job(
            &key,
            &json!({"source": {"type": "inline", "records": records},
                    "destination": {"type": "http", "url": sink.url()}, "batch_size": 10}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed_with_errors");
    let scrape = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = samples(&scrape);
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        get(r#"freight_records_total{outcome="succeeded"}"#),
        done["progress"]["succeeded"].as_f64().unwrap(),
        "{scrape}"
    );
    assert_eq!(
        get(r#"freight_records_total{outcome="dead_lettered"}"#),
        done["progress"]["dead_lettered"].as_f64().unwrap()
    );
    assert_eq!(get("freight_dead_letters_total"), 10.0);
    assert_eq!(
        get(r#"freight_jobs_finished_total{status="completed_with_errors"}"#),
        1.0
    );
    assert_eq!(
        get("freight_batch_duration_seconds_count"),
        5.0,
        "one observation per batch attempt"
    );
    assert!(
        scrape.contains("freight_batch_duration_seconds_bucket{le=\""),
        "a histogram, not a summary"
    );
    assert!(
        scrape.contains("tasks_total{"),
        "apalis' own task metrics are exported too: {scrape}"
    );
    assert!(
        get("freight_reconciler_runs_total") >= 1.0,
        "this worker leads the reconciler"
    );
    // The api's own metrics: routes by template, never raw ids.
    let api = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    let text = api.text().await.unwrap();
    assert!(text.contains(r#"route="/api/v1/jobs/{id}""#), "{text}");
    assert!(!text.contains(&id), "a job id leaked into a metric label");
    assert!(text.contains("freight_jobs_created_total"));
    sigterm_and_wait(&mut worker);
}

#[tokio::test]
async fn the_workers_list_shows_live_workers_and_drops_a_killed_one() {
    let app =
        TestApp::spawn_with(|s| s.worker.heartbeat_interval = Duration::from_millis(300)).await;
    let mut first = worker_binary(&app, None);
    let mut second = worker_binary(&app, None);
    let list = || async {
        let res = app
            .admin(Method::GET, "/api/v1/workers")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Vec<Value>>().await.unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            list().await.len() == 2
        })
        .await,
        "two live workers"
    );
    let workers = list().await;
    assert!(workers.iter().all(|w| w["id"].is_string()
        && w["concurrency"].as_i64() > Some(0)
        && w["last_heartbeat_at"].is_string()));
    second.kill().unwrap();
    second.wait().unwrap();
    let killed_at = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || async { list().await.len() == 1 }).await,
        "the killed worker stays listed"
    );
    println!(
        "a SIGKILLed worker left the list after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(list().await[0]["pid"], first.id());
    // Operators only.
    let (_, key) = app.tenant_with_key("acme").await;
    let res = app
        .tenant(&key, Method::GET, "/api/v1/workers")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    sigterm_and_wait(&mut first);
}

#[tokio::test]
async fn queue_depth_matches_the_batches_table() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    // No worker: the job is admitted, its window queued and the rest pending.
    let records: Vec<Value> = (1..=100).map(|i| json!({"id": i})).collect();
    app.create_job(
        &key,
        &json!({"source": {"type": "inline", "records": records},
                "destination": {"type": "http", "url": sink.url()}, "batch_size": 10, "parallelism": 3}),
    )
    .await;
    let res = app
        .admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let q = &body["queues"][0];
    assert_eq!(q["name"], app.env.db_name);
    assert_eq!(q["queued"], 3);
    assert_eq!(q["pending"], 7);
    assert_eq!(q["running"], 0);
    assert_eq!(q["retry_scheduled"], 0);
    assert_eq!(q["dead"], 0);
    assert_eq!(
        q["redis"]["ready"].as_i64().unwrap() + q["redis"]["scheduled"].as_i64().unwrap(),
        3,
        "{body}"
    );
}

/// `(event, id, data)` of each event in an SSE body.
fn sse_events(body: &str) -> Vec<(String, i64, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some((event?, id?, data?))
        })
        .collect()
}

#[tokio::test]
async fn progress_streams_over_sse_and_resumes_with_last_event_id() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(20),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let records: Vec<Value> = (1..=200).map(|i| json!({"id": i})).collect();
    let job = app
        .create_job(
            &key,
            &json!({"source": {"type": "inline", "records": records},
                    "destination": {"type": "http", "url": sink.url()}, "batch_size": 10, "parallelism": 2}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/jobs/{id}/events");
    let res = app.tenant(&key, Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = tokio::time::timeout(Duration::from_secs(60), res.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let events = sse_events(&body);
    assert!(events.len() >= 3, "progress events as the job runs: {body}");
    let done: Vec<_> = events.iter().filter(|e| e.0 == "done").collect();
    assert_eq!(done.len(), 1, "exactly one terminal event");
    assert_eq!(
        events.last().unwrap().0,
        "done",
        "the terminal event comes last"
    );
    assert_eq!(done[0].2["status"], "completed");
    assert_eq!(done[0].2["progress"]["succeeded"], 200);
    for pair in events.windows(2) {
        assert!(pair[1].1 > pair[0].1, "event ids grow");
        let (a, b) = (
            &pair[0].2["progress"]["succeeded"],
            &pair[1].2["progress"]["succeeded"],
        );
        assert!(b.as_i64() >= a.as_i64(), "progress never goes back");
    }
    // Resuming after the second-to-last event replays only what came after it.
    let before_last = events[events.len() - 2].1;
    let resumed = app
        .tenant(&key, Method::GET, &path)
        .header("last-event-id", before_last.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let again = sse_events(&resumed);
    assert_eq!(again.len(), 1, "{resumed}");
    assert_eq!(again[0].0, "done");
    // A client that saw the end gets nothing more; another tenant gets a 404.
    let finished = app
        .tenant(&key, Method::GET, &path)
        .header("last-event-id", events.last().unwrap().1.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sse_events(&finished).is_empty());
    let (_, other) = app.tenant_with_key("globex").await;
    assert_eq!(
        app.tenant(&other, Method::GET, &path)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn logs_are_structured_and_hold_no_secret() {
    // The whole of Freight in one child process, logging JSON at debug level.
    let env = freight_tests::TestEnv::new().await;
    let admin = "operator-token-that-must-not-leak-42";
    let freight = FreightAll::start(&env, admin, &[]).await;
    let (client, base) = (&freight.client, &freight.base);
    let tenant: Value = send_json(
        client
            .post(format!("{base}/api/v1/admin/tenants"))
            .bearer_auth(admin)
            .json(&json!({"name": "acme"})),
    )
    .await;
    let key: Value = send_json(
        client
            .post(format!(
                "{base}/api/v1/admin/tenants/{}/api-keys",
                tenant["id"].as_str().unwrap()
            ))
            .bearer_auth(admin)
            .json(&json!({})),
    )
    .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let sink = Sink::start(|r| {
        if r.body["id"] == 2 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let header_secret = "Bearer header-secret-value-77";
    let url_secret = "urlpassword-secret-88";
    let url = format!("http://user:{url_secret}@{}/import", sink.addr);
    let job: Value = send_json(
        client
            .post(format!("{base}/api/v1/jobs"))
            .bearer_auth(&key)
            .header("x-request-id", "req-observed-1")
            .json(&json!({"source": {"type": "inline", "records": [{"id": 1}, {"id": 2}, {"id": 3}]},
                          "destination": {"type": "http", "url": url, "headers": {"Authorization": header_secret}},
                          "retry": {"max_attempts": 2, "initial_interval_ms": 50}})),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let finished = freight
        .wait_for_job_status(&key, &id, "completed_with_errors", Duration::from_secs(30))
        .await;
    assert!(finished);
    let text = freight.stop();
    // Run without FREIGHT_SECRET_KEY, `freight all` says once that secrets are stored
    // unencrypted.
    assert_eq!(
        text.matches("FREIGHT_SECRET_KEY is not set").count(),
        1,
        "{text}"
    );
    let key_secret = key.rsplit('_').next().unwrap();
    for secret in [admin, key_secret, header_secret, url_secret] {
        assert!(
            !text.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() > 10, "JSON log lines: {text}");
    let request_line = lines
        .iter()
        .find(|l| l.to_string().contains("req-observed-1"))
        .expect("a log line of the job creation request carries its request id");
    assert!(request_line.to_string().contains("request_id"));
    let batch_line = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "batch attempt recorded"
                || l["message"] == "batch attempt recorded"
        })
        .expect("the worker logs each batch attempt");
    let line = batch_line.to_string();
    for field in ["tenant_id", "job_id", "batch_id", "attempt"] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(line.contains(&id));
}

#[tokio::test]
async fn tenant_labels_appear_only_when_an_operator_turns_them_on() {
    let app = TestApp::spawn().await;
    let port = free_port();
    let mut worker = worker_binary_with(&app, Some(port), &[("METRICS_TENANT_LABELS", "true")]);
    let sink = Sink::accepting().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(
            &key,
            &json!({"source": {"type": "inline", "records": [{"id": 1}, {"id": 2}]},
                    "destination": {"type": "http", "url": sink.url()}}),
        )
        .await;
    app.wait_finished(&key, job["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    let scrape = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = samples(&scrape);
    let labelled = format!(r#"freight_records_total{{outcome="succeeded",tenant_id="{tenant}"}}"#);
    assert_eq!(m.get(&labelled).copied(), Some(2.0), "{scrape}");
    sigterm_and_wait(&mut worker);
}
