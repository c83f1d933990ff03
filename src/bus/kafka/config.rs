//! The librdkafka settings of the Kafka bus's clients: waybill's defaults,
//! the user's `bus.properties` over them, and the few settings the runner's
//! delivery guarantee needs over those.
//!
//! ```yaml
//! bus: { kind: kafka, brokers: "kafka-1:9092", properties: { message.timeout.ms: "10000" } }
//! ```

use rdkafka::config::ClientConfig;
use std::collections::BTreeMap;

/// Producer defaults; `bus.properties` override every one of them.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // librdkafka waits 300 s by default, far beyond a store's webhook timeout.
    ("message.timeout.ms", "5000"),
];

/// Consumer defaults; `bus.properties` override every one of them.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    // librdkafka's 45 s makes a crashed instance's partitions wait long and
    // holds group joins on some brokers for half of it.
    ("session.timeout.ms", "10000"),
];

/// Consumer settings the runner's delivery guarantee relies on; they are
/// applied after `bus.properties`.
const CONSUMER_REQUIRED: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
];

/// Bootstrap servers plus every user property.
pub(super) fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    layered(brokers, &[], properties)
}

pub(super) fn producer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    layered(brokers, PRODUCER_DEFAULTS, properties)
}

pub(super) fn consumer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    group: &str,
) -> ClientConfig {
    let mut config = layered(brokers, CONSUMER_DEFAULTS, properties);
    for (key, value) in CONSUMER_REQUIRED {
        config.set(*key, *value);
    }
    config.set("group.id", group);
    config
}

/// Bootstrap servers, then `defaults`, then every user property over them.
fn layered(
    brokers: &str,
    defaults: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}
