//! A webhook delivery as a store would send it, built from the store
//! connector's `webhook:` rules alone: the path, the signature header and
//! its encoding, the topic and delivery-id headers. `waybill simulate`, the
//! tests and the benchmarks post through it, so a new store needs no Rust to
//! be simulated.
//!
//! ```yaml
//! webhook:
//!   source: acme
//!   signature: { header: X-Acme-Signature, algorithm: hmac-sha256, encoding: hex, secret: signing_key }
//!   topic_header: X-Acme-Event
//!   delivery_id_header: X-Acme-Delivery
//! ```

use super::webhook::sign;
use crate::config::Account;
use crate::connector::WebhookSpec;

/// Why a delivery cannot be signed for an account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("account `{account}` has no `{field}` credential to sign with")]
    NoSecret { account: String, field: String },
}

/// A signed delivery, ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `/webhooks/<source>/<account>`, relative to waybill's base URL.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// The webhook path of a store account.
pub fn path(spec: &WebhookSpec, account: &str) -> String {
    format!("/webhooks/{}/{account}", spec.source)
}

/// The headers a store sends with `body`: its signature keyed with `secret`,
/// then the event name and delivery id where the connector names headers
/// for them, and the JSON content type.
pub fn headers(
    spec: &WebhookSpec,
    secret: &[u8],
    body: &[u8],
    topic: &str,
    delivery_id: &str,
) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(4);
    if let Some(signature) = &spec.signature {
        headers.push((signature.header.clone(), sign(signature, secret, body)));
    }
    if let Some(name) = &spec.topic_header {
        headers.push((name.clone(), topic.to_string()));
    }
    if let Some(name) = &spec.delivery_id_header {
        headers.push((name.clone(), delivery_id.to_string()));
    }
    headers.push(("content-type".into(), "application/json".into()));
    headers
}

/// A delivery of `body` to `account`, signed with the account's credential
/// that the connector's signature rule names.
pub fn for_account(
    spec: &WebhookSpec,
    account: &Account,
    body: &[u8],
    topic: &str,
    delivery_id: &str,
) -> Result<Delivery, DeliveryError> {
    let secret = match &spec.signature {
        Some(signature) => account
            .credentials
            .get(&signature.secret)
            .ok_or_else(|| DeliveryError::NoSecret {
                account: account.name.clone(),
                field: signature.secret.clone(),
            })?
            .as_bytes(),
        None => &[],
    };
    Ok(Delivery {
        path: path(spec, &account.name),
        headers: headers(spec, secret, body, topic, delivery_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{OrderIdPath, SignatureAlgorithm, SignatureEncoding, SignatureSpec};
    use crate::sources::webhook::verify;

    fn acme() -> WebhookSpec {
        WebhookSpec {
            source: "acme".into(),
            signature: Some(SignatureSpec {
                header: "X-Acme-Signature".into(),
                algorithm: SignatureAlgorithm::HmacSha256,
                encoding: SignatureEncoding::Hex,
                secret: "signing_key".into(),
            }),
            topic_header: Some("X-Acme-Event".into()),
            delivery_id_header: None,
            order_id: OrderIdPath::parse("$.id").expect("path"),
            sample_topic: None,
        }
    }

    fn account(credentials: &[(&str, &str)]) -> Account {
        Account {
            name: "acme-main".into(),
            connector: "acme".into(),
            credentials: credentials
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            settings: serde_json::Map::new(),
            base_url: None,
            secrets: crate::redact::Secrets::default(),
            active: true,
            rate_limit: None,
        }
    }

    #[test]
    fn a_delivery_follows_the_connector_rules() {
        let spec = acme();
        let body = br#"{"id":7}"#;
        let delivery = for_account(
            &spec,
            &account(&[("signing_key", "k")]),
            body,
            "order.created",
            "d-1",
        )
        .expect("signed");
        assert_eq!(delivery.path, "/webhooks/acme/acme-main");
        let names: Vec<&str> = delivery.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["X-Acme-Signature", "X-Acme-Event", "content-type"]);
        let signature = &delivery.headers[0].1;
        assert!(verify(
            spec.signature.as_ref().expect("rule"),
            b"k",
            body,
            signature
        ));
        assert_eq!(delivery.headers[1].1, "order.created");
    }

    #[test]
    fn an_account_without_the_secret_cannot_sign() {
        let err = for_account(&acme(), &account(&[]), b"{}", "t", "d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "account `acme-main` has no `signing_key` credential to sign with"
        );
    }
}
