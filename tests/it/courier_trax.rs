//! Contract tests of `connectors/trax.yaml` against a `wiremock` Trax
//! (Sonic) that answers as the API doc v2.0 documents: the API key as-is in
//! `Authorization`, JSON bodies, `status: 0` for success and the text in
//! `message`. The shipped shopify-orders pipeline books on it; the
//! scheduler tracks the parcel; its shipment-status webhook delivers it;
//! `waybill accounts test` checks the key, books, fetches the PDF air waybill
//! and cancels.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;
use waybill::model::header;
use waybill::store::shipments::Outcome;
use wiremock::matchers::{
    body_json, body_partial_json, header as has_header, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "sonic-KEY-s3cret";
const CALLBACK_SECRET: &str = "trax-cb-secret";

fn trax_account(server: &MockServer, key: &str) -> String {
    format!(
        "{{ connector: trax, base_url: \"{}/api\", \
         credentials: {{ api_key: \"{key}\", callback_secret: \"{CALLBACK_SECRET}\" }}, \
         settings: {{ pickup_address_id: \"7001\", information_display: \"0\", item_product_type_id: \"24\" }} }}",
        server.uri()
    )
}

/// GET /cities with the key; anything else is refused in the doc's shape.
async fn mount_cities(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/cities"))
        .and(has_header("authorization", API_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 0, "message": "Cities",
            "cities": [
                { "id": 1, "name": "Lahore", "pickup": true, "delivery": true },
                { "id": 202, "name": "Karachi", "pickup": true, "delivery": true }
            ]
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cities"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "status": 1, "message": "Unauthorized: invalid API key" })),
        )
        .mount(server)
        .await;
}

async fn mount_booking(server: &MockServer, tracking: &str) {
    Mock::given(method("POST"))
        .and(path("/api/shipment/book"))
        .and(has_header("authorization", API_KEY))
        .and(has_header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "service_type_id": 1,
            "pickup_address_id": "7001",
            "information_display": "0",
            "consignee_city_id": 202,
            "consignee_name": "Ayesha Khan",
            "consignee_phone_number_1": "03001234567",
            "item_product_type_id": "24",
            "estimated_weight": 1.35,
            "shipping_mode_id": 1,
            "amount": 5050,
            "payment_mode_id": 1,
            "charges_mode_id": 4,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 0, "message": "Shipment has been booked successfully", "tracking number": tracking
        })))
        .mount(server)
        .await;
}

fn current(status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({ "status": 0, "message": "Status", "current_status": status }))
}

async fn applied_statuses(app: &App, key: &waybill::model::BookingKey) -> Vec<String> {
    app.backends
        .shipments
        .history(key)
        .await
        .expect("history")
        .iter()
        .filter(|h| h.outcome == Outcome::Applied)
        .map(|h| h.status.as_str().to_string())
        .collect()
}

#[tokio::test]
async fn a_shopify_order_books_on_trax_and_is_tracked_by_polling() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    mount_booking(&server, "101101000001").await;
    let status = || {
        Mock::given(method("GET"))
            .and(path("/api/shipment/status"))
            .and(has_header("authorization", API_KEY))
            .and(query_param("tracking_number", "101101000001"))
            .and(query_param("type", "0"))
    };
    status()
        .respond_with(current("Shipment - Arrived at Origin"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    status()
        .respond_with(current("Shipment - Delivered"))
        .mount(&server)
        .await;
    let dir = ConfigDir::with_extra(
        &trax_account(&server, API_KEY),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\n",
    );
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "trax-1")
            .await
            .0,
        200
    );
    let shipment = eventually(Duration::from_secs(60), "delivered by polling", || async {
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "101101000001" && s.status.as_str() == "delivered")
    })
    .await;
    assert_eq!(
        applied_statuses(&app, &shipment.key).await,
        ["booked", "in_transit", "delivered"]
    );
    let requests = server.received_requests().await.expect("requests");
    let bookings: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/api/shipment/book")
        .collect();
    assert_eq!(bookings.len(), 1, "booked exactly once");
    let body: Value = serde_json::from_slice(&bookings[0].body).expect("a JSON body");
    assert_eq!(body["order_id"], "#1042", "the shipper reference");
    app.stop().await;
}

#[tokio::test]
async fn trax_webhook_moves_a_booked_shipment() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    mount_booking(&server, "101101000002").await;
    let dir = ConfigDir::new(&trax_account(&server, API_KEY));
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "trax-2")
            .await
            .0,
        200
    );
    let shipment = eventually(Duration::from_secs(30), "booked", || async {
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "101101000002")
    })
    .await;
    let post = |path: String, status: &'static str| {
        let http = app.http.clone();
        let url = app.url(&path);
        async move {
            let body = json!({
                "tracking_number": "101101000002",
                "status": status,
                "date_time": "2026-11-23 14:03:11"
            });
            http.post(url)
                .json(&body)
                .send()
                .await
                .expect("send callback")
                .status()
                .as_u16()
        }
    };
    let good = format!("/callbacks/trax/courier-main/{CALLBACK_SECRET}");
    assert_eq!(
        post(
            "/callbacks/trax/courier-main/wrong".into(),
            "Shipment - Delivered"
        )
        .await,
        401
    );
    for status in ["Shipment - Out for Delivery", "Shipment - Delivered"] {
        assert_eq!(post(good.clone(), status).await, 200, "{status}");
    }
    eventually(Duration::from_secs(30), "delivered by webhook", || async {
        let all = all_shipments(&app).await?;
        all.into_iter()
            .find(|s| s.key == shipment.key && s.status.as_str() == "delivered")
    })
    .await;
    assert_eq!(
        applied_statuses(&app, &shipment.key).await,
        ["booked", "out_for_delivery", "delivered"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_trax_refusal_is_a_permanent_dead_letter_with_its_message() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/shipment/book"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 1, "message": "The order id has already been taken."
        })))
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&trax_account(&server, API_KEY));
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "trax-3")
            .await
            .0,
        200
    );
    let letters = first_dead_letters(&app, "shopify-orders").await;
    let h = &letters[0].message.headers;
    assert_eq!(
        h.get(header::ERROR_CLASS).map(String::as_str),
        Some("permanent")
    );
    assert!(
        h.get(header::ERROR_MESSAGE)
            .is_some_and(|m| m.contains("The order id has already been taken.")),
        "{h:?}"
    );
    let request = h.get(header::ERROR_REQUEST).cloned().unwrap_or_default();
    assert!(
        !request.is_empty() && !request.contains(API_KEY),
        "the request is kept, its key redacted: {request}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_the_key_books_labels_and_cancels_on_trax() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/shipment/book"))
        .and(has_header("authorization", API_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 0, "message": "Shipment has been booked successfully", "tracking number": "101101009999"
        })))
        .mount(&server)
        .await;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend([0u8, 0xff, 0xfe, 0x80, b'\r', b'\n']);
    Mock::given(method("GET"))
        .and(path("/api/shipment/air_waybill"))
        .and(has_header("authorization", API_KEY))
        .and(query_param("tracking_number", "101101009999"))
        .and(query_param("type", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(pdf.clone(), "application/pdf"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/shipment/cancel"))
        .and(has_header("authorization", API_KEY))
        .and(body_json(json!({ "tracking_number": "101101009999" })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 0, "message": "Shipment has been cancelled" })),
        )
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&trax_account(&server, API_KEY));
    assert_eq!(
        waybill_cli(&dir, &["accounts", "test", "courier-main"]),
        "ok\n"
    );
    let label = dir.dir.path().join("label.pdf");
    let order = repo().join("samples/shopify/order-cod.json");
    let text = waybill_cli(
        &dir,
        &[
            "accounts",
            "test",
            "courier-main",
            "--book",
            "--file",
            order.to_str().expect("utf-8 path"),
            "--label-file",
            label.to_str().expect("utf-8 path"),
        ],
    );
    assert!(!text.contains(API_KEY), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok", "{text}");
    assert!(
        lines[1].starts_with("booked 101101009999 (reference #1042-TEST-"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!("label application/pdf, {} bytes", pdf.len())),
        "{text}"
    );
    assert_eq!(lines[3], "cancelled", "{text}");
    assert_eq!(std::fs::read(&label).expect("label written"), pdf);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_prints_trax_own_refusal_of_a_wrong_key() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    let dir = ConfigDir::new(&trax_account(&server, "not-the-KEY"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["accounts", "test", "courier-main", "--config"])
        .arg(dir.path())
        .output()
        .expect("run waybill");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("Unauthorized: invalid API key"), "{text}");
    assert!(!text.contains("not-the-KEY"), "{text}");
}

/// Every Trax string of courier-domain.md §3.4 (the doc's examples, the
/// 2020 status table and the unverified three) maps as the reference implies.
#[test]
fn every_trax_status_string_maps_to_its_canonical_status() {
    use crate::statuses::{assert_maps, shipped};
    use waybill::model::Status::*;
    let trax = shipped("trax");
    let table: &[(&str, waybill::model::Status, Option<&str>)] = &[
        ("Shipment - Booked", Booked, None),
        ("Shipment - Re-Booked", Booked, None),
        ("Shipment - Rider Picked", PickedUp, None),
        (
            "Shipment - Arrival Service Center",
            InTransit,
            Some("at_origin_hub"),
        ),
        (
            "Shipment - Arrived at Origin",
            InTransit,
            Some("at_origin_hub"),
        ),
        ("Shipment - In Transit", InTransit, None),
        ("Shipment - Consolidated", InTransit, None),
        (
            "Shipment - Arrived at Destination",
            InTransit,
            Some("at_destination_hub"),
        ),
        ("Shipment - Misrouted", InTransit, Some("misrouted")),
        (
            "Shipment - Misroute Forwarded",
            InTransit,
            Some("misrouted"),
        ),
        ("Shipment - Dispatched From Warehouse", InTransit, None),
        ("Shipment - Received at Junction", InTransit, None),
        ("Shipment - Onward Forwarded", InTransit, None),
        ("Shipment - Out for Delivery", OutForDelivery, None),
        (
            "Shipment - Rider Exchange",
            OutForDelivery,
            Some("rider_exchange"),
        ),
        ("Shipment - Delivery Unsuccessful", DeliveryFailed, None),
        (
            "Shipment - Not Attempted",
            DeliveryFailed,
            Some("not_attempted"),
        ),
        (
            "Return - Confirmation Pending",
            DeliveryFailed,
            Some("awaiting_shipper_advice"),
        ),
        (
            "Shipment - Re-Attempt",
            DeliveryFailed,
            Some("reattempt_requested"),
        ),
        (
            "Shipment - Re-Attempt Requested",
            DeliveryFailed,
            Some("reattempt_requested"),
        ),
        (
            "Re-Attempt - Requested",
            DeliveryFailed,
            Some("reattempt_requested"),
        ),
        ("Shipment - On Hold", OnHold, None),
        ("Shipment - Multiple Pieces Hold", OnHold, None),
        ("Shipment - Waiting For Consolidation", OnHold, None),
        (
            "Shipment - On Hold for Self Collection",
            OnHold,
            Some("ready_for_collection"),
        ),
        ("Intercept Requested", OnHold, Some("intercepted")),
        ("Intercept Approved", OnHold, Some("intercepted")),
        ("Shipment - Delivered", Delivered, None),
        ("Replacement-Exchanged", Delivered, None),
        ("Replacement - Exchanged", Delivered, None),
        (
            "Shipment - Return Confirm",
            Returning,
            Some("return_confirmed"),
        ),
        ("Return - Confirm", Returning, Some("return_confirmed")),
        ("Return - In Transit", Returning, None),
        ("Return - Arrived at Origin", Returning, None),
        ("Return - Dispatched", Returning, None),
        ("Return - Rider Exchange", Returning, None),
        ("Return - On Hold", Returning, None),
        ("Return Note Shifted", Returning, None),
        (
            "Return - Not Attempted",
            Returning,
            Some("return_attempt_failed"),
        ),
        (
            "Return - Delivery Unsuccessful",
            Returning,
            Some("return_attempt_failed"),
        ),
        (
            "Return Unsuccessful for CX and Sales",
            Returning,
            Some("return_attempt_failed"),
        ),
        ("Shipment - Recalled", Returning, None),
        ("Return - Delivered to Shipper", Returned, None),
        ("Replacement - In Transit", Returning, Some("reverse_leg")),
        (
            "Replacement - Arrived at Origin",
            Returning,
            Some("reverse_leg"),
        ),
        ("Replacement - Dispatched", Returning, Some("reverse_leg")),
        (
            "Replacement - Rider Exchange",
            Returning,
            Some("reverse_leg"),
        ),
        (
            "Replacement - Delivery Unsuccessful",
            Returning,
            Some("reverse_leg"),
        ),
        ("Replacement - Collected", Returning, Some("reverse_leg")),
        (
            "Replacement - Delivered to Shipper",
            Returned,
            Some("reverse_leg"),
        ),
        ("Replacement-Not Collected", Exception, Some("reverse_leg")),
        (
            "Replacement - Not Collected",
            Exception,
            Some("reverse_leg"),
        ),
        ("Shipment - Cancelled", Cancelled, None),
        ("Shipment - Lost", Exception, Some("lost")),
        (
            "Shipment - Non-Service Area",
            Exception,
            Some("non_serviceable"),
        ),
        ("Shipment - Case Closed", Exception, Some("case_closed")),
    ];
    for (raw, status, sub_status) in table {
        assert_maps(&trax, raw, *status, *sub_status);
    }
    // A COD payment status is not a parcel status.
    crate::statuses::assert_unknown(trax.status_of("Payment - Processed"), "Payment - Processed");
}
