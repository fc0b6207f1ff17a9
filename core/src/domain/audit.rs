//! The audit trail's vocabulary: who acted ([`Actor`]), what they did (the actions the
//! table's CHECK lists) and the event a change writes in its own transaction.

use entity::TenantId;
use serde_json::Value;
use uuid::Uuid;

/// Who did it: the operator (`ADMIN_TOKEN`), or a tenant API key named by its public id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Operator,
    Key { public_id: String },
}

impl Actor {
    /// `operator` or `key:<public id>`, as stored.
    pub fn as_text(&self) -> String {
        match self {
            Actor::Operator => "operator".to_owned(),
            Actor::Key { public_id } => format!("key:{public_id}"),
        }
    }
}

/// Every action the trail knows (the table's CHECK lists the same).
pub const ACTIONS: [&str; 9] = [
    KEY_CREATED,
    KEY_REVOKED,
    JOB_CREATED,
    JOB_CANCELLED,
    JOB_RETRIED,
    BATCH_RETRIED,
    DEAD_LETTERS_REQUEUED,
    TENANT_CREATED,
    TENANT_UPDATED,
];
pub const KEY_CREATED: &str = "key.created";
pub const KEY_REVOKED: &str = "key.revoked";
pub const JOB_CREATED: &str = "job.created";
pub const JOB_CANCELLED: &str = "job.cancelled";
pub const JOB_RETRIED: &str = "job.retried";
pub const BATCH_RETRIED: &str = "batch.retried";
pub const DEAD_LETTERS_REQUEUED: &str = "dead_letters.requeued";
pub const TENANT_CREATED: &str = "tenant.created";
pub const TENANT_UPDATED: &str = "tenant.updated";

/// One event to write.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant_id: Option<TenantId>,
    pub actor: Actor,
    pub action: &'static str,
    /// `tenant`, `api_key`, `job`, `batch` or `dead_letters`.
    pub target_type: &'static str,
    pub target_id: Option<Uuid>,
    /// A JSON object; never a secret.
    pub details: Value,
}

impl NewEvent {
    /// An event about one of `tenant_id`'s resources.
    pub fn new(
        tenant_id: TenantId,
        actor: &Actor,
        action: &'static str,
        target_type: &'static str,
        target_id: Option<Uuid>,
        details: Value,
    ) -> Self {
        Self {
            tenant_id: Some(tenant_id),
            actor: actor.clone(),
            action,
            target_type,
            target_id,
            details,
        }
    }
}
