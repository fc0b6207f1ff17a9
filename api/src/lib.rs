//! Freight's HTTP API: a thin axum layer over `freight-core`.
//!
//! [`Application::build`] connects, migrates, binds the listener (port 0 in tests) and
//! assembles the router; [`Application::run_until_stopped`] serves until the shutdown
//! future resolves, then drains in-flight requests and stops background tasks.

#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod job_views;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod upload;
pub mod views;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Json, Router, routing::get};
use freight_core::{config::Settings, queue::connection, store::db};
use rand::{Rng, distributions::Alphanumeric};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::{auth::Authenticator, error::ApiError, state::AppState};

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Install the metrics recorder before the first request is counted.
        freight_core::metrics::handle();
        freight_core::metrics::set_tenant_labels(settings.metrics_tenant_labels);
        let db = db::connect(&settings.database)
            .await
            .context("cannot connect to Postgres (DATABASE_URL)")?;
        db::prepare_schema(&db, settings.migrate_on_start).await?;
        let redis = connection::connect(&settings.redis)
            .await
            .context("cannot connect to Redis (REDIS_URL)")?;
        let admin_token = match &settings.http.admin_token {
            Some(token) => token.expose_secret().to_owned(),
            None => generated_admin_token(),
        };
        warn_about_exposure(&settings);
        let auth = Arc::new(Authenticator::new(db.clone(), &settings.auth));
        let settings = Arc::new(settings);
        let state = AppState::new(db, redis, settings.clone(), auth, &admin_token);
        let router = middleware::apply(router(state.clone()), &settings.http);
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("cannot listen on {} (HTTP_ADDR)", settings.http.addr))?;
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let background = tokio::spawn(
            self.state
                .auth
                .authenticator
                .clone()
                .run_background(self.state.settings.auth.clone(), stop.clone()),
        );
        let gauges = tokio::spawn(routes::fleet::refresh_gauges(
            self.state.clone(),
            stop.clone(),
        ));
        let watch = tokio::spawn(
            self.state
                .job_watch
                .clone()
                .run(self.state.db.clone(), stop.clone()),
        );
        let views = tokio::spawn(
            self.state
                .job_views
                .clone()
                .refresh_in_background(self.state.db.clone(), stop.clone()),
        );
        tracing::info!(addr = %self.local_addr(), "api listening");
        let http = &self.state.settings.http;
        let limits = server::Limits {
            header_read_timeout: http.header_read_timeout,
            max_connections: http.max_connections,
            drain: http.shutdown_grace,
        };
        let served = server::serve(self.listener, self.router, limits, shutdown).await;
        stop.cancel();
        let _ = background.await;
        let _ = gauges.await;
        let _ = watch.await;
        let _ = views.await;
        served.context("the HTTP server failed")
    }
}

/// The full router, without the middleware stack.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::router())
        .split_for_parts();
    let mut openapi = serde_json::to_value(&openapi).expect("the OpenAPI document serialises");
    openapi::finish(&mut openapi);
    let openapi = Arc::new(openapi);
    router
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(openapi.as_ref().clone()) }),
        )
        .route("/api/v1/docs", get(routes::ops::docs_page))
        .route("/api/v1/docs/docs.js", get(routes::ops::docs_script))
        .route("/api/v1/docs/docs.css", get(routes::ops::docs_style))
        .fallback(|| async { ApiError::NotFound("no such route; see /api/v1/openapi.json".into()) })
        // After the routes and the fallback, so every request is counted, each by its
        // route's template (or `unmatched`).
        .layer(axum::middleware::from_fn(middleware::track_http))
        .with_state(state)
}

/// Settings that are fine on a laptop and dangerous on a server, said loudly at start:
/// `scripts/run`'s defaults must not silently become a deployment's.
fn warn_about_exposure(settings: &Settings) {
    let public = !settings.http.addr.ip().is_loopback();
    if settings.allow_private_destinations && public {
        let warning = format!(
            "FREIGHT_ALLOW_PRIVATE_DESTINATIONS=true while the api listens on {} (not loopback): \
             any tenant can point a job at this network's private addresses, this database's \
             included. Unset it unless every tenant is trusted.",
            settings.http.addr
        );
        tracing::warn!("{warning}");
        eprintln!("\n  WARNING: {warning}\n");
    }
    if settings.metrics_tenant_labels && settings.http.metrics_token.is_none() && public {
        tracing::warn!(
            "METRICS_TENANT_LABELS is on and METRICS_TOKEN is not set: /metrics shows tenant ids to anyone who can reach the api"
        );
    }
}

/// With no ADMIN_TOKEN set, a random one for this run, printed once.
fn generated_admin_token() -> String {
    let token: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    tracing::warn!(
        "ADMIN_TOKEN is not set: generated a one-off operator token for LOCAL USE ONLY; set ADMIN_TOKEN in production"
    );
    eprintln!(
        "\n  Operator token for this run (local use only; set ADMIN_TOKEN to choose your own):\n\n      {token}\n"
    );
    token
}

/// `freight api`: build, then serve until SIGTERM or Ctrl-C.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped(shutdown)
        .await
}
