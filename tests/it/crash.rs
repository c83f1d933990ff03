//! `kill -9` mid-stream: after a restart every acknowledged order is booked
//! exactly once; a request in flight at the kill goes to review, never to a
//! second booking.

use crate::common::*;
use axum::Json;
use axum::extract::State;
use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use waybill::store::BookingStatus;

/// `max_in_flight` of the shipped pipeline: at most this many requests are
/// in flight when the process is killed.
const MAX_IN_FLIGHT: usize = 64;

type Counts = Arc<Mutex<HashMap<String, u32>>>;

/// A courier that counts every booking request per reference.
async fn start_courier() -> (String, Counts) {
    async fn book(
        State(counts): State<Counts>,
        Json(shipment): Json<serde_json::Value>,
    ) -> Json<serde_json::Value> {
        let reference = shipment["reference"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *counts
            .lock()
            .expect("lock")
            .entry(reference.clone())
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Json(
            serde_json::json!({ "tracking_number": format!("STUB-{reference}"), "reference": reference }),
        )
    }
    let counts: Counts = Arc::default();
    let app = axum::Router::new()
        .route("/book", axum::routing::post(book))
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), counts)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A waybill process, killed when dropped so a failing test leaves none behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_waybill(config: &std::path::Path) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn waybill");
    Process(child)
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    eventually(Duration::from_secs(30), "waybill to listen", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

fn order(i: usize) -> (String, Vec<u8>) {
    let reference = format!("#K{i}");
    let body = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(7_000_000_000_000_000_000u64 + i as u64);
        o["name"] = serde_json::json!(reference);
    });
    (reference, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_books_nothing_twice() {
    let (courier, counts) = start_courier().await;
    let port = free_port();
    let dir = ConfigDir::new(&format!(
        "{{ connector: sandbox, base_url: \"{courier}\" }}"
    ));
    dir.edit("waybill.yaml", |t| {
        t.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut child = spawn_waybill(&dir.path());
    wait_healthy(&http, &base).await;

    let total = 400;
    let kill_after = 150;
    let mut acknowledged = BTreeSet::new();
    let mut sent = 0;
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        let (reference, body) = order(i);
        let sig = waybill::sources::shopify::sign(SECRET.as_bytes(), &body);
        let http = http.clone();
        let url = format!("{base}/webhooks/shopify/shopify-main");
        posts.spawn(async move {
            let response = http
                .post(url)
                .header("X-Shopify-Hmac-Sha256", sig)
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Webhook-Id", format!("kill-{i}"))
                .body(body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            (
                reference,
                response.map(|r| r.status().as_u16()).unwrap_or(0),
            )
        });
        sent += 1;
        if sent % 16 == 0 {
            while let Some(done) = posts.try_join_next() {
                let (reference, status) = done.expect("post task");
                if status == 200 {
                    acknowledged.insert(reference);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i == kill_after {
            child.0.kill().expect("kill -9");
            let _ = child.0.wait();
        }
    }
    while let Some(done) = posts.join_next().await {
        let (reference, status) = done.expect("post task");
        if status == 200 {
            acknowledged.insert(reference);
        }
    }
    assert!(
        acknowledged.len() > 20,
        "some orders were acknowledged before the kill: {}",
        acknowledged.len()
    );

    // Restart and let it catch up.
    let mut child = spawn_waybill(&dir.path());
    wait_healthy(&http, &base).await;
    // Wait until the courier has seen every acknowledged order but those in
    // flight at the kill (at most max_in_flight), and nothing moves any more.
    let mut last = usize::MAX;
    eventually(
        Duration::from_secs(60),
        "the restarted waybill to catch up",
        || {
            let counts = counts.lock().expect("lock").clone();
            let missing = acknowledged
                .iter()
                .filter(|r| !counts.contains_key(*r))
                .count();
            let settled = counts.len() == last && missing <= MAX_IN_FLIGHT;
            last = counts.len();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                settled.then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&child.0);
    let _ = child.0.wait();

    let config = dir.load();
    let backends = waybill::runtime::open_backends(&config)
        .await
        .expect("open store");
    let bookings = backends
        .store
        .bookings(None, 100_000)
        .await
        .expect("bookings");
    let by_reference: HashMap<String, BookingStatus> = bookings
        .iter()
        .filter_map(|b| b.reference.clone().map(|r| (r, b.status)))
        .collect();
    let counts = counts.lock().expect("lock").clone();
    for (reference, n) in &counts {
        assert!(*n <= 1, "{reference} was booked {n} times");
    }
    let mut review = 0;
    for reference in &acknowledged {
        match by_reference.get(reference) {
            Some(BookingStatus::Booked) => assert_eq!(
                counts.get(reference),
                Some(&1),
                "{reference} booked in the store but not at the courier"
            ),
            Some(BookingStatus::Review) => review += 1,
            other => panic!("acknowledged order {reference} ended as {other:?}"),
        }
    }
    assert!(
        review <= MAX_IN_FLIGHT,
        "only requests in flight at the kill go to review: {review}"
    );
}

fn sigterm(child: &Child) {
    // SIGTERM lets waybill stop cleanly; `kill` is the portable way to send it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}
