//! Booking on PostEx (a `wiremock` courier): retries, classification,
//! review instead of a second booking, dead letters with their headers.

use crate::common::*;
use std::time::Duration;
use waybill::model::header;
use waybill::store::BookingStatus;
use wiremock::matchers::{header as has_header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn postex_account(courier: &MockServer) -> String {
    format!(
        "{{ connector: postex, credentials: {{ token: \"tok-secret\" }}, base_url: \"{}\" }}",
        courier.uri()
    )
}

async fn booked(app: &App) -> Vec<waybill::store::Booking> {
    app.backends
        .store
        .bookings(Some(BookingStatus::Booked), 100)
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn courier_503_and_429_are_retried_until_booked() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&courier)
        .await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&courier)
        .await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .and(has_header("token", "tok-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-777")))
        .mount(&courier)
        .await;
    let dir = ConfigDir::new(&postex_account(&courier));
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "r-1")
            .await
            .0,
        200
    );
    let rows = eventually(Duration::from_secs(30), "booking after retries", || async {
        let rows = booked(&app).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(
        rows[0].result.as_ref().map(|r| r.tracking_number.as_str()),
        Some("CX-777")
    );
    assert_eq!(courier.received_requests().await.map(|r| r.len()), Some(3));
    let metrics = app.metrics().await;
    assert!(metrics.contains("waybill_retries_total{pipeline=\"shopify-orders\",stage=\"book\",error_class=\"retryable\"} 2"), "{metrics}");
    assert!(metrics.contains("courier=\"postex\",account=\"courier-main\",operation=\"book\",outcome=\"retryable\"} 2"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn error_inside_a_200_is_a_permanent_dead_letter_with_headers() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "statusCode": "400", "statusMessage": "Invalid customer phone"
        })))
        .mount(&courier)
        .await;
    let dir = ConfigDir::new(&postex_account(&courier));
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "p-1")
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
    assert_eq!(h.get(header::ERROR_STAGE).map(String::as_str), Some("book"));
    assert_eq!(
        h.get(header::PIPELINE).map(String::as_str),
        Some("shopify-orders")
    );
    assert_eq!(
        h.get(header::ORIGIN_TOPIC).map(String::as_str),
        Some("orders.shopify")
    );
    assert_eq!(h.get(header::ORIGIN_OFFSET).map(String::as_str), Some("0"));
    assert_eq!(h.get(header::ATTEMPTS).map(String::as_str), Some("1"));
    assert!(
        h.get(header::ERROR_MESSAGE)
            .is_some_and(|m| m.contains("Invalid customer phone")),
        "{h:?}"
    );
    assert!(h.contains_key(header::FIRST_FAILED_AT) && h.contains_key(header::LAST_FAILED_AT));
    let request = h.get(header::ERROR_REQUEST).cloned().unwrap_or_default();
    assert!(
        !request.is_empty() && !request.contains("tok-secret"),
        "request must be kept and redacted: {request}"
    );
    assert_eq!(
        letters[0].message.payload,
        sample("order-cod.json"),
        "the original bytes are kept"
    );
    assert_eq!(
        courier.received_requests().await.map(|r| r.len()),
        Some(1),
        "permanent: not retried"
    );
    app.stop().await;
}

#[tokio::test]
async fn ambiguous_500_goes_to_review_and_is_never_sent_again() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&courier)
        .await;
    let dir = ConfigDir::new(&postex_account(&courier));
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    assert_eq!(app.shopify(&body, "orders/create", "a-1").await.0, 200);
    let review = eventually(Duration::from_secs(20), "a review item", || async {
        let rows = app
            .backends
            .store
            .bookings(Some(BookingStatus::Review), 10)
            .await
            .ok()?;
        rows.into_iter().next()
    })
    .await;
    // The same order again (a Shopify retry, an update): still one request.
    assert_eq!(app.shopify(&body, "orders/updated", "a-2").await.0, 200);
    eventually(Duration::from_secs(20), "two dead letters", || async {
        (dead_letters(&app, "shopify-orders").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(courier.received_requests().await.map(|r| r.len()), Some(1));
    let letters = dead_letters(&app, "shopify-orders").await;
    assert!(letters.iter().all(|l| {
        l.message
            .headers
            .get(header::ERROR_CLASS)
            .map(String::as_str)
            == Some("needs_review")
    }));

    // An operator checks the courier portal: it was not booked. Release and replay.
    app.backends
        .store
        .resolve_release(&review.key)
        .await
        .expect("release");
    courier.reset().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-9")))
        .expect(1)
        .mount(&courier)
        .await;
    assert_eq!(app.shopify(&body, "orders/updated", "a-3").await.0, 200);
    eventually(Duration::from_secs(20), "booked after release", || async {
        (!booked(&app).await.is_empty()).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn timeout_after_sending_goes_to_review_not_resent() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(postex_ok("CX-late"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&courier)
        .await;
    let dir = ConfigDir::new(&postex_account(&courier));
    dir.edit("connectors/postex.yaml", |text| {
        assert!(
            text.contains("    timeout: 30s\n"),
            "the book operation declares its timeout"
        );
        text.replacen("    timeout: 30s\n", "    timeout: 1s\n", 1)
    });
    let app = App::start(&dir).await;
    assert_eq!(
        app.shopify(&sample("order-cod.json"), "orders/create", "t-1")
            .await
            .0,
        200
    );
    eventually(Duration::from_secs(20), "a review item", || async {
        let rows = app
            .backends
            .store
            .bookings(Some(BookingStatus::Review), 10)
            .await
            .ok()?;
        rows.into_iter().next()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(courier.received_requests().await.map(|r| r.len()), Some(1));
    app.stop().await;
}
