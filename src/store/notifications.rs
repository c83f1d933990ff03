//! Customer notifications (the `notify` step): one row per (pipeline,
//! shipment, status), so a status change is posted once however often its
//! message is delivered, and the canonical shipment as booked, which is what
//! lets a notification reach the recipient's name and phone (a status change
//! carries neither).
//!
//! ```yaml
//! - notify: { to: notify-main, body: mappings/notify/sms.yaml, statuses: [delivered] }
//! ```

use super::StoreError;
use async_trait::async_trait;

/// Where one notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationState {
    /// A POST went out (or is about to) without a 2xx answer yet: a retry or
    /// a replay sends it again, with the same notification id.
    Sending,
    /// The receiver answered 2xx: never sent again.
    Sent,
}

impl NotificationState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Sending => "sending",
            NotificationState::Sent => "sent",
        }
    }

    pub fn parse(text: &str) -> Option<NotificationState> {
        match text {
            "sending" => Some(NotificationState::Sending),
            "sent" => Some(NotificationState::Sent),
            _ => None,
        }
    }
}

/// Which notification: a notify pipeline, a shipment's booking key and a
/// canonical status.
#[derive(Debug, Clone, Copy)]
pub struct NotificationKey<'a> {
    pub pipeline: &'a str,
    pub booking_key: &'a str,
    pub status: &'a str,
}

#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Where the notification stands; `None` when it was never attempted.
    async fn notification(
        &self,
        key: NotificationKey<'_>,
    ) -> Result<Option<NotificationState>, StoreError>;

    /// Records an attempt about to be sent (`sending`, one more attempt),
    /// unless it was sent already; returns the state before.
    async fn begin_notification(
        &self,
        key: NotificationKey<'_>,
    ) -> Result<Option<NotificationState>, StoreError>;

    /// The receiver answered 2xx.
    async fn mark_notified(&self, key: NotificationKey<'_>) -> Result<(), StoreError>;
}
