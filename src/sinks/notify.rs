//! The `notify` step's side effect: one signed POST per (shipment, status)
//! to a notifier account's URL, its body from a mapping, so an SMS, WhatsApp
//! or e-mail provider's webhook needs no code.
//!
//! The body is the mapping's JSON, signed `sha256=<hex HMAC-SHA256 of the
//! body>` with the account's `signing_secret` in the step's signature
//! header. Each (pipeline, shipment, status) is a row in the store: `sent`
//! once the receiver answered 2xx, after which a redelivered status change
//! posts nothing. A failure that may pass (no connection, a timeout, 408,
//! 425, 429, 5xx) is retried with the pipeline's `retry:` policy, sending
//! the same `X-Waybill-Notification-Id` so a receiver can drop a repeat; any
//! other answer is a dead letter saying what the receiver answered.
//!
//! ```yaml
//! - notify:
//!     to: notify-main
//!     body: mappings/notify/sms.yaml
//!     statuses: [out_for_delivery, delivered, delivery_failed]
//!     signature_header: X-Signature
//! ```

use super::book::{InFlight, Slots};
use crate::config::{Account, Config, NotifyStep, Pipeline};
use crate::connector::SIGNING_SECRET;
use crate::connector::classify::{error_chain, parse_retry_after};
use crate::mapping::Context;
use crate::model::{BookingKey, ErrorClass, Exchange, Failure};
use crate::stages::Event;
use crate::store::notifications::{NotificationKey, NotificationState, NotificationStore};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::events::NotificationSent;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::Arc;

/// The step every failure of a notification is attributed to.
const STAGE: &str = "notify";

/// The header carrying the notification's stable id.
pub const ID_HEADER: &str = "X-Waybill-Notification-Id";

/// How much of a receiver's answer a dead letter keeps.
const KEPT_RESPONSE_BYTES: usize = 2048;

/// What became of a status change the step notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// Posted now, and answered 2xx.
    Sent,
    /// Posted before: nothing sent.
    AlreadySent,
}

/// Posts notifications.
pub struct Notifier {
    pub config: Arc<Config>,
    pub store: Arc<dyn NotificationStore>,
    /// Where each booking key keeps the shipment it was booked with.
    pub bookings: Arc<dyn Store>,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
}

/// One notification about to be posted.
struct Outgoing<'a> {
    step: &'a NotifyStep,
    account: &'a Account,
    id: String,
    body: Vec<u8>,
}

fn store_failure(e: StoreError) -> Failure {
    let class = if e.is_transient() {
        ErrorClass::Retryable
    } else {
        ErrorClass::Permanent
    };
    Failure::new(STAGE, class, format!("store: {e}"))
}

/// `sha256=<hex>` of `body` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The URL as messages show it: without its query, where a provider's
/// key may travel.
pub(crate) fn shown_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The class of a receiver's answer other than 2xx: what may pass is
/// retried (a notification sent twice carries the same id; one never sent
/// is a customer left wondering), anything else will not pass by itself.
fn answer_class(status: u16) -> ErrorClass {
    match status {
        408 | 425 | 429 | 500..=599 => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

impl Notifier {
    /// Posts the notification of one status change the step's filter
    /// admitted, unless it was posted before.
    pub async fn notify(
        &self,
        pipeline: &Pipeline,
        step: &NotifyStep,
        event: &Event,
        change: &Value,
        slots: &Slots,
    ) -> Result<Notified, Failure> {
        let text = |name: &str| {
            change[name].as_str().ok_or_else(|| {
                Failure::permanent(
                    STAGE,
                    format!("the status change has no `{name}`: not a message of shipments.status"),
                )
            })
        };
        let (booking_key, status) = (text("key")?, text("status")?);
        let key = NotificationKey {
            pipeline: &pipeline.name,
            booking_key,
            status,
        };
        let done = self.store.notification(key).await.map_err(store_failure)?;
        if done == Some(NotificationState::Sent) {
            self.count(pipeline, "duplicate");
            return Ok(Notified::AlreadySent);
        }
        let account = self.config.accounts.get(&step.account).ok_or_else(|| {
            Failure::permanent(
                STAGE,
                format!("no account `{}` in this config", step.account),
            )
        })?;
        let body = self.body(step, event, change, booking_key).await?;
        let outgoing = Outgoing {
            step,
            account,
            id: format!("{}/{booking_key}/{status}", pipeline.name),
            body,
        };
        let before = self
            .store
            .begin_notification(key)
            .await
            .map_err(store_failure)?;
        if before == Some(NotificationState::Sent) {
            self.count(pipeline, "duplicate");
            return Ok(Notified::AlreadySent);
        }
        let Some(_in_flight) = InFlight::enter(slots).await else {
            return Err(Failure::new(
                STAGE,
                ErrorClass::Retryable,
                "the pipeline is closing",
            ));
        };
        if let Err(failure) = post(&self.http, &outgoing).await {
            self.count(pipeline, failure.class.as_str());
            return Err(failure);
        }
        self.store.mark_notified(key).await.map_err(store_failure)?;
        self.count(pipeline, "sent");
        Ok(Notified::Sent)
    }

    /// The mapped body, over the shipment as it was booked (null when the
    /// key was claimed before shipments were kept).
    async fn body(
        &self,
        step: &NotifyStep,
        event: &Event,
        change: &Value,
        booking_key: &str,
    ) -> Result<Vec<u8>, Failure> {
        let key: BookingKey = booking_key.parse().map_err(|e| {
            Failure::permanent(STAGE, format!("status change key `{booking_key}`: {e}"))
        })?;
        let kept = self
            .bookings
            .booked_shipment(&key)
            .await
            .map_err(store_failure)?;
        let shipment = kept
            .and_then(|booked| booked.shipment)
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .unwrap_or(Value::Null);
        let body = render(step, &self.config, event, change, &shipment)?;
        serde_json::to_vec(&body)
            .map_err(|e| Failure::permanent(STAGE, format!("notification body: {e}")))
    }

    fn count(&self, pipeline: &Pipeline, outcome: &str) {
        NotificationSent {
            pipeline: &pipeline.name,
            outcome,
        }
        .emit(&self.metrics);
    }
}

/// The notification body: the step's mapping over `change`, `shipment`
/// (the canonical shipment as booked, or null), `event` and `account`
/// (the store account, as other steps see it).
pub fn render(
    step: &NotifyStep,
    config: &Config,
    event: &Event,
    change: &Value,
    shipment: &Value,
) -> Result<Value, Failure> {
    let settings = config
        .accounts
        .get(&event.account)
        .map(|a| Value::Object(a.settings.clone()))
        .unwrap_or_else(|| json!({}));
    let mut ctx = Context::default();
    ctx.set("change", change);
    ctx.set("shipment", shipment);
    ctx.set(
        "event",
        &json!({ "topic": event.topic, "account": event.account, "source": event.source, "headers": event.headers }),
    );
    ctx.set(
        "account",
        &json!({ "name": event.account, "settings": settings }),
    );
    step.body
        .eval_in(&ctx)
        .map_err(|e| Failure::permanent(STAGE, format!("notification body: {e}")))
}

/// One POST; `Ok` on a 2xx answer.
async fn post(http: &reqwest::Client, outgoing: &Outgoing<'_>) -> Result<(), Failure> {
    let step = outgoing.step;
    let secrets = &outgoing.account.secrets;
    let secret = outgoing
        .account
        .credentials
        .get(SIGNING_SECRET)
        .map(String::as_str)
        .unwrap_or_default();
    let url = shown_url(&step.url);
    let sent = http
        .post(&step.url)
        .timeout(step.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ID_HEADER, &outgoing.id)
        .header(
            step.signature_header.as_str(),
            signature(secret.as_bytes(), &outgoing.body),
        )
        .body(outgoing.body.clone())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            let message = format!("notification not delivered to {url}: {}", error_chain(&e));
            return Err(Failure::new(
                STAGE,
                ErrorClass::Retryable,
                secrets.redact(&message).into_owned(),
            ));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
    let text = response.text().await.unwrap_or_default();
    let text = secrets.redact(text.trim()).into_owned();
    let kept: String = text.chars().take(KEPT_RESPONSE_BYTES).collect();
    let message = format!(
        "the notification receiver at {url} answered {status}{}",
        if kept.is_empty() {
            String::new()
        } else {
            format!(": {}", kept.chars().take(200).collect::<String>())
        }
    );
    Err(Failure::new(
        STAGE,
        answer_class(status.as_u16()),
        secrets.redact(&message),
    )
    .with_retry_after(retry_after)
    .with_exchange(Exchange {
        status: Some(status.as_u16()),
        request: Some(json!({ "method": "POST", "url": url, "id": outgoing.id })),
        response: Some(format!("{status}\n{kept}")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answers_that_may_pass_are_retried_and_others_are_not() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(answer_class(status), ErrorClass::Retryable, "{status}");
        }
        for status in [400, 401, 403, 404, 410, 422] {
            assert_eq!(answer_class(status), ErrorClass::Permanent, "{status}");
        }
    }

    const SECRET: &str = "s3cret-key";

    async fn post_to(status: u16, headers: &[(&str, &str)], url: Option<String>) -> Failure {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
        let receiver = MockServer::start().await;
        let mut answer =
            ResponseTemplate::new(status).set_body_string(format!("bad signature for {SECRET}"));
        for (name, value) in headers {
            answer = answer.insert_header(*name, *value);
        }
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&receiver)
            .await;
        let step = NotifyStep {
            account: "n".into(),
            url: url.unwrap_or_else(|| format!("{}/hook?key={SECRET}", receiver.uri())),
            body: Arc::new(
                crate::mapping::Mapping::parse(std::path::Path::new("m.yaml"), "a: b\n").unwrap(),
            ),
            statuses: vec![],
            signature_header: "X-Sig".into(),
            timeout: std::time::Duration::from_secs(5),
        };
        let account = Account {
            name: "n".into(),
            connector: "notify-webhook".into(),
            credentials: [(SIGNING_SECRET.to_string(), SECRET.to_string())].into(),
            settings: Default::default(),
            base_url: None,
            active: true,
            rate_limit: None,
            secrets: crate::redact::Secrets::new([SECRET]),
        };
        let outgoing = Outgoing {
            step: &step,
            account: &account,
            id: "p/k/delivered".into(),
            body: b"{}".to_vec(),
        };
        post(&reqwest::Client::new(), &outgoing).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_notification_is_permanent_and_says_what_the_receiver_answered() {
        let failure = post_to(401, &[], None).await;
        assert_eq!(
            (failure.stage, failure.class),
            ("notify", ErrorClass::Permanent)
        );
        assert!(
            failure
                .message
                .contains("/hook answered 401 Unauthorized: bad signature for ***"),
            "{}",
            failure.message
        );
        assert!(!format!("{failure:?}").contains(SECRET), "{failure:?}");
        assert_eq!(failure.status(), Some(401));
    }

    #[tokio::test]
    async fn a_throttled_notification_waits_as_long_as_asked() {
        let failure = post_to(429, &[("Retry-After", "7")], None).await;
        assert_eq!(failure.class, ErrorClass::Retryable);
        assert_eq!(failure.retry_after, Some(std::time::Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn a_receiver_that_cannot_be_reached_is_retried() {
        let failure = post_to(200, &[], Some("http://127.0.0.1:9/hook".into())).await;
        assert_eq!(failure.class, ErrorClass::Retryable);
        assert!(
            failure
                .message
                .starts_with("notification not delivered to http://127.0.0.1:9/hook"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn messages_show_the_url_without_its_query() {
        assert_eq!(
            shown_url("https://sms.example/hook?api_key=k#x"),
            "https://sms.example/hook"
        );
        assert_eq!(
            shown_url("https://sms.example/hook"),
            "https://sms.example/hook"
        );
    }
}
