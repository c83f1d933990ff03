//! The COD lifecycle of a shipment (DESIGN §9), beside its delivery status:
//! what the courier should collect, whether it did, and whether it paid the
//! merchant what it collected.
//!
//! ```text
//! not_applicable                      (prepaid: nothing to collect)
//! pending ──delivered──▶ collected ──remittance──▶ remitted | short_paid
//!    └──returned / cancelled──▶ not_collected
//! any state with COD ──`waybill cod dispute`──▶ disputed
//! ```
//!
//! Amounts are decimals (never `f64`). A remittance is `short_paid` when it
//! is below the expected amount less the fees the courier declared, by more
//! than the tolerance (`cod: { tolerance: "1.00" }` in `waybill.yaml`).

use super::Status;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Where a shipment's cash on delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodState {
    /// Prepaid: nothing to collect.
    NotApplicable,
    /// To be collected on delivery.
    Pending,
    /// The courier delivered the parcel and holds the cash.
    Collected,
    /// The courier paid the merchant (the amount matched, or the courier
    /// named none).
    Remitted,
    /// The parcel came back or was cancelled: nothing was collected.
    NotCollected,
    /// The courier paid less than it collected, less its fees, beyond the tolerance.
    ShortPaid,
    /// An operator disputes the remittance (`waybill cod dispute`).
    Disputed,
}

/// Every state, in lifecycle order.
pub const ALL: [CodState; 7] = [
    CodState::NotApplicable,
    CodState::Pending,
    CodState::Collected,
    CodState::Remitted,
    CodState::NotCollected,
    CodState::ShortPaid,
    CodState::Disputed,
];

impl CodState {
    pub fn as_str(self) -> &'static str {
        match self {
            CodState::NotApplicable => "not_applicable",
            CodState::Pending => "pending",
            CodState::Collected => "collected",
            CodState::Remitted => "remitted",
            CodState::NotCollected => "not_collected",
            CodState::ShortPaid => "short_paid",
            CodState::Disputed => "disputed",
        }
    }

    pub fn parse(text: &str) -> Option<CodState> {
        ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// The state of a new shipment that is to collect `amount` (decimal text).
    pub fn initial(amount: Option<&str>) -> CodState {
        match amount.and_then(|a| Decimal::from_str(a.trim()).ok()) {
            Some(amount) if amount > Decimal::ZERO => CodState::Pending,
            _ => CodState::NotApplicable,
        }
    }

    /// Whether the courier took the cash (so a remittance is owed).
    pub fn was_collected(self) -> bool {
        matches!(
            self,
            CodState::Collected | CodState::Remitted | CodState::ShortPaid | CodState::Disputed
        )
    }
}

/// What a shipment moving to `status` does to its COD state `from`; `None`
/// when it stays. Settled states (remitted, short-paid, disputed) are kept
/// whatever the parcel does, since money already moved or a person is on it.
pub fn on_status(from: CodState, status: Status) -> Option<CodState> {
    match (from, status) {
        (CodState::Pending | CodState::NotCollected, Status::Delivered) => {
            Some(CodState::Collected)
        }
        // `collected` too: a delivery corrected into a return collected nothing.
        (CodState::Pending | CodState::Collected, Status::Returned | Status::Cancelled) => {
            Some(CodState::NotCollected)
        }
        _ => None,
    }
}

/// What a courier says it paid for one shipment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Remittance {
    /// The amount paid; `None` when the courier names none (PostEx's
    /// payment-status says only whether the order is settled).
    pub amount: Option<Decimal>,
    /// When it was paid, as the courier wrote it.
    pub at: Option<String>,
    /// The courier's payment reference (PostEx CPR numbers, a cheque number).
    pub reference: Option<String>,
    /// The courier's fees on the shipment, where it declares them.
    pub fees: Option<Decimal>,
}

/// How a remittance compares with what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Within the tolerance of expected less fees (or more).
    Matched,
    /// Below expected less fees by more than the tolerance.
    Short,
    /// The courier named no amount: remitted, but not checked.
    Unchecked,
}

impl Judgement {
    pub fn state(self) -> CodState {
        match self {
            Judgement::Matched | Judgement::Unchecked => CodState::Remitted,
            Judgement::Short => CodState::ShortPaid,
        }
    }
}

/// Judges `remittance` against `expected` with `tolerance`.
pub fn judge(expected: Decimal, remittance: &Remittance, tolerance: Decimal) -> Judgement {
    let Some(paid) = remittance.amount else {
        return Judgement::Unchecked;
    };
    // Amounts from outside may be absurd: a sum that overflows is not a match.
    let missing = expected
        .checked_sub(remittance.fees.unwrap_or(Decimal::ZERO))
        .and_then(|owed| owed.checked_sub(paid));
    match missing {
        Some(missing) if missing <= tolerance => Judgement::Matched,
        _ => Judgement::Short,
    }
}

/// Reads a courier's amount: digits with an optional sign and decimal
/// point, thousands separators (`,`) and surrounding spaces allowed.
pub fn parse_amount(text: &str) -> Result<Decimal, String> {
    let cleaned: String = text.trim().chars().filter(|c| *c != ',').collect();
    if cleaned.is_empty()
        || !cleaned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'))
    {
        return Err(format!("`{text}` is not an amount such as 1500.00"));
    }
    Decimal::from_str(&cleaned).map_err(|_| format!("`{text}` is not an amount such as 1500.00"))
}

/// The default of `cod.tolerance`: one unit of the currency, so a courier's
/// rounding of fees is not a short payment.
pub const DEFAULT_TOLERANCE: &str = "1.00";

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn a_new_shipment_is_pending_only_with_an_amount_to_collect() {
        assert_eq!(CodState::initial(Some("1500.00")), CodState::Pending);
        assert_eq!(CodState::initial(Some("0.01")), CodState::Pending);
        for none in [Some("0"), Some("0.00"), Some("-5"), Some("abc"), None] {
            assert_eq!(CodState::initial(none), CodState::NotApplicable, "{none:?}");
        }
    }

    #[test]
    fn delivery_collects_and_a_return_or_cancellation_does_not() {
        use CodState::*;
        assert_eq!(on_status(Pending, Status::Delivered), Some(Collected));
        assert_eq!(on_status(Pending, Status::Returned), Some(NotCollected));
        assert_eq!(on_status(Pending, Status::Cancelled), Some(NotCollected));
        assert_eq!(on_status(Collected, Status::Returned), Some(NotCollected));
        assert_eq!(on_status(NotCollected, Status::Delivered), Some(Collected));
        for moving in [
            Status::InTransit,
            Status::OutForDelivery,
            Status::DeliveryFailed,
        ] {
            assert_eq!(on_status(Pending, moving), None, "{moving:?}");
        }
        for settled in [NotApplicable, Remitted, ShortPaid, Disputed] {
            for status in [Status::Delivered, Status::Returned, Status::Cancelled] {
                assert_eq!(on_status(settled, status), None, "{settled:?} {status:?}");
            }
        }
        assert_eq!(on_status(Collected, Status::Delivered), None);
    }

    #[test]
    fn a_remittance_below_expected_less_fees_beyond_the_tolerance_is_short() {
        let tolerance = d(DEFAULT_TOLERANCE);
        let paid = |amount: &str, fees: Option<&str>| Remittance {
            amount: Some(d(amount)),
            fees: fees.map(d),
            ..Remittance::default()
        };
        let expected = d("1500.00");
        assert_eq!(
            judge(expected, &paid("1500.00", None), tolerance),
            Judgement::Matched
        );
        assert_eq!(
            judge(expected, &paid("1499.00", None), tolerance),
            Judgement::Matched
        );
        assert_eq!(
            judge(expected, &paid("1498.99", None), tolerance),
            Judgement::Short
        );
        assert_eq!(
            judge(expected, &paid("1350.00", Some("150.00")), tolerance),
            Judgement::Matched
        );
        assert_eq!(
            judge(expected, &paid("1300.00", Some("150.00")), tolerance),
            Judgement::Short
        );
        assert_eq!(
            judge(expected, &paid("1600.00", None), tolerance),
            Judgement::Matched
        );
        assert_eq!(
            judge(expected, &paid("1499.50", None), Decimal::ZERO),
            Judgement::Short
        );
        assert_eq!(
            judge(expected, &Remittance::default(), tolerance),
            Judgement::Unchecked
        );
        assert_eq!(Judgement::Short.state(), CodState::ShortPaid);
        assert_eq!(Judgement::Unchecked.state(), CodState::Remitted);
    }

    #[test]
    fn amounts_are_read_exactly() {
        assert_eq!(parse_amount(" 1,500.10 ").unwrap(), d("1500.10"));
        assert_eq!(
            parse_amount("0.1").unwrap() + parse_amount("0.2").unwrap(),
            d("0.3")
        );
        for bad in ["", "PKR 100", "1e3", "12.3.4", "--1"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip_by_name() {
        for state in ALL {
            assert_eq!(CodState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::String(state.as_str().into())
            );
        }
        assert_eq!(CodState::parse("paid"), None);
    }
}
