//! Long responses a tenant holds open (event streams, downloads): counted per tenant, and
//! ended when the key that opened them is revoked or the tenant is suspended.
//!
//! A stream is authorised once, when it opens; without this, a revoked key's stream
//! would go on for as long as its client reads. The revocation poll (and the replica that
//! revokes or suspends, at once) calls [`Sessions::end_key`] / [`Sessions::end_tenant`],
//! which cancel the streams' tokens; each stream stops at its next poll of the token.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use entity::TenantId;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default, Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    open: Mutex<HashMap<TenantId, Vec<Open>>>,
}

struct Open {
    id: u64,
    key_id: Uuid,
    token: CancellationToken,
}

/// One open stream; dropping it closes the slot.
pub struct Session {
    id: u64,
    tenant_id: TenantId,
    token: CancellationToken,
    sessions: Sessions,
}

/// The tenant already holds its limit of open streams.
#[derive(Debug, Clone, Copy)]
pub struct AtLimit(pub usize);

impl Sessions {
    /// Opens a session for `key_id` of `tenant_id`, unless the tenant holds `max` already.
    pub fn open(&self, tenant_id: TenantId, key_id: Uuid, max: usize) -> Result<Session, AtLimit> {
        let mut open = self.inner.open.lock().expect("not poisoned");
        let tenant = open.entry(tenant_id).or_default();
        if tenant.len() >= max {
            return Err(AtLimit(max));
        }
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        tenant.push(Open {
            id,
            key_id,
            token: token.clone(),
        });
        Ok(Session {
            id,
            tenant_id,
            token,
            sessions: self.clone(),
        })
    }

    /// Ends every stream opened with `key_id`.
    pub fn end_key(&self, key_id: Uuid) {
        let open = self.inner.open.lock().expect("not poisoned");
        open.values()
            .flatten()
            .filter(|o| o.key_id == key_id)
            .for_each(|o| o.token.cancel());
    }

    /// Ends every stream of `tenant_id`.
    pub fn end_tenant(&self, tenant_id: TenantId) {
        let open = self.inner.open.lock().expect("not poisoned");
        open.get(&tenant_id)
            .into_iter()
            .flatten()
            .for_each(|o| o.token.cancel());
    }

    /// Streams open for `tenant_id`.
    pub fn count(&self, tenant_id: TenantId) -> usize {
        let open = self.inner.open.lock().expect("not poisoned");
        open.get(&tenant_id).map_or(0, Vec::len)
    }
}

impl Session {
    /// Cancelled when the session must end.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// `stream`, ended when the session is ended or after `lifetime`, whichever comes
    /// first; the session's slot is held until the stream is dropped.
    pub fn bound<S: Stream>(self, stream: S, lifetime: Duration) -> impl Stream<Item = S::Item> {
        let token = self.token();
        stream.take_until(async move {
            let _held = self;
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(lifetime) => {}
            }
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut open = self.sessions.inner.open.lock().expect("not poisoned");
        if let Some(tenant) = open.get_mut(&self.tenant_id) {
            tenant.retain(|o| o.id != self.id);
            if tenant.is_empty() {
                open.remove(&self.tenant_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_per_tenant_and_ended_by_key_or_tenant() {
        let sessions = Sessions::default();
        let (tenant, other) = (TenantId::new(), TenantId::new());
        let (key, key2) = (Uuid::new_v4(), Uuid::new_v4());
        let a = sessions.open(tenant, key, 2).unwrap();
        let b = sessions.open(tenant, key2, 2).unwrap();
        assert!(sessions.open(tenant, key, 2).is_err());
        let c = sessions.open(other, Uuid::new_v4(), 2).unwrap();
        sessions.end_key(key);
        assert!(a.token().is_cancelled() && !b.token().is_cancelled());
        sessions.end_tenant(tenant);
        assert!(b.token().is_cancelled() && !c.token().is_cancelled());
        drop(a);
        assert_eq!(sessions.count(tenant), 1);
        drop(b);
        assert_eq!(sessions.count(tenant), 0);
        assert!(sessions.open(tenant, key, 2).is_ok());
    }
}
