//! A short-lived cache of `GET /api/v1/jobs/{id}` bodies: a status poll costs two
//! queries, and clients poll.
//!
//! A body is served for at most `JOB_VIEW_CACHE_TTL` after the read that produced it
//! began. Past three quarters of that, the first request to see it hands the job to the
//! background refresher and is still served the cached body, so under steady polling no
//! request waits on the database. The refresher reads every job handed to it since its
//! last read in the same two queries, so a thousand polled jobs cost a few statements a
//! refresh, not two each. A finished job's body lives [`FINISHED_TTL_FACTOR`] times as
//! long: only a retry changes it, and the replica that takes the retry forgets it at
//! once, so the longer life costs other replicas' pollers at most a second of staleness
//! and spares the database a re-read of every finished job a dashboard keeps polling.
//! Every handler that changes a job through this replica calls
//! [`JobViews::forget`], so a client sees its own writes at once; a read that was
//! already in flight when the write came (a refresh, or another client's miss) is not
//! stored over it ([`JobViews::store`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use entity::{JobId, TenantId, job};
use freight_core::store::{batches, jobs};
use moka::ops::compute::Op;
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::views::JobView;

/// Refreshes waiting for the refresher; past this many, a body is left to expire and
/// the next request reads the job itself.
const REFRESH_QUEUE: usize = 4096;
/// Most jobs read in one refresh.
const REFRESH_BATCH: usize = 512;
/// A finished (terminal) job's body is served this many TTLs.
pub const FINISHED_TTL_FACTOR: u32 = 10;

type Key = (TenantId, JobId);

#[derive(Clone)]
pub struct JobViews {
    cache: moka::sync::Cache<Key, Arc<Cached>>,
    ttl: Duration,
    /// A finished job's: `ttl * FINISHED_TTL_FACTOR`, and the cache's own entry lifetime.
    finished_ttl: Duration,
    refresh_tx: mpsc::Sender<Ticket>,
    /// Taken by the one refresher ([`JobViews::refresh_in_background`]).
    refresh_rx: Arc<Mutex<Option<mpsc::Receiver<Ticket>>>>,
}

/// A cached body, or the mark [`JobViews::forget`] leaves (no body).
struct Cached {
    body: Option<Bytes>,
    /// When the read that produced `body` began.
    read_at: Instant,
    /// How long after `read_at` the body may be served.
    ttl: Duration,
    refreshing: AtomicBool,
}

impl Cached {
    fn new(body: Option<Bytes>, read_at: Instant, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            body,
            read_at,
            ttl,
            refreshing: AtomicBool::new(false),
        })
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A body to serve.
    Hit(Bytes),
    /// Nothing to serve: the caller reads the job and stores it with the ticket.
    Miss(Ticket),
}

/// Where a read began: what the cache held and when, so that [`JobViews::store`] can
/// tell whether the job was written since.
pub struct Ticket {
    key: Key,
    seen: Option<Arc<Cached>>,
    read_at: Instant,
}

impl JobViews {
    pub fn new(ttl: Duration) -> Self {
        let (refresh_tx, refresh_rx) = mpsc::channel(REFRESH_QUEUE);
        let finished_ttl = ttl * FINISHED_TTL_FACTOR;
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(finished_ttl)
                .build(),
            ttl,
            finished_ttl,
            refresh_tx,
            refresh_rx: Arc::new(Mutex::new(Some(refresh_rx))),
        }
    }

    pub fn lookup(&self, tenant_id: TenantId, job_id: JobId) -> Lookup {
        let key = (tenant_id, job_id);
        let seen = self.cache.get(&key);
        let ticket = |seen| Ticket {
            key,
            seen,
            read_at: Instant::now(),
        };
        let Some(cached) = &seen else {
            return Lookup::Miss(ticket(None));
        };
        let age = cached.read_at.elapsed();
        match &cached.body {
            Some(body) if age < cached.ttl => {
                if age >= cached.ttl * 3 / 4 && !cached.refreshing.swap(true, Ordering::AcqRel) {
                    // A full queue drops the refresh: the body expires and the next
                    // request reads the job itself.
                    let _ = self.refresh_tx.try_send(ticket(seen.clone()));
                }
                Lookup::Hit(body.clone())
            }
            _ => Lookup::Miss(ticket(seen.clone())),
        }
    }

    /// Caches `body`, read under `ticket`, unless the job was forgotten since the
    /// ticket was issued; `finished` when the job was in a terminal state. Guard: a
    /// `forget` replaces the entry the ticket saw, and the mark it leaves outlives any
    /// read that began before it by less than the cache's entry lifetime (the longest
    /// TTL); a read that began longer ago than that is stored already expired (ages count
    /// from when the read began), so it is never served.
    pub fn store(&self, ticket: Ticket, body: Bytes, finished: bool) {
        let ttl = if finished {
            self.finished_ttl
        } else {
            self.ttl
        };
        let view = Cached::new(Some(body), ticket.read_at, ttl);
        self.cache.entry(ticket.key).and_compute_with(|current| {
            let unchanged = match (current.as_ref(), &ticket.seen) {
                (Some(current), Some(seen)) => Arc::ptr_eq(current.value(), seen),
                (None, None) => true,
                _ => false,
            };
            if unchanged { Op::Put(view) } else { Op::Nop }
        });
    }

    /// Serialises `view` and [`JobViews::store`]s it under `ticket`; returns the body.
    pub fn store_view(&self, ticket: Ticket, view: &JobView) -> serde_json::Result<Bytes> {
        let body = Bytes::from(serde_json::to_vec(view)?);
        self.store(ticket, body.clone(), view.status.is_terminal());
        Ok(body)
    }

    pub fn forget(&self, tenant_id: TenantId, job_id: JobId) {
        self.cache.insert(
            (tenant_id, job_id),
            Cached::new(None, Instant::now(), Duration::ZERO),
        );
    }

    /// Runs until `stop`: takes every refresh handed over since the last read and reads
    /// those jobs in one go. Only the first call on a cache runs; without a refresher,
    /// bodies simply expire and requests read jobs themselves.
    pub async fn refresh_in_background(self, db: DatabaseConnection, stop: CancellationToken) {
        let Some(mut rx) = self.refresh_rx.lock().expect("not poisoned").take() else {
            return;
        };
        let mut tickets = Vec::with_capacity(REFRESH_BATCH);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = rx.recv_many(&mut tickets, REFRESH_BATCH) => if n == 0 { return },
            }
            let due = std::mem::take(&mut tickets);
            if let Err(e) = self.refresh(&db, due).await {
                // The bodies expire and the next requests read their jobs themselves.
                tracing::warn!(error = %e, "job view refresh failed");
            }
        }
    }

    async fn refresh(
        &self,
        db: &DatabaseConnection,
        tickets: Vec<Ticket>,
    ) -> Result<(), freight_core::Error> {
        let ids: Vec<JobId> = tickets.iter().map(|t| t.key.1).collect();
        let jobs: HashMap<JobId, job::Model> = jobs::get_many(db, &ids)
            .await?
            .into_iter()
            .map(|j| (j.id, j))
            .collect();
        let mut counts = batches::counts(db, &ids).await?;
        for ticket in tickets {
            let (tenant_id, job_id) = ticket.key;
            let Some(job) = jobs.get(&job_id).filter(|j| j.tenant_id == tenant_id) else {
                continue;
            };
            let view = JobView::new(job.clone(), counts.remove(&job_id).unwrap_or_default());
            // A view that does not serialise is left to expire; the request path reports it.
            let _ = self.store_view(ticket, &view);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn served(views: &JobViews, t: TenantId, j: JobId) -> Option<Bytes> {
        match views.lookup(t, j) {
            Lookup::Hit(b) => Some(b),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn a_read_in_flight_across_a_write_is_not_stored() {
        let views = JobViews::new(Duration::from_secs(60));
        let (t, j) = (TenantId::new(), JobId::new());
        let Lookup::Miss(before) = views.lookup(t, j) else {
            panic!("empty cache")
        };
        views.forget(t, j);
        views.store(before, body("old"), false);
        assert_eq!(
            served(&views, t, j),
            None,
            "the read began before the write"
        );

        let Lookup::Miss(after) = views.lookup(t, j) else {
            panic!("forgotten")
        };
        views.store(after, body("new"), false);
        assert_eq!(served(&views, t, j), Some(body("new")));
    }

    #[test]
    fn one_request_refreshes_a_body_near_its_end_and_every_request_is_still_served() {
        let views = JobViews::new(Duration::from_secs(1));
        let mut refreshes = views.refresh_rx.lock().unwrap().take().unwrap();
        let (t, j) = (TenantId::new(), JobId::new());
        let Lookup::Miss(ticket) = views.lookup(t, j) else {
            panic!("empty cache")
        };
        views.store(ticket, body("v1"), false);
        assert!(matches!(views.lookup(t, j), Lookup::Hit(_)));
        assert!(
            refreshes.try_recv().is_err(),
            "young bodies are not refreshed"
        );
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(served(&views, t, j), Some(body("v1")));
        let ticket = refreshes
            .try_recv()
            .expect("three quarters of the TTL have passed");
        assert_eq!(ticket.key, (t, j));
        assert_eq!(served(&views, t, j), Some(body("v1")));
        assert!(refreshes.try_recv().is_err(), "one refresh at a time");
        views.store(ticket, body("v2"), false);
        assert_eq!(served(&views, t, j), Some(body("v2")));
        std::thread::sleep(Duration::from_millis(1050));
        assert!(
            matches!(views.lookup(t, j), Lookup::Miss(_)),
            "past the TTL"
        );
    }

    #[test]
    fn a_finished_job_is_served_ten_ttls_and_forgotten_at_once() {
        let views = JobViews::new(Duration::from_millis(100));
        let (t, running, done) = (TenantId::new(), JobId::new(), JobId::new());
        for (j, finished) in [(running, false), (done, true)] {
            let Lookup::Miss(ticket) = views.lookup(t, j) else {
                panic!("empty cache")
            };
            views.store(ticket, body("v1"), finished);
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(served(&views, t, running), None, "a running job: 100 ms");
        assert_eq!(
            served(&views, t, done),
            Some(body("v1")),
            "a finished one: 1 s"
        );
        views.forget(t, done);
        assert_eq!(
            served(&views, t, done),
            None,
            "a write through this replica"
        );
    }
}
