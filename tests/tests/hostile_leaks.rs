//! What a tenant (or anyone who can reach the api) must not learn or be handed: the
//! operator's internal addresses, dependency error texts, tenant ids in metrics, secrets
//! hidden in a URL's path or query, formulas in a CSV, a page that loads code from
//! elsewhere; and the headers every response carries.

use std::time::Duration;

use freight_tests::{
    ADMIN_TOKEN, TestApp, ThrowawayRedis,
    browser::Browser,
    send_json,
    sink::{Reply, Sink},
    wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A job into `url`, with one record.
fn job_to(url: &str) -> Value {
    json!({"source": {"type": "inline", "records": [{"id": 1}]},
           "destination": {"type": "http", "url": url}})
}

/// A name that resolves to a private address is refused without saying which address;
/// the newly refused ranges (TEST-NETs, the 6to4 relay, Teredo, local-use NAT64) are.
#[tokio::test]
async fn private_destinations_are_refused_without_quoting_addresses() {
    let app = TestApp::spawn_with(|s| s.allow_private_destinations = false).await;
    let (_, key) = app.tenant_with_key("mallory").await;
    let (status, body) = app.post_job(&key, &job_to("http://localhost:6379/x")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(text.contains("private"), "{text}");
    for address in ["127.0.0.1", "::1", "loopback"] {
        assert!(!text.contains(address), "`{address}` in {text}");
    }
    for url in [
        "http://192.0.2.10/x",
        "http://198.51.100.7/x",
        "http://203.0.113.200/x",
        "http://192.88.99.1/x",
        "http://[2001::1]/x",
        "http://[64:ff9b:1::a00:1]/x",
    ] {
        let (status, body) = app.post_job(&key, &job_to(url)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "destination.url");
    }
}

/// `/ready` and a 503 say a dependency is down, not what it said: its error texts name
/// hosts, ports and versions.
#[tokio::test]
async fn dependency_errors_are_not_echoed() {
    let mut redis = ThrowawayRedis::start().await;
    let port = redis.url.rsplit(':').next().unwrap().to_owned();
    let redis_url = redis.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.redis.url = secrecy::SecretString::from(redis_url.clone());
        s.redis.response_timeout = Duration::from_millis(300);
        s.redis.connection_timeout = Duration::from_millis(300);
    })
    .await;
    redis.kill();
    let mut bodies = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.request(Method::GET, "/ready").send().await.unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            bodies.push(body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never saw Redis down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = app
        .admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    bodies.push(res.text().await.unwrap());
    for body in &bodies {
        for leak in [
            port.as_str(),
            "refused",
            "os error",
            "127.0.0.1",
            "broken pipe",
        ] {
            assert!(!body.to_lowercase().contains(leak), "`{leak}` in {body}");
        }
    }
}

/// With `METRICS_TOKEN` set, `/metrics` answers only the token.
#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let app = TestApp::spawn_with(|s| {
        s.http.metrics_token = Some(secrecy::SecretString::from("metrics-token-0123456789"));
        s.metrics_tenant_labels = true;
    })
    .await;
    let res = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, key) = app.tenant_with_key("acme").await;
    for token in [key.as_str(), ADMIN_TOKEN, "wrong"] {
        let res = app
            .request(Method::GET, "/metrics")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{token}");
    }
    let res = app
        .request(Method::GET, "/metrics")
        .bearer_auth("metrics-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("freight_http_requests_total")
    );
}

/// Secrets a URL carries outside the known fields — a chat webhook's token in its path,
/// signatures in its query — are stored sealed with the whole URL and never shown.
#[tokio::test]
async fn secrets_in_a_url_path_or_query_are_sealed_and_redacted() {
    const PATH_TOKEN: &str = "Xy7Qk2LmN9pR4sT6vW8zA1bC";
    const SIG: &str = "sig-value-5150";
    const CODE: &str = "code-value-6060";
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let sink = Sink::start(|_| Reply::status(400)).await;
    let url = format!(
        "http://{}/services/T0AB12CD3/B0CD45EF6/{PATH_TOKEN}?sig={SIG}&code={CODE}&page=2",
        sink.addr
    );
    let _worker = app.start_worker().await;
    let job = app.create_job(&key, &job_to(&url)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    app.wait_finished(&key, &id, Duration::from_secs(30)).await;
    assert_eq!(sink.count(), 1, "delivery used the URL as given");
    assert!(sink.received()[0].headers.contains_key("idempotency-key"));
    let mut seen = vec![job.to_string()];
    for path in ["", "/dead-letters", "/logs"] {
        seen.push(
            app.tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    seen.push(app.get_json(&key, "/api/v1/jobs").await.to_string());
    let stored: String = {
        let row = sea_orm::ConnectionTrait::query_one_raw(
            &app.db,
            sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT destination::text AS d FROM jobs WHERE id = '{id}'"),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        row.try_get("", "d").unwrap()
    };
    seen.push(stored);
    let shown = &seen[1];
    assert!(
        shown.contains("/services/T0AB12CD3/B0CD45EF6/redacted"),
        "{shown}"
    );
    for text in &seen {
        for secret in [PATH_TOKEN, SIG, CODE] {
            assert!(!text.contains(secret), "`{secret}` in {text}");
        }
    }
}

/// A log download as CSV defuses cells a spreadsheet would run as formulas.
#[tokio::test]
async fn csv_downloads_defuse_formulas() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker().await;
    let sink = Sink::accepting().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let formula = "=HYPERLINK(\"http://evil.example\",\"click\")";
    let job = app
        .create_job(
            &key,
            &json!({"source": {"type": "inline", "records": [{"id": formula}, {"id": "-17"}]},
                    "destination": {"type": "http", "url": sink.url()}, "record_key": "id"}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    app.wait_finished(&key, id, Duration::from_secs(30)).await;
    let csv = app
        .tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}/logs"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\""),
        "{csv}"
    );
    assert!(!csv.contains(",=HYPERLINK"), "{csv}");
    assert!(csv.contains(",-17,"), "a number stays a number: {csv}");
}

/// Every response carries `nosniff` and `no-referrer`; a response that carries a new key
/// is `no-store`.
#[tokio::test]
async fn responses_carry_the_security_headers() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let created = app
        .admin(
            Method::POST,
            &format!("/api/v1/admin/tenants/{tenant}/api-keys"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.headers()["cache-control"], "no-store");
    let key: Value = created.json().await.unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let own = app
        .tenant(&key, Method::POST, "/api/v1/api-keys")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.headers()["cache-control"], "no-store");
    for req in [
        app.request(Method::GET, "/health"),
        app.request(Method::GET, "/no/such/route"),
        app.request(Method::GET, "/api/v1/jobs"),
        app.tenant(&key, Method::GET, "/api/v1/jobs"),
        app.request(Method::GET, "/api/v1/docs"),
        app.request(Method::GET, "/api/v1/openapi.json"),
        app.request(Method::PATCH, "/health"),
    ] {
        let res = req.send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", res.url());
        assert_eq!(h["referrer-policy"], "no-referrer", "{}", res.url());
    }
}

/// The API reference, in a real browser: it renders every operation of the served
/// document, filters them, and loads nothing from anywhere but this server (it used to
/// load its script from a CDN at run time).
#[tokio::test]
async fn the_docs_page_renders_in_a_browser_from_this_server_alone() {
    let app = TestApp::spawn().await;
    let doc: Value = send_json(app.request(Method::GET, "/api/v1/openapi.json")).await;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .count()
        })
        .sum();
    let page = app
        .request(Method::GET, "/api/v1/docs")
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("cdn.") && !html.contains("https://"),
        "{html}"
    );

    let browser = Browser::start().await;
    browser.goto(&app.url("/api/v1/docs")).await;
    browser
        .wait_for("details.op", Duration::from_secs(20))
        .await;
    let rendered = browser.find_all("details.op").await.len();
    assert_eq!(rendered, operations, "every operation is on the page");
    let title = browser.wait_for("#title", Duration::from_secs(5)).await;
    assert_eq!(browser.text(&title).await, "Freight");

    let filter = browser.wait_for("#filter", Duration::from_secs(5)).await;
    browser.type_into(&filter, "api-keys").await;
    let visible = browser
        .execute("return [...document.querySelectorAll('details.op')].filter(e => e.offsetParent !== null).map(e => e.querySelector('.path').textContent)")
        .await;
    let visible: Vec<String> = serde_json::from_value(visible).unwrap();
    assert!(
        !visible.is_empty() && visible.len() < rendered,
        "{visible:?}"
    );
    assert!(
        visible.iter().all(|p| p.contains("api-keys")),
        "{visible:?}"
    );

    // Open one operation: its parameters and responses are there, as text.
    let first = browser.find_all("details.op > summary").await;
    browser.click(&first[0]).await;
    let body = browser
        .wait_for("details.op[open] .body", Duration::from_secs(5))
        .await;
    assert!(browser.text(&body).await.contains("RESPONSES"));

    let loaded = browser
        .execute("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
        .await;
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(loaded.len() >= 3, "{loaded:?}");
    for url in &loaded {
        assert!(url.starts_with(&app.base), "{url} is not from this server");
    }
    let png = browser.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a rendered page"
    );
}

/// The api says loudly, at start, that it lets tenants reach private addresses while
/// listening beyond loopback (the laptop defaults of `scripts/run` on a server).
#[tokio::test]
async fn private_destinations_on_a_public_address_are_warned_about() {
    let env = freight_tests::TestEnv::new().await;
    let port = freight_tests::free_port();
    let mut api = std::process::Command::new(freight_tests::freight_binary())
        .arg("api")
        .env("DATABASE_URL", freight_tests::database_url(&env.db_name))
        .env("REDIS_URL", freight_tests::redis_url())
        .env("REDIS_QUEUE", &env.db_name)
        .env("HTTP_ADDR", format!("0.0.0.0:{port}"))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MIGRATE_ON_START", "false")
        .env("FREIGHT_ALLOW_PRIVATE_DESTINATIONS", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(20), || async {
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_ok()
    })
    .await;
    freight_tests::sigterm_and_wait(&mut api);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut api.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(up, "the api did not start: {stderr}");
    assert!(
        stderr.contains("WARNING: FREIGHT_ALLOW_PRIVATE_DESTINATIONS=true"),
        "{stderr}"
    );
}

/// A requeue by dead-letter ids forgets only the cached views of the jobs it touched:
/// a tenant's requeues cannot flush every other tenant's cache (they used to flush it
/// all).
#[tokio::test]
async fn a_requeue_forgets_only_the_views_it_touched() {
    let app = TestApp::spawn_with(|s| s.http.job_view_ttl = Duration::from_secs(60)).await;
    let (_, a) = app.tenant_with_key("a").await;
    let (_, b) = app.tenant_with_key("b").await;
    let job = app
        .create_job(
            &b,
            &json!({"name": "before", "source": {"type": "upload"},
                    "destination": {"type": "http", "url": "http://127.0.0.1:9/x"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(app.job(&b, &id).await["name"], "before");
    // Behind the cache's back: only a forgotten view would show it.
    app.scalar(&format!(
        "WITH u AS (UPDATE jobs SET name = 'after' WHERE id = '{id}' RETURNING 1) SELECT count(*) FROM u"
    ))
    .await;
    assert_eq!(
        app.job(&b, &id).await["name"],
        "before",
        "served from the cache"
    );
    let res = app
        .tenant(&a, Method::POST, "/api/v1/dead-letters/requeue")
        .json(&json!({"ids": [uuid::Uuid::new_v4()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.job(&b, &id).await["name"],
        "before",
        "A's requeue flushed B's view"
    );
}

/// Freight needs no superuser: migrated, served and delivering as a role that owns its
/// database and nothing else (the role compose and the operations guide give it).
#[tokio::test]
async fn freight_runs_as_a_role_that_is_not_a_superuser() {
    use sea_orm::ConnectionTrait;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let role = format!("freight_owner_{suffix}");
    let db_name = format!(
        "freight_t_{}_{suffix}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let admin = sea_orm::Database::connect(freight_tests::admin_database_url())
        .await
        .unwrap();
    for sql in [
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"),
        format!("CREATE DATABASE {db_name} OWNER {role}"),
    ] {
        admin.execute_unprepared(&sql).await.unwrap();
    }
    let mut url = url::Url::parse(&freight_tests::database_url(&db_name)).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(None).unwrap();
    let url = url.to_string();
    let outcome = async move {
        let app = TestApp::spawn_with(|s| {
            s.database.url = secrecy::SecretString::from(url.clone());
            s.migrate_on_start = true;
        })
        .await;
        let _worker = app.start_worker().await;
        let sink = Sink::accepting().await;
        let (_, key) = app.tenant_with_key("acme").await;
        let job = app
            .create_job(
                &key,
                &json!({"source": {"type": "inline", "records": [{"id": 1}, {"id": 2}]},
                        "destination": {"type": "http", "url": sink.url()}}),
            )
            .await;
        let done = app
            .wait_finished(&key, job["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(sink.count(), 2);
    };
    let result = tokio::spawn(outcome).await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
    let _ = admin
        .execute_unprepared(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}
