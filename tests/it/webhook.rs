//! Webhook answers in DESIGN §8 order, signature checks and replays.

use crate::common::*;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn ingest_count(app: &App) -> usize {
    app.backends
        .bus
        .read("orders.shopify", 0, 10_000)
        .await
        .map(|r| r.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn statuses_follow_the_documented_order() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    let sig = shopify_sign(SECRET.as_bytes(), &body);

    // Unknown account, even with a huge body: 404.
    let huge = vec![b'x'; 2 * 1024 * 1024];
    assert_eq!(app.shopify_raw("nope", &huge, &[]).await.0, 404);
    // A courier account is not a store: 404.
    assert_eq!(app.shopify_raw("courier-main", &body, &[]).await.0, 404);
    // Too large for http.max_body_bytes: 413, before the signature is looked at.
    assert_eq!(app.shopify_raw("shopify-main", &huge, &[]).await.0, 413);
    // Missing, malformed and wrong signatures: 401.
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            &body,
            &[
                ("X-Shopify-Topic", "orders/paid"),
                ("X-Shopify-Webhook-Id", "a")
            ]
        )
        .await
        .0,
        401
    );
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            &body,
            &[
                ("X-Shopify-Hmac-Sha256", "%%%"),
                ("X-Shopify-Topic", "orders/paid"),
                ("X-Shopify-Webhook-Id", "a")
            ]
        )
        .await
        .0,
        401
    );
    let wrong = shopify_sign(b"another-secret", &body);
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            &body,
            &[
                ("X-Shopify-Hmac-Sha256", &wrong),
                ("X-Shopify-Topic", "orders/paid"),
                ("X-Shopify-Webhook-Id", "a")
            ]
        )
        .await
        .0,
        401
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            &tampered,
            &[
                ("X-Shopify-Hmac-Sha256", &sig),
                ("X-Shopify-Topic", "orders/paid"),
                ("X-Shopify-Webhook-Id", "a")
            ]
        )
        .await
        .0,
        401
    );
    // Signed but missing headers or not an order: 400.
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            &body,
            &[
                ("X-Shopify-Hmac-Sha256", &sig),
                ("X-Shopify-Webhook-Id", "a")
            ]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            &body,
            &[
                ("X-Shopify-Hmac-Sha256", &sig),
                ("X-Shopify-Topic", "orders/paid")
            ]
        )
        .await
        .0,
        400
    );
    let garbage = b"{not json";
    let garbage_sig = shopify_sign(SECRET.as_bytes(), garbage);
    assert_eq!(
        app.shopify_raw(
            "shopify-main",
            garbage,
            &[
                ("X-Shopify-Hmac-Sha256", &garbage_sig),
                ("X-Shopify-Topic", "orders/paid"),
                ("X-Shopify-Webhook-Id", "a")
            ]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        ingest_count(&app).await,
        0,
        "nothing rejected may be enqueued"
    );

    // Accepted once; the same delivery id again is a duplicate, not re-enqueued.
    assert_eq!(app.shopify(&body, "orders/paid", "dup-1").await.0, 200);
    assert_eq!(app.shopify(&body, "orders/paid", "dup-1").await.0, 200);
    assert_eq!(ingest_count(&app).await, 1);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .contains("waybill_duplicates_suppressed_total{kind=\"webhook\",source=\"shopify\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"unauthorized\"} 4"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn replays_book_once() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-1")))
        .expect(1)
        .mount(&courier)
        .await;
    let dir = ConfigDir::new(&format!(
        "{{ connector: postex, credentials: {{ token: \"tok\" }}, base_url: \"{}\" }}",
        courier.uri()
    ));
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    // Same webhook id twice, then the same order under new ids and other topics.
    assert_eq!(app.shopify(&body, "orders/create", "w-1").await.0, 200);
    assert_eq!(app.shopify(&body, "orders/create", "w-1").await.0, 200);
    assert_eq!(app.shopify(&body, "orders/updated", "w-2").await.0, 200);
    assert_eq!(app.shopify(&body, "orders/create", "w-3").await.0, 200);
    eventually(
        Duration::from_secs(20),
        "three events processed",
        || async {
            let m = app.metrics().await;
            (m.contains("stage=\"book\",outcome=\"replayed\"} 2")).then_some(())
        },
    )
    .await;
    assert_eq!(courier.received_requests().await.map(|r| r.len()), Some(1));
    app.stop().await;
}
