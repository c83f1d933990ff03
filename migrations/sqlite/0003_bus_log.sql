-- Embedded bus messages move to a rowid table: appends land at the end of
-- the table's b-tree instead of splitting index pages that hold whole
-- multi-kilobyte rows, and payloads may be stored compressed.

CREATE TABLE bus_log (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    msg_key     TEXT NOT NULL,
    headers     TEXT NOT NULL,
    payload     BLOB NOT NULL,
    -- 0: the payload as published; 1: LZ4 block with its length first (4 bytes, little-endian)
    encoding    INTEGER NOT NULL DEFAULT 0,
    appended_at TEXT NOT NULL
);

INSERT INTO bus_log (topic, seq, msg_key, headers, payload, encoding, appended_at)
    SELECT topic, seq, msg_key, headers, payload, 0, appended_at FROM bus_messages ORDER BY topic, seq;

DROP TABLE bus_messages;
ALTER TABLE bus_log RENAME TO bus_messages;
CREATE UNIQUE INDEX bus_messages_topic_seq ON bus_messages (topic, seq);
