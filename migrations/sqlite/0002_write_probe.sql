-- One row the readiness check rewrites while the bus writer's last commit
-- failed (a full disk, an I/O error), to learn whether the database takes
-- writes again even when no webhook comes to try. Each probe writes
-- `padding` (64 KiB, about one commit of webhooks) and clears it again in
-- the same transaction: the probe passes only when the file could grow by
-- that much, and the pages it freed are left for the next appends.
CREATE TABLE bus_write_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    written_at TEXT NOT NULL,
    padding    BLOB
);
