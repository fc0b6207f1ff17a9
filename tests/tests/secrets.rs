//! Destination secrets at rest: sealed in `jobs.destination`, opened only by workers
//! holding the key, rotated by `freight secrets rotate`, and a worker missing the key
//! makes records wait rather than dead-letter.

use std::time::Duration;

use base64::Engine as _;
use freight_core::secrets::Keyring;
use freight_tests::{
    SECRET_KEY, TestApp, database_url,
    engine::{assert_invariants, id_of},
    freight_binary, keyring,
    sink::Sink,
    wait_until,
};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::intake_support::{NDJSON, start, upload_ok};

const HEADER_SECRET: &str = "hdr-at-rest-4711";
const URL_SECRET: &str = "urlpw-at-rest-4712";
const PG_SECRET: &str = "pgpw-at-rest-4713";
/// A second key, for rotation.
const NEW_KEY: &str = "b5TxQRbKi0zeU6MNmaxPs+WPzKjqF0IITfzyf4yni9k=";

fn http_job(sink: &Sink, source: Value) -> Value {
    json!({
        "name": "sealed",
        "source": source,
        "destination": {
            "type": "http",
            "url": format!("http://user:{URL_SECRET}@{}/import", sink.addr),
            "headers": {"X-Api-Key": HEADER_SECRET},
        },
        "record_key": "id",
        "batch_size": 2,
        "retry": {"max_attempts": 2, "initial_interval_ms": 50, "max_interval_ms": 200},
    })
}

fn inline(n: i64) -> Value {
    json!({"type": "inline", "records": (1..=n).map(|i| json!({"id": i})).collect::<Vec<_>>()})
}

/// The job's stored destination, as a database dump would show it.
async fn stored(app: &TestApp, job: Uuid) -> String {
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT destination::text AS raw FROM jobs WHERE id = $1",
            [job.into()],
        ))
        .await
        .unwrap();
    rows[0].try_get("", "raw").unwrap()
}

fn assert_sealed_with(raw: &str, key: &str) {
    for secret in [HEADER_SECRET, URL_SECRET, PG_SECRET] {
        assert!(
            !raw.contains(secret),
            "`{secret}` is stored in the clear: {raw}"
        );
    }
    let id = keyring(&[key]).current_id().unwrap().to_owned();
    assert!(raw.contains(&id), "not sealed with key {id}: {raw}");
}

/// Every request the sink got carried the header and the URL's credentials as given.
fn assert_delivered_in_the_clear(sink: &Sink, n: usize) {
    let received = sink.received();
    assert_eq!(received.len(), n);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("user:{URL_SECRET}"))
    );
    for r in received {
        assert_eq!(r.headers["x-api-key"], HEADER_SECRET);
        assert_eq!(r.headers["authorization"], basic.as_str());
    }
}

#[tokio::test]
async fn secrets_are_stored_sealed_and_delivered_as_given() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    app.db
        .execute_unprepared("CREATE TABLE sealed_target (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut pg_url = url::Url::parse(&database_url(&app.env.db_name)).unwrap();
    pg_url.set_password(Some(PG_SECRET)).unwrap();
    let http = app.create_job(&key, &http_job(&sink, inline(3))).await;
    let pg = app
        .create_job(
            &key,
            &json!({
                "source": inline(2),
                "destination": {"type": "postgres", "url": pg_url.as_str(), "table": "sealed_target"},
            }),
        )
        .await;
    let (http_id, http_str) = id_of(&http);
    let (pg_id, pg_str) = id_of(&pg);
    // What a dump, a backup or a replica reader sees: no secret.
    assert_sealed_with(&stored(&app, http_id).await, SECRET_KEY);
    assert_sealed_with(&stored(&app, pg_id).await, SECRET_KEY);

    let _worker = app.start_worker().await;
    for id in [&http_str, &pg_str] {
        let done = app.wait_finished(&key, id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_delivered_in_the_clear(&sink, 3);
    assert_eq!(app.scalar("SELECT count(*) FROM sealed_target").await, 2);
    assert_invariants(&app.db, http_id).await;
    assert_invariants(&app.db, pg_id).await;
}

fn rotate(app: &TestApp, current: &str, old: &str) -> std::process::Output {
    std::process::Command::new(freight_binary())
        .args(["secrets", "rotate", "--batch-size", "1"])
        .env("DATABASE_URL", database_url(&app.env.db_name))
        .env("FREIGHT_SECRET_KEY", current)
        .env("FREIGHT_SECRET_KEYS_OLD", old)
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn after_a_key_rotation_jobs_still_deliver_and_rotate_moves_them_to_the_new_key() {
    // The api seals with the old key; jobs made then must survive the change of key.
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let first = app.create_job(&key, &http_job(&sink, inline(2))).await;
    let second = app
        .create_job(&key, &http_job(&sink, json!({"type": "upload"})))
        .await;
    let (first_id, first_str) = id_of(&first);
    let (second_id, second_str) = id_of(&second);
    assert_sealed_with(&stored(&app, second_id).await, SECRET_KEY);

    // Step 1: workers get the new key, the old one kept for opening. Old jobs deliver.
    let worker = app
        .start_worker_with(|s| s.secrets = keyring(&[NEW_KEY, SECRET_KEY]))
        .await;
    let done = app
        .wait_finished(&key, &first_str, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_delivered_in_the_clear(&sink, 2);
    drop(worker);

    // Step 2: rotate. Without the old key it refuses, naming the key it lacks.
    let old_id = keyring(&[SECRET_KEY]).current_id().unwrap().to_owned();
    let out = rotate(&app, NEW_KEY, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&old_id), "{stderr}");
    assert_sealed_with(&stored(&app, second_id).await, SECRET_KEY);
    let out = rotate(&app, NEW_KEY, SECRET_KEY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 of 2 jobs re-encrypted"), "{stdout}");
    for job in [first_id, second_id] {
        let raw = stored(&app, job).await;
        assert_sealed_with(&raw, NEW_KEY);
        assert!(!raw.contains(&old_id), "{raw}");
    }
    // Idempotent: a second run changes nothing.
    let out = rotate(&app, NEW_KEY, SECRET_KEY);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 of 2 jobs re-encrypted"));

    // Step 3: the old key is gone from the workers; the rotated job still delivers.
    upload_ok(&app, &key, &second_str, NDJSON, "{\"id\":1}\n{\"id\":2}\n").await;
    assert_eq!(start(&app, &key, &second_str).await.status(), 202);
    let _worker = app
        .start_worker_with(|s| s.secrets = keyring(&[NEW_KEY]))
        .await;
    let done = app
        .wait_finished(&key, &second_str, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_delivered_in_the_clear(&sink, 4);
    assert_invariants(&app.db, second_id).await;
}

#[tokio::test]
async fn a_worker_without_the_key_makes_records_wait_not_dead_letter() {
    let app = TestApp::spawn().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app.create_job(&key, &http_job(&sink, inline(4))).await;
    let (job_id, id) = id_of(&job);

    // A worker configured without the key (a forgotten variable in a deploy).
    let worker = app
        .start_worker_with(|s| s.secrets = Keyring::disabled())
        .await;
    // Each batch is taken again and again, well past max_attempts (2)...
    let claims =
        format!("SELECT coalesce(min(attempts), 0)::bigint FROM batches WHERE job_id = '{job_id}'");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            app.scalar(&claims).await >= 4
        })
        .await,
        "the batches were not retried"
    );
    drop(worker);
    // ...and nothing is dead-lettered or logged as an attempt: the records wait.
    let dead = format!("SELECT count(*) FROM dead_letters WHERE job_id = '{job_id}'");
    assert_eq!(app.scalar(&dead).await, 0);
    let logged = format!("SELECT count(*) FROM record_logs WHERE job_id = '{job_id}'");
    assert_eq!(app.scalar(&logged).await, 0);
    let waiting = app.job(&key, &id).await;
    assert_eq!(waiting["status"], "running", "{waiting}");
    assert_eq!(waiting["progress"]["retrying"], 4, "{waiting}");
    assert_eq!(sink.count(), 0);
    // The reason names the key, never a secret.
    let key_id = keyring(&[SECRET_KEY]).current_id().unwrap().to_owned();
    let batches: Value = app
        .get_json(&key, &format!("/api/v1/jobs/{id}/batches"))
        .await;
    let shown = batches.to_string();
    assert!(shown.contains(&key_id), "{shown}");
    assert!(!shown.contains(HEADER_SECRET) && !shown.contains(URL_SECRET));

    // The operator fixes the configuration: the job completes.
    let _worker = app.start_worker().await;
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_delivered_in_the_clear(&sink, 4);
    assert_invariants(&app.db, job_id).await;
}
