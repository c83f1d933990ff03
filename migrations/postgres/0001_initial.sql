-- Store: webhook delivery ids, booking idempotency keys and the audit trail.
-- Timestamps are RFC 3339 UTC text of fixed width (shared SQL with SQLite),
-- so text order is time order.

CREATE TABLE webhook_deliveries (
    source      TEXT NOT NULL,
    account     TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (source, account, delivery_id)
);
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);

CREATE TABLE bookings (
    source          TEXT NOT NULL,
    account         TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('sent', 'booked', 'review')),
    owner           TEXT,
    lease_until     TEXT,
    tracking_number TEXT,
    courier         TEXT,
    courier_account TEXT,
    extracted       TEXT,
    reason          TEXT,
    message_id      TEXT,
    reference       TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (source, account, order_id, sequence)
);
CREATE INDEX bookings_status_updated ON bookings (status, updated_at);

CREATE TABLE booking_audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_key TEXT NOT NULL,
    action      TEXT NOT NULL,
    message_id  TEXT,
    detail      TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX booking_audit_key ON booking_audit (booking_key, id);
