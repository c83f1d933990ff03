//! Orders changed at the store after booking (a `wiremock` PostEx): a
//! cancellation before pickup cancels at the courier once and the shipment
//! becomes `cancelled` (`via: store`); after pickup, or when the courier
//! refuses, it goes to review; an edit goes to review with the difference,
//! is ignored, or is rebooked as `on_change` says; never a second parcel
//! otherwise.

use crate::common::*;
use std::time::Duration;
use waybill::model::{ErrorClass, Message, TrackingEvent, Via, header, tracking};
use waybill::store::shipments::ShipmentRecord;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CANCEL: &str = "/order/v1/cancel-order";
const CREATE: &str = "/order/v3/create-order";
const WAIT: Duration = Duration::from_secs(60);

/// PostEx booking every order as `CX-1`.
async fn postex() -> MockServer {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CREATE))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-1")))
        .mount(&courier)
        .await;
    courier
}

/// PostEx answering cancel-order with `answer`.
async fn cancels_with(courier: &MockServer, answer: serde_json::Value) {
    Mock::given(method("PUT"))
        .and(path(CANCEL))
        .and(body_json(serde_json::json!({ "trackingNumber": "CX-1" })))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(courier)
        .await;
}

async fn requests_to(courier: &MockServer, to: &str) -> usize {
    courier
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == to)
        .count()
}

/// A config on `courier` whose shipped pipeline says `on_change`.
fn config(courier: &MockServer, on_change: &str) -> ConfigDir {
    let dir = ConfigDir::new(&postex_at(&courier.uri()));
    dir.edit("pipelines/shopify-orders.yaml", |text| {
        text.replace("on_change: review", &format!("on_change: {on_change}"))
    });
    dir
}

fn cancelled_order() -> Vec<u8> {
    order_with("order-cod.json", |o| {
        o["cancelled_at"] = serde_json::json!("2026-12-01T15:00:00+05:00");
        o["cancel_reason"] = serde_json::json!("customer");
    })
}

fn moved_order() -> Vec<u8> {
    order_with("order-cod.json", |o| {
        o["shipping_address"]["address1"] = serde_json::json!("Flat 7, Clifton Block 5");
    })
}

async fn post(app: &App, body: &[u8], topic: &str, id: &str) {
    assert_eq!(app.shopify(body, topic, id).await.0, 200);
}

/// Books the sample COD order and waits for its shipment.
async fn booked(app: &App) -> ShipmentRecord {
    post(app, &sample("order-cod.json"), "orders/create", "w-create").await;
    shipment_at(app, 0, "booked").await
}

async fn shipment_at(app: &App, sequence: u32, status: &str) -> ShipmentRecord {
    eventually(WAIT, &format!("shipment {sequence} {status}"), || async {
        all_shipments(app)
            .await?
            .into_iter()
            .find(|s| s.key.sequence == sequence && s.status.as_str() == status)
    })
    .await
}

/// Waits until the pipeline counted `count` outcomes `outcome` of `change`.
async fn counted(app: &App, change: &str, outcome: &str, count: u32) {
    let line = format!(
        "waybill_order_changes_total{{pipeline=\"shopify-orders\",change=\"{change}\",outcome=\"{outcome}\"}} {count}"
    );
    eventually(WAIT, &line, || async {
        app.metrics().await.contains(&line).then_some(())
    })
    .await;
}

/// Waits until the pipeline's change stage recorded `count` events of
/// `outcome` (`replayed`: a change handled by an earlier message).
async fn processed(app: &App, outcome: &str, count: u32) {
    let line = format!(
        "waybill_events_total{{pipeline=\"shopify-orders\",stage=\"change\",outcome=\"{outcome}\"}} {count}"
    );
    eventually(WAIT, &line, || async {
        app.metrics().await.contains(&line).then_some(())
    })
    .await;
}

async fn review_letters(app: &App, count: usize) -> Vec<String> {
    let letters = eventually(WAIT, "review dead letters", || async {
        let letters = dead_letters(app, "shopify-orders").await;
        (letters.len() >= count).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), count);
    letters
        .iter()
        .map(|letter| {
            let headers = &letter.message.headers;
            assert_eq!(
                headers.get(header::ERROR_CLASS).map(String::as_str),
                Some(ErrorClass::NeedsReview.as_str())
            );
            assert_eq!(
                headers.get(header::ERROR_STAGE).map(String::as_str),
                Some("change")
            );
            headers
                .get(header::ERROR_MESSAGE)
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// A courier status event for `shipment`, as a callback would publish it.
async fn courier_says(app: &App, shipment: &ShipmentRecord, raw: &str) {
    let event = TrackingEvent {
        connector: shipment.courier.clone(),
        account: shipment.courier_account.clone(),
        tracking_number: shipment.tracking_number.clone(),
        raw_status: raw.to_string(),
        code: None,
        event_time: Some("2026-12-01T11:00:00Z".to_string()),
        reason: None,
        via: Via::Callback,
        received_at: "2026-12-01T11:00:00Z".to_string(),
    };
    let mut headers = waybill::model::Headers::new();
    headers.insert(
        header::ID.into(),
        format!("pickup-{}", shipment.tracking_number),
    );
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

async fn status_changes(app: &App, count: usize) -> Vec<serde_json::Value> {
    eventually(WAIT, "status changes published", || async {
        let read = app
            .backends
            .bus
            .read("shipments.status", 0, 100)
            .await
            .ok()?;
        let changes: Vec<serde_json::Value> = read
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.message.payload).ok())
            .collect();
        (changes.len() >= count).then_some(changes)
    })
    .await
}

#[tokio::test]
async fn a_cancellation_before_pickup_cancels_at_postex_once() {
    let courier = postex().await;
    cancels_with(
        &courier,
        serde_json::json!({ "statusCode": "200", "statusMessage": "ORDER HAS BEEN CANCELLED" }),
    )
    .await;
    let dir = config(&courier, "review");
    let app = App::start(&dir).await;
    let shipment = booked(&app).await;
    // Shopify sends both for one cancellation.
    post(&app, &cancelled_order(), "orders/cancelled", "w-cancel").await;
    post(
        &app,
        &cancelled_order(),
        "orders/updated",
        "w-cancel-update",
    )
    .await;
    let cancelled = shipment_at(&app, 0, "cancelled").await;
    assert_eq!(cancelled.tracking_number, "CX-1");
    assert_eq!(
        cancelled.next_poll_at, None,
        "a cancelled shipment is not polled"
    );
    assert_eq!(shipment.cod_state.as_str(), "pending");
    assert_eq!(
        cancelled.cod_state.as_str(),
        "not_collected",
        "a cancelled COD parcel collects nothing"
    );
    let history = app
        .backends
        .shipments
        .history(&shipment.key)
        .await
        .expect("history");
    let last = history.last().expect("a history row");
    assert_eq!((last.status.as_str(), last.via), ("cancelled", Via::Store));
    let changes = status_changes(&app, 1).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["status"], "cancelled");
    assert_eq!(changes[0]["previous_status"], "booked");
    assert_eq!(changes[0]["via"], "store");
    assert_eq!(changes[0]["tracking_number"], "CX-1");
    counted(&app, "cancellation", "cancelled", 1).await;
    processed(&app, "replayed", 1).await;
    assert_eq!(requests_to(&courier, CANCEL).await, 1);
    assert_eq!(requests_to(&courier, CREATE).await, 1);
    assert!(dead_letters(&app, "shopify-orders").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_sandbox_courier_cancels_a_parcel_that_has_not_moved() {
    let dir = ConfigDir::new("{ connector: sandbox, settings: { step: 60s } }");
    let app = App::start(&dir).await;
    let shipment = booked(&app).await;
    assert!(shipment.tracking_number.starts_with("SBX-"));
    post(&app, &cancelled_order(), "orders/cancelled", "w-cancel").await;
    shipment_at(&app, 0, "cancelled").await;
    counted(&app, "cancellation", "cancelled", 1).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "waybill_courier_requests_total{courier=\"sandbox\",account=\"courier-main\",operation=\"cancel\",outcome=\"success\"} 1"
        ),
        "{metrics}"
    );
    assert!(dead_letters(&app, "shopify-orders").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_before_booking_is_never_booked() {
    let courier = postex().await;
    let dir = config(&courier, "review");
    let app = App::start(&dir).await;
    post(&app, &cancelled_order(), "orders/cancelled", "w-cancel").await;
    post(
        &app,
        &sample("order-prepaid.json"),
        "orders/paid",
        "w-other",
    )
    .await;
    eventually(WAIT, "the other order booked", || async {
        let all = all_shipments(&app).await?;
        (all.len() == 1).then_some(())
    })
    .await;
    let all = all_shipments(&app).await.expect("shipments");
    assert_ne!(all[0].key.order_id, "820982911946154508");
    assert_eq!(requests_to(&courier, CREATE).await, 1);
    assert_eq!(requests_to(&courier, CANCEL).await, 0);
    assert!(dead_letters(&app, "shopify-orders").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_cancellation_after_pickup_goes_to_review_without_a_cancel_request() {
    let courier = postex().await;
    cancels_with(&courier, serde_json::json!({ "statusCode": "200" })).await;
    let dir = config(&courier, "review");
    let app = App::start(&dir).await;
    let shipment = booked(&app).await;
    courier_says(&app, &shipment, "Picked By PostEx").await;
    shipment_at(&app, 0, "picked_up").await;
    post(&app, &cancelled_order(), "orders/cancelled", "w-cancel").await;
    let letters = review_letters(&app, 1).await;
    assert!(letters[0].contains("after pickup"), "{}", letters[0]);
    assert!(letters[0].contains("intercept"), "{}", letters[0]);
    assert!(
        letters[0].contains("refuse it at the door"),
        "{}",
        letters[0]
    );
    assert!(letters[0].contains("CX-1"), "{}", letters[0]);
    // The same cancellation again is not reported twice.
    post(
        &app,
        &cancelled_order(),
        "orders/updated",
        "w-cancel-update",
    )
    .await;
    processed(&app, "replayed", 1).await;
    assert_eq!(review_letters(&app, 1).await.len(), 1);
    counted(&app, "cancellation", "review", 1).await;
    assert_eq!(requests_to(&courier, CANCEL).await, 0);
    shipment_at(&app, 0, "picked_up").await;
    app.stop().await;
}

#[tokio::test]
async fn a_courier_refusing_the_cancellation_goes_to_review() {
    let courier = postex().await;
    cancels_with(
        &courier,
        serde_json::json!({ "statusCode": "400", "statusMessage": "Order can not be cancelled" }),
    )
    .await;
    let dir = config(&courier, "review");
    let app = App::start(&dir).await;
    booked(&app).await;
    post(&app, &cancelled_order(), "orders/cancelled", "w-cancel").await;
    let letters = review_letters(&app, 1).await;
    assert!(
        letters[0].contains("Order can not be cancelled"),
        "{}",
        letters[0]
    );
    assert!(letters[0].contains("courier's portal"), "{}", letters[0]);
    assert_eq!(requests_to(&courier, CANCEL).await, 1);
    counted(&app, "cancellation", "review", 1).await;
    shipment_at(&app, 0, "booked").await;
    app.stop().await;
}

#[tokio::test]
async fn an_address_edit_after_booking_goes_to_review_with_the_difference() {
    let courier = postex().await;
    let dir = config(&courier, "review");
    let app = App::start(&dir).await;
    booked(&app).await;
    post(&app, &moved_order(), "orders/updated", "w-edit").await;
    let letters = review_letters(&app, 1).await;
    assert!(
        letters[0].contains(
            r#"recipient.address1: "House 12, Street 4, Khayaban-e-Shamsheer" → "Flat 7, Clifton Block 5""#
        ),
        "{}",
        letters[0]
    );
    // An update that changes nothing the parcel carries is a plain replay.
    post(&app, &moved_order(), "orders/updated", "w-edit-again").await;
    processed(&app, "replayed", 1).await;
    counted(&app, "edit", "review", 1).await;
    assert_eq!(review_letters(&app, 1).await.len(), 1);
    // Replayed, the dead letter reports the change again.
    let replayed = waybill::cli::dlq::replay(
        &dir.load(),
        app.backends.bus.as_ref(),
        None,
        Some("shopify-orders"),
    )
    .await
    .expect("replay");
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    let letters = eventually(WAIT, "the replay's dead letter", || async {
        let letters = dead_letters(&app, "shopify-orders").await;
        let reports = letters
            .iter()
            .filter(|l| l.message.headers.contains_key(header::ERROR_MESSAGE))
            .count();
        (reports == 2).then_some(letters)
    })
    .await;
    assert!(
        letters
            .iter()
            .any(|l| l.message.headers.contains_key(header::REPLAY_OF)),
        "the second letter is the replay's"
    );
    counted(&app, "edit", "review", 2).await;
    assert_eq!(
        requests_to(&courier, CREATE).await,
        1,
        "nothing booked twice"
    );
    assert_eq!(requests_to(&courier, CANCEL).await, 0);
    let all = all_shipments(&app).await.expect("shipments");
    assert_eq!(all.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_edit_is_ignored_when_the_pipeline_says_so() {
    let courier = postex().await;
    let dir = config(&courier, "ignore");
    let app = App::start(&dir).await;
    booked(&app).await;
    post(&app, &moved_order(), "orders/updated", "w-edit").await;
    counted(&app, "edit", "ignored", 1).await;
    assert!(dead_letters(&app, "shopify-orders").await.is_empty());
    assert_eq!(requests_to(&courier, CREATE).await, 1);
    assert_eq!(requests_to(&courier, CANCEL).await, 0);
    shipment_at(&app, 0, "booked").await;
    app.stop().await;
}

#[tokio::test]
async fn a_rebook_cancels_then_books_the_next_sequence_once() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CREATE))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-1")))
        .up_to_n_times(1)
        .mount(&courier)
        .await;
    Mock::given(method("POST"))
        .and(path(CREATE))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-2")))
        .mount(&courier)
        .await;
    cancels_with(&courier, serde_json::json!({ "statusCode": "200" })).await;
    let dir = config(&courier, "rebook");
    let app = App::start(&dir).await;
    let first = booked(&app).await;
    post(&app, &moved_order(), "orders/updated", "w-edit").await;
    let second = shipment_at(&app, first.key.sequence + 1, "booked").await;
    assert_eq!(second.tracking_number, "CX-2");
    shipment_at(&app, first.key.sequence, "cancelled").await;
    // The same edit again books nothing more.
    post(&app, &moved_order(), "orders/updated", "w-edit-again").await;
    counted(&app, "edit", "rebooked", 1).await;
    let booked_topic = eventually(WAIT, "both bookings published", || async {
        let read = app
            .backends
            .bus
            .read("shipments.booked", 0, 100)
            .await
            .ok()?;
        (read.len() >= 2).then_some(read)
    })
    .await;
    eventually(WAIT, "the repeated edit handled", || async {
        let metrics = app.metrics().await;
        metrics
            .contains("waybill_events_total{pipeline=\"shopify-orders\",stage=\"book\",outcome=\"replayed\"} 1")
            .then_some(())
    })
    .await;
    assert_eq!(booked_topic.len(), 2);
    let rebooked: serde_json::Value =
        serde_json::from_slice(&booked_topic[1].message.payload).expect("json");
    assert_eq!(rebooked["tracking_number"], "CX-2");
    assert_eq!(
        rebooked["shipment"]["recipient"]["address1"],
        "Flat 7, Clifton Block 5"
    );
    assert_eq!(requests_to(&courier, CREATE).await, 2);
    assert_eq!(requests_to(&courier, CANCEL).await, 1);
    assert!(dead_letters(&app, "shopify-orders").await.is_empty());
    app.stop().await;
}

#[test]
fn rebook_is_refused_where_a_route_reaches_a_courier_that_cannot_cancel() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("pipelines/shopify-orders.yaml", |text| {
        text.replace("on_change: review", "on_change: rebook")
    });
    dir.edit("connectors/sandbox.yaml", |text| {
        let start = text
            .find("  # Before pickup only")
            .expect("cancel operation");
        let end = text.find("# The sandbox posts").expect("callback");
        format!("{}{}", &text[..start], &text[end..])
    });
    let problems = waybill::config::load(&dir.path()).expect_err("rebook without cancel");
    let line = std::fs::read_to_string(dir.dir.path().join("pipelines/shopify-orders.yaml"))
        .expect("pipeline")
        .lines()
        .position(|l| l.starts_with("on_change:"))
        .expect("on_change line")
        + 1;
    let found = problems
        .iter()
        .find(|d| d.message.contains("on_change: rebook"))
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert!(found.file.ends_with("pipelines/shopify-orders.yaml"));
    assert_eq!(found.line, line);
    assert!(
        found.message.contains("no `cancel` operation"),
        "{}",
        found.message
    );
}

#[tokio::test]
async fn an_edit_after_pickup_is_not_rebooked_but_reviewed() {
    let courier = postex().await;
    cancels_with(&courier, serde_json::json!({ "statusCode": "200" })).await;
    let dir = config(&courier, "rebook");
    let app = App::start(&dir).await;
    let shipment = booked(&app).await;
    courier_says(&app, &shipment, "Picked By PostEx").await;
    shipment_at(&app, 0, "picked_up").await;
    post(&app, &moved_order(), "orders/updated", "w-edit").await;
    let letters = review_letters(&app, 1).await;
    assert!(letters[0].contains("after pickup"), "{}", letters[0]);
    assert!(letters[0].contains("recipient.address1"), "{}", letters[0]);
    counted(&app, "edit", "review", 1).await;
    assert_eq!(requests_to(&courier, CANCEL).await, 0);
    assert_eq!(requests_to(&courier, CREATE).await, 1);
    app.stop().await;
}
