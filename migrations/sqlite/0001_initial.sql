-- The whole schema of the SQLite file shared by the store and the embedded bus.

-- Store: webhook delivery ids, booking idempotency keys and the audit trail.
-- Timestamps are RFC 3339 UTC text of fixed width, so text order is time order.

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
    sequence        INTEGER NOT NULL,
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
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    booking_key TEXT NOT NULL,
    action      TEXT NOT NULL,
    message_id  TEXT,
    detail      TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX booking_audit_key ON booking_audit (booking_key, id);

-- Embedded bus: one partition (0) per topic, offsets counted per topic from 0.

CREATE TABLE bus_topics (
    topic       TEXT PRIMARY KEY,
    -- the offset the next appended message gets; survives trimming
    next_offset INTEGER NOT NULL
);

-- Messages are stored in batches, as Kafka stores record batches: the
-- messages one commit appends to a topic share a row, framed one after
-- another and compressed as one block, with `seq` the offset of the first
-- and `messages` how many. A rowid table, so appends land at the end of its
-- b-tree instead of splitting index pages that hold whole large rows.
CREATE TABLE bus_batches (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    messages    INTEGER NOT NULL,
    payload     BLOB NOT NULL,
    -- 0: the frame as laid out; 1: the frame as an LZ4 block with its length first (4 bytes, little-endian)
    encoding    INTEGER NOT NULL,
    appended_at TEXT NOT NULL
);
CREATE UNIQUE INDEX bus_batches_topic_seq ON bus_batches (topic, seq);

CREATE TABLE bus_offsets (
    topic       TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (topic, group_name, partition)
);
