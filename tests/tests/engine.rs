//! The processing engine end to end: the real api and worker(s), real Postgres and Redis,
//! destinations on 127.0.0.1. Every test ends with the shared invariant check.

use std::time::{Duration, Instant};

use freight_tests::{
    TestApp, database_url,
    engine::{assert_invariants, id_of},
    sigterm_and_wait,
    sink::{Reply, Sink},
    wait_until,
};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

fn records(n: usize) -> Vec<Value> {
    (1..=n)
        .map(|i| json!({"id": i, "email": format!("u{i}@example.com")}))
        .collect()
}

fn http_job(url: &str, records: Vec<Value>, batch_size: u32, parallelism: u32) -> Value {
    json!({
        "name": "engine test",
        "source": {"type": "inline", "records": records},
        "destination": {"type": "http", "url": url, "headers": {"Authorization": "Bearer sink-secret"}},
        "record_key": "id",
        "batch_size": batch_size,
        "parallelism": parallelism,
        "retry": {"max_attempts": 4, "initial_interval_ms": 200, "multiplier": 2.0, "max_interval_ms": 2000, "jitter": 0.2}
    })
}

/// A worker that queues a job's next batch fetches it at once rather than at its next
/// poll: with a one-minute poll interval, a job of five one-at-a-time batches still
/// finishes in seconds (only the first batch waits for a poll: the worker's first).
#[tokio::test]
async fn a_job_s_next_batch_does_not_wait_for_the_poll_interval() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(50), 10, 1))
        .await;
    let (job_id, id) = id_of(&job);
    let _worker = app
        .start_worker_with(|s| s.worker.poll_interval = Duration::from_secs(60))
        .await;
    let done = app.wait_finished(&key, &id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["batches"]["succeeded"], 5);
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn a_job_delivers_every_record_to_an_http_sink() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(250), 20, 3))
        .await;
    let (job_id, id) = id_of(&job);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 250);
    assert_eq!(done["progress"]["pending"], 0);
    assert_eq!(done["batches"]["succeeded"], 13);
    let received = sink.received();
    let keys: std::collections::HashSet<&str> = received
        .iter()
        .map(|r| r.idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 250, "every record arrived");
    for seq in 1..=250 {
        assert!(
            keys.contains(format!("{id}:{seq}").as_str()),
            "Idempotency-Key {id}:{seq} missing"
        );
    }
    assert!(
        received
            .iter()
            .all(|r| r.headers["authorization"] == "Bearer sink-secret")
    );
    assert_eq!(
        received
            .iter()
            .find(|r| r.idempotency_key == format!("{id}:7"))
            .unwrap()
            .body["id"],
        7
    );
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn a_job_lands_in_a_postgres_table_and_one_poison_row_fails_alone() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    app.db
        .execute_unprepared(
            "CREATE TABLE contacts (id integer PRIMARY KEY, email text NOT NULL, age integer)",
        )
        .await
        .unwrap();
    let (_, key) = app.tenant_with_key("acme").await;
    let mut recs = records(120);
    recs[41] = json!({"id": 42, "email": null});
    recs[77] = json!({"id": 78, "email": "x@example.com", "age": "old"});
    let job = app
        .create_job(
            &key,
            &json!({
                "source": {"type": "inline", "records": recs},
                "destination": {"type": "postgres", "url": database_url(&app.env.db_name), "table": "contacts",
                                "key": ["id"], "mode": "upsert"},
                "record_key": "id", "batch_size": 50, "parallelism": 2,
                "retry": {"max_attempts": 3, "initial_interval_ms": 100}
            }),
        )
        .await;
    let (job_id, id) = id_of(&job);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["progress"]["succeeded"], 118);
    assert_eq!(done["progress"]["dead_lettered"], 2);
    assert_eq!(app.scalar("SELECT count(*) FROM contacts").await, 118);
    assert_eq!(
        app.scalar("SELECT count(*) FROM contacts WHERE id IN (42, 78)")
            .await,
        0
    );
    let dead: Vec<i64> = app
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT record_seq FROM dead_letters WHERE job_id = '{job_id}' ORDER BY record_seq"
            ),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<i64>(0).unwrap())
        .collect();
    assert_eq!(dead, [42, 78], "only the poison rows are dead-lettered");
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn mixed_failures_are_retried_with_backoff_or_dead_lettered() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    // Records whose id is divisible by 10 are refused for good (422); those divisible by
    // 7 fail twice with 503, then succeed.
    let sink = Sink::start(|r| {
        let id = r.body["id"].as_i64().unwrap_or(0);
        if id % 10 == 0 {
            Reply::status(422)
        } else if id % 7 == 0 && r.nth < 2 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(60), 15, 2))
        .await;
    let (job_id, id) = id_of(&job);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    let permanent = (1..=60).filter(|i| i % 10 == 0).count() as i64;
    let flaky: Vec<i64> = (1..=60).filter(|i| i % 7 == 0 && i % 10 != 0).collect();
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["progress"]["dead_lettered"], permanent);
    assert_eq!(done["progress"]["succeeded"], 60 - permanent);
    // Permanent failures were tried once.
    let received = sink.received();
    let tries = |id: i64| received.iter().filter(|r| r.body["id"] == id).count();
    assert_eq!(tries(10), 1);
    // Flaky records: attempts 1 and 2 failed, 3 succeeded, in the log and at the sink.
    for &f in &flaky {
        assert_eq!(tries(f), 3, "record {f}");
        let log: Vec<(i32, String)> = app
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT attempt, status FROM record_logs WHERE job_id = '{job_id}' AND record_seq = {f} ORDER BY id"),
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get_by_index(0).unwrap(), r.try_get_by_index(1).unwrap()))
            .collect();
        assert_eq!(
            log,
            [
                (1, "failed".into()),
                (2, "failed".into()),
                (3, "succeeded".into())
            ],
            "record {f}"
        );
    }
    // Observed retry delays sit inside the policy's bounds (200 ms then 400 ms, ±20 %),
    // plus a little scheduling slack on the late side.
    for &f in &flaky {
        let times: Vec<Instant> = received
            .iter()
            .filter(|r| r.body["id"] == f)
            .map(|r| r.at)
            .collect();
        for (n, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let base = 200.0 * 2f64.powi(n as i32);
            let (lo, hi) = (
                Duration::from_millis((base * 0.8) as u64),
                Duration::from_millis((base * 1.2) as u64 + 400),
            );
            println!(
                "record {f}: retry {} after {gap:?} (bounds {lo:?}..{hi:?})",
                n + 1
            );
            assert!(
                gap >= lo && gap <= hi,
                "record {f}: retry {} came after {gap:?}, outside {lo:?}..{hi:?}",
                n + 1
            );
        }
    }
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn attempts_exhausted_end_in_dead_letters() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|r| {
        if r.body["id"] == 3 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(5), 5, 1))
        .await;
    let (job_id, id) = id_of(&job);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed_with_errors");
    assert_eq!(done["progress"]["dead_lettered"], 1);
    assert_eq!(done["batches"]["failed"], 1);
    assert_eq!(
        sink.received().iter().filter(|r| r.body["id"] == 3).count(),
        4,
        "max_attempts = 4"
    );
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn cancelling_mid_run_stops_deliveries() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(150),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(400), 40, 2))
        .await;
    let (job_id, id) = id_of(&job);
    assert!(
        wait_until(Duration::from_secs(30), || async { sink.count() >= 40 }).await,
        "deliveries began"
    );
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let cancelled_at = Instant::now();
    let done = app.wait_finished(&key, &id, Duration::from_secs(30)).await;
    let seen_when_cancelled = sink.count();
    println!(
        "job reported cancelled {:?} after the cancel request",
        cancelled_at.elapsed()
    );
    assert_eq!(done["status"], "cancelled", "{done}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sink.count(),
        seen_when_cancelled,
        "no destination write after the job reported cancelled"
    );
    let p = &done["progress"];
    assert!(p["cancelled"].as_i64().unwrap() > 0);
    assert_eq!(
        p["succeeded"].as_i64().unwrap() + p["cancelled"].as_i64().unwrap(),
        400
    );
    // Cancelling again is a conflict now that it is finished.
    let again = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn a_queued_job_cancels_at_once_and_waiting_jobs_are_admitted() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let tenant = app.create_tenant("acme").await;
    app.db
        .execute_unprepared(&format!(
            "UPDATE tenants SET max_concurrent_jobs = 1 WHERE id = '{tenant}'"
        ))
        .await
        .unwrap();
    let (_, key) = app.create_key(tenant, json!({})).await;
    // No worker yet: the first job runs (admitted), the second waits in `queued`.
    let first = app
        .create_job(&key, &http_job(&sink.url(), records(10), 5, 1))
        .await;
    let second = app
        .create_job(&key, &http_job(&sink.url(), records(10), 5, 1))
        .await;
    let third = app
        .create_job(&key, &http_job(&sink.url(), records(10), 5, 1))
        .await;
    assert_eq!(first["status"], "running");
    assert_eq!(second["status"], "queued");
    let (second_id, second_s) = id_of(&second);
    let res = app
        .tenant(
            &key,
            Method::POST,
            &format!("/api/v1/jobs/{second_s}/cancel"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["progress"]["cancelled"], 10);
    assert_invariants(&app.db, second_id).await;
    // With a worker, the first finishes and the third is promoted and runs.
    let _worker = app.start_worker().await;
    let (_, third_s) = id_of(&third);
    let done = app
        .wait_finished(&key, &third_s, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        app.job(&key, first["id"].as_str().unwrap()).await["status"],
        "completed"
    );
}

#[tokio::test]
async fn a_sigkilled_worker_loses_nothing() {
    let app = TestApp::spawn().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(100),
    })
    .await;
    let spawn = || app.spawn_worker_binary(&[("WORKER_CONCURRENCY", "2")]);
    let mut victim = spawn();
    let mut survivor = spawn();
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(200), 20, 4))
        .await;
    let (job_id, id) = id_of(&job);
    // Kill one worker while it holds a running batch.
    let victim_holds_a_batch = wait_until(Duration::from_secs(30), || async {
        app.scalar(&format!("SELECT count(*) FROM batches b JOIN workers w ON w.id = b.worker_id WHERE b.status = 'running' AND w.pid = {}", victim.id())).await > 0
    })
    .await;
    assert!(victim_holds_a_batch, "the victim never claimed a batch");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let done = app.wait_finished(&key, &id, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 200);
    let keys: std::collections::HashSet<String> = sink
        .received()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(
        keys.len(),
        200,
        "every record reached the destination (some twice, same idempotency key)"
    );
    assert_invariants(&app.db, job_id).await;
    sigterm_and_wait(&mut survivor);
}

#[tokio::test]
async fn losing_every_redis_key_mid_run_loses_no_record() {
    // A throwaway redis-server of this test's own: FLUSHALL never touches the shared one.
    let redis_server = freight_tests::ThrowawayRedis::start().await;
    let redis_url = redis_server.url.clone();
    let app =
        TestApp::spawn_with(|s| s.redis.url = secrecy::SecretString::from(redis_url.clone())).await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(20),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(600), 20, 4))
        .await;
    let (job_id, id) = id_of(&job);
    assert!(wait_until(Duration::from_secs(30), || async { sink.count() >= 100 }).await);
    let client = redis::Client::open(redis_url.clone()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let flushed_at = Instant::now();
    let done = app.wait_finished(&key, &id, Duration::from_secs(90)).await;
    println!("job finished {:?} after FLUSHALL", flushed_at.elapsed());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 600);
    assert_invariants(&app.db, job_id).await;
    drop(app);
    drop(redis_server);
}

/// The destination flaps: it answers 503 for 300 ms out of every 600 ms while a job
/// runs. Records that meet an outage are retried with backoff until it answers; none is
/// dead-lettered (the policy allows enough attempts), none is lost, none counted twice.
#[tokio::test]
async fn a_flapping_destination_is_retried_through() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let epoch = Instant::now();
    let sink = Sink::start(move |_| Reply {
        status: if (epoch.elapsed().as_millis() / 300) % 2 == 1 {
            503
        } else {
            200
        },
        delay: Duration::from_millis(5),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let mut body = http_job(&sink.url(), records(400), 20, 4);
    body["retry"] = json!({"max_attempts": 10, "initial_interval_ms": 100, "multiplier": 1.5,
                           "max_interval_ms": 500, "jitter": 0.2});
    let job = app.create_job(&key, &body).await;
    let (job_id, id) = id_of(&job);
    let done = app.wait_finished(&key, &id, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 400);
    assert_invariants(&app.db, job_id).await;
    let received = sink.received();
    let retried = app
        .scalar(&format!(
            "SELECT count(*) FROM record_logs WHERE job_id = '{job_id}' AND status = 'failed'"
        ))
        .await;
    println!(
        "flapping destination: {} requests for 400 records, {retried} failed attempts retried",
        received.len()
    );
    assert!(retried > 0, "the outages hit some records");
    assert_eq!(
        received.len() as i64,
        400 + retried,
        "one request per attempt: each record once, plus once per failed attempt"
    );
    let keys: std::collections::HashSet<String> =
        received.into_iter().map(|r| r.idempotency_key).collect();
    assert_eq!(keys.len(), 400);
}

/// Postgres itself (a server of this test's own) is stopped and started again while a
/// job runs: `/ready` says 503 meanwhile, the api and the worker reconnect without a
/// restart, and the job finishes with every record accounted for exactly once.
#[tokio::test]
async fn a_postgres_restart_mid_run_loses_no_record() {
    let pg = freight_tests::ThrowawayPostgres::start().await;
    let pg_url = pg.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.database.url = secrecy::SecretString::from(pg_url.clone());
        s.database.acquire_timeout = Duration::from_secs(1);
        s.migrate_on_start = true;
    })
    .await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(10),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(600), 20, 4))
        .await;
    let (job_id, id) = id_of(&job);
    assert!(wait_until(Duration::from_secs(30), || async { sink.count() >= 100 }).await);

    pg.ctl("stop");
    let down_at = Instant::now();
    let ready = |app: &TestApp| {
        let req = app.request(Method::GET, "/ready");
        async move { req.send().await.map(|r| r.status()).ok() }
    };
    assert_eq!(ready(&app).await, Some(StatusCode::SERVICE_UNAVAILABLE));
    let res = app
        .tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    // (Nothing read the job before, so no cached view answers for Postgres.)
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a read while Postgres is down is a clear 503, not a 500"
    );
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 503, "{problem}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.ctl("start");
    println!("postgres was down for {:?}", down_at.elapsed());
    assert!(
        wait_until(Duration::from_secs(10), || async {
            ready(&app).await == Some(StatusCode::OK)
        })
        .await,
        "/ready recovers without a restart of the api"
    );

    let done = app.wait_finished(&key, &id, Duration::from_secs(90)).await;
    println!(
        "the job finished {:?} after Postgres went down",
        down_at.elapsed()
    );
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 600);
    let db = sea_orm::Database::connect(pg.url.clone()).await.unwrap();
    assert_invariants(&db, job_id).await;
    let keys: std::collections::HashSet<String> = sink
        .received()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 600, "every record reached the destination");
    db.close().await.ok();
    drop(app);
}

/// One of three worker processes is SIGKILLed every second and replaced, for as long as
/// the job runs: every record still ends with exactly one outcome and reaches the
/// destination.
#[tokio::test]
async fn sigkilling_a_worker_every_few_seconds_loses_nothing() {
    let app = TestApp::spawn().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(150),
    })
    .await;
    let spawn = || app.spawn_worker_binary(&[("WORKER_CONCURRENCY", "2")]);
    let mut workers: Vec<std::process::Child> = (0..3).map(|_| spawn()).collect();
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(2000), 20, 6))
        .await;
    let (job_id, id) = id_of(&job);
    let started = Instant::now();
    let mut kills = 0;
    let mut next = 0;
    // Bounded: at most 20 kills, whatever happens.
    while kills < 20 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let status = app.job(&key, &id).await["status"].clone();
        if status != "running" && status != "queued" {
            break;
        }
        let victim = &mut workers[next % 3];
        victim.kill().unwrap();
        victim.wait().unwrap();
        *victim = spawn();
        kills += 1;
        next += 1;
    }
    let done = app.wait_finished(&key, &id, Duration::from_secs(120)).await;
    println!(
        "{kills} workers SIGKILLed; the job finished {:?} after it started",
        started.elapsed()
    );
    assert!(
        kills >= 3,
        "the job ran long enough to see several kills ({kills})"
    );
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 2000);
    assert_invariants(&app.db, job_id).await;
    let keys: std::collections::HashSet<String> = sink
        .received()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 2000, "every record reached the destination");
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
}

/// Redis goes away mid-run and comes back empty: meanwhile `/ready` says 503, reads and
/// new jobs still work (Postgres holds them), and afterwards both jobs finish with every
/// record accounted for.
#[tokio::test]
async fn a_redis_restart_mid_run_loses_no_record() {
    let mut redis_server = freight_tests::ThrowawayRedis::start().await;
    let redis_url = redis_server.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.redis.url = secrecy::SecretString::from(redis_url.clone());
        s.redis.response_timeout = Duration::from_millis(500);
        s.redis.connection_timeout = Duration::from_millis(500);
    })
    .await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(10),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let first = app
        .create_job(&key, &http_job(&sink.url(), records(600), 20, 4))
        .await;
    assert!(wait_until(Duration::from_secs(30), || async { sink.count() >= 100 }).await);

    redis_server.kill();
    let down_at = Instant::now();
    let ready = |app: &TestApp| {
        let req = app.request(Method::GET, "/ready");
        async move { req.send().await.unwrap().status() }
    };
    assert!(
        wait_until(Duration::from_secs(5), || async {
            ready(&app).await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "/ready reports Redis down"
    );
    let (_, first_id) = id_of(&first);
    assert_eq!(
        app.tenant(&key, Method::GET, &format!("/api/v1/jobs/{first_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "reads do not need Redis"
    );
    let second = app
        .create_job(&key, &http_job(&sink.url(), records(50), 10, 2))
        .await;
    // Brief: a worker whose queue connection keeps failing for a minute exits for its
    // supervisor to restart it, which is not what this test is about.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis_server.restart().await;
    println!("redis was down for {:?}", down_at.elapsed());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            ready(&app).await == StatusCode::OK
        })
        .await,
        "/ready recovers without a restart of the api"
    );

    for (job, total) in [(&first, 600), (&second, 50)] {
        let (job_id, id) = id_of(job);
        let done = app.wait_finished(&key, &id, Duration::from_secs(90)).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["progress"]["succeeded"], total);
        assert_invariants(&app.db, job_id).await;
    }
    println!(
        "both jobs finished {:?} after Redis went down",
        down_at.elapsed()
    );
    let unique: std::collections::BTreeSet<String> = sink
        .received()
        .iter()
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert_eq!(unique.len(), 650, "every record reached the sink");
}

/// Every connection to Freight's database is killed (`pg_terminate_backend`), twice,
/// while a job runs: the api, the worker and the reconciler reconnect, the batches whose
/// ledger write was cut off are taken over, and every record ends with exactly one
/// outcome.
#[tokio::test]
async fn killing_every_database_connection_mid_run_loses_no_record() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(10),
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(800), 20, 4))
        .await;
    let (job_id, id) = id_of(&job);
    let admin = sea_orm::Database::connect(freight_tests::admin_database_url())
        .await
        .unwrap();
    let mut killed = 0;
    for at in [100, 400] {
        assert!(wait_until(Duration::from_secs(30), || async { sink.count() >= at }).await);
        let row = admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(pg_terminate_backend(pid))::bigint AS n FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                [app.env.db_name.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        killed += row.try_get::<i64>("", "n").unwrap();
    }
    assert!(killed > 0, "connections were killed");
    let cut_at = Instant::now();
    let done = app.wait_finished(&key, &id, Duration::from_secs(90)).await;
    println!(
        "job finished {:?} after the second cut ({killed} connections killed in all)",
        cut_at.elapsed()
    );
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 800);
    assert_invariants(&app.db, job_id).await;
    let unique: std::collections::BTreeSet<String> = sink
        .received()
        .iter()
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert_eq!(unique.len(), 800, "every record reached the sink");
}

#[tokio::test]
async fn a_small_job_is_not_starved_by_a_big_one() {
    let app = TestApp::spawn_with(|s| s.http.body_limit = 64 << 20).await;
    let _worker = app.start_worker().await;
    app.db
        .execute_unprepared("CREATE TABLE big (id integer PRIMARY KEY, email text)")
        .await
        .unwrap();
    let sink = Sink::accepting().await;
    let (_, key_a) = app.tenant_with_key("tenant-a").await;
    let (_, key_b) = app.tenant_with_key("tenant-b").await;
    let big = app
        .create_job(
            &key_a,
            &json!({
                "source": {"type": "inline", "records": records(200_000)},
                "destination": {"type": "postgres", "url": database_url(&app.env.db_name), "table": "big"},
                "batch_size": 1000, "parallelism": 4
            }),
        )
        .await;
    let (_, big_id) = id_of(&big);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            app.job(&key_a, &big_id).await["progress"]["succeeded"]
                .as_i64()
                .unwrap_or(0)
                >= 5_000
        })
        .await,
        "the big job is running"
    );
    let started = Instant::now();
    let small = app
        .create_job(&key_b, &http_job(&sink.url(), records(100), 50, 2))
        .await;
    let (small_job, small_id) = id_of(&small);
    let done = app
        .wait_finished(&key_b, &small_id, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    let big_progress = app.job(&key_a, &big_id).await["progress"]["succeeded"].clone();
    println!(
        "fairness: tenant B's 100-record job finished in {took:?} while tenant A's 200,000-record job ran (A at {big_progress} records)"
    );
    assert_eq!(done["status"], "completed");
    assert_invariants(&app.db, small_job).await;
    let res = app
        .tenant(
            &key_a,
            Method::POST,
            &format!("/api/v1/jobs/{big_id}/cancel"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let _ = app
        .wait_finished(&key_a, &big_id, Duration::from_secs(60))
        .await;
}

#[tokio::test]
async fn cancelling_a_job_whose_worker_died_mid_batch_still_ends_cancelled() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(30), 10, 1))
        .await;
    let (job_id, id) = id_of(&job);
    // A worker claimed the first batch and died: running, heartbeat long expired.
    app.db
        .execute_unprepared(&format!(
            "UPDATE batches SET status = 'running', attempts = 1, worker_id = 'dead-worker',
                    heartbeat_at = now() - interval '1 hour'
             WHERE job_id = '{job_id}' AND seq = 1"
        ))
        .await
        .unwrap();
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "cancelling");
    // No worker will ever record that batch; the reconciler ends it.
    let _worker = app.start_worker().await;
    let done = app.wait_finished(&key, &id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["progress"]["cancelled"], 30);
    assert_eq!(sink.count(), 0, "nothing was delivered for a cancelled job");
    assert_invariants(&app.db, job_id).await;
}

#[tokio::test]
async fn finished_tasks_are_swept_from_redis() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(&sink.url(), records(100), 10, 2))
        .await;
    let (_, id) = id_of(&job);
    app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    let client = redis::Client::open(freight_tests::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let q = app.env.db_name.clone();
    let swept = wait_until(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let q = q.clone();
        async move {
            let data: i64 = redis::cmd("HLEN")
                .arg(format!("{q}:data"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let done: i64 = redis::cmd("SCARD")
                .arg(format!("{q}:done"))
                .query_async(&mut conn)
                .await
                .unwrap();
            data == 0 && done == 0
        }
    })
    .await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{q}:meta:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        swept && keys.is_empty(),
        "finished tasks stay in Redis: {} meta keys",
        keys.len()
    );
}
