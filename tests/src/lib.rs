//! The integration-test harness: the real api (and worker) against real Postgres and
//! Redis, over real HTTP on loopback.
//!
//! Each test gets a fresh database cloned from a template migrated once per run
//! (`CREATE DATABASE … TEMPLATE`), its own Redis key prefix, and the api bound to port 0.
//! Dropping the [`TestApp`] stops the api and drops the database, even when the test
//! panicked; databases left by a killed run are swept at the next run's start.
//!
//! Connection settings come from `TEST_DATABASE_URL` / `TEST_REDIS_URL` (defaults: the
//! local `postgres` database and Redis on 6379).

pub mod browser;
pub mod engine;
pub mod fake_pg;
pub mod freight_all;
pub mod sink;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use freight_core::config::Settings;
use reqwest::{Method, RequestBuilder, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use url::Url;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-operator-token-0123456789";

/// The `FREIGHT_SECRET_KEY` of every test app and worker (in-process or binary), so the
/// whole suite runs with destination secrets encrypted at rest, as production should.
pub const SECRET_KEY: &str = "87pKJHcK5phm5YSKTUCR7ASuKsfHwQchUhaftpUOUek=";

/// A keyring of base64 keys, the first current, the rest old.
pub fn keyring(keys: &[&str]) -> freight_core::secrets::Keyring {
    freight_core::secrets::Keyring::from_keys(keys[0], &keys[1..]).expect("valid test keys")
}

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `admin_database_url` with its database name replaced.
pub fn database_url(name: &str) -> String {
    let mut url = Url::parse(&admin_database_url()).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// The template database for this run: swept leftovers first, then migrated once.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let admin = Database::connect(admin_database_url())
                .await
                .expect("connect to the admin database");
            sweep_leftovers(&admin).await;
            let name = format!("freight_tpl_{}_{}", unix_now(), std::process::id());
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create template");
            admin.close().await.ok();
            let db = Database::connect(database_url(&name))
                .await
                .expect("connect to template");
            migration::migrate(&db).await.expect("migrate the template");
            // No connection may stay open on a template while it is cloned.
            db.close().await.ok();
            name
        })
        .await
}

/// Drops test databases older than three hours (left by killed runs).
async fn sweep_leftovers(admin: &DatabaseConnection) {
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE datname LIKE 'freight\\_t%'",
        ))
        .await
        .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(3 * 3600);
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let born: Option<u64> = name.split('_').nth(2).and_then(|t| t.parse().ok());
        if born.is_some_and(|t| t < cutoff) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// A fresh database and Redis namespace, with settings pointing at them.
pub struct TestEnv {
    pub db_name: String,
    pub settings: Settings,
}

impl TestEnv {
    pub async fn new() -> Self {
        let template = template().await;
        let db_name = format!(
            "freight_t_{}_{}",
            unix_now(),
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = Database::connect(admin_database_url())
            .await
            .expect("admin connection");
        // Concurrent clones of one template can briefly collide ("source database is being
        // accessed by other users"); retry a few times.
        let mut attempt = 0;
        loop {
            match admin
                .execute_unprepared(&format!(
                    "CREATE DATABASE \"{db_name}\" TEMPLATE \"{template}\""
                ))
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "retrying clone");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        admin.close().await.ok();
        let mut settings = Settings::from_lookup(|_| None).expect("default settings");
        settings.database.url = SecretString::from(database_url(&db_name));
        settings.database.max_connections = 6;
        settings.database.min_connections = 0;
        settings.redis.url = SecretString::from(redis_url());
        settings.redis.queue = db_name.clone();
        settings.http.addr = "127.0.0.1:0".parse().unwrap();
        settings.http.admin_token = Some(SecretString::from(ADMIN_TOKEN));
        settings.allow_private_destinations = true;
        settings.migrate_on_start = false;
        settings.secrets = keyring(&[SECRET_KEY]);
        // Every test client is 127.0.0.1: tests of failed logins lower this themselves.
        settings.auth.failures_per_minute = 1_000_000;
        Self { db_name, settings }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let name = self.db_name.clone();
        // Drop runs on a runtime thread (or while unwinding): do the cleanup on a thread
        // with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = Database::connect(admin_database_url()).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    admin.close().await.ok();
                }
                if let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{name}*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The api running on port 0 against a [`TestEnv`].
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: DatabaseConnection,
    stop: Option<oneshot::Sender<()>>,
    // Dropped last: the database goes after the server stops.
    pub env: Arc<TestEnv>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with settings adjusted by `tweak` (body limit, timeouts, ...).
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut env = TestEnv::new().await;
        tweak(&mut env.settings);
        let app = freight_api::Application::build(env.settings.clone())
            .await
            .expect("build the api");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        let db = Database::connect(database_url(&env.db_name))
            .await
            .expect("test connection");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            client,
            db,
            stop: Some(tx),
            env: Arc::new(env),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    pub fn tenant(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(key)
    }

    /// GET `path` as the tenant holding `key` and decode the body as JSON, whatever the
    /// status.
    pub async fn get_json(&self, key: &str, path: &str) -> Value {
        send_json(self.tenant(key, Method::GET, path)).await
    }

    /// Creates a tenant and returns its id.
    pub async fn create_tenant(&self, name: &str) -> Uuid {
        let res = self
            .admin(Method::POST, "/api/v1/admin/tenants")
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "create tenant: {}",
            res.text().await.unwrap()
        );
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Creates an API key for a tenant and returns `(key id, plaintext key)`.
    pub async fn create_key(&self, tenant_id: Uuid, body: Value) -> (Uuid, String) {
        let res = self
            .admin(
                Method::POST,
                &format!("/api/v1/admin/tenants/{tenant_id}/api-keys"),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "create key: {}",
            res.text().await.unwrap()
        );
        let body: Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().parse().unwrap(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    /// `PATCH /api/v1/admin/tenants/{id}` as the operator; expects 200 and returns the
    /// tenant.
    pub async fn patch_tenant(&self, tenant_id: Uuid, body: Value) -> Value {
        let res = self
            .admin(Method::PATCH, &format!("/api/v1/admin/tenants/{tenant_id}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// Revokes a key as the operator; expects 204.
    pub async fn revoke_key(&self, key_id: Uuid) {
        let res = self
            .admin(Method::DELETE, &format!("/api/v1/admin/api-keys/{key_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }

    /// A new tenant with one key: `(tenant id, key)`.
    pub async fn tenant_with_key(&self, name: &str) -> (Uuid, String) {
        let tenant = self.create_tenant(name).await;
        let (_, key) = self.create_key(tenant, json!({})).await;
        (tenant, key)
    }

    /// `POST /api/v1/jobs` and return `(status, body)`.
    pub async fn post_job(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .tenant(key, Method::POST, "/api/v1/jobs")
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Creates a job (asserting 201) and returns its body.
    pub async fn create_job(&self, key: &str, body: &Value) -> Value {
        let (status, job) = self.post_job(key, body).await;
        assert_eq!(status, StatusCode::CREATED, "create job: {job}");
        job
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The first column of the first row of `sql` as a bigint (`SELECT count(*) ...`).
pub async fn query_i64(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
    db.query_one_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
    .unwrap_or_else(|| panic!("{sql}: no row"))
    .try_get_by_index::<i64>(0)
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

impl TestApp {
    /// [`query_i64`] against this app's database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        query_i64(&self.db, sql, Vec::new()).await
    }
}

/// A small valid job body: `n` inline records into an HTTP destination.
pub fn inline_job(n: usize) -> Value {
    let records: Vec<Value> = (1..=n)
        .map(|i| json!({"id": i, "email": format!("u{i}@example.com")}))
        .collect();
    json!({
        "name": "inline test job",
        "source": {"type": "inline", "records": records},
        "destination": {"type": "http", "url": "http://127.0.0.1:9/import"},
        "record_key": "id",
        "batch_size": 10,
    })
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `req` and decodes the response body as JSON, whatever the status.
pub async fn send_json<T: serde::de::DeserializeOwned>(req: RequestBuilder) -> T {
    req.send().await.unwrap().json().await.unwrap()
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM to `child` (via `kill -TERM`) and waits for it to exit.
pub fn sigterm_and_wait(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The `freight` binary built next to this test binary (scripts/test builds it first).
pub fn freight_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = dir.join("freight");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin freight` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// A `redis-server` of the test's own on a free port, for tests that break Redis on
/// purpose (kill it, FLUSHALL it). Killed when dropped, even if the test failed.
pub struct ThrowawayRedis {
    child: std::process::Child,
    pub url: String,
}

impl ThrowawayRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let url = format!("redis://127.0.0.1:{port}");
        let child = Self::spawn(port, &url).await;
        Self { child, url }
    }

    /// Starts a redis-server on `port` and waits until it answers.
    async fn spawn(port: u16, url: &str) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/ensure-services installs it)");
        let up = wait_until(Duration::from_secs(5), || {
            let url = url.to_owned();
            async move {
                match redis::Client::open(url) {
                    Ok(c) => c.get_multiplexed_async_connection().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(up, "throwaway redis-server did not start");
        child
    }

    /// Kills the server now (the test wants Redis gone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, empty (it keeps nothing on disk): a
    /// Redis restart as clients see it.
    pub async fn restart(&mut self) {
        self.kill();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the url ends with the port");
        self.child = Self::spawn(port, &self.url).await;
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Postgres server of the test's own (`initdb` into a temporary directory, a free port,
/// trust authentication), for tests that stop and restart Postgres on purpose; never the
/// shared server. Run as the `postgres` user when the tests run as root (Postgres refuses
/// root). Stopped and deleted when dropped.
pub struct ThrowawayPostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
    pub url: String,
}

impl ThrowawayPostgres {
    pub async fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| v.ok())
                    .map(|v| v.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .max()
            })
            .expect("Postgres server binaries under /usr/lib/postgresql (scripts/ensure-services installs them)");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("freight-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/freight"),
            dir,
            bin,
            port,
        };
        if is_root() {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the throwaway data directory");
        }
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        pg.ctl("start");
        pg.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "freight",
            ],
        );
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let out = cmd.args(args).output().expect("run a Postgres tool");
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start|stop|restart`, waiting until it is done.
    pub fn ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                action,
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-m",
                "fast",
                "-w",
            ],
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let program = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let _ = cmd
            .args([
                "stop",
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
