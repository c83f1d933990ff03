//! Shopify webhooks, as `connectors/shopify.yaml` declares them: HMAC-SHA256
//! of the raw body with the account's `webhook_secret`, base64, in
//! `X-Shopify-Hmac-Sha256`. Ingest itself is generic ([`super::webhook`]);
//! this file signs deliveries the way Shopify does, for `waybill simulate`,
//! tests and benchmarks.
//!
//! ```yaml
//! accounts:
//!   shopify-main: { connector: shopify, credentials: { webhook_secret: "${SHOPIFY_SECRET:-dev-secret}" } }
//! ```

use crate::connector::{SignatureAlgorithm, SignatureEncoding, SignatureSpec};

/// Base64 HMAC-SHA256 of `body` keyed with `secret`, as Shopify signs.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let spec = SignatureSpec {
        header: "X-Shopify-Hmac-Sha256".into(),
        algorithm: SignatureAlgorithm::HmacSha256,
        encoding: SignatureEncoding::Base64,
        secret: "webhook_secret".into(),
    };
    super::webhook::sign(&spec, secret, body)
}
