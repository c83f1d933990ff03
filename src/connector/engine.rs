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
use super::calls::{basic_header, with_token};
use super::classify::{default_class, parse_retry_after, send_error_class};
use super::definition::{Encoding, ResponseFormat};
use super::pacing::Pacing;
use super::session::Session;
use super::target::{build_url, resolve_base};
use super::{Connector, Operation, PreparedRequest};
use crate::mapping::{Expr, render_str};
use crate::model::{BookingResult, ErrorClass, Exchange, Failure};
use crate::redact::Secrets;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Bytes of a response body read at most; the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Bytes of a binary answer (a label) read at most.
pub const MAX_BINARY_BYTES: usize = 16 * 1024 * 1024;

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
    /// For a `format: binary` operation: the body as sent, and its content type.
    pub bytes: Option<Vec<u8>>,
    pub content_type: Option<String>,
}

/// Executes connector operations over HTTP.
#[derive(Debug, Clone)]
pub struct Engine {
    http: reqwest::Client,
    /// Base URL of waybill's own HTTP server, for `waybill:` base URLs.
    self_base: String,
    pacing: Pacing,
    /// Tokens and fetched lookup lists, per account.
    pub(super) session: Arc<Session>,
    /// Where the requests the engine makes on its own (token exchanges,
    /// lookup lists) are counted; callers count the rest. Default none.
    pub(super) metrics: Option<Arc<crate::telemetry::Metrics>>,
}

impl Engine {
    pub fn new(http: reqwest::Client, self_base: String) -> Self {
        Engine {
            http,
            self_base,
            pacing: Pacing::default(),
            session: Arc::default(),
            metrics: None,
        }
    }

    /// The engine, counting its own token exchanges and list fetches in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Base URL of waybill's own HTTP server, which `waybill:` URLs stand for.
    pub fn self_base(&self) -> &str {
        &self.self_base
    }

    /// How long to wait before sending `account` another request under its
    /// connector's `rate_limit` (none: no wait). The slot is taken whether
    /// or not the caller then sends.
    pub fn pace(&self, connector: &Connector, account: &Account) -> Duration {
        account
            .rate_limit
            .or(connector.rate_limit)
            .map_or(Duration::ZERO, |limit| {
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
        let mut secrets = account.secrets.clone();
        if let Some(basic) = &connector.auth.basic {
            let value = basic_header(basic, ctx)
                .map_err(|err| permanent(format!("{operation}: auth.basic: {err}")))?;
            let key = super::session::key(&connector.name, &account.name, "basic");
            secrets = self.session.basic.with(&key, &secrets, &value);
            headers.push(("Authorization".into(), value));
        }
        let (url, body) = self
            .body(connector, op, account, ctx, url)
            .map_err(|err| permanent(format!("{operation}: body: {err}")))?;
        Ok(PreparedRequest {
            method: op.method.to_string(),
            url: url.to_string(),
            headers,
            body,
            secrets,
        })
    }

    /// The body mapping's output, as the operation's `encoding` sends it:
    /// a JSON or form body, or query parameters added to `url`.
    fn body(
        &self,
        connector: &Connector,
        op: &Operation,
        account: &Account,
        ctx: &Value,
        mut url: url::Url,
    ) -> Result<(url::Url, Option<Value>), String> {
        let Some(mapping) = &op.body else {
            return Ok((url, None));
        };
        let with_lookups = self.with_lookups(connector, account, ctx);
        let body = mapping
            .eval(with_lookups.as_ref().unwrap_or(ctx))
            .map_err(|err| err.to_string())?;
        match op.encoding {
            Encoding::Query => {
                let pairs = super::encoding::pairs(&body)?;
                url.query_pairs_mut().extend_pairs(pairs);
                Ok((url, None))
            }
            Encoding::Form => {
                super::encoding::pairs(&body)?;
                Ok((url, Some(body)))
            }
            Encoding::Json => Ok((url, Some(body))),
        }
    }

    /// Sends a prepared `book` request and judges the answer.
    pub async fn book(
        &self,
        connector: &Connector,
        account: &Account,
        request: PreparedRequest,
    ) -> Result<BookingResult, Failure> {
        let secrets = request.secrets.clone();
        let failing = Failing::new("book", &request, &secrets);
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
                    Some(keep(&output.body.to_string(), &secrets)),
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
        self.execute_accepting(connector, operation, account, request, None)
            .await
    }

    /// Like [`Engine::execute`]; an answer matching `accept` counts as a success too.
    pub(super) async fn execute_accepting(
        &self,
        connector: &Connector,
        operation: &str,
        account: &Account,
        request: PreparedRequest,
        accept: Option<&Expr>,
    ) -> Result<OperationOutput, Failure> {
        let op = find(connector, operation)?;
        let Some(auth) = connector
            .auth
            .token
            .as_ref()
            .filter(|_| operation != "token")
        else {
            return self.execute_plain(op, operation, request, accept).await;
        };
        let mut rejected: Option<String> = None;
        loop {
            let token = self.token(connector, account, rejected.as_deref()).await?;
            let sent = with_token(&request, auth, &token, account).map_err(|err| {
                Failure::permanent(
                    stage_of(operation),
                    format!("{operation}: auth.token: {err}"),
                )
            })?;
            let failing = Failing::new(stage_of(operation), &sent, &sent.secrets);
            let answer = self.exchange(op, &sent, &failing).await?;
            // A 401 says the token was refused before anything was done:
            // fetch another once, and send the request once more.
            if answer.status == 401 && rejected.is_none() {
                rejected = Some(token.value);
                continue;
            }
            return answer.judge(op, operation, &failing, accept);
        }
    }

    /// Sends `request` as it is, with no token.
    pub(super) async fn execute_plain(
        &self,
        op: &Operation,
        operation: &str,
        request: PreparedRequest,
        accept: Option<&Expr>,
    ) -> Result<OperationOutput, Failure> {
        let failing = Failing::new(stage_of(operation), &request, &request.secrets);
        let answer = self.exchange(op, &request, &failing).await?;
        answer.judge(op, operation, &failing, accept)
    }

    /// Sends `request` and reads the answer.
    async fn exchange(
        &self,
        op: &Operation,
        request: &PreparedRequest,
        failing: &Failing<'_>,
    ) -> Result<Answer, Failure> {
        let response = self.send(op, request).await.map_err(|err| {
            let (class, message) = send_error_class(&err);
            failing.fail(class, message, None, None)
        })?;
        let limit = match op.response {
            ResponseFormat::Json => MAX_RESPONSE_BYTES,
            ResponseFormat::Binary { .. } => MAX_BINARY_BYTES,
        };
        Answer::read(response, failing, limit).await
    }

    /// Sends `request` as `op` declares (method, timeout, body encoding).
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
            builder = match op.encoding {
                Encoding::Form => {
                    // Checked when the request was prepared.
                    let pairs = super::encoding::pairs(body).unwrap_or_default();
                    builder
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/x-www-form-urlencoded",
                        )
                        .body(super::encoding::form(&pairs))
                }
                Encoding::Json | Encoding::Query => builder.json(body),
            };
        }
        builder.send().await
    }
}

/// The stage a failure of `operation` is reported under.
pub(super) fn stage_of(operation: &str) -> &'static str {
    match operation {
        "book" => "book",
        "track" | "track_many" => "track",
        "cancel" => "cancel",
        "lookup" => "lookup",
        "payment" => "payment",
        "label" => "label",
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
        limit: usize,
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
                    let room = limit - bytes.len();
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

    /// The answer's media type, lower case, without parameters.
    fn content_type(&self) -> Option<String> {
        self.headers
            .get("content-type")
            .and_then(Value::as_str)
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
    }

    /// The body as text and as JSON for the rules: a binary answer only
    /// when it is textual (a courier's JSON or HTML error instead of a PDF).
    fn text_and_body(&self, binary: bool, content_type: Option<&str>) -> (String, Value) {
        let textual = !binary
            || content_type.is_some_and(|ct| {
                ct.starts_with("text/") || ct.contains("json") || ct.contains("xml")
            });
        if !textual {
            return (String::new(), Value::Null);
        }
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        let body = if self.truncated {
            Value::Null
        } else {
            serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
        };
        (text, body)
    }

    /// Why a binary answer the success rule accepted is still refused.
    fn unexpected_type(
        &self,
        op: &Operation,
        operation: &str,
        judged: &Value,
        content_type: Option<&str>,
        types: &[String],
    ) -> String {
        let status = self.status;
        if self.truncated {
            return format!("{operation}: HTTP {status}: answer over {MAX_BINARY_BYTES} bytes");
        }
        format!(
            "{operation}: HTTP {status}: answered `{}`, expected {}{}",
            content_type.unwrap_or("no content type"),
            types.join(" or "),
            courier_message(op, judged).map_or_else(String::new, |said| format!(": {said}"))
        )
    }

    /// The success rule, then extraction or a classified failure.
    fn judge(
        self,
        op: &Operation,
        operation: &str,
        failing: &Failing<'_>,
        accept: Option<&Expr>,
    ) -> Result<OperationOutput, Failure> {
        let status = self.status;
        let content_type = self.content_type();
        let binary = match &op.response {
            ResponseFormat::Json => None,
            ResponseFormat::Binary { content_types } => Some(content_types),
        };
        let (text, body) = self.text_and_body(binary.is_some(), content_type.as_deref());
        let judged = json!({ "response": { "status": status, "headers": self.headers }, "body": body, "text": text });
        let said_yes = op.success.eval_bool(&judged).unwrap_or(false);
        let type_ok = match (binary, content_type.as_deref()) {
            (None, _) => true,
            (Some(types), _) if types.is_empty() => true,
            (Some(types), Some(ct)) => types.iter().any(|t| t == ct),
            (Some(_), None) => false,
        };
        let accepted = accept.is_some_and(|expr| expr.eval_bool(&judged).unwrap_or(false));
        if (said_yes && type_ok && !self.truncated) || accepted {
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
                bytes: binary.map(|_| self.bytes),
                content_type,
            });
        }
        if said_yes && let Some(types) = binary {
            let message =
                self.unexpected_type(op, operation, &judged, content_type.as_deref(), types);
            return Err(failing.fail(
                ErrorClass::Permanent,
                message,
                Some(status),
                Some(keep(&text, failing.secrets)),
            ));
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

pub(super) fn find<'a>(
    connector: &'a Connector,
    operation: &str,
) -> Result<&'a Operation, Failure> {
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
#[path = "engine_tests.rs"]
mod tests;
