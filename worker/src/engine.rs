//! What every batch needs: the pools, the queue, the connectors and this worker's identity.

use std::sync::{Arc, atomic::AtomicBool};

use freight_core::{
    config::Settings, connectors::Connectors, queue::Dispatcher, service::Services,
};
use sea_orm::DatabaseConnection;

use crate::{Wakeup, inflight::Inflight};

pub struct Engine {
    /// The use cases a worker runs: recording attempts, the reconciler's writes.
    pub services: Services,
    /// For reads and single statements (the same pool the services use).
    pub db: DatabaseConnection,
    pub dispatcher: Dispatcher,
    pub connectors: Connectors,
    pub settings: Arc<Settings>,
    pub worker_id: String,
    pub inflight: Arc<Inflight>,
    /// Wakes this process's queue fetch after it queued a batch itself.
    pub wakeup: Arc<Wakeup>,
    /// Set once shutdown begins: a slot then runs no further batch of its own accord.
    pub draining: AtomicBool,
}
