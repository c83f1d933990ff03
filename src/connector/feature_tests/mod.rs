//! The engine features couriers' APIs need, each against a real HTTP server
//! (wiremock) following the shapes in the courier reference: form and
//! query-string bodies with credentials in them, HTTP Basic, a token
//! exchange (cached, shared, refreshed on expiry and after a 401), binary
//! labels, name → id lookups, the account check, and secrets redacted in
//! every failure whatever the encoding.

use super::{Account, Connector, Engine};
use crate::model::{ErrorClass, Failure};
use crate::redact::Secrets;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

mod token;

const PASSWORD: &str = "pa$s/w0rd&=SECRET";
const CLIENT_SECRET: &str = "cl1ent+secret/XYZ";

/// A connector written for one test, with its mapping files, rooted in `dir`.
fn connector(dir: &Path, yaml: &str, mappings: &[(&str, &str)]) -> Connector {
    for (file, text) in mappings {
        let file = dir.join(file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    let file = dir.join("connectors/c.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, yaml).unwrap();
    Connector::load_with_base(&file, dir).unwrap_or_else(|d| panic!("{d:#?}"))
}

fn account(base_url: &str, credentials: &[(&str, &str)], secret: &[&str]) -> Account {
    Account {
        name: "courier-main".into(),
        connector: "c".into(),
        credentials: credentials
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        settings: Map::new(),
        base_url: Some(base_url.into()),
        secrets: Secrets::new(secret.iter().copied()),
        active: true,
        rate_limit: None,
    }
}

fn engine() -> Engine {
    Engine::new(Engine::client().unwrap(), "http://127.0.0.1:9".into())
}

fn shipment(city: &str) -> Value {
    json!({ "reference": "#1001", "recipient": { "name": "Ali & Sons=1", "city": city }, "cod_amount": 1500 })
}

async fn book(engine: &Engine, c: &Connector, a: &Account, city: &str) -> Result<String, Failure> {
    engine.warm(c, a).await?;
    let request = engine.prepare_book(c, a, &shipment(city))?;
    engine.book(c, a, request).await.map(|b| b.tracking_number)
}

/// Every text a failure shows: message, request as sent, answer as kept.
fn shown(failure: &Failure) -> Vec<String> {
    let exchange = failure.exchange.clone().unwrap_or_default();
    vec![
        failure.message.clone(),
        exchange.request.map(|r| r.to_string()).unwrap_or_default(),
        exchange.response.unwrap_or_default(),
        format!("{failure:?}"),
    ]
}

fn assert_hidden(failure: &Failure, secret: &str) {
    let needle = &secret[secret.len() / 2..];
    for text in shown(failure) {
        assert!(!text.contains(needle), "`{needle}` shows in {text}");
    }
}

/// Every encoding of `secret` a courier might echo it in.
fn echoes(secret: &str) -> String {
    use base64::Engine as _;
    let form = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>();
    let json = serde_json::to_string(secret).unwrap().replace('/', "\\/");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{secret}"));
    format!(
        "as sent {secret} | form {form} | json {json} | basic {b64} | upper {}",
        secret.to_uppercase()
    )
}

const LEOPARDS: &str = r#"
name: c
kind: courier
credentials:
  api_key: { type: string, required: true }
  api_password: { type: string, secret: true, required: true }
base_url: https://merchantapi.leopardscourier.com/api
lookups:
  cities: { table: { Karachi: 789, "karachi city": 789, Lahore: 202 } }
operations:
  book:
    request: { method: POST, path: /bookPacket/format/json/, body: mappings/l/book.yaml, encoding: form }
    success: "body.status == 1"
    extract: { tracking_number: "$.track_number" }
    error_message: "body.error"
"#;

const LEOPARDS_BOOK: &str = r#"
api_key: "{{ credentials.api_key }}"
api_password: "{{ credentials.api_password }}"
consignment_name_eng: "{{ shipment.recipient.name }}"
booked_packet_collect_amount: "{{ shipment.cod_amount }}"
destination_city: "{{ shipment.recipient.city | city_id }}"
"#;

#[tokio::test]
async fn a_form_body_carries_credentials_and_ids_encoded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/bookPacket/format/json/"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 1, "error": 0, "track_number": "KI7501234" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(
        dir.path(),
        LEOPARDS,
        &[("mappings/l/book.yaml", LEOPARDS_BOOK)],
    );
    let a = account(
        &format!("{}/api", server.uri()),
        &[("api_key", "K1"), ("api_password", PASSWORD)],
        &[PASSWORD],
    );
    let engine = engine();
    assert_eq!(
        book(&engine, &c, &a, "  KARACHI   city ").await.unwrap(),
        "KI7501234"
    );
    let sent = &server.received_requests().await.unwrap()[0];
    let form: std::collections::BTreeMap<String, String> = url::form_urlencoded::parse(&sent.body)
        .into_owned()
        .collect();
    assert_eq!(form["api_password"], PASSWORD);
    assert_eq!(form["consignment_name_eng"], "Ali & Sons=1");
    assert_eq!(form["destination_city"], "789");
    assert_eq!(form["booked_packet_collect_amount"], "1500");
    assert_eq!(form.len(), 5);
    // `try` shows the request with the password masked.
    let prepared = engine.prepare_book(&c, &a, &shipment("Lahore")).unwrap();
    assert!(!prepared.redacted().to_string().contains("SECRET"));
}

#[tokio::test]
async fn an_unknown_city_is_a_permanent_error_naming_it_and_sends_nothing() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(
        dir.path(),
        LEOPARDS,
        &[("mappings/l/book.yaml", LEOPARDS_BOOK)],
    );
    let a = account(
        &server.uri(),
        &[("api_key", "K1"), ("api_password", PASSWORD)],
        &[PASSWORD],
    );
    let err = book(&engine(), &c, &a, "Atlantis").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("unknown city `Atlantis`"),
        "{}",
        err.message
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn body_credentials_are_redacted_in_every_encoding_echoed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 0, "error": echoes(PASSWORD) })),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(
        dir.path(),
        LEOPARDS,
        &[("mappings/l/book.yaml", LEOPARDS_BOOK)],
    );
    let a = account(
        &server.uri(),
        &[("api_key", "K1"), ("api_password", PASSWORD)],
        &[PASSWORD],
    );
    let err = book(&engine(), &c, &a, "Lahore").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("as sent ***"), "{}", err.message);
    assert_hidden(&err, PASSWORD);
    for encoded in [
        url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>(),
        serde_json::to_string(PASSWORD).unwrap(),
    ] {
        for text in shown(&err) {
            assert!(
                !text.contains(encoded.trim_matches('"')),
                "{encoded} in {text}"
            );
        }
    }
}

const CALLCOURIER: &str = r#"
name: c
kind: courier
credentials:
  login_id: { type: string, secret: true, required: true }
base_url: https://cod.callcourier.com.pk
lookups:
  cities: { operation: cities, ttl: 1h }
operations:
  cities:
    request: { method: GET, path: /API/CallCourier/GetCityListByService, query: { serviceID: "7" } }
    success: "response.status == 200"
    each: "$[*]"
    extract: { name: "$.CityName", id: "$.CityID" }
  book:
    request: { method: GET, path: /API/CallCourier/SaveBooking, body: mappings/cc/book.yaml, encoding: query }
    success: "response.status == 200 and body.CNNO"
    extract: { tracking_number: "$.CNNO" }
"#;

const CALLCOURIER_BOOK: &str = r#"
loginId: "{{ credentials.login_id }}"
ConsigneeName: "{{ shipment.recipient.name }}"
DestCityId: "{{ shipment.recipient.city | city_id }}"
CodAmount: "{{ shipment.cod_amount }}"
"remarks?": "{{ none }}"
"#;

#[tokio::test]
async fn a_get_books_with_its_fields_in_the_query_and_city_ids_from_a_cached_list() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/GetCityListByService"))
        .and(query_param("serviceID", "7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            { "CityID": 1, "CityName": "Karachi" }, { "CityID": 2, "CityName": "Lahore" }, { "CityName": "no id" }
        ])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/SaveBooking"))
        .and(query_param("DestCityId", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "CNNO": "1011234567", "Response": "true" })),
        )
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(
        dir.path(),
        CALLCOURIER,
        &[("mappings/cc/book.yaml", CALLCOURIER_BOOK)],
    );
    let a = account(
        &server.uri(),
        &[("login_id", "L-0001&x=1")],
        &["L-0001&x=1"],
    );
    let engine = engine();
    for _ in 0..2 {
        assert_eq!(book(&engine, &c, &a, "lahore").await.unwrap(), "1011234567");
    }
    let booked = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path().ends_with("SaveBooking"))
        .unwrap();
    assert!(booked.body.is_empty());
    let query: std::collections::BTreeMap<String, String> =
        booked.url.query_pairs().into_owned().collect();
    assert_eq!(query["loginId"], "L-0001&x=1");
    assert_eq!(query["ConsigneeName"], "Ali & Sons=1");
    assert_eq!(query.len(), 4, "{query:?}");
    let err = book(&engine, &c, &a, "Quetta").await.unwrap_err();
    assert!(
        err.message.contains("unknown city `Quetta`"),
        "{}",
        err.message
    );
}

const BLUEEX: &str = r#"
name: c
kind: courier
credentials:
  account_no: { type: string, required: true }
  password: { type: string, secret: true, required: true }
base_url: https://bigazure.com/api/json_v3
auth:
  basic: { username: "{{ credentials.account_no }}", password: "{{ credentials.password }}" }
operations:
  book:
    request: { method: POST, path: /shipment/create_shipment.php, body: mappings/b/book.yaml }
    success: "body.status == '1'"
    extract: { tracking_number: "$.cn" }
    error_message: "body.message"
"#;

#[tokio::test]
async fn basic_auth_is_sent_from_the_credentials_and_never_shown() {
    use base64::Engine as _;
    let server = MockServer::start().await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("KHI-00000:{PASSWORD}"))
    );
    Mock::given(method("POST"))
        .and(header("authorization", expected.as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "status": "1", "cn": "5012345678" })),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_string(format!("bad credentials {expected}")),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(
        dir.path(),
        BLUEEX,
        &[(
            "mappings/b/book.yaml",
            "customer_name: \"{{ shipment.recipient.name }}\"\n",
        )],
    );
    let a = account(
        &server.uri(),
        &[("account_no", "KHI-00000"), ("password", PASSWORD)],
        &[PASSWORD],
    );
    let engine = engine();
    assert_eq!(
        book(&engine, &c, &a, "Karachi").await.unwrap(),
        "5012345678"
    );
    let err = book(&engine, &c, &a, "Karachi").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_hidden(&err, &expected);
    assert_hidden(&err, PASSWORD);
}

const LABEL: &str = r#"
name: c
kind: courier
credentials:
  api_key: { type: string, secret: true, required: true }
base_url: https://sonic.pk/api
operations:
  book:
    request: { method: POST, path: /shipment/book, headers: { Authorization: "{{ credentials.api_key }}" } }
    success: "body.status == 0"
    extract: { tracking_number: "$['tracking number']" }
  label:
    request: { method: GET, path: /shipment/air_waybill, headers: { Authorization: "{{ credentials.api_key }}" }, query: { tracking_number: "{{ tracking_number }}", type: "1" } }
    response: { format: binary, content_types: [application/pdf] }
    success: "response.status == 200"
    error_message: "body.message"
"#;

#[tokio::test]
async fn a_label_keeps_its_bytes_and_content_type() {
    let server = MockServer::start().await;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend((0..=255u8).cycle().take(3 * 1024 * 1024));
    Mock::given(method("GET"))
        .and(path("/shipment/air_waybill"))
        .and(query_param("tracking_number", "101101"))
        .and(query_param("type", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(pdf.clone(), "application/pdf"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/shipment/air_waybill"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 1, "message": "Invalid tracking number" })),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(dir.path(), LABEL, &[]);
    let a = account(
        &server.uri(),
        &[("api_key", "trax-KEY-SECRET")],
        &["trax-KEY-SECRET"],
    );
    let engine = engine();
    let label = engine.label(&c, &a, "101101").await.unwrap();
    assert_eq!(label.content_type.as_deref(), Some("application/pdf"));
    assert!(
        label.bytes.as_deref() == Some(&pdf[..]),
        "the PDF bytes changed"
    );
    assert_eq!(label.body, Value::Null);
    let err = engine.label(&c, &a, "999").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.stage, "label");
    assert!(err.message.contains("application/json"), "{}", err.message);
    assert!(
        err.message.contains("Invalid tracking number"),
        "{}",
        err.message
    );
}

const CHECKED: &str = r#"
name: c
kind: courier
credentials:
  api_key: { type: string, secret: true, required: true }
base_url: https://sonic.pk/api
account_check:
  operation: track
  vars: { tracking_number: "000000000000" }
  ok_when: "response.status == 404 and body.message == 'Shipment not found'"
operations:
  book:
    request: { method: POST, path: /shipment/book }
    success: "body.status == 0"
    extract: { tracking_number: "$.cn" }
  track:
    request: { method: GET, path: /shipment/track, headers: { Authorization: "{{ credentials.api_key }}" }, query: { tracking_number: "{{ tracking_number }}" } }
    success: "response.status == 200 and body.status == 0"
    extract: { status: "$.current_status" }
    error_message: "body.message"
"#;

#[tokio::test]
async fn the_account_check_accepts_not_found_and_reports_the_couriers_refusal() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "good-KEY"))
        .and(query_param("tracking_number", "000000000000"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({ "status": 1, "message": "Shipment not found" })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "status": 1, "message": "Unauthenticated: bad-KEY" })),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(dir.path(), CHECKED, &[]);
    let engine = engine();
    let good = account(&server.uri(), &[("api_key", "good-KEY")], &["good-KEY"]);
    engine.check_account(&c, &good).await.unwrap().unwrap();
    let bad = account(&server.uri(), &[("api_key", "bad-KEY")], &["bad-KEY"]);
    let err = engine.check_account(&c, &bad).await.unwrap().unwrap_err();
    assert!(
        err.message.contains("Unauthenticated: ***"),
        "{}",
        err.message
    );
    let none = connector(tempfile::tempdir().unwrap().path(), LABEL, &[]);
    assert!(engine.check_account(&none, &good).await.is_none());
}

#[test]
fn feature_mistakes_are_reported_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("connectors")).unwrap();
    let file = dir.path().join("connectors/c.yaml");
    let cases = [
        ("auth:\n  token: {}\n", "needs an operation `token`"),
        (
            "lookups:\n  cities: { operation: cities }\n",
            "no operation `cities`",
        ),
        ("lookups:\n  cities: {}\n", "exactly one of `table`"),
        (
            "account_check: { operation: label }\n",
            "no operation `label`",
        ),
        (
            "auth:\n  basic: { username: \"{{ x\", password: p }\n",
            "auth.basic.username",
        ),
    ];
    for (extra, problem) in cases {
        let yaml = format!(
            "name: c\nkind: courier\nbase_url: https://x.example.com\noperations:\n  book:\n    request: {{ method: POST, path: /b }}\n    success: \"true\"\n    extract: {{ tracking_number: \"$.cn\" }}\n{extra}"
        );
        std::fs::write(&file, &yaml).unwrap();
        let diagnostics = Connector::load_with_base(&file, dir.path()).unwrap_err();
        assert!(
            diagnostics
                .iter()
                .any(|d| d.message.contains(problem) && d.line > 8),
            "{extra}: {diagnostics:#?}"
        );
    }
    let ops = [
        (
            "  cities:\n    request: { method: GET, path: /c }\n    success: \"true\"\n    extract: { name: \"$.n\" }\n",
            "`cities` needs `each`",
        ),
        (
            "  token:\n    request: { method: GET, path: /t }\n    success: \"true\"\n",
            "must extract `token`",
        ),
        (
            "  label:\n    request: { method: GET, path: /l, encoding: form }\n    success: \"true\"\n",
            "name one with `body:`",
        ),
    ];
    for (op, problem) in ops {
        let yaml = format!(
            "name: c\nkind: courier\nbase_url: https://x.example.com\noperations:\n  book:\n    request: {{ method: POST, path: /b }}\n    success: \"true\"\n    extract: {{ tracking_number: \"$.cn\" }}\n{op}"
        );
        std::fs::write(&file, &yaml).unwrap();
        let diagnostics = Connector::load_with_base(&file, dir.path()).unwrap_err();
        assert!(
            diagnostics.iter().any(|d| d.message.contains(problem)),
            "{op}: {diagnostics:#?}"
        );
    }
}

#[test]
fn an_accounts_own_rate_limit_paces_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = connector(dir.path(), LABEL, &[]);
    let engine = engine();
    let mut limited = account("https://sonic.pk/api", &[("api_key", "k")], &[]);
    limited.rate_limit = Some(super::RateLimit {
        requests: 1,
        per: Duration::from_secs(3600),
    });
    assert_eq!(engine.pace(&c, &limited), Duration::ZERO);
    assert!(engine.pace(&c, &limited) > Duration::from_secs(3000));
    let mut free = limited.clone();
    free.name = "other".into();
    free.rate_limit = None;
    assert_eq!(engine.pace(&c, &free), Duration::ZERO);
    assert_eq!(engine.pace(&c, &free), Duration::ZERO);
}

const TRAX: &str = r#"
name: c
kind: courier
base_url: https://sonic.pk/api
lookups:
  services: { table: { standard: 1, "Same Day": 4 } }
  cities: { table: { Karachi: 202 } }
operations:
  book:
    request: { method: POST, path: /shipment/book, body: mappings/t/book.yaml }
    success: "body.status == 0"
    extract: { tracking_number: "$['tracking number']" }
"#;

#[tokio::test]
async fn a_table_lookup_gives_service_ids_and_refuses_an_unknown_service() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 0, "tracking number": 101101 })),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let book_yaml = "service_type_id: \"{{ shipment.service | lookup_id('services') }}\"\nconsignee_city_id: \"{{ shipment.recipient.city | city_id }}\"\n";
    let c = connector(dir.path(), TRAX, &[("mappings/t/book.yaml", book_yaml)]);
    let a = account(&server.uri(), &[], &[]);
    let engine = engine();
    let mut same_day = shipment("karachi");
    same_day["service"] = json!("same  day");
    let request = engine.prepare_book(&c, &a, &same_day).unwrap();
    assert_eq!(
        request.body,
        Some(json!({ "service_type_id": 4, "consignee_city_id": 202 }))
    );
    assert_eq!(
        engine.book(&c, &a, request).await.unwrap().tracking_number,
        "101101"
    );
    let mut overnight = shipment("Karachi");
    overnight["service"] = json!("overnight");
    let err = engine.prepare_book(&c, &a, &overnight).unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message
            .contains("`overnight` is not in the connector's `services` lookup"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_fetched_list_is_kept_for_its_ttl_then_fetched_again() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/CallCourier/GetCityListByService"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{ "CityID": 2, "CityName": "Lahore" }])),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = CALLCOURIER.replace("ttl: 1h", "ttl: 300ms");
    let c = connector(
        dir.path(),
        &yaml,
        &[("mappings/cc/book.yaml", CALLCOURIER_BOOK)],
    );
    let a = account(&server.uri(), &[("login_id", "L-1")], &["L-1"]);
    let other = Account {
        name: "courier-two".into(),
        ..a.clone()
    };
    let engine = engine();
    let fetches = || async { server.received_requests().await.unwrap().len() };
    engine.warm(&c, &a).await.unwrap();
    engine.warm(&c, &a).await.unwrap();
    assert_eq!(fetches().await, 1);
    // Each account has its own list.
    engine.warm(&c, &other).await.unwrap();
    assert_eq!(fetches().await, 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        engine.prepare_book(&c, &a, &shipment("Lahore")).is_err(),
        "an expired list is not used"
    );
    engine.warm(&c, &a).await.unwrap();
    assert_eq!(fetches().await, 3);
    let request = engine.prepare_book(&c, &a, &shipment("Lahore")).unwrap();
    assert!(request.url.contains("DestCityId=2"), "{}", request.url);
}
