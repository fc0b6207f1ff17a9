//! `/health`, `/ready` (and `/api/v1/health`), the OpenAPI document and its docs page.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse},
};
use sea_orm::ConnectionTrait;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(ready_v1))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

/// Prometheus metrics of this api process (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics() -> String {
    freight_core::metrics::handle().render()
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: freight_core::VERSION,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub postgres: Check,
    pub redis: Check,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` when every dependency answers, else `unavailable`.
    pub status: &'static str,
    pub checks: Checks,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn check<F, E>(fut: F) -> Check
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = std::time::Instant::now();
    let result = tokio::time::timeout(CHECK_TIMEOUT, fut).await;
    let latency_ms = start.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(())) => Check {
            status: "ok",
            latency_ms,
            error: None,
        },
        // The dependency's own error text (hosts, addresses, versions) is logged, not
        // shown: /ready answers anyone.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Check {
                status: "unavailable",
                latency_ms,
                error: Some("the dependency returned an error".into()),
            }
        }
        Err(_) => Check {
            status: "unavailable",
            latency_ms,
            error: Some(format!("no answer within {CHECK_TIMEOUT:?}")),
        },
    }
}

async fn readiness(state: AppState) -> (StatusCode, Json<Readiness>) {
    let mut redis = state.redis.clone();
    let (postgres, redis) = tokio::join!(
        check(async { state.db.execute_unprepared("SELECT 1").await.map(|_| ()) }),
        check(async move { freight_core::queue::ping(&mut redis).await }),
    );
    let ok = postgres.status == "ok" && redis.status == "ok";
    let body = Readiness {
        status: if ok { "ok" } else { "unavailable" },
        checks: Checks { postgres, redis },
    };
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

/// Readiness: 200 when Postgres and Redis answer, else 503.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    readiness(state).await
}

/// Readiness (same as `/ready`).
#[utoipa::path(get, path = "/api/v1/health", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready_v1(State(state): State<AppState>) -> impl IntoResponse {
    readiness(state).await
}

/// The docs page: Scalar's API reference over `/api/v1/openapi.json`. The script loads in
/// the reader's browser; nothing is downloaded at build time.
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html>
  <head>
    <title>Freight API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <script id="api-reference" data-url="/api/v1/openapi.json"></script>
    <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
    <noscript>The browsable docs need JavaScript. The raw document is at <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</noscript>
  </body>
</html>"#,
    )
}
