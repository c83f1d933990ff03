//! The token exchange against a TCS-shaped stub: one exchange shared by
//! concurrent requests, a new token after a 401 (once), before expiry, and
//! a refused exchange with the client secret hidden.

use super::*;

const TCS: &str = r#"
name: c
kind: courier
credentials:
  client_id: { type: string, required: true }
  client_secret: { type: string, secret: true, required: true }
base_url: https://ociconnect.tcscourier.com
auth:
  token: { header: Authorization, value: "Bearer {{ token }}", lifetime: 1h }
operations:
  token:
    request: { method: GET, path: /auth/api/auth, query: { clientid: "{{ credentials.client_id }}", clientsecret: "{{ credentials.client_secret }}" } }
    success: "response.status == 200 and body.result.accessToken"
    extract: { token: "$.result.accessToken", expires_in: "$.result.expiresIn" }
  book:
    request: { method: POST, path: /ecom/api/booking/create, body: mappings/t/book.yaml }
    success: "response.status == 200 and body.consignmentNo"
    extract: { tracking_number: "$.consignmentNo" }
    error_message: "body.message"
"#;

/// Hands out `T1`, `T2`, … with the given lifetime, counting exchanges.
struct Issuer {
    issued: Arc<AtomicUsize>,
    expires_in: u64,
    delay: Duration,
}

impl Respond for Issuer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let secret_ok = request
            .url
            .query_pairs()
            .any(|(k, v)| k == "clientsecret" && v == CLIENT_SECRET);
        if !secret_ok {
            return ResponseTemplate::new(401)
                .set_body_json(json!({ "message": "invalid client" }));
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200)
            .set_delay(self.delay)
            .set_body_json(json!({ "result": { "accessToken": format!("T{n}-tok3n-SECRET"), "expiresIn": self.expires_in } }))
    }
}

async fn tcs(
    server: &MockServer,
    expires_in: u64,
    delay: Duration,
) -> (Arc<AtomicUsize>, Connector, Account, tempfile::TempDir) {
    let issued = Arc::new(AtomicUsize::new(0));
    Mock::given(method("GET"))
        .and(path("/auth/api/auth"))
        .respond_with(Issuer {
            issued: issued.clone(),
            expires_in,
            delay,
        })
        .mount(server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let c = connector(
        dir.path(),
        TCS,
        &[(
            "mappings/t/book.yaml",
            "consigneeinfo: { firstname: \"{{ shipment.recipient.name }}\" }\n",
        )],
    );
    let a = account(
        &server.uri(),
        &[
            ("client_id", "merchant-1"),
            ("client_secret", CLIENT_SECRET),
        ],
        &[CLIENT_SECRET],
    );
    (issued, c, a, dir)
}

fn booked() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({ "consignmentNo": "779912345678", "message": "SUCCESS" }))
}

#[tokio::test]
async fn concurrent_requests_share_one_token_exchange() {
    let server = MockServer::start().await;
    let (issued, c, a, _dir) = tcs(&server, 3600, Duration::from_millis(200)).await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer T1-tok3n-SECRET"))
        .respond_with(booked())
        .expect(8)
        .mount(&server)
        .await;
    let engine = engine();
    let bookings = (0..8).map(|_| book(&engine, &c, &a, "Karachi"));
    for result in futures::future::join_all(bookings).await {
        assert_eq!(result.unwrap(), "779912345678");
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_401_fetches_a_new_token_once_and_sends_the_request_again() {
    let server = MockServer::start().await;
    let (issued, c, a, _dir) = tcs(&server, 3600, Duration::ZERO).await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer T2-tok3n-SECRET"))
        .respond_with(booked())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({ "message": "token expired" })),
        )
        .mount(&server)
        .await;
    let engine = engine();
    assert_eq!(
        book(&engine, &c, &a, "Karachi").await.unwrap(),
        "779912345678"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    let books = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(books, 2);
    // The new token is kept: the next booking needs no exchange.
    assert_eq!(
        book(&engine, &c, &a, "Karachi").await.unwrap(),
        "779912345678"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_second_401_is_the_couriers_answer_with_the_token_redacted() {
    let server = MockServer::start().await;
    let (issued, c, a, _dir) = tcs(&server, 3600, Duration::ZERO).await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            let sent = request.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            ResponseTemplate::new(401).set_body_json(json!({ "message": format!("refused {sent}: {}", echoes(sent.trim_start_matches("Bearer "))) }))
        })
        .mount(&server)
        .await;
    let err = book(&engine(), &c, &a, "Karachi").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert!(
        err.message.contains("refused Bearer ***"),
        "{}",
        err.message
    );
    assert_hidden(&err, "T2-tok3n-SECRET");
    assert_hidden(&err, CLIENT_SECRET);
}

#[tokio::test]
async fn a_token_is_fetched_again_before_it_expires() {
    let server = MockServer::start().await;
    // One second of life, refreshed a minute early: used for half of it.
    let (issued, c, a, _dir) = tcs(&server, 1, Duration::ZERO).await;
    Mock::given(method("POST"))
        .respond_with(booked())
        .mount(&server)
        .await;
    let engine = engine();
    book(&engine, &c, &a, "Karachi").await.unwrap();
    book(&engine, &c, &a, "Karachi").await.unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    book(&engine, &c, &a, "Karachi").await.unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    let auths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        auths,
        [
            "Bearer T1-tok3n-SECRET",
            "Bearer T1-tok3n-SECRET",
            "Bearer T2-tok3n-SECRET"
        ]
    );
}

#[tokio::test]
async fn a_refused_exchange_is_a_failure_with_the_client_secret_hidden() {
    let server = MockServer::start().await;
    let (_issued, c, _a, _dir) = tcs(&server, 3600, Duration::ZERO).await;
    let wrong = account(
        &server.uri(),
        &[
            ("client_id", "merchant-1"),
            ("client_secret", "wr0ng-SECRET"),
        ],
        &["wr0ng-SECRET"],
    );
    let err = book(&engine(), &c, &wrong, "Karachi").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_hidden(&err, "wr0ng-SECRET");
    assert!(
        server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .all(|r| r.method.as_str() == "GET")
    );
}
