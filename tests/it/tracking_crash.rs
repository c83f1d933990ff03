//! `kill -9` while courier callbacks stream in and the scheduler polls:
//! after a restart, and the courier resending what was never answered,
//! every acknowledged callback has exactly one history row and every
//! shipment ends where its latest event puts it.

use crate::common::*;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use waybill::store::shipments::ShipmentFilter;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "cb-crash";
const SHIPMENTS: usize = 12;

/// PostEx stand-in: books `CX-<n>`; every track says the parcel is not yet
/// booked, an answer that never moves a shipment already picked up.
#[derive(Clone, Default)]
struct Courier {
    booked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl wiremock::Respond for Courier {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if request.url.path().ends_with("/create-order") {
            let n = self
                .booked
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return ResponseTemplate::new(200).set_body_json(postex_ok(&format!("CX-{n}")));
        }
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "statusCode": "200",
            "dist": { "transactionStatus": "Unbooked" }
        }))
    }
}

/// The callbacks of one parcel, in the courier's order, a minute apart.
fn journey(tracking: &str) -> Vec<(String, Vec<u8>)> {
    [
        "Picked By PostEx",
        "PostEx WareHouse",
        "Out For Delivery",
        "Delivered",
    ]
    .iter()
    .enumerate()
    .map(|(i, status)| {
        let time = format!("2026-12-01 1{i}:00:00");
        let body = serde_json::to_vec(&serde_json::json!({
            "trackingNumber": tracking,
            "orderReferenceNumber": "#1001",
            "statusUpdateDatetime": time,
            "orderStatus": status,
        }))
        .expect("json");
        (format!("{tracking}|{status}"), body)
    })
    .collect()
}

async fn post(http: &reqwest::Client, base: &str, body: &[u8]) -> u16 {
    http.post(format!("{base}/callbacks/postex/courier-main/{SECRET}"))
        .body(body.to_vec())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn kill_9_amid_callbacks_and_polls_loses_and_doubles_no_event() {
    let courier = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(Courier::default())
        .mount(&courier)
        .await;
    let port = free_port();
    let dir = ConfigDir::with_extra(
        &format!(
            "{{ connector: postex, credentials: {{ token: \"tok\", callback_secret: \"{SECRET}\" }}, base_url: \"{}\" }}",
            courier.uri()
        ),
        "sync: { interval: 1s, max_interval: 1s, max_age: 1h }\n",
    );
    dir.edit("waybill.yaml", |t| {
        t.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log = dir.dir.path().join("waybill.log");
    let mut child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    for i in 0..SHIPMENTS {
        let order = order_with("order-cod.json", |o| {
            o["id"] = serde_json::json!(9_700_000_000u64 + i as u64)
        });
        let (status, _) =
            post_order(&http, &base, &order, "orders/paid", &format!("crash-{i}")).await;
        assert_eq!(status, 200);
    }
    let config = dir.load();
    let backends = waybill::runtime::open_backends(&config)
        .await
        .expect("open store");
    let shipments = backends.shipments.clone();
    let all = || async {
        shipments
            .shipments(&ShipmentFilter {
                limit: 1000,
                ..ShipmentFilter::default()
            })
            .await
            .unwrap_or_default()
    };
    eventually(
        Duration::from_secs(60),
        "every order a shipment",
        || async { (all().await.len() == SHIPMENTS).then_some(()) },
    )
    .await;

    // Each parcel's callbacks in order, parcels interleaved; kill -9 halfway.
    let journeys: Vec<Vec<(String, Vec<u8>)>> = (0..SHIPMENTS)
        .map(|n| journey(&format!("CX-{n}")))
        .collect();
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut pending: HashMap<usize, usize> = HashMap::new();
    let steps = journeys[0].len();
    let mut sent = 0;
    let mut restarted = false;
    for step in 0..steps {
        let mut posts = tokio::task::JoinSet::new();
        for (n, journey) in journeys.iter().enumerate() {
            if pending.get(&n).is_some_and(|&at| at < step) {
                continue;
            }
            let (name, body) = journey[step].clone();
            let http = http.clone();
            let base = base.clone();
            posts.spawn(async move { (n, name, post(&http, &base, &body).await) });
            sent += 1;
            if sent == SHIPMENTS * steps / 2 {
                child.kill();
            }
        }
        while let Some(done) = posts.join_next().await {
            let (n, name, status) = done.expect("post task");
            if status == 200 {
                acknowledged.insert(name);
            } else {
                pending.entry(n).or_insert(step);
            }
        }
        if !pending.is_empty() && child.0.try_wait().ok().flatten().is_some() {
            child = Process::spawn(&dir.path(), &log);
            wait_healthy(&http, &base).await;
            restarted = true;
        }
        // The courier resends what was not answered, in order.
        for (&n, &from) in pending.clone().iter() {
            for (name, body) in &journeys[n][from..=step] {
                let status = post(&http, &base, body).await;
                assert_eq!(status, 200, "a resent callback is taken after the restart");
                acknowledged.insert(name.clone());
            }
            pending.remove(&n);
        }
    }
    assert!(restarted, "the kill left callbacks unanswered");
    assert_eq!(acknowledged.len(), SHIPMENTS * steps);

    // Every shipment delivered, every callback once in its history.
    let delivered = eventually(
        Duration::from_secs(60),
        "every parcel delivered",
        || async {
            let all = all().await;
            all.iter()
                .all(|s| s.status.as_str() == "delivered")
                .then_some(all)
        },
    )
    .await;
    for shipment in delivered {
        let history = shipments.history(&shipment.key).await.expect("history");
        for (name, _) in journey(&shipment.tracking_number) {
            let raw = name.split('|').nth(1).expect("status");
            let rows = history
                .iter()
                .filter(|h| h.via.as_str() == "callback" && h.raw.as_deref() == Some(raw))
                .count();
            assert_eq!(rows, 1, "{name}: {history:#?}");
        }
    }
    backends.bus.close().await;
    child.terminate();
}
