//! Destination secrets (header values, passwords in URLs) are stored for delivery but
//! never come back in any response.

use freight_core::domain::destination::Destination;
use freight_tests::{SECRET_KEY, TestApp, keyring};
use reqwest::{Method, Response, StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};

use crate::intake_support::{NDJSON, rows, start, upload_ok};

const HEADER_SECRET: &str = "sekrit-token-123";
const URL_SECRET: &str = "hunter2pass";
const PG_SECRET: &str = "pgpass-xyz";
const SECRETS: [&str; 3] = [HEADER_SECRET, URL_SECRET, PG_SECRET];

fn http_job(source: Value) -> Value {
    json!({
        "name": "crm sync",
        "source": source,
        "destination": {
            "type": "http",
            "url": format!("https://user:{URL_SECRET}@example.com/x"),
            "headers": {"Authorization": format!("Bearer {HEADER_SECRET}"), "X-Tenant": "acme"},
        },
    })
}

fn postgres_job() -> Value {
    json!({
        "name": "warehouse load",
        "source": {"type": "inline", "records": [{"id": 1}]},
        "destination": {
            "type": "postgres",
            "url": format!("postgres://app:{PG_SECRET}@127.0.0.1:5432/db"),
            "table": "contacts",
            "mode": "upsert",
        },
    })
}

async fn post(app: &TestApp, key: &str, idem: &str, body: &Value) -> Response {
    app.tenant(key, Method::POST, "/api/v1/jobs")
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The raw text of a response, asserting its status and that no secret is in it (nor in
/// its headers).
async fn clean_text(res: Response, expected: StatusCode, what: &str) -> String {
    assert_eq!(res.status(), expected, "{what}");
    let headers = format!("{:?}", res.headers());
    let text = res.text().await.unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaked `{secret}`: {text}");
        assert!(
            !headers.contains(secret),
            "{what} leaked `{secret}` in a header: {headers}"
        );
    }
    text
}

async fn cursor_after_newest(app: &TestApp, key: &str) -> String {
    let res = app
        .tenant(key, Method::GET, "/api/v1/jobs?limit=1")
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn secrets_never_come_back() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let http = http_job(json!({"type": "inline", "records": [{"id": 1}]}));
    let pg = postgres_job();

    let text = clean_text(
        post(&app, &key, "http-1", &http).await,
        StatusCode::CREATED,
        "http create",
    )
    .await;
    let http_job: Value = serde_json::from_str(&text).unwrap();
    let text = clean_text(
        post(&app, &key, "pg-1", &pg).await,
        StatusCode::CREATED,
        "postgres create",
    )
    .await;
    let pg_job: Value = serde_json::from_str(&text).unwrap();

    // What is not secret is still shown: header names, hosts, the user name, the table.
    let dest = &http_job["destination"];
    assert!(
        dest["headers"]["Authorization"].is_string(),
        "the header name is kept: {dest}"
    );
    assert_eq!(dest["headers"].as_object().unwrap().len(), 2, "{dest}");
    let url = dest["url"].as_str().unwrap();
    assert!(url.contains("example.com") && url.contains("user"), "{url}");
    let url = pg_job["destination"]["url"].as_str().unwrap();
    assert!(
        url.contains("127.0.0.1:5432") && url.contains("app"),
        "{url}"
    );
    assert_eq!(pg_job["destination"]["table"], "contacts");

    for (id, idem, body) in [
        (&http_job["id"], "http-1", &http),
        (&pg_job["id"], "pg-1", &pg),
    ] {
        let id = id.as_str().unwrap();
        let res = app
            .tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap();
        let text = clean_text(res, StatusCode::OK, "get").await;
        assert!(
            text.contains("Authorization") || text.contains("contacts"),
            "{text}"
        );
        clean_text(
            post(&app, &key, idem, body).await,
            StatusCode::OK,
            "idempotent replay",
        )
        .await;
    }
    for query in ["", "?limit=1", "?limit=1&cursor=CURSOR"] {
        let query = query.replace("CURSOR", &cursor_after_newest(&app, &key).await);
        let res = app
            .tenant(&key, Method::GET, &format!("/api/v1/jobs{query}"))
            .send()
            .await
            .unwrap();
        let text = clean_text(res, StatusCode::OK, "list").await;
        if !query.contains("limit") {
            assert!(
                text.contains("example.com") && text.contains("127.0.0.1:5432"),
                "{text}"
            );
        }
    }
    // A refused replay (same key, other body) does not echo the stored request either.
    let mut changed = http.clone();
    changed["name"] = json!("changed");
    clean_text(
        post(&app, &key, "http-1", &changed).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "conflicting replay",
    )
    .await;
    // Nor does a 422 about another field of a request holding secrets.
    let mut bad = http.clone();
    bad["batch_size"] = json!(0);
    clean_text(
        post(&app, &key, "bad-1", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "422",
    )
    .await;

    // The secrets are stored, though, sealed (the suite runs with FREIGHT_SECRET_KEY):
    // delivery opens them.
    let stored = rows(
        &app,
        &format!(
            "SELECT destination::text AS raw FROM jobs WHERE id = '{}'",
            http_job["id"].as_str().unwrap()
        ),
    )
    .await;
    let raw: String = stored[0].try_get("", "raw").unwrap();
    assert!(
        !raw.contains(HEADER_SECRET) && !raw.contains(URL_SECRET),
        "{raw}"
    );
    let sealed: Destination = serde_json::from_str(&raw).unwrap();
    let opened = sealed
        .opened(&keyring(&[SECRET_KEY]), tenant.into())
        .unwrap();
    let Destination::Http(opened) = opened else {
        panic!("an http destination")
    };
    assert_eq!(
        opened.headers["Authorization"],
        format!("Bearer {HEADER_SECRET}")
    );
    assert!(opened.url.contains(URL_SECRET), "{}", opened.url);
}

#[tokio::test]
async fn an_upload_jobs_start_response_is_redacted_too() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(&key, &http_job(json!({"type": "upload"})))
        .await;
    let id = job["id"].as_str().unwrap();
    upload_ok(&app, &key, id, NDJSON, "{\"id\":1}\n").await;
    clean_text(start(&app, &key, id).await, StatusCode::ACCEPTED, "start").await;
}

/// A password can also sit in a connection URL's query (`?password=`, which libpq and
/// sqlx both read): it is a password in a URL all the same.
#[tokio::test]
async fn a_password_in_a_connection_urls_query_is_redacted() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let mut body = postgres_job();
    body["destination"]["url"] = json!(format!(
        "postgres://app@127.0.0.1:5432/db?sslmode=disable&password={PG_SECRET}"
    ));
    let res = app
        .tenant(&key, Method::POST, "/api/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let text = clean_text(res, StatusCode::CREATED, "create").await;
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    clean_text(res, StatusCode::OK, "get").await;
}

/// Sends a request and keeps its body in `seen`, for the final search.
async fn observe(req: reqwest::RequestBuilder, seen: &mut Vec<String>) -> Value {
    let text = req.send().await.unwrap().text().await.unwrap();
    seen.push(text.clone());
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The whole of Freight in one process (`freight all`, JSON logs at debug level) with
/// `FREIGHT_SECRET_KEY` set, through HTTP and Postgres deliveries that succeed, retry and
/// fail for good. Afterwards no header value or URL password is in the logs, any response
/// body, `/metrics`, any stored error message, the audit trail or the stored jobs.
#[tokio::test]
async fn no_secret_leaks_through_a_run() {
    use freight_tests::{
        ADMIN_TOKEN, TestEnv, database_url,
        freight_all::FreightAll,
        sink::{Reply, Sink},
    };
    const HDR: &str = "hdr-leak-check-5150";
    const URL_PW: &str = "urlpw-leak-check-6060";
    const PG_PW: &str = "pgpw-leak-check-7070";
    let env = TestEnv::new().await;
    let freight = FreightAll::start(
        &env,
        ADMIN_TOKEN,
        &[
            ("FREIGHT_SECRET_KEY", SECRET_KEY),
            ("RECONCILER_INTERVAL", "500ms"),
        ],
    )
    .await;
    let (client, base) = (&freight.client, &freight.base);
    let mut seen = Vec::new();
    let tenant = observe(
        client
            .post(format!("{base}/api/v1/admin/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "acme"})),
        &mut seen,
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let key = observe(
        client
            .post(format!("{base}/api/v1/admin/tenants/{tenant_id}/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({})),
        &mut seen,
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // Record 2 fails once (retried), record 3 for good (dead-lettered).
    let sink = Sink::start(|r| match (r.body["id"].as_i64(), r.nth) {
        (Some(2), 0) => Reply::status(503),
        (Some(3), _) => Reply::status(400),
        _ => Reply::ok(),
    })
    .await;
    let retry = json!({"max_attempts": 2, "initial_interval_ms": 50, "max_interval_ms": 100});
    let records = json!({"type": "inline", "records": [{"id": 1}, {"id": 2}, {"id": 3}]});
    let mut pg_url = url::Url::parse(&database_url(&env.db_name)).unwrap();
    pg_url.set_password(Some(PG_PW)).unwrap();
    let bodies = [
        json!({"source": records, "retry": retry, "destination": {"type": "http",
            "url": format!("http://user:{URL_PW}@{}/import", sink.addr),
            "headers": {"Authorization": format!("Bearer {HDR}")}}}),
        // A table that does not exist: permanent failures from Postgres.
        json!({"source": records, "retry": retry, "destination": {"type": "postgres",
            "url": pg_url.as_str(), "table": "no_such_table"}}),
        // Nothing listens there: connection errors, retried, then given up.
        json!({"source": records, "retry": retry, "destination": {"type": "postgres",
            "url": format!("postgres://app@127.0.0.1:1/db?password={PG_PW}"), "table": "t"}}),
    ];
    let mut ids = Vec::new();
    for body in &bodies {
        let job = observe(
            client
                .post(format!("{base}/api/v1/jobs"))
                .bearer_auth(&key)
                .json(body),
            &mut seen,
        )
        .await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let finished = freight
            .wait_for_job_status(
                &key,
                id,
                "completed_with_errors",
                std::time::Duration::from_secs(60),
            )
            .await;
        assert!(finished, "job {id} did not finish");
    }
    // Every read a tenant or an operator can make of these jobs.
    for id in &ids {
        for path in ["", "/batches", "/dead-letters", "/logs", "/retry-status"] {
            observe(
                client
                    .get(format!("{base}/api/v1/jobs/{id}{path}"))
                    .bearer_auth(&key),
                &mut seen,
            )
            .await;
        }
    }
    for path in ["/api/v1/jobs", "/api/v1/stats", "/api/v1/queues"] {
        observe(
            client.get(format!("{base}{path}")).bearer_auth(&key),
            &mut seen,
        )
        .await;
    }
    observe(
        client
            .get(format!("{base}/api/v1/admin/audit"))
            .bearer_auth(ADMIN_TOKEN),
        &mut seen,
    )
    .await;
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("freight_records_total"), "{metrics}");
    // Delivery had the secrets, opened.
    assert!(
        sink.received()
            .iter()
            .any(|r| r.headers["authorization"] == format!("Bearer {HDR}").as_str())
    );
    let logs = freight.stop();
    assert!(
        logs.contains("destination secrets are encrypted at rest"),
        "{logs}"
    );

    // What the database holds: every error message, the audit trail, the stored jobs.
    let db = sea_orm::Database::connect(database_url(&env.db_name))
        .await
        .unwrap();
    let stored = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT concat_ws(E'\\n',
                (SELECT string_agg(error, E'\\n') FROM record_logs),
                (SELECT string_agg(error, E'\\n') FROM dead_letters),
                (SELECT string_agg(last_error, E'\\n') FROM batches),
                (SELECT string_agg(last_error, E'\\n') FROM job_records),
                (SELECT string_agg(error, E'\\n') FROM jobs),
                (SELECT string_agg(details::text, E'\\n') FROM audit_events),
                (SELECT string_agg(destination::text, E'\\n') FROM jobs)) AS text,
             (SELECT count(*) FROM dead_letters) AS dead",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let errors: String = stored.try_get("", "text").unwrap();
    let dead: i64 = stored.try_get("", "dead").unwrap();
    // Each job dead-lettered record 3 at least: the search below is not vacuous.
    assert!(dead >= 5, "{errors}");
    db.close().await.ok();

    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("user:{URL_PW}"),
    );
    for (what, text) in [
        ("logs", logs.as_str()),
        ("responses", &seen.join("\n")),
        ("/metrics", metrics.as_str()),
        (
            "the database's error messages, audit trail and jobs",
            errors.as_str(),
        ),
    ] {
        for secret in [HDR, URL_PW, PG_PW, basic.as_str()] {
            assert!(!text.contains(secret), "`{secret}` leaked into {what}");
        }
    }
}
