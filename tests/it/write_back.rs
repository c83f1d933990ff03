//! Write-back to the store: a COD order booked at PostEx (wiremock) becomes
//! one fulfillment at Shopify (wiremock standing in for its Admin GraphQL
//! API) and one fulfillment event per mapped status, however often the bus
//! redelivers or the process is killed; throttling waits as Shopify says,
//! `userErrors` and a 401 are permanent; an account without a token is skipped.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waybill::model::header;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "shpat_test_token";
const CALLBACK: &str = "wb-callback";

/// What the stand-in shop was sent and holds.
#[derive(Default)]
struct Shop {
    /// `variables.fulfillment` of every fulfillmentCreate that created one.
    creates: Vec<Value>,
    /// When each fulfillmentCreate arrived, answered or not.
    create_times: Vec<Instant>,
    /// (fulfillment id, status) of every event created.
    events: Vec<(String, String)>,
    /// Fulfillments: id, tracking number, event statuses.
    fulfillments: Vec<(String, String, Vec<String>)>,
    /// Requests whose query text held a value (values travel in variables).
    spliced: usize,
    requests: usize,
    /// `find_fulfillment` lookups answered.
    lookups: usize,
    /// Scripted answers.
    throttle_creates: usize,
    user_error: Option<String>,
    /// Delay of the first answer to fulfillmentCreate / fulfillmentEventCreate.
    slow_create: Option<Duration>,
    slow_event: Option<Duration>,
    /// Make the next fulfillment, then answer this status (a 5xx after acting).
    fail_after_create: Option<u16>,
    /// Answer fulfillmentCreate with ACCESS_DENIED naming this scope.
    denied_scope: Option<String>,
}

#[derive(Clone, Default)]
struct FakeShopify(Arc<Mutex<Shop>>);

fn cost() -> Value {
    json!({ "cost": { "requestedQueryCost": 10, "actualQueryCost": 10,
        "throttleStatus": { "maximumAvailable": 2000.0, "currentlyAvailable": 1990.0, "restoreRate": 100.0 } } })
}

fn ok(data: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "data": data, "extensions": cost() }))
}

impl FakeShopify {
    fn shop(&self) -> std::sync::MutexGuard<'_, Shop> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn start(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/admin/api/2025-07/graphql.json"))
            .respond_with(self.clone())
            .mount(&server)
            .await;
        server
    }
}

impl wiremock::Respond for FakeShopify {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut shop = self.shop();
        shop.requests += 1;
        let token = request
            .headers
            .get("X-Shopify-Access-Token")
            .and_then(|v| v.to_str().ok());
        if token != Some(TOKEN) {
            return ResponseTemplate::new(401).set_body_json(json!({
                "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
            }));
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let query = body["query"].as_str().unwrap_or_default().to_string();
        let vars = &body["variables"];
        if query.contains("gid://") || query.contains("CX-") {
            shop.spliced += 1;
        }
        if query.contains("fulfillmentCreate(") {
            shop.create_times.push(Instant::now());
            if shop.throttle_creates > 0 {
                shop.throttle_creates -= 1;
                return ResponseTemplate::new(200).set_body_json(json!({
                    "errors": [{ "message": "Throttled", "extensions": { "code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits" } }],
                    "extensions": { "cost": { "requestedQueryCost": 10, "actualQueryCost": null,
                        "throttleStatus": { "maximumAvailable": 2000.0, "currentlyAvailable": 0.0, "restoreRate": 5.0 } } }
                }));
            }
            if let Some(scope) = shop.denied_scope.clone() {
                return ResponseTemplate::new(200).set_body_json(json!({
                    "errors": [{ "message": format!("Access denied for fulfillmentCreate field. Required access: `{scope}` access scope."),
                        "extensions": { "code": "ACCESS_DENIED", "requiredAccess": format!("`{scope}` access scope.") } }],
                    "extensions": cost()
                }));
            }
            if let Some(message) = shop.user_error.clone() {
                return ok(json!({ "fulfillmentCreate": { "fulfillment": null,
                    "userErrors": [{ "field": ["fulfillment"], "message": message }] } }));
            }
            let fulfillment = vars["fulfillment"].clone();
            let number = fulfillment["trackingInfo"]["number"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let id = format!(
                "gid://shopify/Fulfillment/{}",
                500 + shop.fulfillments.len()
            );
            shop.fulfillments.push((id.clone(), number, Vec::new()));
            shop.creates.push(fulfillment);
            if let Some(status) = shop.fail_after_create.take() {
                return ResponseTemplate::new(status).set_body_string("upstream timed out");
            }
            let answer = ok(json!({ "fulfillmentCreate": {
                "fulfillment": { "id": id, "status": "SUCCESS" }, "userErrors": [] } }));
            return match shop.slow_create.take() {
                Some(delay) => answer.set_delay(delay),
                None => answer,
            };
        }
        if query.contains("fulfillmentEventCreate(") {
            let event = &vars["fulfillmentEvent"];
            let id = event["fulfillmentId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let status = event["status"].as_str().unwrap_or_default().to_string();
            let Some(found) = shop.fulfillments.iter_mut().find(|f| f.0 == id) else {
                return ok(
                    json!({ "fulfillmentEventCreate": { "fulfillmentEvent": null,
                    "userErrors": [{ "field": ["fulfillmentEvent", "fulfillmentId"], "message": "Fulfillment does not exist." }] } }),
                );
            };
            found.2.push(status.clone());
            shop.events.push((id, status.clone()));
            let answer = ok(json!({ "fulfillmentEventCreate": {
                "fulfillmentEvent": { "id": "gid://shopify/FulfillmentEvent/1", "status": status }, "userErrors": [] } }));
            return match shop.slow_event.take() {
                Some(delay) => answer.set_delay(delay),
                None => answer,
            };
        }
        if query.contains("fulfillmentOrders") {
            return ok(json!({ "order": { "fulfillmentOrders": { "nodes": [
                { "id": "gid://shopify/FulfillmentOrder/11", "status": "OPEN" },
                { "id": "gid://shopify/FulfillmentOrder/12", "status": "CLOSED" },
            ] } } }));
        }
        if query.contains("fulfillments(") {
            shop.lookups += 1;
            let fulfillments: Vec<Value> = shop
                .fulfillments
                .iter()
                .map(|(id, number, events)| {
                    json!({ "id": id, "trackingInfo": [{ "number": number }],
                        "events": { "nodes": events.iter().map(|s| json!({ "status": s })).collect::<Vec<_>>() } })
                })
                .collect();
            return ok(json!({ "order": { "fulfillments": fulfillments } }));
        }
        ResponseTemplate::new(400).set_body_json(json!({ "errors": "unexpected query" }))
    }
}

/// PostEx stand-in: books `CX-WB<n>`; tracking polls say nothing new; the
/// payment status of any parcel is settled.
#[derive(Clone, Default)]
struct PostEx(Arc<std::sync::atomic::AtomicUsize>);

impl wiremock::Respond for PostEx {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.url.path().ends_with("/create-order") {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return ResponseTemplate::new(200).set_body_json(postex_ok(&format!("CX-WB{n}")));
        }
        if request.url.path().contains("/payment-status/") {
            return ResponseTemplate::new(200).set_body_json(json!({
                "statusCode": "200", "statusMessage": "SUCCESSFULLY OPERATED",
                "dist": { "settle": true, "settlementDate": "2026-12-03 11:00:00",
                    "cprNumber_1": "CPR-71", "cprNumber_2": "CPR-72" }
            }));
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "statusCode": "200", "dist": { "transactionStatus": "Unbooked" }
        }))
    }
}

async fn postex() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(PostEx::default())
        .mount(&server)
        .await;
    server
}

/// A tree booking at PostEx on `courier`, its Shopify account writing back
/// to `shop` with `token`.
fn tree(courier: &MockServer, shop: &MockServer, token: &str) -> ConfigDir {
    let dir = ConfigDir::new(&format!(
        "{{ connector: postex, credentials: {{ token: \"tok\", callback_secret: \"{CALLBACK}\" }}, base_url: \"{}\" }}",
        courier.uri()
    ));
    dir.edit("waybill.yaml", |t| {
        t.replace(
            &format!("credentials: {{ webhook_secret: \"{SECRET}\" }} }}"),
            &format!(
                "credentials: {{ webhook_secret: \"{SECRET}\", access_token: \"{token}\" }}, \
                 settings: {{ notify_customer: true }}, base_url: \"{}\" }}",
                shop.uri()
            ),
        )
    });
    dir
}

/// A PostEx status callback for `tracking`, posted to waybill at `base`.
async fn callback(http: &reqwest::Client, base: &str, tracking: &str, status: &str, hour: u32) {
    let body = json!({
        "trackingNumber": tracking,
        "statusUpdateDatetime": format!("2026-12-01 {hour:02}:00:00"),
        "orderStatus": status,
    });
    let answer = http
        .post(format!("{base}/callbacks/postex/courier-main/{CALLBACK}"))
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(answer, 200, "callback {status}");
}

/// Posts a paid COD order as Shopify would, resending after a 503 (the bus
/// busy for a moment) as Shopify does.
async fn order_paid(app: &App, id: u64, webhook_id: &str) {
    let order = cod_order(id);
    eventually(Duration::from_secs(30), "the order accepted", || async {
        (app.shopify(&order, "orders/paid", webhook_id).await.0 == 200).then_some(())
    })
    .await;
}

fn cod_order(id: u64) -> Vec<u8> {
    order_with("order-cod.json", |o| o["id"] = json!(id))
}

/// The events the shop holds, sorted.
fn event_statuses(shopify: &FakeShopify) -> Vec<String> {
    let mut statuses: Vec<String> = shopify.shop().events.iter().map(|e| e.1.clone()).collect();
    statuses.sort();
    statuses
}

#[tokio::test]
async fn a_booking_is_one_fulfillment_and_each_mapped_status_one_event() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    let app = App::start(&dir).await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    order_paid(&app, 8_100_000_001, "wb-1").await;
    eventually(Duration::from_secs(60), "one fulfillment", || async {
        (shopify.shop().creates.len() == 1).then_some(())
    })
    .await;
    let create = shopify.shop().creates[0].clone();
    assert_eq!(create["trackingInfo"]["number"], "CX-WB0");
    assert_eq!(create["trackingInfo"]["company"], "PostEx");
    assert_eq!(create["notifyCustomer"], true);
    assert_eq!(
        create["lineItemsByFulfillmentOrder"],
        json!([{ "fulfillmentOrderId": "gid://shopify/FulfillmentOrder/11" }])
    );

    // Picked up is not in Shopify's table; the rest are, once each, even
    // when the courier says one twice.
    for (hour, status) in [
        (10, "Picked By PostEx"),
        (11, "PostEx WareHouse"),
        (12, "Out For Delivery"),
        (13, "Out For Delivery"),
        (14, "Delivered"),
    ] {
        callback(&app.http, base, "CX-WB0", status, hour).await;
    }
    eventually(Duration::from_secs(60), "three events", || async {
        (shopify.shop().events.len() >= 3).then_some(())
    })
    .await;
    // Redelivery of the booking must not make a second fulfillment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        event_statuses(&shopify),
        ["DELIVERED", "IN_TRANSIT", "OUT_FOR_DELIVERY"]
    );
    {
        let shop_state = shopify.shop();
        assert_eq!(shop_state.creates.len(), 1);
        assert!(
            shop_state
                .events
                .iter()
                .all(|e| e.0 == "gid://shopify/Fulfillment/500")
        );
        assert_eq!(shop_state.spliced, 0, "values must travel in variables");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"waybill_write_backs_total{store="shopify",operation="fulfillment",outcome="written"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"waybill_write_backs_total{store="shopify",operation="event",outcome="not_mapped"}"#
        ),
        "{metrics}"
    );
    assert!(dead_letters(&app, "shopify-tracking").await.is_empty());
    assert!(dead_letters(&app, "shopify-status").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn kill_9_amid_write_backs_makes_no_second_fulfillment_or_event() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    shopify.shop().slow_create = Some(Duration::from_secs(4));
    shopify.shop().slow_event = Some(Duration::from_secs(4));
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    let port = free_port();
    dir.edit("waybill.yaml", |t| {
        t.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log = dir.dir.path().join("waybill.log");
    let mut child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    let order = cod_order(8_100_000_002);
    eventually(Duration::from_secs(30), "the order accepted", || async {
        let (status, _) = post_order(&http, &base, &order, "orders/paid", "wb-kill").await;
        (status == 200).then_some(())
    })
    .await;

    // Shopify has made the fulfillment; its answer is still on the way.
    eventually(Duration::from_secs(60), "the fulfillmentCreate", || async {
        (shopify.shop().creates.len() == 1).then_some(())
    })
    .await;
    child.kill();
    let mut child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    // After the restart the fulfillment is found, not made again, and the
    // first status event goes to it.
    callback(&http, &base, "CX-WB0", "PostEx WareHouse", 11).await;
    eventually(Duration::from_secs(90), "the IN_TRANSIT event", || async {
        (!shopify.shop().events.is_empty()).then_some(())
    })
    .await;
    child.kill();
    let child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    callback(&http, &base, "CX-WB0", "Delivered", 12).await;
    eventually(Duration::from_secs(90), "the DELIVERED event", || async {
        (shopify.shop().events.len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.terminate();
    let shop_state = shopify.shop();
    assert!(
        shop_state.lookups >= 2,
        "each restart looked the store up first"
    );
    assert_eq!(shop_state.creates.len(), 1, "one fulfillment");
    assert_eq!(shop_state.fulfillments.len(), 1);
    let mut statuses: Vec<&str> = shop_state.events.iter().map(|e| e.1.as_str()).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        ["DELIVERED", "IN_TRANSIT"],
        "one event per status"
    );
}

#[tokio::test]
async fn throttled_waits_for_the_restore_time_then_succeeds() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    shopify.shop().throttle_creates = 1;
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    let app = App::start(&dir).await;
    order_paid(&app, 8_100_000_003, "wb-3").await;
    eventually(Duration::from_secs(60), "the fulfillment", || async {
        (shopify.shop().creates.len() == 1).then_some(())
    })
    .await;
    let times = shopify.shop().create_times.clone();
    assert_eq!(
        times.len(),
        2,
        "one throttled attempt, one that went through"
    );
    // 10 points asked, none available, 5 restored a second: 2 s.
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    app.stop().await;
}

#[tokio::test]
async fn user_errors_are_a_dead_letter_with_shopifys_message() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    shopify.shop().user_error =
        Some("Fulfillment order 11 has an unfulfillable status= closed.".into());
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    let app = App::start(&dir).await;
    order_paid(&app, 8_100_000_004, "wb-4").await;
    let letters = first_dead_letters(&app, "shopify-tracking").await;
    let headers = &letters[0].message.headers;
    assert_eq!(headers[header::ERROR_CLASS], "permanent");
    assert_eq!(headers[header::ERROR_STAGE], "write_back");
    assert!(
        headers[header::ERROR_MESSAGE].contains("unfulfillable status= closed"),
        "{headers:?}"
    );
    assert!(
        !format!("{headers:?}").contains(TOKEN),
        "the token never shows"
    );
    assert_eq!(shopify.shop().create_times.len(), 1, "not retried");
    app.stop().await;
}

#[tokio::test]
async fn unauthorized_is_permanent() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, "shpat_revoked");
    let app = App::start(&dir).await;
    order_paid(&app, 8_100_000_005, "wb-5").await;
    let letters = first_dead_letters(&app, "shopify-tracking").await;
    let headers = &letters[0].message.headers;
    assert_eq!(headers[header::ERROR_CLASS], "permanent");
    assert!(
        headers[header::ERROR_MESSAGE].contains("HTTP 401"),
        "{headers:?}"
    );
    assert!(
        headers[header::ERROR_MESSAGE].contains("Invalid API key"),
        "{headers:?}"
    );
    assert!(!format!("{headers:?}").contains("shpat_revoked"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(shopify.shop().requests, 1, "a 401 is not retried");
    assert!(shopify.shop().creates.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_account_without_a_token_is_skipped_counted_and_noted() {
    let courier = postex().await;
    let dir = ConfigDir::new(&postex_at(&courier.uri()));
    let app = App::start(&dir).await;
    order_paid(&app, 8_100_000_006, "wb-6").await;
    eventually(Duration::from_secs(60), "the skip counted", || async {
        let metrics = app.metrics().await;
        metrics
            .contains(r#"waybill_write_backs_total{store="shopify",operation="fulfillment",outcome="skipped"} 1"#)
            .then_some(())
    })
    .await;
    assert!(dead_letters(&app, "shopify-tracking").await.is_empty());
    app.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .expect("validate");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("note: account `shopify-main` has no `access_token`"),
        "{said}"
    );
    assert!(out.stdout.is_empty(), "a note is not a problem");
}

#[test]
fn an_account_with_a_token_but_no_shop_domain_fails_validate() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("waybill.yaml", |t| {
        t.replace(
            &format!("credentials: {{ webhook_secret: \"{SECRET}\" }}"),
            &format!("credentials: {{ webhook_secret: \"{SECRET}\", access_token: \"{TOKEN}\" }}"),
        )
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .expect("validate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("waybill.yaml:"), "{said}");
    assert!(said.contains("shop_domain"), "{said}");
    assert!(!said.contains(TOKEN), "{said}");
}

#[tokio::test]
async fn after_a_5xx_the_fulfillment_is_looked_up_not_made_again() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    shopify.shop().fail_after_create = Some(502);
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    let app = App::start(&dir).await;
    order_paid(&app, 8_100_000_007, "wb-7").await;
    eventually(Duration::from_secs(60), "the fulfillment found", || async {
        let metrics = app.metrics().await;
        metrics
            .contains(r#"waybill_write_backs_total{store="shopify",operation="fulfillment",outcome="found"} 1"#)
            .then_some(())
    })
    .await;
    {
        let shop_state = shopify.shop();
        assert_eq!(shop_state.create_times.len(), 1, "never sent again");
        assert_eq!(shop_state.lookups, 1);
    }
    // Status events go to the fulfillment found.
    callback(
        &app.http,
        app.url("").trim_end_matches('/'),
        "CX-WB0",
        "Delivered",
        12,
    )
    .await;
    eventually(Duration::from_secs(60), "the DELIVERED event", || async {
        (shopify.shop().events.len() == 1).then_some(())
    })
    .await;
    assert_eq!(shopify.shop().events[0].0, "gid://shopify/Fulfillment/500");
    assert!(dead_letters(&app, "shopify-tracking").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn access_denied_is_permanent_and_names_the_scope() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    shopify.shop().denied_scope = Some("write_merchant_managed_fulfillment_orders".into());
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    let app = App::start(&dir).await;
    order_paid(&app, 8_100_000_008, "wb-8").await;
    let letters = first_dead_letters(&app, "shopify-tracking").await;
    let headers = &letters[0].message.headers;
    assert_eq!(headers[header::ERROR_CLASS], "permanent");
    assert!(
        headers[header::ERROR_MESSAGE].contains("write_merchant_managed_fulfillment_orders"),
        "{headers:?}"
    );
    assert_eq!(shopify.shop().create_times.len(), 1, "not retried");
    app.stop().await;
}

/// The whole loop on one order: booked at PostEx, one fulfillment at
/// Shopify, one event per mapped status from the courier's callbacks, the
/// COD collected on delivery and remitted by PostEx's payment status, and
/// `cod report` saying so.
#[tokio::test]
async fn the_loop_closes_from_booking_to_remittance() {
    let courier = postex().await;
    let shopify = FakeShopify::default();
    let shop = shopify.start().await;
    let dir = tree(&courier, &shop, TOKEN);
    dir.edit("waybill.yaml", |t| {
        format!("{t}cod: {{ payment_interval: 1s }}\n")
    });
    let app = App::start(&dir).await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    order_paid(&app, 8_100_000_090, "loop-1").await;
    eventually(Duration::from_secs(60), "one fulfillment", || async {
        (shopify.shop().creates.len() == 1).then_some(())
    })
    .await;
    for (hour, status) in [
        (10, "Picked By PostEx"),
        (11, "PostEx WareHouse"),
        (12, "Out For Delivery"),
        (14, "Delivered"),
    ] {
        callback(&app.http, base, "CX-WB0", status, hour).await;
    }
    let remitted = eventually(Duration::from_secs(60), "the COD remitted", || async {
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.tracking_number == "CX-WB0" && s.cod_state.as_str() == "remitted")
    })
    .await;
    assert_eq!(remitted.status.as_str(), "delivered");
    assert!(remitted.cod_collected_at.is_some(), "{remitted:?}");
    assert_eq!(
        remitted.cod_remittance_ref.as_deref(),
        Some("CPR-71 / CPR-72")
    );
    eventually(Duration::from_secs(30), "three events", || async {
        (shopify.shop().events.len() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        event_statuses(&shopify),
        ["DELIVERED", "IN_TRANSIT", "OUT_FOR_DELIVERY"]
    );
    assert_eq!(shopify.shop().creates.len(), 1);
    let report: Value =
        serde_json::from_str(&waybill_cli(&dir, &["cod", "report", "--format", "json"]))
            .expect("cod report JSON");
    let line = &report["shipments"][0];
    assert_eq!(line["tracking_number"], "CX-WB0", "{report:#}");
    assert_eq!(line["state"], "remitted", "{report:#}");
    assert_eq!(line["remittance_ref"], "CPR-71 / CPR-72", "{report:#}");
    assert_eq!(
        line["expected"],
        remitted.cod_amount.clone().unwrap_or_default()
    );
    app.stop().await;
}
