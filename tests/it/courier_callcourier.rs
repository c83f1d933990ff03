//! Call Courier (`connectors/callcourier.yaml`) against a `wiremock` Call
//! Courier that follows its web service API document: booking is a GET
//! with every field in the query (the `loginId` among them) and the
//! numeric `DestCityId` from the service's city list; tracking by polling
//! the event array; the CN slip; the check; and every raw status of
//! courier-domain.md §3.4. Call Courier documents no cancel.

use crate::common::*;
use crate::statuses::{assert_maps, shipped};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use waybill::model::Status;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const LOGIN_ID: &str = "KHI-login-S3CRET";

fn callcourier_account(server: &MockServer) -> String {
    format!(
        "{{ connector: callcourier, base_url: \"{}\", credentials: {{ login_id: \"{LOGIN_ID}\" }}, \
         settings: {{ service_type_id: 7, origin: Karachi, shipper_name: Kapra Store, shipper_cell: \"03001112223\", \
         shipper_area: \"12\", shipper_city: Karachi }} }}",
        server.uri()
    )
}

async fn mount_cities(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/GetCityListByService"))
        .and(query_param("serviceID", "7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            { "CityID": 1, "CityName": "Karachi" },
            { "CityID": 2, "CityName": "Lahore" }
        ])))
        .mount(server)
        .await;
}

/// SaveBooking: a CN for the right loginId, a reply without one otherwise.
async fn mount_booking(server: &MockServer, cn: &str) {
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/SaveBooking"))
        .and(query_param("loginId", LOGIN_ID))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "CNNO": cn, "Response": "true" })),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/SaveBooking"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "CNNO": null, "Response": "Invalid Login Id" })),
        )
        .mount(server)
        .await;
}

fn history(events: &[(&str, &str)]) -> ResponseTemplate {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|(status, at)| {
            json!({
                "ConsignmentNo": "10300123456", "TransactionDate": at, "OperationDesc": status,
                "ProcessDescForPortal": status, "ReasonDesc": "", "ReceiverName": "",
                "Relation": "", "OriginCity": "KARACHI", "ConsigneeCity": "KARACHI",
                "HomeBranch": "KHI", "DestBranch": "KHI"
            })
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(events)
}

#[tokio::test]
async fn a_pipeline_books_on_call_courier_with_a_get_and_polls_to_delivered() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    mount_booking(&server, "10300123456").await;
    let track = || {
        Mock::given(method("GET"))
            .and(path("/api/CallCourier/GetTackingHistory"))
            .and(query_param("cn", "10300123456"))
    };
    track()
        .respond_with(history(&[
            ("BOOKED", "2026-12-01"),
            ("OUT for DELIVERY", "2026-12-02"),
        ]))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    track()
        .respond_with(history(&[
            ("BOOKED", "2026-12-01"),
            ("OUT for DELIVERY", "2026-12-02"),
            ("DELIVERED", "2026-12-02"),
        ]))
        .mount(&server)
        .await;
    let dir = ConfigDir::with_extra(
        &callcourier_account(&server),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\n",
    );
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| o["id"] = json!(9_720_000_001u64));
    assert_eq!(app.shopify(&order, "orders/paid", "cc-1").await.0, 200);
    let shipment = eventually(Duration::from_secs(60), "delivered by polling", || async {
        let letters = dead_letters(&app, "shopify-orders").await;
        assert!(letters.is_empty(), "{letters:?}");
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "10300123456" && s.status.as_str() == "delivered")
    })
    .await;
    assert_eq!(shipment.courier, "callcourier");
    let requests = server.received_requests().await.expect("requests");
    let booking = requests
        .iter()
        .find(|r| r.url.path() == "/API/CallCourier/SaveBooking")
        .expect("a booking");
    assert_eq!(booking.method.as_str(), "GET");
    assert!(booking.body.is_empty(), "a GET booking sends no body");
    let query: BTreeMap<String, String> = booking.url.query_pairs().into_owned().collect();
    for (name, value) in [
        ("loginId", LOGIN_ID),
        ("ConsigneeName", "Ayesha Khan"),
        ("ConsigneeRefNo", "#1042"),
        ("ConsigneeCellNo", "03001234567"),
        ("Origin", "Karachi"),
        ("DestCityId", "1"),
        ("ServiceTypeId", "7"),
        ("Weight", "1.35"),
        ("SelOrigin", "Domestic"),
        ("SpecialHandling", "False"),
        ("MyBoxId", "1"),
        ("ShipperName", "Kapra Store"),
        ("ShipperArea", "12"),
    ] {
        assert_eq!(
            query.get(name).map(String::as_str),
            Some(value),
            "{name} in {query:?}"
        );
    }
    assert!(
        query["CodAmount"].parse::<f64>().is_ok_and(|a| a > 0.0),
        "{query:?}"
    );
    let applied: Vec<String> = app
        .backends
        .shipments
        .history(&shipment.key)
        .await
        .expect("history")
        .iter()
        .filter(|h| h.outcome == waybill::store::shipments::Outcome::Applied)
        .map(|h| h.status.as_str().to_string())
        .collect();
    assert_eq!(applied, ["booked", "out_for_delivery", "delivered"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_books_and_fetches_the_slip_on_call_courier() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    mount_booking(&server, "10300999999").await;
    let slip = "<html><body>CN 10300999999 \u{2014} \u{0645}\u{06a9}\u{0627}\u{0646}</body></html>"
        .as_bytes()
        .to_vec();
    Mock::given(method("GET"))
        .and(path("/Booking/AfterSavePublic/10300999999"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(slip.clone(), "text/html"))
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&callcourier_account(&server));
    let (code, text, err) = waybill_cli_result(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!((code, text.as_str()), (0, "ok\n"), "{err}");
    let label = dir.dir.path().join("slip.html");
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
        lines[1].starts_with("booked 10300999999 (reference #1042-TEST-"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!("label text/html, {} bytes", slip.len())),
        "{text}"
    );
    assert_eq!(
        lines[3],
        "connector `callcourier` cannot cancel: cancel the test shipment with the courier"
    );
    assert_eq!(std::fs::read(&label).expect("slip written"), slip);
    assert!(
        !text.contains(LOGIN_ID) && !err.contains(LOGIN_ID),
        "{text}{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn call_courier_refusals_are_printed_in_its_own_words() {
    let server = MockServer::start().await;
    mount_cities(&server).await;
    mount_booking(&server, "10300999999").await;
    let dir = ConfigDir::new(&callcourier_account(&server));
    dir.edit("waybill.yaml", |t| t.replace(LOGIN_ID, "wr0ng-LOGIN"));
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
    assert!(text.contains("error: book: HTTP 200:"), "{text}");
    assert!(text.contains("Invalid Login Id"), "{text}");
    assert!(text.contains("(permanent)"), "{text}");
    assert!(!text.contains("wr0ng-LOGIN"), "{text}");
    // A city Call Courier's list lacks is refused before anything is sent.
    let karachi_missing = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/GetCityListByService"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{ "CityID": 2, "CityName": "Lahore" }])),
        )
        .mount(&karachi_missing)
        .await;
    let dir = ConfigDir::new(&callcourier_account(&karachi_missing));
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
    assert!(text.to_lowercase().contains("karachi"), "{text}");
    let requests = karachi_missing.received_requests().await.expect("requests");
    assert!(
        requests
            .iter()
            .all(|r| r.url.path() != "/API/CallCourier/SaveBooking")
    );
}

#[test]
fn every_call_courier_status_string_maps_to_its_canonical_status() {
    use Status::*;
    let callcourier = shipped("callcourier");
    let table: &[(&str, Status, Option<&str>)] = &[
        ("BOOKED", Booked, None),
        ("CANCELLED", Cancelled, None),
        ("ARRIVED at ORIGIN BRANCH", InTransit, Some("at_origin_hub")),
        ("MOVED to DEST. BRANCH", InTransit, None),
        (
            "REACHED at DEST. BRANCH",
            InTransit,
            Some("at_destination_hub"),
        ),
        ("OUT for DELIVERY", OutForDelivery, None),
        ("DELIVERED", Delivered, None),
        (
            "CONTACTING CONSIGNEE",
            DeliveryFailed,
            Some("consignee_unreachable"),
        ),
        ("UNDELIVERED", DeliveryFailed, None),
        ("MOVED to ORIGIN BRANCH", Returning, None),
        ("REACHED at ORIGIN BRANCH", Returning, None),
        ("OUT for RETURN SUBMISSION", Returning, None),
        ("RETURN SUBMITTED", Returned, None),
    ];
    for (raw, status, sub_status) in table {
        assert_maps(&callcourier, raw, *status, *sub_status);
    }
    // Flow-chart decisions are not statuses.
    for raw in ["Reattempted Required", "Advised to Return"] {
        assert_eq!(callcourier.status_of(raw).status, Unknown, "{raw}");
    }
}
