//! A short-lived cache of `GET /api/v1/jobs/{id}` bodies: a status poll costs two
//! queries, and clients poll.
//!
//! A body is served for at most `JOB_VIEW_CACHE_TTL` after the read that produced it
//! began. Past three quarters of that, the first request to see it starts one
//! background refresh and is still served the cached body, so under steady polling no
//! request waits on the database. Every handler that changes a job through this replica
//! calls [`JobViews::forget`], so a client sees its own writes at once; a read that was
//! already in flight when the write came (a refresh, or another client's miss) is not
//! stored over it ([`JobViews::store`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::ops::compute::Op;
use uuid::Uuid;

type Key = (Uuid, Uuid);

#[derive(Clone)]
pub struct JobViews {
    cache: moka::sync::Cache<Key, Arc<Cached>>,
    ttl: Duration,
    /// Bumped by [`JobViews::forget_all`]: a read begun before it is not stored after it.
    epoch: Arc<AtomicU64>,
}

/// A cached body, or the mark [`JobViews::forget`] leaves (no body).
struct Cached {
    body: Option<Bytes>,
    /// When the read that produced `body` began.
    read_at: Instant,
    refreshing: AtomicBool,
}

impl Cached {
    fn new(body: Option<Bytes>, read_at: Instant) -> Arc<Self> {
        Arc::new(Self {
            body,
            read_at,
            refreshing: AtomicBool::new(false),
        })
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A body to serve.
    Hit(Bytes),
    /// A body to serve, nearing the end of its life: the caller reads the job again in
    /// the background and [`JobViews::store`]s it with the ticket.
    HitRefresh(Bytes, Ticket),
    /// Nothing to serve: the caller reads the job and stores it with the ticket.
    Miss(Ticket),
}

/// Where a read began: what the cache held and when, so that [`JobViews::store`] can
/// tell whether the job was written since.
pub struct Ticket {
    key: Key,
    seen: Option<Arc<Cached>>,
    epoch: u64,
    read_at: Instant,
}

impl JobViews {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            ttl,
            epoch: Arc::default(),
        }
    }

    pub fn lookup(&self, tenant_id: Uuid, job_id: Uuid) -> Lookup {
        let key = (tenant_id, job_id);
        let epoch = self.epoch.load(Ordering::Acquire);
        let seen = self.cache.get(&key);
        let ticket = |seen| Ticket {
            key,
            seen,
            epoch,
            read_at: Instant::now(),
        };
        let Some(cached) = &seen else {
            return Lookup::Miss(ticket(None));
        };
        let age = cached.read_at.elapsed();
        match &cached.body {
            Some(body) if age < self.ttl => {
                if age >= self.ttl * 3 / 4 && !cached.refreshing.swap(true, Ordering::AcqRel) {
                    Lookup::HitRefresh(body.clone(), ticket(seen.clone()))
                } else {
                    Lookup::Hit(body.clone())
                }
            }
            _ => Lookup::Miss(ticket(seen.clone())),
        }
    }

    /// Caches `body`, read under `ticket`, unless the job was forgotten since the
    /// ticket was issued. Guard: a `forget` replaces the entry the ticket saw, and the
    /// mark it leaves outlives any read that began before it by less than the TTL; a
    /// read that began longer ago than that is stored already expired (ages count from
    /// when the read began), so it is never served.
    pub fn store(&self, ticket: Ticket, body: Bytes) {
        let view = Cached::new(Some(body), ticket.read_at);
        let epoch = &self.epoch;
        self.cache.entry(ticket.key).and_compute_with(|current| {
            let unchanged = match (current.as_ref(), &ticket.seen) {
                (Some(current), Some(seen)) => Arc::ptr_eq(current.value(), seen),
                (None, None) => true,
                _ => false,
            };
            if unchanged && epoch.load(Ordering::Acquire) == ticket.epoch {
                Op::Put(view)
            } else {
                Op::Nop
            }
        });
    }

    pub fn forget(&self, tenant_id: Uuid, job_id: Uuid) {
        self.cache
            .insert((tenant_id, job_id), Cached::new(None, Instant::now()));
    }

    /// For a write whose jobs are not known up front (a requeue by dead-letter ids).
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn served(views: &JobViews, t: Uuid, j: Uuid) -> Option<Bytes> {
        match views.lookup(t, j) {
            Lookup::Hit(b) | Lookup::HitRefresh(b, _) => Some(b),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn a_read_in_flight_across_a_write_is_not_stored() {
        let views = JobViews::new(Duration::from_secs(60));
        let (t, j) = (Uuid::new_v4(), Uuid::new_v4());
        let Lookup::Miss(before) = views.lookup(t, j) else {
            panic!("empty cache")
        };
        views.forget(t, j);
        views.store(before, body("old"));
        assert_eq!(
            served(&views, t, j),
            None,
            "the read began before the write"
        );

        let Lookup::Miss(after) = views.lookup(t, j) else {
            panic!("forgotten")
        };
        views.store(after, body("new"));
        assert_eq!(served(&views, t, j), Some(body("new")));

        let Lookup::Miss(before_all) = views.lookup(t, Uuid::new_v4()) else {
            panic!("empty")
        };
        views.forget_all();
        let other = before_all.key.1;
        views.store(before_all, body("old"));
        assert_eq!(served(&views, t, other), None);
    }

    #[test]
    fn one_request_refreshes_a_body_near_its_end_and_every_request_is_still_served() {
        let views = JobViews::new(Duration::from_secs(1));
        let (t, j) = (Uuid::new_v4(), Uuid::new_v4());
        let Lookup::Miss(ticket) = views.lookup(t, j) else {
            panic!("empty cache")
        };
        views.store(ticket, body("v1"));
        assert!(matches!(views.lookup(t, j), Lookup::Hit(_)));
        std::thread::sleep(Duration::from_millis(800));
        let Lookup::HitRefresh(served_meanwhile, ticket) = views.lookup(t, j) else {
            panic!("three quarters of the TTL have passed")
        };
        assert_eq!(served_meanwhile, body("v1"));
        assert!(
            matches!(views.lookup(t, j), Lookup::Hit(_)),
            "one refresh at a time"
        );
        views.store(ticket, body("v2"));
        assert_eq!(served(&views, t, j), Some(body("v2")));
        std::thread::sleep(Duration::from_millis(1050));
        assert!(
            matches!(views.lookup(t, j), Lookup::Miss(_)),
            "past the TTL"
        );
    }
}
