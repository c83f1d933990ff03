-- Embedded bus messages are stored in batches, as Kafka stores record
-- batches: the messages one commit appends to a topic share a row, framed
-- one after another and compressed as one block (encodings 2 and 3), with
-- `seq` the offset of the first and `messages` how many. Rows written before
-- are batches of one, their key and headers in their own columns
-- (encodings 0 and 1); batch rows leave those columns empty.

ALTER TABLE bus_messages RENAME TO bus_batches;
ALTER TABLE bus_batches ADD COLUMN messages INTEGER NOT NULL DEFAULT 1;
DROP INDEX bus_messages_topic_seq;
CREATE UNIQUE INDEX bus_batches_topic_seq ON bus_batches (topic, seq);
