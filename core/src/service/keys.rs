//! API keys: creation (the caller hashes the secret, under its own bound on hashing) and
//! revocation.

use entity::{TenantId, api_key};
use sea_orm::TransactionTrait;
use uuid::Uuid;

use super::Services;
use crate::{
    domain::{
        api_key::{ApiKey, KeySpec},
        audit::{self, Actor, NewEvent},
    },
    error::{Error, Result},
    store::{
        self,
        api_keys::{self, NewApiKey, Revoked},
    },
};

impl Services {
    /// Stores a new key for `tenant_id` with its `key.created` audit event, unless the
    /// tenant already holds `TENANT_MAX_API_KEYS` active keys (counted under the tenant
    /// row's lock, so two creations cannot both take the last place).
    pub async fn create_key(
        &self,
        tenant_id: TenantId,
        spec: KeySpec,
        key: &ApiKey,
        secret_hash: String,
        actor: &Actor,
    ) -> Result<api_key::Model> {
        let txn = self.db.begin().await?;
        let max = self.settings.tenant_max_api_keys;
        if api_keys::count_active_locked(&txn, tenant_id).await? >= max {
            return Err(Error::field(
                "api_keys",
                format!(
                    "this tenant already holds {max} active API keys, its limit; revoke one first"
                ),
            ));
        }
        let new = NewApiKey {
            tenant_id,
            name: spec.name,
            public_id: key.public_id().to_owned(),
            secret_hash,
            expires_at: spec.expires_at,
            scopes: spec.scopes,
        };
        let row = api_keys::create(&txn, new).await?;
        let details = serde_json::json!({
            "name": row.name,
            "prefix": key.prefix(),
            "expires_at": row.expires_at,
        });
        let event = NewEvent::new(
            tenant_id,
            actor,
            audit::KEY_CREATED,
            "api_key",
            Some(row.id),
            details,
        );
        store::audit::record(&txn, event).await?;
        txn.commit().await?;
        Ok(row)
    }

    /// Revokes a key (only within `tenant_id` when given). The first revocation writes a
    /// `key.revoked` audit event in the same transaction; revoking again changes nothing.
    pub async fn revoke_key(
        &self,
        key_id: Uuid,
        tenant_id: Option<TenantId>,
        actor: &Actor,
    ) -> Result<Revoked> {
        let txn = self.db.begin().await?;
        let revoked = api_keys::revoke(&txn, key_id, tenant_id)
            .await?
            .ok_or(Error::NotFound("API key"))?;
        if revoked.now {
            let details = serde_json::json!({"prefix": format!("frk_{}", revoked.public_id)});
            let event = NewEvent::new(
                revoked.tenant_id,
                actor,
                audit::KEY_REVOKED,
                "api_key",
                Some(key_id),
                details,
            );
            store::audit::record(&txn, event).await?;
        }
        txn.commit().await?;
        Ok(revoked)
    }
}
