//! Kafka + PostgreSQL at scale: what waybill writes is readable by a standard
//! Kafka client. These tests need the Kafka backend
//! (`WAYBILL_TEST_BACKEND=kafka`); on the embedded one they return at once.

use crate::common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The brokers, or `None` (the test returns) on the embedded backend.
fn kafka() -> Option<String> {
    match backend() {
        Backend::Kafka { brokers } => Some(brokers),
        Backend::Embedded => {
            eprintln!("skipped: needs WAYBILL_TEST_BACKEND=kafka");
            None
        }
    }
}

/// A message as a plain Kafka client sees it.
#[derive(Debug)]
struct RawMessage {
    key: Option<String>,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
}

/// Reads `topic` from the beginning with a bare librdkafka consumer that
/// joins no group (as `kcat -C -t TOPIC -o beginning -e` does), until `count`
/// messages arrived or 30 s passed in all.
fn read_raw(brokers: &str, topic: &str, count: usize) -> Vec<RawMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "standard-client")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The topic appears once waybill first writes to it.
    let mut assignment = TopicPartitionList::new();
    while assignment.count() == 0 && Instant::now() < deadline {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        for partition in metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions())
        {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Beginning)
                .expect("partition");
        }
        if assignment.count() == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(assignment.count() > 0, "topic {topic} has no partitions");
    consumer.assign(&assignment).expect("assign");
    let mut messages = Vec::new();
    while messages.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("fetch");
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h
                            .value
                            .map(|v| String::from_utf8(v.to_vec()).expect("utf-8"));
                        (h.key.to_string(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        messages.push(RawMessage {
            key: message
                .key()
                .map(|k| String::from_utf8(k.to_vec()).expect("utf-8 key")),
            headers,
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_kafka_client_reads_keys_headers_and_bodies() {
    let Some(brokers) = kafka() else { return };
    let dir = ConfigDir::new("{ connector: sandbox }");
    let prefix = dir.topic_prefix.clone().expect("a kafka tree has a prefix");
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    let (status, text) = app.shopify(&body, "orders/create", "raw-1").await;
    assert_eq!(status, 200, "{text}");

    let topic = format!("{prefix}orders.shopify");
    let messages = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || read_raw(&brokers, &topic, 1)
    })
    .await
    .expect("reader");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let order = &messages[0];
    assert_eq!(
        order.key.as_deref(),
        Some("shopify-main:820982911946154508")
    );
    assert_eq!(order.payload, body, "the body is stored as received");
    let header = |name: &str| order.headers.get(name).map(String::as_str);
    assert_eq!(header("waybill-source"), Some("shopify"));
    assert_eq!(header("waybill-account"), Some("shopify-main"));
    assert_eq!(header("waybill-topic"), Some("orders/create"));
    assert_eq!(header("waybill-schema"), Some("1"));
    assert!(header("waybill-id").is_some_and(|id| !id.is_empty()));
    assert!(header("waybill-received-at").is_some_and(|at| !at.is_empty()));

    // The pipeline's output is as readable, keyed the same way.
    let topic = format!("{prefix}shipments.booked");
    let booked = tokio::task::spawn_blocking(move || read_raw(&brokers, &topic, 1))
        .await
        .expect("reader");
    assert_eq!(booked.len(), 1, "{booked:?}");
    assert_eq!(
        booked[0].key.as_deref(),
        Some("shopify-main:820982911946154508")
    );
    let shipment: serde_json::Value =
        serde_json::from_slice(&booked[0].payload).expect("canonical JSON");
    assert!(shipment.is_object(), "{shipment}");
    app.stop().await;
}
