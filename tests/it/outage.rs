//! A 30 s broker outage during a stream of orders loses nothing: webhooks
//! answer 503 quickly while the broker is down, `/readyz` says why, the
//! refused webhooks are accepted when the store re-sends them, and every
//! acknowledged order is booked exactly once.
//!
//! It brings its own broker (librdkafka's in-process mock cluster) and a
//! PostgreSQL database, so it runs on both test backends.

use crate::common::*;
use rdkafka::mocking::MockCluster;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use waybill::store::BookingStatus;

const OUTAGE: Duration = Duration::from_secs(30);

/// Ingest waits 2 s for the bus; this leaves room for a loaded machine
/// while staying inside the stores' 5 s webhook timeout.
const REFUSAL_BOUND: Duration = Duration::from_secs(3);

/// Webhooks posted at once, as a store's delivery workers would.
const CONCURRENCY: usize = 4;

/// Posts orders `range` at `CONCURRENCY`, returning each one's webhook id,
/// body, status and latency.
async fn post_batch(app: &App, range: std::ops::Range<usize>) -> Vec<(usize, u16, Duration)> {
    let mut posts = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for i in range {
        let (_, body) = numbered_order("OUT", i);
        let http = app.http.clone();
        let base = app.url("");
        posts.spawn(async move {
            let (status, took) =
                post_order(&http, &base, &body, "orders/create", &format!("out-{i}")).await;
            (i, status, took)
        });
        if posts.len() >= CONCURRENCY {
            results.extend(posts.join_next().await.map(|r| r.expect("post")));
        }
    }
    while let Some(done) = posts.join_next().await {
        results.push(done.expect("post"));
    }
    results
}

/// Re-sends an order's webhook (same delivery id, as a store retries) until
/// it is accepted.
async fn resend_until_accepted(app: &App, i: usize) {
    let (_, body) = numbered_order("OUT", i);
    let base = app.url("");
    eventually(
        Duration::from_secs(90),
        "a re-sent webhook to be accepted",
        || {
            let http = app.http.clone();
            let base = base.clone();
            let body = body.clone();
            async move {
                let (status, _) =
                    post_order(&http, &base, &body, "orders/create", &format!("out-{i}")).await;
                if status == 200 {
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_broker_outage_loses_nothing_and_books_nothing_twice() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let courier = CountingCourier::start().await;
    let dir = ConfigDir::on(
        Backend::Kafka {
            brokers: cluster.bootstrap_servers(),
        },
        &courier.account(),
        "",
    );
    let prefix = dir.topic_prefix.clone().expect("kafka tree");
    // The mock cluster has no admin API; create the topics as an operator would.
    for topic in ["orders.shopify", "shipments.booked", "dlq.shopify-orders"] {
        cluster
            .create_topic(&format!("{prefix}{topic}"), 3, 1)
            .expect("create topic");
    }
    let app = App::start(&dir).await;

    let before = post_batch(&app, 0..40).await;
    let mut acknowledged: Vec<usize> = Vec::new();
    for (i, status, _) in &before {
        assert_eq!(*status, 200, "order {i} before the outage");
        acknowledged.push(*i);
    }

    // The stream is flowing (the consumer group is joined) when the broker goes.
    eventually(
        Duration::from_secs(60),
        "orders before the outage to be booked",
        || {
            let booked = courier.counts().len() == before.len();
            async move { booked.then_some(()) }
        },
    )
    .await;
    cluster.broker_down(1).expect("broker down");
    let down_at = Instant::now();
    let mut during = Vec::new();
    let mut next = 40;
    let mut readiness = None;
    while down_at.elapsed() < OUTAGE {
        during.extend(post_batch(&app, next..next + CONCURRENCY).await);
        next += CONCURRENCY;
        if readiness.is_none() && down_at.elapsed() > Duration::from_secs(5) {
            let response = app
                .http
                .get(app.url("/readyz"))
                .send()
                .await
                .expect("readyz");
            readiness = Some((
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ));
        }
    }
    cluster.broker_up(1).expect("broker up");
    let up_at = Instant::now();

    let (ready_status, ready_reason) = readiness.expect("readiness was checked");
    assert_eq!(ready_status, 503, "{ready_reason}");
    assert!(
        ready_reason.starts_with("not ready: bus:"),
        "/readyz names the bus: {ready_reason}"
    );
    assert!(
        during.len() >= 20,
        "the stream went on during the outage: {}",
        during.len()
    );
    let slowest = during
        .iter()
        .map(|(_, _, took)| *took)
        .max()
        .unwrap_or_default();
    let mut refused = Vec::new();
    for (i, status, took) in &during {
        assert!(
            *took < REFUSAL_BOUND,
            "order {i} answered {status} after {took:?} during the outage"
        );
        match status {
            503 => refused.push(*i),
            // Only orders posted in the first instants can still reach the
            // broker before librdkafka notices it is gone.
            200 => acknowledged.push(*i),
            other => panic!("order {i} answered {other} during the outage"),
        }
    }
    assert!(
        refused.len() >= during.len() - CONCURRENCY,
        "webhooks are refused while the broker is down: {} of {}",
        refused.len(),
        during.len()
    );

    for i in &refused {
        resend_until_accepted(&app, *i).await;
    }
    let resent_in = up_at.elapsed();
    acknowledged.extend(refused.iter().copied());
    let after = post_batch(&app, next..next + 40).await;
    for (i, status, _) in &after {
        assert_eq!(*status, 200, "order {i} after the outage");
        acknowledged.push(*i);
    }

    let references: Vec<String> = acknowledged
        .iter()
        .map(|i| numbered_order("OUT", *i).0)
        .collect();
    eventually(
        Duration::from_secs(120),
        "every acknowledged order to be booked",
        || {
            let counts = courier.counts();
            let all = references.iter().all(|r| counts.contains_key(r));
            async move { all.then_some(()) }
        },
    )
    .await;
    let caught_up_in = up_at.elapsed();
    // Redelivered records that are still being worked on settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let counts = courier.counts();
    for (reference, n) in &counts {
        assert_eq!(*n, 1, "{reference} was booked {n} times");
    }
    let bookings: BTreeMap<String, BookingStatus> = app
        .backends
        .store
        .bookings(None, 100_000)
        .await
        .expect("bookings")
        .into_iter()
        .filter_map(|b| b.reference.map(|r| (r, b.status)))
        .collect();
    for reference in &references {
        assert_eq!(
            bookings.get(reference),
            Some(&BookingStatus::Booked),
            "{reference} in the store"
        );
    }
    eprintln!(
        "outage: {} before, {} refused in {OUTAGE:?} (slowest answer {slowest:?}), {} after; \
         all re-sent within {resent_in:?} and {} booked once each within {caught_up_in:?} of the broker's return",
        before.len(),
        refused.len(),
        after.len(),
        references.len()
    );
    app.stop().await;
}
