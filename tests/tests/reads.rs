//! The read side of a job and a tenant: batches, retry status, logs (JSON pages, CSV and
//! NDJSON downloads), dead letters, stats and the default retry policy.
//!
//! The worker is not running here: log rows, dead letters, batch states and job counters
//! are seeded with SQL into jobs created through the API, so each test pins exactly what
//! the endpoints must read back.

use std::collections::BTreeSet;

use freight_tests::{TestApp, inline_job, send_json};
use reqwest::{Method, Response, StatusCode, header};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value as DbValue};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::intake_support::{error_fields, expect_problem};

/// Runs a statement against the test database.
async fn exec(app: &TestApp, sql: &str, values: Vec<DbValue>) {
    app.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn query(app: &TestApp, sql: &str, values: Vec<DbValue>) -> Vec<QueryResult> {
    app.db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A job of `records` inline records in batches of `batch_size`; returns its id.
async fn new_job(app: &TestApp, key: &str, records: usize, batch_size: i64) -> Uuid {
    let mut body = inline_job(records);
    body["batch_size"] = json!(batch_size);
    let job = app.create_job(key, &body).await;
    job["id"].as_str().unwrap().parse().unwrap()
}

/// The job's batch ids, by seq.
async fn batch_ids(app: &TestApp, job: Uuid) -> Vec<Uuid> {
    query(
        app,
        "SELECT id FROM batches WHERE job_id = $1 ORDER BY seq",
        vec![job.into()],
    )
    .await
    .iter()
    .map(|r| r.try_get::<Uuid>("", "id").unwrap())
    .collect()
}

/// `GET path` as `key`, asserting 200 and a JSON body.
async fn get_json(app: &TestApp, key: &str, path: &str) -> Value {
    let res = app.tenant(key, Method::GET, path).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
}

async fn get(app: &TestApp, key: &str, path: &str) -> Response {
    app.tenant(key, Method::GET, path).send().await.unwrap()
}

/// Follows `next_cursor` from `first` to the end; returns every page's `data`.
async fn walk(app: &TestApp, key: &str, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let body = get_json(app, key, &path).await;
        assert!(
            body.get("next_cursor").is_some(),
            "{path}: `next_cursor` must be present, even when null: {body}"
        );
        pages.push(body["data"].as_array().unwrap().clone());
        assert!(pages.len() <= 100, "pagination does not end");
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                path = format!("{first}{sep}cursor={cursor}");
            }
            None => return pages,
        }
    }
}

/// The error a seeded log row carries: a comma, quotes and a newline, all at once.
const NASTY_ERROR: &str = "HTTP 422: \"email\", invalid\nsecond line, with \"quotes\"";

/// Seeds one `succeeded` or `failed` row per record (every fifth fails), then for the
/// failed ones a `dead_lettered` second attempt carrying [`NASTY_ERROR`].
async fn seed_logs(app: &TestApp, job: Uuid) {
    exec(
        app,
        "INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status, error, duration_ms)
         SELECT r.job_id, r.tenant_id, b.id, r.seq, 1,
                CASE WHEN r.seq % 5 = 0 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN r.seq % 5 = 0 THEN 'HTTP 503' END, 10 + r.seq::int
         FROM job_records r
         JOIN batches b ON b.job_id = r.job_id AND r.seq BETWEEN b.first_record_seq AND b.last_record_seq
         WHERE r.job_id = $1 ORDER BY r.seq",
        vec![job.into()],
    )
    .await;
    exec(
        app,
        "INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status, error, duration_ms)
         SELECT job_id, tenant_id, batch_id, record_seq, 2, 'dead_lettered', $2, NULL
         FROM record_logs WHERE job_id = $1 AND status = 'failed' ORDER BY id",
        vec![job.into(), NASTY_ERROR.into()],
    )
    .await;
}

/// The seeded log as the database holds it, by id: `(record_seq, attempt, status)`.
async fn stored_log(app: &TestApp, job: Uuid, extra: &str) -> Vec<(i64, i64, String)> {
    query(
        app,
        &format!(
            "SELECT record_seq, attempt, status FROM record_logs WHERE job_id = $1 {extra} ORDER BY id"
        ),
        vec![job.into()],
    )
    .await
    .iter()
    .map(|r| {
        (
            r.try_get::<i64>("", "record_seq").unwrap(),
            i64::from(r.try_get::<i32>("", "attempt").unwrap()),
            r.try_get::<String>("", "status").unwrap(),
        )
    })
    .collect()
}

fn log_key(entry: &Value) -> (i64, i64, String) {
    (
        entry["record_seq"].as_i64().unwrap(),
        entry["attempt"].as_i64().unwrap(),
        entry["status"].as_str().unwrap().to_owned(),
    )
}

/// A small RFC 4180 reader: quoted fields, doubled quotes, CRLF or LF line ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(
                    field.is_empty(),
                    "a quote inside an unquoted field: {field}"
                );
                quoted = true;
            }
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            c => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    assert!(
        field.is_empty() && row.is_empty(),
        "the last row has no line end"
    );
    rows
}

const CSV_HEADER: [&str; 8] = [
    "record_seq",
    "record_key",
    "batch_id",
    "attempt",
    "status",
    "error",
    "duration_ms",
    "created_at",
];

/// Downloads the log with `accept`, asserting 200, the media type and the attachment.
async fn download(app: &TestApp, key: &str, job: Uuid, query: &str, accept: &str) -> String {
    let res = app
        .tenant(key, Method::GET, &format!("/api/v1/jobs/{job}/logs{query}"))
        .header(header::ACCEPT, accept)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{accept} download");
    let ct = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let ext = if accept == "text/csv" {
        assert_eq!(ct, "text/csv; charset=utf-8");
        "csv"
    } else {
        assert_eq!(ct, "application/x-ndjson");
        "ndjson"
    };
    assert_eq!(
        res.headers()[header::CONTENT_DISPOSITION].to_str().unwrap(),
        format!("attachment; filename=\"job-{job}-logs.{ext}\"")
    );
    res.text().await.unwrap()
}

#[tokio::test]
async fn batches_are_listed_by_seq_and_cursors_visit_each_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 25, 2).await; // 13 batches, the last holding one record
    let ids = batch_ids(&app, job).await;
    assert_eq!(ids.len(), 13);
    // The api may already have queued the first few: pin the states read back.
    exec(
        &app,
        "UPDATE batches SET status = 'pending', attempts = 0, next_attempt_at = NULL, dispatched_at = NULL
         WHERE job_id = $1",
        vec![job.into()],
    )
    .await;
    exec(
        &app,
        "UPDATE batches SET status = 'succeeded', attempts = 1, finished_at = now() WHERE id = $1",
        vec![ids[0].into()],
    )
    .await;
    exec(
        &app,
        "UPDATE batches SET status = 'running', attempts = 2, worker_id = 'w-1', heartbeat_at = now(),
                last_error = 'HTTP 503', next_attempt_at = now()
         WHERE id = $1",
        vec![ids[3].into()],
    )
    .await;

    let pages = walk(&app, &key, &format!("/api/v1/jobs/{job}/batches?limit=5")).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 3],
        "13 batches in pages of 5"
    );
    let all: Vec<Value> = pages.into_iter().flatten().collect();
    let seqs: Vec<i64> = all.iter().map(|b| b["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
    let listed: Vec<Uuid> = all
        .iter()
        .map(|b| b["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, ids);

    let first = &all[0];
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["attempts"], 1);
    assert!(first["finished_at"].is_string());
    assert_eq!(all[1]["status"], "pending");
    assert_eq!(all[1]["attempts"], 0);
    assert_eq!(first["record_count"], 2);
    assert_eq!(
        (&first["first_record_seq"], &first["last_record_seq"]),
        (&json!(1), &json!(2))
    );
    assert!(first["next_attempt_at"].is_null() && first["last_error"].is_null());
    assert!(first["worker_id"].is_null());
    let running = &all[3];
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 2);
    assert_eq!(running["worker_id"], "w-1");
    assert_eq!(running["last_error"], "HTTP 503");
    assert!(running["next_attempt_at"].is_string());
    let last = &all[12];
    assert_eq!(
        (
            &last["record_count"],
            &last["first_record_seq"],
            &last["last_record_seq"]
        ),
        (&json!(1), &json!(25), &json!(25))
    );

    // Default limit holds them all; bad parameters are refused as problems.
    let body = get_json(&app, &key, &format!("/api/v1/jobs/{job}/batches")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 13);
    assert!(body["next_cursor"].is_null());
    let res = get(&app, &key, &format!("/api/v1/jobs/{job}/batches?limit=0")).await;
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "limit=0").await;
    assert_eq!(error_fields(&problem), ["limit"]);
    let res = get(
        &app,
        &key,
        &format!("/api/v1/jobs/{job}/batches?cursor=%%%"),
    )
    .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "a bad cursor").await;
    let res = get(
        &app,
        &key,
        &format!("/api/v1/jobs/{job}/batches?cursor=bm9wZQ"),
    )
    .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "a cursor we did not issue").await;
    let res = get(&app, &key, "/api/v1/jobs/not-a-uuid/batches").await;
    expect_problem(res, StatusCode::BAD_REQUEST, "a bad job id").await;
    let res = get(
        &app,
        &key,
        &format!("/api/v1/jobs/{}/batches", Uuid::now_v7()),
    )
    .await;
    expect_problem(res, StatusCode::NOT_FOUND, "an unknown job").await;
}

#[tokio::test]
async fn retry_status_counts_scheduled_batches_and_failed_attempts() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 25, 10).await;
    let path = format!("/api/v1/jobs/{job}/retry-status");

    let body = get_json(&app, &key, &path).await;
    assert_eq!(
        body,
        json!({"retrying_batches": 0, "scheduled": [], "total_retries": 0})
    );

    let ids = batch_ids(&app, job).await;
    exec(
        &app,
        "UPDATE batches SET status = 'retry_scheduled', attempts = 2, next_attempt_at = now() + interval '2 minutes'
         WHERE id = $1",
        vec![ids[0].into()],
    )
    .await;
    exec(
        &app,
        "UPDATE batches SET status = 'retry_scheduled', attempts = 1, next_attempt_at = now() + interval '1 minute'
         WHERE id = $1",
        vec![ids[2].into()],
    )
    .await;
    exec(
        &app,
        "UPDATE batches SET status = 'succeeded', attempts = 1 WHERE id = $1",
        vec![ids[1].into()],
    )
    .await;
    seed_logs(&app, job).await; // 5 `failed` rows among 30

    let body = get_json(&app, &key, &path).await;
    assert_eq!(body["retrying_batches"], 2, "{body}");
    assert_eq!(body["total_retries"], 5, "{body}");
    let scheduled = body["scheduled"].as_array().unwrap();
    let seen: Vec<(String, i64)> = scheduled
        .iter()
        .map(|s| {
            assert!(s["next_attempt_at"].is_string(), "{s}");
            (
                s["batch_id"].as_str().unwrap().to_owned(),
                s["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(ids[2].to_string(), 2), (ids[0].to_string(), 3)],
        "soonest first, each with the attempt that is scheduled"
    );
}

#[tokio::test]
async fn logs_page_by_id_with_record_keys_and_filters() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 25, 10).await;
    let path = format!("/api/v1/jobs/{job}/logs");

    let empty = get_json(&app, &key, &path).await;
    assert_eq!(empty, json!({"data": [], "next_cursor": null}));

    seed_logs(&app, job).await;
    let stored = stored_log(&app, job, "").await;
    assert_eq!(stored.len(), 30);

    let pages = walk(&app, &key, &format!("{path}?limit=7")).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [7, 7, 7, 7, 2]
    );
    let all: Vec<Value> = pages.into_iter().flatten().collect();
    assert_eq!(
        all.iter().map(log_key).collect::<Vec<_>>(),
        stored,
        "every row once, in id order"
    );
    let batches = batch_ids(&app, job).await;
    for entry in &all {
        let seq = entry["record_seq"].as_i64().unwrap();
        assert_eq!(entry["record_key"], seq.to_string(), "{entry}");
        assert_eq!(
            entry["batch_id"],
            batches[((seq - 1) / 10) as usize].to_string()
        );
        assert!(entry["created_at"].is_string());
        let fields: BTreeSet<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, BTreeSet::from(CSV_HEADER), "{entry}");
    }
    let ok = all
        .iter()
        .find(|e| e["record_seq"] == 1)
        .expect("record 1 has a row");
    assert_eq!(
        (&ok["status"], &ok["error"]),
        (&json!("succeeded"), &Value::Null)
    );
    assert_eq!(ok["duration_ms"], 11);
    let dead: Vec<&Value> = all
        .iter()
        .filter(|e| e["status"] == "dead_lettered")
        .collect();
    assert_eq!(dead.len(), 5);
    assert!(
        dead.iter()
            .all(|e| e["error"] == NASTY_ERROR && e["duration_ms"].is_null())
    );

    // Filters.
    let failed = walk(&app, &key, &format!("{path}?status=failed&limit=2")).await;
    let failed: Vec<Value> = failed.into_iter().flatten().collect();
    assert_eq!(
        failed.iter().map(log_key).collect::<Vec<_>>(),
        stored_log(&app, job, "AND status = 'failed'").await
    );
    let one = get_json(&app, &key, &format!("{path}?record_seq=10")).await;
    assert_eq!(
        one["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(log_key)
            .collect::<Vec<_>>(),
        [
            (10, 1, "failed".to_owned()),
            (10, 2, "dead_lettered".to_owned())
        ]
    );
    let both = get_json(
        &app,
        &key,
        &format!("{path}?record_seq=10&status=dead_lettered"),
    )
    .await;
    assert_eq!(both["data"].as_array().unwrap().len(), 1);
    let none = get_json(&app, &key, &format!("{path}?status=cancelled")).await;
    assert_eq!(none["data"], json!([]));

    // Bad parameters.
    let res = get(&app, &key, &format!("{path}?status=exploded")).await;
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "status=exploded").await;
    assert_eq!(error_fields(&problem), ["status"]);
    let res = get(&app, &key, &format!("{path}?record_seq=0")).await;
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "record_seq=0").await;
    assert_eq!(error_fields(&problem), ["record_seq"]);
    let res = get(&app, &key, &format!("{path}?record_seq=ten")).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "record_seq=ten").await;
    let res = get(&app, &key, &format!("{path}?limit=1001")).await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "limit=1001").await;
    let res = get(&app, &key, &format!("{path}?cursor=!!")).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "cursor=!!").await;
}

#[tokio::test]
async fn csv_download_is_the_whole_log_with_quoting() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 25, 10).await;

    let empty = download(&app, &key, job, "", "text/csv").await;
    assert_eq!(empty, format!("{}\r\n", CSV_HEADER.join(",")));

    seed_logs(&app, job).await;
    // `limit` and `cursor` do not apply to downloads: the whole log comes back.
    let text = download(&app, &key, job, "?limit=1", "text/csv").await;
    assert!(text.starts_with(&format!("{}\r\n", CSV_HEADER.join(","))));
    let rows = parse_csv(&text);
    assert_eq!(rows[0], CSV_HEADER);
    let data = &rows[1..];
    assert_eq!(data.len(), 30, "one row per log row");
    assert!(data.iter().all(|r| r.len() == 8));
    let got: Vec<(i64, i64, String)> = data
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[3].parse().unwrap(), r[4].clone()))
        .collect();
    assert_eq!(got, stored_log(&app, job, "").await);
    // The JSON pages and the CSV agree field by field.
    let json_rows = get_json(&app, &key, &format!("/api/v1/jobs/{job}/logs?limit=1000")).await;
    for (row, entry) in data.iter().zip(json_rows["data"].as_array().unwrap()) {
        assert_eq!(row[1], entry["record_key"].as_str().unwrap());
        assert_eq!(row[2], entry["batch_id"].as_str().unwrap());
        assert_eq!(row[5], entry["error"].as_str().unwrap_or(""));
        assert_eq!(
            row[6],
            entry["duration_ms"]
                .as_i64()
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
        assert_eq!(row[7], entry["created_at"].as_str().unwrap());
    }
    // The error with a comma, quotes and a newline is quoted, and reads back intact.
    let dead: Vec<&Vec<String>> = data.iter().filter(|r| r[4] == "dead_lettered").collect();
    assert_eq!(dead.len(), 5);
    assert!(dead.iter().all(|r| r[5] == NASTY_ERROR));
    assert!(
        text.contains("\"HTTP 422: \"\"email\"\", invalid\nsecond line, with \"\"quotes\"\"\"")
    );
    // Rows without a newline in a field take exactly one line.
    let plain_lines = text
        .split("\r\n")
        .filter(|l| l.contains(",succeeded,"))
        .count();
    assert_eq!(plain_lines, 20);

    // Filters still apply.
    let failed = parse_csv(&download(&app, &key, job, "?status=failed", "text/csv").await);
    assert_eq!(failed.len(), 1 + 5);
    assert!(
        failed[1..]
            .iter()
            .all(|r| r[4] == "failed" && r[5] == "HTTP 503")
    );
    let one = parse_csv(&download(&app, &key, job, "?record_seq=3", "text/csv").await);
    assert_eq!(one.len(), 2);
    assert_eq!(
        one[1][0..5],
        ["3", "3", one[1][2].as_str(), "1", "succeeded"]
    );
    // A bad filter is still a problem, not a broken download.
    let res = app
        .tenant(
            &key,
            Method::GET,
            &format!("/api/v1/jobs/{job}/logs?status=nope"),
        )
        .header(header::ACCEPT, "text/csv")
        .send()
        .await
        .unwrap();
    expect_problem(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "csv with a bad status",
    )
    .await;
}

#[tokio::test]
async fn ndjson_download_is_one_object_per_line() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 25, 10).await;
    seed_logs(&app, job).await;

    let text = download(&app, &key, job, "", "application/x-ndjson").await;
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 30);
    let page = get_json(&app, &key, &format!("/api/v1/jobs/{job}/logs?limit=1000")).await;
    assert_eq!(
        &Value::Array(lines),
        &page["data"],
        "the same rows as the JSON pages"
    );

    let failed = download(
        &app,
        &key,
        job,
        "?status=dead_lettered",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(failed.lines().count(), 5);
    for line in failed.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["error"], NASTY_ERROR);
    }
}

/// More rows than one download page (5,000), ending exactly on a page boundary.
#[tokio::test]
async fn downloads_stream_across_pages() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 7, 10).await;
    exec(
        &app,
        "INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status, error, duration_ms)
         SELECT j.id, j.tenant_id, b.id, 1 + g % 7, 1 + g / 7, 'failed', 'attempt ' || g, g % 1000
         FROM jobs j JOIN batches b ON b.job_id = j.id, generate_series(0, 9999) AS g
         WHERE j.id = $1 ORDER BY g",
        vec![job.into()],
    )
    .await;
    let expected: Vec<String> = query(
        &app,
        "SELECT error FROM record_logs WHERE job_id = $1 ORDER BY id",
        vec![job.into()],
    )
    .await
    .iter()
    .map(|r| r.try_get::<String>("", "error").unwrap())
    .collect();
    assert_eq!(expected.len(), 10_000);

    let rows = parse_csv(&download(&app, &key, job, "", "text/csv").await);
    assert_eq!(rows.len(), 10_001);
    let errors: Vec<&String> = rows[1..].iter().map(|r| &r[5]).collect();
    assert_eq!(
        errors,
        expected.iter().collect::<Vec<_>>(),
        "each row once, in order"
    );

    let ndjson = download(&app, &key, job, "?record_seq=2", "application/x-ndjson").await;
    let seqs: BTreeSet<i64> = ndjson
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["record_seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ndjson.lines().count(), 10_000 / 7 + 1);
    assert_eq!(seqs, BTreeSet::from([2]));
}

#[tokio::test]
async fn dead_letters_page_by_created_at_with_payloads() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = new_job(&app, &key, 25, 10).await;
    let path = format!("/api/v1/jobs/{job}/dead-letters");
    assert_eq!(
        get_json(&app, &key, &path).await,
        json!({"data": [], "next_cursor": null})
    );

    // Seven dead letters; five share one created_at, so the id breaks the tie.
    exec(
        &app,
        "INSERT INTO dead_letters (id, job_id, tenant_id, batch_id, record_seq, error, attempts, created_at)
         SELECT gen_random_uuid(), r.job_id, r.tenant_id, b.id, r.seq, 'gave up on ' || r.seq, 1 + r.seq::int % 3,
                CASE WHEN r.seq <= 5 THEN timestamptz '2026-01-01 00:00:00.123456+00'
                     ELSE timestamptz '2026-01-02 00:00:00+00' + r.seq * interval '1 hour' END
         FROM job_records r
         JOIN batches b ON b.job_id = r.job_id AND r.seq BETWEEN b.first_record_seq AND b.last_record_seq
         WHERE r.job_id = $1 AND (r.seq <= 5 OR r.seq IN (20, 25))",
        vec![job.into()],
    )
    .await;
    exec(
        &app,
        "UPDATE dead_letters SET requeued_at = now(), requeue_count = 1 WHERE job_id = $1 AND record_seq = 3",
        vec![job.into()],
    )
    .await;
    let expected: Vec<String> = query(
        &app,
        "SELECT id FROM dead_letters WHERE job_id = $1 ORDER BY created_at, id",
        vec![job.into()],
    )
    .await
    .iter()
    .map(|r| r.try_get::<Uuid>("", "id").unwrap().to_string())
    .collect();
    assert_eq!(expected.len(), 7);

    let pages = walk(&app, &key, &format!("{path}?limit=2")).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
    let all: Vec<Value> = pages.into_iter().flatten().collect();
    let ids: Vec<&str> = all.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids, expected,
        "every dead letter once, by created_at then id"
    );
    let batches = batch_ids(&app, job).await;
    for d in &all {
        let seq = d["record_seq"].as_i64().unwrap();
        assert_eq!(
            d["payload"],
            json!({"id": seq, "email": format!("u{seq}@example.com")})
        );
        assert_eq!(d["record_key"], seq.to_string());
        assert_eq!(d["error"], format!("gave up on {seq}"));
        assert_eq!(d["attempts"], 1 + seq % 3);
        assert_eq!(
            d["batch_id"],
            batches[((seq - 1) / 10) as usize].to_string()
        );
        assert!(d["created_at"].is_string());
        if seq == 3 {
            assert!(d["requeued_at"].is_string(), "{d}");
            assert_eq!(d["requeue_count"], 1);
        } else {
            assert!(d["requeued_at"].is_null(), "{d}");
            assert_eq!(d["requeue_count"], 0);
        }
    }
    // The two with later timestamps come after the five that share one, 20 before 25.
    assert_eq!(all[5]["record_seq"], 20);
    assert_eq!(all[6]["record_seq"], 25);

    let open = walk(
        &app,
        &key,
        &format!("{path}?include_requeued=false&limit=3"),
    )
    .await;
    let open: Vec<i64> = open
        .into_iter()
        .flatten()
        .map(|d| d["record_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(open.len(), 6);
    assert!(!open.contains(&3));
    let res = get(&app, &key, &format!("{path}?include_requeued=maybe")).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "include_requeued=maybe").await;
    let res = get(&app, &key, &format!("{path}?limit=-1")).await;
    expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "limit=-1").await;
}

#[tokio::test]
async fn stats_sum_the_tenants_jobs() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant_with_key("acme").await;
    let (_, b) = app.tenant_with_key("globex").await;

    let zero = get_json(&app, &a, "/api/v1/stats").await;
    let all_states = [
        "awaiting_upload",
        "queued",
        "running",
        "completed",
        "completed_with_errors",
        "failed",
        "cancelling",
        "cancelled",
    ];
    assert_eq!(
        zero["jobs"],
        Value::Object(
            all_states
                .iter()
                .map(|s| (s.to_string(), json!(0)))
                .collect()
        )
    );
    assert_eq!(
        zero["records"],
        json!({"total": 0, "succeeded": 0, "dead_lettered": 0, "cancelled": 0, "pending": 0, "retrying": 0})
    );
    assert!(
        zero["generated_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .is_ok()
    );

    let done = new_job(&app, &a, 25, 10).await;
    let busy = new_job(&app, &a, 10, 10).await;
    let waiting = new_job(&app, &a, 3, 10).await;
    let done_too = new_job(&app, &a, 4, 10).await;
    let set =
        |id: Uuid, status: &str, s: i64, d: i64, c: i64, r: i64| {
            let app = &app;
            let status = status.to_owned();
            async move {
                exec(
                app,
                "UPDATE jobs SET status = $2, succeeded_records = $3, dead_lettered_records = $4,
                        cancelled_records = $5, retrying_records = $6 WHERE id = $1",
                vec![id.into(), status.into(), s.into(), d.into(), c.into(), r.into()],
            )
            .await
            }
        };
    set(done, "completed", 25, 0, 0, 0).await;
    set(busy, "running", 4, 1, 0, 2).await;
    set(waiting, "queued", 0, 0, 0, 0).await;
    set(done_too, "completed_with_errors", 1, 2, 1, 0).await;
    // B's job must not count for A.
    let other = new_job(&app, &b, 9, 10).await;
    set(other, "running", 5, 0, 0, 3).await;

    let stats = get_json(&app, &a, "/api/v1/stats").await;
    let mut jobs: serde_json::Map<String, Value> = all_states
        .iter()
        .map(|s| (s.to_string(), json!(0)))
        .collect();
    jobs.insert("completed".into(), json!(1));
    jobs.insert("running".into(), json!(1));
    jobs.insert("queued".into(), json!(1));
    jobs.insert("completed_with_errors".into(), json!(1));
    assert_eq!(stats["jobs"], Value::Object(jobs));
    assert_eq!(
        stats["records"],
        json!({"total": 42, "succeeded": 30, "dead_lettered": 3, "cancelled": 1, "pending": 8, "retrying": 2})
    );

    let theirs = get_json(&app, &b, "/api/v1/stats").await;
    assert_eq!(theirs["jobs"]["running"], 1);
    assert_eq!(theirs["jobs"]["completed"], 0);
    assert_eq!(
        theirs["records"],
        json!({"total": 9, "succeeded": 5, "dead_lettered": 0, "cancelled": 0, "pending": 4, "retrying": 3})
    );
    let res = app
        .request(Method::GET, "/api/v1/stats")
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::UNAUTHORIZED, "stats without a key").await;
}

#[tokio::test]
async fn retry_policies_read_replace_and_apply_to_new_jobs() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant_with_key("acme").await;
    let (_, b) = app.tenant_with_key("globex").await;
    let path = "/api/v1/retry-policies";
    let default = json!({"max_attempts": 5, "initial_interval_ms": 500, "multiplier": 2.0,
                         "max_interval_ms": 60000, "jitter": 0.2});
    assert_eq!(get_json(&app, &a, path).await, default);

    let put = |key: &str, body: Value| app.tenant(key, Method::PUT, path).json(&body).send();
    let res = put(
        &a,
        json!({"max_attempts": 3, "initial_interval_ms": 100, "jitter": 0.0}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let stored = json!({"max_attempts": 3, "initial_interval_ms": 100, "multiplier": 2.0,
                        "max_interval_ms": 60000, "jitter": 0.0});
    assert_eq!(res.json::<Value>().await.unwrap(), stored);
    assert_eq!(get_json(&app, &a, path).await, stored);
    assert_eq!(get_json(&app, &b, path).await, default, "B keeps its own");

    // New jobs without `retry` take it; a job's own `retry` still wins.
    let job = app.create_job(&a, &inline_job(2)).await;
    assert_eq!(job["retry"], stored);
    let mut body = inline_job(2);
    body["retry"] = json!({"max_attempts": 9});
    let job = app.create_job(&a, &body).await;
    assert_eq!(job["retry"]["max_attempts"], 9);
    assert_eq!(app.create_job(&b, &inline_job(1)).await["retry"], default);

    // Bad values are 422s naming each field, and change nothing.
    let res = put(
        &a,
        json!({"max_attempts": 0, "jitter": 2.0, "multiplier": 0.5}),
    )
    .await
    .unwrap();
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "bad policy").await;
    assert_eq!(
        error_fields(&problem),
        ["max_attempts", "multiplier", "jitter"]
    );
    let res = put(
        &a,
        json!({"initial_interval_ms": 5000, "max_interval_ms": 1000}),
    )
    .await
    .unwrap();
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "max < initial").await;
    assert_eq!(error_fields(&problem), ["max_interval_ms"]);
    let res = put(&a, json!({"max_attempts": "five"})).await.unwrap();
    expect_problem(res, StatusCode::BAD_REQUEST, "a string attempt count").await;
    let res = app
        .tenant(&a, Method::PUT, path)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("max_attempts=3")
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "not JSON").await;
    assert_eq!(get_json(&app, &a, path).await, stored);

    // `{}` restores the contract's defaults (PUT replaces the whole policy).
    let res = put(&a, json!({})).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(get_json(&app, &a, path).await, default);
    let res = app.request(Method::GET, path).send().await.unwrap();
    expect_problem(res, StatusCode::UNAUTHORIZED, "no key").await;
}

#[tokio::test]
async fn another_tenants_job_reads_are_not_found() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant_with_key("acme").await;
    let (_, b) = app.tenant_with_key("globex").await;
    let job = new_job(&app, &a, 12, 5).await;
    seed_logs(&app, job).await;
    exec(
        &app,
        "INSERT INTO dead_letters (id, job_id, tenant_id, batch_id, record_seq, error, attempts)
         SELECT gen_random_uuid(), job_id, tenant_id, batch_id, record_seq, 'x', 1
         FROM record_logs WHERE job_id = $1 AND status = 'dead_lettered'",
        vec![job.into()],
    )
    .await;

    for suffix in ["batches", "logs", "dead-letters", "retry-status"] {
        let path = format!("/api/v1/jobs/{job}/{suffix}");
        let own = get_json(&app, &a, &path).await;
        assert!(own.is_object(), "{suffix}: A reads its own");
        let problem = expect_problem(
            get(&app, &b, &path).await,
            StatusCode::NOT_FOUND,
            &format!("B reads A's {suffix}"),
        )
        .await;
        assert!(!problem.to_string().contains("forbidden"));
        let res = app.request(Method::GET, &path).send().await.unwrap();
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
        expect_problem(
            res,
            StatusCode::UNAUTHORIZED,
            &format!("{suffix} without a key"),
        )
        .await;
    }
    for accept in ["text/csv", "application/x-ndjson"] {
        let res = app
            .tenant(&b, Method::GET, &format!("/api/v1/jobs/{job}/logs"))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .unwrap();
        expect_problem(
            res,
            StatusCode::NOT_FOUND,
            &format!("B downloads A's log ({accept})"),
        )
        .await;
    }
    // A's filters never reach B's rows either: B's own job has none of A's.
    let b_job = new_job(&app, &b, 2, 5).await;
    let logs = get_json(&app, &b, &format!("/api/v1/jobs/{b_job}/logs")).await;
    assert_eq!(logs["data"], json!([]));
}

#[tokio::test]
async fn the_openapi_document_describes_the_read_side() {
    let app = TestApp::spawn().await;
    let doc: Value = send_json(app.request(Method::GET, "/api/v1/openapi.json")).await;
    for (path, method) in [
        ("/api/v1/jobs/{id}/batches", "get"),
        ("/api/v1/jobs/{id}/retry-status", "get"),
        ("/api/v1/jobs/{id}/logs", "get"),
        ("/api/v1/jobs/{id}/dead-letters", "get"),
        ("/api/v1/stats", "get"),
        ("/api/v1/retry-policies", "get"),
        ("/api/v1/retry-policies", "put"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is missing");
        assert_eq!(op["security"], json!([{"api_key": []}]), "{method} {path}");
        assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
    }
    let logs = &doc["paths"]["/api/v1/jobs/{id}/logs"]["get"]["responses"]["200"]["content"];
    for media in ["application/json", "text/csv", "application/x-ndjson"] {
        assert!(logs[media].is_object(), "logs 200 lacks {media}");
    }
}

/// `GET /api/v1/jobs/{id}` is served from a short per-replica cache: what a worker or
/// another replica changed shows within `JOB_VIEW_CACHE_TTL`, and what the caller changed
/// through this replica shows at once.
#[tokio::test]
async fn a_job_read_is_at_most_a_moment_old_and_never_older_than_the_callers_own_write() {
    let app = TestApp::spawn_with(|s| {
        s.http.job_view_ttl = std::time::Duration::from_millis(300);
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(
            &key,
            &json!({"source": {"type": "upload"},
                    "destination": {"type": "http", "url": "https://example.com/in"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let read = |app: &TestApp| {
        let req = app.tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}"));
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(
                res.headers()[header::CONTENT_TYPE].to_str().unwrap(),
                "application/json"
            );
            res.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(read(&app).await["name"], job["name"]);

    // A change behind the api's back (as a worker's progress is) shows after the TTL.
    exec(
        &app,
        "UPDATE jobs SET name = 'renamed in the database' WHERE id = $1",
        vec![id.parse::<Uuid>().unwrap().into()],
    )
    .await;
    assert_eq!(
        read(&app).await["name"],
        job["name"],
        "served from the cache"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(read(&app).await["name"], "renamed in the database");

    // The caller's own write through this api shows at once.
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(read(&app).await["status"], "cancelled");

    // Another tenant still gets a 404, cache or not.
    let (_, other) = app.tenant_with_key("globex").await;
    let res = app
        .tenant(&other, Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::NOT_FOUND, "another tenant's job").await;
}

/// A polled job's view is read again in the background before it expires, so polls are
/// served from memory and still follow the job: a change made behind the cache's back
/// (another replica, a worker) shows within the TTL without a request waiting on it. The
/// refresher stores nothing under another tenant's key.
#[tokio::test]
async fn polled_job_views_are_refreshed_in_the_background() {
    use freight_api::job_views::{JobViews, Lookup};
    use std::time::{Duration, Instant};

    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (_, key) = app.create_key(tenant, json!({})).await;
    let job = new_job(&app, &key, 3, 10).await;
    // The cache's keys are typed: a tenant's id and a job's.
    let (tenant, job_id, stranger) = (
        entity::TenantId::from(tenant),
        entity::JobId::from(job),
        entity::TenantId::new(),
    );

    let ttl = Duration::from_millis(600);
    let views = JobViews::new(ttl);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        views
            .clone()
            .refresh_in_background(app.db.clone(), stop.clone()),
    );
    for owner in [tenant, stranger] {
        let Lookup::Miss(ticket) = views.lookup(owner, job_id) else {
            panic!("an empty cache")
        };
        views.store(ticket, bytes::Bytes::from_static(b"first read"), false);
    }
    exec(
        &app,
        "UPDATE jobs SET name = 'renamed elsewhere' WHERE id = $1",
        vec![job.into()],
    )
    .await;

    let served = |owner| match views.lookup(owner, job_id) {
        Lookup::Hit(body) => Some(body),
        Lookup::Miss(_) => None,
    };
    tokio::time::sleep(ttl * 3 / 4).await;
    let mut fresh = None;
    let deadline = Instant::now() + ttl / 4;
    while Instant::now() < deadline {
        // The stranger's poll hands its entry to the refresher too.
        served(stranger).expect("served from memory until the TTL");
        let body = served(tenant).expect("served from memory until the TTL");
        if &body[..] != b"first read" {
            fresh = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh: Value =
        serde_json::from_slice(&fresh.expect("refreshed before the TTL ran out")).unwrap();
    assert_eq!(fresh["id"], job.to_string());
    assert_eq!(fresh["name"], "renamed elsewhere");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        served(stranger).as_deref(),
        Some(&b"first read"[..]),
        "another tenant's entry is not filled with this tenant's job"
    );
    stop.cancel();
}
