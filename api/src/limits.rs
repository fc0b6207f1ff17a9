//! Limits on what one request, or one tenant's requests, may hold on a replica.
//!
//! - [`MinRateBody`]: a request body that arrives slower than `UPLOAD_MIN_RATE` over a
//!   window (`UPLOAD_MIN_RATE_WINDOW`) is cut off, so a sender trickling a byte a second
//!   cannot hold an upload slot and a database transaction until the request timeout.
//! - [`TenantSlots`]: how many uploads one tenant runs at once
//!   (`TENANT_MAX_CONCURRENT_UPLOADS`), so one tenant cannot take every upload slot;
//!   more wait their turn for a few seconds, then get a 429.
//!
//! Long responses (event streams, downloads) are counted per tenant by
//! [`crate::auth::sessions`], which also ends them when their key stops working.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    middleware::Next,
    response::Response,
};
use entity::TenantId;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// The error a body cut off for slowness ends with; handlers map it to a 408
/// ([`is_slow_body`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived slower than {min_rate} bytes per second (UPLOAD_MIN_RATE) over {window:?}"
)]
pub struct SlowBody {
    pub min_rate: usize,
    pub window: Duration,
}

/// Whether `err` (or what caused it) is a [`SlowBody`].
pub fn is_slow_body(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<SlowBody>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A body that must deliver at least `min_rate` bytes per second over every `window`
/// after the first (which is grace: connection set-up, a slow start).
pub struct MinRateBody {
    inner: Body,
    min_rate: usize,
    window: Duration,
    /// Bytes received in the current window.
    received: usize,
    /// The current window's end; the first window has no requirement.
    deadline: Pin<Box<Sleep>>,
    graced: bool,
}

impl MinRateBody {
    pub fn new(inner: Body, min_rate: usize, window: Duration) -> Self {
        Self {
            inner,
            min_rate,
            window,
            received: 0,
            deadline: Box::pin(tokio::time::sleep(window)),
            graced: false,
        }
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.received += data.len();
        }
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            return polled;
        }
        // At each window's end: enough bytes, or the body is cut off.
        while this.deadline.as_mut().poll(cx).is_ready() {
            let needed = (this.min_rate as f64 * this.window.as_secs_f64()) as usize;
            if this.graced && this.received < needed {
                metrics::counter!(freight_core::metrics::SLOW_BODIES).increment(1);
                return Poll::Ready(Some(Err(axum::Error::new(SlowBody {
                    min_rate: this.min_rate,
                    window: this.window,
                }))));
            }
            this.graced = true;
            this.received = 0;
            let next = Instant::now() + this.window;
            this.deadline.as_mut().reset(next);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: every request body becomes a [`MinRateBody`].
pub async fn min_body_rate(
    axum::extract::State((min_rate, window)): axum::extract::State<(usize, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    let req = req.map(|body| Body::new(MinRateBody::new(body, min_rate, window)));
    next.run(req).await
}

/// Slots per tenant for one kind of work on this replica. A request without a free
/// slot waits for one, briefly, in turn; it holds nothing else meanwhile (its body is
/// not read, no transaction is open).
#[derive(Clone, Default)]
pub struct TenantSlots {
    tenants: Arc<Mutex<HashMap<TenantId, Arc<Semaphore>>>>,
}

impl TenantSlots {
    /// A slot for `tenant`, which holds at most `max`; `None` when none frees up within
    /// `wait`.
    pub async fn take(
        &self,
        tenant: TenantId,
        max: usize,
        wait: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let slots = self
            .tenants
            .lock()
            .expect("not poisoned")
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone();
        tokio::time::timeout(wait, slots.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_trickling_body_is_cut_off_after_the_grace_window() {
        use futures::SinkExt;
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        // 100 bytes a second are needed; a byte every 30 ms is about 33.
        let mut slow = MinRateBody::new(Body::from_stream(rx), 100, Duration::from_millis(200));
        tokio::spawn(async move {
            for _ in 0..100 {
                if tx.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let mut got = 0;
        let err = loop {
            match slow.frame().await {
                Some(Ok(f)) => got += f.into_data().map(|d| d.len()).unwrap_or(0),
                Some(Err(e)) => break e,
                None => panic!("the body ended instead of being cut off"),
            }
        };
        assert!(is_slow_body(&err), "{err}");
        // Cut at the end of the second window (the first is grace): some 13 bytes in.
        assert!((8..=20).contains(&got), "{got} bytes before the cut");
    }

    #[tokio::test]
    async fn slots_are_per_tenant_waited_for_and_freed_on_drop() {
        let slots = TenantSlots::default();
        let (a, b) = (TenantId::new(), TenantId::new());
        let wait = Duration::from_millis(50);
        let first = slots.take(a, 2, wait).await.unwrap();
        let _second = slots.take(a, 2, wait).await.unwrap();
        assert!(
            slots.take(a, 2, wait).await.is_none(),
            "a third waits, then gives up"
        );
        assert!(
            slots.take(b, 2, wait).await.is_some(),
            "another tenant has its own"
        );
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take(a, 2, Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert!(
            waiting.await.unwrap(),
            "a waiting request gets the freed slot"
        );
    }
}
