//! Webhook ingest throughput: signed Shopify orders of about 5 KB into
//! waybill on the embedded bus (and, given `--kafka HOST:PORT`, on Kafka +
//! PostgreSQL), against a bare axum handler that only reads the body, in the
//! same run and with the same load generator. A third handler does waybill's
//! checks (signature, order id, JSON) and answers without the bus, to show
//! what storing costs apart from checking.
//!
//! With `--callbacks`, courier status callbacks too: PostEx-shaped events
//! (a path secret, one event per body) into waybill, against the bare
//! handler taking the same bodies.
//!
//! ```sh
//! cargo bench --bench ingest -- --seconds 10 --connections 64 [--kafka HOST:PORT] [--sample order-cod.json] [--callbacks]
//! ```

mod support;

use axum::http::{HeaderMap, StatusCode};
use std::time::Duration;
use support::*;

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 10);
    let connections = arg("--connections", 64) as usize;
    // The one-item sample is about 5 KB once varied; `order-cod.json`, with
    // two items, about 7 KB.
    let sample = text_arg("--sample", "order-prepaid.json");
    let duration = Duration::from_secs(seconds);
    // Bodies are signed up front: the load generator should not spend the
    // CPU the servers are measured on.
    let bodies: std::sync::Arc<Vec<(Vec<u8>, String)>> = std::sync::Arc::new(
        (0..1024)
            .map(|i| order_from(&sample, i))
            .map(|body| {
                let signature = sign(&body);
                (body, signature)
            })
            .collect(),
    );
    let size = bodies.iter().map(|(body, _)| body.len()).sum::<usize>() / bodies.len();

    let path = "/webhooks/shopify/{account}";
    let bare = axum::Router::new().route(
        path,
        axum::routing::post(|body: axum::body::Bytes| async move {
            if body.is_empty() { "empty" } else { "ok" }
        }),
    );
    let checks = axum::Router::new().route(path, axum::routing::post(check_only));
    let bare_url = serve(bare).await;
    let checks_url = serve(checks).await;

    let run = |url: String, seconds: Duration| {
        let bodies = bodies.clone();
        async move {
            load(&url, connections, seconds, 10_000_000, move |i| {
                let (body, signature) = &bodies[(i % 1024) as usize];
                let headers = shopify_headers(signature, "orders/create", i);
                (body.clone(), headers)
            })
            .await
        }
    };
    // The first seconds of a process run slower (allocator, page faults,
    // connection set-up): a bare warm-up that is not counted.
    println!("warm-up:");
    run(bare_url.clone(), Duration::from_secs(3)).await;
    // Each subject runs between two bare runs and is compared with their
    // mean: the broker of a Kafka run keeps some CPU busy after it.
    println!("bare, then each subject followed by bare:");
    let mut bare_runs = vec![run(bare_url.clone(), duration).await];
    let mut subjects = Vec::new();
    let rps = run(checks_url, duration).await;
    bare_runs.push(run(bare_url.clone(), duration).await);
    subjects.push(("checks only, no bus", rps, around(&bare_runs)));
    for backend in std::iter::once(Backend::Embedded).chain(kafka_backend()) {
        // Subject: waybill with its pipelines left out, so only ingest runs.
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        write_config(dir.path(), &backend, port, "{ connector: sandbox }", 256);
        let (stop, task) = start_waybill(&dir.path().join("waybill.yaml"), Run::IngestOnly).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rps = run(
            format!("http://127.0.0.1:{port}/webhooks/shopify/shopify-main"),
            duration,
        )
        .await;
        let _ = stop.send(());
        let _ = task.await;
        drop_backend(&backend);
        bare_runs.push(run(bare_url.clone(), duration).await);
        subjects.push((backend.label(), rps, around(&bare_runs)));
    }
    if std::env::args().any(|a| a == "--callbacks") {
        let (rps, bare) = callbacks(&bare_url, connections, duration).await;
        bare_runs.push(bare);
        subjects.push((
            "courier callbacks, embedded (against bare on the same bodies)",
            rps,
            bare,
        ));
    }
    println!(
        "ingest: {sample}, bodies of {size} bytes on average, {connections} connections, {seconds} s per run"
    );
    let runs: Vec<String> = bare_runs.iter().map(|r| format!("{r:.0}")).collect();
    println!("bare axum handler runs: {} req/s", runs.join(", "));
    for (label, rps, bare) in subjects {
        println!(
            "waybill ingest ({label}): {rps:.0} req/s against {bare:.0} bare: ratio {:.2}",
            rps / bare
        );
    }
}

/// The mean of the last two bare runs, the ones around the latest subject.
fn around(bare_runs: &[f64]) -> f64 {
    let last = &bare_runs[bare_runs.len().saturating_sub(2)..];
    last.iter().sum::<f64>() / last.len() as f64
}

/// Serves `app` on a loopback port; returns the webhook URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/webhooks/shopify/shopify-main")
}

/// What waybill checks before a webhook goes to the bus: the signature, and
/// that the body is JSON with an order id. Answers without storing anything.
async fn check_only(headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let Some(spec) = support::shopify_webhook().signature.as_ref() else {
        return StatusCode::BAD_REQUEST;
    };
    let signed = headers
        .get(spec.header.as_str())
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| waybill::sources::webhook::verify(spec, SECRET.as_bytes(), &body, sig));
    match (
        signed,
        waybill::sources::webhook::order_id(&body, &Default::default()),
    ) {
        (true, Ok(_)) => StatusCode::OK,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// PostEx callbacks into waybill on the embedded default, with its
/// pipelines left out (so nothing consumes them), then the bare handler on
/// the same bodies: (waybill req/s, bare req/s).
async fn callbacks(bare_url: &str, connections: usize, duration: Duration) -> (f64, f64) {
    const SECRET: &str = "bench-callback-secret";
    let body = |i: u64| {
        serde_json::to_vec(&serde_json::json!({
            "trackingNumber": format!("CX-{i}"),
            "orderReferenceNumber": format!("#{i}"),
            "statusUpdateDatetime": "2026-12-01 10:00:00",
            "orderStatus": "Picked By PostEx",
        }))
        .unwrap_or_default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    write_config(
        dir.path(),
        &Backend::Embedded,
        port,
        &format!(
            "{{ connector: postex, credentials: {{ token: \"t\", callback_secret: \"{SECRET}\" }} }}"
        ),
        256,
    );
    let (stop, task) = start_waybill(&dir.path().join("waybill.yaml"), Run::IngestOnly).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("http://127.0.0.1:{port}/callbacks/postex/courier-main/{SECRET}");
    let rps = load(&url, connections, duration, 10_000_000, move |i| {
        (body(i), Vec::new())
    })
    .await;
    let _ = stop.send(());
    let _ = task.await;
    let bare = load(bare_url, connections, duration, 10_000_000, move |i| {
        (body(i), Vec::new())
    })
    .await;
    (rps, bare)
}
