//! The embedded bus's on-disk rows: the messages one commit appends to a
//! topic, laid out one after another in one `bus_batches` row (a frame),
//! compressed as one block when that is shorter, and read back from any
//! offset inside a row.
//!
//! A frame is each message's key, headers (JSON) and payload, each of the
//! three preceded by its length (u32, little-endian).

use crate::bus::BusError;
use crate::model::{Headers, Message, Record};
use sqlx::sqlite::SqlitePool;

/// Batches at least this long are stored LZ4-compressed: orders' JSON
/// shrinks several times, and SQLite then writes (twice: WAL, then the
/// database) a fraction of the bytes. Shorter ones are not worth the work.
const COMPRESS_FROM: usize = 512;

/// `bus_batches.encoding` of a frame stored as laid out.
pub(super) const BATCH: i64 = 0;

/// `bus_batches.encoding` of a frame stored as an LZ4 block with its
/// decoded length first.
pub(super) const BATCH_LZ4: i64 = 1;

/// Most messages stored in one row. A reader decodes a whole row for any of
/// its messages, and LZ4 finds nothing to share beyond 64 KiB back, so
/// longer rows cost reads and save nothing.
pub(super) const BATCH_MESSAGES: usize = 32;

/// A row takes no more messages once its frame is this long.
pub(super) const BATCH_BYTES: usize = 256 * 1024;

/// Largest decoded payload a stored length prefix is believed for.
const MAX_DECODED: usize = 256 * 1024 * 1024;

/// Lays out messages (key, headers, payload) one after another as a frame.
pub(super) fn frame<'a>(
    messages: impl Iterator<Item = (&'a str, &'a str, &'a [u8])> + Clone,
) -> Vec<u8> {
    // Sized once: the writer lays out some 100 KB per row, and growing the
    // buffer would copy it over again.
    let len = messages
        .clone()
        .map(|(key, headers, payload)| 12 + key.len() + headers.len() + payload.len())
        .sum();
    let mut out = Vec::with_capacity(len);
    for (key, headers, payload) in messages {
        for part in [key.as_bytes(), headers.as_bytes(), payload] {
            // `append` turns away parts of 4 GiB or more.
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// A frame as stored, with its encoding: [`BATCH_LZ4`] when that is shorter.
pub(super) fn pack(frame: Vec<u8>) -> (Vec<u8>, i64) {
    if frame.len() < COMPRESS_FROM {
        return (frame, BATCH);
    }
    let compressed = lz4_flex::compress_prepend_size(&frame);
    if compressed.len() < frame.len() {
        (compressed, BATCH_LZ4)
    } else {
        (frame, BATCH)
    }
}

/// An LZ4 block with its decoded length first, decoded.
fn inflate(block: &[u8]) -> Result<Vec<u8>, String> {
    let declared = block
        .first_chunk::<4>()
        .map(|len| u32::from_le_bytes(*len) as usize)
        .ok_or("no length prefix")?;
    if declared > MAX_DECODED {
        return Err(format!("declared length {declared} is implausible"));
    }
    lz4_flex::decompress_size_prepended(block).map_err(|e| e.to_string())
}

/// One `bus_batches` row: first offset, message count, stored bytes and
/// their encoding.
pub(super) type Row = (i64, i64, Vec<u8>, i64);

/// The parts of a frame, front to back.
struct Parts<'a> {
    rest: &'a [u8],
}

impl<'a> Parts<'a> {
    fn next(&mut self) -> Result<&'a [u8], &'static str> {
        let (len, tail) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or("frame cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err("frame cut short");
        }
        let (part, tail) = tail.split_at(len);
        self.rest = tail;
        Ok(part)
    }
}

/// Appends to `out` the messages of `row` at offsets from `from` on, up to
/// `limit` in all.
pub(super) fn unpack(
    topic: &str,
    row: Row,
    from: i64,
    limit: usize,
    out: &mut Vec<Record>,
) -> Result<(), BusError> {
    let (first, count, stored, encoding) = row;
    let unreadable =
        |why: &str| BusError::invalid(format!("unreadable batch at {topic}/{first}: {why}"));
    let frame = match encoding {
        BATCH => stored,
        BATCH_LZ4 => inflate(&stored).map_err(|why| unreadable(&why))?,
        other => return Err(unreadable(&format!("unknown encoding {other}"))),
    };
    let mut parts = Parts { rest: &frame };
    for offset in first..first.saturating_add(count) {
        let key = parts.next().map_err(unreadable)?;
        let headers = parts.next().map_err(unreadable)?;
        let payload = parts.next().map_err(unreadable)?;
        if offset < from || out.len() >= limit {
            continue;
        }
        let key = std::str::from_utf8(key).map_err(|_| unreadable("a key is not UTF-8"))?;
        let headers: Headers = serde_json::from_slice(headers).map_err(|e| {
            BusError::invalid(format!("unreadable headers at {topic}/{offset}: {e}"))
        })?;
        out.push(Record {
            topic: topic.to_string(),
            partition: 0,
            offset,
            message: Message {
                key: key.to_string(),
                headers,
                payload: payload.to_vec(),
            },
        });
    }
    if !parts.rest.is_empty() {
        return Err(unreadable("frame holds more than its count"));
    }
    Ok(())
}

/// Reads up to `limit` messages of `topic` from offset `from` on.
pub(super) async fn read_records(
    pool: &SqlitePool,
    topic: &str,
    from: i64,
    limit: usize,
) -> Result<Vec<Record>, BusError> {
    use futures::TryStreamExt;
    let mut records = Vec::new();
    if limit == 0 {
        return Ok(records);
    }
    // The row holding `from` (it may hold nothing from `from` on), then rows
    // of at least one message each: `limit + 1` rows are always enough.
    let rows = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let mut stream = sqlx::query_as::<_, Row>(
        "SELECT seq, messages, payload, encoding FROM bus_batches \
         WHERE topic = $1 AND seq >= COALESCE((SELECT MAX(seq) FROM bus_batches WHERE topic = $1 AND seq <= $2), $2) \
         ORDER BY seq LIMIT $3",
    )
    .bind(topic)
    .bind(from)
    .bind(rows)
    .fetch(pool);
    while records.len() < limit {
        let Some(row) = stream.try_next().await.map_err(BusError::from)? else {
            break;
        };
        unpack(topic, row, from, limit, &mut records)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_batch_is_an_error_not_a_panic() {
        let messages = [
            ("k1", "{}", b"one".as_slice()),
            ("k2", "{}", b"two".as_slice()),
        ];
        let good = frame(messages.into_iter());
        let row =
            |stored: Vec<u8>, count: i64, encoding: i64| -> Row { (7, count, stored, encoding) };
        let read = |row: Row| {
            let mut out = Vec::new();
            unpack("t", row, 0, 10, &mut out).map(|()| out.len())
        };
        assert_eq!(read(row(good.clone(), 2, BATCH)).unwrap(), 2);
        let packed = lz4_flex::compress_prepend_size(&good);
        assert_eq!(read(row(packed.clone(), 2, BATCH_LZ4)).unwrap(), 2);

        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = read(row(huge, 2, BATCH_LZ4)).unwrap_err().to_string();
        assert!(
            error.contains("t/7") && error.contains("implausible"),
            "{error}"
        );
        for damaged in [
            row(good[..good.len() - 1].to_vec(), 2, BATCH),
            row(good.clone(), 3, BATCH),
            row(good.clone(), 1, BATCH),
            row(packed[..packed.len() - 3].to_vec(), 2, BATCH_LZ4),
            row(vec![1, 2], 2, BATCH_LZ4),
            row(good.clone(), 2, 9),
        ] {
            assert!(read(damaged).is_err());
        }
        let mut bad_key = good.clone();
        bad_key[4] = 0xff;
        assert!(
            read(row(bad_key, 2, BATCH))
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let bad_headers = frame([("k", "{", b"".as_slice())].into_iter());
        assert!(
            read(row(bad_headers, 1, BATCH))
                .unwrap_err()
                .to_string()
                .contains("headers")
        );
    }
}
