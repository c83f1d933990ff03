//! Prepares connector requests from templates, sends them and judges the
//! answers: success rule on status and body, JSONPath extraction, and a
//! classified [`CourierError`] for everything else.
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

use super::classify::{default_class, parse_retry_after, send_error_class};
use super::target::{build_url, resolve_base};
use super::{Connector, CourierError, Operation, PreparedRequest, redact_text};
use crate::config::Account;
use crate::mapping::render_str;
use crate::model::{BookingResult, ErrorClass};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// Bytes of a response body read at most; the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Bytes of a response body kept in a [`CourierError`].
pub const KEPT_RESPONSE_BYTES: usize = 4096;

/// What a successful operation answered.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationOutput {
    pub status: u16,
    /// The parsed JSON body, `null` when it was not JSON.
    pub body: Value,
    /// Values found by the operation's `extract` rules; absent when not found.
    pub extracted: BTreeMap<String, Value>,
}

/// Executes connector operations over HTTP.
#[derive(Debug, Clone)]
pub struct Engine {
    http: reqwest::Client,
    /// Base URL of waybill's own HTTP server, for `waybill:` base URLs.
    self_base: String,
}

impl Engine {
    pub fn new(http: reqwest::Client, self_base: String) -> Self {
        Engine { http, self_base }
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
    ) -> Result<PreparedRequest, CourierError> {
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
    ) -> Result<PreparedRequest, CourierError> {
        let op = find(connector, operation)?;
        let permanent =
            |message: String| CourierError::before_sending(ErrorClass::Permanent, message);
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
        let base = resolve_base(base, &self.self_base).map_err(permanent)?;
        let url = build_url(&base, &op.path, &op.query, |template| {
            render_str(template, ctx).map_err(|err| err.to_string())
        })
        .map_err(|message| permanent(format!("{operation}: {message}")))?;
        let mut headers = Vec::with_capacity(op.headers.len());
        for (name, template) in &op.headers {
            let value = render_str(template, ctx)
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
    ) -> Result<BookingResult, CourierError> {
        let shown = request.redacted();
        let output = self.execute(connector, "book", account, request).await?;
        let tracking_number = match output.extracted.get("tracking_number") {
            Some(Value::String(text)) if !text.trim().is_empty() => text.trim().to_string(),
            Some(Value::Number(number)) => number.to_string(),
            _ => {
                // The courier said yes, so it may have booked: never re-send blindly.
                return Err(CourierError {
                    class: ErrorClass::Ambiguous,
                    message: "the courier accepted the booking but no tracking number was found in the answer".into(),
                    status: Some(output.status),
                    retry_after: None,
                    request: Some(shown),
                    response: Some(keep(&output.body.to_string(), &account.secrets)),
                });
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
    ) -> Result<OperationOutput, CourierError> {
        let op = find(connector, operation)?;
        let shown = request.redacted();
        let fail = |class: ErrorClass,
                    message: String,
                    status: Option<u16>,
                    response: Option<String>| CourierError {
            class,
            message: redact_text(&message, &account.secrets),
            status,
            retry_after: None,
            request: Some(shown.clone()),
            response,
        };
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
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(err) => {
                let (class, message) = send_error_class(&err);
                return Err(fail(class, message, None, None));
            }
        };
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
                    return Err(fail(
                        ErrorClass::Ambiguous,
                        message,
                        Some(status),
                        Some(keep(&String::from_utf8_lossy(&bytes), &account.secrets)),
                    ));
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if truncated {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let judged = json!({ "response": { "status": status, "headers": headers }, "body": body, "text": text });
        if op.success.eval_bool(&judged).unwrap_or(false) {
            let extracted = extract(op, &body);
            return Ok(OperationOutput {
                status,
                body,
                extracted,
            });
        }
        let class = op
            .errors
            .iter()
            .find(|rule| rule.when.eval_bool(&judged).unwrap_or(false))
            .map(|rule| rule.class)
            .or_else(|| op.status_classes.get(&status).copied())
            .unwrap_or_else(|| default_class(status));
        let mut message = format!("{operation}: HTTP {status}");
        match courier_message(op, &judged) {
            Some(said) => message.push_str(&format!(": {said}")),
            None if truncated => {
                message.push_str(&format!(": answer over {MAX_RESPONSE_BYTES} bytes"))
            }
            None if !text.trim().is_empty() => {
                let shown_text = redact_text(text.trim(), &account.secrets);
                message.push_str(&format!(": {}", truncate(&shown_text, 200)));
            }
            None => {}
        }
        let mut error = fail(
            class,
            message,
            Some(status),
            Some(keep(&text, &account.secrets)),
        );
        if class == ErrorClass::Retryable {
            error.retry_after = retry_after;
        }
        Err(error)
    }
}

fn find<'a>(connector: &'a Connector, operation: &str) -> Result<&'a Operation, CourierError> {
    connector.operation(operation).ok_or_else(|| {
        CourierError::before_sending(
            ErrorClass::Permanent,
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
            path.query(body)
                .first()
                .map(|found| (name.clone(), found.clone()))
        })
        .collect()
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
fn keep(text: &str, secrets: &[String]) -> String {
    truncate(&redact_text(text, secrets), KEPT_RESPONSE_BYTES).to_string()
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
