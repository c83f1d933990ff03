//! Shopify order webhooks: `POST /webhooks/shopify/{account}`.
//!
//! The signature is HMAC-SHA256 of the raw body keyed with the account's
//! `webhook_secret`, base64, in `X-Shopify-Hmac-Sha256`, compared in
//! constant time. `X-Shopify-Topic` names the event and
//! `X-Shopify-Webhook-Id` identifies the delivery for dedupe.
//!
//! ```yaml
//! accounts:
//!   shopify-main: { connector: shopify, credentials: { webhook_secret: "${SHOPIFY_SECRET:-dev-secret}" } }
//! ```

use super::{Incoming, Ingest};
use crate::config::Account;
use crate::telemetry::events::WebhookReceived;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

pub const SOURCE: &str = "shopify";
pub const HMAC_HEADER: &str = "x-shopify-hmac-sha256";
pub const TOPIC_HEADER: &str = "x-shopify-topic";
pub const WEBHOOK_ID_HEADER: &str = "x-shopify-webhook-id";

/// Base64 HMAC-SHA256 of `body` keyed with `secret`, as Shopify signs.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a Shopify signature in constant time; malformed base64 fails.
pub fn verify(secret: &[u8], body: &[u8], signature_b64: &str) -> bool {
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim())
    else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// Answers one Shopify webhook delivery.
pub async fn receive(
    ingest: &Ingest,
    account: Option<&Account>,
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
) -> Response {
    let metrics = &ingest.metrics;
    let Some(account) = account.filter(|a| a.connector == SOURCE) else {
        WebhookReceived {
            source: SOURCE,
            account: "unknown",
            outcome: "unknown_account",
            status: 404,
            detail: "",
        }
        .emit(metrics);
        return (StatusCode::NOT_FOUND, "unknown shopify account\n").into_response();
    };
    let reject = |outcome: &str, status: StatusCode, detail: &str| {
        WebhookReceived {
            source: SOURCE,
            account: &account.name,
            outcome,
            status: status.as_u16(),
            detail,
        }
        .emit(metrics);
        (status, format!("{detail}\n")).into_response()
    };
    let declared_len = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > max_body_bytes as u64) {
        return reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "body exceeds http.max_body_bytes",
        );
    }
    let body = match axum::body::to_bytes(body, max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return reject(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "body exceeds http.max_body_bytes",
            );
        }
    };
    let Some(secret) = account.credentials.get("webhook_secret") else {
        return reject(
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "account has no webhook_secret",
        );
    };
    let signature = headers.get(HMAC_HEADER).and_then(|v| v.to_str().ok());
    if !signature.is_some_and(|sig| verify(secret.as_bytes(), &body, sig)) {
        return reject(
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Shopify-Hmac-Sha256 signature",
        );
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(topic) = header(TOPIC_HEADER) else {
        return reject(
            "bad_request",
            StatusCode::BAD_REQUEST,
            "missing X-Shopify-Topic header",
        );
    };
    let Some(delivery_id) = header(WEBHOOK_ID_HEADER) else {
        return reject(
            "bad_request",
            StatusCode::BAD_REQUEST,
            "missing X-Shopify-Webhook-Id header",
        );
    };
    let order_id = match order_id(&body) {
        Ok(id) => id,
        Err(problem) => return reject("bad_request", StatusCode::BAD_REQUEST, &problem),
    };
    let incoming = Incoming {
        source: SOURCE,
        account: account.name.clone(),
        delivery_id: delivery_id.to_string(),
        topic: topic.to_string(),
        order_id,
        body: body.to_vec(),
    };
    ingest.accept(incoming).await
}

/// The order id as an exact string (ids exceed 2^53, so never through f64).
fn order_id(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        id: Option<serde_json::Value>,
    }
    let head: Head =
        serde_json::from_slice(body).map_err(|e| format!("body is not a JSON order: {e}"))?;
    match head.id {
        Some(serde_json::Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err("order has no `id`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let body = br#"{"id":820982911946154508}"#;
        let sig = sign(b"secret", body);
        assert!(verify(b"secret", body, &sig));
        assert!(!verify(b"other", body, &sig));
        assert!(!verify(b"secret", br#"{"id":820982911946154509}"#, &sig));
        assert!(!verify(b"secret", body, "not base64!!"));
        assert!(!verify(b"secret", body, ""));
    }

    #[test]
    fn order_id_stays_exact_beyond_2_pow_53() {
        assert_eq!(
            order_id(br#"{"id":820982911946154508}"#).unwrap(),
            "820982911946154508"
        );
        assert_eq!(order_id(br#"{"id":"gid-7"}"#).unwrap(), "gid-7");
        assert!(order_id(br#"{"id":1.5}"#).is_err());
        assert!(order_id(b"[1,2]").is_err());
        assert!(order_id(b"{}").is_err());
        assert!(order_id(b"\xff").is_err());
    }
}
