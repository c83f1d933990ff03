//! Bookings per second through the pipeline (trigger → map → validate →
//! route → book) against a local courier stub answering after 0 ms and after
//! 200 ms, with `max_in_flight: 256`. At 200 ms the ceiling is
//! 256 / 0.2 s = 1,280 bookings/s: the figure shows cross-key concurrency.
//!
//! Orders are enqueued first with no pipeline running, then waybill starts
//! with the pipeline and the clock runs until the stub has seen every booking.
//! On the embedded bus and store, and given `--kafka HOST:PORT`, also on
//! Kafka + PostgreSQL.
//!
//! ```sh
//! cargo bench --bench booking -- --orders 5000 [--kafka HOST:PORT]
//! ```

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

async fn start_stub(latency: Duration) -> (String, Arc<AtomicU64>) {
    let booked = Arc::new(AtomicU64::new(0));
    let counter = booked.clone();
    let app = axum::Router::new().route(
        "/book",
        axum::routing::post(move |axum::Json(shipment): axum::Json<serde_json::Value>| {
            let counter = counter.clone();
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({ "tracking_number": format!("STUB-{n}"), "reference": shipment["reference"] }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), booked)
}

async fn run(backend: &Backend, latency: Duration, orders: u64) -> f64 {
    let (stub, booked) = start_stub(latency).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let courier = format!("{{ connector: sandbox, base_url: \"{stub}\" }}");
    let config = dir.path().join("waybill.yaml");

    // Enqueue every order with no pipeline running.
    write_config(dir.path(), backend, port, &courier, 256);
    let (stop, task) = start_waybill(&config, Run::IngestOnly).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("http://127.0.0.1:{port}/webhooks/shopify/shopify-main");
    load(&url, 32, Duration::from_secs(600), orders, |i| {
        let body = order(i);
        let headers = shopify_headers(&sign(&body), "orders/create", i);
        (body, headers)
    })
    .await;
    let _ = stop.send(());
    let _ = task.await;

    // Book them.
    let started = Instant::now();
    let (stop, task) = start_waybill(&config, Run::All).await;
    let limit = Duration::from_secs(600);
    let mut first = None;
    while booked.load(Ordering::Relaxed) < orders && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if first.is_none() && booked.load(Ordering::Relaxed) > 0 {
            first = Some(started.elapsed());
        }
    }
    let elapsed = started.elapsed();
    if let Some(first) = first {
        // Start-up (and, on Kafka, joining the consumer group) is inside the figure.
        println!(
            "  {}, {latency:?} stub: first booking after {:.2} s, all {orders} after {:.2} s",
            backend.label(),
            first.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    let done = booked.load(Ordering::Relaxed);
    let _ = stop.send(());
    let _ = task.await;
    assert_eq!(done, orders, "every order booked once within {limit:?}");
    done as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let orders = arg("--orders", 5000);
    let ceiling = 256.0 / 0.2;
    println!("booking: {orders} orders, max_in_flight 256");
    let embedded = Backend::Embedded;
    // Each Kafka run gets fresh topics and a fresh database: a second run on
    // the same ones would find every key booked already.
    let backends = std::iter::once((embedded.clone(), embedded))
        .chain(kafka_backend().and_then(|fast| Some((fast, kafka_backend()?))));
    for (fast_backend, slow_backend) in backends {
        let fast = run(&fast_backend, Duration::ZERO, orders).await;
        let slow = run(&slow_backend, Duration::from_millis(200), orders).await;
        drop_backend(&fast_backend);
        drop_backend(&slow_backend);
        let label = fast_backend.label();
        println!("{label}: courier stub at 0 ms: {fast:.0} bookings/s");
        println!(
            "{label}: courier stub at 200 ms: {slow:.0} bookings/s = {:.2} x the 1,280/s ceiling (256 / 0.2 s)",
            slow / ceiling
        );
    }
}
