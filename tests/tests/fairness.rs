//! Fair sharing of the fleet between tenants: a job's in-flight window is capped at its
//! tenant's share of the live workers' slots, so another tenant's first batch is not
//! queued behind a big job's whole `parallelism`.

use std::time::{Duration, Instant};

use freight_tests::{
    TestApp, query_i64,
    sink::{Reply, Sink},
    wait_until,
};
use serde_json::{Value, json};
use uuid::Uuid;

fn job(url: &str, n: usize, parallelism: u32, owner: &str) -> Value {
    let records: Vec<Value> = (1..=n).map(|i| json!({"id": i, "owner": owner})).collect();
    json!({
        "source": {"type": "inline", "records": records},
        "destination": {"type": "http", "url": url},
        "record_key": "id", "batch_size": 5, "parallelism": parallelism,
    })
}

async fn batches(app: &TestApp, job: Uuid, statuses: &str) -> i64 {
    query_i64(
        &app.db,
        &format!("SELECT count(*) FROM batches WHERE job_id = $1 AND status IN ({statuses})"),
        vec![job.into()],
    )
    .await
}

#[tokio::test]
async fn a_big_job_leaves_room_for_another_tenants_job() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await; // concurrency 4: 8 slots with prefetch
    assert!(
        wait_until(Duration::from_secs(10), || async {
            app.scalar("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
                .await
                == 1
        })
        .await,
        "the worker registers"
    );
    let sink = Sink::start(|_| Reply {
        status: 200,
        delay: Duration::from_millis(20),
    })
    .await;
    let (_, big_key) = app.tenant_with_key("big").await;
    let (_, small_key) = app.tenant_with_key("small").await;

    // 160 batches at parallelism 64: alone, the job may keep 2 × 4 of them in flight.
    let big = app
        .create_job(&big_key, &job(&sink.url(), 800, 64, "big"))
        .await;
    let big_id: Uuid = big["id"].as_str().unwrap().parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            batches(&app, big_id, "'succeeded'").await >= 10
        })
        .await,
        "the big job makes progress"
    );
    let in_flight = batches(&app, big_id, "'queued', 'running', 'retry_scheduled'").await;
    assert!(
        (1..=8).contains(&in_flight),
        "alone, the job's window is the fleet's 8 slots, not its parallelism of 64: {in_flight}"
    );

    // Another tenant's one-batch job waits for about one round of the fleet, not for the
    // big job's 64 batches: count the big job's deliveries the sink saw between the
    // small job's creation (its batch is queued before the answer) and its first record.
    let small = app
        .create_job(&small_key, &job(&sink.url(), 5, 4, "small"))
        .await;
    let created = Instant::now();
    let small_id = small["id"].as_str().unwrap().to_owned();
    let done = app
        .wait_finished(&small_key, &small_id, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let received = sink.received();
    let first_small = received
        .iter()
        .filter(|r| r.body["owner"] == "small")
        .map(|r| r.at)
        .min()
        .unwrap();
    let ahead = received
        .iter()
        .filter(|r| r.body["owner"] == "big" && r.at > created && r.at < first_small)
        .count();
    assert!(
        ahead <= 150,
        "{ahead} of the big job's records were delivered before the small job's first: one round of the fleet is 8 batches (40 records), the big job's parallelism 64 (320)"
    );
    assert!(
        batches(&app, big_id, "'pending'").await > 0,
        "the big job was still running when the small one finished"
    );
}
