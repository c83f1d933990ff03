//! The COD ledger's store side (DESIGN §9): what [`super::ShipmentStore`]
//! takes and answers about cash on delivery. The state moves with the
//! shipment's status inside the status write itself (delivered →
//! `collected`, returned or cancelled → `not_collected`, see
//! [`crate::model::cod::on_status`]); remittances and disputes are written
//! here.

use crate::model::BookingKey;
use crate::model::CodState;
use crate::model::cod::Judgement;

/// A lease on collected shipments whose payment should be asked about.
#[derive(Debug, Clone, Copy)]
pub struct PaymentLease<'a> {
    pub now: &'a str,
    /// A shipment is first asked about once collected before this.
    pub collected_before: &'a str,
    /// When the leased shipments are next asked about.
    pub next_check_at: &'a str,
    pub limit: usize,
}

/// What recording one remittance did.
#[derive(Debug, Clone, PartialEq)]
pub enum RemitOutcome {
    /// Recorded: the shipment's COD moved from `from` to `to`.
    Recorded {
        key: BookingKey,
        from: CodState,
        to: CodState,
        judgement: Judgement,
    },
    /// The same remittance was recorded before; nothing changed.
    Already { key: BookingKey, state: CodState },
    /// Not recorded, and why (the shipment has no COD, it came back, …).
    Refused { key: BookingKey, why: String },
}

impl RemitOutcome {
    pub fn is_refused(&self) -> bool {
        matches!(self, RemitOutcome::Refused { .. })
    }
}

/// Which shipments `waybill cod report` covers.
#[derive(Debug, Clone, Default)]
pub struct CodFilter {
    /// Booked at or after this store timestamp.
    pub from: Option<String>,
    /// Booked before this store timestamp.
    pub to: Option<String>,
    /// Only this courier connector.
    pub courier: Option<String>,
}

/// The COD gauges' figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodGauges {
    /// (courier, currency, state, sum of expected amounts).
    pub amounts: Vec<(String, String, CodState, f64)>,
    /// (courier, collected shipments, of which remitted with a matching amount).
    pub reconciled: Vec<(String, i64, i64)>,
}
