//! The HTTP server's connections: accepting them within a cap, timing out
//! those that send nothing, and closing them gracefully at shutdown.
//!
//! ```yaml
//! http: { max_connections: 1024, header_read_timeout: 10s, max_header_bytes: 16384 }
//! ```
//!
//! `axum::serve` has no header timeout and no connection cap, so a client
//! could hold a connection, and its buffers, for as long as it liked. Here:
//!
//! - at most `max_connections` connections are served; past it,
//!   [`PROBE_CONNECTIONS`] more are kept for `/healthz`, `/readyz` and
//!   `/metrics` (one request each; anything else gets 503), so an operator
//!   and an orchestrator can still see the server under a flood; past those
//!   a connection is answered 503 and closed at once, never queued;
//! - a connection gets no HTTP buffers until its first byte arrives, so an
//!   idle one costs little more than its socket, and one that sends nothing
//!   within `header_read_timeout` is closed; after that byte, and after each
//!   answer on a kept-alive connection, the next request head must be
//!   complete within `header_read_timeout` too (hyper's own timer);
//! - when the connections are all taken, the one that has waited longest
//!   without sending a byte is closed to make room for a new one. A client
//!   sends its request as soon as it has connected, so idle connections
//!   held open to fill the server give way first, and never keep a probe
//!   or a store out;
//! - request heads are capped at `max_header_bytes` (431 past it);
//! - every request body is read within the body budget and deadline of
//!   [`BodyBudget`].
//!
//! HTTP/1.1 only: stores and couriers send webhooks over HTTP/1.1, and TLS
//! (with any HTTP/2) ends at the load balancer in front.

use crate::sources::body::BodyBudget;
use crate::telemetry::Metrics;
use crate::telemetry::events::{ConnectionOpen, ConnectionRefused};
use axum::Router;
use axum::http::{Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Connections kept, beyond `http.max_connections`, for probes: enough for
/// an orchestrator's liveness and readiness checks and a metrics scraper
/// or two at once, too few to matter for memory.
pub const PROBE_CONNECTIONS: usize = 16;

/// What the server's connections are bounded by.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// The two routers a connection may be served by.
pub struct Routers {
    /// Everything: webhooks, probes, metrics, the sandbox courier.
    pub app: Router,
    /// What the probes' reserve answers: probes and metrics, 503 otherwise.
    pub probes: Router,
}

/// Shared by every connection task.
struct Shared {
    routers: Routers,
    limits: ConnectionLimits,
    bodies: BodyBudget,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

/// Slots for connections, and the connections in them that have sent
/// nothing yet, oldest first: those give up their slot to a newcomer when
/// none is free.
struct Pool {
    slots: Arc<Semaphore>,
    size: usize,
    idle: Mutex<BTreeMap<u64, Idle>>,
}

/// A connection waiting for its first byte, holding its slot here so that
/// a newcomer can take it.
struct Idle {
    slot: OwnedSemaphorePermit,
    evicted: Arc<Notify>,
}

impl Pool {
    fn new(size: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(size)),
            size,
            idle: Mutex::new(BTreeMap::new()),
        }
    }

    /// A free slot, or the slot of the connection idle the longest, which
    /// is told to close.
    fn admit(&self, metrics: &Metrics) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        let (_, oldest) = self.lock().pop_first()?;
        oldest.evicted.notify_one();
        ConnectionRefused {
            reason: "evicted_idle",
        }
        .emit(metrics);
        Some(oldest.slot)
    }

    /// Keeps connection `id`'s slot while it waits for its first byte.
    fn wait(&self, id: u64, slot: OwnedSemaphorePermit, evicted: Arc<Notify>) {
        self.lock().insert(id, Idle { slot, evicted });
    }

    /// Connection `id`'s slot back, unless a newcomer took it.
    fn resume(&self, id: u64) -> Option<OwnedSemaphorePermit> {
        self.lock().remove(&id).map(|idle| idle.slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once every slot is free again.
    async fn closed(&self) {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }
}

/// Serves `listener` until `stop` turns true, then stops accepting, lets
/// each connection finish the request it is in, and returns once all have
/// closed or `grace` has passed.
pub async fn serve(
    listener: TcpListener,
    routers: Routers,
    limits: ConnectionLimits,
    bodies: BodyBudget,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let regular = Arc::new(Pool::new(limits.max_connections));
    let reserve = Arc::new(Pool::new(PROBE_CONNECTIONS));
    let shared = Arc::new(Shared {
        routers,
        limits,
        bodies,
        metrics,
        stop: stop.clone(),
    });
    let mut stop = stop;
    for id in 0u64.. {
        let stopping = async {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(error).await;
                continue;
            }
        };
        let (pool, slot, probes_only) = if let Some(slot) = regular.admit(&shared.metrics) {
            (regular.clone(), slot, false)
        } else if let Some(slot) = reserve.admit(&shared.metrics) {
            (reserve.clone(), slot, true)
        } else {
            refuse(&stream);
            ConnectionRefused {
                reason: "connection_limit",
            }
            .emit(&shared.metrics);
            continue;
        };
        let admitted = Admitted {
            id,
            pool,
            slot,
            probes_only,
        };
        tokio::spawn(connection(stream, admitted, shared.clone()));
    }
    // New connections now wait in the kernel's backlog, then are refused.
    drop(listener);
    let closed = async {
        regular.closed().await;
        reserve.closed().await;
    };
    if tokio::time::timeout(grace, closed).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "HTTP connections still open after the shutdown grace; leaving them"
        );
    }
}

/// A connection let in, with its slot in `pool`.
struct Admitted {
    id: u64,
    pool: Arc<Pool>,
    slot: OwnedSemaphorePermit,
    probes_only: bool,
}

/// Waits briefly after a failed accept: out of file descriptors, the
/// pending connection stays queued and accepting again at once would spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept an HTTP connection");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Tells a connection over every cap so, if its socket takes the bytes now,
/// and closes it: it never waits.
fn refuse(stream: &TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
        content-type: text/plain\r\ncontent-length: 31\r\n\r\nserver at its connection limit\n";
    let _ = stream.try_write(BUSY);
}

/// Serves one connection, holding its slot until it closes.
async fn connection(stream: TcpStream, admitted: Admitted, shared: Arc<Shared>) {
    let _open = ConnectionOpen::begin(&shared.metrics);
    let Admitted {
        id,
        pool,
        slot,
        probes_only,
    } = admitted;
    let Some(_slot) = first_byte(&stream, id, &pool, slot, &shared).await else {
        return;
    };
    let mut stop = shared.stop.clone();
    let timeout = shared.limits.header_read_timeout;
    let router = if probes_only {
        shared.routers.probes.clone()
    } else {
        shared.routers.app.clone()
    };
    let service = Served {
        router,
        bodies: shared.bodies.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_header_size(shared.limits.max_header_bytes)
        .keep_alive(!probes_only);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = async {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let served = tokio::select! {
        served = conn.as_mut() => Some(served),
        () = stopping => None,
    };
    // Told to stop: the request in progress is answered, then it closes.
    let served = match served {
        Some(served) => served,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = served {
        if error.is_timeout() {
            ConnectionRefused {
                reason: "header_timeout",
            }
            .emit(&shared.metrics);
        } else {
            tracing::trace!(%error, "HTTP connection ended with an error");
        }
    }
}

/// Waits, without HTTP buffers, for the connection's first byte, with its
/// slot in the pool's idle set meanwhile; the slot back, or `None` when the
/// connection is to close: nothing sent in time, evicted, or shutting down.
async fn first_byte(
    stream: &TcpStream,
    id: u64,
    pool: &Pool,
    slot: OwnedSemaphorePermit,
    shared: &Shared,
) -> Option<OwnedSemaphorePermit> {
    let evicted = Arc::new(Notify::new());
    pool.wait(id, slot, evicted.clone());
    let mut stop = shared.stop.clone();
    let timeout = shared.limits.header_read_timeout;
    // `readable()` may answer at once on a new socket; a peek waits for a
    // byte that is really there, into one on the stack.
    let first = async {
        let mut byte = [0u8; 1];
        stream.peek(&mut byte).await
    };
    let readable = tokio::select! {
        first = tokio::time::timeout(timeout, first) => first,
        () = evicted.notified() => return None,
        _ = stop.wait_for(|stop| *stop) => {
            pool.resume(id);
            return None;
        }
    };
    // Taken by a newcomer at the last moment: closed all the same.
    let slot = pool.resume(id)?;
    match readable {
        Ok(Ok(n)) if n > 0 => Some(slot),
        Ok(_) => None,
        Err(_) => {
            ConnectionRefused {
                reason: "header_timeout",
            }
            .emit(&shared.metrics);
            None
        }
    }
}

/// A router whose requests' bodies are read within the body budget.
#[derive(Clone)]
struct Served {
    router: Router,
    bodies: BodyBudget,
}

impl hyper::service::Service<Request<Incoming>> for Served {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use tower_service::Service as _;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let request = request.map(|body| self.bodies.guard(body, declared));
        // A router is always ready, so it needs no `poll_ready` first.
        self.router.clone().call(request)
    }
}
