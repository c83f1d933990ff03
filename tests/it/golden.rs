//! The golden path on the embedded default: a signed order becomes one
//! sandbox booking, visible in the store, the output topic and the metrics.

use crate::common::*;
use std::time::Duration;
use waybill::store::BookingStatus;

#[tokio::test]
async fn signed_cod_order_becomes_one_sandbox_booking() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let (status, body) = app
        .shopify(&sample("order-cod.json"), "orders/create", "wh-1")
        .await;
    assert_eq!(status, 200, "{body}");

    let booking = eventually(Duration::from_secs(20), "a booked booking", || async {
        let all = app
            .backends
            .store
            .bookings(Some(BookingStatus::Booked), 10)
            .await
            .ok()?;
        all.into_iter().next()
    })
    .await;
    let result = booking.result.expect("result");
    assert!(
        result.tracking_number.starts_with("SBX-"),
        "{}",
        result.tracking_number
    );
    assert_eq!(result.courier, "sandbox");
    assert_eq!(booking.key.source, "shopify");
    assert_eq!(booking.key.account, "shopify-main");

    // The booking is recorded before its event is published: wait for both.
    let booked = eventually(Duration::from_secs(20), "the booked event", || async {
        let read = app
            .backends
            .bus
            .read("shipments.booked", 0, 10)
            .await
            .ok()?;
        (!read.is_empty()).then_some(read)
    })
    .await;
    assert_eq!(booked.len(), 1);
    let out: serde_json::Value = serde_json::from_slice(&booked[0].message.payload).expect("json");
    assert_eq!(
        out["tracking_number"],
        serde_json::json!(result.tracking_number)
    );

    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("waybill_courier_requests_total{")
                && l.contains("courier=\"sandbox\"")
                && l.contains("operation=\"book\"")
                && l.contains("outcome=\"success\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("waybill_order_to_booking_seconds_count{pipeline=\"shopify-orders\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("waybill_webhooks_received_total{source=\"shopify\",account=\"shopify-main\",outcome=\"accepted\"} 1"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_later_event_of_a_booked_order_publishes_no_second_booking() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    let (status, text) = app.shopify(&body, "orders/create", "wh-create").await;
    assert_eq!(status, 200, "{text}");
    eventually(Duration::from_secs(20), "the booked event", || async {
        let read = app
            .backends
            .bus
            .read("shipments.booked", 0, 10)
            .await
            .ok()?;
        (!read.is_empty()).then_some(())
    })
    .await;

    // A COD order's update passes the trigger again and replays the booking.
    let (status, text) = app.shopify(&body, "orders/updated", "wh-update").await;
    assert_eq!(status, 200, "{text}");
    eventually(Duration::from_secs(20), "the update's replay", || async {
        app.metrics()
            .await
            .contains(
                "waybill_events_total{pipeline=\"shopify-orders\",stage=\"book\",outcome=\"replayed\"} 1",
            )
            .then_some(())
    })
    .await;

    let bookings = app
        .backends
        .store
        .bookings(None, 10)
        .await
        .expect("bookings");
    assert_eq!(bookings.len(), 1, "{bookings:?}");
    let booked = app
        .backends
        .bus
        .read("shipments.booked", 0, 10)
        .await
        .expect("read");
    assert_eq!(booked.len(), 1, "one booking, one shipments.booked");
    assert_eq!(booked[0].message.headers["waybill-topic"], "orders/create");
    app.stop().await;
}
