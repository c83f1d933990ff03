//! `waybill dlq list|show|replay` on both backends, with dead letters on
//! every partition of their topic.

use crate::common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use waybill::bus::Bus;
use waybill::cli::dlq;
use waybill::model::{Headers, Message, header};

const TOPIC: &str = "dlq.shopify-orders";

/// Records asked for per read by `dlq list`; smaller pages must not change what it lists.
const PAGE: usize = 1000;

/// A Shopify order with no phone anywhere: it fails validation and is dead-lettered.
fn order_without_phone(i: usize) -> Vec<u8> {
    order_with("order-no-phone.json", |o| {
        o["id"] = serde_json::json!(7_200_000_000_000_000_000u64 + i as u64);
        o["name"] = serde_json::json!(format!("#NP{i}"));
    })
}

/// The letters of [`TOPIC`] once there are `count` of them.
async fn letters_once(bus: &dyn Bus, count: usize) -> Vec<dlq::Listed> {
    eventually(Duration::from_secs(60), "the dead letters", || async {
        let letters = dlq::letters(bus, TOPIC, PAGE).await.ok()?;
        (letters.len() >= count).then_some(letters)
    })
    .await
}

/// The last letter of each partition.
fn last_of_each_partition(letters: &[dlq::Listed]) -> Vec<&dlq::Listed> {
    let partitions: BTreeSet<i32> = letters.iter().map(|l| l.record.partition).collect();
    partitions
        .into_iter()
        .filter_map(|p| {
            letters
                .iter()
                .filter(|l| l.record.partition == p)
                .max_by_key(|l| l.record.offset)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_replay_cover_dead_letters_on_every_partition() {
    // Enough orders that every partition of the topic gets dead letters.
    const ORDERS: usize = 60;
    let dir = ConfigDir::new("{ connector: sandbox }");
    let config = dir.load();
    let app = App::start(&dir).await;
    for i in 0..ORDERS {
        let (status, _) = app
            .shopify(&order_without_phone(i), "orders/paid", &format!("np-{i}"))
            .await;
        assert_eq!(status, 200);
    }
    let bus = app.backends.bus.as_ref();
    let letters = letters_once(bus, ORDERS).await;
    assert_eq!(letters.len(), ORDERS);
    let names: BTreeSet<String> = letters
        .iter()
        .filter_map(|l| l.letter.order_name.clone())
        .collect();
    assert_eq!(names.len(), ORDERS, "{names:?}");
    let partitions: BTreeSet<i32> = letters.iter().map(|l| l.record.partition).collect();
    let all: BTreeSet<i32> = bus.partitions(TOPIC).await.unwrap().into_iter().collect();
    assert_eq!(partitions, all);
    assert!(letters.iter().all(|l| !l.replayed));

    // Pages far smaller than a partition list the same letters.
    let ids = |letters: &[dlq::Listed]| -> BTreeSet<String> {
        letters.iter().map(|l| l.id.clone()).collect()
    };
    let paged = dlq::letters(bus, TOPIC, 3).await.unwrap();
    assert_eq!(ids(&paged), ids(&letters));

    let lasts = last_of_each_partition(&letters);
    for last in &lasts {
        let shown = dlq::show(bus, &last.id).await.unwrap();
        assert_eq!(shown["id"], last.id.as_str());
        assert_eq!(
            shown["order_name"],
            last.letter.order_name.as_deref().unwrap()
        );
        assert_eq!(shown["replayed"], false);
    }

    // Replayed, the order fails again: a new letter, and the first is marked.
    let first = lasts[lasts.len() - 1].id.clone();
    let lines = dlq::replay(&config, bus, Some(&first), None).await.unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let again = letters_once(bus, ORDERS + 1).await;
    assert_eq!(again.len(), ORDERS + 1);
    let replayed: Vec<&str> = again
        .iter()
        .filter(|l| l.replayed)
        .map(|l| l.id.as_str())
        .collect();
    assert_eq!(replayed, [first.as_str()]);
    assert_eq!(dlq::show(bus, &first).await.unwrap()["replayed"], true);

    // A pipeline's replay leaves the letter already replayed alone.
    let lines = dlq::replay(&config, bus, None, Some("shopify-orders"))
        .await
        .unwrap();
    assert_eq!(lines.len(), ORDERS, "{lines:?}");
    let after = letters_once(bus, 2 * ORDERS + 1).await;
    assert_eq!(after.len(), 2 * ORDERS + 1);
    assert_eq!(after.iter().filter(|l| l.replayed).count(), ORDERS + 1);
    assert!(
        dlq::replay(&config, bus, Some("dlq.shopify-orders:0:x"), None)
            .await
            .is_err()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_finds_a_letter_behind_fuller_partitions() {
    // About a hundred letters per partition on Kafka: more than any single
    // read of the topic from one offset returns before the last partition.
    const LETTERS: usize = 600;
    let dir = ConfigDir::new("{ connector: sandbox }");
    let backends = waybill::runtime::open_backends(&dir.load())
        .await
        .expect("open backends");
    let bus = backends.bus.as_ref();
    let letter = |i: usize| Message {
        key: format!("shopify-main:{i}"),
        headers: Headers::from([
            (header::PIPELINE.to_string(), "shopify-orders".to_string()),
            (
                header::ORIGIN_TOPIC.to_string(),
                "orders.shopify".to_string(),
            ),
        ]),
        payload: format!("{{\"name\": \"#{i}\"}}").into_bytes(),
    };
    let published =
        futures::future::join_all((0..LETTERS).map(|i| bus.publish(TOPIC, letter(i)))).await;
    assert!(published.iter().all(Result::is_ok));
    let letters = letters_once(bus, LETTERS).await;
    assert_eq!(letters.len(), LETTERS);
    for partition in bus.partitions(TOPIC).await.unwrap() {
        let first = letters
            .iter()
            .filter(|l| l.record.partition == partition)
            .min_by_key(|l| l.record.offset)
            .expect("a letter on every partition");
        let shown = dlq::show(bus, &first.id).await.unwrap();
        assert_eq!(shown["id"], first.id.as_str());
        assert_eq!(shown["key"], first.letter.key.as_str());
    }
    bus.close().await;
}
