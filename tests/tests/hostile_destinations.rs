//! A hostile tenant's destination must reach only what it names, and only after the
//! address was checked: a Postgres URL cannot dial another address (`hostaddr`), read the
//! worker's files or settings (`sslkey`, `service`, `options`), or borrow the worker's own
//! `PG*` environment; and secrets in the URL stay out of the worker's logs.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use freight_core::domain::destination::{Destination, PostgresDestination, WriteMode};
use freight_tests::{
    SECRET_KEY, TestApp, TestEnv, database_url, fake_pg::FakePostgres, freight_all::FreightAll,
    freight_binary, keyring, redis_url, send_json, wait_until,
};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

fn postgres_job(url: &str, source: Value) -> Value {
    json!({
        "source": source,
        "destination": {"type": "postgres", "url": url, "table": "contacts"},
        "retry": {"max_attempts": 1},
    })
}

#[tokio::test]
async fn connection_parameters_are_refused_at_intake_by_name() {
    let app = TestApp::spawn_with(|s| s.allow_private_destinations = false).await;
    let (_, key) = app.tenant_with_key("mallory").await;
    let inline = json!({"type": "inline", "records": [{"id": 1}]});
    for param in [
        "hostaddr=127.0.0.1",
        "host=10.0.0.5",
        "host=/var/run/postgresql",
        "port=5433",
        "options=-c%20log_statement%3Dall",
        "sslrootcert=/etc/ssl/private/freight.pem",
        "sslcert=/etc/freight/client.crt",
        "sslkey=/etc/freight/client.key",
        "sslpassword=hunter2",
        "passfile=/root/.pgpass",
        "service=billing-db",
        "made_up=made-up-value",
    ] {
        let name = param.split('=').next().unwrap();
        let value = param.split('=').nth(1).unwrap();
        let url = format!("postgres://app:pw@93.184.216.34:5432/crm?sslmode=require&{param}");
        let (status, body) = app
            .post_job(&key, &postgres_job(&url, inline.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{param}: {body}");
        let error = &body["errors"][0];
        assert_eq!(error["field"], "destination.url", "{param}: {body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{name}`")), "{param}: {message}");
        assert!(
            !body.to_string().contains(value),
            "{param}: the value is echoed: {body}"
        );
    }
    // What a tenant may set still passes.
    let url = "postgres://app:pw@93.184.216.34:5432/crm?sslmode=verify-full&application_name=crm-import&connect_timeout=5";
    let (status, body) = app.post_job(&key, &postgres_job(url, inline)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Rewrites a job's stored destination to a Postgres `url` of its tenant's, sealed as
/// Freight stores one: a job stored before the URL rules existed.
async fn forge_destination(db: &sea_orm::DatabaseConnection, tenant: Uuid, job: &str, url: &str) {
    let forged = Destination::Postgres(PostgresDestination {
        url: url.to_owned(),
        url_redacted: None,
        table: "contacts".into(),
        key: vec!["id".into()],
        mode: WriteMode::Insert,
    });
    let stored = forged.sealed(&keyring(&[SECRET_KEY]), tenant.into());
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE jobs SET destination = $1 WHERE id = $2",
        [
            serde_json::to_value(&stored).unwrap().into(),
            job.parse::<Uuid>().unwrap().into(),
        ],
    ))
    .await
    .unwrap();
}

/// A job stored before the rule (forged here straight into the database) whose URL names
/// a public host but `hostaddr=127.0.0.1`: the worker refuses it by its parameter and
/// dead-letters its records; nothing connects to the loopback listener.
#[tokio::test]
async fn a_stored_url_that_dials_elsewhere_dead_letters_without_connecting() {
    let app = TestApp::spawn_with(|s| s.allow_private_destinations = false).await;
    let _worker = app.start_worker().await;
    let listener = FakePostgres::start().await;
    let (tenant, key) = app.tenant_with_key("mallory").await;
    let public = "postgres://app@93.184.216.34:5432/crm";
    let job = app
        .create_job(&key, &postgres_job(public, json!({"type": "upload"})))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", "application/x-ndjson")
        .body("{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let forged = format!(
        "postgres://app:pw@93.184.216.34:{}/crm?hostaddr=127.0.0.1&sslmode=disable",
        listener.port()
    );
    forge_destination(&app.db, tenant, &id, &forged).await;

    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let done = app.wait_finished(&key, &id, Duration::from_secs(30)).await;
    assert_eq!(done["progress"]["dead_lettered"], 3, "{done}");
    let dead: Value = app
        .get_json(&key, &format!("/api/v1/jobs/{id}/dead-letters"))
        .await;
    let error = dead["data"][0]["error"].as_str().unwrap();
    assert!(error.contains("`hostaddr`"), "{error}");
    assert_eq!(listener.accepted(), 0, "the worker dialled the hostaddr");
}

/// `freight worker` with its own libpq variables set logs in to a tenant's database with
/// the tenant's user, database and (absent) password only, in the URL's TLS mode; and it
/// refuses to start at all with a variable it could not keep from destinations.
#[tokio::test]
async fn the_worker_lends_a_destination_none_of_its_own_pg_environment() {
    let app = TestApp::spawn().await;
    let listener = FakePostgres::start().await;
    let worker_env = [
        ("PGPASSWORD", "worker-own-password"),
        ("PGUSER", "freight_owner"),
        ("PGDATABASE", "freight"),
        ("PGAPPNAME", "worker-app"),
        ("PGSSLMODE", "require"),
        ("PGHOST", "/var/run/postgresql"),
        ("PGPORT", "1"),
    ];
    // Freight's own database connection says its TLS mode, so PGSSLMODE cannot matter to it.
    let own_db = format!("{}?sslmode=disable", database_url(&app.env.db_name));
    let mut worker = app.spawn_worker_binary(
        &[worker_env.as_slice(), &[("DATABASE_URL", own_db.as_str())]].concat(),
    );
    let (_, key) = app.tenant_with_key("acme").await;
    let url = format!(
        "postgres://tenant_user@127.0.0.1:{}/tenant_db",
        listener.port()
    );
    let job = app
        .create_job(
            &key,
            &postgres_job(&url, json!({"type": "inline", "records": [{"id": 1}]})),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let done = app.wait_finished(&key, id, Duration::from_secs(30)).await;
    freight_tests::sigterm_and_wait(&mut worker);
    assert_eq!(done["progress"]["dead_lettered"], 1, "{done}");
    let logins = listener.logins();
    assert!(!logins.is_empty(), "the worker never logged in: {done}");
    for login in logins {
        assert_eq!(
            login.params.get("user").map(String::as_str),
            Some("tenant_user")
        );
        assert_eq!(
            login.params.get("database").map(String::as_str),
            Some("tenant_db")
        );
        assert_eq!(
            login.params.get("application_name").map(String::as_str),
            Some("freight")
        );
        assert!(!login.params.contains_key("options"), "{login:?}");
        assert_eq!(login.password.as_deref().unwrap_or(""), "", "{login:?}");
    }

    for var in [
        "PGHOSTADDR",
        "PGOPTIONS",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSSLROOTCERT",
    ] {
        let mut child = Command::new(freight_binary())
            .arg("worker")
            .env("DATABASE_URL", database_url(&app.env.db_name))
            .env("REDIS_URL", redis_url())
            .env("REDIS_QUEUE", &app.env.db_name)
            .env("MIGRATE_ON_START", "false")
            .env(var, "/tmp/should-not-matter")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(status) = status else {
            freight_tests::sigterm_and_wait(&mut child);
            panic!("the worker started with {var} set");
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{var}: {stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}

/// Secrets anywhere in a destination URL — the password, and values of parameters the
/// worker refuses — appear nowhere in what the worker logs (debug level), whether it
/// connects with the URL or refuses it.
#[tokio::test]
async fn secrets_in_a_destination_url_stay_out_of_the_worker_logs() {
    const PASSWORD: &str = "pgpw-secret-4711";
    const REFUSED_VALUE: &str = "sslpw-secret-0815";
    const UNKNOWN_VALUE: &str = "unknown-secret-1234";
    let env = TestEnv::new().await;
    let freight = FreightAll::start(
        &env,
        freight_tests::ADMIN_TOKEN,
        &[
            ("FREIGHT_SECRET_KEY", SECRET_KEY),
            ("RECONCILER_INTERVAL", "500ms"),
        ],
    )
    .await;
    let listener = FakePostgres::start().await;
    let (client, base) = (&freight.client, &freight.base);
    let tenant: Value = send_json(
        client
            .post(format!("{base}/api/v1/admin/tenants"))
            .bearer_auth(freight_tests::ADMIN_TOKEN)
            .json(&json!({"name": "acme"})),
    )
    .await;
    let tenant_id: Uuid = tenant["id"].as_str().unwrap().parse().unwrap();
    let key: Value = send_json(
        client
            .post(format!("{base}/api/v1/admin/tenants/{tenant_id}/api-keys"))
            .bearer_auth(freight_tests::ADMIN_TOKEN)
            .json(&json!({})),
    )
    .await;
    let key = key["key"].as_str().unwrap();

    // One job the worker connects for (and the fake server refuses the login), one stored
    // before the rule with parameters it refuses.
    let port = listener.port();
    let connects = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/crm?sslmode=disable");
    let mut ids = Vec::new();
    for source in [
        json!({"type": "inline", "records": [{"id": 1}]}),
        json!({"type": "upload"}),
    ] {
        let job: Value = send_json(
            client
                .post(format!("{base}/api/v1/jobs"))
                .bearer_auth(key)
                .json(&postgres_job(&connects, source)),
        )
        .await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let res = client
        .post(format!("{base}/api/v1/jobs/{}/records", ids[1]))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body("{\"id\":1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let forged = format!(
        "postgres://app:{PASSWORD}@127.0.0.1:{port}/crm?sslpassword={REFUSED_VALUE}&made_up={UNKNOWN_VALUE}"
    );
    let db = sea_orm::Database::connect(database_url(&env.db_name))
        .await
        .unwrap();
    forge_destination(&db, tenant_id, &ids[1], &forged).await;
    let res = client
        .post(format!("{base}/api/v1/jobs/{}/start", ids[1]))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    for id in &ids {
        assert!(
            freight
                .wait_for_job_status(key, id, "completed_with_errors", Duration::from_secs(30))
                .await,
            "job {id} did not finish"
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !listener.logins().is_empty()
        })
        .await,
        "the worker never logged in with the good URL"
    );
    assert_eq!(listener.logins()[0].password.as_deref(), Some(PASSWORD));
    let logs = freight.stop();
    assert!(
        logs.contains("batch attempt recorded"),
        "the logs are not empty: {logs}"
    );
    for secret in [PASSWORD, REFUSED_VALUE, UNKNOWN_VALUE] {
        assert!(!logs.contains(secret), "`{secret}` is in the worker's logs");
    }
    db.close().await.ok();
}
