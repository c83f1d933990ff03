//! A courier that echoes the account's token back, in every encoding a web
//! stack gives it (PHP's `\/`, `\uXXXX`, form encoding, base64 of a Basic
//! credential, another case), never gets it into a log line, a dead letter,
//! `waybill dlq` output or `waybill try` output.

use crate::common::*;
use base64::Engine as _;
use std::process::Command;
use std::time::Duration;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A token with every character JSON, URLs, forms and base64 treat specially.
const TOKEN: &str = "Zm9v/Ya\"r\\+q9=&<%20> x'tok";

/// The forms the token takes in the courier's answers.
fn encodings() -> Vec<(&'static str, String)> {
    let json = serde_json::to_string(TOKEN).expect("json");
    let json = json[1..json.len() - 1].to_string();
    let unicode: String = TOKEN
        .encode_utf16()
        .map(|unit| format!("\\u{unit:04x}"))
        .collect();
    let form: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("merchant:{TOKEN}"));
    vec![
        ("as written", TOKEN.to_string()),
        ("json", json.clone()),
        ("php json", json.replace('/', "\\/")),
        ("unicode escapes", unicode),
        ("form encoded", form),
        ("basic credential", basic),
        ("upper case json", json.to_uppercase()),
    ]
}

/// The courier's answer: every encoding of the token, in its message and
/// beside it.
fn echo() -> String {
    let forms = encodings();
    let message = format!("invalid token {}", forms[2].1);
    let echoed: Vec<String> = forms[3..]
        .iter()
        .map(|(name, form)| format!("\"{name}\":\"{form}\""))
        .collect();
    format!(
        "{{\"statusCode\":\"401\",\"statusMessage\":\"{message}\",{}}}",
        echoed.join(",")
    )
}

/// Checks `text` as printed, and every string inside it once decoded where
/// a line or the whole of it is JSON, since printing JSON escapes once more.
fn assert_no_encoding(what: &str, text: &str) {
    let mut seen = vec![text.to_string()];
    let documents = std::iter::once(text).chain(text.lines());
    for document in documents {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(document) {
            strings(&value, &mut seen);
        }
    }
    for shown in &seen {
        for (name, form) in encodings() {
            assert!(
                !shown.contains(&form),
                "{what} shows the token {name}: {shown}"
            );
        }
    }
}

fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                out.push(key.clone());
                strings(item, out);
            }
        }
        _ => {}
    }
}

fn waybill(dir: &ConfigDir, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .arg("--config")
        .arg(dir.path())
        .output()
        .expect("run waybill");
    assert!(output.status.success(), "waybill {args:?}: {output:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn an_echoed_token_is_masked_in_every_encoding_everywhere() {
    let courier = MockServer::start().await;
    // First a retryable answer (logged), then a permanent one (dead-lettered).
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string(echo()))
        .up_to_n_times(1)
        .mount(&courier)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_string(echo()))
        .mount(&courier)
        .await;
    let token = serde_json::to_string(TOKEN).expect("json");
    let port = free_port();
    let dir = ConfigDir::new(&format!(
        "{{ connector: postex, credentials: {{ token: {token} }}, base_url: \"{}\" }}",
        courier.uri()
    ));
    dir.edit("waybill.yaml", |t| {
        t.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log = dir.dir.path().join("waybill.log");
    let child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    let order = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(9_400_000_001u64)
    });
    let (status, _) = post_order(&http, &base, &order, "orders/paid", "redact-1").await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(60), "the dead letter", || async {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("waybill_dead_letters_total{") && l.ends_with(" 1"))
            .then_some(())
    })
    .await;
    child.terminate();

    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("***"), "the retry is logged: {logged}");
    assert_no_encoding("the log", &logged);

    let listed = waybill(&dir, &["dlq", "list"]);
    assert!(listed.contains("invalid token ***"), "{listed}");
    assert_no_encoding("dlq list", &listed);
    let id = listed.split('\t').next().expect("an id").trim();
    let shown = waybill(&dir, &["dlq", "show", id]);
    assert!(shown.contains("***"), "{shown}");
    assert_no_encoding("dlq show", &shown);

    let order_file = dir.dir.path().join("order.json");
    std::fs::write(&order_file, &order).expect("order");
    let tried = waybill(
        &dir,
        &[
            "try",
            "--pipeline",
            "shopify-orders",
            "--topic",
            "orders/paid",
            "--input",
            order_file.to_str().expect("path"),
        ],
    );
    assert!(tried.contains("***"), "{tried}");
    assert_no_encoding("try", &tried);
}

/// A token the courier's exchange issues, with characters encodings change.
const ISSUED: &str = "iss/ued+T0ken=&x";

/// Every form of `secret` a courier's answer may carry.
fn forms_of(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).expect("json");
    let json = json[1..json.len() - 1].to_string();
    vec![
        secret.to_string(),
        json.replace('/', "\\/"),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        base64::engine::general_purpose::STANDARD.encode(format!("merchant:{secret}")),
        json.to_uppercase(),
    ]
}

/// A courier taking its credentials in a form body, behind a token exchange.
const FORM_COURIER: &str = r#"
name: formcourier
kind: courier
credentials:
  api_password: { type: string, secret: true, required: true }
  client_secret: { type: string, secret: true, required: true }
base_url: https://courier.invalid
auth:
  token: {}
operations:
  token:
    request: { method: POST, path: /auth, body: mappings/formcourier/token.yaml, encoding: form }
    success: "response.status == 200"
    extract: { token: "$.access_token" }
  book:
    request: { method: POST, path: /book, body: mappings/formcourier/book.yaml, encoding: form }
    success: "body.status == 1"
    extract: { tracking_number: "$.track_number" }
    error_message: "body.error"
"#;

#[tokio::test]
async fn body_credentials_and_tokens_are_masked_in_logs_dead_letters_and_try() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/auth"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": ISSUED })),
        )
        .mount(&courier)
        .await;
    let echoed: Vec<String> = forms_of(TOKEN)
        .into_iter()
        .chain(forms_of(ISSUED))
        .collect();
    let answer =
        serde_json::json!({ "status": 0, "error": format!("refused: {}", echoed.join(" | ")) });
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/book"))
        .respond_with(ResponseTemplate::new(503).set_body_json(answer.clone()))
        .up_to_n_times(1)
        .mount(&courier)
        .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/book"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&courier)
        .await;
    let password = serde_json::to_string(TOKEN).expect("json");
    let port = free_port();
    let dir = ConfigDir::new(&format!(
        "{{ connector: formcourier, credentials: {{ api_password: {password}, client_secret: \"cl-S3CRET\" }}, base_url: \"{}\" }}",
        courier.uri()
    ));
    let root = dir.dir.path();
    std::fs::write(root.join("connectors/formcourier.yaml"), FORM_COURIER).expect("write");
    std::fs::create_dir_all(root.join("mappings/formcourier")).expect("mkdir");
    std::fs::write(
        root.join("mappings/formcourier/token.yaml"),
        "client_secret: \"{{ credentials.client_secret }}\"\n",
    )
    .expect("write");
    std::fs::write(
        root.join("mappings/formcourier/book.yaml"),
        "api_password: \"{{ credentials.api_password }}\"\nname: \"{{ shipment.recipient.name }}\"\n",
    )
    .expect("write");
    dir.edit("waybill.yaml", |t| {
        t.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log = root.join("waybill.log");
    let child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    let order = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(9_400_000_002u64)
    });
    let (status, _) = post_order(&http, &base, &order, "orders/paid", "redact-form-1").await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(60), "the dead letter", || async {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("waybill_dead_letters_total{") && l.ends_with(" 1"))
            .then_some(())
    })
    .await;
    child.terminate();
    let check = |what: &str, text: &str| {
        for form in forms_of(TOKEN)
            .iter()
            .chain(&forms_of(ISSUED))
            .chain(&forms_of("cl-S3CRET"))
        {
            assert!(
                !text.contains(form.as_str()),
                "{what} shows `{form}`: {text}"
            );
        }
    };
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("refused: ***"),
        "the retry is logged: {logged}"
    );
    check("the log", &logged);
    let listed = waybill(&dir, &["dlq", "list"]);
    assert!(listed.contains("refused: ***"), "{listed}");
    check("dlq list", &listed);
    let id = listed.split('\t').next().expect("an id").trim();
    let shown = waybill(&dir, &["dlq", "show", id]);
    assert!(
        shown.contains("api_password"),
        "the request is kept: {shown}"
    );
    check("dlq show", &shown);
    let order_file = root.join("order.json");
    std::fs::write(&order_file, &order).expect("order");
    let tried = waybill(
        &dir,
        &[
            "try",
            "--pipeline",
            "shopify-orders",
            "--topic",
            "orders/paid",
            "--input",
            order_file.to_str().expect("path"),
        ],
    );
    assert!(tried.contains("\"api_password\": \"***\""), "{tried}");
    check("try", &tried);
}
