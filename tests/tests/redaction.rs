//! Destination secrets (header values, passwords in URLs) are stored for delivery but
//! never come back in any response.

use freight_tests::TestApp;
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
    let (_, key) = app.tenant_with_key("acme").await;
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

    // The secrets are stored, though: delivery needs them.
    let stored = rows(
        &app,
        &format!(
            "SELECT destination->'headers'->>'Authorization' AS auth, destination->>'url' AS url FROM jobs WHERE id = '{}'",
            http_job["id"].as_str().unwrap()
        ),
    )
    .await;
    let auth: String = stored[0].try_get("", "auth").unwrap();
    let url: String = stored[0].try_get("", "url").unwrap();
    assert_eq!(auth, format!("Bearer {HEADER_SECRET}"));
    assert!(url.contains(URL_SECRET), "{url}");
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
