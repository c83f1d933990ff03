//! The embedded bus: a durable log in SQLite (WAL) under the data directory.
//!
//! ```yaml
//! bus: { kind: embedded }
//! ```
