//! Destinations: where a batch's records are delivered, behind one trait.
//!
//! A connector receives a batch's unfinished records and returns exactly one
//! [`RecordResult`] per record, in input order, classifying each as succeeded, transient
//! (retry later) or permanent (dead-letter now). It never returns an error for the batch
//! as a whole: a destination that cannot be reached makes every record transient.
//! When [`Stop::cancel`] fires, a connector starts no new write; records it did not
//! attempt come back [`Outcome::NotAttempted`]. When [`Stop::interrupt`] fires, it also
//! gives up on writes in flight, which come back transient.

use std::sync::Arc;

use entity::JobId;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub mod fields;
pub mod http;
pub mod network;
pub mod postgres;
pub mod resolver;

use crate::domain::delivery::{Outcome, RecordResult, RecordToDeliver};
use crate::domain::destination::Destination;

/// What stops a batch's delivery early.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Start no new write (a cancelled job, a stopping worker, a batch over its share).
    pub cancel: CancellationToken,
    /// Give up on writes in flight too, as transient failures: the batch yields its
    /// worker slot to other tenants' work, and its destination has not answered.
    pub interrupt: CancellationToken,
}

/// What a write given up on by [`Stop::interrupt`] reports.
pub const INTERRUPTED: &str = "interrupted: the destination had not answered when the batch yielded its worker slot to other tenants' work";

pub trait Connector: Send + Sync {
    /// Delivers `records` of job `job_id`. Returns one result per record, in order.
    fn deliver<'a>(
        &'a self,
        job_id: JobId,
        records: &'a [RecordToDeliver],
        stop: &'a Stop,
    ) -> BoxFuture<'a, Vec<RecordResult>>;
}

/// Shared connection state for every destination a worker talks to: one HTTP client
/// (one connection pool) for all HTTP destinations, one Postgres pool per destination URL.
pub struct Connectors {
    http: http::HttpClient,
    postgres: postgres::PoolCache,
}

impl Connectors {
    pub fn new(allow_private: bool) -> Self {
        Self {
            http: http::HttpClient::new(allow_private),
            postgres: postgres::PoolCache::new(allow_private),
        }
    }

    /// Connectors from clients configured by the caller (e.g. `HttpClient::with_concurrency`,
    /// `PoolCache::with_settings`).
    pub fn from_parts(http: http::HttpClient, postgres: postgres::PoolCache) -> Self {
        Self { http, postgres }
    }

    /// Closes every destination database pool (at shutdown). HTTP connections close when
    /// the client is dropped.
    pub async fn close(&self) {
        self.postgres.close().await;
    }

    /// The connector for one job's destination.
    pub fn for_destination(&self, destination: &Destination) -> Arc<dyn Connector> {
        match destination {
            Destination::Http(spec) => Arc::new(self.http.connector(spec.clone())),
            Destination::Postgres(spec) => Arc::new(self.postgres.connector(spec.clone())),
        }
    }
}
