//! Prepares connector requests from templates, sends them and judges the
//! answers: success rule on status and body, JSONPath extraction, and a
//! classified [`Failure`] for everything else.
//!
//! Templates see `{shipment, account: {name, settings}, credentials}` plus any
//! operation variables; the success and error rules see
//! `{response: {status, headers}, body, text}`.
//!
//! ```yaml
//! operations:
//!   book:
//!     request: { method: POST, path: /book, body: mappings/sandbox/book.yaml }
//!     success: "response.status == 200 and body.tracking_number"
//!     extract: { tracking_number: "$.tracking_number" }
//! ```

use super::Account;
use super::classify::{default_class, parse_retry_after, send_error_class};
use super::pacing::Pacing;
use super::target::{build_url, resolve_base};
use super::{Connector, Operation, PreparedRequest};
use crate::mapping::render_str;
use crate::model::{BookingResult, ErrorClass, Exchange, Failure};
use crate::redact::Secrets;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// Bytes of a response body read at most; the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Bytes of a response body kept in a [`Failure`].
pub const KEPT_RESPONSE_BYTES: usize = 4096;

/// What a successful operation answered.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationOutput {
    pub status: u16,
    /// The parsed JSON body, `null` when it was not JSON.
    pub body: Value,
    /// Values found by the operation's `extract` rules; absent when not found.
    pub extracted: BTreeMap<String, Value>,
    /// For an operation with `each`: the `extract` values of each item.
    pub items: Vec<BTreeMap<String, Value>>,
}

/// Executes connector operations over HTTP.
#[derive(Debug, Clone)]
pub struct Engine {
    http: reqwest::Client,
    /// Base URL of waybill's own HTTP server, for `waybill:` base URLs.
    self_base: String,
    pacing: Pacing,
}

impl Engine {
    pub fn new(http: reqwest::Client, self_base: String) -> Self {
        Engine {
            http,
            self_base,
            pacing: Pacing::default(),
        }
    }

    /// Base URL of waybill's own HTTP server, which `waybill:` URLs stand for.
    pub fn self_base(&self) -> &str {
        &self.self_base
    }

    /// How long to wait before sending `account` another request under its
    /// connector's `rate_limit` (none: no wait). The slot is taken whether
    /// or not the caller then sends.
    pub fn pace(&self, connector: &Connector, account: &Account) -> Duration {
        connector.rate_limit.map_or(Duration::ZERO, |limit| {
            self.pacing
                .reserve(&account.name, limit, std::time::Instant::now())
        })
    }

    /// A client suited to the engine: redirects are not followed, since a
    /// redirect could take a request (and its credentials) off the base URL.
    pub fn client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
    }

    /// The template context: `{account: {name, settings}, credentials}` plus `vars`.
    pub fn context(account: &Account, vars: Map<String, Value>) -> Value {
        let mut ctx = vars;
        ctx.insert(
            "account".into(),
            json!({ "name": account.name, "settings": account.settings }),
        );
        ctx.insert("credentials".into(), json!(account.credentials));
        Value::Object(ctx)
    }

    /// Builds the `book` request for a shipment without sending it.
    pub fn prepare_book(
        &self,
        connector: &Connector,
        account: &Account,
        shipment: &Value,
    ) -> Result<PreparedRequest, Failure> {
        let mut vars = Map::new();
        vars.insert("shipment".into(), shipment.clone());
        self.prepare(connector, "book", account, &Engine::context(account, vars))
    }

    /// Builds the request of `operation` from a template context without sending it.
    pub fn prepare(
        &self,
        connector: &Connector,
        operation: &str,
        account: &Account,
        ctx: &Value,
    ) -> Result<PreparedRequest, Failure> {
        let op = find(connector, operation)?;
        let permanent = |message: String| Failure::permanent(stage_of(operation), message);
        let base = account
            .base_url
            .as_deref()
            .or(connector.base_url.as_deref())
            .ok_or_else(|| {
                permanent(format!(
                    "connector `{}` has no base URL and account `{}` sets none",
                    connector.name, account.name
                ))
            })?;
        let base = if super::target::is_template(base) {
            super::target::account_base(base, account).map_err(permanent)?
        } else {
            base.to_string()
        };
        let base = resolve_base(&base, &self.self_base).map_err(permanent)?;
        let render = |source: &str| match op.templates.get(source) {
            Some(template) => template.render(ctx),
            None => render_str(source, ctx),
        };
        let url = build_url(&base, &op.path, &op.query, |source| {
            render(source).map_err(|err| err.to_string())
        })
        .map_err(|message| permanent(format!("{operation}: {message}")))?;
        let mut headers = Vec::with_capacity(op.headers.len());
        for (name, template) in &op.headers {
            let value = render(template)
                .map_err(|err| permanent(format!("{operation}: header `{name}`: {err}")))?;
            headers.push((name.clone(), value));
        }
        let body = match &op.body {
            Some(mapping) => Some(
                mapping
                    .eval(ctx)
                    .map_err(|err| permanent(format!("{operation}: body: {err}")))?,
            ),
            None => None,
        };
        Ok(PreparedRequest {
            method: op.method.to_string(),
            url: url.to_string(),
            headers,
            body,
            secrets: account.secrets.clone(),
        })
    }

    /// Sends a prepared `book` request and judges the answer.
    pub async fn book(
        &self,
        connector: &Connector,
        account: &Account,
        request: PreparedRequest,
    ) -> Result<BookingResult, Failure> {
        let failing = Failing::new("book", &request, &account.secrets);
        let output = self.execute(connector, "book", account, request).await?;
        let tracking_number = match output.extracted.get("tracking_number") {
            Some(Value::String(text)) if !text.trim().is_empty() => text.trim().to_string(),
            Some(Value::Number(number)) => number.to_string(),
            _ => {
                // The courier said yes, so it may have booked: never re-send blindly.
                return Err(failing.fail(
                    ErrorClass::Ambiguous,
                    "the courier accepted the booking but no tracking number was found in the answer".into(),
                    Some(output.status),
                    Some(keep(&output.body.to_string(), &account.secrets)),
                ));
            }
        };
        Ok(BookingResult {
            tracking_number,
            courier: connector.name.clone(),
            account: account.name.clone(),
            extracted: output.extracted,
        })
    }

    /// Sends a prepared request of `operation` and judges the answer.
    pub async fn execute(
        &self,
        connector: &Connector,
        operation: &str,
        account: &Account,
        request: PreparedRequest,
    ) -> Result<OperationOutput, Failure> {
        let op = find(connector, operation)?;
        let failing = Failing::new(stage_of(operation), &request, &account.secrets);
        let response = self.send(op, &request).await.map_err(|err| {
            let (class, message) = send_error_class(&err);
            failing.fail(class, message, None, None)
        })?;
        let answer = Answer::read(response, &failing).await?;
        answer.judge(op, operation, &failing)
    }

    /// Sends `request` as `op` declares (method, timeout).
    async fn send(
        &self,
        op: &Operation,
        request: &PreparedRequest,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut builder = self
            .http
            .request(op.method.clone(), request.url.as_str())
            .timeout(op.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        builder.send().await
    }
}

/// The stage a failure of `operation` is reported under.
fn stage_of(operation: &str) -> &'static str {
    match operation {
        "book" => "book",
        "track" | "track_many" => "track",
        "cancel" => "cancel",
        "lookup" => "lookup",
        "open_fulfillments" | "fulfill" | "find_fulfillment" | "fulfillment_event" => "write_back",
        _ => "connector",
    }
}

/// Makes the failures of one request: redacted, with the request as shown.
struct Failing<'a> {
    stage: &'static str,
    shown: Value,
    secrets: &'a Secrets,
}

impl<'a> Failing<'a> {
    fn new(stage: &'static str, request: &PreparedRequest, secrets: &'a Secrets) -> Self {
        Failing {
            stage,
            shown: request.redacted(),
            secrets,
        }
    }

    fn fail(
        &self,
        class: ErrorClass,
        message: String,
        status: Option<u16>,
        response: Option<String>,
    ) -> Failure {
        Failure::new(
            self.stage,
            class,
            self.secrets.redact(&message).into_owned(),
        )
        .with_exchange(Exchange {
            status,
            request: Some(self.shown.clone()),
            response,
        })
    }
}

/// An answer as read: at most [`MAX_RESPONSE_BYTES`] of its body.
struct Answer {
    status: u16,
    headers: Map<String, Value>,
    retry_after: Option<Duration>,
    bytes: Vec<u8>,
    truncated: bool,
}

impl Answer {
    async fn read(
        mut response: reqwest::Response,
        failing: &Failing<'_>,
    ) -> Result<Answer, Failure> {
        let status = response.status().as_u16();
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            headers.insert(
                name.as_str().to_string(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            );
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, OffsetDateTime::now_utc()));
        let mut bytes = Vec::new();
        let mut truncated = false;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES - bytes.len();
                    if chunk.len() > room {
                        bytes.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => {
                    let message = format!(
                        "HTTP {status}, then the answer was cut short: {}",
                        super::classify::error_chain(&err)
                    );
                    return Err(failing.fail(
                        ErrorClass::Ambiguous,
                        message,
                        Some(status),
                        Some(keep(&String::from_utf8_lossy(&bytes), failing.secrets)),
                    ));
                }
            }
        }
        Ok(Answer {
            status,
            headers,
            retry_after,
            bytes,
            truncated,
        })
    }

    /// The success rule, then extraction or a classified failure.
    fn judge(
        self,
        op: &Operation,
        operation: &str,
        failing: &Failing<'_>,
    ) -> Result<OperationOutput, Failure> {
        let status = self.status;
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        let body = if self.truncated {
            Value::Null
        } else {
            serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
        };
        let judged = json!({ "response": { "status": status, "headers": self.headers }, "body": body, "text": text });
        if op.success.eval_bool(&judged).unwrap_or(false) {
            let extracted = extract(op, &body);
            let items = match &op.each {
                Some(each) => each
                    .query(&body)
                    .iter()
                    .map(|item| extract(op, item))
                    .collect(),
                None => Vec::new(),
            };
            return Ok(OperationOutput {
                status,
                body,
                extracted,
                items,
            });
        }
        let rule = op
            .errors
            .iter()
            .find(|rule| rule.when.eval_bool(&judged).unwrap_or(false));
        let class = rule
            .map(|rule| rule.class)
            .or_else(|| op.status_classes.get(&status).copied())
            .unwrap_or_else(|| default_class(status));
        let asked = rule
            .and_then(|rule| rule.retry_after.as_ref())
            .and_then(|expr| seconds(expr.eval(&judged).ok()?));
        let message = failure_message(
            op,
            operation,
            &judged,
            &text,
            self.truncated,
            failing.secrets,
        );
        let failure = failing.fail(
            class,
            message,
            Some(status),
            Some(keep(&text, failing.secrets)),
        );
        // Only a request the courier certainly did not act on waits as asked.
        Err(if class == ErrorClass::Retryable {
            failure.with_retry_after(asked.or(self.retry_after))
        } else {
            failure
        })
    }
}

/// `operation: HTTP status`, with what the courier said when it said anything.
fn failure_message(
    op: &Operation,
    operation: &str,
    judged: &Value,
    text: &str,
    truncated: bool,
    secrets: &Secrets,
) -> String {
    let status = &judged["response"]["status"];
    let mut message = format!("{operation}: HTTP {status}");
    match courier_message(op, judged) {
        Some(said) => message.push_str(&format!(": {said}")),
        None if truncated => message.push_str(&format!(": answer over {MAX_RESPONSE_BYTES} bytes")),
        None if !text.trim().is_empty() => {
            let shown_text = secrets.redact(text.trim());
            message.push_str(&format!(": {}", truncate(&shown_text, 200)));
        }
        None => {}
    }
    message
}

fn find<'a>(connector: &'a Connector, operation: &str) -> Result<&'a Operation, Failure> {
    connector.operation(operation).ok_or_else(|| {
        Failure::permanent(
            stage_of(operation),
            format!(
                "connector `{}` has no `{operation}` operation",
                connector.name
            ),
        )
    })
}

fn extract(op: &Operation, body: &Value) -> BTreeMap<String, Value> {
    op.extract
        .iter()
        .filter_map(|(name, path)| {
            let found = path.query(body);
            if op.extract_lists.contains(name) {
                let all = found.all().into_iter().cloned().collect();
                return Some((name.clone(), Value::Array(all)));
            }
            found.first().map(|found| (name.clone(), found.clone()))
        })
        .collect()
}

/// Longest wait a `retry_after` rule may ask for.
const MAX_ASKED_WAIT: Duration = Duration::from_secs(3600);

/// A `retry_after` expression's value as a wait: a non-negative number of
/// seconds (fractions allowed), capped; anything else asks for nothing.
fn seconds(value: Value) -> Option<Duration> {
    let seconds = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(seconds.max(0.0)).min(MAX_ASKED_WAIT))
}

/// The courier's own words, from the operation's `error_message` expression.
fn courier_message(op: &Operation, judged: &Value) -> Option<String> {
    let said = op.error_message.as_ref()?.eval(judged).ok()?;
    let said = match said {
        Value::String(text) => text,
        Value::Null => return None,
        other => other.to_string(),
    };
    let said = said.trim();
    (!said.is_empty()).then(|| truncate(said, 500).to_string())
}

/// Redacts before truncating, so that no part of a secret survives a cut.
fn keep(text: &str, secrets: &Secrets) -> String {
    truncate(&secrets.redact(text), KEPT_RESPONSE_BYTES).to_string()
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
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
        std::fs::write(
            dir.join("mappings/postex/book.yaml"),
            "\"{{ shipment }}\"\n",
        )
        .unwrap();
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
    async fn book_shipment(
        connector: &Connector,
        account: &Account,
    ) -> Result<BookingResult, Failure> {
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
        let err =
            booking_failure(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
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
        let err = booking_failure(
            ResponseTemplate::new(200).set_body_string("<html>gateway says hi</html>"),
        )
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
}
