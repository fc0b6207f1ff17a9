//! The body of `POST /api/v1/jobs/{id}/records` as an extractor: its media type picks
//! the decoder (a JSON array or NDJSON), and [`RecordUpload::parse_ahead`] reads and
//! checks it in a task of its own, chunk by chunk, ahead of the `COPY` that stores them.

use std::collections::VecDeque;

use axum::{
    body::{Body, Bytes},
    extract::{FromRef, FromRequest, Request},
};
use freight_core::{
    FieldError,
    domain::{
        decode::{CheckedRecord, DecodeErrorKind, RecordDecoder},
        json_array::JsonArrayDecoder,
        ndjson::NdjsonDecoder,
        record::Staged,
    },
    store::records,
};
use futures::{StreamExt, stream::BoxStream};

use crate::{
    error::{ApiError, ApiResult},
    extract::media_type,
};

/// The largest record an upload may hold (`MAX_RECORD_BYTES`), from the router's state.
#[derive(Debug, Clone, Copy)]
pub struct MaxRecordBytes(pub usize);

/// An upload's body with the decoder its media type calls for. A media type Freight does
/// not read is a 415 before anything else happens.
pub struct RecordUpload {
    body: Body,
    decoder: Box<dyn RecordDecoder>,
}

impl<S: Send + Sync> FromRequest<S> for RecordUpload
where
    MaxRecordBytes: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let MaxRecordBytes(max_record) = MaxRecordBytes::from_ref(state);
        let decoder: Box<dyn RecordDecoder> = match media_type(req.headers()).as_str() {
            "application/json" => Box::new(JsonArrayDecoder::new(max_record)),
            "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
                Box::new(NdjsonDecoder::new(max_record))
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "send records as application/json (an array) or application/x-ndjson, not `{other}`"
                )));
            }
        };
        Ok(Self {
            body: req.into_body(),
            decoder,
        })
    }
}

impl RecordUpload {
    /// Reads and checks the body in a task of its own, up to [`PARSE_AHEAD`] chunks
    /// ahead of the returned stream. The task ends at the body's end, at its first error
    /// (the stream's last item), or when the stream is dropped. `key` is the job's
    /// `record_key` field.
    pub fn parse_ahead(self, key: Option<String>) -> BoxStream<'static, ApiResult<Vec<Staged>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(PARSE_AHEAD);
        tokio::spawn(async move {
            let mut chunks = RecordChunks::new(self.body, key, self.decoder);
            loop {
                let next = chunks.next_chunk().await;
                if matches!(&next, Ok(chunk) if chunk.is_empty()) {
                    break;
                }
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    break;
                }
            }
        });
        let mut rx = rx;
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}

/// Chunks of parsed records an upload may hold ahead of what Postgres has taken: about
/// 80,000 records (some 20 MiB). Parsing starts before the upload's transaction, so an
/// upload waiting for a turn (the services' upload turns, or a start holding the job)
/// parses meanwhile, and then streams into `COPY` as fast as Postgres takes it.
const PARSE_AHEAD: usize = 16;

/// A body read as chunks of at most [`records::CHUNK`] checked records.
struct RecordChunks {
    stream: axum::body::BodyDataStream,
    decoder: Box<dyn RecordDecoder>,
    /// The frame being decoded and how much of it the decoder has had.
    frame: Bytes,
    fed: usize,
    /// Parsed and checked, not handed out yet: each record's own text.
    pending: VecDeque<Staged>,
    /// The records of the slice being decoded.
    decoded: Vec<CheckedRecord>,
    /// Records handed out so far (record indices in errors count from the body's start).
    handed_out: usize,
    ended: bool,
    /// The job's `record_key` field.
    key: Option<String>,
}

/// How much of a frame the decoder takes at a time: a frame can be large, and a slice of
/// empty objects decodes to a record per three bytes.
const DECODE_SLICE: usize = 64 << 10;

impl RecordChunks {
    fn new(body: Body, key: Option<String>, decoder: Box<dyn RecordDecoder>) -> Self {
        Self {
            stream: body.into_data_stream(),
            decoder,
            frame: Bytes::new(),
            fed: 0,
            pending: VecDeque::new(),
            decoded: Vec::new(),
            handed_out: 0,
            ended: false,
            key,
        }
    }

    /// The next chunk, as the records' texts (stored as sent, not serialised again);
    /// empty once the body is read. A body that is not JSON is a 400; a record that
    /// breaks a rule, or is over the size limit, a 422; each names the record's index
    /// (and an NDJSON body's line). Holds at most a chunk and a slice's records.
    async fn next_chunk(&mut self) -> ApiResult<Vec<Staged>> {
        while self.pending.len() < records::CHUNK && !self.ended {
            let step = if self.fed < self.frame.len() {
                let end = (self.fed + DECODE_SLICE).min(self.frame.len());
                let slice = &self.frame[self.fed..end];
                self.fed = end;
                self.decoder
                    .push(slice, self.key.as_deref(), &mut self.decoded)
            } else {
                match self.stream.next().await.transpose().map_err(stream_error)? {
                    Some(frame) => {
                        (self.frame, self.fed) = (frame, 0);
                        continue;
                    }
                    None => {
                        self.ended = true;
                        self.decoder.finish(self.key.as_deref(), &mut self.decoded)
                    }
                }
            };
            for record in self.decoded.drain(..) {
                if let Err(m) = record.verdict {
                    return Err(ApiError::Validation(vec![FieldError::new(
                        format!("records[{}]", self.handed_out + self.pending.len()),
                        m,
                    )]));
                }
                self.pending.push_back(record.record);
            }
            if let Err(e) = step {
                let field = format!("records[{}]", self.handed_out + self.pending.len());
                let at = e.line.map(|l| format!("line {l}: ")).unwrap_or_default();
                return Err(match e.kind {
                    DecodeErrorKind::TooLarge { .. } => {
                        ApiError::Validation(vec![FieldError::new(
                            field,
                            format!("{at}{}", e.message()),
                        )])
                    }
                    DecodeErrorKind::Syntax(ref m) => ApiError::BadRequest {
                        detail: format!("{at}{}", e.message()),
                        errors: vec![FieldError::new(field, m.clone())],
                    },
                });
            }
        }
        // Exactly sized: a chunk waits in the parse-ahead queue with its capacity.
        let n = self.pending.len().min(records::CHUNK);
        let chunk: Vec<Staged> = self.pending.drain(..n).collect();
        self.handed_out += chunk.len();
        Ok(chunk)
    }
}

/// A body that failed mid-stream: over the limit (413), too slow (408) or cut off (400).
fn stream_error(err: axum::Error) -> ApiError {
    if crate::limits::is_slow_body(&err) {
        return ApiError::RequestTimeout(crate::extract::slow_body_message());
    }
    if crate::extract::over_limit(&err) {
        return ApiError::PayloadTooLarge(
            "the request body is larger than the configured limit (HTTP_BODY_LIMIT); split the upload into several calls"
                .into(),
        );
    }
    ApiError::bad_request(format!("could not read the request body: {err}"))
}
