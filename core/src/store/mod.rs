//! Every SQL statement Freight runs, one function per statement, grouped by table. A
//! function runs on whatever connection or transaction it is given and never begins or
//! commits one: the use cases in `service` do.
//!
//! Simple statements (lookups, EXISTS, counts, GROUP BY, filters that depend on the
//! request) use SeaORM's builder. SQL is written by hand where it earns it, and each such
//! function says why: binary `COPY`, guarded updates that check and change in one
//! statement, the window and admission queries, and states the planner must see as
//! literals to use a partial index (a test checks that every such literal is a state).
//!
//! Tenant-owned queries take the tenant id and filter by it, so another tenant's row is
//! simply not found.

pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod cancellations;
pub mod db;
pub mod fleet;
pub mod jobs;
pub mod leadership;
pub mod ledger;
pub mod lifecycle;
pub mod page;
pub mod pg_txn;
pub mod reads;
pub mod reconcile;
pub mod records;
pub mod tenants;
pub mod upkeep;
pub mod windows;
pub mod workers;

use sea_orm::{DbErr, RuntimeErr, sqlx};

/// True when `err` is a unique violation (SQLSTATE 23505) of the named constraint or
/// index, as Postgres names it in the error's fields (not its message, which is
/// translated with the server's locale).
pub(crate) fn is_unique_violation(err: &DbErr, constraint: &str) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    matches!(e.as_ref(), sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint))
}

#[cfg(test)]
mod tests {
    use entity::{
        batch::BatchStatus, job::JobStatus, job_record::RecordStatus, record_log::RecordOutcome,
        tenant::TenantStatus,
    };
    use sea_orm::{ActiveEnum, Iterable};

    /// Quoted words in the store's SQL that are not states: setting names and values, and
    /// the fleet report's own labels.
    const NOT_STATES: &[&str] = &[
        "off",
        "dead",
        "autovacuum",
        "autovacuum_vacuum_threshold",
        "autovacuum_vacuum_scale_factor",
        "autovacuum_vacuum_insert_threshold",
        "autovacuum_vacuum_insert_scale_factor",
        "autovacuum_analyze_threshold",
        "autovacuum_analyze_scale_factor",
        "autovacuum_vacuum_cost_delay",
        "vacuum_cost_delay",
        "synchronous_commit",
    ];

    /// The SQL here names states as literals (`status = 'running'`), not parameters: the
    /// planner can then match the partial indexes built on those states. Literals are not
    /// checked by the compiler, so this test is: every quoted word in a statement must be
    /// a value of one of the state enums, or a known setting.
    #[test]
    fn state_literals_in_sql_are_real_states() {
        let mut states: Vec<String> = Vec::new();
        states.extend(JobStatus::iter().map(|s| s.to_value()));
        states.extend(BatchStatus::iter().map(|s| s.to_value()));
        states.extend(RecordStatus::iter().map(|s| s.to_value()));
        states.extend(RecordOutcome::iter().map(|s| s.to_value()));
        states.extend(TenantStatus::iter().map(|s| s.to_value()));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for word in quoted_words(&text) {
                checked += 1;
                assert!(
                    states.iter().any(|s| s == word) || NOT_STATES.contains(&word),
                    "{}: '{word}' is not a state of any table",
                    path.display()
                );
            }
        }
        assert!(checked > 50, "the scan found only {checked} quoted words");
    }

    /// Words of lowercase letters and `_` between single quotes: `'running'` (a lifetime
    /// such as `'static` has no closing quote, so it is not one).
    fn quoted_words(text: &str) -> impl Iterator<Item = &str> {
        let word = |b: u8| b.is_ascii_lowercase() || b == b'_';
        let bytes = text.as_bytes();
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && word(bytes[end]) {
                        end += 1;
                    }
                    if end < bytes.len() && bytes[end] == b'\'' && end - start > 1 {
                        i = end + 1;
                        return Some(&text[start..end]);
                    }
                }
                i += 1;
            }
            None
        })
    }
}
