//! `/health`, `/ready` (and `/api/v1/health`), the OpenAPI document and its docs page.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ApiError, state::AppState};

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

/// Prometheus metrics of this api process (text exposition format). With
/// `METRICS_TOKEN` set, only `Authorization: Bearer <METRICS_TOKEN>` gets them: they
/// carry tenant ids when `METRICS_TENANT_LABELS` is on, and this is the tenants' port.
#[utoipa::path(get, path = "/metrics", tag = "ops", security((), ("metrics_token" = [])),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, body = crate::error::Problem, description = "`METRICS_TOKEN` is set and was not sent")))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<String, ApiError> {
    if let Some(token) = &state.settings.http.metrics_token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !freight_core::secrets::tokens_match(sent.trim(), token.expose_secret()) {
            return Err(ApiError::Unauthorized(
                "send `Authorization: Bearer <METRICS_TOKEN>` for the metrics".into(),
            ));
        }
    }
    Ok(freight_core::metrics::handle().render())
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
        check(freight_core::store::db::ping(&state.db)),
        check(async move { freight_core::queue::connection::ping(&mut redis).await }),
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

/// The browsable API reference: a page, its style and its script, all served from the
/// binary (nothing loads from a CDN), rendering `/api/v1/openapi.json`. The script only
/// ever inserts the document's texts as text; the policy below lets the page load
/// nothing but itself.
pub async fn docs_page() -> Response {
    static_asset(
        include_str!("../../assets/docs.html"),
        "text/html; charset=utf-8",
    )
}

pub async fn docs_script() -> Response {
    static_asset(
        include_str!("../../assets/docs.js"),
        "text/javascript; charset=utf-8",
    )
}

pub async fn docs_style() -> Response {
    static_asset(
        include_str!("../../assets/docs.css"),
        "text/css; charset=utf-8",
    )
}

fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                ),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
