//! Sinks: idempotent courier booking.
