//! Table upkeep: on a Postgres where autovacuum is off for Freight's tables, the
//! reconciler's leader analyses (and vacuums) them itself, so the planner sees the tables
//! as they are rather than as they were when empty.

use std::time::Duration;

use freight_core::store::upkeep::TABLES;
use freight_tests::{TestApp, engine::id_of, sink::Sink, wait_until};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

#[tokio::test]
async fn tables_without_autovacuum_are_analysed_by_the_reconciler() {
    let app = TestApp::spawn().await;
    // Off for these two tables whatever the server's own setting: the test holds on a
    // server with autovacuum on as well as on one with it off.
    for table in ["batches", "record_logs"] {
        app.db
            .execute_unprepared(&format!(
                "ALTER TABLE {table} SET (autovacuum_enabled = false)"
            ))
            .await
            .unwrap();
    }
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let records: Vec<Value> = (1..=300).map(|i| json!({"id": i})).collect();
    let job = app
        .create_job(
            &key,
            &json!({
                "name": "upkeep",
                "source": {"type": "inline", "records": records},
                "destination": {"type": "http", "url": sink.url()},
                "record_key": "id",
                "batch_size": 10,
            }),
        )
        .await;
    // The job runs on a worker without upkeep, and the tables are maintained once it is
    // done: an ANALYZE in mid-job could leave too few later changes to cross the
    // threshold again, and the planner's count just under the final one.
    let delivering = app
        .start_worker_with(|s| s.worker.table_upkeep_interval = None)
        .await;
    let (_, id) = id_of(&job);
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    drop(delivering);
    let _worker = app
        .start_worker_with(|s| s.worker.table_upkeep_interval = Some(Duration::from_millis(300)))
        .await;

    // Backends report their row counts to the statistics within ~10 s of going idle; the
    // next upkeep pass after that analyses the tables and the planner's row counts follow.
    let planner_rows = |table: &'static str| {
        let db = app.db.clone();
        async move {
            db.query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT c.reltuples::float8 AS rows, s.last_analyze IS NOT NULL AS analysed
                       FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                      WHERE c.oid = '{table}'::regclass"
                ),
            ))
            .await
            .unwrap()
            .map(|r| {
                let rows: f64 = r.try_get("", "rows").unwrap();
                let analysed: bool = r.try_get("", "analysed").unwrap();
                (rows, analysed)
            })
            .unwrap()
        }
    };
    let analysed = wait_until(Duration::from_secs(40), || async {
        let (logs, logs_analysed) = planner_rows("record_logs").await;
        let (batches, batches_analysed) = planner_rows("batches").await;
        logs_analysed && batches_analysed && logs >= 300.0 && batches >= 30.0
    })
    .await;
    assert!(
        analysed,
        "record_logs {:?}, batches {:?} (planner rows, analysed) were never analysed",
        planner_rows("record_logs").await,
        planner_rows("batches").await
    );
}

/// The upkeep list names every table the migrations create: a new table must not be
/// left out of it silently.
#[tokio::test]
async fn upkeep_covers_every_table_of_the_schema() {
    let app = TestApp::spawn().await;
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_name::text AS name FROM information_schema.tables
              WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                AND table_name <> 'seaql_migrations' ORDER BY 1",
        ))
        .await
        .unwrap();
    let schema: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "name").unwrap())
        .collect();
    let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(schema, listed);
}
