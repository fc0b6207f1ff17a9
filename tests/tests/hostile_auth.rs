//! Authentication a client without a good key cannot make expensive: bad keys refused
//! from memory, failures limited per client address, hashing bounded, revocation that a
//! flood cannot outrun; and keys with less power (scopes, a cap per tenant).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use freight_api::{auth::Authenticator, error::ApiError};
use freight_tests::{TestApp, send_json, wait_until};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// `key` with its secret replaced by `n` spelled out (a well-formed, wrong key).
fn wrong(key: &str, n: usize) -> String {
    let (prefix, secret) = key.rsplit_once('_').unwrap();
    let tail = format!("{n:0>8}");
    format!("{prefix}_{}{tail}", &secret[..secret.len() - tail.len()])
}

fn authenticator(
    app: &TestApp,
    tweak: impl FnOnce(&mut freight_core::config::AuthSettings),
) -> Authenticator {
    let mut settings = app.env.settings.auth.clone();
    tweak(&mut settings);
    Authenticator::new(app.db.clone(), &settings)
}

/// A wrong secret, an unknown id, a revoked key, a suspended tenant's key: each costs at
/// most one Argon2, however often it is sent.
#[tokio::test]
async fn refused_keys_are_refused_from_memory() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (revoked_id, revoked) = app.create_key(tenant, json!({})).await;
    let (_, good) = app.create_key(tenant, json!({})).await;
    app.revoke_key(revoked_id).await;
    let auth = authenticator(&app, |_| {});

    for _ in 0..20 {
        assert!(matches!(
            auth.authenticate(&wrong(&good, 1)).await,
            Err(ApiError::Unauthorized(_))
        ));
    }
    assert_eq!(auth.argon2_runs(), 1, "one wrong secret, hashed once");
    let unknown = format!("frk_{}_{}", "z".repeat(16), "A".repeat(43));
    for _ in 0..20 {
        assert!(matches!(
            auth.authenticate(&unknown).await,
            Err(ApiError::Unauthorized(_))
        ));
    }
    assert_eq!(auth.argon2_runs(), 1, "an unknown id is never hashed");
    for _ in 0..20 {
        match auth.authenticate(&revoked).await {
            Err(ApiError::Unauthorized(m)) => assert!(m.contains("revoked"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(auth.argon2_runs(), 2, "a revoked key, hashed once");

    app.patch_tenant(tenant, json!({"status": "suspended"}))
        .await;
    for _ in 0..20 {
        assert!(matches!(
            auth.authenticate(&good).await,
            Err(ApiError::Forbidden(_))
        ));
    }
    assert_eq!(
        auth.argon2_runs(),
        3,
        "a suspended tenant's key, hashed once"
    );
    app.patch_tenant(tenant, json!({"status": "active"})).await;
    assert_eq!(
        auth.authenticate(&good).await.unwrap().tenant_id,
        tenant.into(),
        "reinstated at once"
    );
    assert_eq!(auth.argon2_runs(), 3);
}

/// Once a client address has used up its failures, every key it presents that is not
/// already verified is refused (429, `Retry-After`) before any lookup or hashing; other
/// addresses, and keys this replica verified before, are unaffected.
#[tokio::test]
async fn failures_are_limited_per_client_address() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (_, good) = app.create_key(tenant, json!({})).await;
    let (_, fresh) = app.create_key(tenant, json!({})).await;
    let auth = authenticator(&app, |s| s.failures_per_minute = 5);
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    let neighbour: IpAddr = "198.51.100.20".parse().unwrap();
    auth.authenticate_from(&good, Some(attacker)).await.unwrap();
    for n in 0..5 {
        assert!(matches!(
            auth.authenticate_from(&wrong(&good, n), Some(attacker))
                .await,
            Err(ApiError::Unauthorized(_))
        ));
    }
    let hashed = auth.argon2_runs();
    for n in 5..50 {
        match auth
            .authenticate_from(&wrong(&good, n), Some(attacker))
            .await
        {
            Err(ApiError::TooManyRequests { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(12))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        auth.argon2_runs(),
        hashed,
        "a limited client costs no hashing"
    );
    assert!(matches!(
        auth.authenticate_from(&fresh, Some(attacker)).await,
        Err(ApiError::TooManyRequests { .. })
    ));
    assert!(
        auth.authenticate_from(&good, Some(attacker)).await.is_ok(),
        "a verified key still works"
    );
    assert!(
        auth.authenticate_from(&fresh, Some(neighbour))
            .await
            .is_ok(),
        "another client is not limited"
    );

    // Over HTTP, as the api answers it.
    let app = TestApp::spawn_with(|s| s.auth.failures_per_minute = 3).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let res = app
            .tenant(&wrong(&key, n), Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(&statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(&statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 3]);
}

/// Hashing has one slot per core and a bounded queue: when both are taken, a key that
/// needs hashing gets a 503 with `Retry-After` at once, and so does a key creation.
#[tokio::test]
async fn a_full_hashing_queue_sheds_at_once() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (_, key) = app.create_key(tenant, json!({})).await;
    let auth = authenticator(&app, |s| s.verify_queue = 0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut held = Vec::new();
    for _ in 0..cores {
        held.push(auth.hashing_slot().await.unwrap());
    }
    let started = Instant::now();
    match auth.authenticate(&key).await {
        Err(ApiError::Overloaded { retry_after, .. }) => {
            assert!(retry_after >= Duration::from_secs(1))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shed, not queued"
    );
    drop(held);
    assert!(auth.authenticate(&key).await.is_ok());
}

/// The attack on revocation: a flood of wrong secrets keeps one replica's hashing slots
/// busy while a victim key's first use there waits behind it, and the key is revoked
/// through another replica meanwhile. The key must stop working within 5 s of its
/// revocation, flood or not (a verification that read the key's row before it queued used
/// to cache the key for a minute once its turn came, past the revocation poll's window).
#[tokio::test]
async fn a_revoked_key_stops_working_within_5_s_during_a_flood() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    // The flood aims at a key whose stored hash is twenty times the default cost (a
    // deployment may choose costlier parameters): each wrong secret costs the replica
    // about that, which a handful of clients turns into a long queue.
    let known = costly_key(&app, tenant).await;
    let (victim_id, victim) = app.create_key(tenant, json!({})).await;
    let replica = freight_api::Application::build(app.env.settings.clone())
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", replica.port());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(replica.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let url = format!("{base}/api/v1/jobs");
    // 100 clients, each sending wrong secrets back to back (pausing when shed): unbounded,
    // that queue held a newcomer's verification for 100 costly runs over the cores, well
    // over 5 s.
    let flood_until = Instant::now() + Duration::from_secs(12);
    let flood = join_all((0..100).map(|c| {
        let (client, url, known) = (app.client.clone(), url.clone(), known.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < flood_until {
                let res = client
                    .get(&url)
                    .bearer_auth(wrong(&known, c * 100_000 + n))
                    .send()
                    .await;
                if res.is_ok_and(|r| r.status() != StatusCode::UNAUTHORIZED) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                n += 1;
            }
        })
    }));
    let flood = tokio::spawn(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The victim's first use queues behind the flood; it is revoked while it waits.
    let on_replica = |key: String| {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let first = tokio::spawn(on_replica(victim.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.revoke_key(victim_id).await;
    let revoked_at = Instant::now();
    let _ = first.await;
    // From 5 s after the revocation, while the flood still runs, it never works again.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(revoked_at.elapsed())).await;
    while Instant::now() < flood_until {
        let status = on_replica(victim.clone()).await;
        assert_ne!(
            status,
            StatusCode::OK,
            "the revoked key still works {:?} after its revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flood.await.unwrap();
    assert_eq!(on_replica(victim).await, StatusCode::UNAUTHORIZED);
}

/// A key of `tenant` stored with Argon2id at twenty times the default time cost; returns
/// the key (whose secret no request below sends: they send wrong ones).
async fn costly_key(app: &TestApp, tenant: Uuid) -> String {
    use argon2::{Algorithm, Argon2, Params, Version, password_hash::PasswordHasher};
    let hash = tokio::task::spawn_blocking(|| {
        let salt = password_hash::SaltString::generate(&mut password_hash::rand_core::OsRng);
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19_456, 40, 1, None).unwrap(),
        )
        .hash_password(b"not the secret anyone sends", &salt)
        .unwrap()
        .to_string()
    })
    .await
    .unwrap();
    let public_id: String = Uuid::new_v4().simple().to_string()[..16].to_owned();
    sea_orm::ConnectionTrait::execute_raw(
        &app.db,
        sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO api_keys (id, tenant_id, public_id, secret_hash, created_at)
             VALUES ($1, $2, $3, $4, now())",
            [
                Uuid::now_v7().into(),
                tenant.into(),
                public_id.clone().into(),
                hash.into(),
            ],
        ),
    )
    .await
    .unwrap();
    format!("frk_{public_id}_{}", "x".repeat(43))
}

/// A key may be limited to some scopes; a request outside them is a 403 naming the scope
/// it lacks. Every tenant route of the OpenAPI document is held to the rule: reads need
/// `jobs:read`, other methods `jobs:write`, the key routes `keys:manage`.
#[tokio::test]
async fn keys_only_do_what_their_scopes_allow() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (_, reader) = app
        .create_key(tenant, json!({"scopes": ["jobs:read"]}))
        .await;
    let (_, writer) = app
        .create_key(tenant, json!({"scopes": ["jobs:read", "jobs:write"]}))
        .await;
    let (_, full) = app.create_key(tenant, json!({})).await;

    let job = freight_tests::inline_job(2);
    let res = app
        .tenant(&reader, Method::POST, "/api/v1/jobs")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("`jobs:write`"),
        "{problem}"
    );
    let created = app.create_job(&writer, &job).await;
    let id = created["id"].as_str().unwrap();
    let res = app
        .tenant(&reader, Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .tenant(&writer, Method::POST, "/api/v1/api-keys")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "a job key cannot mint keys"
    );
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`keys:manage`"),
        "{problem}"
    );
    let minted: Value = send_json(
        app.tenant(&full, Method::POST, "/api/v1/api-keys")
            .json(&json!({"scopes": ["jobs:read"]})),
    )
    .await;
    assert_eq!(minted["scopes"], json!(["jobs:read"]));
    for bad in [
        json!({"scopes": []}),
        json!({"scopes": ["jobs:admin"]}),
        json!({"scopes": "jobs:read"}),
    ] {
        let res = app
            .tenant(&full, Method::POST, "/api/v1/api-keys")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_client_error() && res.status() != StatusCode::FORBIDDEN,
            "{bad}: {}",
            res.status()
        );
    }

    // Every tenant operation of the document: the read-only key is refused exactly the
    // writes (whatever else the request lacks, the scope is checked first).
    let doc: Value = send_json(app.request(Method::GET, "/api/v1/openapi.json")).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let tenant_route = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
            if !tenant_route {
                continue;
            }
            let concrete = path
                .replace("{id}", &Uuid::new_v4().to_string())
                .replace("{key_id}", &Uuid::new_v4().to_string());
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = app
                .tenant(&reader, method.clone(), &concrete)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status();
            let reads = method == Method::GET && !path.starts_with("/api/v1/api-keys");
            assert_eq!(
                status == StatusCode::FORBIDDEN,
                !reads,
                "{method} {path}: {status}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} tenant operations in the document"
    );
}

/// A tenant holds at most `TENANT_MAX_API_KEYS` active keys; revoking one makes room.
#[tokio::test]
async fn a_tenant_holds_a_bounded_number_of_keys() {
    let app = TestApp::spawn_with(|s| s.tenant_max_api_keys = 3).await;
    let tenant = app.create_tenant("acme").await;
    let (first, key) = app.create_key(tenant, json!({})).await;
    app.create_key(tenant, json!({})).await;
    app.create_key(tenant, json!({})).await;
    for req in [
        app.tenant(&key, Method::POST, "/api/v1/api-keys"),
        app.admin(
            Method::POST,
            &format!("/api/v1/admin/tenants/{tenant}/api-keys"),
        ),
    ] {
        let res = req.json(&json!({})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "api_keys", "{problem}");
    }
    app.revoke_key(first).await;
    assert!(
        wait_until(Duration::from_secs(2), || async {
            app.admin(
                Method::POST,
                &format!("/api/v1/admin/tenants/{tenant}/api-keys"),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status()
                == StatusCode::CREATED
        })
        .await
    );
}
