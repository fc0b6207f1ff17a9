//! Use cases: each public method is one thing a tenant, an operator or a worker asks of
//! Freight. A use case begins and commits its own transactions (the store's functions
//! never do: `scripts/check-layers` refuses it) and then does what must follow the commit:
//! it pushes the batches the commit queued and counts what finished.
//!
//! Handlers and the worker parse, call one of these, and render or act on the result.

mod deliveries;
mod jobs;
mod keys;
mod reconcile;
mod retries;
pub mod secrets;
mod tenants;

use std::sync::Arc;

use entity::{BatchId, TenantId};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio::sync::Semaphore;

pub use deliveries::Recorded;
pub use jobs::{Appended, Cancelled, Created};
pub use retries::{Requeued, RetryTarget};

use crate::{config::Settings, error::Result, queue::Dispatcher, store::windows};

/// What the use cases need: the database, the dispatch queue and the settings. Cheap to
/// clone.
#[derive(Clone)]
pub struct Services(Arc<Parts>);

pub struct Parts {
    pub db: DatabaseConnection,
    pub dispatcher: Dispatcher,
    pub settings: Arc<Settings>,
    /// Uploads running at once in this process: half the database pool. Each holds a
    /// connection for its `COPY` and borrows a second for a moment per chunk to number
    /// it, so with at most half the pool in uploads the numbering always finds one.
    uploads: Semaphore,
}

impl std::ops::Deref for Services {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl Services {
    pub fn new(db: DatabaseConnection, dispatcher: Dispatcher, settings: Arc<Settings>) -> Self {
        let uploads = Semaphore::new((settings.database.max_connections as usize / 2).max(1));
        Self(Arc::new(Parts {
            db,
            dispatcher,
            settings,
            uploads,
        }))
    }

    /// Pushes batches a commit queued. A failed push is not the caller's problem: the
    /// batches are queued in Postgres, and the reconciler re-dispatches what Redis did
    /// not get.
    pub async fn dispatch(&self, batch_ids: &[BatchId]) {
        if let Err(e) = self.dispatcher.push_now(batch_ids).await {
            tracing::warn!(error = %e, batches = batch_ids.len(), "dispatch failed; the reconciler will retry");
        }
    }

    /// Admits the tenant's queued jobs up to its limit, in a transaction of its own, and
    /// dispatches their first batches.
    pub async fn admit(&self, tenant_id: TenantId) -> Result<()> {
        let batches = self.admitted(tenant_id).await?;
        self.dispatch(&batches).await;
        Ok(())
    }

    /// [`admit`](Self::admit) without the dispatch: the batches to push.
    pub async fn admitted(&self, tenant_id: TenantId) -> Result<Vec<BatchId>> {
        let txn = self.db.begin().await?;
        let batches = windows::admit(&txn, tenant_id).await?;
        txn.commit().await?;
        Ok(batches)
    }
}
