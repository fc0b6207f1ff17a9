//! The auth matrix: every way a key can be wrong, and where operator and tenant
//! credentials are refused.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use freight_api::{auth::Authenticator, error::ApiError};
use freight_tests::{ADMIN_TOKEN, TestApp, send_json, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn status_with(
    app: &TestApp,
    auth: Option<&str>,
    path: &str,
) -> (StatusCode, Option<String>, Value) {
    let mut req = app.request(Method::GET, path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let ct = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ct, "application/problem+json",
        "{path} answered {status} without a problem document"
    );
    (status, www, res.json().await.unwrap())
}

#[tokio::test]
async fn tenant_routes_refuse_every_bad_key_with_401() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let (_, expiring) = app
        .create_key(
            tenant,
            json!({"expires_at": (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()}),
        )
        .await;
    let public = key.rsplit_once('_').unwrap().0;
    let wrong_secret = format!("{public}_{}", "A".repeat(43));
    let unknown = format!("frk_{}_{}", "z".repeat(16), "B".repeat(43));
    let cases = [
        ("no key", None),
        ("malformed", Some("Bearer not-a-key".to_owned())),
        ("wrong scheme", Some(format!("Basic {key}"))),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
        ("operator token", Some(format!("Bearer {ADMIN_TOKEN}"))),
    ];
    for (what, auth) in cases {
        let (status, www, body) = status_with(&app, auth.as_deref(), "/api/v1/jobs").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(www.as_deref(), Some("Bearer"), "{what}");
        assert_eq!(body["status"], 401);
    }
    // The good key works, through either header.
    let ok = app
        .tenant(&key, Method::GET, "/api/v1/jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = app
        .request(Method::GET, "/api/v1/jobs")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // An expiring key works until it expires, then is refused (cache or not).
    assert_eq!(
        app.tenant(&expiring, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, body) =
        status_with(&app, Some(&format!("Bearer {expiring}")), "/api/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_five_seconds_on_every_replica() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let (key_id, other) = app.create_key(tenant, json!({"name": "second"})).await;
    // A second api replica on the same database: it has cached the key before revocation.
    let replica = freight_api::Application::build(app.env.settings.clone())
        .await
        .unwrap();
    let replica_base = format!("http://127.0.0.1:{}", replica.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(replica.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let on_replica = |k: String| {
        let client = app.client.clone();
        let url = format!("{replica_base}/api/v1/jobs");
        async move {
            client
                .get(url)
                .bearer_auth(k)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(on_replica(other.clone()).await, StatusCode::OK);
    assert_eq!(
        app.tenant(&other, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    app.revoke_key(key_id).await;
    // The revoking replica refuses at once.
    assert_eq!(
        app.tenant(&other, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The other replica within 5 s.
    let started = std::time::Instant::now();
    let refused = wait_until(Duration::from_secs(5), || async {
        on_replica(other.clone()).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        refused,
        "the replica still accepted the revoked key after 5 s"
    );
    println!(
        "revocation reached the second replica in {:?}",
        started.elapsed()
    );
    // The tenant's other key is unaffected.
    assert_eq!(on_replica(key.clone()).await, StatusCode::OK);
    let _ = stop.send(());
}

/// Argon2 runs once per key and replica while the key is in use: not again on each
/// revocation poll that still sees the tenant's recent creation or change, and not when
/// the cached entry is re-checked after `AUTH_CACHE_TTL` (which reads the row, and so
/// still sees a revocation the poll would have missed).
#[tokio::test]
async fn a_key_in_use_is_hashed_once_and_still_rechecked() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let (key_id, key) = app.create_key(tenant, json!({})).await;
    let mut settings = app.env.settings.auth.clone();
    settings.cache_ttl = Duration::from_millis(300);
    settings.revocation_poll_interval = Duration::from_millis(100);
    let auth = Arc::new(Authenticator::new(app.db.clone(), &settings));
    let stop = CancellationToken::new();
    tokio::spawn(auth.clone().run_background(settings.clone(), stop.clone()));

    // The tenant was created a moment ago: for the next 5 s every poll reports it changed.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let principal = auth.authenticate(&key).await.expect("a valid key");
        assert_eq!(principal.tenant_id, tenant.into());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        auth.argon2_runs(),
        1,
        "polls and TTL re-checks must not run Argon2 again"
    );
    let last = if key.ends_with('A') { 'B' } else { 'A' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    assert!(matches!(
        auth.authenticate(&wrong).await,
        Err(ApiError::Unauthorized(_))
    ));
    assert_eq!(
        auth.authenticate(&key).await.unwrap().tenant_id,
        tenant.into()
    );

    // A real change of the tenant still drops the key at the next poll.
    app.patch_tenant(tenant, json!({"status": "suspended"}))
        .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(
        auth.authenticate(&key).await,
        Err(ApiError::Forbidden(_))
    ));
    app.patch_tenant(tenant, json!({"status": "active"})).await;
    assert_eq!(
        auth.authenticate(&key).await.unwrap().tenant_id,
        tenant.into()
    );

    // With the poll stopped, the TTL re-check alone sees a revocation.
    stop.cancel();
    app.revoke_key(key_id).await;
    tokio::time::sleep(settings.cache_ttl + Duration::from_millis(50)).await;
    assert!(matches!(
        auth.authenticate(&key).await,
        Err(ApiError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn operator_routes_refuse_tenant_keys_with_403_and_strangers_with_401() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    for path in [
        "/api/v1/admin/tenants",
        &format!("/api/v1/admin/tenants/{tenant}"),
        &format!("/api/v1/admin/tenants/{tenant}/api-keys"),
    ] {
        let (status, _, _) = status_with(&app, Some(&format!("Bearer {key}")), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        let (status, _, _) = status_with(&app, None, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _, _) = status_with(&app, Some("Bearer wrong-operator-token"), path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let ok = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn keys_are_shown_once_and_listed_without_secrets() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let res = app
        .admin(
            Method::POST,
            &format!("/api/v1/admin/tenants/{tenant}/api-keys"),
        )
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    let secret = key.rsplit('_').next().unwrap();
    assert!(secret.len() >= 22, "at least 128 bits of secret");
    let stored: String = sea_orm::ConnectionTrait::query_one_raw(
        &app.db,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT secret_hash FROM api_keys",
        ),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get("", "secret_hash")
    .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(secret));

    for listing in [
        app.admin(
            Method::GET,
            &format!("/api/v1/admin/tenants/{tenant}/api-keys"),
        )
        .send()
        .await
        .unwrap(),
        app.tenant(&key, Method::GET, "/api/v1/api-keys")
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(listing.status(), StatusCode::OK);
        let text = listing.text().await.unwrap();
        assert!(
            !text.contains(secret),
            "a listing leaked the secret: {text}"
        );
        assert!(text.contains(created["prefix"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn tenants_rotate_their_own_keys() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let res = app
        .tenant(&key, Method::POST, "/api/v1/api-keys")
        .json(&json!({"name": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let new: Value = res.json().await.unwrap();
    let new_key = new["key"].as_str().unwrap().to_owned();
    let keys: Vec<Value> = send_json(app.tenant(&new_key, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(keys.len(), 2);
    let old_id = keys.iter().find(|k| k["name"] != "new").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .tenant(
            &new_key,
            Method::DELETE,
            &format!("/api/v1/api-keys/{old_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.tenant(&key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.tenant(&new_key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Another tenant's key id is not found, and stays valid.
    let (_, other_key) = app.tenant_with_key("globex").await;
    let other_keys: Vec<Value> =
        send_json(app.tenant(&other_key, Method::GET, "/api/v1/api-keys")).await;
    let other_id = other_keys[0]["id"].as_str().unwrap();
    let res = app
        .tenant(
            &new_key,
            Method::DELETE,
            &format!("/api/v1/api-keys/{other_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.tenant(&other_key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tenant_limits_are_checked_up_to_their_maximum() {
    let app = TestApp::spawn().await;
    let create = |body: Value| {
        app.admin(Method::POST, "/api/v1/admin/tenants")
            .json(&body)
            .send()
    };
    let res = create(
        json!({"name": "big", "rate_limit_per_second": 1_000_000, "max_concurrent_jobs": 10_000}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let tenant: Value = res.json().await.unwrap();
    assert_eq!(tenant["rate_limit_burst"], 1_000_000);
    for (body, field) in [
        (
            json!({"name": "x", "rate_limit_per_second": 1_000_001}),
            "rate_limit_per_second",
        ),
        (
            json!({"name": "x", "max_concurrent_jobs": 0}),
            "max_concurrent_jobs",
        ),
        (json!({"name": "nul\u{0}name"}), "name"),
        (json!({}), "name"),
    ] {
        let res = create(body.clone()).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let dup = create(json!({"name": "big"})).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/api/v1/admin/tenants")
        .json(&json!({"name": "chatty", "rate_limit_per_second": 2}))
        .send()
        .await
        .unwrap();
    let tenant: Value = res.json().await.unwrap();
    assert_eq!(tenant["rate_limit_burst"], 4);
    let (_, key) = app
        .create_key(tenant["id"].as_str().unwrap().parse().unwrap(), json!({}))
        .await;
    let (_, calm) = app.tenant_with_key("calm").await;
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let res = app
            .tenant(&key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == StatusCode::TOO_MANY_REQUESTS && refused.is_none() {
            refused = Some(res);
        }
    }
    assert!(
        statuses.iter().filter(|&&s| s == 200).count() >= 4,
        "the burst passes: {statuses:?}"
    );
    let refused = refused.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    assert_eq!(refused.headers()["ratelimit-limit"], "2");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // Another tenant is not slowed down, and the limited one recovers.
    assert_eq!(
        app.tenant(&calm, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        app.tenant(&key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn operators_change_a_tenants_status_and_limits() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let path = format!("/api/v1/admin/tenants/{tenant}");
    assert_eq!(
        app.tenant(&key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let body = app
        .patch_tenant(
            tenant,
            json!({"status": "suspended", "rate_limit_per_second": 50, "max_records_per_job": 1000}),
        )
        .await;
    assert_eq!(body["status"], "suspended");
    assert_eq!(body["rate_limit_per_second"], 50);
    assert_eq!(body["max_records_per_job"], 1000);
    // The cached key stops working within seconds.
    let refused = wait_until(Duration::from_secs(5), || async {
        app.tenant(&key, Method::GET, "/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::FORBIDDEN
    })
    .await;
    assert!(refused, "a suspended tenant's key still works");
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({"status": "active", "max_records_per_job": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["max_records_per_job"],
        Value::Null
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            app.tenant(&key, Method::GET, "/api/v1/jobs")
                .send()
                .await
                .unwrap()
                .status()
                == StatusCode::OK
        })
        .await
    );
    for (body, field) in [
        (json!({"status": "asleep"}), "status"),
        (json!({"rate_limit_burst": 0}), "rate_limit_burst"),
        (json!({"max_records_per_job": 0}), "max_records_per_job"),
    ] {
        let res = app
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["errors"][0]["field"],
            field
        );
    }
    let res = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/admin/tenants/{}", uuid::Uuid::new_v4()),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .tenant(&key, Method::PATCH, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
