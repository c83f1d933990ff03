//! Decoding rows as read by [`super::queries`] into the store's types.

use crate::model::{BookingKey, BookingResult};
use crate::store::{AuditEntry, Booking, BookingStatus, RowError};
use std::collections::BTreeMap;

/// A row of [`super::queries::SELECT_BOOKING`], column for column.
pub(super) type BookingRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// A row of [`super::queries::SELECT_AUDIT`].
pub(super) type AuditRow = (String, String, Option<String>, Option<String>, String);

/// A booking as read, with the lease that a claim compares.
pub(super) struct StoredBooking {
    pub booking: Booking,
    pub lease_until: Option<String>,
}

fn parse_status(status: &str) -> Result<BookingStatus, RowError> {
    match status {
        "sent" => Ok(BookingStatus::Sent),
        "booked" => Ok(BookingStatus::Booked),
        "review" => Ok(BookingStatus::Review),
        other => Err(RowError::Status(other.to_string())),
    }
}

pub(super) fn stored_booking(row: BookingRow) -> Result<StoredBooking, RowError> {
    let (
        source,
        account,
        order_id,
        sequence,
        status,
        owner,
        lease_until,
        tracking_number,
        courier,
        courier_account,
        extracted,
        reason,
        message_id,
        reference,
        updated_at,
    ) = row;
    let sequence = u32::try_from(sequence).map_err(|_| RowError::Sequence(sequence))?;
    let result = match (tracking_number, courier, courier_account) {
        (Some(tracking_number), Some(courier), Some(account)) => Some(BookingResult {
            tracking_number,
            courier,
            account,
            extracted: extracted_values(extracted.as_deref())?,
        }),
        _ => None,
    };
    Ok(StoredBooking {
        booking: Booking {
            key: BookingKey {
                source,
                account,
                order_id,
                sequence,
            },
            status: parse_status(&status)?,
            result,
            reason,
            owner,
            message_id,
            reference,
            updated_at,
        },
        lease_until,
    })
}

fn extracted_values(text: Option<&str>) -> Result<BTreeMap<String, serde_json::Value>, RowError> {
    match text {
        Some(text) => serde_json::from_str(text).map_err(RowError::Extracted),
        None => Ok(BTreeMap::new()),
    }
}

pub(super) fn booking(row: BookingRow) -> Result<Booking, RowError> {
    stored_booking(row).map(|stored| stored.booking)
}

pub(super) fn audit_entry((key, action, message_id, detail, at): AuditRow) -> AuditEntry {
    AuditEntry {
        key,
        action,
        message_id,
        detail,
        at,
    }
}
