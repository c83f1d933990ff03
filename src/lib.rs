//! waybill: declarative integration middleware for e-commerce shipping.
//!
//! Store orders arrive as webhooks, flow over bus topics through pipelines
//! (trigger → map → validate → route → book) and become courier bookings,
//! exactly once, with retries, dead letters and metrics; status changes can
//! notify customers (trigger → notify).
//!
//! # Layout
//!
//! - [`config`]: YAML exactly as written → checked, resolved objects; every error at once.
//! - [`model`]: canonical messages, shipments, booking keys and results, statuses, and the one
//!   [`model::Failure`] a step gives up with.
//! - [`bus`]: the [`bus::Bus`] trait and its backends: the embedded SQLite log and Kafka.
//! - [`store`]: the [`store::Store`] trait over SQLite and PostgreSQL: delivery ids, booking
//!   idempotency, shipments and their COD ledger, audit, notifications.
//! - [`sources`]: webhook ingest (verify → dedupe → enqueue) as each store connector declares it.
//! - [`mapping`]: minijinja field-mapping templates and expressions.
//! - [`stages`]: pipeline steps as plain functions over an envelope.
//! - [`connector`]: connector definitions (as written → checked), the declarative HTTP engine
//!   the sandbox courier and courier settlement sheets.
//! - [`sinks`]: idempotent courier booking, cancelling a booking at its courier, customer
//!   notifications, write-back of tracking and statuses to stores.
//! - [`runtime`]: pipeline runner (with orders changed after booking), tracker, scheduler
//!   (tracking polls and COD payment checks), HTTP server, shutdown.
//! - [`telemetry`]: metrics registry and named events.
//! - [`cli`]: one file per subcommand.
//!
//! Below all of them: [`diagnostic`] (located problems with "did you mean"), [`clock`]
//! (time helpers) and [`redact`] (secrets masked in every encoding), which import nothing
//! from the crate, and [`yaml`], the one positioned-YAML
//! reader, which imports only `diagnostic`.
//! `config` compiles mappings and connectors, so `mapping` and `connector` never import `config`.

pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connector;
pub mod diagnostic;
pub mod mapping;
pub mod model;
pub mod redact;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod store;
pub mod telemetry;
pub mod yaml;
