//! `upload` jobs: records arrive in several NDJSON or JSON-array calls, each all or
//! nothing, then `start` closes the upload and plans the batches.

use std::time::Duration;

use freight_tests::{
    TestApp,
    engine::{assert_invariants, id_of},
    inline_job,
    sink::Sink,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::intake_support::{
    NDJSON, error_fields, expect_problem, get_job, is_started, rows, start, stored_records, upload,
    upload_job, upload_ok,
};

/// The `ref` of record `n`: a string, a number for every tenth record, and missing for
/// every thirteenth.
fn reference(n: i64) -> Option<Value> {
    match n {
        n if n % 13 == 0 => None,
        n if n % 10 == 0 => Some(json!(n * 1000)),
        n => Some(json!(format!("r-{n}"))),
    }
}

/// Record number `n` (1-based, across every upload of the job).
fn record(n: i64) -> Value {
    let mut r = json!({"n": n, "email": format!("user{n}@example.com"), "tags": ["a", {"b": n}]});
    if let Some(v) = reference(n) {
        r["ref"] = v;
    }
    r
}

/// What `job_records.record_key` must hold for record `n` (the job's record_key is `ref`).
fn expected_key(n: i64) -> Option<String> {
    reference(n).map(|v| match v {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

fn line(n: i64) -> String {
    record(n).to_string()
}

#[tokio::test]
async fn uploads_accumulate_and_start_plans_every_record_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let batch_size = 97;
    let job = app
        .create_job(&key, &upload_job(batch_size, Some("ref")))
        .await;
    assert_eq!(job["status"], "awaiting_upload");
    assert_eq!(job["source"]["type"], "upload");
    assert_eq!(job["progress"]["total"], 0);
    assert_eq!(job["batches"]["total"], 0);
    let id = job["id"].as_str().unwrap().to_owned();

    // 7 records: a blank line, a white-space line, a CRLF line, no final newline.
    let body = format!(
        "{}\n{}\n\n{}\r\n   \n{}\n{}\n{}\n{}",
        line(1),
        line(2),
        line(3),
        line(4),
        line(5),
        line(6),
        line(7)
    );
    assert_eq!(upload_ok(&app, &key, &id, NDJSON, body).await, (7, 7));
    // 1200 records, with a trailing newline.
    let body: String = (8..=1207).map(|n| line(n) + "\n").collect();
    assert_eq!(upload_ok(&app, &key, &id, NDJSON, body).await, (1200, 1207));
    // 3 records, the media type with a parameter.
    let body = format!("{}\n{}\n{}\n", line(1208), line(1209), line(1210));
    assert_eq!(
        upload_ok(&app, &key, &id, "application/x-ndjson; charset=utf-8", body).await,
        (3, 1210)
    );
    // 5 records as a JSON array.
    let array: Vec<Value> = (1211..=1215).map(record).collect();
    assert_eq!(
        upload_ok(
            &app,
            &key,
            &id,
            "application/json",
            serde_json::to_vec(&array).unwrap()
        )
        .await,
        (5, 1215)
    );
    let total = 1215;

    let job = get_job(&app, &key, &id).await;
    assert_eq!(
        job["status"], "awaiting_upload",
        "uploads alone do not start a job"
    );
    assert_eq!(job["progress"]["total"], total);

    let res = start(&app, &key, &id).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["id"], id.as_str());
    assert!(is_started(&job["status"]), "{job}");
    let p = &job["progress"];
    assert_eq!(p["total"], total);
    assert_eq!(p["pending"], total);
    assert_eq!(
        (
            p["succeeded"].as_i64(),
            p["dead_lettered"].as_i64(),
            p["cancelled"].as_i64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let expected_batches = (total + batch_size - 1) / batch_size;
    assert_eq!(job["batches"]["total"], expected_batches);

    // Records are numbered 1..=total in upload order, each once, with its record_key.
    let stored = rows(
        &app,
        &format!("SELECT seq, record_key, (payload->>'n')::bigint AS n FROM job_records WHERE job_id = '{id}' ORDER BY seq"),
    )
    .await;
    assert_eq!(stored.len() as i64, total);
    for (i, row) in stored.iter().enumerate() {
        let seq: i64 = row.try_get("", "seq").unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        let record_key: Option<String> = row.try_get("", "record_key").unwrap();
        assert_eq!(
            seq,
            i as i64 + 1,
            "sequence numbers have a gap or a duplicate"
        );
        assert_eq!(n, seq, "record {n} was stored as seq {seq}");
        assert_eq!(record_key, expected_key(n), "record_key of record {n}");
    }

    // The batches cut 1..=total into contiguous ranges, each record in exactly one.
    let planned = rows(
        &app,
        &format!(
            "SELECT seq::bigint AS seq, first_record_seq, last_record_seq, record_count::bigint AS record_count, status
             FROM batches WHERE job_id = '{id}' ORDER BY seq"
        ),
    )
    .await;
    assert_eq!(planned.len() as i64, expected_batches);
    let mut next = 1i64;
    for (i, b) in planned.iter().enumerate() {
        let seq: i64 = b.try_get("", "seq").unwrap();
        let first: i64 = b.try_get("", "first_record_seq").unwrap();
        let last: i64 = b.try_get("", "last_record_seq").unwrap();
        let count: i64 = b.try_get("", "record_count").unwrap();
        let status: String = b.try_get("", "status").unwrap();
        assert_eq!(seq, i as i64 + 1);
        assert_eq!(
            first, next,
            "batch {seq} does not start right after the previous one"
        );
        assert_eq!(count, last - first + 1);
        assert!(
            (1..=batch_size).contains(&count),
            "batch {seq} holds {count} records"
        );
        assert!(
            ["pending", "queued"].contains(&status.as_str()),
            "batch {seq} is {status} with no worker running"
        );
        next = last + 1;
    }
    assert_eq!(next, total + 1, "the batches do not end at the last record");
}

#[tokio::test]
async fn a_refused_upload_keeps_none_of_its_records() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app.create_job(&key, &upload_job(100, Some("ref"))).await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(
        upload_ok(
            &app,
            &key,
            &id,
            NDJSON,
            format!("{}\n{}\n{}\n", line(1), line(2), line(3))
        )
        .await,
        (3, 3)
    );

    // An unreadable line: 400.
    let body = format!("{}\n{}\n{{oops}}\n{}\n", line(4), line(5), line(6));
    let problem = expect_problem(
        upload(&app, &key, &id, NDJSON, body).await,
        StatusCode::BAD_REQUEST,
        "bad line",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("line 3"),
        "the 400 names the line: {problem}"
    );
    // An unreadable line after more than one insert's worth of good lines.
    let mut body: String = (4..=5104).map(|n| line(n) + "\n").collect();
    body.push_str("{\"n\": 5105,\n");
    expect_problem(
        upload(&app, &key, &id, NDJSON, body).await,
        StatusCode::BAD_REQUEST,
        "bad line after 5101",
    )
    .await;
    // Invalid UTF-8 in a line.
    let mut body = format!("{}\n", line(4)).into_bytes();
    body.extend_from_slice(b"{\"name\": \"\xff\xfe\"}\n");
    expect_problem(
        upload(&app, &key, &id, NDJSON, body).await,
        StatusCode::BAD_REQUEST,
        "invalid UTF-8",
    )
    .await;

    // A line that is JSON but not an object, or holds a NUL: 422 naming the record.
    for (what, bad, field) in [
        ("a number", "42".to_owned(), "records[1]"),
        ("an array", "[1, 2]".to_owned(), "records[1]"),
        (
            "a NUL",
            r#"{"n": 5, "note": "a\u0000b"}"#.to_owned(),
            "records[1]",
        ),
    ] {
        let body = format!("{}\n{bad}\n{}\n", line(4), line(6));
        let problem = expect_problem(
            upload(&app, &key, &id, NDJSON, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            what,
        )
        .await;
        assert_eq!(error_fields(&problem), [field], "{what}: {problem}");
    }
    // The same in a JSON array, and unreadable arrays.
    let array = format!("[{}, {}, \"three\"]", line(4), line(5));
    let problem = expect_problem(
        upload(&app, &key, &id, "application/json", array).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "array",
    )
    .await;
    assert_eq!(error_fields(&problem), ["records[2]"]);
    for (what, body) in [
        ("truncated array", format!("[{}, ", line(4))),
        ("an object, not an array", line(4)),
    ] {
        expect_problem(
            upload(&app, &key, &id, "application/json", body).await,
            StatusCode::BAD_REQUEST,
            what,
        )
        .await;
    }
    // Other media types: 415.
    for ct in ["text/csv", "text/plain", "application/octet-stream"] {
        let res = upload(&app, &key, &id, ct, "n,email\n4,a@example.com\n").await;
        expect_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, ct).await;
    }

    // After all that, the job still holds exactly its first three records.
    assert_eq!(get_job(&app, &key, &id).await["progress"]["total"], 3);
    assert_eq!(stored_records(&app, &id).await, 3);
    // And the next good upload continues at 4.
    assert_eq!(upload_ok(&app, &key, &id, NDJSON, line(4)).await, (1, 4));
    let seqs = rows(&app, &format!("SELECT seq, (payload->>'n')::bigint AS n FROM job_records WHERE job_id = '{id}' ORDER BY seq")).await;
    let pairs: Vec<(i64, i64)> = seqs
        .iter()
        .map(|r| (r.try_get("", "seq").unwrap(), r.try_get("", "n").unwrap()))
        .collect();
    assert_eq!(pairs, [(1, 1), (2, 2), (3, 3), (4, 4)]);
}

#[tokio::test]
async fn uploads_and_starts_only_while_awaiting_upload() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;

    // Starting with no records is refused, and the job can still receive them.
    let empty = app.create_job(&key, &upload_job(10, None)).await;
    let empty_id = empty["id"].as_str().unwrap();
    expect_problem(
        start(&app, &key, empty_id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "start with no records",
    )
    .await;
    assert_eq!(
        get_job(&app, &key, empty_id).await["status"],
        "awaiting_upload"
    );
    // An upload of only blank lines adds nothing, so start is still refused.
    let (accepted, total) = upload_ok(&app, &key, empty_id, NDJSON, "\n\n  \n").await;
    assert_eq!((accepted, total), (0, 0));
    expect_problem(
        start(&app, &key, empty_id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "start after a blank upload",
    )
    .await;

    let job = app.create_job(&key, &upload_job(10, None)).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        upload_ok(
            &app,
            &key,
            id,
            NDJSON,
            format!("{}\n{}\n", line(1), line(2))
        )
        .await,
        (2, 2)
    );
    assert_eq!(start(&app, &key, id).await.status(), StatusCode::ACCEPTED);
    // Once started: no second start, no more records.
    expect_problem(
        start(&app, &key, id).await,
        StatusCode::CONFLICT,
        "second start",
    )
    .await;
    expect_problem(
        upload(&app, &key, id, NDJSON, line(3)).await,
        StatusCode::CONFLICT,
        "ndjson after start",
    )
    .await;
    let array = format!("[{}]", line(3));
    expect_problem(
        upload(&app, &key, id, "application/json", array).await,
        StatusCode::CONFLICT,
        "array after start",
    )
    .await;
    let job = get_job(&app, &key, id).await;
    assert!(is_started(&job["status"]), "{job}");
    assert_eq!(job["progress"]["total"], 2);
    assert_eq!(stored_records(&app, id).await, 2);
    assert_eq!(
        job["batches"]["total"], 1,
        "a refused second start must not plan batches again"
    );

    // An inline job never takes uploads, nor a start.
    let inline = app.create_job(&key, &inline_job(2)).await;
    let inline_id = inline["id"].as_str().unwrap();
    expect_problem(
        upload(&app, &key, inline_id, NDJSON, line(3)).await,
        StatusCode::CONFLICT,
        "upload to inline",
    )
    .await;
    expect_problem(
        start(&app, &key, inline_id).await,
        StatusCode::CONFLICT,
        "start an inline job",
    )
    .await;
    assert_eq!(stored_records(&app, inline_id).await, 2);
}

#[tokio::test]
async fn record_key_holds_the_text_of_the_named_field() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &upload_job(10, Some("customer")))
        .await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["record_key"], "customer");
    let body = [
        json!({"customer": "C-001", "x": 1}),
        json!({"customer": 17}),
        json!({"customer": true}),
        json!({"customer": "naïve ✓"}),
        json!({"other": "no customer here"}),
        json!({"customer": null}),
        json!({"customer": {"nested": 1}}),
    ]
    .iter()
    .map(|r| r.to_string() + "\n")
    .collect::<String>();
    assert_eq!(upload_ok(&app, &key, id, NDJSON, body).await, (7, 7));
    let keys: Vec<Option<String>> = rows(
        &app,
        &format!("SELECT record_key FROM job_records WHERE job_id = '{id}' ORDER BY seq"),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "record_key").unwrap())
    .collect();
    assert_eq!(
        keys,
        [
            Some("C-001".to_owned()),
            Some("17".to_owned()),
            Some("true".to_owned()),
            Some("naïve ✓".to_owned()),
            None,
            None,
            // A non-scalar key is its JSON text as sent.
            Some(r#"{"nested":1}"#.to_owned()),
        ]
    );
    // Inline jobs extract it the same way.
    let mut inline = inline_job(3);
    inline["record_key"] = json!("email");
    let job = app.create_job(&key, &inline).await;
    let keys: Vec<Option<String>> = rows(
        &app,
        &format!(
            "SELECT record_key FROM job_records WHERE job_id = '{}' ORDER BY seq",
            job["id"].as_str().unwrap()
        ),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "record_key").unwrap())
    .collect();
    assert_eq!(
        keys,
        [
            Some("u1@example.com".to_owned()),
            Some("u2@example.com".to_owned()),
            Some("u3@example.com".to_owned())
        ]
    );
}

#[tokio::test]
async fn ndjson_records_are_stored_as_sent_with_the_key_postgres_would_extract() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app.create_job(&key, &upload_job(10, Some("k"))).await;
    let id = job["id"].as_str().unwrap();
    // Lines whose text COPY's format would misread unescaped (tabs, backslashes, a CR
    // inside the line) and keys whose text is not their value's serialisation.
    let lines = [
        "{\"k\":\t\"tab\\tand\\\\backslash\",\t\"n\": 1}",
        r#"{"k": 1.50, "s": "\u00e9\n"}"#,
        r#"{"k": 1, "k": "last wins"}"#,
        "{\"k\": {\"a\" :\r [1, 2]}}",
        r#"{"k": null, "x": "\\N"}"#,
        r#"{"x": "\\."}"#,
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(upload_ok(&app, &key, id, NDJSON, body).await, (6, 6));
    let stored = rows(
        &app,
        &format!(
            "SELECT payload::text AS text, record_key, payload ->> 'k' AS pg_key \
             FROM job_records WHERE job_id = '{id}' ORDER BY seq"
        ),
    )
    .await;
    for (row, sent) in stored.iter().zip(lines) {
        let text: String = row.try_get("", "text").unwrap();
        assert_eq!(text, sent, "the payload is the line as sent");
        let ours: Option<String> = row.try_get("", "record_key").unwrap();
        let pg: Option<String> = row.try_get("", "pg_key").unwrap();
        assert_eq!(ours, pg, "record_key of {sent}");
    }
    assert_eq!(stored.len(), lines.len());
}

/// Uploads to one job run at once: none waits for another's `COPY`, each is still all
/// or nothing, and every accepted record is numbered exactly once, in its call's order.
#[tokio::test]
async fn concurrent_uploads_to_one_job_number_every_record_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let batch_size = 1000;
    let job = app
        .create_job(&key, &upload_job(batch_size, Some("ref")))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();

    // Four good calls of 12,000 records (three chunks each, so their numbering can
    // interleave) and one that fails at its 11,000th line, all at once.
    let per_call = 12_000i64;
    let calls = 4i64;
    let good = (0..calls).map(|c| {
        let body: String = (c * per_call + 1..=(c + 1) * per_call)
            .map(|n| line(n) + "\n")
            .collect();
        upload(&app, &key, &id, NDJSON, body)
    });
    let mut bad: String = (1_000_001..=1_010_999).map(|n| line(n) + "\n").collect();
    bad.push_str("{oops}\n");
    let (good, bad) = tokio::join!(
        futures::future::join_all(good),
        upload(&app, &key, &id, NDJSON, bad)
    );
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let mut totals = Vec::new();
    for res in good {
        let status = res.status();
        let v: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["accepted"], per_call, "{v}");
        totals.push(v["total"].as_i64().unwrap());
    }
    // Each call's total counts itself and the calls committed before it.
    totals.sort();
    assert_eq!(
        totals,
        (1..=calls).map(|c| c * per_call).collect::<Vec<_>>(),
        "the totals the calls reported"
    );
    let total = calls * per_call;
    assert_eq!(get_job(&app, &key, &id).await["progress"]["total"], total);

    // Every good record once, none of the failed call's, and within a call the numbers
    // follow the lines.
    let stored = rows(
        &app,
        &format!("SELECT seq, (payload->>'n')::bigint AS n FROM job_records WHERE job_id = '{id}' ORDER BY n"),
    )
    .await;
    assert_eq!(stored.len() as i64, total);
    let mut last_seq = 0i64;
    for (i, row) in stored.iter().enumerate() {
        let (seq, n): (i64, i64) = (
            row.try_get("", "seq").unwrap(),
            row.try_get("", "n").unwrap(),
        );
        assert_eq!(
            n,
            i as i64 + 1,
            "record {} is missing or stored twice",
            i + 1
        );
        if (n - 1) % per_call != 0 {
            assert!(
                seq > last_seq,
                "record {n} is numbered {seq}, before the line above it ({last_seq})"
            );
        }
        last_seq = seq;
    }

    // The plan cuts whatever numbers were used (the failed call's may be unused) into
    // batches of exactly `batch_size` records, each record in one batch.
    let res = start(&app, &key, &id).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["progress"]["total"], total);
    assert_eq!(job["batches"]["total"], total / batch_size);
    let planned = rows(
        &app,
        &format!(
            "SELECT b.first_record_seq, b.last_record_seq, b.record_count::bigint AS record_count,
                    (SELECT count(*) FROM job_records r WHERE r.job_id = b.job_id
                       AND r.seq BETWEEN b.first_record_seq AND b.last_record_seq) AS held
             FROM batches b WHERE b.job_id = '{id}' ORDER BY b.seq"
        ),
    )
    .await;
    let mut after = 0i64;
    for b in &planned {
        let (first, last): (i64, i64) = (
            b.try_get("", "first_record_seq").unwrap(),
            b.try_get("", "last_record_seq").unwrap(),
        );
        let (count, held): (i64, i64) = (
            b.try_get("", "record_count").unwrap(),
            b.try_get("", "held").unwrap(),
        );
        assert!(first > after, "batches overlap at {first}");
        assert_eq!(
            (count, held),
            (batch_size, batch_size),
            "batch {first}..={last}"
        );
        after = last;
    }
}

/// Numbers left unused, as an upload that failed while another reserved after it
/// leaves them, upset neither the plan nor the delivery: batches still hold
/// `batch_size` records, and every record reaches the destination once, under the
/// idempotency key of its own number.
#[tokio::test]
async fn a_job_with_gaps_in_its_numbers_delivers_every_record_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let sink = Sink::accepting().await;
    let mut spec = upload_job(10, Some("ref"));
    spec["destination"]["url"] = json!(sink.url());
    let job = app.create_job(&key, &spec).await;
    let (job_id, id) = id_of(&job);

    let body: String = (1..=25).map(|n| line(n) + "\n").collect();
    assert_eq!(upload_ok(&app, &key, &id, NDJSON, body).await, (25, 25));
    // Numbers 26..=32 handed out to an upload that never committed.
    rows(
        &app,
        &format!("UPDATE jobs SET last_reserved_seq = last_reserved_seq + 7 WHERE id = '{id}' RETURNING id"),
    )
    .await;
    let body: String = (26..=55).map(|n| line(n) + "\n").collect();
    assert_eq!(upload_ok(&app, &key, &id, NDJSON, body).await, (30, 55));
    let seq_of = |n: i64| if n <= 25 { n } else { n + 7 };

    assert_eq!(start(&app, &key, &id).await.status(), StatusCode::ACCEPTED);
    let planned: Vec<(i64, i64, i64)> = rows(
        &app,
        &format!("SELECT first_record_seq, last_record_seq, record_count::bigint AS c FROM batches WHERE job_id = '{id}' ORDER BY seq"),
    )
    .await
    .iter()
    .map(|b| {
        (
            b.try_get("", "first_record_seq").unwrap(),
            b.try_get("", "last_record_seq").unwrap(),
            b.try_get("", "c").unwrap(),
        )
    })
    .collect();
    assert_eq!(
        planned,
        [
            (1, 10, 10),
            (11, 20, 10),
            (21, 37, 10),
            (38, 47, 10),
            (48, 57, 10),
            (58, 62, 5)
        ]
    );

    let _worker = app.start_worker().await;
    let done = app.wait_finished(&key, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["succeeded"], 55);
    let mut keys: Vec<(String, i64)> = sink
        .received()
        .iter()
        .map(|r| (r.idempotency_key.clone(), r.body["n"].as_i64().unwrap()))
        .collect();
    keys.sort_by_key(|(_, n)| *n);
    keys.dedup();
    let expected: Vec<(String, i64)> = (1..=55)
        .map(|n| (format!("{id}:{}", seq_of(n)), n))
        .collect();
    assert_eq!(keys, expected);
    assert_invariants(&app.db, job_id).await;
}
