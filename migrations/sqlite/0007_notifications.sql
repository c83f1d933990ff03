-- Customer notifications: one row per (notify pipeline, shipment, status),
-- so each status change is posted once however often its message comes. The
-- recipient's name and phone come from the shipment each booking key was
-- claimed with (bookings.shipment).
-- Timestamps are fixed-width RFC 3339 UTC text.

CREATE TABLE notifications (
    pipeline     TEXT NOT NULL,
    booking_key  TEXT NOT NULL,
    status       TEXT NOT NULL,
    -- 'sending': a POST may have gone out without a 2xx; 'sent': answered 2xx
    state        TEXT NOT NULL CHECK (state IN ('sending', 'sent')),
    attempts     INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    sent_at      TEXT,
    PRIMARY KEY (pipeline, booking_key, status)
);
