//! The domain's error type. It knows nothing of HTTP: `api/src/error.rs` is the one place
//! that maps it to a status code and a problem document.

use sea_orm::DbErr;

/// One broken rule in a request, located by its dotted path (`retry.max_attempts`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Well-formed input that breaks one or more rules.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Input that cannot be read at all (malformed JSON, bad NDJSON line).
    #[error("{0}")]
    Malformed(String),
    /// The thing does not exist *for this tenant*: other tenants' rows are not found.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state (a job that is not awaiting upload).
    #[error("{0}")]
    Conflict(String),
    /// A tenant limit that frees up over time (`max_pending_records`): the same request
    /// may succeed later.
    #[error("over quota: {}", .0.message)]
    OverQuota(FieldError),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A broken invariant or a failure the caller cannot act on; keeps its cause, if any,
    /// as its `source()` for whoever logs it.
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// Any error, as a cause kept in a chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// An internal error with no further cause.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// An internal error caused by `source`.
    pub fn internal_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects field errors while validating a whole request, so the caller gets every
/// broken rule at once rather than the first.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Runs `check` and records its error under `field`, returning the value if it passed.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.push(field, message);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}
