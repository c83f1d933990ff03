//! The canonical shipment: what a pipeline's mapping produces and every
//! courier connector maps to its own request body.
//!
//! Fields are optional where a store may leave them out, so that a mapping's
//! output always deserialises and the `validate` step can say what is missing.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One shipment to book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shipment {
    /// The store's order id as an exact string (Shopify ids exceed 2^53).
    pub order_id: String,
    /// The merchant-facing reference, e.g. Shopify's order `name` (`#1001`).
    pub reference: String,
    /// Sequence of this shipment within the order (0 for the whole order).
    #[serde(default)]
    pub sequence: u32,
    pub recipient: Recipient,
    /// `cod` or `prepaid`.
    pub payment: String,
    /// Amount to collect on delivery; 0 when prepaid.
    pub cod_amount: Decimal,
    pub currency: Option<String>,
    #[serde(default)]
    pub items: Vec<Item>,
    pub weight_grams: Option<u64>,
    #[serde(default = "one")]
    pub pieces: u32,
    pub notes: Option<String>,
    /// When the order was paid or, for cash on delivery, confirmed: an RFC
    /// 3339 time from the store's own order (Shopify's `processed_at`).
    /// `waybill_paid_to_booking_seconds` is measured from it.
    #[serde(default)]
    pub paid_at: Option<String>,
    /// The store cancelled the order (e.g. Shopify's `cancelled_at`). A
    /// cancelled shipment is never booked; one already booked is cancelled
    /// at the courier (see `runtime::changes`). Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

fn one() -> u32 {
    1
}

/// Who receives the parcel, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub name: Option<String>,
    /// E.164 (`+923001234567`) after mapping; couriers reformat it.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub zip: Option<String>,
    pub country_code: Option<String>,
}

/// One line of the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub name: String,
    pub sku: Option<String>,
    pub quantity: u32,
    pub price: Option<Decimal>,
    pub grams: Option<u64>,
}
