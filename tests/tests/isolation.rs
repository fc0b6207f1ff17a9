//! Tenants never see or touch each other's jobs or keys: another tenant's job is simply
//! not found (404, never 403), and lists hold only the caller's own jobs.

use std::collections::BTreeSet;

use freight_tests::{TestApp, inline_job, send_json};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::intake_support::{
    NDJSON, expect_problem, get_job, start, stored_records, upload, upload_job, upload_ok,
};

async fn list_ids(app: &TestApp, key: &str, query: &str) -> BTreeSet<String> {
    let res = app
        .tenant(key, Method::GET, &format!("/api/v1/jobs{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn another_tenants_job_is_not_found() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant_with_key("acme").await;
    let (_, b) = app.tenant_with_key("globex").await;
    let a_upload = app.create_job(&a, &upload_job(10, None)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_inline = app.create_job(&a, &inline_job(3)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_job = app.create_job(&b, &inline_job(2)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        upload_ok(&app, &a, &a_upload, NDJSON, "{\"id\":1}\n{\"id\":2}\n").await,
        (2, 2)
    );

    let a_inline_status = get_job(&app, &a, &a_inline).await["status"].clone();
    for id in [&a_upload, &a_inline] {
        let res = app
            .tenant(&b, Method::GET, &format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, StatusCode::NOT_FOUND, "B reads A's job").await;
        let res = upload(&app, &b, id, NDJSON, "{\"id\":99}\n").await;
        expect_problem(res, StatusCode::NOT_FOUND, "B uploads to A's job (ndjson)").await;
        let res = upload(&app, &b, id, "application/json", "[{\"id\":99}]").await;
        expect_problem(res, StatusCode::NOT_FOUND, "B uploads to A's job (array)").await;
        expect_problem(
            start(&app, &b, id).await,
            StatusCode::NOT_FOUND,
            "B starts A's job",
        )
        .await;
    }
    let res = app
        .tenant(&a, Method::GET, &format!("/api/v1/jobs/{b_job}"))
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::NOT_FOUND, "A reads B's job").await;

    // A's jobs are untouched by B's attempts.
    let job = get_job(&app, &a, &a_upload).await;
    assert_eq!(
        (job["status"].as_str(), job["progress"]["total"].as_i64()),
        (Some("awaiting_upload"), Some(2))
    );
    assert_eq!(stored_records(&app, &a_upload).await, 2);
    assert_eq!(
        get_job(&app, &a, &a_inline).await["status"],
        a_inline_status
    );

    // Lists hold only the caller's jobs, whatever the filter or cursor.
    let a_ids: BTreeSet<String> = [a_upload.clone(), a_inline.clone()].into();
    let b_ids: BTreeSet<String> = [b_job.clone()].into();
    assert_eq!(list_ids(&app, &a, "").await, a_ids);
    assert_eq!(list_ids(&app, &b, "").await, b_ids);
    assert_eq!(
        list_ids(&app, &b, "?status=awaiting_upload").await,
        BTreeSet::new()
    );
    let b_status = get_job(&app, &b, &b_job).await["status"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        list_ids(&app, &b, &format!("?status={b_status}")).await,
        b_ids
    );
    let a_status = a_inline_status.as_str().unwrap();
    assert!(
        list_ids(&app, &b, &format!("?status={a_status}"))
            .await
            .is_disjoint(&a_ids)
    );
    // A cursor made from A's newest job, replayed by B, still shows B nothing of A's.
    let res = app
        .tenant(&a, Method::GET, "/api/v1/jobs?limit=1")
        .send()
        .await
        .unwrap();
    let cursor = res.json::<Value>().await.unwrap()["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen_by_b = list_ids(&app, &b, &format!("?cursor={cursor}")).await;
    assert!(seen_by_b.is_disjoint(&a_ids), "{seen_by_b:?}");
}

#[tokio::test]
async fn a_tenant_cannot_revoke_another_tenants_key() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant_with_key("acme").await;
    let (_, b) = app.tenant_with_key("globex").await;
    let keys: Vec<Value> = send_json(app.tenant(&a, Method::GET, "/api/v1/api-keys")).await;
    let a_key_id = keys[0]["id"].as_str().unwrap();
    let res = app
        .tenant(&b, Method::DELETE, &format!("/api/v1/api-keys/{a_key_id}"))
        .send()
        .await
        .unwrap();
    expect_problem(res, StatusCode::NOT_FOUND, "B revokes A's key").await;
    // B's listing does not show A's key either, and A's key still works.
    let b_keys: Vec<Value> = send_json(app.tenant(&b, Method::GET, "/api/v1/api-keys")).await;
    assert!(b_keys.iter().all(|k| k["id"] != a_key_id), "{b_keys:?}");
    assert_eq!(
        app.tenant(&a, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// The database itself refuses a record or log row that names another tenant's job (or
/// no job), and deleting a job deletes its records and log rows: the statement-level
/// checks that replaced the per-row foreign keys keep the same guarantee.
#[tokio::test]
async fn the_schema_refuses_rows_that_name_another_tenants_job() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let app = TestApp::spawn().await;
    let (a_tenant, a) = app.tenant_with_key("acme").await;
    let (b_tenant, _) = app.tenant_with_key("globex").await;
    let job = app.create_job(&a, &inline_job(3)).await["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let batch = app
        .scalar(&format!(
            "SELECT count(*) FROM batches WHERE job_id = '{job}'"
        ))
        .await;
    assert!(batch >= 1);
    let run = |sql: String| {
        let db = app.db.clone();
        async move {
            db.execute_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
        }
    };
    let violation = |res: Result<sea_orm::ExecResult, sea_orm::DbErr>, what: &str| {
        let err = res.expect_err(what).to_string();
        assert!(
            err.contains("names no job of its tenant") || err.contains("never change"),
            "{what}: {err}"
        );
    };

    violation(
        run(format!(
            "INSERT INTO job_records (job_id, tenant_id, seq, payload) VALUES ('{job}', '{b_tenant}', 99, '{{}}')"
        ))
        .await,
        "a record under another tenant",
    );
    violation(
        run(format!(
            "INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status)
             SELECT '{job}', '{b_tenant}', id, 1, 1, 'succeeded' FROM batches WHERE job_id = '{job}' LIMIT 1"
        ))
        .await,
        "a log row under another tenant",
    );
    violation(
        run(format!(
            "INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status)
             VALUES (gen_random_uuid(), '{a_tenant}', gen_random_uuid(), 1, 1, 'succeeded')"
        ))
        .await,
        "a log row of no job",
    );
    violation(
        run(format!(
            "UPDATE job_records SET tenant_id = '{b_tenant}' WHERE job_id = '{job}'"
        ))
        .await,
        "moving records to another tenant",
    );
    // A mixed statement fails whole.
    violation(
        run(format!(
            "INSERT INTO job_records (job_id, tenant_id, seq, payload)
             VALUES ('{job}', '{a_tenant}', 50, '{{}}'), ('{job}', '{b_tenant}', 51, '{{}}')"
        ))
        .await,
        "one good row and one bad",
    );
    // The owner's own rows go in.
    run(format!(
        "INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status)
         SELECT '{job}', '{a_tenant}', id, 1, 1, 'succeeded' FROM batches WHERE job_id = '{job}' LIMIT 1"
    ))
    .await
    .expect("a log row of the job's own tenant");

    run(format!("DELETE FROM jobs WHERE id = '{job}'"))
        .await
        .unwrap();
    for table in ["job_records", "record_logs", "batches"] {
        assert_eq!(
            app.scalar(&format!(
                "SELECT count(*) FROM {table} WHERE job_id = '{job}'"
            ))
            .await,
            0,
            "deleting the job deletes its {table}"
        );
    }
}
