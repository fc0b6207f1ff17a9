//! The audit trail (`audit_events`, `GET /api/v1/admin/audit`): one event per change,
//! with the right actor and target, written with the change (or not at all), for
//! operators only, and never a secret.

use std::time::Duration;

use freight_tests::{ADMIN_TOKEN, TestApp, sink::Reply, sink::Sink};
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use uuid::Uuid;

/// Every event, oldest first, walking the list a few at a time (so the cursor is used).
async fn all_events(app: &TestApp, query: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/admin/audit?limit=3{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let res = app.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let page: Value = res.json().await.unwrap();
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    events.reverse();
    events
}

/// The public id of a plaintext key `frk_<public id>_<secret>`.
fn public_id(key: &str) -> &str {
    key.strip_prefix("frk_").unwrap().split('_').next().unwrap()
}

fn assert_event(e: &Value, actor: &str, tenant: Uuid, target_type: &str, target: &str) {
    assert_eq!(e["actor"], actor, "{e}");
    assert_eq!(e["tenant_id"], tenant.to_string(), "{e}");
    assert_eq!(e["target_type"], target_type, "{e}");
    assert_eq!(e["target_id"], target, "{e}");
    assert!(e["at"].is_string() && e["details"].is_object(), "{e}");
}

/// A sink that refuses (permanently) every record with an even id, for ever.
async fn half_refusing_sink() -> Sink {
    Sink::start(|r| {
        if r.body["id"].as_i64().unwrap_or(0) % 2 == 0 {
            Reply::status(422)
        } else {
            Reply::ok()
        }
    })
    .await
}

fn job_into(url: &str, n: usize) -> Value {
    let records: Vec<Value> = (1..=n).map(|i| json!({"id": i})).collect();
    json!({"source": {"type": "inline", "records": records},
           "destination": {"type": "http", "url": url,
                           "headers": {"Authorization": "Bearer dest-secret-4242"}},
           "record_key": "id", "batch_size": 5})
}

#[tokio::test]
async fn every_audited_action_writes_exactly_one_event_with_its_actor_and_target() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = half_refusing_sink().await;

    // Operator: tenant.created, tenant.updated, key.created.
    let tenant = app.create_tenant("acme").await;
    let tenant_s = tenant.to_string();
    app.patch_tenant(
        tenant,
        json!({"max_concurrent_jobs": 5, "max_pending_records": 1000}),
    )
    .await;
    let (key_id, key) = app.create_key(tenant, json!({"name": "ci"})).await;
    let me = format!("key:{}", public_id(&key));

    // Tenant: key.created, then key.revoked (twice: the second changes nothing).
    let res = app
        .tenant(&key, Method::POST, "/api/v1/api-keys")
        .json(&json!({"name": "rotated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let second: Value = res.json().await.unwrap();
    let second_id = second["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let res = app
            .tenant(
                &key,
                Method::DELETE,
                &format!("/api/v1/api-keys/{second_id}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }

    // job.created (a replayed Idempotency-Key creates nothing, so no second event).
    let body = job_into(&sink.url(), 10);
    let mut job_ids = Vec::new();
    for _ in 0..2 {
        let res = app
            .tenant(&key, Method::POST, "/api/v1/jobs")
            .header("Idempotency-Key", "audit-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        job_ids.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(job_ids[0], job_ids[1]);
    let job = job_ids[0].clone();
    let done = app.wait_finished(&key, &job, Duration::from_secs(60)).await;
    assert_eq!(done["progress"]["dead_lettered"], 5, "{done}");

    // job.retried, batch.retried, dead_letters.requeued (the sink still refuses, so each
    // run dead-letters the even records again).
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{job}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.wait_finished(&key, &job, Duration::from_secs(60)).await;
    let batches: Value = app
        .get_json(&key, &format!("/api/v1/jobs/{job}/batches"))
        .await;
    let failed = batches["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["status"] == "failed")
        .expect("a failed batch")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .tenant(
            &key,
            Method::POST,
            &format!("/api/v1/batches/{failed}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.wait_finished(&key, &job, Duration::from_secs(60)).await;
    let res = app
        .tenant(&key, Method::POST, "/api/v1/dead-letters/requeue")
        .json(&json!({"job_id": job}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.wait_finished(&key, &job, Duration::from_secs(60)).await;

    // job.cancelled: an upload job cancelled before it started; cancelling it again is
    // a 409 and writes nothing.
    let upload = app
        .create_job(
            &key,
            &json!({"source": {"type": "upload"}, "destination": {"type": "http", "url": sink.url()}}),
        )
        .await;
    let upload = upload["id"].as_str().unwrap().to_owned();
    for expected in [StatusCode::ACCEPTED, StatusCode::CONFLICT] {
        let res = app
            .tenant(&key, Method::POST, &format!("/api/v1/jobs/{upload}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected);
    }

    // Operator: key.revoked of the first key.
    app.revoke_key(key_id).await;

    let events = all_events(&app, "").await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.created",
            "tenant.updated",
            "key.created",
            "key.created",
            "key.revoked",
            "job.created",
            "job.retried",
            "batch.retried",
            "dead_letters.requeued",
            "job.created",
            "job.cancelled",
            "key.revoked",
        ],
        "one event per change, in order"
    );
    let op = "operator";
    assert_event(&events[0], op, tenant, "tenant", &tenant_s);
    assert_eq!(events[0]["details"]["name"], "acme");
    assert_event(&events[1], op, tenant, "tenant", &tenant_s);
    assert_eq!(
        events[1]["details"],
        json!({"max_concurrent_jobs": 5, "max_pending_records": 1000}),
        "tenant.updated lists exactly the fields changed"
    );
    assert_event(&events[2], op, tenant, "api_key", &key_id.to_string());
    assert_event(&events[3], &me, tenant, "api_key", &second_id);
    assert_event(&events[4], &me, tenant, "api_key", &second_id);
    assert_event(&events[5], &me, tenant, "job", &job);
    assert_eq!(events[5]["details"]["records"], 10);
    assert_event(&events[6], &me, tenant, "job", &job);
    assert_eq!(events[6]["details"]["requeued"], 5);
    assert_event(&events[7], &me, tenant, "batch", &failed);
    assert!(events[7]["details"]["requeued"].as_i64().unwrap() >= 1);
    assert_event(&events[8], &me, tenant, "job", &job);
    assert_event(&events[9], &me, tenant, "job", &upload);
    assert_event(&events[10], &me, tenant, "job", &upload);
    assert_eq!(events[10]["details"]["status"], "cancelled");
    assert_event(&events[11], op, tenant, "api_key", &key_id.to_string());

    // Filters: by action, by tenant, by time.
    let created = all_events(&app, "&action=job.created").await;
    assert_eq!(created.len(), 2);
    let other = app.create_tenant("other").await;
    let theirs = all_events(&app, &format!("&tenant_id={other}")).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["action"], "tenant.created");
    assert_eq!(
        all_events(&app, &format!("&tenant_id={tenant}"))
            .await
            .len(),
        12
    );
    let last_at = theirs[0]["at"].as_str().unwrap().to_owned();
    let since = all_events(&app, &format!("&since={}", urlencode(&last_at))).await;
    assert_eq!(since.len(), 1, "{since:?}");
    let res = app
        .admin(Method::GET, "/api/v1/admin/audit?action=job.exploded")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .admin(Method::GET, "/api/v1/admin/audit?cursor=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn the_audit_trail_is_for_operators_only() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let res = app
        .tenant(&key, Method::GET, "/api/v1/admin/audit")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = app
        .request(Method::GET, "/api/v1/admin/audit")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .request(Method::GET, "/api/v1/admin/audit")
        .bearer_auth("not-the-operator-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_secret_reaches_the_audit_trail() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (key_id, key) = app.create_key(tenant, json!({"name": "laptop"})).await;
    let res = app
        .tenant(&key, Method::POST, "/api/v1/api-keys")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let own: Value = res.json().await.unwrap();
    let own_key = own["key"].as_str().unwrap().to_owned();
    for body in [
        json!({"source": {"type": "inline", "records": [{"id": 1}]},
               "destination": {"type": "http", "url": "http://user:url-password-77@127.0.0.1:9/x",
                               "headers": {"Authorization": "Bearer header-secret-99", "X-Token": "xtoken-secret-55"}}}),
        json!({"source": {"type": "upload"},
               "destination": {"type": "postgres", "url": "postgres://app:pg-password-31@127.0.0.1:5432/crm",
                               "table": "contacts"}}),
    ] {
        let job = app.create_job(&key, &body).await;
        let res = app
            .tenant(
                &key,
                Method::POST,
                &format!("/api/v1/jobs/{}/cancel", job["id"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    app.revoke_key(key_id).await;

    // Straight from the table, so nothing the list endpoint might filter is missed.
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT row_to_json(a)::text AS j FROM audit_events a",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 8, "tenant, 2 keys, 2 jobs, 2 cancels, 1 revoke");
    let dump: String = rows
        .iter()
        .map(|r| r.try_get::<String>("", "j").unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let secret_of = |k: &str| k.rsplit('_').next().unwrap().to_owned();
    for secret in [
        key.clone(),
        secret_of(&key),
        own_key.clone(),
        secret_of(&own_key),
        ADMIN_TOKEN.to_owned(),
        "url-password-77".into(),
        "header-secret-99".into(),
        "xtoken-secret-55".into(),
        "pg-password-31".into(),
        "127.0.0.1".into(),
    ] {
        assert!(
            !dump.contains(&secret),
            "`{secret}` is in the audit trail:\n{dump}"
        );
    }
    assert!(
        dump.contains(public_id(&key)),
        "the actor names the key by its public id"
    );
}

#[tokio::test]
async fn an_event_is_written_with_its_change_or_not_at_all() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let count = |action: &'static str| {
        let app = &app;
        async move {
            app.scalar(&format!(
                "SELECT count(*) FROM audit_events WHERE action = '{action}'"
            ))
            .await
        }
    };
    // A refused change leaves no event: a duplicate tenant name, a job over the tenant's
    // pending-records limit (refused at the end of the job's own transaction).
    let res = app
        .admin(Method::POST, "/api/v1/admin/tenants")
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(count("tenant.created").await, 1);
    app.patch_tenant(tenant, json!({"max_pending_records": 3}))
        .await;
    app.create_job(&key, &freight_tests::inline_job(2)).await;
    let (status, _) = app.post_job(&key, &freight_tests::inline_job(2)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(count("job.created").await, 1);
    assert_eq!(app.scalar("SELECT count(*) FROM jobs").await, 1);

    // The table is append-only: not even Freight's own connection can rewrite it.
    for sql in [
        "UPDATE audit_events SET actor = 'operator'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = app.db.execute_unprepared(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(app.scalar("SELECT count(*) FROM audit_events").await, 4);
}
