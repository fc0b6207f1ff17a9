//! Tenants as operators run them: create, change (suspend, reinstate, limits).

use entity::{
    TenantId,
    tenant::{self, TenantStatus},
};
use sea_orm::TransactionTrait;

use super::Services;
use crate::{
    domain::{
        audit::{self, Actor, NewEvent},
        retry_policy::{RetryPolicy, RetryPolicyInput},
        tenant::{CreateTenantRequest, UpdateTenantRequest},
    },
    error::{Error, Problems, Result},
    store::{self, lifecycle, tenants, windows},
};

impl Services {
    /// Creates a tenant with its `tenant.created` audit event; a taken name is a conflict.
    pub async fn create_tenant(&self, request: CreateTenantRequest) -> Result<tenant::Model> {
        let new = request.validate(self.settings.tenant_max_pending_records)?;
        let txn = self.db.begin().await?;
        let tenant = tenants::create(&txn, &new).await?;
        let details = serde_json::json!({
            "name": tenant.name,
            "max_concurrent_jobs": tenant.max_concurrent_jobs,
            "rate_limit_per_second": tenant.rate_limit_per_second,
            "max_pending_records": tenant.max_pending_records,
        });
        let event = NewEvent::new(
            tenant.id,
            &Actor::Operator,
            audit::TENANT_CREATED,
            "tenant",
            Some(tenant.id.into()),
            details,
        );
        store::audit::record(&txn, event).await?;
        txn.commit().await?;
        Ok(tenant)
    }

    /// Changes a tenant's status or limits, with its `tenant.updated` audit event. The
    /// change moves the tenant row's `updated_at`, which every api replica polls. An
    /// active tenant's waiting work moves at once (reinstated, or given higher limits),
    /// not at the reconciler's next pass; a suspended tenant's waits: workers claim none.
    pub async fn update_tenant(
        &self,
        id: TenantId,
        request: UpdateTenantRequest,
    ) -> Result<tenant::Model> {
        let patch = request.validate()?;
        let txn = self.db.begin().await?;
        let tenant = tenants::update(&txn, id, &patch)
            .await?
            .ok_or(Error::NotFound("tenant"))?;
        let event = NewEvent::new(
            id,
            &Actor::Operator,
            audit::TENANT_UPDATED,
            "tenant",
            Some(id.into()),
            patch.audit_details(),
        );
        store::audit::record(&txn, event).await?;
        txn.commit().await?;
        if tenant.status == TenantStatus::Active {
            self.resume_tenant(id).await?;
        }
        Ok(tenant)
    }

    /// Moves an active tenant's work: its queued and due batches (whose messages workers
    /// dropped while it was suspended), its running jobs' windows refilled, its queued
    /// jobs admitted.
    async fn resume_tenant(&self, tenant_id: TenantId) -> Result<()> {
        let txn = self.db.begin().await?;
        let mut batches = lifecycle::redispatch_waiting(&txn, tenant_id).await?;
        for job_id in lifecycle::lock_running(&txn, tenant_id).await? {
            batches.extend(windows::fill_window(&txn, job_id).await?);
        }
        batches.extend(windows::admit(&txn, tenant_id).await?);
        txn.commit().await?;
        self.dispatch(&batches).await;
        Ok(())
    }

    /// Sets the tenant's default retry policy, used by its jobs created without `retry`.
    pub async fn set_default_retry(
        &self,
        tenant_id: TenantId,
        input: RetryPolicyInput,
    ) -> Result<RetryPolicy> {
        let mut problems = Problems::default();
        let policy = input.validate(RetryPolicy::default(), "", &mut problems);
        let policy = problems
            .into_result(|| policy)?
            .ok_or_else(|| Error::internal("retry policy validation failed without a problem"))?;
        tenants::set_default_retry(&self.db, tenant_id, &policy).await
    }
}
