//! `GET /api/v1/jobs/{id}/logs`: one row per record attempt (and per cancelled record).
//! JSON pages by default; with `Accept: text/csv` or `application/x-ndjson` the whole log
//! (filters applied) is streamed as a download, read in keyset pages of
//! [`DOWNLOAD_PAGE`] rows, so a log of any size never sits in memory.

use axum::{
    Json,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use entity::{JobId, record_log::RecordOutcome};
use freight_core::{
    FieldError,
    store::{
        page::Keyset,
        reads::{self, LogFilter, LogRow},
    },
};
use futures::{StreamExt, TryStreamExt, stream};
use sea_orm::ActiveEnum;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthTenant,
    error::{ApiError, ApiResult, Problem},
    extract::{ApiPath, ApiQuery},
    state::AppState,
    views::Page,
};

/// Rows fetched per query while streaming a download.
pub const DOWNLOAD_PAGE: u64 = 5_000;

/// The CSV header row: the log entry's fields, in order.
pub const CSV_HEADER: &str =
    "record_seq,record_key,batch_id,attempt,status,error,duration_ms,created_at\r\n";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(job_logs))
}

/// One log row: a record's attempt and its outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogEntry {
    pub record_seq: i64,
    /// The record's `record_key` field, as text (null when the job names none).
    pub record_key: Option<String>,
    pub batch_id: Uuid,
    /// The record's attempt number in its current run (0: cancelled before any attempt).
    pub attempt: i32,
    /// `succeeded`, `failed` (a retry follows), `dead_lettered` or `cancelled`.
    #[schema(example = "succeeded")]
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl From<LogRow> for LogEntry {
    fn from(l: LogRow) -> Self {
        Self {
            record_seq: l.record_seq,
            record_key: l.record_key,
            batch_id: l.batch_id.into(),
            attempt: l.attempt,
            status: l.status,
            error: l.error,
            duration_ms: l.duration_ms,
            created_at: l.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Only rows with this outcome: `succeeded`, `failed`, `dead_lettered` or `cancelled`.
    pub status: Option<String>,
    /// Only rows of this record (its sequence number, from 1).
    pub record_seq: Option<i64>,
    /// 1–1000, default 100. Ignored by downloads, which hold the whole log.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page. Ignored by downloads.
    pub cursor: Option<String>,
}

impl LogsQuery {
    fn filter(&self) -> ApiResult<LogFilter> {
        let mut errors = Vec::new();
        let raw = self.status.clone().filter(|s| !s.is_empty());
        let status = raw
            .as_ref()
            .and_then(|s| RecordOutcome::try_from_value(s).ok());
        if let Some(s) = raw.as_deref()
            && status.is_none()
        {
            errors.push(FieldError::new(
                "status",
                format!(
                    "`{s}` is not a record outcome (succeeded, failed, dead_lettered, cancelled)"
                ),
            ));
        }
        if self.record_seq.is_some_and(|seq| seq < 1) {
            errors.push(FieldError::new("record_seq", "must be 1 or more"));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(LogFilter {
            status,
            record_seq: self.record_seq,
        })
    }
}

/// The job's log, oldest row first. `Accept: text/csv` or `application/x-ndjson` streams
/// the whole log (filters apply, `limit` and `cursor` do not) as a download; CSV has a
/// header row and RFC 4180 quoting, with CRLF line ends.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path), LogsQuery,
        ("Accept" = Option<String>, Header,
            description = "`application/json` (default): a page; `text/csv` or `application/x-ndjson`: the whole log")),
    responses(
        (status = 200, description = "a page of log rows, or the whole log as a download",
            content((Page<LogEntry> = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem),
        (status = 429, body = Problem, description = "a download: the tenant holds `TENANT_MAX_EVENT_STREAMS` streams and downloads already")))]
async fn job_logs(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let filter = q.filter()?;
    let format = negotiate(&headers);
    let page = match format {
        Format::Json => Some(Keyset::parse(q.limit, q.cursor.as_deref())?),
        Format::Csv | Format::Ndjson => None,
    };
    reads::require_job(&state.db, auth.tenant_id, id).await?;
    match page {
        Some(page) => {
            let logs = reads::page_logs(&state.db, auth.tenant_id, id, &filter, page).await?;
            Ok(Json(Page::from(logs.map(LogEntry::from))).into_response())
        }
        None => download(&state, &auth, id, filter, format),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Ndjson,
}

/// Picks the format from `Accept`: the supported type with the highest `q` (the earliest
/// on a tie); JSON when none is named, including for `*/*` or an unsupported type.
fn negotiate(headers: &HeaderMap) -> Format {
    let mut best = (Format::Json, 0.0f32);
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "text/csv" => Format::Csv,
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Format::Ndjson,
            "application/json" => Format::Json,
            _ => continue,
        };
        if q > best.1 {
            best = (format, q);
        }
    }
    best.0
}

/// Streams the whole (filtered) log: a page of rows is read, encoded and sent, then the
/// next. A database error mid-stream is logged and cuts the body short; so do the key's
/// revocation and `STREAM_MAX_LIFETIME`.
fn download(
    state: &AppState,
    auth: &AuthTenant,
    job_id: JobId,
    filter: LogFilter,
    format: Format,
) -> ApiResult<Response> {
    let (db, tenant_id) = (state.db.clone(), auth.tenant_id);
    let pages = stream::try_unfold(Some(0i64), move |after| {
        let (db, filter) = (db.clone(), filter.clone());
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let rows =
                reads::list_logs(&db, tenant_id, job_id, &filter, after, DOWNLOAD_PAGE).await?;
            let Some(last) = rows.last() else {
                return Ok(None);
            };
            let next = (rows.len() as u64 == DOWNLOAD_PAGE).then_some(last.id);
            let mut buf = String::with_capacity(rows.len() * 128);
            for row in rows {
                match format {
                    Format::Csv => push_csv_row(&mut buf, &row),
                    _ => push_ndjson_row(&mut buf, row),
                }
            }
            Ok::<_, freight_core::Error>(Some((Bytes::from(buf), next)))
        }
    })
    .inspect_err(move |e| {
        tracing::error!(job.id = %job_id, error = %e, "log download failed mid-stream");
    });
    let head = match format {
        Format::Csv => Some(Ok(Bytes::from_static(CSV_HEADER.as_bytes()))),
        _ => None,
    };
    // Counted, and ended on revocation or suspension, like an event stream.
    let body = Body::from_stream(auth.open_stream(&state.auth, stream::iter(head).chain(pages))?);
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/x-ndjson", "ndjson"),
    };
    let disposition = format!("attachment; filename=\"job-{job_id}-logs.{ext}\"");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("ascii"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

fn timestamp(at: &DateTime<Utc>) -> String {
    // The same form as the JSON responses.
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn push_csv_row(out: &mut String, l: &LogRow) {
    let fields: [&str; 8] = [
        &l.record_seq.to_string(),
        l.record_key.as_deref().unwrap_or(""),
        &l.batch_id.to_string(),
        &l.attempt.to_string(),
        &l.status,
        l.error.as_deref().unwrap_or(""),
        &l.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
        &timestamp(&l.created_at),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_csv_field(out, field);
    }
    out.push_str("\r\n");
}

/// Appends one CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF (or
/// starts or ends with a space, which some readers trim), with quotes doubled. A field a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR, and
/// not just a number) gets a leading `'`, as OWASP advises for CSV injection: the text is
/// the tenant's data (a record key, an error echoing a destination's answer).
fn push_csv_field(out: &mut String, field: &str) {
    let formula =
        field.starts_with(['=', '+', '-', '@', '\t', '\r']) && field.parse::<f64>().is_err();
    let needs_quotes = formula
        || field.contains([',', '"', '\n', '\r'])
        || field.starts_with(' ')
        || field.ends_with(' ');
    if !needs_quotes {
        out.push_str(field);
        return;
    }
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

fn push_ndjson_row(out: &mut String, row: LogRow) {
    let line = serde_json::to_string(&LogEntry::from(row)).expect("a log entry serialises");
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        let mut out = String::new();
        push_csv_field(&mut out, s);
        out
    }

    #[test]
    fn csv_fields_that_a_spreadsheet_would_run_are_defused() {
        assert_eq!(
            field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(field("+cmd|' /C calc'!A0"), "\"'+cmd|' /C calc'!A0\"");
        assert_eq!(field("-2+3"), "\"'-2+3\"");
        assert_eq!(field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(field("\tx"), "\"'\tx\"");
        // Numbers stay numbers.
        assert_eq!(field("-42"), "-42");
        assert_eq!(field("+3.5"), "+3.5");
        assert_eq!(field("a=b"), "a=b");
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(field(" padded"), "\" padded\"");
        assert_eq!(field("\""), "\"\"\"\"");
        assert_eq!(field("héllo, wörld"), "\"héllo, wörld\"");
    }

    #[test]
    fn a_csv_row_has_every_column_in_header_order() {
        let row = LogRow {
            id: 7,
            record_seq: 3,
            record_key: Some("k,1".into()),
            batch_id: entity::BatchId::default(),
            attempt: 2,
            status: "failed".into(),
            error: Some("HTTP 503: \"busy\"".into()),
            duration_ms: None,
            created_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        };
        let mut out = String::new();
        push_csv_row(&mut out, &row);
        assert_eq!(
            out,
            "3,\"k,1\",00000000-0000-0000-0000-000000000000,2,failed,\"HTTP 503: \"\"busy\"\"\",,2026-09-21T14:13:20Z\r\n"
        );
        assert_eq!(CSV_HEADER.trim_end().split(',').count(), 8);
    }

    #[test]
    fn accept_picks_the_preferred_supported_type() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, accept.parse().unwrap());
            negotiate(&h)
        };
        assert_eq!(negotiate(&HeaderMap::new()), Format::Json);
        assert_eq!(with("text/csv"), Format::Csv);
        assert_eq!(with("Text/CSV; charset=utf-8"), Format::Csv);
        assert_eq!(with("application/x-ndjson"), Format::Ndjson);
        assert_eq!(with("*/*"), Format::Json);
        assert_eq!(with("text/html"), Format::Json);
        assert_eq!(with("application/json, text/csv"), Format::Json);
        assert_eq!(with("application/json;q=0.5, text/csv"), Format::Csv);
        assert_eq!(with("text/csv;q=0"), Format::Json);
    }
}
