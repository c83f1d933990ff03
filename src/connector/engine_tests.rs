//! The engine against real HTTP (wiremock) and the sandbox: PostEx's answers
//! classified, URLs that order data cannot steer, secrets redacted.

use super::*;
use crate::connector::sandbox::Sandbox;
use std::path::{Path, PathBuf};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "tok-S3CRET/value";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped PostEx connector, with a body mapping that passes the shipment through.
fn postex(dir: &Path) -> Connector {
    std::fs::create_dir_all(dir.join("mappings/postex")).unwrap();
    for body in ["book.yaml", "cancel.yaml"] {
        std::fs::write(
            dir.join("mappings/postex").join(body),
            "\"{{ shipment }}\"\n",
        )
        .unwrap();
    }
    Connector::load_with_base(&repo().join("connectors/postex.yaml"), dir).unwrap()
}

/// A connector written for one test, rooted in `dir`.
fn custom(dir: &Path, yaml: &str) -> Connector {
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("mappings/pass.yaml"), "\"{{ shipment }}\"\n").unwrap();
    let file = dir.join("custom.yaml");
    std::fs::write(&file, yaml).unwrap();
    Connector::load_with_base(&file, dir).unwrap()
}

fn account(base_url: &str) -> Account {
    Account {
        name: "courier-main".into(),
        connector: "postex".into(),
        credentials: [("token".to_string(), TOKEN.to_string())].into(),
        settings: Map::new(),
        base_url: Some(base_url.into()),
        secrets: Secrets::new([TOKEN]),
        active: true,
        rate_limit: None,
    }
}

fn shipment() -> Value {
    json!({ "order_id": "820982911946154508", "reference": "#1001", "recipient": { "city": "Karachi" } })
}

/// What was sent and answered in the exchange that failed.
fn exchange(failure: &Failure) -> &Exchange {
    failure.exchange.as_ref().expect("an exchange")
}

fn response(failure: &Failure) -> String {
    exchange(failure).response.clone().expect("a response")
}

fn sent_request(failure: &Failure) -> Value {
    exchange(failure).request.clone().expect("a request")
}

fn engine() -> Engine {
    Engine::new(Engine::client().unwrap(), "http://127.0.0.1:9".into())
}

/// Books against a courier answering `answer`, expecting the booking to fail.
async fn booking_failure(answer: ResponseTemplate) -> Failure {
    book_against(answer).await.unwrap_err()
}

async fn book_against(answer: ResponseTemplate) -> Result<BookingResult, Failure> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .and(header("token", TOKEN))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let connector = postex(dir.path());
    book_shipment(&connector, &account(&server.uri())).await
}

/// Books the test shipment with `connector` for `account`, as the runner would.
async fn book_shipment(connector: &Connector, account: &Account) -> Result<BookingResult, Failure> {
    let engine = engine();
    let request = engine
        .prepare_book(connector, account, &shipment())
        .unwrap();
    engine.book(connector, account, request).await
}

fn postex_answer(status_code: &str, message: &str, dist: Value) -> Value {
    json!({ "statusCode": status_code, "statusMessage": message, "dist": dist })
}

#[tokio::test]
async fn postex_success_gives_the_tracking_number() {
    let body = postex_answer(
        "200",
        "ORDER HAS BEEN CREATED",
        json!({ "trackingNumber": "CX-123456", "orderStatus": "UnBooked" }),
    );
    let booked = book_against(ResponseTemplate::new(200).set_body_json(body))
        .await
        .unwrap();
    assert_eq!(booked.tracking_number, "CX-123456");
    assert_eq!(booked.courier, "postex");
    assert_eq!(booked.account, "courier-main");
    assert_eq!(booked.extracted["order_status"], "UnBooked");
}

#[tokio::test]
async fn postex_error_inside_a_200_is_permanent_with_its_message() {
    let body = postex_answer("400", "Customer phone number is not valid", Value::Null);
    let err = booking_failure(ResponseTemplate::new(200).set_body_json(body)).await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.status(), Some(200));
    assert!(
        err.message.contains("Customer phone number is not valid"),
        "{}",
        err.message
    );
    assert!(response(&err).contains("statusCode"));
}

#[tokio::test]
async fn postex_invalid_city_rule_wins_over_the_status_default() {
    // 503 alone would be retried; the body says retrying cannot help.
    let body = postex_answer("400", "Invalid City Name", Value::Null);
    let err = booking_failure(ResponseTemplate::new(503).set_body_json(body)).await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("Invalid City Name"));
}

#[tokio::test]
async fn too_many_requests_is_retryable_with_retry_after() {
    let err = booking_failure(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn unavailable_is_retryable() {
    let err = booking_failure(ResponseTemplate::new(503).set_body_string("maintenance")).await;
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(err.retry_after, None);
}

#[tokio::test]
async fn server_errors_are_ambiguous() {
    for status in [500, 502, 504] {
        let err = booking_failure(ResponseTemplate::new(status)).await;
        assert_eq!(err.class, ErrorClass::Ambiguous, "{status}");
        assert_eq!(err.status(), Some(status));
    }
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    let err = booking_failure(ResponseTemplate::new(401).set_body_string("bad token")).await;
    assert_eq!(err.class, ErrorClass::Permanent);
}

#[tokio::test]
async fn non_json_success_is_classified() {
    let err =
        booking_failure(ResponseTemplate::new(200).set_body_string("<html>gateway says hi</html>"))
            .await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("gateway says hi"));
}

#[tokio::test]
async fn huge_garbage_is_capped_and_classified() {
    let garbage = vec![b'{'; 3 * MAX_RESPONSE_BYTES];
    let err = booking_failure(ResponseTemplate::new(200).set_body_bytes(garbage)).await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(response(&err).len() <= KEPT_RESPONSE_BYTES);
}

#[tokio::test]
async fn success_without_tracking_number_is_ambiguous() {
    let body = postex_answer(
        "200",
        "ORDER HAS BEEN CREATED",
        json!({ "orderStatus": "UnBooked" }),
    );
    let err = booking_failure(ResponseTemplate::new(200).set_body_json(body)).await;
    assert_eq!(err.class, ErrorClass::Ambiguous);
}

#[tokio::test]
async fn timeout_after_sending_is_ambiguous() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let connector = custom(
        dir.path(),
        "name: slow\nkind: courier\nbase_url: http://unused.example.com\noperations:\n  book:\n    request: { method: POST, path: /book, body: mappings/pass.yaml }\n    success: \"response.status == 200\"\n    extract: { tracking_number: \"$.cn\" }\n    timeout: 100ms\n",
    );
    let err = book_shipment(&connector, &account(&server.uri()))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Ambiguous, "{err:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let connector = postex(dir.path());
    let err = book_shipment(&connector, &account(&format!("http://{address}/api")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable, "{err:?}");
    assert!(!sent_request(&err).to_string().contains(TOKEN));
}

#[tokio::test]
async fn order_data_cannot_steer_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_answer(
            "200",
            "ok",
            json!({ "transactionStatus": "Delivered" }),
        )))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let connector = postex(dir.path());
    let account = account(&format!("{}/services/integration/api", server.uri()));
    let engine = engine();
    for hostile in [
        "../../../admin",
        "x?steal=1#frag",
        "//evil.example.com/x",
        "http://evil.example.com/",
        "..",
        "%2e%2e",
    ] {
        let mut vars = Map::new();
        vars.insert("tracking_number".into(), json!(hostile));
        let ctx = Engine::context(&account, vars);
        match engine.prepare(&connector, "track", &account, &ctx) {
            Ok(request) => {
                assert!(
                    request.url.starts_with(&format!(
                        "{}/services/integration/api/order/v1/track-order/",
                        server.uri()
                    )),
                    "{hostile}: {}",
                    request.url
                );
                let output = engine
                    .execute(&connector, "track", &account, request)
                    .await
                    .unwrap();
                assert_eq!(output.extracted["status"], "Delivered");
            }
            Err(err) => assert_eq!(err.class, ErrorClass::Permanent, "{hostile}"),
        }
    }
    for request in server.received_requests().await.unwrap() {
        let segments: Vec<&str> = request.url.path_segments().unwrap().collect();
        assert_eq!(segments.len(), 7, "{}", request.url);
        assert_eq!(
            segments[..6],
            [
                "services",
                "integration",
                "api",
                "order",
                "v1",
                "track-order"
            ]
        );
        assert!(request.url.query().is_none());
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
}

#[tokio::test]
async fn secrets_are_redacted_everywhere() {
    let server = MockServer::start().await;
    let echoed = format!("token {TOKEN} refused");
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_string(echoed))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let connector = postex(dir.path());
    let account = account(&server.uri());
    let engine = engine();
    let mut leaky = shipment();
    leaky["notes"] = json!(format!("call me, my token is {TOKEN}"));
    let request = engine.prepare_book(&connector, &account, &leaky).unwrap();
    assert_eq!(request.headers, [("token".to_string(), TOKEN.to_string())]);
    let shown = request.redacted().to_string();
    assert!(
        !shown.contains(TOKEN) && !shown.contains("S3CRET"),
        "{shown}"
    );
    assert!(shown.contains("***"));
    let err = engine
        .book(&connector, &account, request)
        .await
        .unwrap_err();
    for text in [
        err.message.clone(),
        response(&err),
        sent_request(&err).to_string(),
    ] {
        assert!(!text.contains("S3CRET"), "{text}");
    }
}

#[tokio::test]
async fn sandbox_books_through_the_engine_once_per_reference() {
    let sandbox = Sandbox::new();
    let self_base = crate::connector::sandbox::tests::serve(&sandbox).await;
    let connector = Connector::load(&repo().join("connectors/sandbox.yaml")).unwrap();
    let account = Account {
        name: "courier-main".into(),
        connector: "sandbox".into(),
        credentials: BTreeMap::new(),
        settings: Map::new(),
        base_url: None,
        secrets: Secrets::default(),
        active: true,
        rate_limit: None,
    };
    let engine = Engine::new(Engine::client().unwrap(), self_base);
    let mut numbers = Vec::new();
    for _ in 0..2 {
        let request = engine
            .prepare_book(&connector, &account, &shipment())
            .unwrap();
        assert!(request.url.ends_with("/sandbox/book"));
        numbers.push(
            engine
                .book(&connector, &account, request)
                .await
                .unwrap()
                .tracking_number,
        );
    }
    assert!(numbers[0].starts_with("SBX-"));
    assert_eq!(numbers[0], numbers[1]);
    assert_eq!(sandbox.bookings(), 1);
}
#[test]
fn a_retry_after_expression_gives_a_bounded_wait() {
    assert_eq!(seconds(json!(2.5)), Some(Duration::from_millis(2500)));
    assert_eq!(seconds(json!("3")), Some(Duration::from_secs(3)));
    assert_eq!(seconds(json!(-4)), Some(Duration::ZERO));
    assert_eq!(seconds(json!(1e12)), Some(MAX_ASKED_WAIT));
    assert_eq!(seconds(json!(null)), None);
    assert_eq!(seconds(json!("soon")), None);
}

#[tokio::test]
async fn a_throttled_answer_waits_as_the_body_says_and_lists_are_extracted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "errors": [{ "message": "Throttled", "extensions": { "code": "THROTTLED" } }],
            "extensions": { "cost": { "requestedQueryCost": 12,
                "throttleStatus": { "currentlyAvailable": 2.0, "restoreRate": 4.0 } } }
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": { "nodes": [{ "id": "a", "open": true }, { "id": "b", "open": false }, { "id": "c", "open": true }] }
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let connector = custom(
        dir.path(),
        "name: gql\nkind: store\nbase_url: http://unused.example.com\noperations:\n  open_fulfillments:\n    request: { method: POST, path: /graphql.json, body: mappings/pass.yaml }\n    success: \"response.status == 200 and body.data\"\n    extract: { open: \"$.data.nodes[?@.open == true].id\", first: \"$.data.nodes[0].id\" }\n    errors:\n      - when: \"body.errors[0] is mapping and body.errors[0].extensions.code == 'THROTTLED'\"\n        class: retryable\n        retry_after: \"(body.extensions.cost.requestedQueryCost - body.extensions.cost.throttleStatus.currentlyAvailable) / body.extensions.cost.throttleStatus.restoreRate\"\n",
    );
    let account = account(&server.uri());
    let engine = engine();
    let mut vars = Map::new();
    vars.insert("shipment".into(), json!({}));
    let ctx = Engine::context(&account, vars);
    let send = || async {
        let request = engine
            .prepare(&connector, "open_fulfillments", &account, &ctx)
            .unwrap();
        engine
            .execute(&connector, "open_fulfillments", &account, request)
            .await
    };
    let throttled = send().await.unwrap_err();
    assert_eq!(throttled.class, ErrorClass::Retryable);
    assert_eq!(throttled.stage, "write_back");
    assert_eq!(throttled.retry_after, Some(Duration::from_millis(2500)));
    let output = send().await.unwrap();
    assert_eq!(output.extracted["open"], json!(["a", "c"]));
    assert_eq!(output.extracted["first"], json!("a"));
}
