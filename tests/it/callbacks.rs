//! Courier status callbacks: answers in DESIGN §8 order, events on
//! `tracking.<connector>` with their times in UTC, several events in one
//! body, redeliveries, and a bus that cannot take them.

use crate::common::*;
use async_trait::async_trait;
use std::sync::Arc;
use waybill::connector::CallbackVerify;
use waybill::model::{Message, Record, TrackingEvent, Via};
use waybill::sources::callback;
use waybill::sources::enqueue::{DeliveryId, Enqueue, EnqueueError, Enqueued};
use waybill::sources::{Ingest, webhook};
use waybill::telemetry::Metrics;

const CALLBACK_SECRET: &str = "cb-secret";

fn postex_account() -> String {
    format!(
        "{{ connector: postex, credentials: {{ token: \"tok\", callback_secret: \"{CALLBACK_SECRET}\" }} }}"
    )
}

/// A PostEx callback as public merchant code receives it.
fn postex_body(tracking: &str, status: &str, time: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "trackingNumber": tracking,
        "orderReferenceNumber": "#1001",
        "statusUpdateDatetime": time,
        "orderStatus": status,
    }))
    .expect("json")
}

async fn post(app: &App, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = app.http.post(app.url(path)).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send callback");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Every event on `topic`, with the record it came in.
async fn events(app: &App, topic: &str) -> Vec<(Record, TrackingEvent)> {
    let records = app
        .backends
        .bus
        .read(topic, 0, 10_000)
        .await
        .unwrap_or_default();
    records
        .into_iter()
        .map(|record| {
            let event = serde_json::from_slice(&record.message.payload).expect("a tracking event");
            (record, event)
        })
        .collect()
}

fn metric_line(connector: &str, outcome: &str, count: u32) -> String {
    format!(
        "waybill_callbacks_received_total{{connector=\"{connector}\",account=\"courier-main\",outcome=\"{outcome}\"}} {count}"
    )
}

#[tokio::test]
async fn postex_callbacks_answer_in_the_documented_order() {
    let dir = ConfigDir::new(&postex_account());
    let app = App::start(&dir).await;
    let good = format!("/callbacks/postex/courier-main/{CALLBACK_SECRET}");
    let body = postex_body("CX-1001", "Delivered", "2026-05-12 14:03:11");
    let huge = vec![b'x'; 2 * 1024 * 1024];

    // Unknown account, another connector's path, a store account: 404,
    // even with a huge body.
    for path in [
        format!("/callbacks/postex/nope/{CALLBACK_SECRET}"),
        format!("/callbacks/sandbox/courier-main/{CALLBACK_SECRET}"),
        format!("/callbacks/shopify/shopify-main/{CALLBACK_SECRET}"),
        "/callbacks/postex".to_string(),
    ] {
        assert_eq!(post(&app, &path, &huge, &[]).await.0, 404, "{path}");
    }
    // Too large: 413, before the secret is looked at.
    assert_eq!(post(&app, &good, &huge, &[]).await.0, 413);
    assert_eq!(
        post(&app, "/callbacks/postex/courier-main/wrong", &huge, &[])
            .await
            .0,
        413
    );
    // A wrong or missing secret: 401.
    for path in [
        "/callbacks/postex/courier-main/wrong",
        "/callbacks/postex/courier-main/cb-secre",
        "/callbacks/postex/courier-main/cb-secret%20",
        "/callbacks/postex/courier-main",
    ] {
        assert_eq!(post(&app, path, &body, &[]).await.0, 401, "{path}");
    }
    // Authentic but unusable: 400.
    for bad in [
        b"{not json".to_vec(),
        br#"{"trackingNumber":"CX-1","orderStatus":"Delivered","orderStatus":"Returned"}"#.to_vec(),
        b"{\"trackingNumber\":\"CX-1\",\"orderStatus\":\"\xff\"}".to_vec(),
        br#"{"orderStatus":"Delivered"}"#.to_vec(),
        br#"{"trackingNumber":"  ","orderStatus":"Delivered"}"#.to_vec(),
        br#"{"trackingNumber":"CX-1"}"#.to_vec(),
        br#"{"trackingNumber":"CX-1","orderStatus":{"a":1}}"#.to_vec(),
        postex_body("CX-1", "Delivered", "12/05/2026 2pm"),
        b"[]".to_vec(),
    ] {
        let (status, text) = post(&app, &good, &bad, &[]).await;
        assert_eq!(status, 400, "{}: {text}", String::from_utf8_lossy(&bad));
    }
    assert!(
        events(&app, "tracking.postex").await.is_empty(),
        "nothing refused may be enqueued"
    );

    // Accepted: one event, its time from Pakistan time to UTC.
    let (status, text) = post(&app, &good, &body, &[]).await;
    assert_eq!(status, 200, "{text}");
    let found = events(&app, "tracking.postex").await;
    assert_eq!(found.len(), 1);
    let (record, event) = &found[0];
    assert_eq!(record.message.key, "courier-main:CX-1001");
    let headers = &record.message.headers;
    assert_eq!(headers["waybill-source"], "postex");
    assert_eq!(headers["waybill-account"], "courier-main");
    assert_eq!(headers["waybill-schema"], "1");
    assert!(uuid::Uuid::parse_str(&headers["waybill-id"]).is_ok());
    assert_eq!(headers["waybill-received-at"], event.received_at);
    assert_eq!(event.connector, "postex");
    assert_eq!(event.account, "courier-main");
    assert_eq!(event.tracking_number, "CX-1001");
    assert_eq!(event.raw_status, "Delivered");
    assert_eq!(
        event.event_time.as_deref(),
        Some("2026-05-12T09:03:11.000000Z")
    );
    assert_eq!(event.code, None);
    assert_eq!(event.reason, None);
    assert_eq!(event.via, Via::Callback);

    // The same body again: a duplicate, answered 200, not enqueued again.
    let (status, text) = post(&app, &good, &body, &[]).await;
    assert_eq!(status, 200);
    assert!(text.contains("duplicate"), "{text}");
    assert_eq!(events(&app, "tracking.postex").await.len(), 1);
    // Another status of the same parcel is a new delivery.
    let returned = postex_body("CX-1001", "Returned", "2026-05-13 09:00:00");
    assert_eq!(post(&app, &good, &returned, &[]).await.0, 200);
    assert_eq!(events(&app, "tracking.postex").await.len(), 2);

    let metrics = app.metrics().await;
    for expected in [
        "waybill_callbacks_received_total{connector=\"unknown\",account=\"unknown\",outcome=\"unknown_account\"} 3"
            .to_string(),
        metric_line("postex", "too_large", 2),
        metric_line("postex", "unauthorized", 4),
        metric_line("postex", "bad_request", 9),
        metric_line("postex", "accepted", 2),
        metric_line("postex", "duplicate", 1),
        "waybill_duplicates_suppressed_total{kind=\"callback\",source=\"postex\"} 1".to_string(),
    ] {
        assert!(metrics.contains(&expected), "no `{expected}` in\n{metrics}");
    }
    app.stop().await;
}

/// The sandbox's own shape: a signed list of events with a delivery id.
fn sandbox_body(tracking: &str, steps: &[(&str, &str)]) -> Vec<u8> {
    let events: Vec<_> = steps
        .iter()
        .enumerate()
        .map(|(n, (status, time))| {
            serde_json::json!({
                "tracking_number": tracking, "status": status, "code": n + 1,
                "time": time, "reason": if *status == "delivery failed" { "refused" } else { "" },
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "events": events })).expect("json")
}

fn sandbox_sign(secret: &str, body: &[u8]) -> String {
    let connector = waybill::connector::Connector::load(&repo().join("connectors/sandbox.yaml"))
        .expect("the sandbox connector loads");
    let spec = connector.callback.expect("the sandbox takes callbacks");
    let CallbackVerify::Signature(signature) = spec.verify else {
        panic!("the sandbox signs its callbacks");
    };
    webhook::sign(&signature, secret.as_bytes(), body)
}

#[tokio::test]
async fn a_body_of_several_events_puts_each_on_the_bus_once() {
    let dir = ConfigDir::new("{ connector: sandbox, credentials: { callback_secret: \"sbx\" } }");
    let app = App::start(&dir).await;
    let path = "/callbacks/sandbox/courier-main";
    let body = sandbox_body(
        "SBX-1",
        &[
            ("picked up", "2026-05-12T10:00:00Z"),
            ("in transit", "2026-05-12T12:00:00+02:00"),
            ("delivery failed", "2026-05-12T11:00:00.250Z"),
        ],
    );
    let wrong = sandbox_sign("the default", &body);
    assert_eq!(
        post(&app, path, &body, &[("X-Sandbox-Signature", &wrong)])
            .await
            .0,
        401
    );
    assert_eq!(post(&app, path, &body, &[]).await.0, 401);
    // A secret in the path is no URL of a signing connector.
    assert_eq!(post(&app, &format!("{path}/sbx"), &body, &[]).await.0, 404);
    assert!(events(&app, "tracking.sandbox").await.is_empty());

    let signature = sandbox_sign("sbx", &body);
    let headers = [
        ("X-Sandbox-Signature", signature.as_str()),
        ("X-Sandbox-Delivery", "d-1"),
    ];
    let (status, text) = post(&app, path, &body, &headers).await;
    assert_eq!(status, 200, "{text}");
    let found: Vec<TrackingEvent> = events(&app, "tracking.sandbox")
        .await
        .into_iter()
        .map(|(record, event)| {
            assert_eq!(record.message.key, "courier-main:SBX-1");
            event
        })
        .collect();
    type Seen<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let seen: Vec<Seen> = found
        .iter()
        .map(|e| {
            (
                e.raw_status.as_str(),
                e.code.as_deref(),
                e.event_time.as_deref(),
                e.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "picked up",
                Some("1"),
                Some("2026-05-12T10:00:00.000000Z"),
                None
            ),
            (
                "in transit",
                Some("2"),
                Some("2026-05-12T10:00:00.000000Z"),
                None
            ),
            (
                "delivery failed",
                Some("3"),
                Some("2026-05-12T11:00:00.250000Z"),
                Some("refused")
            ),
        ]
    );

    // The same delivery id again: nothing more.
    assert_eq!(post(&app, path, &body, &headers).await.0, 200);
    assert_eq!(events(&app, "tracking.sandbox").await.len(), 3);
    // One bad event refuses the whole body.
    let mut bad: serde_json::Value = serde_json::from_slice(&body).expect("json");
    bad["events"][1]["status"] = serde_json::Value::Null;
    let bad = serde_json::to_vec(&bad).expect("json");
    let signature = sandbox_sign("sbx", &bad);
    let (status, text) = post(&app, path, &bad, &[("X-Sandbox-Signature", &signature)]).await;
    assert_eq!(status, 400);
    assert!(text.contains("event 1"), "{text}");
    assert_eq!(events(&app, "tracking.sandbox").await.len(), 3);
    app.stop().await;
}

/// An enqueue whose bus never takes anything.
struct Unavailable;

#[async_trait]
impl Enqueue for Unavailable {
    async fn enqueue(
        &self,
        _topic: &str,
        _message: Message,
        _delivery: DeliveryId<'_>,
    ) -> Result<Enqueued, EnqueueError> {
        Err(EnqueueError::Timeout)
    }
}

#[tokio::test]
async fn a_bus_that_cannot_take_the_event_is_a_503_and_an_account_without_a_secret_a_404() {
    let dir = ConfigDir::new(&postex_account());
    let config = dir.load();
    let ingest = Ingest {
        enqueue: Arc::new(Unavailable),
        metrics: Arc::new(Metrics::new()),
    };
    let headers = axum::http::HeaderMap::new();
    let body = postex_body("CX-1", "Delivered", "2026-05-12 14:03:11");
    let account = config.accounts["courier-main"].clone();
    let answer = |account: waybill::config::Account| {
        let (ingest, headers, body, connectors) = (
            ingest.clone(),
            headers.clone(),
            body.clone(),
            config.connectors.clone(),
        );
        async move {
            let target = callback::resolve("postex", Some(&account), &connectors);
            let request = callback::Request {
                path_secret: Some(CALLBACK_SECRET),
                query: None,
                headers: &headers,
            };
            callback::receive(&ingest, target, request, body.into(), 1 << 20)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(answer((*account).clone()).await, 503);
    let mut without = (*account).clone();
    without.credentials.remove("callback_secret");
    assert_eq!(answer(without).await, 404);
    let metrics = ingest.metrics.render();
    assert!(
        metrics.contains(&metric_line("postex", "unavailable", 1)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&metric_line("postex", "not_enabled", 1)),
        "{metrics}"
    );
}

/// Books one COD order on the sandbox with `step: 200ms` and waits for its
/// moves on `tracking.sandbox`: they must be `expected`, in order, and then
/// stop; `track` must agree with the last.
async fn sandbox_moves(note: &str, expected: &[&str]) {
    let dir = ConfigDir::new("{ connector: sandbox, settings: { step: 200ms } }");
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| o["note"] = serde_json::json!(note));
    assert_eq!(app.shopify(&order, "orders/create", "w-1").await.0, 200);
    let found = eventually(
        std::time::Duration::from_secs(30),
        "the parcel's moves on tracking.sandbox",
        || async {
            let found = events(&app, "tracking.sandbox").await;
            (found.len() >= expected.len()).then_some(found)
        },
    )
    .await;
    let tracking = found[0].1.tracking_number.clone();
    assert!(tracking.starts_with("SBX-"), "{tracking}");
    let statuses: Vec<&str> = found.iter().map(|(_, e)| e.raw_status.as_str()).collect();
    assert_eq!(statuses, expected);
    let mut times = Vec::new();
    for (record, event) in &found {
        assert_eq!(record.message.key, format!("courier-main:{tracking}"));
        assert_eq!(event.tracking_number, tracking);
        assert_eq!(event.via, Via::Callback);
        assert!(event.code.is_some(), "{event:?}");
        times.push(event.event_time.clone().expect("the sandbox says when"));
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    // The route is over: nothing more comes.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(events(&app, "tracking.sandbox").await.len(), expected.len());
    let tracked: serde_json::Value = app
        .http
        .get(app.url(&format!("/sandbox/track/{tracking}")))
        .header("X-Sandbox-Account", "courier-main")
        .send()
        .await
        .expect("track")
        .json()
        .await
        .expect("json");
    assert_eq!(tracked["status"], expected[expected.len() - 1], "{tracked}");
    assert_eq!(
        tracked["history"].as_array().map(Vec::len),
        Some(expected.len() + 1)
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&metric_line("sandbox", "accepted", expected.len() as u32)),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sandbox_parcel_posts_each_move_until_delivered() {
    sandbox_moves(
        "Please call before delivery",
        &["picked up", "in transit", "out for delivery", "delivered"],
    )
    .await;
}

#[tokio::test]
async fn a_sandbox_return_fails_delivery_and_comes_back() {
    sandbox_moves(
        "Leave at the gate. sandbox:return",
        &[
            "picked up",
            "in transit",
            "out for delivery",
            "delivery failed",
            "returning",
            "returned",
        ],
    )
    .await;
}
