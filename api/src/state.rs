//! What every handler can reach.

use std::sync::Arc;

use freight_core::{config::Settings, dispatch::Dispatcher};
use redis::aio::ConnectionManager;
use sea_orm::DatabaseConnection;

use crate::{
    auth::{Authenticator, digests_equal, token_digest},
    job_views::JobViews,
};

/// Cloned for every request (axum's `State`), so one reference count rather than a
/// clone of each connection handle.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub db: DatabaseConnection,
    pub redis: ConnectionManager,
    pub dispatcher: Dispatcher,
    pub settings: Arc<Settings>,
    pub auth: Arc<Authenticator>,
    pub job_watch: Arc<crate::events::JobWatch>,
    pub rate_limiter: Arc<crate::auth::rate_limit::RateLimiter>,
    /// Serialised job views by `(tenant, job)`, for `GET /api/v1/jobs/{id}`.
    pub job_views: JobViews,
    /// Upload transactions running at once on this replica: half the database pool.
    /// Each holds a connection for its `COPY` and borrows a second for a moment per
    /// chunk to number it (`repo::jobs::append_records`), so with at most half the pool
    /// in uploads the numbering always finds a connection.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Uploads running per tenant (`TENANT_MAX_CONCURRENT_UPLOADS`), taken before one
    /// of [`Shared::uploads`], so one tenant cannot hold them all.
    pub tenant_uploads: crate::limits::TenantSlots,
    admin_token_digest: [u8; 32],
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
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
        Self(Arc::new(Shared {
            db,
            redis,
            dispatcher,
            job_watch: Arc::default(),
            rate_limiter: Arc::default(),
            job_views: JobViews::new(settings.http.job_view_ttl),
            uploads: Arc::new(tokio::sync::Semaphore::new(
                (settings.database.max_connections as usize / 2).max(1),
            )),
            tenant_uploads: Default::default(),
            settings,
            auth,
            admin_token_digest: token_digest(admin_token),
        }))
    }

    pub fn is_admin_token(&self, presented: &str) -> bool {
        digests_equal(&token_digest(presented), &self.admin_token_digest)
    }

    /// Pushes newly queued batches after their transaction committed. A failed push is
    /// not the client's problem: the batches are queued in Postgres, and the reconciler
    /// re-dispatches what Redis did not get.
    pub async fn dispatch(&self, batch_ids: &[uuid::Uuid]) {
        if let Err(e) = self.dispatcher.push_now(batch_ids).await {
            tracing::warn!(error = %e, batches = batch_ids.len(), "dispatch failed; the reconciler will retry");
        }
    }

    /// Admits the tenant's queued jobs up to its limit and dispatches their first batches.
    pub async fn admit(&self, tenant_id: uuid::Uuid) -> Result<(), crate::error::ApiError> {
        let batches = freight_core::repo::lifecycle::admit_tenant(&self.db, tenant_id).await?;
        self.dispatch(&batches).await;
        Ok(())
    }
}
