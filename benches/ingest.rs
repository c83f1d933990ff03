//! Webhook ingest throughput: signed ~5 KB Shopify orders into waybill on the
//! embedded bus (and, given `--kafka HOST:PORT`, on Kafka + PostgreSQL),
//! against a bare axum handler that only reads the body, in the same run and
//! with the same load generator.
//!
//! ```sh
//! cargo bench --bench ingest -- --seconds 10 --connections 64 [--kafka HOST:PORT]
//! ```

mod support;

use std::time::Duration;
use support::*;

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 10);
    let connections = arg("--connections", 64) as usize;
    let duration = Duration::from_secs(seconds);
    // Bodies are signed up front: the load generator should not spend the
    // CPU the servers are measured on.
    let bodies: std::sync::Arc<Vec<(Vec<u8>, String)>> = std::sync::Arc::new(
        (0..1024)
            .map(order)
            .map(|body| {
                let signature = sign(&body);
                (body, signature)
            })
            .collect(),
    );
    let size = bodies[0].0.len();

    // Baseline: a bare axum handler on loopback.
    let bare = axum::Router::new().route(
        "/webhooks/shopify/{account}",
        axum::routing::post(|body: axum::body::Bytes| async move {
            if body.is_empty() { "empty" } else { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bare_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, bare).await });

    let run = |url: String| {
        let bodies = bodies.clone();
        async move {
            load(&url, connections, duration, 10_000_000, move |i| {
                let (body, signature) = &bodies[(i % 1024) as usize];
                let headers = shopify_headers(signature, "orders/create", i);
                (body.clone(), headers)
            })
            .await
        }
    };
    let bare_url = format!("http://{bare_addr}/webhooks/shopify/shopify-main");
    // Each subject runs between two bare runs and is compared with their
    // mean: the broker of a Kafka run keeps some CPU busy after it.
    let mut bare_runs = vec![run(bare_url.clone()).await];
    let mut subjects = Vec::new();
    for backend in std::iter::once(Backend::Embedded).chain(kafka_backend()) {
        // Subject: waybill with no pipelines, so only ingest runs.
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        write_config(
            dir.path(),
            &backend,
            port,
            "{ connector: sandbox }",
            "[]",
            256,
        );
        let (stop, task) = start_waybill(&dir.path().join("waybill.yaml")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rps = run(format!(
            "http://127.0.0.1:{port}/webhooks/shopify/shopify-main"
        ))
        .await;
        let _ = stop.send(());
        let _ = task.await;
        drop_backend(&backend);
        bare_runs.push(run(bare_url.clone()).await);
        let around = &bare_runs[bare_runs.len() - 2..];
        subjects.push((backend.label(), rps, (around[0] + around[1]) / 2.0));
    }
    println!("ingest: body {size} bytes, {connections} connections, {seconds} s per run");
    let runs: Vec<String> = bare_runs.iter().map(|r| format!("{r:.0}")).collect();
    println!("bare axum handler runs: {} req/s", runs.join(", "));
    for (label, rps, bare) in subjects {
        println!(
            "waybill ingest ({label}): {rps:.0} req/s against {bare:.0} bare: ratio {:.2}",
            rps / bare
        );
    }
}
