//! waybill: declarative integration middleware for e-commerce shipping.
//!
//! Store orders arrive as webhooks, flow over bus topics through pipelines
//! (trigger → map → validate → route → book) and become courier bookings,
//! exactly once, with retries, dead letters and metrics.
//!
//! # Layout
//!
//! - [`config`]: YAML exactly as written → checked, resolved objects; every error at once.
//! - [`model`]: canonical messages, shipments, booking keys and results, statuses.
//! - [`bus`]: the [`bus::Bus`] trait and its backends (embedded SQLite log).
//! - [`store`]: the [`store::Store`] trait: delivery ids, booking idempotency, shipments, audit.
//! - [`sources`]: webhook ingest (verify → dedupe → enqueue), one file per store source.
//! - [`mapping`]: minijinja field-mapping templates and expressions.
//! - [`stages`]: pipeline steps as plain functions over an envelope.
//! - [`connector`]: the declarative HTTP connector engine and the sandbox courier.
//! - [`sinks`]: idempotent courier booking.
//! - [`runtime`]: pipeline runner, HTTP server, shutdown.
//! - [`telemetry`]: metrics registry and named events.
//! - [`clock`]: time helpers every part shares (a leaf).
//! - [`diagnostic`]: located problems, `FILE:LINE:COL: message`, and "did you mean" (a leaf).
//! - [`yaml`]: the one YAML reader: positioned nodes and serde over them (below config,
//!   connector and mapping).
//! - [`cli`]: one file per subcommand.

pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connector;
pub mod diagnostic;
pub mod mapping;
pub mod model;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod store;
pub mod telemetry;
pub mod yaml;
