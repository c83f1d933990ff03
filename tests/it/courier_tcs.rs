//! TCS (`connectors/tcs.yaml`) against a `wiremock` TCS that follows the
//! e-com API of TCS's API User Guide v1.0: the bearer exchange (and its
//! refresh after a 401), a JSON booking carrying the e-com `accesstoken`,
//! tracking by polling, the PDF label, cancel, the credential check, and
//! every raw status of courier-domain.md §3.4.

use crate::common::*;
use crate::statuses::{assert_maps, shipped};
use serde_json::{Value, json};
use std::time::Duration;
use waybill::model::Status;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLIENT_SECRET: &str = "tcs-client-S3CRET";
const ACCESS_TOKEN: &str = "ecom-access-T0KEN";
const BEARER: &str = "bearer-ONE";

fn tcs_account(server: &MockServer, client_secret: &str) -> String {
    format!(
        "{{ connector: tcs, base_url: \"{}\", credentials: {{ client_id: tcs-client, client_secret: \"{client_secret}\", \
         access_token: \"{ACCESS_TOKEN}\", tcs_account: \"123456\", cost_center_code: \"01\" }}, \
         settings: {{ shipper_name: Kapra Store, shipper_address: \"Plot 7, SITE Area\", shipper_city: Karachi, shipper_mobile: \"03001112223\" }} }}",
        server.uri()
    )
}

/// The bearer exchange: `bearer` for the right client secret, TCS's
/// refusal otherwise.
async fn mount_token(server: &MockServer, bearer: &str, times: Option<u64>) {
    let mock = Mock::given(method("GET"))
        .and(path("/auth/api/auth"))
        .and(query_param("clientid", "tcs-client"))
        .and(query_param("clientsecret", CLIENT_SECRET))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message": "success", "result": { "accessToken": bearer, "expiry": "2026-12-04 23:59:59" }
        })));
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

async fn mount_refused_token(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/auth/api/auth"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "message": "Invalid client credentials" })),
        )
        .mount(server)
        .await;
}

async fn mount_booking(server: &MockServer, bearer: &str, cn: &str) {
    Mock::given(method("POST"))
        .and(path("/ecom/api/booking/create"))
        .and(header("authorization", format!("Bearer {bearer}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "response": "OK", "consignmentNo": cn, "code": "200", "status": "success", "message": "Booking created"
        })))
        .mount(server)
        .await;
}

fn tracked(status: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "message": "SUCCESS",
        "shipmentinfo": [ { "consignmentno": "779911223344", "origin": "KARACHI", "destination": "KARACHI" } ],
        "deliveryinfo": [ { "status": status, "code": code, "datetime": "2026-12-02 14:20:00", "recievedby": "" } ],
        "checkpoints": [ { "status": status, "datetime": "2026-12-02 14:20:00" },
                         { "status": "Shipment Booked", "datetime": "2026-12-01 09:00:00" } ],
        "shipmentsummary": ""
    }))
}

fn sent_json(request: &wiremock::Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

#[tokio::test]
async fn a_pipeline_books_on_tcs_with_its_bearer_and_polls_to_delivered() {
    let server = MockServer::start().await;
    mount_token(&server, BEARER, None).await;
    mount_booking(&server, BEARER, "779911223344").await;
    let track = || {
        Mock::given(method("GET"))
            .and(path("/tracking/api/Tracking/GetDynamicTrackDetail"))
            .and(query_param("consignee", "779911223344"))
            .and(header("authorization", format!("Bearer {BEARER}").as_str()))
    };
    track()
        .respond_with(tracked("Out For Delivery", ""))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    track()
        .respond_with(tracked("Shipment Delivered", "OK"))
        .mount(&server)
        .await;
    let dir = ConfigDir::with_extra(
        &tcs_account(&server, CLIENT_SECRET),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\n",
    );
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| o["id"] = json!(9_710_000_001u64));
    assert_eq!(app.shopify(&order, "orders/paid", "tcs-1").await.0, 200);
    let shipment = eventually(Duration::from_secs(60), "delivered by polling", || async {
        let letters = dead_letters(&app, "shopify-orders").await;
        assert!(letters.is_empty(), "{letters:?}");
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "779911223344" && s.status.as_str() == "delivered")
    })
    .await;
    assert_eq!(shipment.courier, "tcs");
    let requests = server.received_requests().await.expect("requests");
    let booking = requests
        .iter()
        .find(|r| r.url.path() == "/ecom/api/booking/create")
        .expect("a booking");
    assert_eq!(
        booking
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = sent_json(booking);
    assert_eq!(body["accesstoken"], ACCESS_TOKEN);
    assert_eq!(body["shipperinfo"]["tcsaccount"], "123456");
    assert_eq!(body["shipperinfo"]["cityname"], "Karachi");
    assert_eq!(body["consigneeinfo"]["firstname"], "Ayesha Khan");
    assert_eq!(body["consigneeinfo"]["cityname"], "Karachi");
    assert_eq!(body["consigneeinfo"]["mobile"], "03001234567");
    assert_eq!(body["shipmentinfo"]["costcentercode"], "01");
    assert_eq!(body["shipmentinfo"]["referenceno"], "#1042");
    assert_eq!(body["shipmentinfo"]["servicecode"], "O");
    assert_eq!(body["shipmentinfo"]["weightinkg"], json!(1.35));
    assert!(body["shipmentinfo"]["codamount"].is_number(), "{body}");
    assert!(
        body["shipmentinfo"]["skus"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    // One exchange serves the booking and every poll.
    let exchanges = requests
        .iter()
        .filter(|r| r.url.path() == "/auth/api/auth")
        .count();
    assert_eq!(exchanges, 1);
    let history = app
        .backends
        .shipments
        .history(&shipment.key)
        .await
        .expect("history");
    let delivered = history.last().expect("history");
    assert_eq!(
        (delivered.raw.as_deref(), delivered.code.as_deref()),
        (Some("Shipment Delivered"), Some("OK"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_fetches_a_new_bearer_and_the_booking_is_sent_once_more() {
    let server = MockServer::start().await;
    mount_token(&server, "bearer-STALE", Some(1)).await;
    mount_token(&server, "bearer-FRESH", None).await;
    Mock::given(method("POST"))
        .and(path("/ecom/api/booking/create"))
        .and(header("authorization", "Bearer bearer-STALE"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({ "message": "Token expired" })),
        )
        .mount(&server)
        .await;
    mount_booking(&server, "bearer-FRESH", "779911220001").await;
    // The check is not the test here: cities answers for either bearer.
    Mock::given(method("GET"))
        .and(path("/ecom/api/setup/citylistbycountry"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "data": [ { "citycode": "KHI", "cityname": "KARACHI" } ] })),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ecom/api/booking/cancel"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "message": "SUCCESS" })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ecom/api/print/label"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(b"%PDF-1.4\n".to_vec(), "application/pdf"),
        )
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&tcs_account(&server, CLIENT_SECRET));
    let order = repo().join("samples/shopify/order-cod.json");
    let (code, text, err) = waybill_cli_result(
        &dir,
        &[
            "accounts",
            "test",
            "courier-main",
            "--book",
            "--file",
            order.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains("booked 779911220001 (reference #1042-TEST-"),
        "{text}"
    );
    let requests = server.received_requests().await.expect("requests");
    let bookings: Vec<&wiremock::Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/ecom/api/booking/create")
        .collect();
    let bearers: Vec<&str> = bookings
        .iter()
        .filter_map(|r| r.headers.get("authorization").and_then(|v| v.to_str().ok()))
        .collect();
    assert_eq!(bearers, ["Bearer bearer-STALE", "Bearer bearer-FRESH"]);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/auth/api/auth")
            .count(),
        2
    );
    for secret in [CLIENT_SECRET, ACCESS_TOKEN, "bearer-STALE", "bearer-FRESH"] {
        assert!(
            !text.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_books_labels_and_cancels_on_tcs() {
    let server = MockServer::start().await;
    mount_token(&server, BEARER, None).await;
    mount_booking(&server, BEARER, "779911225555").await;
    Mock::given(method("GET"))
        .and(path("/ecom/api/setup/citylistbycountry"))
        .and(query_param("countrycode", "PK"))
        .and(header("authorization", format!("Bearer {BEARER}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [ { "citycode": "KHI", "cityname": "KARACHI" }, { "citycode": "LHE", "cityname": "LAHORE" } ]
        })))
        .mount(&server)
        .await;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend([0u8, 0xff, 0xfe, 0x80, b'\n']);
    Mock::given(method("GET"))
        .and(path("/ecom/api/print/label"))
        .and(query_param("consignmentno", "779911225555"))
        .and(query_param("accesstoken", ACCESS_TOKEN))
        .and(header("authorization", format!("Bearer {BEARER}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(pdf.clone(), "application/pdf"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ecom/api/booking/cancel"))
        .and(header("authorization", format!("Bearer {BEARER}").as_str()))
        .respond_with(|request: &wiremock::Request| {
            let sent = sent_json(request);
            let known =
                sent["consignmentNumber"] == "779911225555" && sent["accesstoken"] == ACCESS_TOKEN;
            ResponseTemplate::new(200).set_body_json(json!({
                "message": if known { "SUCCESS" } else { "Failure: No Record Founds" }
            }))
        })
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&tcs_account(&server, CLIENT_SECRET));
    let (code, text, err) = waybill_cli_result(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!((code, text.as_str()), (0, "ok\n"), "{err}");
    let label = dir.dir.path().join("label.pdf");
    let order = repo().join("samples/shopify/order-cod.json");
    let (code, text, err) = waybill_cli_result(
        &dir,
        &[
            "accounts",
            "test",
            "courier-main",
            "--book",
            "--file",
            order.to_str().unwrap(),
            "--label-file",
            label.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok", "{text}");
    assert!(
        lines[1].starts_with("booked 779911225555 (reference #1042-TEST-"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("label application/pdf, 14 bytes"),
        "{text}"
    );
    assert_eq!(lines[3], "cancelled", "{text}");
    assert_eq!(std::fs::read(&label).expect("label written"), pdf);
    for secret in [CLIENT_SECRET, ACCESS_TOKEN, BEARER] {
        assert!(
            !text.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tcs_refusals_are_printed_in_its_own_words() {
    let server = MockServer::start().await;
    mount_refused_token(&server).await;
    let dir = ConfigDir::new(&tcs_account(&server, "not-the-S3CRET"));
    let (code, text, _) = waybill_cli_result(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("error: token: HTTP 401: Invalid client credentials"),
        "{text}"
    );
    assert!(!text.contains("not-the-S3CRET"), "{text}");

    // A booking refused inside a 200, and a cancel of a CN TCS does not know.
    let server = MockServer::start().await;
    mount_token(&server, BEARER, None).await;
    Mock::given(method("POST"))
        .and(path("/ecom/api/booking/create"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "response": "", "consignmentNo": null, "code": "400", "status": "fail", "message": "Invalid Cost Center Code"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ecom/api/setup/citylistbycountry"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "data": [ { "citycode": "KHI", "cityname": "KARACHI" } ] })),
        )
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&tcs_account(&server, CLIENT_SECRET));
    let order = repo().join("samples/shopify/order-cod.json");
    let (code, text, _) = waybill_cli_result(
        &dir,
        &[
            "accounts",
            "test",
            "courier-main",
            "--book",
            "--file",
            order.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("error: book: HTTP 200: Invalid Cost Center Code (permanent)"),
        "{text}"
    );
}

#[test]
fn every_tcs_status_string_maps_to_its_canonical_status() {
    use Status::*;
    let tcs = shipped("tcs");
    let delayed = Some("delayed");
    let table: &[(&str, Status, Option<&str>)] = &[
        ("Shipment Booked", Booked, None),
        ("Shipment Picked Up", PickedUp, None),
        ("Arrived at TCS Facility", InTransit, None),
        ("Departed From TCS Facility", InTransit, None),
        ("Departed From Origin", InTransit, None),
        ("In Transit", InTransit, None),
        ("Scheduled for delivery", InTransit, None),
        ("DBC", InTransit, delayed),
        ("DFC", InTransit, delayed),
        ("DAE", InTransit, delayed),
        ("DFM", InTransit, delayed),
        ("Delay Beyond Our Control", InTransit, delayed),
        ("Delay due to Flight Cancelled", InTransit, delayed),
        ("Delay due To Airline Handling Error", InTransit, delayed),
        ("Delay due To Force Majeure", InTransit, delayed),
        ("Out For Delivery", OutForDelivery, None),
        ("Courier out for delivery", OutForDelivery, None),
        (
            "Undelivered Due To Incorrect Address",
            DeliveryFailed,
            Some("address_issue"),
        ),
        (
            "Awaiting Receiver Collection",
            OnHold,
            Some("ready_for_collection"),
        ),
        ("SC", OnHold, Some("ready_for_collection")),
        ("Shipment Delivered", Delivered, None),
        ("Delivered", Delivered, None),
        ("OK", Delivered, None),
        ("Return In Process", Returning, None),
        ("Return To Origin", Returned, None),
        ("RO", Returned, None),
        ("Return to Shipper", Returned, None),
    ];
    for (raw, status, sub_status) in table {
        assert_maps(&tcs, raw, *status, *sub_status);
    }
    // Other `Undelivered …` statuses fail the attempt, their cause the reason.
    let found = tcs.status_of("Undelivered  Consignee Not Available");
    assert_eq!(found.status, DeliveryFailed);
    assert_eq!(found.reason.as_deref(), Some("Consignee Not Available"));
    let found = tcs.status_of("Shipment teleported");
    assert_eq!(found.status, Unknown);
    assert!(found.is_unmatched());
}
