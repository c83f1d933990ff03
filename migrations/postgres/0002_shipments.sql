-- Shipments and their status history (DESIGN §8, §9), and the raw statuses
-- no table knew. Timestamps are fixed-width RFC 3339 UTC text.

CREATE TABLE shipments (
    booking_key      TEXT NOT NULL PRIMARY KEY,
    source           TEXT NOT NULL,
    account          TEXT NOT NULL,
    order_id         TEXT NOT NULL,
    sequence         BIGINT NOT NULL,
    order_key        TEXT NOT NULL,
    reference        TEXT,
    courier          TEXT NOT NULL,
    courier_account  TEXT NOT NULL,
    tracking_number  TEXT NOT NULL,
    status           TEXT NOT NULL,
    sub_status       TEXT,
    raw_status       TEXT,
    reason           TEXT,
    booked_at        TEXT NOT NULL,
    last_event_at    TEXT,
    updated_at       TEXT NOT NULL,
    next_poll_at     TEXT,
    poll_interval_ms BIGINT,
    lease_owner      TEXT,
    lease_until      TEXT,
    cod_amount       TEXT,
    cod_currency     TEXT,
    version          BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX shipments_tracking ON shipments (courier_account, tracking_number);
CREATE INDEX shipments_due ON shipments (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX shipments_status ON shipments (status, courier);
CREATE INDEX shipments_reference ON shipments (reference);
CREATE INDEX shipments_order ON shipments (source, account, order_id);

CREATE TABLE shipment_history (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_key  TEXT NOT NULL,
    event_id     TEXT,
    raw          TEXT,
    code         TEXT,
    status       TEXT NOT NULL,
    sub_status   TEXT,
    reason       TEXT,
    event_time   TEXT,
    received_at  TEXT NOT NULL,
    via          TEXT NOT NULL CHECK (via IN ('booking', 'callback', 'poll', 'store')),
    outcome      TEXT NOT NULL CHECK (outcome IN ('applied', 'stale', 'duplicate', 'unknown')),
    previous     TEXT,
    published_at TEXT
);
CREATE UNIQUE INDEX shipment_history_event ON shipment_history (event_id);
CREATE INDEX shipment_history_key ON shipment_history (booking_key, id);

CREATE TABLE unknown_statuses (
    courier   TEXT NOT NULL,
    raw       TEXT NOT NULL,
    count     BIGINT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (courier, raw)
);

CREATE TABLE scheduler_runs (
    owner  TEXT NOT NULL PRIMARY KEY,
    ran_at TEXT NOT NULL
);
