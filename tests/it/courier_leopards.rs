//! Contract tests of `connectors/leopards.yaml` against a `wiremock`
//! Leopards that answers as the eCom Merchant API v2 documents: JSON bodies
//! carrying `api_key` and `api_password`, `status: 1` for success and the
//! message in `error` (HTTP 200 either way). The shipped shopify-orders
//! pipeline books on it; the scheduler tracks the parcel to delivered;
//! `waybill accounts test` checks the keys, books, and cancels.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;
use waybill::model::header;
use waybill::store::shipments::Outcome;
use wiremock::matchers::{body_partial_json, header as has_header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "lcs-key-4711";
const API_PASSWORD: &str = "lcs-pa55/word&SECRET";

fn leopards_account(server: &MockServer, password: &str) -> String {
    format!(
        "{{ connector: leopards, base_url: \"{}/api\", credentials: {{ api_key: \"{API_KEY}\", api_password: \"{password}\" }} }}",
        server.uri()
    )
}

fn keys() -> Value {
    json!({ "api_key": API_KEY, "api_password": API_PASSWORD })
}

/// getAllCities with the right keys; anything else is the doc's refusal.
async fn mount_cities(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/getAllCities/format/json/"))
        .and(body_partial_json(keys()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 1, "error": 0,
            "city_list": [
                { "id": 789, "name": "Karachi", "shipment_type": ["overnight", "detain"], "allow_as_origin": true, "allow_as_destination": true },
                { "id": 202, "name": "Lahore", "shipment_type": ["overnight"], "allow_as_origin": true, "allow_as_destination": true }
            ]
        })))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/getAllCities/format/json/"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 0, "error": "Invalid API Key or Password" })),
        )
        .mount(server)
        .await;
}

/// bookPacket as the doc documents it for the sample COD order.
async fn mount_booking(server: &MockServer, track_number: &str) {
    Mock::given(method("POST"))
        .and(path("/api/bookPacket/format/json/"))
        .and(has_header("content-type", "application/json"))
        .and(body_partial_json(keys()))
        .and(body_partial_json(json!({
            "destination_city": 789,
            "origin_city": "self",
            "booked_packet_collect_amount": 5050,
            "booked_packet_weight": 1350,
            "consignment_name_eng": "Ayesha Khan",
            "consignment_phone": "03001234567",
            "shipment_name_eng": "self",
            "shipment_type": "overnight",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 1, "error": 0, "track_number": track_number,
            "slip_link": format!("https://merchantapi.leopardscourier.com/slip/{track_number}")
        })))
        .mount(server)
        .await;
}

fn tracked(track_number: &str, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "status": 1, "error": 0,
        "packet_list": [{
            "track_number": track_number,
            "booked_packet_status": status,
            "activity_date": "2026-11-23",
            "status_remarks": "",
            "booked_packet_collect_amount": "5050",
            "booked_packet_order_id": "#1042",
            "Tracking Detail": [{ "Status": status, "Reciever Name": "", "Activity Date": "2026-11-23", "Reason": "" }]
        }]
    }))
}

#[tokio::test]
async fn a_shopify_order_books_on_leopards_and_is_tracked_to_delivered() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    mount_booking(&server, "KI7501234").await;
    let track = || {
        Mock::given(method("POST"))
            .and(path("/api/trackBookedPacket/format/json/"))
            .and(body_partial_json(keys()))
            .and(body_partial_json(json!({ "track_numbers": "KI7501234" })))
    };
    track()
        .respond_with(tracked("KI7501234", "Shipment Picked"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    track()
        .respond_with(tracked("KI7501234", "Delivered"))
        .mount(&server)
        .await;
    let dir = ConfigDir::with_extra(
        &leopards_account(&server, API_PASSWORD),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\n",
    );
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "lcs-1")
            .await
            .0,
        200
    );
    let shipment = eventually(Duration::from_secs(60), "delivered by polling", || async {
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "KI7501234" && s.status.as_str() == "delivered")
    })
    .await;
    assert_eq!(shipment.courier_account, "courier-main");
    let booking = app
        .backends
        .store
        .bookings(Some(waybill::store::BookingStatus::Booked), 10)
        .await
        .expect("bookings");
    let result = booking[0].result.as_ref().expect("a booking result");
    assert_eq!(
        result.extracted["slip_link"], "https://merchantapi.leopardscourier.com/slip/KI7501234",
        "the printable slip is kept with the booking"
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
    assert_eq!(applied, ["booked", "picked_up", "delivered"]);
    let requests = server.received_requests().await.expect("requests");
    let bookings: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/api/bookPacket/format/json/")
        .collect();
    assert_eq!(bookings.len(), 1, "booked exactly once");
    let body: Value = serde_json::from_slice(&bookings[0].body).expect("a JSON body");
    assert_eq!(body["booked_packet_order_id"], "#1042");
    assert_eq!(body["special_instructions"], "Please call before delivery");
    app.stop().await;
}

#[tokio::test]
async fn a_leopards_refusal_is_a_permanent_dead_letter_whatever_the_http_status() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/bookPacket/format/json/"))
        // Leopards signals in the body: a refusal answered with a 5xx is
        // still a refusal, not an ambiguous outcome for review.
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "status": 0, "error": "consignment_address is required"
        })))
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&leopards_account(&server, API_PASSWORD));
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "lcs-2")
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
            .is_some_and(|m| m.contains("consignment_address is required")),
        "{h:?}"
    );
    let request = h.get(header::ERROR_REQUEST).cloned().unwrap_or_default();
    assert!(
        !request.is_empty() && !request.contains(API_PASSWORD) && !request.contains(API_KEY),
        "the request is kept, its keys redacted: {request}"
    );
    let bookings = server
        .received_requests()
        .await
        .expect("requests")
        .into_iter()
        .filter(|r| r.url.path() == "/api/bookPacket/format/json/")
        .count();
    assert_eq!(bookings, 1, "permanent: not retried");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_the_keys_books_and_cancels_on_leopards() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/bookPacket/format/json/"))
        .and(body_partial_json(keys()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": 1, "error": 0, "track_number": "KI7509999",
            "slip_link": "https://merchantapi.leopardscourier.com/slip/KI7509999"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/cancelBookedPackets/format/json/"))
        .and(body_partial_json(keys()))
        .and(body_partial_json(json!({ "cn_numbers": "KI7509999" })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "status": 1, "error": 0 })))
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&leopards_account(&server, API_PASSWORD));
    assert_eq!(
        waybill_cli(&dir, &["accounts", "test", "courier-main"]),
        "ok\n"
    );
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
        ],
    );
    assert!(
        !text.contains(API_PASSWORD) && !text.contains(API_KEY),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok", "{text}");
    assert!(
        lines[1].starts_with("booked KI7509999 (reference #1042-TEST-"),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"cancelled"), "{text}");
    let cancels = server
        .received_requests()
        .await
        .expect("requests")
        .into_iter()
        .filter(|r| r.url.path() == "/api/cancelBookedPackets/format/json/")
        .count();
    assert_eq!(cancels, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_prints_leopards_own_refusal_of_wrong_keys() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    let dir = ConfigDir::new(&leopards_account(&server, "wr0ng-pa55-SECRET"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["accounts", "test", "courier-main", "--config"])
        .arg(dir.path())
        .output()
        .expect("run waybill");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("Invalid API Key or Password"), "{text}");
    assert!(!text.contains("wr0ng-pa55-SECRET"), "{text}");
}

/// Every Leopards string of courier-domain.md §3.4, webhook short codes
/// included, maps as the reference implies.
#[test]
fn every_leopards_status_string_maps_to_its_canonical_status() {
    use crate::statuses::{assert_maps, shipped};
    use waybill::model::Status::*;
    let leopards = shipped("leopards");
    let table: &[(&str, waybill::model::Status, Option<&str>)] = &[
        ("Pickup Request not Send", Booked, Some("awaiting_pickup")),
        ("Pickup Request Sent", Booked, Some("pickup_requested")),
        ("Consignment Booked", Booked, None),
        ("Drop Off at Express Center", PickedUp, None),
        ("Shipment Picked", PickedUp, None),
        ("Arrived at Station", InTransit, None),
        ("Dispatched", InTransit, None),
        ("Missroute", InTransit, Some("misrouted")),
        ("Assign to Courier", OutForDelivery, None),
        ("Pending", DeliveryFailed, None),
        (
            "Ready for Return",
            Returning,
            Some("awaiting_shipper_advice"),
        ),
        ("Being Return", Returning, None),
        ("Returned to shipper", Returned, None),
        ("Delivered", Delivered, None),
        ("Cancelled", Cancelled, None),
        ("48 Hours Auto Canceled", Cancelled, Some("auto_cancelled")),
        ("In Transit", InTransit, None),
        ("RC", Booked, None),
        ("SP", PickedUp, None),
        ("DP", InTransit, None),
        ("AR", InTransit, None),
        ("AC", OutForDelivery, None),
        ("DV", Delivered, None),
        ("PN1", DeliveryFailed, None),
        ("PN2", DeliveryFailed, None),
        ("RO", Returning, None),
        ("RN1", Returning, Some("return_attempt_failed")),
        ("RN2", Returning, Some("return_attempt_failed")),
        ("NR", Returning, None),
        ("RW", Returned, None),
        ("DW", Returned, None),
        ("RS", Returned, None),
        ("DR", Returned, None),
    ];
    for (raw, status, sub_status) in table {
        assert_maps(&leopards, raw, *status, *sub_status);
    }
}

#[test]
fn an_unlisted_leopards_status_is_unknown() {
    use crate::statuses::{assert_unknown, shipped};
    let leopards = shipped("leopards");
    for raw in ["Teleported", "", "PN3", "Deliver", "Returned"] {
        assert_unknown(leopards.status_of(raw), raw);
    }
}
