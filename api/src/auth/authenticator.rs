//! Tenant API-key authentication without Argon2 on every request.
//!
//! A key is verified once (Argon2id in `spawn_blocking`, at most one verify per core at a
//! time so a burst of bad keys cannot starve the api), then served from a bounded cache
//! keyed by its public id, holding the SHA-256 of the secret, compared in constant time.
//! Every `AUTH_CACHE_TTL` a cached key's row is read again (revoked? expired? tenant
//! suspended?); the secret is not hashed again unless the stored hash changed, so a busy
//! key never pays Argon2 twice and its clients never stall together on a re-check.
//! Revocation reaches every replica within about a second: each replica polls Postgres
//! for keys revoked (or tenants changed) since its last look and drops those it cached
//! from an older version of the row. `last_used_at` is gathered in memory and written
//! back in one statement per interval.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entity::tenant::TenantStatus;
use freight_core::{config::AuthSettings, domain::api_key::ApiKey, repo::api_keys};
use moka::future::Cache;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiError;

/// Who a valid key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub key_id: Uuid,
    /// The tenant's request rate limit: sustained per second, and burst.
    pub rate: (u32, u32),
}

#[derive(Clone)]
struct CachedKey {
    principal: Principal,
    secret_digest: [u8; 32],
    /// The stored Argon2 hash the secret was verified against: a re-check that finds the
    /// same hash knows the secret is still right without running Argon2 again.
    secret_hash: Arc<str>,
    expires_at: Option<DateTime<Utc>>,
    /// The version of the tenant row the entry was built from (see the revocation poll).
    tenant_updated_at: DateTime<Utc>,
    /// When the key's row was last read.
    checked_at: Instant,
}

pub struct Authenticator {
    db: DatabaseConnection,
    cache: Cache<String, CachedKey>,
    /// How long an entry is served before its row is read again.
    ttl: Duration,
    verify_permits: Semaphore,
    /// Bumped whenever the watcher drops keys, so a verification that raced a revocation
    /// does not put the revoked key back into the cache.
    invalidations: AtomicU64,
    /// Argon2 verifications run, for tests and the `freight_api_key_verifications_total`
    /// counter's sake.
    argon2_runs: AtomicU64,
    last_used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl Authenticator {
    pub fn new(db: DatabaseConnection, settings: &AuthSettings) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            db,
            // Entries do not expire: past the TTL they are checked again, cheaply. An
            // idle hour is what makes a key worth forgetting.
            cache: Cache::builder()
                .max_capacity(settings.cache_capacity)
                .time_to_idle(Duration::from_secs(3600).max(settings.cache_ttl))
                .build(),
            ttl: settings.cache_ttl,
            verify_permits: Semaphore::new(cores),
            invalidations: AtomicU64::new(0),
            argon2_runs: AtomicU64::new(0),
            last_used: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a presented key and returns its principal, or the 401/403/503 to answer.
    pub async fn authenticate(&self, raw: &str) -> Result<Principal, ApiError> {
        let key = ApiKey::parse(raw).map_err(|_| {
            ApiError::Unauthorized("malformed API key: expected `frk_<public id>_<secret>`".into())
        })?;
        let digest = key.secret_digest();
        let known = self
            .cache
            .get(key.public_id())
            .await
            .filter(|hit| bool::from(hit.secret_digest.ct_eq(&digest)));
        if let Some(hit) = &known
            && hit.checked_at.elapsed() < self.ttl
        {
            if hit.expires_at.is_some_and(|at| at <= Utc::now()) {
                self.cache.invalidate(key.public_id()).await;
                return Err(ApiError::Unauthorized("API key has expired".into()));
            }
            self.note_used(hit.principal.key_id);
            return Ok(hit.principal);
        }
        self.verify(key, digest, known).await
    }

    /// Reads the key's row and checks the secret against it: with Argon2, unless `known`
    /// (a cache entry for this very secret) was verified against the same stored hash.
    async fn verify(
        &self,
        key: ApiKey,
        digest: [u8; 32],
        known: Option<CachedKey>,
    ) -> Result<Principal, ApiError> {
        let epoch = self.invalidations.load(Ordering::Acquire);
        let invalid = || ApiError::Unauthorized("invalid API key".into());
        let Some(row) = api_keys::find_for_auth(&self.db, key.public_id()).await? else {
            self.cache.invalidate(key.public_id()).await;
            return Err(invalid());
        };
        let secret_hash = match known {
            Some(k) if *k.secret_hash == *row.secret_hash => k.secret_hash,
            _ => {
                let _permit = self.verify_permits.acquire().await.expect("never closed");
                self.argon2_runs.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(freight_core::metrics::API_KEY_VERIFICATIONS).increment(1);
                let (key, hash) = (key.clone(), row.secret_hash.clone());
                let ok = tokio::task::spawn_blocking(move || key.verify_secret(&hash))
                    .await
                    .map_err(|e| ApiError::Internal(format!("argon2 task: {e}")))?;
                if !ok {
                    return Err(invalid());
                }
                Arc::from(row.secret_hash.as_str())
            }
        };
        // Only a holder of the right secret learns whether the key is revoked or expired.
        let refused = if row.revoked_at.is_some() {
            Some(ApiError::Unauthorized("API key has been revoked".into()))
        } else if row.expires_at.is_some_and(|at| at <= Utc::now()) {
            Some(ApiError::Unauthorized("API key has expired".into()))
        } else if row.tenant_status != TenantStatus::Active {
            Some(ApiError::Forbidden("this tenant is suspended".into()))
        } else {
            None
        };
        if let Some(refused) = refused {
            self.cache.invalidate(key.public_id()).await;
            return Err(refused);
        }
        let principal = Principal {
            tenant_id: row.tenant_id,
            key_id: row.id,
            rate: (
                row.rate_limit_per_second.max(1) as u32,
                row.rate_limit_burst.max(1) as u32,
            ),
        };
        if self.invalidations.load(Ordering::Acquire) == epoch {
            let entry = CachedKey {
                principal,
                secret_digest: digest,
                secret_hash,
                expires_at: row.expires_at,
                tenant_updated_at: row.tenant_updated_at,
                checked_at: Instant::now(),
            };
            self.cache.insert(key.public_id().to_owned(), entry).await;
        }
        self.note_used(principal.key_id);
        Ok(principal)
    }

    /// How many times this authenticator has run Argon2.
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }

    /// Drops a key from this replica's cache at once (the revoking replica does not wait
    /// for its own poll).
    pub async fn forget(&self, public_id: &str) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(public_id).await;
    }

    fn note_used(&self, key_id: Uuid) {
        self.last_used
            .lock()
            .expect("not poisoned")
            .insert(key_id, Utc::now());
    }

    /// Writes the gathered `last_used_at` values back in one statement.
    pub async fn flush_last_used(&self) {
        let used: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.last_used.lock().expect("not poisoned"))
                .into_iter()
                .collect();
        if let Err(e) = api_keys::touch_last_used(&self.db, &used).await {
            tracing::warn!(error = %e, keys = used.len(), "could not record last_used_at; will retry");
            let mut map = self.last_used.lock().expect("not poisoned");
            for (id, at) in used {
                map.entry(id).or_insert(at);
            }
        }
    }

    /// Runs until `stop`: polls for revocations and flushes `last_used_at`.
    pub async fn run_background(self: Arc<Self>, settings: AuthSettings, stop: CancellationToken) {
        let mut since = db_now(&self.db).await.unwrap_or_else(|_| Utc::now());
        let mut poll = tokio::time::interval(settings.revocation_poll_interval);
        let mut flush = tokio::time::interval(settings.last_used_flush_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = poll.tick() => match self.poll_revocations(since).await {
                    Ok(next) => since = next,
                    Err(e) => tracing::warn!(error = %e, "revocation poll failed; will retry"),
                },
                _ = flush.tick() => self.flush_last_used().await,
            }
        }
        self.flush_last_used().await;
    }

    /// Drops every cached key revoked, or built from a version of its tenant older than
    /// the one changed since `since` (minus a margin for transactions that took their
    /// timestamp before committing). Returns the next `since`. A change stays in the
    /// margin for several polls; only the first drops the entry, so the keys of a tenant
    /// just created or changed are not verified again on every poll.
    async fn poll_revocations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, sea_orm::DbErr> {
        const MARGIN: chrono::Duration = chrono::Duration::seconds(5);
        let now = db_now(&self.db).await?;
        let changed = api_keys::invalidated_since(&self.db, since - MARGIN)
            .await
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
        for key in changed {
            let stale = self
                .cache
                .get(&key.public_id)
                .await
                .is_some_and(|c| key.revoked || c.tenant_updated_at != key.tenant_updated_at);
            if stale {
                self.invalidations.fetch_add(1, Ordering::AcqRel);
                self.cache.invalidate(&key.public_id).await;
            }
        }
        Ok(now)
    }
}

/// The database's clock, so replicas with skewed clocks still see every revocation.
async fn db_now(db: &DatabaseConnection) -> Result<DateTime<Utc>, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT now() AS now",
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("SELECT now() returned no row".into()))?;
    row.try_get("", "now")
}
