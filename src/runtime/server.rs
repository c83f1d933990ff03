//! The HTTP server's routes: webhook and courier callback endpoints, `/healthz`, `/readyz`,
//! `/metrics` and the sandbox courier. Its connections and their limits are
//! in [`super::http`].
//!
//! ```yaml
//! http: { listen: "127.0.0.1:8080", max_body_bytes: 1048576 }
//! ```

use crate::bus::Bus;
use crate::config::Config;
use crate::sources::{Ingest, callback, webhook};
use crate::store::Store;
use crate::telemetry::events::ConnectionRefused;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// What request handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub ingest: Ingest,
    /// Checked by `/readyz`.
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    /// Reported in `/readyz`'s body; its status code stays the bus's and store's.
    pub scheduler: Arc<std::sync::Mutex<super::scheduler::SchedulerState>>,
}

/// Builds the router; `sandbox` is the sandbox courier's router.
pub fn router(state: AppState, sandbox: Router) -> Router {
    Router::new()
        .route("/webhooks/{source}/{account}", post(store_webhook))
        .route("/callbacks/{connector}/{account}", post(courier_callback))
        .route(
            "/callbacks/{connector}/{account}/{secret}",
            post(courier_callback_with_secret),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .nest("/sandbox", sandbox)
}

async fn store_webhook(
    State(state): State<AppState>,
    Path((source, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let account = state.config.accounts.get(&account).map(|a| a.as_ref());
    let target = webhook::resolve(&source, account, &state.config.connectors);
    webhook::receive(
        &state.ingest,
        target,
        &headers,
        body,
        state.config.http.max_body_bytes,
    )
    .await
}

async fn courier_callback(
    State(state): State<AppState>,
    Path((connector, account)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = CallbackPath {
        connector,
        account,
        secret: None,
    };
    callback_to(&state, path, query, &headers, body).await
}

async fn courier_callback_with_secret(
    State(state): State<AppState>,
    Path((connector, account, secret)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = CallbackPath {
        connector,
        account,
        secret: Some(secret),
    };
    callback_to(&state, path, query, &headers, body).await
}

/// The values of a callback URL's path.
struct CallbackPath {
    connector: String,
    account: String,
    secret: Option<String>,
}

async fn callback_to(
    state: &AppState,
    path: CallbackPath,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let account = state.config.accounts.get(&path.account).map(|a| a.as_ref());
    let target = callback::resolve(&path.connector, account, &state.config.connectors);
    let request = callback::Request {
        path_secret: path.secret.as_deref(),
        query: query.as_deref(),
        headers,
    };
    callback::receive(
        &state.ingest,
        target,
        request,
        body,
        state.config.http.max_body_bytes,
    )
    .await
}

/// What a connection kept for probes is served by (see
/// [`super::http::PROBE_CONNECTIONS`]): the probes and metrics, and 503 for
/// anything else, counted.
pub fn probe_router(state: AppState) -> Router {
    let metrics = state.ingest.metrics.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .fallback(move || {
            let metrics = metrics.clone();
            async move {
                ConnectionRefused {
                    reason: "probes_only",
                }
                .emit(&metrics);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server at its connection limit: only /healthz, /readyz and /metrics are served\n",
                )
            }
        })
}

/// The server only listens once the bus and store are open.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(2);
    let mut problems = Vec::new();
    match tokio::time::timeout(limit, state.bus.check()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("bus: {e}")),
        Err(_) => problems.push("bus: no answer within 2s".to_string()),
    }
    match tokio::time::timeout(limit, state.store.check()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("store: {e}")),
        Err(_) => problems.push("store: no answer within 2s".to_string()),
    }
    let scheduler = scheduler_line(&state);
    if problems.is_empty() {
        (StatusCode::OK, format!("ready\n{scheduler}")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n{scheduler}", problems.join("; ")),
        )
            .into_response()
    }
}

/// `scheduler: …`, one line: when the tracking scheduler last ran, how many
/// polls it has out, and what went wrong last, if anything.
fn scheduler_line(state: &AppState) -> String {
    let Ok(scheduler) = state.scheduler.lock() else {
        return "scheduler: unknown\n".to_string();
    };
    match (&scheduler.last_run, &scheduler.last_error) {
        (None, _) => "scheduler: not run yet\n".to_string(),
        (Some(at), None) => format!(
            "scheduler: last ran {at}, {} polls in flight\n",
            scheduler.in_flight
        ),
        (Some(at), Some(error)) => format!("scheduler: last ran {at}, failing: {error}\n"),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.ingest.metrics.render(),
    )
        .into_response()
}
