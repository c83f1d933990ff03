//! The scheduler alone moves a shipment: a PostEx booking (a `wiremock`
//! courier) whose track-order answers a scripted sequence reaches
//! `delivered` by polling, each status applied once, a repeated answer
//! backing the next poll off; after `delivered` it is never polled again.

use crate::common::*;
use std::time::Duration;
use waybill::store::shipments::{Outcome, ShipmentFilter};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn tracked(status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "statusCode": "200",
        "statusMessage": "SUCCESSFULLY OPERATED",
        "dist": { "trackingNumber": "CX-POLL-1", "transactionStatus": status }
    }))
}

#[tokio::test]
async fn polling_alone_takes_a_booking_to_delivered() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-POLL-1")))
        .mount(&courier)
        .await;
    let track = || path("/order/v1/track-order/CX-POLL-1");
    for (status, times) in [
        ("Picked By PostEx", 1),
        ("PostEx WareHouse", 2),
        ("Out For Delivery", 1),
    ] {
        Mock::given(method("GET"))
            .and(track())
            .respond_with(tracked(status))
            .up_to_n_times(times)
            .mount(&courier)
            .await;
    }
    Mock::given(method("GET"))
        .and(track())
        .respond_with(tracked("Delivered"))
        .mount(&courier)
        .await;
    let dir = ConfigDir::with_extra(
        &postex_at(&courier.uri()),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\n",
    );
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(9_600_000_001u64)
    });
    assert_eq!(app.shopify(&order, "orders/paid", "poll-1").await.0, 200);
    let shipment = eventually(Duration::from_secs(60), "delivered by polling", || async {
        let all = all_shipments(&app).await?;
        all.into_iter()
            .find(|s| s.tracking_number == "CX-POLL-1" && s.status.as_str() == "delivered")
    })
    .await;
    assert_eq!(
        shipment.next_poll_at, None,
        "a delivered parcel is not polled"
    );
    let history = app
        .backends
        .shipments
        .history(&shipment.key)
        .await
        .expect("history");
    let applied: Vec<&str> = history
        .iter()
        .filter(|h| h.outcome == Outcome::Applied)
        .map(|h| h.status.as_str())
        .collect();
    assert_eq!(
        applied,
        [
            "booked",
            "picked_up",
            "in_transit",
            "out_for_delivery",
            "delivered"
        ],
        "{history:#?}"
    );
    assert_eq!(
        history
            .iter()
            .filter(|h| h.outcome == Outcome::Duplicate)
            .count(),
        1,
        "the repeated answer moved nothing"
    );
    assert!(history.iter().skip(1).all(|h| h.via.as_str() == "poll"));
    let polls_before = courier.received_requests().await.map_or(0, |r| r.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls_after = courier.received_requests().await.map_or(0, |r| r.len());
    assert_eq!(polls_before, polls_after, "no poll after delivered");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "waybill_tracking_polls_total{courier=\"postex\",account=\"courier-main\",outcome=\"ok\"} 5"
        ),
        "{metrics}"
    );
    let ready = reqwest::get(app.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body = ready.text().await.expect("body");
    assert!(body.contains("scheduler: last ran"), "{body}");
    app.stop().await;

    let printed = waybill_cli(&dir, &["sync", "status"]);
    assert!(
        printed.contains("courier-main\tpostex\t0\t0\t-"),
        "{printed}"
    );
    assert!(
        printed.contains("no scheduler is running") || printed.contains("scheduler last ran"),
        "{printed}"
    );
}

/// A courier that books `BX-<n>` and answers a bulk track for the tracking
/// numbers in `?cns=`, recording how many each request asked about.
#[derive(Clone, Default)]
struct Bulk {
    booked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl wiremock::Respond for Bulk {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if request.url.path() == "/book" {
            let n = self
                .booked
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "tracking_number": format!("BX-{n}") }));
        }
        let cns: Vec<String> = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "cns")
            .map(|(_, v)| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        self.asked.lock().expect("lock").push(cns.len());
        let items: Vec<serde_json::Value> = cns
            .iter()
            .map(|cn| serde_json::json!({ "cn": cn, "state": "done" }))
            .collect();
        ResponseTemplate::new(200).set_body_json(serde_json::json!({ "items": items }))
    }
}

const BULKEX: &str = "\
name: bulkex
kind: courier
description: \"A made-up courier that tracks in bulk\"
base_url: http://127.0.0.1:9
operations:
  book:
    request: { method: POST, path: /book, body: mappings/sandbox/book.yaml }
    success: \"response.status == 200\"
    extract: { tracking_number: \"$.tracking_number\" }
  track_many:
    request: { method: GET, path: /track, query: { cns: \"{{ tracking_numbers | join(',') }}\" } }
    success: \"response.status == 200\"
    each: \"$.items[*]\"
    max_batch: 2
    extract: { tracking_number: \"$.cn\", status: \"$.state\" }
statuses:
  table: { \"moving\": in_transit, \"done\": delivered }
";

#[tokio::test]
async fn track_many_asks_about_up_to_max_batch_shipments_per_request() {
    let bulk = Bulk::default();
    let courier = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(bulk.clone())
        .mount(&courier)
        .await;
    let dir = ConfigDir::with_extra(
        &format!("{{ connector: bulkex, base_url: \"{}\" }}", courier.uri()),
        "sync: { interval: 2s, max_interval: 4s, max_age: 1h }\n",
    );
    std::fs::write(dir.dir.path().join("connectors/bulkex.yaml"), BULKEX).expect("connector");
    let app = App::start(&dir).await;
    for i in 0..3u64 {
        let order = order_with("order-cod.json", |o| {
            o["id"] = serde_json::json!(9_600_000_100u64 + i)
        });
        assert_eq!(
            app.shopify(&order, "orders/paid", &format!("bulk-{i}"))
                .await
                .0,
            200
        );
    }
    eventually(Duration::from_secs(60), "three delivered", || async {
        let delivered = app
            .backends
            .shipments
            .shipments(&ShipmentFilter {
                status: waybill::model::Status::Delivered.into(),
                limit: 10,
                ..ShipmentFilter::default()
            })
            .await
            .ok()?;
        (delivered.len() == 3).then_some(())
    })
    .await;
    let asked = bulk.asked.lock().expect("lock").clone();
    assert!(asked.iter().all(|&n| (1..=2).contains(&n)), "{asked:?}");
    assert_eq!(
        asked.iter().sum::<usize>(),
        3,
        "each shipment asked about once: {asked:?}"
    );
    app.stop().await;
}

/// A PostEx stand-in: books `CX-<n>` and answers every track the same,
/// noting when each tracking number was asked about.
#[derive(Clone, Default)]
struct Steady {
    booked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    polled: std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>,
}

impl wiremock::Respond for Steady {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let path = request.url.path();
        if path.ends_with("/create-order") {
            let n = self
                .booked
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return ResponseTemplate::new(200).set_body_json(postex_ok(&format!("CX-{n}")));
        }
        let number = path.rsplit('/').next().unwrap_or_default().to_string();
        self.polled
            .lock()
            .expect("lock")
            .push((number.clone(), std::time::Instant::now()));
        tracked("Picked By PostEx")
    }
}

#[tokio::test]
async fn two_instances_poll_each_shipment_once_per_interval() {
    if !matches!(backend(), Backend::Kafka { .. }) {
        eprintln!("skipped: needs WAYBILL_TEST_BACKEND=kafka (two instances share one store)");
        return;
    }
    let steady = Steady::default();
    let courier = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(steady.clone())
        .mount(&courier)
        .await;
    let dir = ConfigDir::with_extra(
        &postex_at(&courier.uri()),
        "sync: { interval: 2s, max_interval: 2s, max_age: 1h }\n",
    );
    let a = App::start(&dir).await;
    let b = App::start(&dir).await;
    let orders = 20u64;
    for i in 0..orders {
        let order = order_with("order-cod.json", |o| {
            o["id"] = serde_json::json!(9_600_000_200u64 + i)
        });
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            app.shopify(&order, "orders/paid", &format!("twin-{i}"))
                .await
                .0,
            200
        );
    }
    eventually(Duration::from_secs(60), "every order booked", || async {
        let all = all_shipments(&a).await?;
        (all.len() == orders as usize).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.stop().await;
    b.stop().await;
    let polled = steady.polled.lock().expect("lock").clone();
    let mut by_number: std::collections::HashMap<String, Vec<std::time::Instant>> =
        Default::default();
    for (number, at) in polled {
        by_number.entry(number).or_default().push(at);
    }
    assert_eq!(
        by_number.len(),
        orders as usize,
        "every shipment was polled"
    );
    for (number, mut times) in by_number {
        times.sort();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(1_800),
                "{number} polled twice within {gap:?}: {times:?}"
            );
        }
    }
}
