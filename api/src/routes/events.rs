//! `GET /api/v1/jobs/{id}/events`: a job's progress as Server-Sent Events.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use entity::JobId;
use freight_core::store::{batches, jobs};
use futures::{Stream, stream};
use tokio::sync::watch;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AuthTenant,
    error::{ApiResult, Problem},
    events::Snapshot,
    extract::ApiPath,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(job_events))
}

/// One event of the stream, as an SSE client parses it (the OpenAPI schema of each item
/// of the `text/event-stream` response, not a JSON body).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: the stream itself is written with axum's `Event`
pub struct JobEvent {
    /// `progress` while the job runs; `done` once, last, with the job in its final state.
    pub event: JobEventKind,
    /// Grows with every event; send the last one seen back as `Last-Event-ID` to resume.
    pub id: String,
    /// The job object, as `GET /api/v1/jobs/{id}` returns it, as JSON text.
    pub data: String,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // documentation only, as `JobEvent`
pub enum JobEventKind {
    Progress,
    Done,
}

/// Follow a job: `event: progress` (data: the job) whenever its counters change, at most
/// a few times a second; then one `event: done` with the job in its terminal state, and
/// the stream ends. Each event's `id` grows; send it back as `Last-Event-ID` to resume
/// without seeing an event twice. A stream also ends after `STREAM_MAX_LIFETIME` (resume
/// it), and when its key is revoked or its tenant suspended; a tenant holds at most
/// `TENANT_MAX_EVENT_STREAMS` streams and downloads at once per server (429 beyond).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", security(("api_key" = [])),
    params(("id" = Uuid, Path), ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", body = JobEvent,
        description = "a stream of events, each `event: progress` or `event: done`, with an `id:` and `data:` the job object as JSON"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 429, body = Problem, description = "the tenant holds `TENANT_MAX_EVENT_STREAMS` streams and downloads already")))]
async fn job_events(
    State(state): State<AppState>,
    auth: AuthTenant,
    ApiPath(id): ApiPath<JobId>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let last_seen: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // Subscribe before reading the current state, so no change falls between the two.
    let rx = state.job_watch.subscribe(id);
    let job = jobs::get(&state.db, auth.tenant_id, id).await?;
    let counts = batches::counts(&state.db, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    let first = Arc::new(Snapshot::of(job, counts));
    let stream = stream::unfold(
        Follow {
            rx,
            last_sent: last_seen,
            first: Some(first),
            done: false,
        },
        next_event,
    );
    let stream = auth.open_stream(&state.auth, stream)?;
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Follow {
    rx: watch::Receiver<Option<Arc<Snapshot>>>,
    last_sent: i64,
    first: Option<Arc<Snapshot>>,
    done: bool,
}

async fn next_event(mut f: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    if f.done {
        return None;
    }
    loop {
        let snapshot = match f.first.take() {
            Some(s) => s,
            None => {
                f.rx.changed().await.ok()?;
                f.rx.borrow_and_update().clone()?
            }
        };
        if snapshot.version <= f.last_sent {
            // Already seen (a resumed client). A finished job has nothing more to say.
            if snapshot.is_terminal() {
                return None;
            }
            continue;
        }
        f.last_sent = snapshot.version;
        f.done = snapshot.is_terminal();
        let event = Event::default()
            .event(if f.done { "done" } else { "progress" })
            .id(snapshot.version.to_string())
            .json_data(&snapshot.view)
            .expect("a job view serialises");
        return Some((Ok(event), f));
    }
}
