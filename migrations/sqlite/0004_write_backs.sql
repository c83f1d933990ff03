-- Write-backs to stores (tracking numbers, status events), one row per
-- shipment and operation: `fulfillment`, or `event:<canonical status>`.
-- `sent` rows have an owner and a lease while their request may be out;
-- `done` rows keep what the store answered (the fulfillment's id).
-- Timestamps are fixed-width RFC 3339 UTC text.
CREATE TABLE write_backs (
    booking_key  TEXT NOT NULL,
    operation    TEXT NOT NULL,
    state        TEXT NOT NULL,
    remote_id    TEXT,
    owner        TEXT,
    lease_until  TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (booking_key, operation)
);
