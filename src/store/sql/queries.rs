//! The store's SQL statements, shared by both backends: `$N` placeholders
//! work in the SQLite and the PostgreSQL drivers, and the bus writer binds
//! them by name (see `writer`). Every statement on one booking names its
//! key as `$1`–`$4`.

macro_rules! booking_columns {
    () => {
        "source, account, order_id, sequence, status, owner, lease_until, tracking_number, courier, \
         courier_account, extracted, reason, message_id, reference, updated_at"
    };
}

pub(super) const SELECT_BOOKING: &str = concat!(
    "SELECT ",
    booking_columns!(),
    " FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4"
);

/// Bookings newest first, of one status (`$1`) or of all when it is NULL.
pub(super) const SELECT_BOOKINGS: &str = concat!(
    "SELECT ",
    booking_columns!(),
    " FROM bookings WHERE ($1 IS NULL OR status = $1) ORDER BY updated_at DESC LIMIT $2"
);

/// The bookings of one order (`$1`–`$3`), lowest sequence first.
pub(super) const SELECT_ORDER_BOOKINGS: &str = concat!(
    "SELECT ",
    booking_columns!(),
    " FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 ORDER BY sequence"
);

pub(super) const SELECT_SHIPMENT: &str = "SELECT shipment, change_seen, change_message_id FROM bookings \
     WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4";

pub(super) const NOTE_CHANGE: &str = "UPDATE bookings SET change_seen = $5, change_message_id = $6 \
     WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4";

pub(super) const SELECT_STATUS: &str = "SELECT status FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4";

/// Claims a key nobody has claimed before.
pub(super) const CLAIM_NEW: &str = "INSERT INTO bookings (source, account, order_id, sequence, status, owner, lease_until, \
     message_id, reference, created_at, updated_at, shipment) \
     VALUES ($1, $2, $3, $4, 'sent', $5, $6, $7, $8, $9, $9, $10) \
     ON CONFLICT (source, account, order_id, sequence) DO NOTHING";

/// Records the booking of a key that is `sent`.
pub(super) const MARK_BOOKED: &str = "UPDATE bookings SET status = 'booked', tracking_number = $5, courier = $6, courier_account = $7, \
     extracted = $8, owner = NULL, lease_until = NULL, reason = NULL, updated_at = $9 \
     WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
     AND status = 'sent'";

pub(super) const MARK_REVIEW: &str = "UPDATE bookings SET status = 'review', reason = $5, owner = NULL, lease_until = NULL, updated_at = $6 \
     WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
     AND status = 'sent'";

/// Gives back a key its owner (`$5`) sent.
pub(super) const RELEASE: &str = "DELETE FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
     AND status = 'sent' AND owner = $5";

pub(super) const RESOLVE_BOOKED: &str = "UPDATE bookings SET status = 'booked', tracking_number = $5, courier = $6, courier_account = $7, \
     extracted = $8, owner = NULL, lease_until = NULL, updated_at = $9 \
     WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 AND status = 'review'";

/// Deleting the row lets the next claim insert it afresh; its history stays
/// in the audit trail.
pub(super) const RESOLVE_RELEASE: &str = "DELETE FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
     AND status = 'review'";

pub(super) const INSERT_AUDIT: &str = "INSERT INTO booking_audit (booking_key, action, message_id, detail, at) VALUES ($1, $2, $3, $4, $5)";

pub(super) const SELECT_AUDIT: &str = "SELECT booking_key, action, message_id, detail, at FROM booking_audit WHERE booking_key = $1 ORDER BY id";

pub(super) const SELECT_DELIVERY: &str = "SELECT delivery_id FROM webhook_deliveries WHERE source = $1 AND account = $2 AND delivery_id = $3";

pub(super) const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (source, account, delivery_id, received_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (source, account, delivery_id) DO NOTHING";

pub(super) const EXPIRE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE received_at < $1";
