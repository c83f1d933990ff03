//! `waybill accounts list` and `waybill accounts test [--book]`, against the
//! sandbox waybill serves itself and against a courier declared in a
//! connector file written here, stubbed with wiremock: form body with the
//! credentials in it, a token exchange, a binary label and a cancel.

use crate::common::*;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_PASSWORD: &str = "api-pa55/word&SECRET";
const CLIENT_SECRET: &str = "client-s3cret+XYZ";
const TOKEN: &str = "issued-t0ken-VALUE";

/// Runs `waybill ARGS --config <tree>` off the async runtime: exit code and stdout.
async fn cli(dir: &ConfigDir, args: &[&str]) -> (i32, String, String) {
    let config = dir.path();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run waybill");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// Adds accounts after `courier-main`, the last entry of `accounts:`.
fn add_accounts(dir: &ConfigDir, accounts: &str) {
    dir.edit("waybill.yaml", |text| {
        text.replacen(
            "pipelines: [",
            &format!("{}pipelines: [", indent(accounts)),
            1,
        )
    });
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// A courier declared in YAML only: Leopards-like form booking with the
/// credentials in the body, a TCS-like token exchange, a Trax-like label.
const STUB_CONNECTOR: &str = r#"
name: stubcourier
kind: courier
credentials:
  api_key: { type: string, required: true }
  api_password: { type: string, secret: true, required: true }
  client_id: { type: string, required: true }
  client_secret: { type: string, secret: true, required: true }
base_url: https://courier.invalid/api
auth:
  token: { header: Authorization, value: "Bearer {{ token }}" }
lookups:
  cities: { operation: cities }
account_check: { operation: cities }
operations:
  token:
    request: { method: POST, path: /auth, body: mappings/stubcourier/token.yaml, encoding: form }
    success: "response.status == 200 and body.access_token"
    extract: { token: "$.access_token", expires_in: "$.expires_in" }
    error_message: "body.error"
  cities:
    request: { method: GET, path: /cities }
    success: "response.status == 200 and body.status == 1"
    each: "$.city_list[*]"
    extract: { name: "$.name", id: "$.id" }
    error_message: "body.error"
  book:
    request: { method: POST, path: /bookPacket, body: mappings/stubcourier/book.yaml, encoding: form }
    success: "body.status == 1"
    extract: { tracking_number: "$.track_number" }
    error_message: "body.error"
  label:
    request: { method: GET, path: /label, query: { cn: "{{ tracking_number }}" } }
    response: { format: binary, content_types: [application/pdf] }
    success: "response.status == 200"
  cancel:
    request: { method: POST, path: /cancel, body: mappings/stubcourier/cancel.yaml, encoding: form }
    success: "body.status == 1"
    error_message: "body.error"
"#;

const STUB_BOOK: &str = r#"
api_key: "{{ credentials.api_key }}"
api_password: "{{ credentials.api_password }}"
consignment_name_eng: "{{ shipment.recipient.name }}"
booked_packet_order_id: "{{ shipment.reference }}"
booked_packet_collect_amount: "{{ shipment.cod_amount }}"
destination_city: "{{ shipment.recipient.city | city_id }}"
"#;

fn stub_tree(server: &MockServer) -> ConfigDir {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let root = dir.dir.path();
    std::fs::write(root.join("connectors/stubcourier.yaml"), STUB_CONNECTOR).expect("write");
    std::fs::create_dir_all(root.join("mappings/stubcourier")).expect("mkdir");
    for (file, text) in [
        ("book.yaml", STUB_BOOK),
        (
            "token.yaml",
            "client_id: \"{{ credentials.client_id }}\"\nclient_secret: \"{{ credentials.client_secret }}\"\n",
        ),
        (
            "cancel.yaml",
            "api_key: \"{{ credentials.api_key }}\"\napi_password: \"{{ credentials.api_password }}\"\ncn_numbers: \"{{ tracking_number }}\"\n",
        ),
    ] {
        std::fs::write(root.join("mappings/stubcourier").join(file), text).expect("write");
    }
    let stub = |name: &str, password: &str| {
        format!(
            "{name}: {{ connector: stubcourier, base_url: \"{}/api\", credentials: {{ api_key: k1, api_password: \"{password}\", client_id: c1, client_secret: \"{CLIENT_SECRET}\" }} }}\n",
            server.uri()
        )
    };
    add_accounts(
        &dir,
        &format!(
            "{}{}courier-off: {{ connector: sandbox, active: false }}\n",
            stub("courier-stub", API_PASSWORD),
            stub("courier-wrong", "wr0ng-pa55-SECRET")
        ),
    );
    dir
}

async fn mount_stub(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/auth"))
        .and(body_string_contains("client_secret=client-s3cret%2BXYZ"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "access_token": TOKEN, "expires_in": 3600 })),
        )
        .mount(server)
        .await;
    let bearer = format!("Bearer {TOKEN}");
    Mock::given(method("GET"))
        .and(path("/api/cities"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "status": 1, "city_list": [ { "id": 789, "name": "Karachi" }, { "id": 202, "name": "Lahore" } ] })))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/bookPacket"))
        .and(header("authorization", bearer.as_str()))
        .and(body_string_contains(
            "api_password=api-pa55%2Fword%26SECRET",
        ))
        .and(body_string_contains("destination_city=789"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 1, "error": 0, "track_number": "KI7501234" })),
        )
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/bookPacket"))
        .respond_with(|request: &wiremock::Request| {
            let sent = String::from_utf8_lossy(&request.body).into_owned();
            ResponseTemplate::new(200).set_body_json(
                json!({ "status": 0, "error": format!("Invalid API credentials: {sent}") }),
            )
        })
        .mount(server)
        .await;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend([0u8, 0xff, 0xfe, 0x80]);
    Mock::given(method("GET"))
        .and(path("/api/label"))
        .and(query_param("cn", "KI7501234"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(pdf, "application/pdf"))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/cancel"))
        .and(body_string_contains("cn_numbers=KI7501234"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "status": 1, "error": 0 })))
        .mount(server)
        .await;
}

fn assert_no_secrets(text: &str) {
    for secret in [
        API_PASSWORD,
        CLIENT_SECRET,
        TOKEN,
        "wr0ng-pa55-SECRET",
        "pa55%2Fword",
    ] {
        assert!(!text.contains(secret), "`{secret}` printed in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_list_shows_which_credentials_are_set_never_their_values() {
    let server = MockServer::start().await;
    let dir = stub_tree(&server);
    let (code, text, err) = cli(&dir, &["accounts", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert_no_secrets(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&"courier-off\tsandbox\tcourier\tinactive\tcallback_secret=set"),
        "{text}"
    );
    assert!(
        lines.contains(&"courier-main\tsandbox\tcourier\tactive\tcallback_secret=set"),
        "{text}"
    );
    assert!(
        lines.contains(&"courier-stub\tstubcourier\tcourier\tactive\tapi_key=set,api_password=set,client_id=set,client_secret=set"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("shopify-main\tshopify\tstore\tactive\t")),
        "{text}"
    );
    let (code, json_text, _) = cli(&dir, &["accounts", "list", "--format", "json"]).await;
    assert_eq!(code, 0);
    assert_no_secrets(&json_text);
    let listed: Vec<Value> = json_text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let off = listed
        .iter()
        .find(|a| a["name"] == "courier-off")
        .expect("courier-off");
    assert_eq!(off["active"], false);
    assert_eq!(off["kind"], "courier");
    let stub = listed
        .iter()
        .find(|a| a["name"] == "courier-stub")
        .expect("courier-stub");
    assert_eq!(stub["credentials"]["api_password"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_and_books_on_the_sandbox() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let (code, text, err) = cli(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!((code, text.as_str()), (0, "ok\n"), "{err}");
    let order = repo().join("samples/shopify/order-cod.json");
    let (code, text, err) = cli(
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
    assert_eq!(lines[0], "ok");
    assert!(
        lines[1].starts_with("booked SBX-") && lines[1].contains("(reference #1042-TEST-"),
        "{text}"
    );
    assert_eq!(lines[2], "cancelled", "{text}");
    // Without --file, the first sample order of the pipeline's source.
    copy_samples(&dir);
    let (code, text, err) = cli(&dir, &["accounts", "test", "courier-main", "--book"]).await;
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains("booked SBX-"), "{text}");
}

fn copy_samples(dir: &ConfigDir) {
    let to = dir.dir.path().join("samples/shopify");
    std::fs::create_dir_all(&to).expect("mkdir");
    for name in ["order-cod.json", "order-prepaid.json"] {
        std::fs::copy(repo().join("samples/shopify").join(name), to.join(name)).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_checks_books_labels_and_cancels_on_a_declared_courier() {
    let server = MockServer::start().await;
    mount_stub(&server).await;
    let dir = stub_tree(&server);
    let (code, text, err) = cli(&dir, &["accounts", "test", "courier-stub"]).await;
    assert_eq!((code, text.as_str()), (0, "ok\n"), "{err}");
    let label = dir.dir.path().join("label.pdf");
    let order = repo().join("samples/shopify/order-cod.json");
    let (code, text, err) = cli(
        &dir,
        &[
            "accounts",
            "test",
            "courier-stub",
            "--book",
            "--file",
            order.to_str().unwrap(),
            "--label-file",
            label.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}{err}");
    assert_no_secrets(&text);
    assert_no_secrets(&err);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok", "{text}");
    assert!(
        lines[1].starts_with("booked KI7501234 (reference #1042-TEST-"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("label application/pdf, 13 bytes"),
        "{text}"
    );
    assert_eq!(lines[3], "cancelled", "{text}");
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend([0u8, 0xff, 0xfe, 0x80]);
    assert_eq!(std::fs::read(&label).expect("label written"), pdf);
    // The booking carried the test reference, never the order's own.
    let booked = server
        .received_requests()
        .await
        .expect("requests")
        .into_iter()
        .find(|r| r.url.path() == "/api/bookPacket")
        .expect("a booking");
    let form: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(&booked.body)
            .into_owned()
            .collect();
    assert!(
        form["booked_packet_order_id"].starts_with("#1042-TEST-"),
        "{form:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_prints_the_couriers_refusal_redacted_and_fails() {
    let server = MockServer::start().await;
    mount_stub(&server).await;
    let dir = stub_tree(&server);
    let order = repo().join("samples/shopify/order-cod.json");
    let (code, text, err) = cli(
        &dir,
        &[
            "accounts",
            "test",
            "courier-wrong",
            "--book",
            "--file",
            order.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 1, "{text}{err}");
    assert_no_secrets(&text);
    assert_no_secrets(&err);
    assert!(
        text.contains("error: book: HTTP 200: Invalid API credentials:"),
        "{text}"
    );
    assert!(text.contains("api_password=***"), "{text}");
    // A courier that refuses the token exchange.
    let dir = stub_tree(&server);
    dir.edit("waybill.yaml", |text| {
        text.replace(CLIENT_SECRET, "not-the-SECRET")
    });
    let (code, text, _) = cli(&dir, &["accounts", "test", "courier-stub"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("error: token: HTTP 404"), "{text}");
    assert!(!text.contains("not-the-SECRET"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_notes_a_route_that_reaches_only_inactive_accounts() {
    let dir = ConfigDir::new("{ connector: sandbox, active: false }");
    let (code, text, err) = cli(&dir, &["validate"]).await;
    assert_eq!(
        (code, text.as_str()),
        (0, ""),
        "a note is not a problem: {err}"
    );
    assert!(
        err.contains(
            "note: pipeline `shopify-orders` routes only to inactive accounts (courier-main)"
        ),
        "{err}"
    );
    let dir = ConfigDir::new("{ connector: sandbox }");
    let (code, text, err) = cli(&dir, &["validate"]).await;
    assert_eq!((code, text.as_str()), (0, ""));
    assert!(!err.contains("inactive"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_test_asks_postex_for_its_cities_with_the_accounts_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/order/v2/get-operational-city"))
        .and(header("token", "tok-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "statusCode": "200", "statusMessage": "SUCCESSFULLY OPERATED",
            "dist": [ { "operationalCityName": "Karachi", "countryName": "Pakistan", "isPickupCity": true, "isDeliveryCity": true } ]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({ "statusCode": "401", "statusMessage": "Invalid Token tok-wrong" }),
        ))
        .mount(&server)
        .await;
    let dir = ConfigDir::new(&postex_at(&server.uri()));
    let (code, text, err) = cli(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!((code, text.as_str()), (0, "ok\n"), "{err}");
    dir.edit("waybill.yaml", |text| {
        text.replace("tok-secret", "tok-wrong")
    });
    let (code, text, _) = cli(&dir, &["accounts", "test", "courier-main"]).await;
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text,
        "error: cities: HTTP 401: Invalid Token *** (permanent)\n"
    );
}

#[tokio::test]
async fn a_pipeline_books_on_the_declared_courier_with_a_token_and_city_ids() {
    let server = MockServer::start().await;
    // Mounted first, so it answers the bookings: a new number each.
    let booked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = booked.clone();
    Mock::given(method("POST"))
        .and(path("/api/bookPacket"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_string_contains("destination_city=789"))
        .respond_with(move |_: &wiremock::Request| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseTemplate::new(200)
                .set_body_json(json!({ "status": 1, "track_number": format!("KI75{n}") }))
        })
        .mount(&server)
        .await;
    mount_stub(&server).await;
    let dir = stub_tree(&server);
    // The pipeline routes to courier-main; make it the declared courier.
    dir.edit("waybill.yaml", |text| {
        text.replace(
            "courier-main: { connector: sandbox }",
            &format!(
                "courier-main: {{ connector: stubcourier, base_url: \"{}/api\", credentials: {{ api_key: k1, api_password: \"{API_PASSWORD}\", client_id: c1, client_secret: \"{CLIENT_SECRET}\" }} }}",
                server.uri()
            ),
        )
    });
    let app = App::start(&dir).await;
    for (i, id) in [9_500_000_001u64, 9_500_000_002].into_iter().enumerate() {
        let order = order_with("order-cod.json", |o| o["id"] = json!(id));
        let (status, _) = app
            .shopify(&order, "orders/create", &format!("feat-{i}"))
            .await;
        assert_eq!(status, 200);
    }
    let shipments = eventually(
        std::time::Duration::from_secs(30),
        "two shipments",
        || async {
            let letters = dead_letters(&app, "shopify-orders").await;
            assert!(letters.is_empty(), "{letters:?}");
            all_shipments(&app).await.filter(|s| s.len() == 2)
        },
    )
    .await;
    let mut numbers: Vec<&str> = shipments
        .iter()
        .map(|s| s.tracking_number.as_str())
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["KI750", "KI751"]);
    let requests = server.received_requests().await.expect("requests");
    let count = |p: &str| requests.iter().filter(|r| r.url.path() == p).count();
    // One token exchange and one city list serve both bookings.
    assert_eq!(
        (
            count("/api/auth"),
            count("/api/cities"),
            count("/api/bookPacket")
        ),
        (1, 1, 2)
    );
    assert!(dead_letters(&app, "shopify-orders").await.is_empty());
    let metrics = app.metrics().await;
    for operation in ["token", "cities"] {
        let counted = format!(
            "courier=\"stubcourier\",account=\"courier-main\",operation=\"{operation}\",outcome=\"success\"}} 1"
        );
        assert!(metrics.contains(&counted), "{counted} in {metrics}");
    }
    app.stop().await;
}
