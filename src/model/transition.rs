//! Which status may follow which: the monotonic state machine of a
//! shipment (DESIGN §8, §9).
//!
//! The forward road is booked → picked_up → in_transit → out_for_delivery →
//! delivered, and returning → returned off it; `cancelled` ends it too.
//! Side moves are allowed where couriers really make them: an attempt that
//! failed or a parcel on hold goes back out (`in_transit`,
//! `out_for_delivery`), a failed attempt turns into `returning`, and an
//! `exception` is left by any later scan. Nothing leaves `delivered`,
//! `returned` or `cancelled` but an operator's recorded correction.

use super::Status;

/// The place of a status on the forward road; side states share the place
/// of the step they interrupt.
fn rank(status: Status) -> u8 {
    match status {
        Status::Draft => 0,
        Status::Booked => 1,
        Status::PickedUp => 2,
        Status::InTransit | Status::OnHold => 3,
        Status::OutForDelivery | Status::DeliveryFailed => 4,
        Status::Delivered => 5,
        Status::Returning => 6,
        Status::Returned => 7,
        Status::Cancelled | Status::Exception | Status::Unknown => 0,
    }
}

/// Whether a courier event saying `to` may move a shipment that is `from`.
pub fn may_move(from: Status, to: Status) -> bool {
    if from.is_terminal() || to == Status::Unknown || to == Status::Draft {
        return false;
    }
    if from == to {
        // A newer scan of the same status: it moves nothing backwards.
        return true;
    }
    match (from, to) {
        // An exception is left by any later scan, and any scan may report one.
        (Status::Exception, _) | (_, Status::Exception) => true,
        (_, Status::Cancelled) => rank(from) <= rank(Status::OutForDelivery),
        // A returning parcel only ever arrives back (or is held on the way).
        (Status::Returning, to) => matches!(to, Status::Returned | Status::OnHold),
        // A failed attempt or a hold goes back out, or back to the shipper.
        (Status::DeliveryFailed | Status::OnHold, to) => to != Status::Booked,
        (_, Status::DeliveryFailed | Status::OnHold | Status::Returning) => {
            rank(from) >= rank(Status::Booked)
        }
        (_, Status::Returned) => rank(from) >= rank(Status::PickedUp),
        (from, to) => rank(to) >= rank(from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn the_forward_road_and_its_side_moves() {
        let road = [Booked, PickedUp, InTransit, OutForDelivery, Delivered];
        for pair in road.windows(2) {
            assert!(may_move(pair[0], pair[1]), "{:?} → {:?}", pair[0], pair[1]);
            assert!(!may_move(pair[1], pair[0]), "{:?} ← {:?}", pair[0], pair[1]);
        }
        assert!(may_move(Booked, InTransit), "a missed scan is skipped");
        assert!(may_move(OutForDelivery, DeliveryFailed));
        assert!(may_move(DeliveryFailed, OutForDelivery));
        assert!(may_move(DeliveryFailed, InTransit));
        assert!(may_move(OnHold, InTransit));
        assert!(may_move(InTransit, OnHold));
        assert!(may_move(DeliveryFailed, Returning));
        assert!(may_move(Returning, Returned));
        assert!(
            !may_move(Returning, InTransit),
            "a return does not turn around"
        );
        assert!(!may_move(Returning, Delivered));
        assert!(may_move(InTransit, Exception));
        assert!(
            may_move(Exception, InTransit),
            "a later scan leaves an exception"
        );
        assert!(may_move(Booked, Cancelled));
        assert!(!may_move(Returning, Cancelled));
    }

    #[test]
    fn terminal_statuses_and_unknown_never_move() {
        for from in [Delivered, Returned, Cancelled] {
            for to in [
                Booked,
                InTransit,
                OutForDelivery,
                Delivered,
                Returned,
                Exception,
            ] {
                assert!(!may_move(from, to), "{from:?} → {to:?}");
            }
        }
        for from in [Booked, InTransit, Exception] {
            assert!(!may_move(from, Unknown));
        }
    }
}
