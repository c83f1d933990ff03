//! The shipped pipeline's trigger and field rules, run through the same
//! pure stages the runner uses, and the PostEx request they lead to.

use crate::common::*;
use serde_json::{Value, json};
use waybill::config::Config;
use waybill::model::{ErrorClass, Headers};
use waybill::stages::{self, Event, Plan, Planned};

fn config() -> (ConfigDir, Config) {
    let dir = ConfigDir::new(
        "{ connector: postex, credentials: { token: \"tok-secret\" }, base_url: \"http://127.0.0.1:9/api\" }",
    );
    let config = dir.load();
    (dir, config)
}

fn plan(config: &Config, topic: &str, order: &[u8]) -> Planned {
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.name == "shopify-orders")
        .expect("shipped pipeline");
    let event = Event {
        topic: topic.into(),
        account: "shopify-main".into(),
        source: "shopify".into(),
        headers: Headers::new(),
    };
    stages::plan(
        pipeline,
        &config.accounts,
        &event,
        serde_json::from_slice(order).expect("json"),
    )
}

fn books(planned: &Planned) -> bool {
    matches!(planned.outcome, Ok(Plan::Book { .. }))
}

/// The PostEx body the planned shipment would be sent as.
fn postex_body(config: &Config, planned: &Planned) -> Value {
    let Ok(Plan::Book { shipment, route }) = &planned.outcome else {
        panic!("not booked: {planned:?}")
    };
    let account = &config.accounts[route];
    let connector = &config.connectors[&account.connector];
    let engine =
        waybill::connector::Engine::new(reqwest::Client::new(), "http://127.0.0.1:8080".into());
    let request = engine
        .prepare_book(
            connector,
            account,
            &serde_json::to_value(shipment).expect("json"),
        )
        .expect("request");
    let shown = request.redacted();
    assert!(
        !shown.to_string().contains("tok-secret"),
        "secret must be redacted: {shown}"
    );
    request.body.expect("body")
}

#[test]
fn trigger_rules() {
    let (_dir, config) = config();
    let cod = sample("order-cod.json");
    let prepaid = sample("order-prepaid.json");
    assert!(
        books(&plan(&config, "orders/create", &cod)),
        "COD books on create"
    );
    assert!(
        books(&plan(&config, "orders/updated", &cod)),
        "COD books on update"
    );
    assert!(
        books(&plan(&config, "orders/paid", &cod)),
        "anything paid books"
    );
    assert!(
        books(&plan(&config, "orders/paid", &prepaid)),
        "prepaid books when paid"
    );
    assert!(
        !plan(&config, "orders/create", &prepaid).triggered,
        "prepaid does not book on create"
    );
    assert!(
        books(&plan(&config, "orders/updated", &prepaid)),
        "a paid order's updates are taken, so edits after booking are seen"
    );
    assert!(!plan(&config, "orders/cancelled", &cod).triggered);
    // Cancellations reach the booking step as cancelled shipments, which
    // are never booked and cancel a booking made before.
    let cancelled = order_with("order-cod.json", |o| {
        o["cancelled_at"] = json!("2026-11-20T10:00:00+05:00");
        o["shipping_address"] = json!(null);
    });
    for topic in ["orders/cancelled", "orders/updated", "orders/paid"] {
        let planned = plan(&config, topic, &cancelled);
        assert!(
            matches!(&planned.outcome, Ok(Plan::Book { shipment, .. }) if shipment.cancelled),
            "a cancelled order reaches the booking step as cancelled, unvalidated ({topic}): {:?}",
            planned.outcome
        );
    }
    let unpaid = order_with("order-prepaid.json", |o| {
        o["financial_status"] = json!("pending")
    });
    assert!(
        !plan(&config, "orders/create", &unpaid).triggered,
        "unpaid non-COD never books"
    );
    assert!(!plan(&config, "orders/updated", &unpaid).triggered);
}

#[test]
fn cod_amount_is_exact_and_prepaid_is_zero() {
    let (_dir, config) = config();
    let cod = order_with("order-cod.json", |o| {
        o["total_outstanding"] = json!("12345.67");
        o["current_total_price"] = json!("99999.99");
    });
    let planned = plan(&config, "orders/create", &cod);
    let shipment = planned.shipment.clone().expect("shipment");
    assert_eq!(shipment.payment, "cod");
    assert_eq!(shipment.cod_amount.to_string(), "12345.67");
    assert_eq!(
        postex_body(&config, &planned)["invoicePayment"],
        json!(12345.67)
    );

    let fallback = order_with("order-cod.json", |o| {
        o.as_object_mut()
            .expect("object")
            .remove("total_outstanding");
        o["current_total_price"] = json!("4200.10");
    });
    let shipment = plan(&config, "orders/create", &fallback)
        .shipment
        .expect("shipment");
    assert_eq!(shipment.cod_amount.to_string(), "4200.10");

    let prepaid = plan(&config, "orders/paid", &sample("order-prepaid.json"))
        .shipment
        .expect("shipment");
    assert_eq!(prepaid.payment, "prepaid");
    assert!(prepaid.cod_amount.is_zero());
}

#[test]
fn phone_falls_back_and_is_normalised_for_postex() {
    let (_dir, config) = config();
    let set = |shipping: Value, billing: Value, customer: Value, order: Value| {
        order_with("order-cod.json", |o| {
            o["shipping_address"]["phone"] = shipping;
            o["billing_address"]["phone"] = billing;
            o["customer"]["phone"] = customer;
            o["phone"] = order;
        })
    };
    let cases = [
        (
            set(
                json!("+92 300 1234567"),
                json!("0311-7654321"),
                json!(null),
                json!(null),
            ),
            "03001234567",
        ),
        (
            set(
                json!(null),
                json!("0311-7654321"),
                json!("+923215555555"),
                json!(null),
            ),
            "03117654321",
        ),
        (
            set(
                json!(null),
                json!(null),
                json!("+923215555555"),
                json!(null),
            ),
            "03215555555",
        ),
        (
            set(json!(null), json!(null), json!(null), json!("0333 4444444")),
            "03334444444",
        ),
    ];
    for (order, expected) in cases {
        let planned = plan(&config, "orders/create", &order);
        assert_eq!(
            postex_body(&config, &planned)["customerPhone"],
            json!(expected)
        );
    }
    let none = set(json!(null), json!(null), json!(null), json!(null));
    let planned = plan(&config, "orders/create", &none);
    let err = planned.outcome.expect_err("no phone is not booked");
    assert_eq!(err.class, ErrorClass::NeedsReview);
    assert!(err.message.contains("phone"), "{}", err.message);
    let sample_no_phone = plan(&config, "orders/create", &sample("order-no-phone.json"));
    assert!(sample_no_phone.outcome.is_err());
}

#[test]
fn missing_shipping_address_needs_review() {
    let (_dir, config) = config();
    let order = order_with("order-cod.json", |o| o["shipping_address"] = json!(null));
    let err = plan(&config, "orders/create", &order)
        .outcome
        .expect_err("not booked");
    assert_eq!(err.class, ErrorClass::NeedsReview);
    assert!(err.message.contains("address"), "{}", err.message);
}

#[test]
fn ids_reference_and_names_pass_through_exactly() {
    let (_dir, config) = config();
    let name = "Ali \"The Rock\" {{ 7*7 }} {% raw %} علی خان";
    let address = "House #12, {x} Block \"C\" — گلشن اقبال";
    let order = order_with("order-cod.json", |o| {
        o["id"] = json!(9007199254740993u64);
        o["name"] = json!("#1001");
        o["shipping_address"]["name"] = json!(name);
        o["shipping_address"]["address1"] = json!(address);
    });
    let planned = plan(&config, "orders/create", &order);
    let shipment = planned.shipment.clone().expect("shipment");
    assert_eq!(shipment.order_id, "9007199254740993");
    assert_eq!(shipment.reference, "#1001");
    assert_eq!(shipment.recipient.name.as_deref(), Some(name));
    assert_eq!(shipment.recipient.address1.as_deref(), Some(address));
    let body = postex_body(&config, &planned);
    assert_eq!(body["orderRefNumber"], json!("#1001"));
    assert_eq!(body["customerName"], json!(name));
    assert!(
        body["deliveryAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with(address)),
        "{body}"
    );
}
