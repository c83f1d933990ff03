//! Store webhooks: `POST /webhooks/{source}/{account}`, verified and read as
//! the store connector's `webhook:` section declares.
//!
//! ```yaml
//! webhook:
//!   source: shopify
//!   signature: { header: X-Shopify-Hmac-Sha256, algorithm: hmac-sha256, encoding: base64, secret: webhook_secret }
//!   topic_header: X-Shopify-Topic
//!   delivery_id_header: X-Shopify-Webhook-Id
//!   order_id: "$.id"
//! ```

use super::body::BodyError;
use super::json::{self, JsonError};
use super::{Incoming, Ingest};
use crate::config::Account;
use crate::connector::{
    Connector, OrderIdPath, SignatureAlgorithm, SignatureEncoding, SignatureSpec, WebhookSpec,
};
use crate::telemetry::events::WebhookReceived;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The signature of `body` with `secret`, encoded as `spec` says.
pub fn sign(spec: &SignatureSpec, secret: &[u8], body: &[u8]) -> String {
    let SignatureAlgorithm::HmacSha256 = spec.algorithm;
    // HMAC takes keys of any length, so this never fails.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    match spec.encoding {
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
        SignatureEncoding::Hex => hex::encode(digest),
    }
}

/// Checks a signature in constant time; a malformed encoding fails.
pub fn verify(spec: &SignatureSpec, secret: &[u8], body: &[u8], signature: &str) -> bool {
    let SignatureAlgorithm::HmacSha256 = spec.algorithm;
    let signature = signature.trim();
    let decoded = match spec.encoding {
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(signature)
            .ok(),
        SignatureEncoding::Hex => hex::decode(signature).ok(),
    };
    let (Some(decoded), Ok(mut mac)) = (decoded, hmac::Hmac::<Sha256>::new_from_slice(secret))
    else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&decoded).is_ok()
}

/// The store account a webhook path names, with its connector's webhook rules.
pub fn resolve<'a>(
    source: &str,
    account: Option<&'a Account>,
    connectors: &'a std::collections::BTreeMap<String, std::sync::Arc<Connector>>,
) -> Option<(&'a Account, &'a WebhookSpec)> {
    let account = account?;
    let spec = connectors.get(&account.connector)?.webhook.as_ref()?;
    (spec.source == source).then_some((account, spec))
}

/// Answers one webhook delivery in the order DESIGN §8 gives.
pub async fn receive(
    ingest: &Ingest,
    target: Option<(&Account, &WebhookSpec)>,
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
) -> Response {
    let metrics = &ingest.metrics;
    let Some((account, spec)) = target else {
        // The path's values are outside input: never a metric label.
        WebhookReceived {
            source: "unknown",
            account: "unknown",
            outcome: "unknown_account",
            status: 404,
            detail: "",
        }
        .emit(metrics);
        return (StatusCode::NOT_FOUND, "unknown store account\n").into_response();
    };
    match read(account, spec, headers, body, max_body_bytes).await {
        Ok(incoming) => ingest.accept(incoming).await,
        Err(rejection) => {
            WebhookReceived {
                source: &spec.source,
                account: &account.name,
                outcome: rejection.outcome,
                status: rejection.status.as_u16(),
                detail: &rejection.detail,
            }
            .emit(metrics);
            (rejection.status, format!("{}\n", rejection.detail)).into_response()
        }
    }
}

/// Why a delivery (or a courier callback) was refused before it reached ingest.
#[derive(Debug)]
pub struct Rejection {
    /// The metric's outcome label.
    pub(super) outcome: &'static str,
    pub(super) status: StatusCode,
    pub(super) detail: String,
}

impl Rejection {
    pub(super) fn too_large() -> Self {
        Rejection::new(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "body exceeds http.max_body_bytes",
        )
    }

    /// Why a body could not be read, from the error its reading gave.
    pub(super) fn unread(error: axum::Error) -> Self {
        match error.into_inner().downcast::<BodyError>().map(|e| *e) {
            Ok(BodyError::Busy) => Rejection::new(
                "busy",
                StatusCode::SERVICE_UNAVAILABLE,
                "too many webhook bodies are being read at once (http.max_buffered_body_bytes); try again",
            ),
            Ok(BodyError::TimedOut(_)) => Rejection::new(
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                "body not received within http.body_read_timeout",
            ),
            Ok(BodyError::Aborted(_)) | Err(_) => Rejection::new(
                "aborted",
                StatusCode::BAD_REQUEST,
                "body cut short: the connection closed or failed before it was complete",
            ),
        }
    }

    pub(super) fn unauthorized(detail: impl Into<String>) -> Self {
        Rejection::new("unauthorized", StatusCode::UNAUTHORIZED, detail)
    }

    pub(super) fn bad_request(detail: impl Into<String>) -> Self {
        Rejection::new("bad_request", StatusCode::BAD_REQUEST, detail)
    }

    /// A body that is not strict JSON. One naming a member twice is counted
    /// apart: a store's own serializer never writes one, so each is worth
    /// seeing on its own.
    fn unreadable(what: &str, error: JsonError) -> Self {
        match error {
            JsonError::DuplicateKey { .. } => Rejection::new(
                "duplicate_keys",
                StatusCode::BAD_REQUEST,
                format!("body refused: {error}"),
            ),
            JsonError::Invalid(e) => Rejection::bad_request(format!("{what}: {e}")),
        }
    }

    pub(super) fn new(
        outcome: &'static str,
        status: StatusCode,
        detail: impl Into<String>,
    ) -> Self {
        Rejection {
            outcome,
            status,
            detail: detail.into(),
        }
    }
}

/// Size, signature, headers and order id, in that order: the event, or
/// why it was refused.
async fn read(
    account: &Account,
    spec: &WebhookSpec,
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
) -> Result<Incoming, Rejection> {
    let body = read_body(headers, body, max_body_bytes).await?;
    if let Some(signature) = &spec.signature {
        check_signature(account, signature, headers, &body)?;
    }
    let topic = named_header(headers, &spec.topic_header).map_err(Rejection::bad_request)?;
    let delivery_id =
        named_header(headers, &spec.delivery_id_header).map_err(Rejection::bad_request)?;
    let order_id = order_id(&body, &spec.order_id)?;
    let delivery_id = if delivery_id.is_empty() {
        format!("{topic}:{order_id}:{}", body_digest(&body))
    } else {
        delivery_id
    };
    Ok(Incoming {
        source: spec.source.clone(),
        account: account.name.clone(),
        delivery_id,
        topic,
        order_id,
        body: body.to_vec(),
    })
}

/// The body, refused above `max_body_bytes` before it is read when the
/// request says its length, and while it is read otherwise. A body that
/// cannot be read whole is told apart by why: too large (413), the server's
/// body budget full (503), not received in time (408), or cut short by the
/// client (400).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
) -> Result<Bytes, Rejection> {
    use http_body_util::BodyExt;
    let declared_len = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > max_body_bytes as u64) {
        return Err(Rejection::too_large());
    }
    let mut body = body;
    let mut chunks = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Rejection::unread)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > max_body_bytes {
            return Err(Rejection::too_large());
        }
        chunks.push(data);
    }
    // A body usually arrives as one chunk, which needs no copy.
    if chunks.len() == 1 {
        return Ok(chunks.swap_remove(0));
    }
    let mut whole = Vec::with_capacity(len);
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(whole))
}

fn check_signature(
    account: &Account,
    signature: &SignatureSpec,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let Some(secret) = account.credentials.get(&signature.secret) else {
        return Err(Rejection::unauthorized("account has no signing secret"));
    };
    let given = headers
        .get(signature.header.as_str())
        .and_then(|v| v.to_str().ok());
    if given.is_some_and(|sig| verify(signature, secret.as_bytes(), body, sig)) {
        Ok(())
    } else {
        Err(Rejection::unauthorized(format!(
            "missing or invalid {} signature",
            signature.header
        )))
    }
}

/// The trimmed value of the header the connector names; empty when it
/// names none, an error when the request lacks it.
fn named_header(headers: &HeaderMap, name: &Option<String>) -> Result<String, String> {
    let Some(name) = name else {
        return Ok(String::new());
    };
    headers
        .get(name.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("missing {name} header"))
}

/// Stands in for a delivery id when a store sends none: the same body is
/// the same delivery.
fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(body))
}

/// The order id at `path` in `body`, as exact text (ids exceed 2^53, so
/// never through f64); refused when the body is not one JSON value, names
/// a member twice in one object at any depth (the pipeline must read the
/// same id ingest keyed it by), or holds no usable id.
pub fn order_id(body: &[u8], path: &OrderIdPath) -> Result<String, Rejection> {
    // `serde_json` does not check the UTF-8 of strings it skips, and the
    // pipeline would refuse such a body later; refusing it here answers 400.
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::bad_request(format!(
            "body is not UTF-8 JSON: invalid byte at {}",
            e.valid_up_to()
        ))
    })?;
    let found = match path {
        // The usual `$.id`: one member built, the rest only checked.
        OrderIdPath::Member(name) => json::member(text, name)
            .map_err(|e| Rejection::unreadable("body is not a JSON object", e))?
            .unwrap_or(Value::Null),
        OrderIdPath::Path(path) => {
            let value =
                json::parse(body).map_err(|e| Rejection::unreadable("body is not JSON", e))?;
            path.query(&value)
                .exactly_one()
                .cloned()
                .unwrap_or(Value::Null)
        }
    };
    match found {
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(Rejection::bad_request("body has no usable order id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(encoding: SignatureEncoding) -> SignatureSpec {
        SignatureSpec {
            header: "X-Sig".into(),
            algorithm: SignatureAlgorithm::HmacSha256,
            encoding,
            secret: "webhook_secret".into(),
        }
    }

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        for encoding in [SignatureEncoding::Base64, SignatureEncoding::Hex] {
            let spec = spec(encoding);
            let body = br#"{"id":820982911946154508}"#;
            let sig = sign(&spec, b"secret", body);
            assert!(verify(&spec, b"secret", body, &sig));
            assert!(!verify(&spec, b"other", body, &sig));
            assert!(!verify(
                &spec,
                b"secret",
                br#"{"id":820982911946154509}"#,
                &sig
            ));
            assert!(!verify(&spec, b"secret", body, "not base64 or hex!!"));
            assert!(!verify(&spec, b"secret", body, ""));
        }
    }

    fn path(text: &str) -> OrderIdPath {
        OrderIdPath::parse(text).unwrap()
    }

    #[test]
    fn order_id_stays_exact_beyond_2_pow_53() {
        assert_eq!(
            order_id(br#"{"id":820982911946154508}"#, &path("$.id")).unwrap(),
            "820982911946154508"
        );
        assert_eq!(
            order_id(br#"{"id":"gid-7"}"#, &path("$.id")).unwrap(),
            "gid-7"
        );
        assert_eq!(
            order_id(br#"{"order":{"number":12}}"#, &path("$.order.number")).unwrap(),
            "12"
        );
        assert!(order_id(br#"{"id":1.5}"#, &path("$.id")).is_err());
        assert!(order_id(b"[1,2]", &path("$.id")).is_err());
        assert!(order_id(b"{}", &path("$.id")).is_err());
        assert!(order_id(b"\xff", &path("$.id")).is_err());
        assert!(
            order_id(br#"{"id":1,"x":[}"#, &path("$.id")).is_err(),
            "the rest is still checked"
        );
        assert!(order_id(br#"{"id":1} trailing"#, &path("$.id")).is_err());
        assert_eq!(order_id(br#"{"id":-42}"#, &path("$.id")).unwrap(), "-42");
        assert_eq!(
            order_id(br#"{"id":" g\u0037 "}"#, &path("$.id")).unwrap(),
            "g7"
        );
        for (body, id) in [
            (&br#"{"\u0069d":7,"id":8}"#[..], "$.id"),
            (br#"{"id":9100013,"x":1,"id":9100014}"#, "$.id"),
            (br#"{"id":1,"a":{"b":[{"c":1,"c":2}]}}"#, "$.id"),
            (br#"{"order":{"id":1,"x":{"y":1,"y":1}}}"#, "$.order.id"),
        ] {
            let refused = order_id(body, &path(id)).unwrap_err();
            assert_eq!(
                (refused.outcome, refused.status),
                ("duplicate_keys", StatusCode::BAD_REQUEST),
                "{refused:?}"
            );
        }
        let unreadable = order_id(br#"{"id":1,"x":[}"#, &path("$.id")).unwrap_err();
        assert_eq!(unreadable.outcome, "bad_request");
        assert!(
            order_id(b"{\"id\":1,\"x\":\"\xff\"}", &path("$.id")).is_err(),
            "a skipped string is still UTF-8"
        );
        assert!(order_id(br#"{"id":"  "}"#, &path("$.id")).is_err());
        assert!(order_id(br#"{"id":1e3}"#, &path("$.id")).is_err());
        assert!(order_id(br#"{"id":99999999999999999999}"#, &path("$.id")).is_err());
        assert!(order_id(br#"{"id":null}"#, &path("$.id")).is_err());
        assert_eq!(
            order_id(br#"{"order":{"id":5}}"#, &path("$.order.id")).unwrap(),
            "5"
        );
        assert_eq!(path("$.id"), OrderIdPath::Member("id".into()));
        assert!(matches!(path("$.order.id"), OrderIdPath::Path(_)));
        assert!(matches!(path("$['id']"), OrderIdPath::Path(_)));
        assert_eq!(
            order_id(br#"{"id":7}"#, &path("$['id']")).unwrap(),
            "7",
            "a bracketed member is read through the general path"
        );
    }
}
