//! BlueEx (`connectors/blueex.yaml`) against a `wiremock` BlueEx that
//! follows the json_v3 API as the reference knows it: HTTP Basic on every
//! call, `status: "1"` for success, the 3-letter city code from the city
//! list, status and void by `consignment_no`, and the credential check.
//! No BlueEx status string is known, so every status is `unknown`.

use crate::common::*;
use crate::statuses::shipped;
use base64::Engine as _;
use serde_json::{Value, json};
use std::time::Duration;
use waybill::model::Status;
use waybill::store::shipments::Outcome;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PASSWORD: &str = "blueex-pa55:W0RD";

fn blueex_account(server: &MockServer, password: &str) -> String {
    format!(
        "{{ connector: blueex, base_url: \"{}\", credentials: {{ account_no: KHI-00000, password: \"{password}\" }}, \
         settings: {{ shipper_name: Kapra Store, shipper_email: ops@kapra.example.pk, shipper_contact: \"03001112223\", \
         shipper_address: \"Plot 7, SITE Area\", shipper_city: KHI, service_code: BE }} }}",
        server.uri()
    )
}

fn basic(password: &str) -> String {
    let pair = format!("KHI-00000:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Every path answers the right Basic pair as BlueEx would, and refuses
/// any other with its `status: "0"`.
async fn mount_blueex(server: &MockServer, cn: &str) {
    let auth = basic(PASSWORD);
    Mock::given(method("POST"))
        .and(path("/cities/get_cities.php"))
        .and(header("authorization", auth.as_str()))
        .and(body_partial_json(json!({ "country_code": "PK" })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "1",
            "response": [ { "city_code": "KHI", "city_name": "Karachi" }, { "city_code": "LHE", "city_name": "Lahore" } ]
        })))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/shipment/create_shipment.php"))
        .and(header("authorization", auth.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "status": "1", "message": "Shipment created", "consignment_no": cn }),
        ))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/cancel/void.php"))
        .and(header("authorization", auth.as_str()))
        .and(body_partial_json(json!({ "consignment_no": cn })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": "1", "message": "Consignment voided" })),
        )
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": "0", "message": "Invalid account or password" })),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_pipeline_books_on_blueex_with_basic_auth_and_its_city_code() {
    let server = MockServer::start().await;
    // Mounted first: the status call, answered with a string no source names.
    Mock::given(method("POST"))
        .and(path("/status/get_status.php"))
        .and(header("authorization", basic(PASSWORD).as_str()))
        .and(body_partial_json(json!({ "consignment_no": "5012345678" })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": "1", "response": "Shipment Received" })),
        )
        .mount(&server)
        .await;
    mount_blueex(&server, "5012345678").await;
    let dir = ConfigDir::with_extra(
        &blueex_account(&server, PASSWORD),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\n",
    );
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| o["id"] = json!(9_730_000_001u64));
    assert_eq!(app.shopify(&order, "orders/paid", "bx-1").await.0, 200);
    let shipment = eventually(Duration::from_secs(30), "a booking", || async {
        let letters = dead_letters(&app, "shopify-orders").await;
        assert!(letters.is_empty(), "{letters:?}");
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "5012345678")
    })
    .await;
    assert_eq!(shipment.courier, "blueex");
    let requests = server.received_requests().await.expect("requests");
    let booking = requests
        .iter()
        .find(|r| r.url.path() == "/shipment/create_shipment.php")
        .expect("a booking");
    let body: Value = serde_json::from_slice(&booking.body).expect("a JSON body");
    for (field, value) in [
        ("customer_name", json!("Ayesha Khan")),
        ("customer_contact", json!("03001234567")),
        ("customer_city", json!("KHI")),
        ("customer_country", json!("PK")),
        ("payment_type", json!("COD")),
        ("service_code", json!("BE")),
        ("order_refernce_code", json!("#1042")),
        ("shipper_city", json!("KHI")),
        ("total_order_weight", json!(1.35)),
    ] {
        assert_eq!(body[field], value, "{field} in {body}");
    }
    assert!(
        body["products_detail"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{body}"
    );
    // Polled: the status is recorded, and moves nothing.
    let history = eventually(Duration::from_secs(30), "a polled status", || async {
        let history = app.backends.shipments.history(&shipment.key).await.ok()?;
        history
            .iter()
            .any(|h| h.raw.as_deref() == Some("Shipment Received"))
            .then_some(history)
    })
    .await;
    let polled = history
        .iter()
        .find(|h| h.raw.as_deref() == Some("Shipment Received"))
        .expect("polled");
    assert_eq!(
        (polled.status, polled.outcome),
        (Status::Unknown, Outcome::Unknown)
    );
    let now = all_shipments(&app)
        .await
        .and_then(|all| all.into_iter().find(|s| s.key == shipment.key))
        .expect("shipment");
    assert_eq!(now.status.as_str(), "booked");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_books_and_voids_on_blueex() {
    let server = MockServer::start().await;
    mount_blueex(&server, "5012349999").await;
    let dir = ConfigDir::new(&blueex_account(&server, PASSWORD));
    let (code, text, err) = waybill_cli_result(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!((code, text.as_str()), (0, "ok\n"), "{err}");
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
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok", "{text}");
    assert!(
        lines[1].starts_with("booked 5012349999 (reference #1042-TEST-"),
        "{text}"
    );
    assert_eq!(lines[2], "cancelled", "{text}");
    assert!(
        !text.contains(PASSWORD) && !err.contains(PASSWORD),
        "{text}{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blueex_refusals_are_printed_in_its_own_words() {
    let server = MockServer::start().await;
    mount_blueex(&server, "5012349999").await;
    let dir = ConfigDir::new(&blueex_account(&server, "wr0ng-PASS"));
    let (code, text, _) = waybill_cli_result(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text,
        "error: cities: HTTP 200: Invalid account or password (permanent)\n"
    );
    // A refused booking, with the right credentials.
    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/shipment/create_shipment.php"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": "0", "message": "Invalid service code" })),
        )
        .mount(&refusing)
        .await;
    mount_blueex(&refusing, "5012349999").await;
    let dir = ConfigDir::new(&blueex_account(&refusing, PASSWORD));
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
        text.contains("error: book: HTTP 200: Invalid service code (permanent)"),
        "{text}"
    );
}

#[test]
fn blueex_has_no_known_status_so_every_status_is_unknown() {
    let blueex = shipped("blueex");
    // courier-domain.md §3.4: "BlueEx: no strings found — everything maps
    // to `unknown` until observed."
    for raw in ["Delivered", "Booked", "In Transit", "Returned", "1"] {
        let found = blueex.status_of(raw);
        assert_eq!(found.status, Status::Unknown, "{raw}");
        assert!(found.is_unmatched(), "{raw}");
    }
}
