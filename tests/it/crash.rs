//! `kill -9` mid-stream: after a restart every acknowledged order is booked
//! exactly once; a request in flight at the kill goes to review, never to a
//! second booking.

use crate::common::*;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use waybill::store::BookingStatus;

/// `max_in_flight` of the shipped pipeline: at most this many requests are
/// in flight when the process is killed.
const MAX_IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_books_nothing_twice() {
    let courier = CountingCourier::start().await;
    let port = free_port();
    let dir = ConfigDir::new(&format!(
        "{{ connector: sandbox, base_url: \"{}\" }}",
        courier.url
    ));
    dir.edit("waybill.yaml", |t| {
        t.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let log = dir.dir.path().join("waybill.log");
    let mut child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;

    let total = 400;
    let kill_after = 150;
    let mut acknowledged = BTreeSet::new();
    let mut sent = 0;
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        let (reference, body) = numbered_order("K", i);
        let (http, base) = (http.clone(), base.clone());
        posts.spawn(async move {
            let (status, _) =
                post_order(&http, &base, &body, "orders/create", &format!("kill-{i}")).await;
            (reference, status)
        });
        sent += 1;
        if sent % 16 == 0 {
            while let Some(done) = posts.try_join_next() {
                let (reference, status) = done.expect("post task");
                if status == 200 {
                    acknowledged.insert(reference);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i == kill_after {
            child.kill();
        }
    }
    while let Some(done) = posts.join_next().await {
        let (reference, status) = done.expect("post task");
        if status == 200 {
            acknowledged.insert(reference);
        }
    }
    assert!(
        acknowledged.len() > 20,
        "some orders were acknowledged before the kill: {}",
        acknowledged.len()
    );

    // Restart and let it catch up: until every acknowledged order is booked
    // or in review. (Waiting for the courier's count to stop moving instead
    // ends too early on Kafka, where a restarted member may sit idle for
    // seconds while the group rebalances.)
    let child = Process::spawn(&dir.path(), &log);
    wait_healthy(&http, &base).await;
    let config = dir.load();
    let backends = waybill::runtime::open_backends(&config)
        .await
        .expect("open store");
    let store = backends.store.clone();
    let all_settled = |bookings: &[waybill::store::Booking]| {
        let settled: BTreeSet<&str> = bookings
            .iter()
            .filter(|b| matches!(b.status, BookingStatus::Booked | BookingStatus::Review))
            .filter_map(|b| b.reference.as_deref())
            .collect();
        acknowledged.iter().all(|r| settled.contains(r.as_str()))
    };
    eventually(
        Duration::from_secs(120),
        "every acknowledged order to be booked or in review after the restart",
        || {
            let store = store.clone();
            let all_settled = &all_settled;
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let bookings = store.bookings(None, 100_000).await.ok()?;
                all_settled(&bookings).then_some(())
            }
        },
    )
    .await;
    // Time for a second booking of anything to show at the courier.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.terminate();

    let bookings = store.bookings(None, 100_000).await.expect("bookings");
    let by_reference: HashMap<String, BookingStatus> = bookings
        .iter()
        .filter_map(|b| b.reference.clone().map(|r| (r, b.status)))
        .collect();
    let counts = courier.counts();
    for (reference, n) in &counts {
        assert!(*n <= 1, "{reference} was booked {n} times");
    }
    let mut review = 0;
    for reference in &acknowledged {
        match by_reference.get(reference) {
            Some(BookingStatus::Booked) => assert_eq!(
                counts.get(reference),
                Some(&1),
                "{reference} booked in the store but not at the courier"
            ),
            Some(BookingStatus::Review) => review += 1,
            other => panic!("acknowledged order {reference} ended as {other:?}"),
        }
    }
    assert!(
        review <= MAX_IN_FLIGHT,
        "only requests in flight at the kill go to review: {review}"
    );
}
