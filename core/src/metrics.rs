//! Metric names and the Prometheus recorder. Every metric Freight emits is named here, so
//! dashboards, alerts and code agree. Tenant ids are never labels.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use entity::TenantId;
use metrics::Label;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "freight_http_requests_total";
pub const HTTP_DURATION: &str = "freight_http_request_duration_seconds";
pub const JOBS_CREATED: &str = "freight_jobs_created_total";
pub const JOBS_FINISHED: &str = "freight_jobs_finished_total";
pub const RECORDS: &str = "freight_records_total";
pub const BATCH_DURATION: &str = "freight_batch_duration_seconds";
pub const BATCH_RETRIES: &str = "freight_batch_retries_total";
/// Batches put off because this worker lacks the key their destination is sealed with.
pub const BATCHES_DEFERRED: &str = "freight_batches_deferred_total";
pub const DEAD_LETTERS: &str = "freight_dead_letters_total";
pub const QUEUE_DEPTH: &str = "freight_queue_depth";
pub const WORKERS: &str = "freight_workers";
/// Argon2 verifications of API keys: a key's first use on a replica, or a flood of bad keys.
pub const API_KEY_VERIFICATIONS: &str = "freight_api_key_verifications_total";
/// Key verifications refused with a 503 because the hashing queue was full.
pub const AUTH_SHED: &str = "freight_auth_shed_total";
/// Request bodies cut off for arriving slower than `UPLOAD_MIN_RATE`.
pub const SLOW_BODIES: &str = "freight_http_slow_bodies_total";
pub const CANCEL_LATENCY: &str = "freight_cancel_latency_seconds";
pub const RECONCILER_RUNS: &str = "freight_reconciler_runs_total";
pub const RECONCILER_REDISPATCHED: &str = "freight_reconciler_redispatched_total";
pub const RECONCILER_LAST_RUN: &str = "freight_reconciler_last_run_timestamp_seconds";
/// VACUUM / ANALYZE runs of Freight's tables by the reconciler, when autovacuum is off.
pub const TABLE_UPKEEP: &str = "freight_table_upkeep_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (api and worker share it in
/// `freight all`; many test apps share it in one test process). Histograms get explicit
/// buckets so they render as histograms, not summaries.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_DURATION.into()),
                        &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(CANCEL_LATENCY.into()),
                        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("task_duration_seconds".into()),
                        &[0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
                    )
                })
                .expect("bucket lists are non-empty");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (a test harness): render our own anyway.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

static TENANT_LABELS: AtomicBool = AtomicBool::new(false);

/// `METRICS_TENANT_LABELS`: add a `tenant_id` label to the job and record counters. Off by
/// default: with many tenants it multiplies the series Prometheus must keep.
pub fn set_tenant_labels(on: bool) {
    TENANT_LABELS.store(on, Ordering::Relaxed);
}

fn labels(tenant: TenantId, mut labels: Vec<Label>) -> Vec<Label> {
    if TENANT_LABELS.load(Ordering::Relaxed) {
        labels.push(Label::new("tenant_id", tenant.to_string()));
    }
    labels
}

pub fn job_created(tenant: TenantId) {
    metrics::counter!(JOBS_CREATED, labels(tenant, vec![])).increment(1);
}

/// Outcomes of one batch attempt, as the ledger recorded them.
pub fn record_outcomes(
    tenant: TenantId,
    succeeded: i64,
    failed: i64,
    dead_lettered: i64,
    cancelled: i64,
) {
    for (outcome, n) in [
        ("succeeded", succeeded),
        ("failed", failed),
        ("dead_lettered", dead_lettered),
        ("cancelled", cancelled),
    ] {
        if n > 0 {
            metrics::counter!(
                RECORDS,
                labels(tenant, vec![Label::new("outcome", outcome)])
            )
            .increment(n as u64);
        }
    }
    if dead_lettered > 0 {
        metrics::counter!(DEAD_LETTERS, labels(tenant, vec![])).increment(dead_lettered as u64);
    }
}

pub fn job_finished(tenant: TenantId, status: &str) {
    metrics::counter!(
        JOBS_FINISHED,
        labels(tenant, vec![Label::new("status", status.to_owned())])
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorded_metrics_are_rendered() {
        let handle = super::handle();
        metrics::counter!(super::RECONCILER_RUNS).increment(2);
        super::record_outcomes(entity::TenantId::default(), 3, 0, 1, 0);
        let text = handle.render();
        assert!(text.contains("freight_reconciler_runs_total 2"), "{text}");
        assert!(
            text.contains(r#"freight_records_total{outcome="succeeded"} 3"#),
            "{text}"
        );
        assert!(text.contains("freight_dead_letters_total 1"), "{text}");
        assert!(
            !text.contains("tenant_id"),
            "no tenant label unless an operator turns it on"
        );
    }
}
