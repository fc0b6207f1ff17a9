//! Health, readiness, the OpenAPI document, request ids and the problem documents that
//! middleware produces.

use std::collections::BTreeSet;

use freight_tests::{TestApp, send_json};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness_report_their_checks() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for path in ["/ready", "/api/v1/health"] {
        let res = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["checks"]["postgres"]["status"], "ok");
        assert_eq!(body["checks"]["redis"]["status"], "ok");
    }
}

#[tokio::test]
async fn readiness_is_503_while_redis_is_unreachable() {
    // The api needs Redis to start, so it runs against a throwaway redis-server of this
    // test's own, which the test then kills (never the shared one).
    let mut redis = freight_tests::ThrowawayRedis::start().await;
    let url = redis.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.redis.url = secrecy::SecretString::from(url.clone());
        s.redis.response_timeout = std::time::Duration::from_millis(500);
        s.redis.connection_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    assert_eq!(
        app.request(Method::GET, "/ready")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    redis.kill();
    let res = app.request(Method::GET, "/ready").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["postgres"]["status"], "ok");
    assert_eq!(body["checks"]["redis"]["status"], "unavailable");
    // Liveness is unaffected.
    assert_eq!(
        app.request(Method::GET, "/health")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn request_ids_are_set_and_echoed() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    let id = res
        .headers()
        .get("x-request-id")
        .expect("a request id is set")
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let res = app
        .request(Method::GET, "/health")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
    // Errors carry it too.
    let res = app
        .request(Method::GET, "/api/v1/jobs")
        .header("x-request-id", "err-7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["x-request-id"], "err-7");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_documents() {
    let app = TestApp::spawn().await;
    for (method, path, status) in [
        (Method::GET, "/nope", StatusCode::NOT_FOUND),
        (
            Method::DELETE,
            "/api/v1/jobs",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::PATCH, "/health", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let res = app.request(method.clone(), path).send().await.unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], status.as_u16());
        assert!(
            body["title"].is_string() && body["type"].is_string() && body["detail"].is_string()
        );
    }
}

#[tokio::test]
async fn slow_requests_time_out_with_a_problem() {
    // A body that trickles in slower than the 500 ms request timeout: the server stops
    // waiting and answers 408 with a problem document.
    let app =
        TestApp::spawn_with(|s| s.http.request_timeout = std::time::Duration::from_millis(500))
            .await;
    let chunks = futures::stream::unfold(0, |i| async move {
        match i {
            0 => Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"name\":")),
                1,
            )),
            1 => {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                Some((Ok(bytes::Bytes::from_static(b"\"slow\"}")), 2))
            }
            _ => None,
        }
    });
    let started = std::time::Instant::now();
    let res = app
        .request(Method::POST, "/api/v1/admin/tenants")
        .bearer_auth(freight_tests::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "answered at the timeout"
    );
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let app = TestApp::spawn_with(|s| {
        s.http.cors_allowed_origins = vec!["https://console.example.com".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/api/v1/jobs")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://console.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::GET, "/api/v1/openapi.json")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-encoding"], "gzip");
}

/// The OpenAPI document is 3.1, and describes every route the api serves, each with
/// its problem responses.
#[tokio::test]
async fn openapi_describes_every_endpoint() {
    let app = TestApp::spawn().await;
    let doc: Value = send_json(app.request(Method::GET, "/api/v1/openapi.json")).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let described: BTreeSet<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    for expected in [
        "POST /api/v1/admin/tenants",
        "GET /api/v1/admin/tenants",
        "GET /api/v1/admin/tenants/{id}",
        "POST /api/v1/admin/tenants/{id}/api-keys",
        "GET /api/v1/admin/tenants/{id}/api-keys",
        "DELETE /api/v1/admin/api-keys/{key_id}",
        "POST /api/v1/api-keys",
        "GET /api/v1/api-keys",
        "DELETE /api/v1/api-keys/{key_id}",
        "GET /api/v1/admin/audit",
        "POST /api/v1/jobs",
        "GET /api/v1/jobs",
        "GET /api/v1/jobs/{id}",
        "POST /api/v1/jobs/{id}/records",
        "POST /api/v1/jobs/{id}/start",
        "GET /health",
        "GET /ready",
        "GET /api/v1/health",
    ] {
        assert!(
            described.contains(expected),
            "{expected} missing from the OpenAPI document: {described:?}"
        );
    }
    // Every described route exists: an unauthenticated call answers anything but 404/405.
    for op in &described {
        let (method, path) = op.split_once(' ').unwrap();
        let concrete = path
            .replace("{id}", &uuid::Uuid::nil().to_string())
            .replace("{key_id}", &uuid::Uuid::nil().to_string());
        let res = app
            .request(method.parse().unwrap(), &concrete)
            .send()
            .await
            .unwrap();
        assert!(
            res.status() != StatusCode::NOT_FOUND || concrete.contains("0000"),
            "{op} is described but not routed"
        );
        assert_ne!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{op} is described but not routed"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "Problem",
        "JobView",
        "CreateJobRequest",
        "TenantView",
        "CreatedApiKey",
        "AuditEvent",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    let docs = app
        .request(Method::GET, "/api/v1/docs")
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("/api/v1/openapi.json"));
}

// Regressions found by Schemathesis (scripts/schemathesis).

#[tokio::test]
async fn a_json_array_is_not_an_object_body() {
    // serde fills a struct from an array, field by field: `["acme"]` created a tenant named
    // `acme`, and `[null, null]` an API key.
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    for (req, body) in [
        (
            app.admin(Method::POST, "/api/v1/admin/tenants"),
            r#"["sneaky"]"#,
        ),
        (
            app.tenant(&key, Method::POST, "/api/v1/api-keys"),
            "[null, null]",
        ),
        (
            app.tenant(&key, Method::PUT, "/api/v1/retry-policies"),
            "[3]",
        ),
        (app.tenant(&key, Method::POST, "/api/v1/jobs"), "[]"),
    ] {
        let res = req
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(app.scalar("SELECT count(*) FROM tenants").await, 1);
    assert_eq!(app.scalar("SELECT count(*) FROM api_keys").await, 1);
}

#[tokio::test]
async fn the_openapi_document_says_what_errors_and_events_look_like() {
    let app = TestApp::spawn().await;
    let doc: Value = send_json(app.request(Method::GET, "/api/v1/openapi.json")).await;
    // Errors are served as application/problem+json, so that is what is documented.
    let mut problems = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, res) in op["responses"].as_object().unwrap() {
                let Some(content) = res["content"].as_object() else {
                    continue;
                };
                for (media, c) in content {
                    if c["schema"]["$ref"] == "#/components/schemas/Problem" {
                        assert_eq!(
                            media, "application/problem+json",
                            "{method} {path} {status}"
                        );
                        problems += 1;
                    }
                }
            }
            // Every tenant route can answer 401 and 429; every operator route 401 and 403.
            let security = op["security"].to_string();
            let statuses = op["responses"].as_object().unwrap();
            if security.contains("api_key") {
                for s in ["401", "429"] {
                    assert!(statuses.contains_key(s), "{method} {path} lacks {s}");
                }
            }
            if security.contains("admin_token") {
                for s in ["401", "403"] {
                    assert!(statuses.contains_key(s), "{method} {path} lacks {s}");
                }
            }
            if op["requestBody"]["content"]["application/json"].is_object() {
                for s in ["400", "413", "415"] {
                    assert!(statuses.contains_key(s), "{method} {path} lacks {s}");
                }
            }
        }
    }
    assert!(problems > 50, "{problems}");
    // The event stream is documented event by event: `event`, `id`, `data`.
    let stream = &doc["paths"]["/api/v1/jobs/{id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    let name = stream["$ref"].as_str().expect("a named schema");
    let schema = &doc["components"]["schemas"][name.rsplit('/').next().unwrap()];
    for field in ["event", "id", "data"] {
        assert!(
            schema["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{schema}"
        );
    }
    // And a real stream matches it.
    let (_, key) = app.tenant_with_key("acme").await;
    let job = app
        .create_job(
            &key,
            &serde_json::json!({"source": {"type": "upload"},
                                "destination": {"type": "http", "url": "http://127.0.0.1:9/x"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    app.tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    let body = app
        .tenant(&key, Method::GET, &format!("/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fields: Vec<&str> = body
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(fields, ["event", "id", "data"], "{body}");
    let data = body.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap()["status"],
        "cancelled"
    );
}
