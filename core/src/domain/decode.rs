//! Records decoded from a body as it arrives, whatever its format: each record checked
//! ([`record::check_text`]) without being built, and kept as the text it was sent as.
//!
//! A decoder is fed the body's chunks in order and hands back every record completed so
//! far. Its work is linear in the bytes it is given, however the sender cuts them, and it
//! holds at most one unfinished record, never more than the record limit: a body cannot
//! make the server scan or keep more than it sent.

use super::record::{self, Staged, Verdict};

/// Largest record, in bytes, unless the operator sets `MAX_RECORD_BYTES`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// One record as it is staged, with the rule it breaks, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRecord {
    pub record: Staged,
    pub verdict: Verdict,
}

/// Why a body could not be decoded. `line` is the 1-based line of an NDJSON body (an
/// array's elements have no line of their own).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub line: Option<usize>,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DecodeErrorKind {
    /// Not JSON, or not the expected shape (a 400).
    Syntax(String),
    /// One record is larger than the limit (a 422: the body is well formed).
    TooLarge { limit: usize },
}

impl DecodeError {
    pub(crate) fn syntax(line: Option<usize>, e: impl std::fmt::Display) -> Self {
        Self {
            line,
            kind: DecodeErrorKind::Syntax(e.to_string()),
        }
    }

    pub(crate) fn too_large(line: Option<usize>, limit: usize) -> Self {
        Self {
            line,
            kind: DecodeErrorKind::TooLarge { limit },
        }
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> String {
        match &self.kind {
            DecodeErrorKind::Syntax(m) => format!("not valid JSON: {m}"),
            DecodeErrorKind::TooLarge { limit } => {
                format!("is larger than {limit} bytes, the limit of one record (MAX_RECORD_BYTES)")
            }
        }
    }
}

/// A body format that yields records chunk by chunk.
pub trait RecordDecoder: Send {
    /// Takes the next chunk of the body and appends every record it completes to `out`;
    /// stops at the first error. `key` names the job's `record_key` field.
    fn push(
        &mut self,
        chunk: &[u8],
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError>;

    /// Takes what is left once the body has ended.
    fn finish(
        &mut self,
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError>;
}

/// Checks one record's text (already cut out of the body) and keeps it.
pub(crate) fn check(
    raw: &[u8],
    line: Option<usize>,
    key: Option<&str>,
) -> Result<CheckedRecord, DecodeError> {
    let (verdict, key) = record::check_text(raw, key).map_err(|e| DecodeError::syntax(line, e))?;
    // Valid UTF-8 once it parsed; checked again rather than trusted.
    let text = std::str::from_utf8(raw).map_err(|e| DecodeError::syntax(line, e))?;
    Ok(CheckedRecord {
        record: Staged {
            text: text.to_owned(),
            key,
        },
        verdict,
    })
}
