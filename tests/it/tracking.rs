//! A booking becomes a shipment, and courier status events on
//! `tracking.<connector>` move it forward only: out-of-order, repeated and
//! unknown statuses are recorded and move nothing, a terminal status stays,
//! a redelivered message is recorded once, and every applied change goes
//! out on `shipments.status` keyed by the order.

use crate::common::*;
use std::time::Duration;
use waybill::model::{Message, TrackingEvent, Via, header, tracking};
use waybill::store::shipments::{Outcome, ShipmentRecord};

async fn booked_shipment(app: &App, order_id: u64) -> ShipmentRecord {
    let order = order_with("order-cod.json", |o| o["id"] = serde_json::json!(order_id));
    assert_eq!(
        app.shopify(&order, "orders/paid", &format!("trk-{order_id}"))
            .await
            .0,
        200
    );
    eventually(
        Duration::from_secs(60),
        "the shipment of the booking",
        || async {
            let all = all_shipments(app).await?;
            all.into_iter()
                .find(|s| s.key.order_id == order_id.to_string())
        },
    )
    .await
}

/// Publishes one raw event as a callback would, with message id `id`.
async fn publish(app: &App, shipment: &ShipmentRecord, id: &str, raw: &str, at: &str) {
    let event = TrackingEvent {
        connector: shipment.courier.clone(),
        account: shipment.courier_account.clone(),
        tracking_number: shipment.tracking_number.clone(),
        raw_status: raw.to_string(),
        code: None,
        event_time: Some(at.to_string()),
        reason: None,
        via: Via::Callback,
        received_at: "2026-12-01T10:00:00Z".to_string(),
    };
    let mut headers = waybill::model::Headers::new();
    headers.insert(header::ID.into(), id.to_string());
    let message = Message {
        key: tracking::tracking_key(&event.account, &event.tracking_number),
        headers,
        payload: serde_json::to_vec(&event).expect("json"),
    };
    app.backends
        .bus
        .publish(&tracking::tracking_topic(&event.connector), message)
        .await
        .expect("publish");
}

#[tokio::test]
async fn status_events_move_a_shipment_forward_only_and_are_published() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let shipment = booked_shipment(&app, 9_500_000_001).await;
    assert_eq!(shipment.status.as_str(), "booked");
    assert_eq!(shipment.courier, "sandbox");
    assert_eq!(shipment.order_key, "shopify-main:9500000001");

    let events = [
        ("e1", "In  Transit", "2026-12-01T06:00:00Z"),
        ("e2", "out for delivery", "2026-12-01T12:00:00+05:00"),
        // Older than the latest applied: stale.
        ("e3", "in transit", "2026-12-01T06:30:00Z"),
        // The same status at the same time again, by another message.
        ("e4", "OUT FOR DELIVERY", "2026-12-01T07:00:00Z"),
        ("e5", "teleported", "2026-12-01T07:30:00Z"),
        ("e6", "delivered", "2026-12-01T09:00:00Z"),
        // After a terminal status: stale.
        ("e7", "in transit", "2026-12-01T10:00:00Z"),
        // A redelivery of the first message: no new row.
        ("e1", "In  Transit", "2026-12-01T06:00:00Z"),
    ];
    for (id, raw, at) in events {
        publish(&app, &shipment, id, raw, at).await;
    }
    let history = eventually(Duration::from_secs(30), "every event recorded", || async {
        let history = app.backends.shipments.history(&shipment.key).await.ok()?;
        (history.len() == 8).then_some(history)
    })
    .await;
    let outcomes: Vec<(&str, Outcome)> = history
        .iter()
        .map(|h| (h.status.as_str(), h.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("booked", Outcome::Applied),
            ("in_transit", Outcome::Applied),
            ("out_for_delivery", Outcome::Applied),
            ("in_transit", Outcome::Stale),
            ("out_for_delivery", Outcome::Duplicate),
            ("unknown", Outcome::Unknown),
            ("delivered", Outcome::Applied),
            ("in_transit", Outcome::Stale),
        ]
    );
    assert_eq!(
        history[2].event_time.as_deref(),
        Some("2026-12-01T07:00:00.000000Z"),
        "times are kept in UTC"
    );
    let now = app
        .backends
        .shipments
        .shipment_by_tracking(&shipment.courier_account, &shipment.tracking_number)
        .await
        .expect("read")
        .expect("shipment");
    assert_eq!(now.status.as_str(), "delivered");
    assert_eq!(now.raw_status.as_deref(), Some("delivered"));

    let changes = eventually(
        Duration::from_secs(30),
        "three changes published",
        || async {
            let read = app
                .backends
                .bus
                .read("shipments.status", 0, 100)
                .await
                .ok()?;
            (read.len() >= 3).then_some(read)
        },
    )
    .await;
    assert_eq!(changes.len(), 3, "only applied changes are published");
    let statuses: Vec<String> = changes
        .iter()
        .map(|r| {
            assert_eq!(r.message.key, "shopify-main:9500000001");
            let change: serde_json::Value =
                serde_json::from_slice(&r.message.payload).expect("json");
            format!(
                "{}<-{}",
                change["status"].as_str().unwrap_or("?"),
                change["previous_status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "in_transit<-booked",
            "out_for_delivery<-in_transit",
            "delivered<-out_for_delivery"
        ]
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("waybill_unknown_statuses_total{courier=\"sandbox\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "waybill_status_events_total{courier=\"sandbox\",via=\"callback\",outcome=\"stale\"} 2"
        ),
        "{metrics}"
    );
    let unknown = app
        .backends
        .shipments
        .unknown_statuses()
        .await
        .expect("unknown");
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        (unknown[0].raw.as_str(), unknown[0].count),
        ("teleported", 1)
    );
    app.stop().await;

    let printed = waybill_cli(
        &dir,
        &[
            "shipments",
            "show",
            &shipment.tracking_number,
            "--format",
            "json",
        ],
    );
    let shown: serde_json::Value = serde_json::from_str(&printed).expect("one JSON object");
    assert_eq!(shown["status"], "delivered");
    assert_eq!(shown["key"], shipment.key.to_string());
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(8));
    assert_eq!(shown["history"][4]["outcome"], "duplicate");

    let listed = waybill_cli(&dir, &["statuses", "unknown"]);
    let fields: Vec<&str> = listed.trim_end().split('\t').collect();
    assert_eq!(fields[..3], ["sandbox", "teleported", "1"], "{listed}");
}

#[tokio::test]
async fn an_event_for_a_parcel_never_booked_is_a_review_dead_letter() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let stranger = ShipmentRecord {
        courier: "sandbox".into(),
        courier_account: "courier-main".into(),
        tracking_number: "SBX-NEVER-BOOKED".into(),
        ..booked_shipment(&app, 9_500_000_002).await
    };
    publish(&app, &stranger, "x1", "delivered", "2026-12-01T09:00:00Z").await;
    let letters = eventually(Duration::from_secs(30), "the dead letter", || async {
        let letters = dead_letters(&app, "tracking").await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(
        letters[0].message.headers["waybill-error-class"],
        "needs_review"
    );
    assert!(letters[0].message.headers["waybill-error-message"].contains("SBX-NEVER-BOOKED"));
    app.stop().await;
}

/// Books one order on a sandbox that moves every 200 ms and waits for its
/// shipment to reach `end` through the sandbox's own signed callbacks.
async fn sandbox_journey(order_id: u64, notes: Option<&str>, end: &str) -> Vec<(String, String)> {
    let dir = ConfigDir::new("{ connector: sandbox, settings: { step: 200ms } }");
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(order_id);
        if let Some(notes) = notes {
            o["note"] = serde_json::json!(notes);
        }
    });
    assert_eq!(
        app.shopify(&order, "orders/paid", &format!("journey-{order_id}"))
            .await
            .0,
        200
    );
    let shipment = eventually(Duration::from_secs(60), end, || async {
        let all = all_shipments(&app).await?;
        all.into_iter().find(|s| s.status.as_str() == end)
    })
    .await;
    let history = app
        .backends
        .shipments
        .history(&shipment.key)
        .await
        .expect("history");
    app.stop().await;
    history
        .iter()
        .filter(|h| h.outcome == Outcome::Applied)
        .map(|h| (h.status.as_str().to_string(), h.via.as_str().to_string()))
        .collect()
}

#[tokio::test]
async fn a_sandbox_parcel_moves_to_delivered_by_its_callbacks() {
    let applied = sandbox_journey(9_500_000_010, None, "delivered").await;
    let statuses: Vec<&str> = applied.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "booked",
            "picked_up",
            "in_transit",
            "out_for_delivery",
            "delivered"
        ]
    );
    assert!(
        applied[1..].iter().all(|(_, via)| via == "callback"),
        "{applied:?}"
    );
}

#[tokio::test]
async fn a_sandbox_return_order_comes_back_returned() {
    let applied = sandbox_journey(
        9_500_000_011,
        Some("Leave at the gate. sandbox:return"),
        "returned",
    )
    .await;
    let statuses: Vec<&str> = applied.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses.last(), Some(&"returned"), "{applied:?}");
    assert!(
        statuses.contains(&"delivery_failed") && statuses.contains(&"returning"),
        "{applied:?}"
    );
    assert!(!statuses.contains(&"delivered"), "{applied:?}");
}

/// A courier may call back the moment it has answered, before anything
/// reads the booking's announcement: the shipment is started by the booking
/// itself, so it exists even for a pipeline that announces nothing.
#[tokio::test]
async fn a_booking_starts_its_shipment_without_an_output_topic() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("pipelines/shopify-orders.yaml", |t| {
        t.replace("output: { topic: shipments.booked }\n", "")
    });
    // Its reader would read a topic nothing produces.
    std::fs::remove_file(dir.dir.path().join("pipelines/shopify-tracking.yaml")).expect("remove");
    assert!(dir.load().pipelines[0].output.is_none());
    let app = App::start(&dir).await;
    let shipment = booked_shipment(&app, 9_500_000_020).await;
    assert_eq!(shipment.status.as_str(), "booked");
    assert!(shipment.tracking_number.starts_with("SBX-"), "{shipment:?}");
    app.stop().await;
}
