//! The HTTP/1.1 server loop: axum's `serve` with the limits it lacks.
//!
//! - **A header-read timeout** (`HTTP_HEADER_READ_TIMEOUT`): a client that opens a
//!   connection and sends its request head a byte at a time (slowloris), or leaves a
//!   keep-alive connection idle, is disconnected after it instead of holding a task and a
//!   socket for ever.
//! - **A connection limit** (`HTTP_MAX_CONNECTIONS`): past it the server stops accepting
//!   (new connections wait in the kernel's backlog) until one closes.
//! - `TCP_NODELAY` on every connection, and the peer's address as axum's `ConnectInfo`
//!   (the auth layer limits failed logins per client address).
//!
//! On shutdown it stops accepting, asks every connection to finish its request in flight
//! and close, and waits for them up to `drain` (a stream a client keeps reading would
//! otherwise hold the process).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish.
    pub drain: Duration,
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stopping = CancellationToken::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A free slot first: at the limit, nothing more is accepted until one closes.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Responses are small and streamed ones end with a short chunk: Nagle's algorithm
        // would hold that back until the client's delayed ACK (40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        connections.spawn(serve_connection(
            tcp,
            peer,
            router.clone(),
            limits.header_read_timeout,
            stopping.clone(),
            slot,
        ));
        // Reap finished connections as we go, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    stopping.cancel();
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection until it closes, or until `stopping` fires (then it finishes the
/// request in flight and closes). Holds its connection slot until then.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    header_read_timeout: Duration,
    stopping: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let service = router.map_request(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.map(Body::new)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => log_end(peer, result),
        _ = stopping.cancelled() => {
            conn.as_mut().graceful_shutdown();
            log_end(peer, conn.await);
        }
    }
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
