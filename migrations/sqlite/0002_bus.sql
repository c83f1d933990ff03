-- Embedded bus: one partition (0) per topic, offsets counted per topic from 0.

CREATE TABLE bus_topics (
    topic       TEXT PRIMARY KEY,
    -- the offset the next appended message gets; survives trimming
    next_offset INTEGER NOT NULL
);

CREATE TABLE bus_messages (
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    msg_key     TEXT NOT NULL,
    headers     TEXT NOT NULL,
    payload     BLOB NOT NULL,
    appended_at TEXT NOT NULL,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;

CREATE TABLE bus_offsets (
    topic       TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (topic, group_name, partition)
);
