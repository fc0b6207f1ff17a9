//! The worker process as it stands: it connects, checks the schema, registers a row in
//! `workers` with a unique id and a live heartbeat, and exits cleanly on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use entity::worker;
use freight_tests::{TestEnv, database_url, freight_binary, redis_url, wait_until};
use sea_orm::{Database, EntityTrait};

#[tokio::test]
async fn worker_binary_registers_heartbeats_and_exits_cleanly_on_sigterm() {
    let env = TestEnv::new().await;
    let db = Database::connect(database_url(&env.db_name)).await.unwrap();
    let spawn = || {
        Command::new(freight_binary())
            .arg("worker")
            .env("DATABASE_URL", database_url(&env.db_name))
            .env("REDIS_URL", redis_url())
            .env("REDIS_QUEUE", &env.db_name)
            .env("WORKER_HEARTBEAT_INTERVAL", "200ms")
            .env("DATABASE_MAX_CONNECTIONS", "2")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Two replicas at once: both migrate-check under the advisory lock and get distinct ids.
    let mut first = spawn();
    let mut second = spawn();
    let registered = wait_until(Duration::from_secs(20), || async {
        worker::Entity::find()
            .all(&db)
            .await
            .map(|w| w.len() == 2)
            .unwrap_or(false)
    })
    .await;
    assert!(registered, "two workers should register");
    let rows = worker::Entity::find().all(&db).await.unwrap();
    assert_ne!(
        rows[0].id, rows[1].id,
        "replicas must never share a worker id"
    );
    let pids: Vec<u32> = vec![first.id(), second.id()];
    assert!(
        rows.iter()
            .all(|w| pids.contains(&(w.pid as u32)) && w.stopped_at.is_none())
    );

    // The heartbeat moves.
    let before = rows.iter().map(|w| w.last_heartbeat_at).max().unwrap();
    let beat = wait_until(Duration::from_secs(5), || async {
        worker::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .iter()
            .all(|w| w.last_heartbeat_at > before)
    })
    .await;
    assert!(beat, "heartbeats should advance");

    // SIGTERM: exit 0 and the row is marked stopped.
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_for_exit(&mut first, Duration::from_secs(10));
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "worker should exit 0 on SIGTERM"
    );
    let rows = worker::Entity::find().all(&db).await.unwrap();
    let stopped = rows.iter().find(|w| w.pid as u32 == first.id()).unwrap();
    assert!(stopped.stopped_at.is_some());
    let running = rows.iter().find(|w| w.pid as u32 == second.id()).unwrap();
    assert!(running.stopped_at.is_none());
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    assert_eq!(
        wait_for_exit(&mut second, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
    db.close().await.ok();
}

fn wait_for_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[tokio::test]
async fn a_bad_setting_stops_the_process_naming_the_variable() {
    let out = Command::new(freight_binary())
        .arg("worker")
        .env("WORKER_CONCURRENCY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WORKER_CONCURRENCY"), "{stderr}");
}

/// The configuration error for a bad key tells the operator to run `freight secrets
/// generate-key`, so that command must not need a valid key itself.
#[tokio::test]
async fn generate_key_works_while_the_secret_key_setting_is_malformed() {
    let out = Command::new(freight_binary())
        .args(["secrets", "generate-key"])
        .env("FREIGHT_SECRET_KEY", "not-a-key")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap();
    let ring = freight_core::secrets::Keyring::from_settings(Some(key.trim()), None);
    assert!(ring.is_ok_and(|r| r.is_enabled()), "a usable key: {key}");
}

#[tokio::test]
async fn a_process_refuses_a_schema_it_does_not_know_unless_it_migrates() {
    // An empty database with MIGRATE_ON_START=false: the worker names the fix and exits 1.
    let env = TestEnv::new().await;
    let empty = format!("{}_empty", env.db_name);
    let admin = Database::connect(freight_tests::admin_database_url())
        .await
        .unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE \"{empty}\""))
        .await
        .unwrap();
    let run = |migrate: &str| {
        Command::new(freight_binary())
            .arg("migrate")
            .env("DATABASE_URL", database_url(&empty))
            .env("MIGRATE_ON_START", migrate)
            .output()
            .unwrap()
    };
    let worker = Command::new(freight_binary())
        .arg("worker")
        .env("DATABASE_URL", database_url(&empty))
        .env("REDIS_URL", redis_url())
        .env("MIGRATE_ON_START", "false")
        .output()
        .unwrap();
    assert_eq!(worker.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&worker.stderr).contains("freight migrate"));
    // Two `freight migrate` at once: the advisory lock makes them take turns, both
    // succeed, and a third run has nothing to do.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run("false"));
        let b = s.spawn(|| run("false"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let outputs = [
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    ];
    // Exactly one of them applied the migrations; the other found nothing left to do.
    assert_eq!(
        outputs.iter().filter(|o| o.contains("applied")).count(),
        1,
        "{outputs:?}"
    );
    assert_eq!(
        outputs.iter().filter(|o| o.contains("up to date")).count(),
        1,
        "{outputs:?}"
    );
    let third = run("false");
    assert!(String::from_utf8_lossy(&third.stdout).contains("up to date"));
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        &format!("DROP DATABASE \"{empty}\" WITH (FORCE)"),
    )
    .await
    .unwrap();
}
