//! What every handler can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use freight_core::{config::Settings, queue::Dispatcher, service::Services};
use redis::aio::ConnectionManager;
use sea_orm::DatabaseConnection;

use crate::{
    auth::{Authenticator, Gate},
    job_views::JobViews,
};

/// Cloned for every request (axum's `State`), so one reference count rather than a
/// clone of each connection handle.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// The use cases: what a handler that changes anything calls.
    pub services: Services,
    /// For reads (the same pool the services use).
    pub db: DatabaseConnection,
    pub redis: ConnectionManager,
    pub settings: Arc<Settings>,
    /// Key verification, rate limits, the operator token: what the auth extractors need.
    pub auth: Gate,
    pub job_watch: Arc<crate::events::JobWatch>,
    /// Serialised job views by `(tenant, job)`, for `GET /api/v1/jobs/{id}`.
    pub job_views: JobViews,
    /// Uploads running per tenant on this replica (`TENANT_MAX_CONCURRENT_UPLOADS`), so
    /// one tenant cannot hold every upload turn the services allow.
    pub tenant_uploads: crate::limits::TenantSlots,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Gate {
    fn from_ref(state: &AppState) -> Gate {
        state.auth.clone()
    }
}

impl FromRef<AppState> for crate::upload::MaxRecordBytes {
    fn from_ref(state: &AppState) -> Self {
        Self(state.settings.http.max_record_bytes)
    }
}

impl AppState {
    pub fn new(
        db: DatabaseConnection,
        redis: ConnectionManager,
        settings: Arc<Settings>,
        auth: Arc<Authenticator>,
        admin_token: &str,
    ) -> Self {
        let dispatcher = Dispatcher::new(redis.clone(), &settings.redis.queue);
        let auth = Gate::new(auth, &settings, admin_token);
        Self(Arc::new(Shared {
            services: Services::new(db.clone(), dispatcher, settings.clone()),
            db,
            redis,
            job_watch: Arc::default(),
            job_views: JobViews::new(settings.http.job_view_ttl),
            tenant_uploads: Default::default(),
            settings,
            auth,
        }))
    }
}
