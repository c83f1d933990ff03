//! Kafka + PostgreSQL at scale: two instances share the work and survive a
//! `kill -9` without losing or double-booking an order, one order's events
//! are processed in order across instances, and what waybill writes is
//! readable by a standard Kafka client. These tests need the Kafka backend
//! (`WAYBILL_TEST_BACKEND=kafka`); on the embedded one they return at once.

use crate::common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use waybill::store::BookingStatus;

/// Orders streamed through the two instances.
const ORDERS: usize = 5_000;

/// Every `TWIN_EVERY`th order also gets an `orders/updated` event, sent
/// (to the other instance) once its `orders/create` was acknowledged.
const TWIN_EVERY: usize = 10;

/// Webhooks in flight at once, across both instances.
const CONCURRENCY: usize = 32;

/// `max_in_flight` of the shipped pipeline: at most this many bookings are
/// in flight in the instance that is killed.
const MAX_IN_FLIGHT: usize = 64;

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
    partition: i32,
    offset: i64,
    key: Option<String>,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
}

/// Reads `topic` from the beginning with a bare librdkafka consumer that
/// joins no group (as `kcat -C -t TOPIC -o beginning -e` does), until `count`
/// messages arrived or 30 s passed in all.
fn read_raw(brokers: &str, topic: &str, count: usize) -> Vec<RawMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer = raw_reader(brokers, topic, false, Duration::from_secs(30));
    let mut messages = Vec::new();
    while messages.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        messages.push(raw_message(&message.expect("fetch")));
    }
    messages
}

/// Reads all of `topic` as it is now: every partition up to the end its
/// fetch reported (the partition-EOF event, as `kcat -e` stops), in offset
/// order per partition.
///
/// Not sized by the partitions' watermarks from ListOffsets: tansu, the test
/// broker, can answer those with an end up to a produce batch short of the
/// log (e.g. 907 for a partition whose last record is at 908, while its
/// fetches say 909), which hid the last records of a partition.
fn read_raw_all(brokers: &str, topic: &str) -> Vec<RawMessage> {
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    let consumer = raw_reader(brokers, topic, true, limit);
    let mut unfinished: BTreeSet<i32> = consumer
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    let mut messages = Vec::new();
    while !unfinished.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                unfinished.remove(&partition);
            }
            Some(Err(e)) => panic!("fetch from {topic}: {e}"),
            Some(Ok(message)) => messages.push(raw_message(&message)),
        }
    }
    assert!(
        unfinished.is_empty(),
        "partitions {unfinished:?} of {topic} not read to their end within {limit:?}"
    );
    messages
}

/// A consumer that joins no group, assigned every partition of `topic` from
/// the beginning once the topic exists (waybill creates it on first write).
fn raw_reader(brokers: &str, topic: &str, eof: bool, limit: Duration) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "standard-client")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .create()
        .expect("consumer");
    let deadline = Instant::now() + limit;
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
    consumer
}

fn raw_message(message: &BorrowedMessage<'_>) -> RawMessage {
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
    RawMessage {
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8(k.to_vec()).expect("utf-8 key")),
        headers,
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
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

/// What the store said to one order's webhooks.
#[derive(Debug, Default, Clone, Copy)]
struct Acks {
    created: bool,
    updated: bool,
}

/// Posts order `i` (and, for a twin, its update once the creation was
/// acknowledged, to the other instance).
async fn post_twin_or_single(http: reqwest::Client, bases: [String; 2], i: usize) -> (usize, Acks) {
    let (_, body) = numbered_order("S", i);
    let first = &bases[i % 2];
    let (status, _) = post_order(&http, first, &body, "orders/create", &format!("c-{i}")).await;
    let mut acks = Acks {
        created: status == 200,
        updated: false,
    };
    if acks.created && i.is_multiple_of(TWIN_EVERY) {
        let second = &bases[(i + 1) % 2];
        let (status, _) =
            post_order(&http, second, &body, "orders/updated", &format!("u-{i}")).await;
        acks.updated = status == 200;
    }
    (i, acks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_survive_kill_9_and_keep_each_order_in_order() {
    if kafka().is_none() {
        return;
    }
    let started = Instant::now();
    let courier = CountingCourier::start().await;
    let dir = ConfigDir::new(&courier.account());
    let ports = [free_port(), free_port()];
    let configs = [dir.path(), dir.dir.path().join("waybill-b.yaml")];
    let text = std::fs::read_to_string(&configs[0]).expect("config");
    for (config, port) in configs.iter().zip(ports) {
        std::fs::write(
            config,
            text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
        )
        .expect("write config");
    }
    let logs = [dir.dir.path().join("a.log"), dir.dir.path().join("b.log")];
    let bases = ports.map(|port| format!("http://127.0.0.1:{port}"));
    let http = reqwest::Client::new();
    let a = Process::spawn(&configs[0], &logs[0]);
    let mut b = Process::spawn(&configs[1], &logs[1]);
    wait_healthy(&http, &bases[0]).await;
    wait_healthy(&http, &bases[1]).await;

    let mut acks: HashMap<usize, Acks> = HashMap::new();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..ORDERS {
        posts.spawn(post_twin_or_single(http.clone(), bases.clone(), i));
        if posts.len() >= CONCURRENCY {
            let (i, ack) = posts.join_next().await.expect("a post").expect("post task");
            acks.insert(i, ack);
        }
        if i == ORDERS / 2 {
            b.kill();
            b = Process::spawn(&configs[1], &logs[1]);
        }
    }
    while let Some(done) = posts.join_next().await {
        let (i, ack) = done.expect("post task");
        acks.insert(i, ack);
    }
    let posted_in = started.elapsed();
    let acknowledged: BTreeSet<usize> = acks
        .iter()
        .filter(|(_, ack)| ack.created)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        acknowledged.len() > ORDERS * 9 / 10,
        "most orders are acknowledged, the killed instance's share only while it is down: {}",
        acknowledged.len()
    );
    wait_healthy(&http, &bases[1]).await;

    // Every acknowledged order reaches the courier but those in flight in
    // the killed instance, and nothing moves any more.
    let references: HashMap<usize, String> = acknowledged
        .iter()
        .map(|i| (*i, numbered_order("S", *i).0))
        .collect();
    let mut last = usize::MAX;
    eventually(
        Duration::from_secs(240),
        "both instances to catch up",
        || {
            let counts = courier.counts();
            let missing = references
                .values()
                .filter(|r| !counts.contains_key(*r))
                .count();
            let settled = counts.len() == last && missing <= MAX_IN_FLIGHT;
            last = counts.len();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                settled.then_some(())
            }
        },
    )
    .await;
    let booked_in = started.elapsed();

    let config = dir.load();
    let backends = waybill::runtime::open_backends(&config)
        .await
        .expect("open backends");
    // A key the killed instance had sent stays `sent` while its lease lasts
    // (the owner's answer might still come); then a redelivery finds the
    // lease lapsed and sends it to review. Nothing stays in between, and
    // every acknowledged order gets there: the wait above can end while a
    // member sits idle in a rebalance.
    let store = backends.store.clone();
    let wanted = &references;
    let bookings: HashMap<String, waybill::store::Booking> = eventually(
        Duration::from_secs(150),
        "every acknowledged order to be booked or in review, keys sent by the killed instance once their lease lapsed",
        || {
            let store = store.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let bookings: HashMap<String, waybill::store::Booking> = store
                    .bookings(None, 100_000)
                    .await
                    .expect("bookings")
                    .into_iter()
                    .filter_map(|b| b.reference.clone().map(|r| (r, b)))
                    .collect();
                let unsettled = bookings
                    .values()
                    .any(|b| b.status == BookingStatus::Sent);
                let all_there = wanted.values().all(|r| bookings.contains_key(r));
                (!unsettled && all_there).then_some(bookings)
            }
        },
    )
    .await;
    let is_booked = |i: &usize| {
        bookings
            .get(&references[i])
            .is_some_and(|b| b.status == BookingStatus::Booked)
    };
    // Twins booked by their creation; their updates replay the booking,
    // perhaps a little after the last booking, and publish nothing.
    let twins: Vec<usize> = acks
        .iter()
        .filter(|(i, ack)| ack.updated && is_booked(i))
        .map(|(i, _)| *i)
        .collect();
    let prefix = dir.topic_prefix.clone().expect("a kafka tree has a prefix");
    let brokers = kafka().expect("kafka");
    let read_all = |topic: &str| {
        let brokers = brokers.clone();
        let topic = format!("{prefix}{topic}");
        tokio::task::spawn_blocking(move || read_raw_all(&brokers, &topic))
    };
    let ingested = read_all("orders.shopify").await.expect("reader");
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for message in &ingested {
        let end = ends.entry(message.partition).or_default();
        *end = (*end).max(message.offset + 1);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = tokio::task::spawn_blocking({
            let brokers = brokers.clone();
            let topic = format!("{prefix}orders.shopify");
            let group = format!("{prefix}waybill.shopify-orders");
            let partitions: Vec<i32> = ends.keys().copied().collect();
            move || committed_offsets(&brokers, &topic, &group, &partitions)
        })
        .await
        .expect("committed offsets");
        let behind: Vec<(i32, i64, Option<i64>)> = ends
            .iter()
            .filter(|(p, end)| committed.get(p).is_none_or(|c| c < end))
            .map(|(p, end)| (*p, *end, committed.get(p).copied()))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline never finished orders.shopify: (partition, end, committed) {behind:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let outputs = booked_events(&read_all("shipments.booked").await.expect("reader"));
    a.terminate();
    b.terminate();

    let counts = courier.counts();
    for (reference, n) in &counts {
        assert!(*n <= 1, "{reference} was booked {n} times");
    }
    let mut review = 0;
    for (i, reference) in &references {
        match bookings.get(reference).map(|b| b.status) {
            Some(BookingStatus::Booked) => assert_eq!(
                counts.get(reference),
                Some(&1),
                "{reference} booked in the store but not at the courier"
            ),
            Some(BookingStatus::Review) => review += 1,
            other => panic!("acknowledged order {i} ({reference}) ended as {other:?}"),
        }
    }
    assert!(
        review <= MAX_IN_FLIGHT,
        "only requests in flight at the kill go to review: {review}"
    );

    // Per-key order: each twin was booked by its creation, and its update,
    // a replay, published no second booking.
    let event_of: HashMap<String, String> = ingested
        .iter()
        .filter_map(|m| {
            Some((
                m.headers.get("waybill-id")?.clone(),
                m.headers.get("waybill-topic")?.clone(),
            ))
        })
        .collect();
    assert!(
        twins.len() > ORDERS / TWIN_EVERY * 8 / 10,
        "most twins were acknowledged twice and booked: {}",
        twins.len()
    );
    for i in &twins {
        let reference = &references[i];
        let booking = &bookings[reference];
        let created_by = booking.message_id.as_ref().and_then(|id| event_of.get(id));
        assert_eq!(
            created_by.map(String::as_str),
            Some("orders/create"),
            "{reference} was booked by its creation, not its update"
        );
        let events = outputs.get(&order_key(*i)).cloned().unwrap_or_default();
        assert!(
            !events.is_empty() && events.iter().all(|e| e == "orders/create"),
            "{reference}: published for its creation only, got {events:?}"
        );
    }
    eprintln!(
        "scale: {} orders posted in {posted_in:?} ({} acknowledged, {} with an update), \
         all booked by {booked_in:?}; {review} in review; total {:?}",
        ORDERS,
        acknowledged.len(),
        twins.len(),
        started.elapsed()
    );
}

/// What consumer group `group` committed on `partitions` of `topic`.
fn committed_offsets(
    brokers: &str,
    topic: &str,
    group: &str,
    partitions: &[i32],
) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    for partition in partitions {
        wanted.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some((e.partition(), offset)),
            _ => None,
        })
        .collect()
}

/// The bus key of order `i`.
fn order_key(i: usize) -> String {
    let (_, body) = numbered_order("S", i);
    let order: serde_json::Value = serde_json::from_slice(&body).expect("json");
    format!("shopify-main:{}", order["id"])
}

/// The store events (`waybill-topic`) of `shipments.booked`, per key, in
/// offset order (one key stays in one partition, read in order).
fn booked_events(messages: &[RawMessage]) -> HashMap<String, Vec<String>> {
    let mut events: HashMap<String, Vec<String>> = HashMap::new();
    for message in messages {
        let topic = message
            .headers
            .get("waybill-topic")
            .cloned()
            .unwrap_or_default();
        events
            .entry(message.key.clone().unwrap_or_default())
            .or_default()
            .push(topic);
    }
    events
}
