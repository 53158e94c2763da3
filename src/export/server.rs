//! The HTTP server's connections, held under abuse: a request's head must arrive within `header_timeout` (which
//! also closes a keep-alive connection left idle that long), TLS handshakes are bounded, and at most
//! `max_connections` are open at once. When the cap is reached, the oldest connection that is not in the middle
//! of a request (idle, half-open, or still handshaking) is closed to make room, so a scraper that connects and
//! asks at once always gets through, however many connections a careless or hostile client leaves open. The same
//! happens when the process runs out of file descriptors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use crate::config::ServerLimits;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection closed to make room (or at shutdown) may take to finish the response it is writing.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// The most a request's head may take in the connection's buffer. Larger than the API's own limits on the URL
/// and the headers (`http::MAX_URI_BYTES`, `http::MAX_HEADER_BYTES`), so that those are answered as JSON by the
/// API; only a head larger than this gets hyper's bare 431.
const MAX_HEAD_BUFFER: usize = 128 * 1024;

struct Open {
    /// True while the connection is in a request (from its head being read to its response being handed over).
    busy: Arc<AtomicBool>,
    /// True once it was served a request: a scraper keeping its connection alive, the last to be closed.
    served: Arc<AtomicBool>,
    accepted: tokio::time::Instant,
    close: CancellationToken,
}

/// A connection younger than this is not closed to make room: a client on a real network (or doing a TLS
/// handshake) needs a few round trips before its request arrives, and under a flood of new connections the
/// youngest would otherwise be the next one closed, whoever it is.
const MIN_AGE: Duration = Duration::from_secs(1);

/// The open connections, in the order they were accepted.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Open>,
}

type Shared = Arc<Mutex<Connections>>;

/// A connection's place in the registry, given up when its task ends.
struct Registered {
    connections: Shared,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.connections).open.remove(&self.id);
    }
}

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Connections> {
    // A poisoned lock means a connection task panicked while registering; the map is still consistent.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes one connection to make room, and stops counting it, never one in a request: the oldest that never had
/// a request and is at least `min_age` old; else the oldest idle one that was served and is that old; else the
/// oldest that never had a request, however young (a flood faster than the cap a second still rotates through
/// the slots, but never refuses while one is held by a client that has not asked anything). False when every
/// connection is in a request, or served and young.
fn close_oldest_idle(connections: &Shared, min_age: Duration) -> bool {
    let mut guard = lock(connections);
    let idle = |c: &Open| !c.busy.load(Ordering::Acquire);
    let old = |c: &Open| c.accepted.elapsed() >= min_age;
    let served = |c: &Open| c.served.load(Ordering::Acquire);
    let pick = |f: &dyn Fn(&Open) -> bool| guard.open.iter().find(|(_, c)| f(c)).map(|(id, _)| *id);
    let oldest = pick(&|c| idle(c) && !served(c) && old(c))
        .or_else(|| pick(&|c| idle(c) && served(c) && old(c)))
        .or_else(|| pick(&|c| idle(c) && !served(c)));
    match oldest.and_then(|id| guard.open.remove(&id)) {
        Some(c) => {
            c.close.cancel();
            true
        }
        None => false,
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` is cancelled, then lets the requests in
/// flight finish for a moment and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let connections: Shared = Arc::default();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors (EMFILE) or a connection reset before it was accepted: make room,
                // and do not spin.
                tracing::debug!("accept failed: {e}");
                // Out of descriptors: any idle connection may go, however young.
                close_oldest_idle(&connections, Duration::ZERO);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let open_now = lock(&connections).open.len();
        if open_now >= limits.max_connections && !close_oldest_idle(&connections, MIN_AGE) {
            tracing::debug!(%peer, "every connection is busy or new: refusing one more");
            continue;
        }
        let (id, busy, close, served) = {
            let mut guard = lock(&connections);
            let id = guard.next_id;
            guard.next_id += 1;
            let busy = Arc::new(AtomicBool::new(false));
            let served = Arc::new(AtomicBool::new(false));
            let close = stop.child_token();
            guard.open.insert(
                id,
                Open {
                    busy: busy.clone(),
                    served: served.clone(),
                    accepted: tokio::time::Instant::now(),
                    close: close.clone(),
                },
            );
            (id, busy, close, served)
        };
        let (app, tls, connections) = (app.clone(), tls.clone(), connections.clone());
        tokio::spawn(async move {
            // Removed from the registry however the task ends, a panic included.
            let _registered = Registered {
                connections: connections.clone(),
                id,
            };
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, app, limits, busy, served, close).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let tls_stream = tokio::select! {
                        () = close.cancelled() => None,
                        done = handshake => match done {
                            Ok(Ok(s)) => Some(s),
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                None
                            }
                        },
                    };
                    if let Some(s) = tls_stream {
                        serve_connection(s, app, limits, busy, served, close).await;
                    }
                }
            }
        });
    }
    // Shutting down: every connection was told to close (their tokens are children of `stop`); give the
    // responses being written a moment.
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    while !lock(&connections).open.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One connection: HTTP/1.1 with keep-alive, until the client goes, a head times out, or it is told to close.
async fn serve_connection<I>(
    io: I,
    app: Router,
    limits: ServerLimits,
    busy: Arc<AtomicBool>,
    served: Arc<AtomicBool>,
    close: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            busy.store(true, Ordering::Release);
            let (app, busy, served) = (app.clone(), busy.clone(), served.clone());
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                busy.store(false, Ordering::Release);
                served.store(true, Ordering::Release);
                response
            }
        });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        // Above the API's own limit (`http::MAX_HEADERS`), which answers in JSON.
        .max_headers(4 * crate::export::http::MAX_HEADERS)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = close.cancelled() => {
            // Closes an idle connection at once; one writing a response finishes it first.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        }
    }
}
