-- Customer notifications: one row per (notify pipeline, shipment, status),
-- so each status change is posted once however often its message comes; and
-- the canonical shipment as it was booked, kept only when a notify pipeline
-- is configured, so a notification can reach the recipient's name and phone.
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

CREATE TABLE notification_shipments (
    booking_key TEXT NOT NULL PRIMARY KEY,
    shipment    TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
