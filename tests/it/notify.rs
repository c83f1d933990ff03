//! Customer notifications, through the shipped example pipeline
//! (`examples/notify-customers.yaml`) and SMS mapping: the sandbox courier
//! moves parcels every second, and a receiver stub gets
//! one correctly signed POST per (shipment, status) in the filter, none for
//! other statuses, none again for a status change delivered twice; a
//! receiver that keeps failing is retried, then the change is dead-lettered
//! saying why, without the signing secret. Booking observes the
//! paid-to-booking histogram from the order's own paid time.

use crate::common::*;
use hmac::{KeyInit, Mac};
use std::collections::BTreeSet;
use std::time::Duration;
use waybill::model::header;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `#` and `: ` inside: interpolated values stay values.
const NOTIFY_SECRET: &str = "n0tify-s3cret: #value";

/// A tree whose sandbox parcels move every second (time enough for a
/// booking to become a shipment before its first move, on a busy machine),
/// with a notifier account posting to `receiver` and the shipped example
/// notify pipeline, its text changed by `edit`.
fn notify_tree(receiver: &str, edit: impl FnOnce(String) -> String) -> ConfigDir {
    let dir = ConfigDir::new("{ connector: sandbox, settings: { step: 1s } }");
    let examples = dir.dir.path().join("examples");
    std::fs::create_dir_all(&examples).expect("mkdir");
    let pipeline = std::fs::read_to_string(repo().join("examples/notify-customers.yaml"))
        .expect("the example pipeline");
    std::fs::write(examples.join("notify-customers.yaml"), edit(pipeline)).expect("write");
    let account = format!(
        "  notify-main: {{ connector: notify-webhook, base_url: \"{receiver}/hook\", \
         credentials: {{ signing_secret: \"${{NOTIFY_TEST_SECRET:-{NOTIFY_SECRET}}}\" }} }}\n  courier-main:"
    );
    dir.edit("waybill.yaml", |text| {
        text.replacen("  courier-main:", &account, 1).replace(
            "pipelines: [ \"pipelines/*.yaml\" ]",
            "pipelines: [ \"pipelines/*.yaml\", \"examples/notify-customers.yaml\" ]",
        )
    });
    dir
}

/// Posts COD order `id` named `name`, its JSON changed by `edit`.
async fn order(app: &App, id: u64, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let body = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(id);
        o["name"] = serde_json::json!(name);
        edit(o);
    });
    let (status, text) = app
        .shopify(&body, "orders/create", &format!("n-{id}"))
        .await;
    assert_eq!(status, 200, "{text}");
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(NOTIFY_SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn header_text<'r>(request: &'r wiremock::Request, name: &str) -> &'r str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Waits until every shipment of the tree is at a terminal status.
async fn all_settled(app: &App, count: usize) {
    eventually(
        Duration::from_secs(60),
        "every parcel delivered or returned",
        || async {
            let all = all_shipments(app).await?;
            let settled = all
                .iter()
                .filter(|s| matches!(s.status.as_str(), "delivered" | "returned"))
                .count();
            (all.len() == count && settled == count).then_some(())
        },
    )
    .await;
}

fn counter(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn each_status_in_the_filter_is_posted_once_and_correctly_signed() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let dir = notify_tree(&receiver.uri(), |p| p);
    let app = App::start(&dir).await;
    order(&app, 9_700_000_001, "#N1", |_| {}).await;
    order(&app, 9_700_000_002, "#N2", |o| {
        o["note"] = serde_json::json!("Leave at the gate. sandbox:return");
    })
    .await;
    // No paid or confirmed time: booked, notified, but not observed.
    order(&app, 9_700_000_003, "#N3", |o| {
        o["processed_at"] = serde_json::Value::Null;
        o["created_at"] = serde_json::Value::Null;
    })
    .await;
    all_settled(&app, 3).await;
    let shipments = all_shipments(&app).await.expect("shipments");
    let tracking_of = |order_id: u64| {
        shipments
            .iter()
            .find(|s| s.key.order_id == order_id.to_string())
            .map(|s| s.tracking_number.clone())
            .expect("a shipment of the order")
    };
    let (n1, n2, n3) = (
        tracking_of(9_700_000_001),
        tracking_of(9_700_000_002),
        tracking_of(9_700_000_003),
    );
    let expected: BTreeSet<(String, String)> = [
        (n1.clone(), "out_for_delivery"),
        (n1.clone(), "delivered"),
        (n2.clone(), "out_for_delivery"),
        (n2.clone(), "delivery_failed"),
        (n3.clone(), "out_for_delivery"),
        (n3.clone(), "delivered"),
    ]
    .into_iter()
    .map(|(t, s)| (t, s.to_string()))
    .collect();
    let requests = eventually(
        Duration::from_secs(30),
        "a notification per status in the filter",
        || async {
            let requests = receiver.received_requests().await?;
            (requests.len() >= expected.len()).then_some(requests)
        },
    )
    .await;

    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for request in &requests {
        assert_eq!(
            header_text(request, "X-Waybill-Signature"),
            expected_signature(&request.body),
            "signed with the account's signing_secret"
        );
        assert_eq!(header_text(request, "content-type"), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON");
        assert_eq!(body["to"], "+923001234567", "{body}");
        assert_eq!(body["channel"], "sms");
        let status = body["status"].as_str().expect("status").to_string();
        let text = body["text"].as_str().expect("text");
        assert!(text.starts_with("Hi Ayesha, "), "{text}");
        assert!(
            text.contains(body["reference"].as_str().expect("ref")),
            "{text}"
        );
        ids.insert(header_text(request, "X-Waybill-Notification-Id").to_string());
        assert!(
            seen.insert((
                body["tracking_number"].as_str().expect("cn").to_string(),
                status
            )),
            "posted twice: {body}"
        );
    }
    assert_eq!(seen, expected);
    assert_eq!(
        ids.len(),
        expected.len(),
        "one id per notification: {ids:?}"
    );

    // A status change delivered again (a redelivery, a republish after a
    // crash) posts nothing: the store knows it was sent.
    let changes = app
        .backends
        .bus
        .read("shipments.status", 0, 10_000)
        .await
        .expect("status changes");
    let delivered = changes
        .iter()
        .find(|r| {
            let change: serde_json::Value = serde_json::from_slice(&r.message.payload).unwrap();
            change["status"] == "delivered" && change["tracking_number"] == n1.as_str()
        })
        .expect("the delivered change");
    let mut again = delivered.message.clone();
    again
        .headers
        .insert(header::ID.into(), "republished".into());
    app.backends
        .bus
        .publish("shipments.status", again)
        .await
        .expect("publish");
    let metrics = eventually(
        Duration::from_secs(30),
        "the repeated change counted as a duplicate",
        || async {
            let metrics = app.metrics().await;
            (counter(
                &metrics,
                "waybill_notifications_total{pipeline=\"notify-customers\",outcome=\"duplicate\"}",
            ) == 1)
                .then_some(metrics)
        },
    )
    .await;
    assert_eq!(
        receiver.received_requests().await.map(|r| r.len()),
        Some(expected.len())
    );
    assert_eq!(
        counter(
            &metrics,
            "waybill_notifications_total{pipeline=\"notify-customers\",outcome=\"sent\"}"
        ),
        expected.len() as u64
    );
    // Paid to booking, from the order's own time: the two orders that
    // carry one; receipt to booking: all three.
    assert_eq!(
        counter(
            &metrics,
            "waybill_paid_to_booking_seconds_count{pipeline=\"shopify-orders\"}"
        ),
        2,
        "{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            "waybill_order_to_booking_seconds_count{pipeline=\"shopify-orders\"}"
        ),
        3
    );
    // The samples were paid on 2026-11-20: the observations are days, not
    // the milliseconds since receipt.
    let sum = metrics
        .lines()
        .find(|l| l.starts_with("waybill_paid_to_booking_seconds_sum{pipeline=\"shopify-orders\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("a sum");
    assert!(sum > 2.0 * 86_400.0, "{sum}");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_dead_lettered_without_the_secret() {
    let receiver = MockServer::start().await;
    // A receiver that echoes what it was given, secret included.
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_string(format!("overloaded; your key {NOTIFY_SECRET} is fine")),
        )
        .mount(&receiver)
        .await;
    let dir = notify_tree(&receiver.uri(), |pipeline| {
        pipeline
            .replace(
                "statuses: [out_for_delivery, delivered, delivery_failed]",
                "statuses: [out_for_delivery]",
            )
            .replace(
                "retry: { max_attempts: 8, initial: 1s, max_delay: 60s, max_elapsed: 1h }",
                "retry: { max_attempts: 3, initial: 100ms, max_delay: 200ms }",
            )
    });
    let app = App::start(&dir).await;
    order(&app, 9_700_000_011, "#N11", |_| {}).await;
    let letters = eventually(
        Duration::from_secs(60),
        "the notification's dead letter",
        || async {
            let letters = dead_letters(&app, "notify-customers").await;
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let headers = &letter.message.headers;
    assert_eq!(headers[header::ERROR_STAGE], "notify");
    assert_eq!(headers[header::ERROR_CLASS], "retryable");
    assert_eq!(headers[header::ATTEMPTS], "3");
    let why = &headers[header::ERROR_MESSAGE];
    assert!(
        why.contains("the notification receiver at") && why.contains("/hook answered 503"),
        "{why}"
    );
    assert!(why.contains("overloaded; your key *** is fine"), "{why}");
    let whole = format!(
        "{headers:?}{}",
        String::from_utf8_lossy(&letter.message.payload)
    );
    assert!(!whole.contains(NOTIFY_SECRET), "{whole}");
    assert!(!whole.contains("n0tify-s3cret"), "{whole}");
    let change: serde_json::Value =
        serde_json::from_slice(&letter.message.payload).expect("the change, as it came");
    assert_eq!(change["status"], "out_for_delivery");
    assert_eq!(
        waybill::bus::dead_letter::describe(letter)
            .order_name
            .as_deref(),
        Some("#N11"),
        "`dlq list` names the order"
    );

    // Three attempts of the one notification, with one id; nothing for
    // the statuses the filter leaves out.
    all_settled(&app, 1).await;
    let requests = receiver.received_requests().await.expect("requests");
    assert_eq!(requests.len(), 3);
    let ids: BTreeSet<&str> = requests
        .iter()
        .map(|r| header_text(r, "X-Waybill-Notification-Id"))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let metrics = app.metrics().await;
    assert!(!metrics.contains("n0tify-s3cret"));
    assert_eq!(
        counter(
            &metrics,
            "waybill_notifications_total{pipeline=\"notify-customers\",outcome=\"retryable\"}"
        ),
        3
    );

    // Once the receiver is back, a replay of the dead letter posts the
    // notification again, with the same id, and then it is sent.
    let id = ids.into_iter().next().expect("an id").to_string();
    receiver.reset().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let config = dir.load();
    waybill::cli::dlq::replay(
        &config,
        app.backends.bus.as_ref(),
        None,
        Some("notify-customers"),
    )
    .await
    .expect("replay");
    let requests = eventually(
        Duration::from_secs(30),
        "the replayed notification",
        || async {
            let requests = receiver.received_requests().await?;
            (!requests.is_empty()).then_some(requests)
        },
    )
    .await;
    assert_eq!(requests.len(), 1);
    assert_eq!(header_text(&requests[0], "X-Waybill-Notification-Id"), id);
    assert_eq!(
        header_text(&requests[0], "X-Waybill-Signature"),
        expected_signature(&requests[0].body)
    );
    eventually(
        Duration::from_secs(30),
        "the notification counted sent",
        || async {
            let metrics = app.metrics().await;
            (counter(
                &metrics,
                "waybill_notifications_total{pipeline=\"notify-customers\",outcome=\"sent\"}",
            ) == 1)
                .then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[test]
fn try_shows_the_notification_a_status_change_would_post() {
    let dir = notify_tree("http://127.0.0.1:9", |p| p);
    let try_change = |status: &str| {
        let change = dir.dir.path().join(format!("change-{status}.json"));
        let body = serde_json::json!({
            "key": "shopify:shopify-main:1:0", "reference": "#1042", "courier": "sandbox",
            "tracking_number": "SBX-1", "status": status, "via": "callback",
        });
        std::fs::write(&change, body.to_string()).expect("write");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args([
                "try",
                "--pipeline",
                "notify-customers",
                "--account",
                "shopify-main",
                "--input",
            ])
            .arg(&change)
            .arg("--config")
            .arg(dir.path())
            .output()
            .expect("run waybill try");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!stdout.contains("n0tify-s3cret"), "{stdout}");
        serde_json::from_str::<serde_json::Value>(&stdout).expect("one JSON object")
    };
    let printed = try_change("delivered");
    let request = &printed["request"];
    assert_eq!(request["url"], "http://127.0.0.1:9/hook", "{printed:#}");
    assert_eq!(request["headers"]["X-Waybill-Signature"], "***");
    assert_eq!(request["body"]["status"], "delivered");
    assert_eq!(
        request["body"]["text"],
        "Hi, your order #1042 has been delivered. Thank you for shopping with us! Tracking: SBX-1"
    );
    let skipped = try_change("in_transit");
    assert_eq!(skipped["request"], serde_json::Value::Null);
    let errors = skipped["errors"].to_string();
    assert!(
        errors.contains("not one this pipeline notifies"),
        "{skipped:#}"
    );
}
