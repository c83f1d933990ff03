//! Bodies a pipeline cannot read, or could read two ways: an unreadable body
//! is dead-lettered only by the pipeline that takes its account, and a body
//! with a duplicate member name is refused at ingest and, should one reach
//! the bus another way, dead-lettered rather than booked under either id.

use crate::common::*;
use std::time::Duration;
use waybill::model::{Message, header};

/// A second Shopify account, `shopify-other`, with a pipeline of its own
/// (`shopify-other`, dead letters in `dlq.shopify-other`) reading the same
/// `orders.shopify` topic as the shipped `shopify-orders`.
fn two_accounts_one_topic() -> ConfigDir {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("waybill.yaml", |t| {
        t.replace(
            "  courier-main:",
            &format!(
                "  shopify-other: {{ connector: shopify, credentials: {{ webhook_secret: \"{SECRET}\" }} }}\n  courier-main:"
            ),
        )
    });
    let shipped = std::fs::read_to_string(dir.dir.path().join("pipelines/shopify-orders.yaml"))
        .expect("shipped pipeline");
    let other = shipped
        .replace("name: shopify-orders", "name: shopify-other")
        .replace("accounts: [shopify-main]", "accounts: [shopify-other]")
        .replace("dlq.shopify-orders", "dlq.shopify-other");
    assert_ne!(other, shipped);
    std::fs::write(dir.dir.path().join("pipelines/shopify-other.yaml"), other)
        .expect("write pipeline");
    dir
}

/// An `orders.shopify` message for `account` as ingest writes it, but with
/// any body: straight onto the bus, as a producer other than ingest might.
fn store_event(account: &str, key: &str, body: &[u8]) -> Message {
    Message {
        key: key.to_string(),
        headers: [
            (header::ID, uuid::Uuid::new_v4().to_string()),
            (header::SCHEMA, "1".to_string()),
            (header::SOURCE, "shopify".to_string()),
            (header::ACCOUNT, account.to_string()),
            (header::TOPIC, "orders/paid".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        payload: body.to_vec(),
    }
}

/// Waits for a line of `/metrics` that says `wanted`.
async fn metric(app: &App, wanted: &str) {
    eventually(Duration::from_secs(30), wanted, || async {
        app.metrics().await.contains(wanted).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_body_is_dead_lettered_only_by_the_pipeline_taking_its_account() {
    let dir = two_accounts_one_topic();
    let app = App::start(&dir).await;
    let bus = app.backends.bus.clone();
    // One key, so both messages share a partition and each pipeline meets
    // them in this order: once the second is done, so is the first.
    let key = "shopify-main:9100013";
    bus.publish(
        "orders.shopify",
        store_event("shopify-main", key, b"{\"id\": 9100013, not json"),
    )
    .await
    .expect("publish");
    let marker = order_with("order-cod.json", |o| o["id"] = serde_json::json!(9100099));
    bus.publish("orders.shopify", store_event("shopify-other", key, &marker))
        .await
        .expect("publish");

    metric(
        &app,
        "waybill_events_total{pipeline=\"shopify-other\",stage=\"book\",outcome=\"ok\"} 1",
    )
    .await;
    metric(
        &app,
        "waybill_events_total{pipeline=\"shopify-orders\",stage=\"input\",outcome=\"skipped\"} 1",
    )
    .await;
    let own = dead_letters(&app, "shopify-orders").await;
    assert_eq!(own.len(), 1, "the pipeline taking shopify-main");
    assert_eq!(own[0].message.headers[header::ERROR_STAGE], "decode");
    let other = dead_letters(&app, "shopify-other").await;
    assert!(other.is_empty(), "{:?}", other[0].message.headers);
    app.stop().await;
}

/// The COD sample as JSON text with `id` 9100013, and with `member` (a
/// `"name":value` pair) written again just inside the object that
/// `opening` (e.g. `{` or `"shipping_address":{`) starts, after its own.
fn with_member_twice(opening: &str, member: &str) -> Vec<u8> {
    let order = order_with("order-cod.json", |o| o["id"] = serde_json::json!(9100013));
    let text = String::from_utf8(order).expect("utf-8");
    assert!(text.contains(opening), "{opening} in {text}");
    let text = if opening == "{" {
        // At the end of the top-level object, as the probe sent it.
        format!("{},{member}}}", text.strip_suffix('}').expect("object"))
    } else {
        text.replacen(opening, &format!("{opening}{member},"), 1)
    };
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_naming_a_member_twice_at_any_depth_is_refused_at_ingest_and_counted() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let bodies = [
        with_member_twice("{", "\"id\":9100014"),
        with_member_twice("\"shipping_address\":{", "\"city\":\"Lahore\""),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let (status, text) = app
            .shopify(body, "orders/paid", &format!("twice-{i}"))
            .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("appears twice"), "{text}");
    }
    metric(
        &app,
        "waybill_webhooks_received_total{source=\"shopify\",account=\"shopify-main\",outcome=\"duplicate_keys\"} 2",
    )
    .await;
    let enqueued = app
        .backends
        .bus
        .read("orders.shopify", 0, 10_000)
        .await
        .unwrap_or_default();
    assert!(enqueued.is_empty(), "{:?}", enqueued[0].message.key);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_naming_a_member_twice_on_the_bus_is_dead_lettered_not_booked() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let bus = app.backends.bus.clone();
    let key = "shopify-main:9100013";
    for body in [
        with_member_twice("{", "\"id\":9100014"),
        with_member_twice("\"shipping_address\":{", "\"city\":\"Lahore\""),
    ] {
        bus.publish("orders.shopify", store_event("shopify-main", key, &body))
            .await
            .expect("publish");
    }
    let dead = eventually(Duration::from_secs(30), "two dead letters", || async {
        let dead = dead_letters(&app, "shopify-orders").await;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    for letter in &dead {
        let headers = &letter.message.headers;
        assert_eq!(headers[header::ERROR_STAGE], "decode");
        assert_eq!(headers[header::ERROR_CLASS], "permanent");
        assert!(
            headers[header::ERROR_MESSAGE].contains("appears twice"),
            "{headers:?}"
        );
    }
    let metrics = app.metrics().await;
    assert!(!metrics.contains("stage=\"book\""), "{metrics}");
    app.stop().await;
}
