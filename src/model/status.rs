//! The canonical shipment status vocabulary (DESIGN §9).

use serde::{Deserialize, Serialize};

/// Where a shipment is, in one vocabulary for every courier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Booked,
    PickedUp,
    InTransit,
    OutForDelivery,
    DeliveryFailed,
    OnHold,
    Delivered,
    Returning,
    Returned,
    Cancelled,
    Exception,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Booked => "booked",
            Status::PickedUp => "picked_up",
            Status::InTransit => "in_transit",
            Status::OutForDelivery => "out_for_delivery",
            Status::DeliveryFailed => "delivery_failed",
            Status::OnHold => "on_hold",
            Status::Delivered => "delivered",
            Status::Returning => "returning",
            Status::Returned => "returned",
            Status::Cancelled => "cancelled",
            Status::Exception => "exception",
            Status::Unknown => "unknown",
        }
    }

    /// No later event moves a shipment out of a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::Returned | Status::Cancelled
        )
    }
}
