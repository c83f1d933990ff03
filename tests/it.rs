//! Integration tests: one binary (one link of the whole crate), one module per area.

#[path = "it/accounts.rs"]
mod accounts;
#[path = "it/bodies.rs"]
mod bodies;
#[path = "it/callbacks.rs"]
mod callbacks;
#[path = "it/changes.rs"]
mod changes;
#[path = "it/cli_output.rs"]
mod cli_output;
#[path = "it/cod.rs"]
mod cod;
#[path = "it/common.rs"]
mod common;
#[path = "it/courier_blueex.rs"]
mod courier_blueex;
#[path = "it/courier_callcourier.rs"]
mod courier_callcourier;
#[path = "it/courier_leopards.rs"]
mod courier_leopards;
#[path = "it/courier_tcs.rs"]
mod courier_tcs;
#[path = "it/courier_trax.rs"]
mod courier_trax;
#[path = "it/crash.rs"]
mod crash;
#[path = "it/dlq.rs"]
mod dlq;
#[path = "it/full_disk.rs"]
mod full_disk;
#[path = "it/golden.rs"]
mod golden;
#[path = "it/notify.rs"]
mod notify;
#[path = "it/outage.rs"]
mod outage;
#[path = "it/polling.rs"]
mod polling;
#[path = "it/postex.rs"]
mod postex;
#[path = "it/prometheus.rs"]
mod prometheus;
#[path = "it/redaction.rs"]
mod redaction;
#[path = "it/rules.rs"]
mod rules;
#[path = "it/scale.rs"]
mod scale;
#[path = "it/simulate.rs"]
mod simulate;
#[path = "it/slow_clients.rs"]
mod slow_clients;
#[path = "it/statuses.rs"]
mod statuses;
#[path = "it/tracking.rs"]
mod tracking;
#[path = "it/tracking_crash.rs"]
mod tracking_crash;
#[path = "it/try_pipeline.rs"]
mod try_pipeline;
#[path = "it/validate.rs"]
mod validate;
#[path = "it/webhook.rs"]
mod webhook;
#[path = "it/write_back.rs"]
mod write_back;
