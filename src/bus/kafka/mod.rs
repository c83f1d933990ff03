//! The Kafka bus: Apache Kafka or any Kafka-protocol broker through `rdkafka`.
//!
//! ```yaml
//! bus:
//!   kind: kafka
//!   brokers: "kafka-1:9092,kafka-2:9092"
//!   topic_prefix: "team-a."  # prepended to every topic and consumer group
//!   properties:            # passed to librdkafka as is; they override waybill's defaults
//!     security.protocol: SASL_SSL
//!     sasl.mechanisms: PLAIN
//!     sasl.username: "${KAFKA_USER}"
//!     sasl.password: "${KAFKA_PASSWORD}"
//! ```
//!
//! The producer is idempotent (`acks=all`) and gives up after
//! `message.timeout.ms` (5 s unless overridden) so that ingest can answer 503
//! quickly when the brokers are unreachable (DESIGN §13). Consumers never
//! auto-commit: the runner commits the lowest unfinished offset per partition.
//!
//! With a `topic_prefix`, callers keep using plain names (`orders.shopify`,
//! `waybill.shopify-orders`): the prefix is added on the way to the brokers
//! and removed from what comes back, and `topics()` lists only prefixed
//! topics, so several deployments can share one cluster.

mod config;
mod consumer;
mod inspect;

pub use consumer::KafkaConsumer;

use crate::bus::{Bus, BusError, Cause, Consumer, TopicOffset};
use crate::model::{Headers, Message, Record};
use async_trait::async_trait;
use config::{client_config, producer_config};
use inspect::Reader;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as KafkaMessage, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a metadata request may take; `/readyz` must answer quickly.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// How long topic creation may take before the brokers are assumed not to
/// offer the admin API.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long `publish` waits for room in a full local producer queue.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// How topics are named and created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    pub partitions: i32,
    pub replication: i32,
    /// Prepended to every topic name and consumer group on the brokers.
    pub topic_prefix: String,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            partitions: 6,
            replication: 1,
            topic_prefix: String::new(),
        }
    }
}

/// The last error librdkafka reported, to explain an unavailable bus.
#[derive(Debug, Default)]
struct Health {
    last_error: Mutex<Option<String>>,
}

impl Health {
    fn record(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    fn clear(&self) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn last(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Client context of the producer and admin client: records client errors.
#[derive(Clone)]
struct BusContext {
    health: Arc<Health>,
}

impl ClientContext for BusContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
        self.health.record(format!("{error} ({reason})"));
    }
}

/// The bus on a Kafka cluster.
pub struct KafkaBus {
    brokers: String,
    properties: BTreeMap<String, String>,
    options: KafkaOptions,
    health: Arc<Health>,
    producer: FutureProducer<BusContext>,
    admin: AdminClient<BusContext>,
    /// Topics seen in metadata or created; they are not looked up again.
    known_topics: Mutex<HashSet<String>>,
    /// Set once topic creation failed for lack of an admin API, so it is
    /// neither retried nor logged again.
    admin_unavailable: AtomicBool,
}

impl KafkaBus {
    /// Creates the producer and admin client. librdkafka connects lazily, so
    /// this succeeds while the brokers are down; `check` tells.
    pub fn connect(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        options: KafkaOptions,
    ) -> Result<KafkaBus, BusError> {
        let health = Arc::new(Health::default());
        let context = BusContext {
            health: health.clone(),
        };
        let producer = producer_config(brokers, properties)
            .create_with_context(context.clone())
            .map_err(|e| BusError::kafka("cannot create the kafka producer", e))?;
        let admin = client_config(brokers, properties)
            .create_with_context(context)
            .map_err(|e| BusError::kafka("cannot create the kafka admin client", e))?;
        Ok(KafkaBus {
            brokers: brokers.to_string(),
            properties: properties.clone(),
            options,
            health,
            producer,
            admin,
            known_topics: Mutex::new(HashSet::new()),
            admin_unavailable: AtomicBool::new(false),
        })
    }

    /// Explains a failure, adding the last client error when there is one
    /// (it usually names the broker and the cause, e.g. connection refused).
    fn explain(&self, what: &str, error: KafkaError) -> BusError {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return fatal(code, &reason);
        }
        match self.health.last() {
            Some(last) => BusError::kafka(format!("{what} (last client error: {last})"), error),
            None => BusError::kafka(what, error),
        }
    }

    async fn metadata(&self) -> Result<Metadata, BusError> {
        let producer = self.producer.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, METADATA_TIMEOUT)
        })
        .await
        .map_err(|e| unfinished("the metadata request", &e))?;
        fetched.map_err(|e| self.explain("cannot fetch kafka metadata", e))
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known_topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(topic)
    }

    /// Makes sure `topic` exists before the first use, creating it with the
    /// configured partitions and replication.
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        if self.is_known(topic) {
            return Ok(());
        }
        let metadata = self.metadata().await?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none());
        if !exists {
            self.create_topic(topic).await;
        }
        let mut known = self
            .known_topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known.extend(
            metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| t.name().to_string()),
        );
        known.insert(topic.to_string());
        Ok(())
    }

    /// Creates a topic; failures are logged, not returned: the broker may
    /// still create the topic on first use, and the produce or fetch that
    /// follows reports the real outcome.
    async fn create_topic(&self, topic: &str) {
        if self.admin_unavailable.load(Ordering::Relaxed) {
            return;
        }
        let new_topic = NewTopic::new(
            topic,
            self.options.partitions,
            TopicReplication::Fixed(self.options.replication),
        );
        let admin_options = AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT));
        match self.admin.create_topics([&new_topic], &admin_options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(name) => {
                            tracing::info!(topic = %name, partitions = self.options.partitions, replication = self.options.replication, "created topic")
                        }
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            tracing::warn!(topic = %name, error = %code, "cannot create topic; relying on broker auto-creation")
                        }
                    }
                }
            }
            Err(error) => {
                if !self.admin_unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %error, "the brokers do not answer topic creation; topics are left to broker auto-creation");
                }
            }
        }
    }

    /// The name of a topic or consumer group on the brokers.
    fn prefixed(&self, name: &str) -> String {
        format!("{}{name}", self.options.topic_prefix)
    }

    /// Runs `read` on a reader of `topic`, off the async runtime: the reader's
    /// calls block.
    async fn inspect<T, F>(&self, topic: &str, read: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> Result<T, BusError> + Send + 'static,
    {
        let config = self.inspect_config();
        let topic = self.prefixed(topic);
        let prefix = self.options.topic_prefix.clone();
        tokio::task::spawn_blocking(move || read(&Reader::new(&config, &topic, &prefix)?))
            .await
            .map_err(|e| unfinished("the read", &e))?
    }

    /// Settings of a client that reads a topic without a consumer group.
    fn inspect_config(&self) -> ClientConfig {
        let mut config = client_config(&self.brokers, &self.properties);
        // librdkafka wants a group even for assigned partitions; this one
        // never joins, subscribes or commits.
        config
            .set("group.id", self.prefixed("waybill.inspect"))
            .set("enable.auto.commit", "false")
            // How a reader knows it reached a partition's end (see `inspect`).
            .set("enable.partition.eof", "true");
        config
    }
}

/// An error of the broker client itself, which it does not recover from.
fn fatal(code: RDKafkaErrorCode, reason: &str) -> BusError {
    BusError::Unavailable(Cause::Text(format!(
        "the kafka producer failed fatally ({code}): {reason}"
    )))
}

/// A blocking task that panicked or was cancelled.
fn unfinished(what: &str, error: &tokio::task::JoinError) -> BusError {
    BusError::Unavailable(Cause::Text(format!("{what} did not finish: {error}")))
}

fn kafka_headers(headers: &Headers) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |kafka, (key, value)| {
            kafka.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        },
    )
}

/// Converts a fetched message, naming its topic without `prefix`; keys and
/// header values that are not UTF-8 (written by another producer) are
/// converted lossily rather than rejected.
fn to_record<M: KafkaMessage>(message: &M, prefix: &str) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let topic = message.topic();
    Record {
        topic: topic.strip_prefix(prefix).unwrap_or(topic).to_string(),
        partition: message.partition(),
        offset: message.offset(),
        message: Message {
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            headers,
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        },
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<i64, BusError> {
        let topic = &self.prefixed(topic);
        self.ensure_topic(topic).await?;
        let record = FutureRecord::to(topic)
            .key(message.key.as_str())
            .payload(message.payload.as_slice())
            .headers(kafka_headers(&message.headers));
        match self
            .producer
            .send(record, Timeout::After(ENQUEUE_TIMEOUT))
            .await
        {
            Ok(delivery) => Ok(delivery.offset),
            // A message or topic at fault is a storage error, see `BusError::kafka`.
            Err((error, _)) => Err(self.explain(&format!("cannot publish to `{topic}`"), error)),
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let topic = &self.prefixed(topic);
        let group = &self.prefixed(group);
        self.ensure_topic(topic).await?;
        let consumer = KafkaConsumer::join(
            &self.brokers,
            &self.properties,
            topic,
            group,
            &self.options.topic_prefix,
            self.health.clone(),
        )?;
        Ok(Box::new(consumer))
    }

    async fn read(&self, topic: &str, from: i64, limit: usize) -> Result<Vec<Record>, BusError> {
        self.inspect(topic, move |reader| reader.read_topic(from, limit))
            .await
    }

    async fn read_partition(
        &self,
        from: TopicOffset<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, BusError> {
        let TopicOffset {
            topic,
            partition,
            offset,
        } = from;
        self.inspect(topic, move |reader| {
            reader.read_partition(partition, offset, limit)
        })
        .await
    }

    async fn partitions(&self, topic: &str) -> Result<Vec<i32>, BusError> {
        self.inspect(topic, Reader::partitions).await
    }

    async fn topics(&self) -> Result<Vec<String>, BusError> {
        let metadata = self.metadata().await?;
        let prefix = &self.options.topic_prefix;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .filter_map(|t| t.name().strip_prefix(prefix.as_str()))
            .filter(|name| !name.is_empty() && !name.starts_with("__"))
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    async fn check(&self) -> Result<(), BusError> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Err(fatal(code, &reason));
        }
        self.metadata().await?;
        self.health.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::config::consumer_config;
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    type Mock = MockCluster<'static, DefaultProducerContext>;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Tests shorten the group join; the rest are the shipped defaults.
    fn test_properties() -> BTreeMap<String, String> {
        properties(&[("session.timeout.ms", "6000")])
    }

    fn mock_bus(cluster: &Mock, properties: &BTreeMap<String, String>) -> KafkaBus {
        KafkaBus::connect(
            &cluster.bootstrap_servers(),
            properties,
            KafkaOptions::default(),
        )
        .unwrap()
    }

    /// A mock cluster holding `topic` in `partitions`, and a bus on it.
    fn mock_topic(topic: &str, partitions: i32) -> (Mock, KafkaBus) {
        mock_topic_with(topic, partitions, &test_properties())
    }

    fn mock_topic_with(
        topic: &str,
        partitions: i32,
        properties: &BTreeMap<String, String>,
    ) -> (Mock, KafkaBus) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(topic, partitions, 1).unwrap();
        let bus = mock_bus(&cluster, properties);
        (cluster, bus)
    }

    fn message(key: &str, n: u32) -> Message {
        Message {
            key: key.to_string(),
            headers: Headers::from([
                ("waybill-id".to_string(), format!("id-{n}")),
                ("waybill-source".to_string(), "shopify".to_string()),
            ]),
            payload: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    /// Polls until `count` records arrived or a generous deadline passed
    /// (group joins take a few seconds on the mock and on tansu).
    async fn poll_records(consumer: &mut Box<dyn Consumer>, count: usize) -> Vec<Record> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut records = Vec::new();
        while records.len() < count && Instant::now() < deadline {
            records.extend(
                consumer
                    .poll(count - records.len(), Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        records
    }

    fn messages(records: &[Record]) -> Vec<Message> {
        records.iter().map(|r| r.message.clone()).collect()
    }

    /// Commits the group's place after `record`.
    async fn commit_after(consumer: &mut Box<dyn Consumer>, record: &Record) {
        consumer
            .commit(record.partition, record.offset + 1)
            .await
            .unwrap();
    }

    /// A member of `group` polls `count` records of `topic`, commits after
    /// the one at `commit_at` and leaves the group.
    async fn consume_and_leave(
        bus: &KafkaBus,
        topic: &str,
        group: &str,
        count: usize,
        commit_at: usize,
    ) -> Vec<Record> {
        let mut member = bus.subscribe(topic, group).await.unwrap();
        let records = poll_records(&mut member, count).await;
        assert_eq!(records.len(), count);
        commit_after(&mut member, &records[commit_at]).await;
        records
    }

    async fn publish_all(bus: &KafkaBus, topic: &str, messages: &[Message]) -> Vec<i64> {
        let mut offsets = Vec::new();
        for message in messages {
            offsets.push(bus.publish(topic, message.clone()).await.unwrap());
        }
        offsets
    }

    #[test]
    fn user_properties_override_producer_defaults() {
        let config = producer_config(
            "b:9092",
            &properties(&[
                ("message.timeout.ms", "1000"),
                ("security.protocol", "SASL_SSL"),
            ]),
        );
        assert_eq!(config.get("message.timeout.ms"), Some("1000"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
    }

    #[test]
    fn consumers_never_auto_commit_whatever_the_properties_say() {
        let user = properties(&[
            ("session.timeout.ms", "6000"),
            ("enable.auto.commit", "true"),
            ("group.id", "other"),
        ]);
        let config = consumer_config("b:9092", &user, "waybill.book");
        assert_eq!(config.get("session.timeout.ms"), Some("6000"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("group.id"), Some("waybill.book"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
    }

    #[tokio::test]
    async fn poll_returns_key_headers_and_payload_in_order() {
        let (_cluster, bus) = mock_topic("orders.shopify", 2);
        let sent: Vec<Message> = (0..3).map(|n| message("acme:1001", n)).collect();
        let offsets = publish_all(&bus, "orders.shopify", &sent).await;
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one key's offsets must increase: {offsets:?}"
        );

        let mut consumer = bus
            .subscribe("orders.shopify", "waybill.book")
            .await
            .unwrap();
        let records = poll_records(&mut consumer, 3).await;
        let received = messages(&records);
        assert_eq!(received, sent);
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            offsets
        );
        assert!(
            records
                .iter()
                .all(|r| r.topic == "orders.shopify" && r.partition == records[0].partition)
        );

        let read = bus.read("orders.shopify", 1, 10).await.unwrap();
        assert_eq!(messages(&read), sent[1..]);
        assert_eq!(bus.read("orders.shopify", 0, 2).await.unwrap().len(), 2);
        assert!(
            bus.topics()
                .await
                .unwrap()
                .contains(&"orders.shopify".to_string())
        );
    }

    #[tokio::test]
    async fn a_new_member_resumes_after_the_committed_offset() {
        let (_cluster, bus) = mock_topic("shipments.booked", 1);
        let sent: Vec<Message> = (0..3).map(|n| message("acme:7", n)).collect();
        publish_all(&bus, "shipments.booked", &sent).await;

        let records = consume_and_leave(&bus, "shipments.booked", "waybill.writeback", 3, 1).await;

        let mut second = bus
            .subscribe("shipments.booked", "waybill.writeback")
            .await
            .unwrap();
        let resumed = poll_records(&mut second, 1).await;
        assert_eq!(resumed.first().map(|r| r.offset), Some(records[2].offset));
        assert_eq!(resumed[0].message, sent[2]);
    }

    #[tokio::test]
    async fn consumer_groups_are_independent() {
        let (_cluster, bus) = mock_topic("shipments.status", 1);
        let sent: Vec<Message> = (0..2).map(|n| message("acme:9", n)).collect();
        publish_all(&bus, "shipments.status", &sent).await;

        consume_and_leave(&bus, "shipments.status", "waybill.a", 2, 1).await;

        let mut other = bus
            .subscribe("shipments.status", "waybill.b")
            .await
            .unwrap();
        let records = poll_records(&mut other, 2).await;
        assert_eq!(messages(&records), sent);
    }

    #[tokio::test]
    async fn a_commit_for_a_partition_not_assigned_is_ignored() {
        let (_cluster, bus) = mock_topic("orders.woo", 1);
        let sent: Vec<Message> = (0..2).map(|n| message("acme:5", n)).collect();
        publish_all(&bus, "orders.woo", &sent).await;

        // Not assigned yet: the group has not been joined.
        let mut early = bus.subscribe("orders.woo", "waybill.book").await.unwrap();
        early.commit(0, 2).await.unwrap();
        drop(early);

        let mut member = bus.subscribe("orders.woo", "waybill.book").await.unwrap();
        let records = poll_records(&mut member, 2).await;
        assert_eq!(messages(&records), sent);
    }

    #[tokio::test]
    async fn a_paused_member_keeps_polling_and_its_place_in_the_group() {
        // librdkafka leaves the group when not polled for this long.
        let (_cluster, bus) = mock_topic_with(
            "orders.shopify",
            1,
            &properties(&[
                ("session.timeout.ms", "6000"),
                ("max.poll.interval.ms", "6000"),
            ]),
        );
        let sent: Vec<Message> = (0..6).map(|n| message("acme:11", n)).collect();
        let offsets = publish_all(&bus, "orders.shopify", &sent).await;

        let mut consumer = bus
            .subscribe("orders.shopify", "waybill.book")
            .await
            .unwrap();
        let first = poll_records(&mut consumer, 2).await;
        assert_eq!(
            first.iter().map(|r| r.offset).collect::<Vec<_>>(),
            offsets[..2]
        );

        assert!(consumer.pause().unwrap());
        // Longer than max.poll.interval.ms: polling goes on, nothing comes.
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let batch = consumer.poll(10, Duration::from_millis(500)).await.unwrap();
            assert!(batch.is_empty(), "fetched while paused: {batch:?}");
        }

        consumer.resume().unwrap();
        // Still a member at the same position: no rejoin, no redelivery.
        let rest = poll_records(&mut consumer, 4).await;
        assert_eq!(
            rest.iter().map(|r| r.offset).collect::<Vec<_>>(),
            offsets[2..]
        );
        let more = consumer.poll(10, Duration::from_secs(1)).await.unwrap();
        assert!(more.is_empty(), "redelivered: {more:?}");
    }

    #[tokio::test]
    async fn publish_fails_fast_while_the_broker_is_down_and_recovers() {
        let (cluster, bus) = mock_topic("orders.shopify", 1);
        bus.publish("orders.shopify", message("acme:1", 0))
            .await
            .unwrap();
        bus.check().await.unwrap();

        cluster.broker_down(1).unwrap();
        // Far below librdkafka's own 300 s, well above the 5 s default bound.
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            bus.publish("orders.shopify", message("acme:1", 1)),
        )
        .await;
        assert!(
            matches!(outcome, Ok(Err(BusError::Unavailable(_)))),
            "{outcome:?}"
        );
        assert!(matches!(bus.check().await, Err(BusError::Unavailable(_))));
        assert!(outcome.is_ok_and(|published| published.is_err_and(|e| e.is_transient())));

        cluster.broker_up(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut recovered = false;
        while !recovered && Instant::now() < deadline {
            recovered = bus
                .publish("orders.shopify", message("acme:1", 2))
                .await
                .is_ok();
        }
        assert!(
            recovered,
            "publish did not work again after the broker came back"
        );
        bus.check().await.unwrap();
    }

    #[tokio::test]
    async fn a_message_too_large_is_a_storage_error_and_not_transient() {
        let (_cluster, bus) = mock_topic_with(
            "orders.shopify",
            1,
            &properties(&[("message.max.bytes", "1000")]),
        );
        let mut large = message("acme:1", 0);
        large.payload = vec![b'x'; 10_000];
        let error = bus.publish("orders.shopify", large).await.unwrap_err();
        assert!(
            matches!(error, BusError::Storage(Cause::Kafka { .. })),
            "{error:?}"
        );
        assert!(!error.is_transient());
        bus.publish("orders.shopify", message("acme:1", 1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_topic_prefix_separates_deployments_sharing_a_cluster() {
        let cluster = MockCluster::new(1).unwrap();
        let bus_with = |prefix: &str| {
            KafkaBus::connect(
                &cluster.bootstrap_servers(),
                &test_properties(),
                KafkaOptions {
                    topic_prefix: prefix.to_string(),
                    ..KafkaOptions::default()
                },
            )
            .unwrap()
        };
        let team_a = bus_with("team-a.");
        let team_b = bus_with("team-b.");
        let unprefixed = bus_with("");
        team_a
            .publish("orders.shopify", message("acme:1", 0))
            .await
            .unwrap();
        team_b
            .publish("orders.shopify", message("acme:1", 1))
            .await
            .unwrap();

        assert_eq!(team_a.topics().await.unwrap(), vec!["orders.shopify"]);
        let all = unprefixed.topics().await.unwrap();
        assert!(
            all.contains(&"team-a.orders.shopify".to_string()),
            "{all:?}"
        );
        assert!(
            all.contains(&"team-b.orders.shopify".to_string()),
            "{all:?}"
        );

        let read = team_a.read("orders.shopify", 0, 10).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].topic, "orders.shopify");
        assert_eq!(read[0].message, message("acme:1", 0));

        let mut consumer = team_b
            .subscribe("orders.shopify", "waybill.book")
            .await
            .unwrap();
        let records = poll_records(&mut consumer, 1).await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].topic, "orders.shopify");
        assert_eq!(records[0].message, message("acme:1", 1));
        commit_after(&mut consumer, &records[0]).await;
    }

    #[tokio::test]
    async fn topics_are_auto_created_when_the_admin_api_is_missing() {
        let cluster = MockCluster::new(1).unwrap();
        let bus = mock_bus(&cluster, &test_properties());
        let first = bus.publish("dlq.book", message("acme:3", 0)).await.unwrap();
        let second = bus.publish("dlq.book", message("acme:3", 1)).await.unwrap();
        assert!(second > first);
        assert!(bus.admin_unavailable.load(Ordering::Relaxed));
        assert_eq!(bus.read("dlq.book", 0, 10).await.unwrap().len(), 2);
    }

    /// Reads every record of a topic of six partitions on the broker at
    /// `WAYBILL_TEST_KAFKA`; none is lost to a watermark the broker reports.
    #[tokio::test]
    async fn read_returns_every_record_of_every_partition_on_a_real_broker() {
        let Ok(brokers) = std::env::var("WAYBILL_TEST_KAFKA") else {
            eprintln!("skipped: WAYBILL_TEST_KAFKA is not set");
            return;
        };
        let topic = format!("dlq.test-{}", uuid::Uuid::new_v4());
        let bus = KafkaBus::connect(&brokers, &test_properties(), KafkaOptions::default()).unwrap();
        let sent: Vec<Message> = (0..40).map(|n| message(&format!("acme:{n}"), n)).collect();
        // Published at once, the producer batches several records per
        // partition: a batch takes as many offsets as it has records.
        let published =
            futures::future::join_all(sent.iter().map(|m| bus.publish(&topic, m.clone()))).await;
        assert!(published.iter().all(Result::is_ok), "{published:?}");
        let read = bus.read(&topic, 0, 1000).await.unwrap();
        let mut got: Vec<&str> = read.iter().map(|r| r.message.key.as_str()).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = sent.iter().map(|m| m.key.as_str()).collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    /// Against a real Kafka-protocol broker: `scripts/kafka-broker.sh start`
    /// prints an address to put in `WAYBILL_TEST_KAFKA`.
    #[tokio::test]
    async fn round_trip_on_a_real_broker() {
        let Ok(brokers) = std::env::var("WAYBILL_TEST_KAFKA") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "WAYBILL_TEST_KAFKA is not set: scripts/test.sh starts a broker"
            );
            eprintln!(
                "skipped: WAYBILL_TEST_KAFKA is not set (scripts/kafka-broker.sh start prints an address)"
            );
            return;
        };
        let run = uuid::Uuid::new_v4();
        let topic = format!("orders.test-{run}");
        let group = format!("waybill.test-{run}");
        let bus = KafkaBus::connect(
            &brokers,
            &test_properties(),
            KafkaOptions {
                partitions: 2,
                ..KafkaOptions::default()
            },
        )
        .unwrap();
        bus.check().await.unwrap();
        let sent: Vec<Message> = (0..3).map(|n| message("acme:42", n)).collect();
        let offsets = publish_all(&bus, &topic, &sent).await;
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        assert!(bus.topics().await.unwrap().contains(&topic));

        let records = consume_and_leave(&bus, &topic, &group, 3, 1).await;
        assert_eq!(messages(&records), sent);

        let mut second = bus.subscribe(&topic, &group).await.unwrap();
        let resumed = poll_records(&mut second, 1).await;
        assert_eq!(
            resumed.first().map(|r| r.message.clone()),
            Some(sent[2].clone())
        );
        assert_eq!(bus.read(&topic, 0, 10).await.unwrap().len(), 3);
    }
}
