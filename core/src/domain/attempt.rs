//! What one delivery attempt of a batch means: every record's result sorted into the rows
//! the ledger writes (a log row, the record's status, a dead letter), the counts its job
//! adds, and the batch's next state. Pure: `store::ledger` writes what this decides, in
//! the transaction `service::deliveries` runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{batch::BatchStatus, job_record::RecordStatus, record_log::RecordOutcome};

use super::{delivery::Outcome, retry_policy::RetryPolicy};

/// One record's result in this attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub seq: i64,
    /// The record's attempt number in this delivery (its earlier attempts + 1).
    pub attempt: i32,
    pub outcome: Outcome,
    pub duration_ms: i32,
}

/// The log, record and dead-letter rows one attempt produces, column by column (the
/// ledger binds each column as one array).
#[derive(Debug, Default)]
pub struct Rows {
    pub seq: Vec<i64>,
    pub attempt: Vec<i32>,
    pub log_status: Vec<RecordOutcome>,
    pub error: Vec<Option<String>>,
    pub duration: Vec<i32>,
    pub rec_seq: Vec<i64>,
    pub rec_status: Vec<RecordStatus>,
    pub rec_attempts: Vec<i32>,
    pub rec_error: Vec<Option<String>>,
    pub dead_seq: Vec<i64>,
    pub dead_error: Vec<String>,
    pub dead_attempts: Vec<i32>,
}

impl Rows {
    fn log(&mut self, r: &AttemptResult, status: RecordOutcome, error: Option<String>) {
        self.seq.push(r.seq);
        self.attempt.push(r.attempt);
        self.log_status.push(status);
        self.error.push(error);
        self.duration.push(r.duration_ms);
    }

    /// A final failure: the log row, the record's status and its dead letter.
    fn dead_letter(&mut self, r: &AttemptResult, error: String) {
        self.log(r, RecordOutcome::DeadLettered, Some(error.clone()));
        self.record(
            r.seq,
            RecordStatus::DeadLettered,
            r.attempt,
            Some(error.clone()),
        );
        self.dead_seq.push(r.seq);
        self.dead_error.push(error);
        self.dead_attempts.push(r.attempt);
    }

    fn record(&mut self, seq: i64, status: RecordStatus, attempts: i32, error: Option<String>) {
        self.rec_seq.push(seq);
        self.rec_status.push(status);
        self.rec_attempts.push(attempts);
        self.rec_error.push(error);
    }
}

/// How many of the attempt's records ended which way: what the job's counters add.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub succeeded: i64,
    pub dead_lettered: i64,
    pub cancelled: i64,
    /// Still pending: retried later (or now, for records a stopping worker never tried).
    pub retrying: i64,
}

/// The batch's next state, as far as this attempt's records tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Records wait for another attempt at this time.
    Retry(DateTime<Utc>),
    Cancelled,
    /// A record of this attempt was dead-lettered.
    Failed,
    /// No record of this attempt failed. Whether an earlier attempt dead-lettered one
    /// (then the batch is failed) is the ledger's to look up.
    Succeeded,
}

impl Next {
    pub fn status(self) -> BatchStatus {
        match self {
            Next::Retry(_) => BatchStatus::RetryScheduled,
            Next::Cancelled => BatchStatus::Cancelled,
            Next::Failed => BatchStatus::Failed,
            Next::Succeeded => BatchStatus::Succeeded,
        }
    }

    pub fn retry_at(self) -> Option<DateTime<Utc>> {
        match self {
            Next::Retry(at) => Some(at),
            _ => None,
        }
    }
}

/// An attempt sorted out.
#[derive(Debug)]
pub struct Classified {
    pub rows: Rows,
    pub counts: Counts,
    pub next: Next,
    /// The last error any record met, for the batch row.
    pub last_error: Option<String>,
}

/// An attempt to sort out.
pub struct Attempt<'a> {
    pub results: &'a [AttemptResult],
    pub policy: &'a RetryPolicy,
    /// The batch's claims so far, this one included: a deferred batch backs off on them.
    pub batch_attempts: i32,
    /// A uniform random number in [0, 1) for the retry delay's jitter.
    pub jitter_unit: f64,
}

impl Attempt<'_> {
    /// Sorts the results. `cancelling`: the job was cancelled meanwhile, so nothing is
    /// retried and what is not done ends cancelled.
    pub fn classify(&self, cancelling: bool, now: DateTime<Utc>) -> Classified {
        let mut tally = Tally::default();
        for r in self.results {
            tally.add(r, self.policy, cancelling);
        }
        let last_error = self.results.iter().rev().find_map(|r| match &r.outcome {
            Outcome::Transient(e) | Outcome::Permanent(e) | Outcome::Deferred(e) => Some(stored(e)),
            _ => None,
        });
        let next = if tally.counts.retrying > 0 {
            let delay = chrono::Duration::from_std(self.retry_delay(&tally)).unwrap_or_default();
            Next::Retry(now + delay)
        } else if tally.counts.cancelled > 0 {
            Next::Cancelled
        } else if tally.counts.dead_lettered > 0 {
            Next::Failed
        } else {
            Next::Succeeded
        };
        Classified {
            rows: tally.rows,
            counts: tally.counts,
            next,
            last_error,
        }
    }

    fn retry_delay(&self, tally: &Tally) -> Duration {
        if tally.deferred {
            // Backs off on the batch's own claims, which keep counting while it waits.
            self.policy
                .delay_for(self.batch_attempts.clamp(1, 64) as u32, self.jitter_unit)
        } else if tally.requeue_now && tally.retry_attempt == 0 {
            Duration::ZERO
        } else {
            self.policy
                .delay_for(tally.retry_attempt.max(1) as u32, self.jitter_unit)
        }
    }
}

/// The records sorted so far.
#[derive(Default)]
struct Tally {
    rows: Rows,
    counts: Counts,
    /// The highest attempt number among records to retry (sets the delay).
    retry_attempt: i32,
    /// A record was never tried (the worker is stopping): go again at once.
    requeue_now: bool,
    /// A record waits for a worker that can open its destination.
    deferred: bool,
}

impl Tally {
    fn add(&mut self, r: &AttemptResult, policy: &RetryPolicy, cancelling: bool) {
        let (rows, out) = (&mut self.rows, &mut self.counts);
        match &r.outcome {
            Outcome::Succeeded => {
                rows.log(r, RecordOutcome::Succeeded, None);
                rows.record(r.seq, RecordStatus::Succeeded, r.attempt, None);
                out.succeeded += 1;
            }
            Outcome::Permanent(e) => {
                rows.dead_letter(r, stored(e));
                out.dead_lettered += 1;
            }
            Outcome::Transient(e) if cancelling => {
                // Failed, and the job was cancelled meanwhile: no retry, the record ends
                // cancelled (its terminal row follows the failed attempt's row).
                rows.log(r, RecordOutcome::Failed, Some(stored(e)));
                rows.log(
                    r,
                    RecordOutcome::Cancelled,
                    Some("job cancelled before a retry".into()),
                );
                rows.record(r.seq, RecordStatus::Cancelled, r.attempt, Some(stored(e)));
                out.cancelled += 1;
            }
            Outcome::Transient(e) if r.attempt >= policy.max_attempts as i32 => {
                let error = format!("gave up after {} attempts: {}", r.attempt, stored(e));
                rows.dead_letter(r, error);
                out.dead_lettered += 1;
            }
            Outcome::Transient(e) => {
                rows.log(r, RecordOutcome::Failed, Some(stored(e)));
                rows.record(r.seq, RecordStatus::Pending, r.attempt, Some(stored(e)));
                out.retrying += 1;
                self.retry_attempt = self.retry_attempt.max(r.attempt);
            }
            Outcome::NotAttempted | Outcome::Deferred(_) if cancelling => {
                // Never tried: logged under the attempts it had before this one.
                let before = AttemptResult {
                    attempt: r.attempt - 1,
                    ..r.clone()
                };
                let why = "job cancelled before this record was delivered";
                rows.log(&before, RecordOutcome::Cancelled, Some(why.into()));
                rows.record(r.seq, RecordStatus::Cancelled, before.attempt, None);
                out.cancelled += 1;
            }
            Outcome::NotAttempted => {
                // Stopped without a cancel (the worker is shutting down): not an attempt.
                // The record stays pending and the batch goes again at once.
                out.retrying += 1;
                self.requeue_now = true;
            }
            Outcome::Deferred(e) => {
                // Not an attempt either (no log row, attempts unchanged), so no number of
                // these dead-letters a record; the error shows why it waits.
                rows.record(r.seq, RecordStatus::Pending, r.attempt - 1, Some(stored(e)));
                out.retrying += 1;
                self.deferred = true;
            }
        }
    }
}

/// An outcome's error as the ledger stores it (log, record, dead letter and batch alike):
/// Postgres text cannot hold NUL, which a destination's answer might.
pub fn stored(error: &str) -> String {
    error.replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(seq: i64, attempt: i32, outcome: Outcome) -> AttemptResult {
        AttemptResult {
            seq,
            attempt,
            outcome,
            duration_ms: 1,
        }
    }

    fn classify(results: &[AttemptResult], cancelling: bool) -> Classified {
        let policy = RetryPolicy::default();
        Attempt {
            results,
            policy: &policy,
            batch_attempts: 1,
            jitter_unit: 0.5,
        }
        .classify(cancelling, Utc::now())
    }

    #[test]
    fn a_transient_failure_is_retried_until_the_last_attempt_then_dead_lettered() {
        let policy = RetryPolicy::default();
        let early = classify(&[result(1, 1, Outcome::Transient("503".into()))], false);
        assert!(matches!(early.next, Next::Retry(_)));
        assert_eq!(early.counts.retrying, 1);
        assert_eq!(early.rows.rec_status, [RecordStatus::Pending]);
        let last = classify(
            &[result(
                1,
                policy.max_attempts as i32,
                Outcome::Transient("503".into()),
            )],
            false,
        );
        assert_eq!(last.next, Next::Failed);
        assert_eq!(last.counts.dead_lettered, 1);
        assert!(last.rows.dead_error[0].starts_with("gave up after"));
    }

    #[test]
    fn a_cancel_ends_what_is_not_done_and_retries_nothing() {
        let c = classify(
            &[
                result(1, 1, Outcome::Succeeded),
                result(2, 1, Outcome::Transient("timeout".into())),
                result(3, 1, Outcome::NotAttempted),
            ],
            true,
        );
        assert_eq!(c.next, Next::Cancelled);
        assert_eq!(
            c.counts,
            Counts {
                succeeded: 1,
                cancelled: 2,
                ..Counts::default()
            }
        );
        // The record never tried is logged under the attempts it had before.
        assert_eq!(c.rows.attempt.last(), Some(&0));
    }

    #[test]
    fn records_a_stopping_worker_never_tried_go_again_at_once() {
        let before = Utc::now();
        let c = classify(&[result(1, 1, Outcome::NotAttempted)], false);
        let Next::Retry(at) = c.next else {
            panic!("{:?}", c.next)
        };
        assert!(at <= Utc::now() && at >= before);
        assert!(c.rows.seq.is_empty(), "not an attempt: no log row");
    }

    #[test]
    fn errors_lose_nul_characters_postgres_cannot_store() {
        let c = classify(
            &[result(1, 1, Outcome::Permanent("bad\0byte".into()))],
            false,
        );
        assert_eq!(c.rows.dead_error, ["badbyte"]);
        assert_eq!(c.last_error.as_deref(), Some("badbyte"));
    }
}
