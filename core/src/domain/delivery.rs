//! What a delivery attempt produces for each record: the connectors' answer, which the
//! ledger records and the retry policy acts on.

/// One staged record to deliver.
#[derive(Debug, Clone)]
pub struct RecordToDeliver {
    pub seq: i64,
    /// The record's JSON text as staged: an object, checked by Postgres (the column is
    /// `json`). Connectors send it as it is or read the fields they need from it.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Worth retrying: network errors, timeouts, 408/429/5xx, deadlocks, serialization
    /// failures, connection loss.
    Transient(String),
    /// Retrying will not help: other 4xx, constraint violations, type errors.
    Permanent(String),
    /// Not attempted because the batch was cancelled.
    NotAttempted,
    /// Not attempted because this worker cannot deliver for now through no fault of the
    /// record or the destination (it lacks the key the destination's secrets are sealed
    /// with). Not counted as an attempt, so it never dead-letters: the batch waits with
    /// backoff until a worker that can deliver takes it.
    Deferred(String),
}

#[derive(Debug, Clone)]
pub struct RecordResult {
    pub seq: i64,
    pub outcome: Outcome,
    /// Time spent on this record's write (for bulk writes, the statement's time).
    pub duration_ms: i32,
}
