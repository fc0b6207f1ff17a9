//! A destination for tests: an axum server on 127.0.0.1 that records every request it
//! gets (idempotency key, body, time) and answers as the test's `respond` function says.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::any,
};
use serde_json::Value;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: String,
    pub body: Value,
    pub headers: HeaderMap,
    pub at: Instant,
    /// How many requests with this idempotency key came before this one (0 = first).
    pub nth: usize,
}

/// What the sink answers: a status and how long to wait before answering.
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
        }
    }
}

type Respond = dyn Fn(&Received) -> Reply + Send + Sync;

struct Inner {
    received: Mutex<Vec<Received>>,
    counts: Mutex<HashMap<String, usize>>,
    respond: Box<Respond>,
}

#[derive(Clone)]
pub struct Sink {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl Sink {
    pub async fn start(respond: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        let inner = Arc::new(Inner {
            received: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
            respond: Box::new(respond),
        });
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { inner, addr }
    }

    /// A sink that accepts everything.
    pub async fn accepting() -> Self {
        Self::start(|_| Reply::ok()).await
    }

    pub fn url(&self) -> String {
        format!("http://{}/import", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let nth = {
        let mut counts = inner.counts.lock().unwrap();
        let n = counts.entry(key.clone()).or_default();
        *n += 1;
        *n - 1
    };
    let received = Received {
        idempotency_key: key,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
        at: Instant::now(),
        nth,
    };
    let reply = (inner.respond)(&received);
    inner.received.lock().unwrap().push(received);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    StatusCode::from_u16(reply.status).unwrap()
}
