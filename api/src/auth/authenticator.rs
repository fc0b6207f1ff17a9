//! Tenant API-key authentication that an unauthenticated client cannot make expensive.
//!
//! A key is verified once (Argon2id in `spawn_blocking`), then served from a bounded cache
//! keyed by its public id, holding the SHA-256 of the secret, compared in constant time.
//! Every `AUTH_CACHE_TTL` a cached key's row is read again (revoked? expired? tenant
//! suspended?); the secret is not hashed again unless the stored hash changed.
//!
//! What a request that is *not* a good key can cost is bounded four ways:
//! - **Verdicts are cached too.** A wrong secret or unknown id, a revoked or expired key
//!   is remembered by (public id, SHA-256 of the secret): the same bad key again is
//!   refused from memory, with no lookup and no Argon2. A suspended tenant's key keeps
//!   its entry (marked suspended), so each request re-reads one row but never re-hashes.
//! - **Failures per client address** are a token bucket (`AUTH_FAILURES_PER_MINUTE`):
//!   once a client's failures use it up, every key it presents that is not already
//!   verified is refused (429) before any lookup. Verified keys are unaffected.
//! - **Hashing is bounded**: at most one Argon2 per core at a time, at most
//!   `AUTH_VERIFY_QUEUE` waiting; past that a fast 503 with `Retry-After`. Key creation
//!   hashes under the same bound.
//! - **Revocation cannot be outrun**: a key's row is read after its hashing slot is
//!   granted, right before Argon2, so a verification that queued behind a flood cannot
//!   cache a key revoked while it waited; and each replica polls for revoked keys and
//!   changed tenants every second (`AUTH_REVOCATION_POLL_INTERVAL`), dropping what it
//!   cached from an older version of the row and ending that key's open streams.
//!
//! `last_used_at` is gathered in memory and written back in one statement per interval.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entity::{TenantId, tenant::TenantStatus};
use freight_core::{
    config::AuthSettings,
    domain::api_key::{ApiKey, Scopes},
    store::{
        api_keys::{self, KeyForAuth},
        db,
    },
};
use moka::future::Cache;
use sea_orm::DatabaseConnection;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{rate_limit::FailureLimiter, sessions::Sessions};
use crate::error::ApiError;

/// Who a valid key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub key_id: Uuid,
    /// The tenant's request rate limit: sustained per second, and burst.
    pub rate: (u32, u32),
    pub scopes: Scopes,
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
    /// The tenant was suspended when the row was read: every use re-reads the row (a
    /// reinstatement shows at once) but never re-hashes.
    suspended: bool,
    /// When the key's row was last read.
    checked_at: Instant,
}

/// What a key that does not authenticate gets, remembered per (public id, secret digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Unknown public id, or the wrong secret.
    Invalid,
    Revoked,
    Expired,
}

impl Refusal {
    fn error(self) -> ApiError {
        ApiError::Unauthorized(
            match self {
                Refusal::Invalid => "invalid API key",
                Refusal::Revoked => "API key has been revoked",
                Refusal::Expired => "API key has expired",
            }
            .into(),
        )
    }
}

/// How long a refusal is remembered: long, since none of them is undone (a revocation is
/// final, a secret stays wrong); the bound is the cache's capacity, not time.
const REFUSAL_TTL: Duration = Duration::from_secs(600);

pub struct Authenticator {
    db: DatabaseConnection,
    cache: Cache<String, CachedKey>,
    refused: Cache<(String, [u8; 32]), Refusal>,
    /// How long an entry is served before its row is read again.
    ttl: Duration,
    hashing: Hashing,
    failures: FailureLimiter,
    /// Argon2 verifications run, for tests and the `freight_api_key_verifications_total`
    /// counter's sake.
    argon2_runs: AtomicU64,
    last_used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    /// Open event streams and downloads, ended when their key or tenant stops working.
    pub sessions: Sessions,
}

/// The Argon2 slots: one per core, and a bounded queue in front of them.
struct Hashing {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Hashing {
    /// A slot, or a 503 at once when the queue is full.
    async fn slot(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(freight_core::metrics::AUTH_SHED).increment(1);
            return Err(ApiError::Overloaded {
                detail: "too many API keys are being verified at once; retry shortly".into(),
                retry_after: Duration::from_secs(1),
            });
        }
        let permit = self.permits.acquire().await.expect("never closed");
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        Ok(permit)
    }
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
            refused: Cache::builder()
                .max_capacity(settings.cache_capacity)
                .time_to_live(REFUSAL_TTL)
                .build(),
            ttl: settings.cache_ttl,
            hashing: Hashing {
                permits: Semaphore::new(cores),
                waiting: AtomicUsize::new(0),
                max_waiting: settings.verify_queue,
            },
            failures: FailureLimiter::per_minute(settings.failures_per_minute),
            argon2_runs: AtomicU64::new(0),
            last_used: Mutex::new(HashMap::new()),
            sessions: Sessions::default(),
        }
    }

    /// Checks a presented key (from an unknown client: no per-address limit).
    pub async fn authenticate(&self, raw: &str) -> Result<Principal, ApiError> {
        self.authenticate_from(raw, None).await
    }

    /// Checks a key presented by `client` and returns its principal, or the 401/403/429/503
    /// to answer. Only the cheap path (a key verified before) is open to a client whose
    /// failures are used up.
    pub async fn authenticate_from(
        &self,
        raw: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
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
            && !hit.suspended
            && hit.checked_at.elapsed() < self.ttl
        {
            if hit.expires_at.is_some_and(|at| at <= Utc::now()) {
                self.cache.invalidate(key.public_id()).await;
                return Err(Refusal::Expired.error());
            }
            self.note_used(hit.principal.key_id);
            return Ok(hit.principal);
        }
        if let Some(refusal) = self
            .refused
            .get(&(key.public_id().to_owned(), digest))
            .await
        {
            return Err(refusal.error());
        }
        if let Some(client) = client
            && let Err(limited) = self.failures.check(client)
        {
            return Err(ApiError::TooManyRequests {
                retry_after: limited.retry_after,
                limit: limited.limit,
            });
        }
        let outcome = self.verify(key, digest, known).await;
        if let (Some(client), Err(ApiError::Unauthorized(_) | ApiError::Forbidden(_))) =
            (client, &outcome)
        {
            self.failures.fail(client);
        }
        outcome
    }

    /// Reads the key's row and checks the secret against it: with Argon2, unless `known`
    /// (a cache entry for this very secret) was verified against the same stored hash.
    async fn verify(
        &self,
        key: ApiKey,
        digest: [u8; 32],
        known: Option<CachedKey>,
    ) -> Result<Principal, ApiError> {
        let refusal_key = (key.public_id().to_owned(), digest);
        let slot = match known {
            Some(_) => None,
            None => {
                // An unknown id is refused without waiting for a hashing slot.
                if api_keys::find_for_auth(&self.db, key.public_id())
                    .await?
                    .is_none()
                {
                    self.refused.insert(refusal_key, Refusal::Invalid).await;
                    return Err(Refusal::Invalid.error());
                }
                Some(self.hashing.slot().await?)
            }
        };
        // Read (again) now, holding the slot: a revocation while this request queued is
        // seen here, not cached for a TTL. One committed between this read and the cache
        // insert below (an Argon2 later) is still in the revocation poll's window when
        // the entry is in the cache, and the poll drops it.
        let Some(row) = api_keys::find_for_auth(&self.db, key.public_id()).await? else {
            self.cache.invalidate(key.public_id()).await;
            return Err(Refusal::Invalid.error());
        };
        let secret_hash = self
            .check_secret(&key, &row, known, slot, &refusal_key)
            .await?;
        // Only a holder of the right secret learns whether the key is revoked or expired.
        if let Some(refusal) = refusal_of(&row) {
            self.cache.invalidate(key.public_id()).await;
            self.refused.insert(refusal_key, refusal).await;
            return Err(refusal.error());
        }
        let principal = Principal {
            tenant_id: row.tenant_id,
            key_id: row.id,
            rate: (
                row.rate_limit_per_second.max(1) as u32,
                row.rate_limit_burst.max(1) as u32,
            ),
            scopes: Scopes::from_names(&row.scopes),
        };
        let suspended = row.tenant_status != TenantStatus::Active;
        let entry = CachedKey {
            principal,
            secret_digest: digest,
            secret_hash,
            expires_at: row.expires_at,
            tenant_updated_at: row.tenant_updated_at,
            suspended,
            checked_at: Instant::now(),
        };
        self.cache.insert(key.public_id().to_owned(), entry).await;
        if suspended {
            return Err(ApiError::Forbidden("this tenant is suspended".into()));
        }
        self.note_used(principal.key_id);
        Ok(principal)
    }

    /// The stored hash, once the presented secret matches it: by Argon2 (in a hashing
    /// slot, `slot` if one is held already), unless `known` was verified against this
    /// very hash. A wrong secret is refused and remembered.
    async fn check_secret(
        &self,
        key: &ApiKey,
        row: &KeyForAuth,
        known: Option<CachedKey>,
        slot: Option<SemaphorePermit<'_>>,
        refusal_key: &(String, [u8; 32]),
    ) -> Result<Arc<str>, ApiError> {
        if let Some(k) = known
            && *k.secret_hash == *row.secret_hash
        {
            return Ok(k.secret_hash);
        }
        let _slot = match slot {
            Some(slot) => slot,
            // The stored hash changed under a cached entry: hash after all.
            None => self.hashing.slot().await?,
        };
        self.argon2_runs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(freight_core::metrics::API_KEY_VERIFICATIONS).increment(1);
        let (key, hash) = (key.clone(), row.secret_hash.clone());
        let ok = tokio::task::spawn_blocking(move || key.verify_secret(&hash))
            .await
            .map_err(|e| ApiError::internal("the argon2 task", e))?;
        if !ok {
            self.refused
                .insert(refusal_key.clone(), Refusal::Invalid)
                .await;
            return Err(Refusal::Invalid.error());
        }
        Ok(Arc::from(row.secret_hash.as_str()))
    }

    /// Takes one of the hashing slots key verification uses, for hashing a new key's
    /// secret: creating keys cannot starve verification, nor the other way round.
    pub async fn hashing_slot(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.hashing.slot().await
    }

    /// How many times this authenticator has run Argon2.
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }

    /// Drops a key from this replica's cache at once and ends its streams (the revoking
    /// replica does not wait for its own poll).
    pub async fn forget(&self, public_id: &str, key_id: Uuid) {
        self.cache.invalidate(public_id).await;
        self.sessions.end_key(key_id);
    }

    /// A tenant changed on this replica (suspended, say): drop its cached keys at once.
    pub async fn forget_tenant(&self, tenant_id: TenantId, active: bool) {
        let stale: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(_, entry)| entry.principal.tenant_id == tenant_id)
            .map(|(public_id, _)| public_id)
            .collect();
        for public_id in stale {
            self.cache.invalidate(public_id.as_str()).await;
        }
        if !active {
            self.sessions.end_tenant(tenant_id);
        }
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
        let mut since = db::now(&self.db).await.unwrap_or_else(|_| Utc::now());
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
    /// timestamp before committing), and ends the streams of revoked keys and suspended
    /// tenants. Returns the next `since`. A change stays in the margin for several polls;
    /// only the first drops the entry, so the keys of a tenant just created or changed
    /// are not verified again on every poll.
    async fn poll_revocations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, sea_orm::DbErr> {
        const MARGIN: chrono::Duration = chrono::Duration::seconds(5);
        let now = db::now(&self.db).await?;
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
                self.cache.invalidate(&key.public_id).await;
            }
            if key.revoked {
                self.sessions.end_key(key.key_id);
            }
            if key.tenant_status != TenantStatus::Active {
                self.sessions.end_tenant(key.tenant_id);
            }
        }
        Ok(now)
    }
}

/// Why a key whose secret matched still does not work, if it does not.
fn refusal_of(row: &KeyForAuth) -> Option<Refusal> {
    if row.revoked_at.is_some() {
        Some(Refusal::Revoked)
    } else if row.expires_at.is_some_and(|at| at <= Utc::now()) {
        Some(Refusal::Expired)
    } else {
        None
    }
}
