//! Write-backs to stores, made idempotent (DESIGN §8): one row per shipment
//! and write-back operation (`fulfillment`, or `event:<status>`), so a
//! store gets one fulfillment per shipment and one event per status however
//! often the bus redelivers.
//!
//! A row is claimed `sent` just before its request goes out, with an owner
//! and a lease, and becomes `done` with the store's answer. A row found
//! `sent` whose owner is gone (a crash) or whose answer was ambiguous is
//! claimed again, and the caller looks the store up before sending again.

use super::StoreError;
use crate::model::BookingKey;
use async_trait::async_trait;
use std::time::Duration;

/// The answer to a write-back claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteBackClaim {
    /// The caller may send. `checked` is false when the row was found
    /// `sent` before: it may have reached the store, so look first.
    Acquired { checked: bool },
    /// Written before; the store's id of what was written, when it gave one.
    Done(Option<String>),
    /// Another live owner's request may be out.
    Busy,
}

/// One claim on a write-back row.
#[derive(Debug, Clone, Copy)]
pub struct WriteBackTicket<'a> {
    pub key: &'a BookingKey,
    /// `fulfillment` or `event:<canonical status>`.
    pub operation: &'a str,
    pub owner: &'a str,
    pub lease: Duration,
}

#[async_trait]
pub trait WriteBackStore: Send + Sync + 'static {
    /// Claims the row for sending (see [`WriteBackClaim`]). A row `sent` by
    /// the same owner before is taken again at once: on one machine the
    /// owner is the machine, and its earlier request is over.
    async fn claim_write_back(
        &self,
        ticket: WriteBackTicket<'_>,
    ) -> Result<WriteBackClaim, StoreError>;

    /// Records the write-back done, with the store's id when it gave one.
    async fn finish_write_back(
        &self,
        key: &BookingKey,
        operation: &str,
        remote_id: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The store certainly did not act: forget the claim.
    async fn release_write_back(
        &self,
        key: &BookingKey,
        operation: &str,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// The answer was ambiguous: keep the row `sent`, ending the lease, so
    /// whoever claims it next looks the store up first.
    async fn doubt_write_back(
        &self,
        key: &BookingKey,
        operation: &str,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// The store's id recorded for a done write-back.
    async fn write_back_id(
        &self,
        key: &BookingKey,
        operation: &str,
    ) -> Result<Option<String>, StoreError>;
}
