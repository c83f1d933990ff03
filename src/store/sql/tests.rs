//! The store's scenario tests, each run on SQLite, on the store beside the
//! embedded bus (whose writer takes the frequent changes) and on PostgreSQL.

use super::*;
use crate::store::test_support::{create_database, drop_database};
use futures::FutureExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// `store`'s answer to a claim on `key` by `owner`.
async fn claim(
    store: &SqlStore,
    key: &BookingKey,
    owner: &str,
    lease: Duration,
    message_id: &str,
    reference: &str,
) -> Reservation {
    let claim = claim_of(key, owner, lease, message_id, reference);
    store.claim_booking(claim).await.unwrap()
}

/// A claim, its fields in the order the scenarios read best.
fn claim_of<'a>(
    key: &'a BookingKey,
    owner: &'a str,
    lease: Duration,
    message_id: &'a str,
    reference: &'a str,
) -> Claim<'a> {
    Claim {
        key,
        owner,
        lease,
        message_id,
        reference,
        shipment: "{}",
    }
}

pub(super) async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(SqlStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    test(store.clone()).await;
    store.close().await;
}

/// Runs `test` on the store the embedded bus opens beside it, whose
/// usual claim and record go to the bus writer as jobs.
async fn on_embedded<F, Fut>(test: F)
where
    F: FnOnce(SqlStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let (bus, store) = crate::bus::embedded::open_embedded(dir.path())
        .await
        .unwrap();
    assert!(store.jobs().is_some());
    test(store).await;
    bus.close().await;
}

/// Runs `test` on a fresh database `waybill_test_<random>`, dropped afterwards
/// even when the test fails.
pub(super) async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(SqlStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let (name, url, admin) = create_database().await;
    let outcome = AssertUnwindSafe(async {
        let store = SqlStore::connect(&url).await.unwrap();
        test(store.clone()).await;
        store.close().await;
    })
    .catch_unwind()
    .await;
    drop_database(&name, &admin).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declares each scenario as one test per backend.
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_sqlite(super::$scenario).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_embedded(super::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_postgres(super::$scenario).await;
                }
            )*
        }
    };
}

on_every_backend!(
    claim_answers_for_every_state,
    a_lapsed_lease_on_a_sent_key_means_review_not_resend,
    concurrent_claims_acquire_once,
    review_is_resolved_booked_or_released,
    a_claim_can_be_given_back,
    deliveries_are_deduplicated_and_expire,
    bookings_are_listed_by_status,
    an_orders_bookings_keep_their_shipment_and_the_change_noted,
    write_backs_are_claimed_once_and_looked_up_after_doubt,
);

const HOUR: Duration = Duration::from_secs(3600);

fn key(order_id: &str) -> BookingKey {
    BookingKey {
        source: "shopify".into(),
        account: "shopify-main".into(),
        order_id: order_id.into(),
        sequence: 0,
    }
}

fn result(tracking_number: &str) -> BookingResult {
    let mut extracted = BTreeMap::new();
    extracted.insert(
        "slip".to_string(),
        serde_json::json!({"url": "https://example.test/slip.pdf"}),
    );
    BookingResult {
        tracking_number: tracking_number.into(),
        courier: "postex".into(),
        account: "courier-main".into(),
        extracted,
    }
}

async fn actions(store: &SqlStore, key: &BookingKey) -> Vec<String> {
    store
        .audit(key)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect()
}

async fn claim_answers_for_every_state(store: SqlStore) {
    let order = key("820982911946154508");
    let claim =
        |owner: &'static str| store.claim_booking(claim_of(&order, owner, HOUR, "msg-1", "#1001"));
    assert_eq!(claim("a").await.unwrap(), Reservation::Acquired);
    // While a's lease lasts its answer may still come: others wait.
    assert_eq!(
        claim("b").await.unwrap(),
        Reservation::Busy { owner: "a".into() }
    );
    // The owner itself meeting its sent key again means it lost the answer.
    assert_eq!(claim("a").await.unwrap(), Reservation::Sent);
    store
        .mark_booked(&order, &result("CN-1"), "msg-1")
        .await
        .unwrap();
    assert_eq!(
        claim("b").await.unwrap(),
        Reservation::Booked(result("CN-1"))
    );
    // A redelivered success is accepted; a different one is not.
    store
        .mark_booked(&order, &result("CN-1"), "msg-2")
        .await
        .unwrap();
    assert!(matches!(
        store.mark_booked(&order, &result("CN-2"), "msg-2").await,
        Err(StoreError::WrongState { .. })
    ));
    assert!(matches!(
        store.mark_review(&order, "late", "msg-2").await,
        Err(StoreError::WrongState { .. })
    ));

    let booking = store.booking(&order).await.unwrap().unwrap();
    assert_eq!(booking.key, order);
    assert_eq!(booking.status, BookingStatus::Booked);
    assert_eq!(booking.result, Some(result("CN-1")));
    assert_eq!(booking.message_id.as_deref(), Some("msg-1"));
    assert_eq!(booking.reference.as_deref(), Some("#1001"));
    assert_eq!(booking.owner, None);
    assert_eq!(actions(&store, &order).await, ["sent", "booked"]);
    let audit = store.audit(&order).await.unwrap();
    assert_eq!(audit[0].key, order.to_string());
    assert_eq!(audit[0].detail.as_deref(), Some("owner a"));
    assert_eq!(audit[1].message_id.as_deref(), Some("msg-1"));
    assert!(audit[1].detail.as_deref().unwrap().contains("CN-1"));

    let missing = key("missing");
    assert_eq!(store.booking(&missing).await.unwrap(), None);
    assert!(matches!(
        store.mark_booked(&missing, &result("X"), "m").await,
        Err(StoreError::NotFound(_))
    ));
    store.check().await.unwrap();
}

async fn a_lapsed_lease_on_a_sent_key_means_review_not_resend(store: SqlStore) {
    let order = key("1");
    assert_eq!(
        claim(&store, &order, "a", Duration::ZERO, "m1", "#1").await,
        Reservation::Acquired
    );
    // a died with its request out: nobody may send it again.
    assert_eq!(
        claim(&store, &order, "b", HOUR, "m2", "#1").await,
        Reservation::Sent
    );
    let booking = store.booking(&order).await.unwrap().unwrap();
    assert_eq!(booking.status, BookingStatus::Sent);
    assert_eq!(booking.owner.as_deref(), Some("a"));
}

/// Twenty owners claim `order` at once, taking turns at `stores`; their answers.
async fn race_claims(stores: &[SqlStore], order: &BookingKey) -> Vec<Reservation> {
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let order = order.clone();
            tokio::spawn(async move {
                store
                    .claim_booking(claim_of(&order, &format!("owner-{i}"), HOUR, "m", "#1"))
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for racer in racers {
        answers.push(racer.await.unwrap().unwrap());
    }
    answers
}

async fn concurrent_claims_acquire_once(store: SqlStore) {
    let order = key("race");
    let mut acquired = 0;
    for answer in race_claims(std::slice::from_ref(&store), &order).await {
        match answer {
            Reservation::Acquired => acquired += 1,
            Reservation::Busy { owner } => assert!(owner.starts_with("owner-")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acquired, 1);
    assert_eq!(actions(&store, &order).await, ["sent"]);
}

async fn review_is_resolved_booked_or_released(store: SqlStore) {
    let booked = key("booked-by-hand");
    claim(&store, &booked, "a", HOUR, "m", "#1").await;
    store
        .mark_review(&booked, "timeout after sending", "m")
        .await
        .unwrap();
    store.mark_review(&booked, "again", "m").await.unwrap();
    assert_eq!(
        claim(&store, &booked, "b", HOUR, "m", "#1").await,
        Reservation::Review("timeout after sending".into())
    );
    let expected = BookingResult {
        tracking_number: "CN-9".into(),
        courier: "postex".into(),
        account: "courier-main".into(),
        extracted: BTreeMap::new(),
    };
    store.resolve_booked(&booked, &expected).await.unwrap();
    assert_eq!(
        claim(&store, &booked, "b", HOUR, "m", "#1").await,
        Reservation::Booked(expected.clone())
    );
    assert!(matches!(
        store.resolve_booked(&booked, &expected).await,
        Err(StoreError::WrongState { .. })
    ));
    assert_eq!(
        actions(&store, &booked).await,
        ["sent", "review", "resolved_booked"]
    );

    let released = key("never-booked");
    claim(&store, &released, "a", HOUR, "m", "#2").await;
    assert!(matches!(
        store.resolve_release(&released).await,
        Err(StoreError::WrongState { .. })
    ));
    store
        .mark_review(&released, "courier down", "m")
        .await
        .unwrap();
    store.resolve_release(&released).await.unwrap();
    assert_eq!(store.booking(&released).await.unwrap(), None);
    assert_eq!(
        claim(&store, &released, "b", HOUR, "m2", "#2").await,
        Reservation::Acquired
    );
    assert_eq!(
        actions(&store, &released).await,
        ["sent", "review", "resolved_release", "sent"]
    );
    assert!(matches!(
        store.resolve_release(&key("nothing")).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_claim_can_be_given_back(store: SqlStore) {
    let order = key("2");
    claim(&store, &order, "a", HOUR, "m", "#2").await;
    // Refused by the courier (a retryable answer): only its owner gives it back.
    assert!(matches!(
        store.release_reservation(&order, "b").await,
        Err(StoreError::WrongState { .. })
    ));
    store.release_reservation(&order, "a").await.unwrap();
    assert_eq!(
        claim(&store, &order, "b", HOUR, "m", "#2").await,
        Reservation::Acquired
    );
    assert_eq!(actions(&store, &order).await, ["sent", "released", "sent"]);
}

async fn deliveries_are_deduplicated_and_expire(store: SqlStore) {
    assert!(!store.delivery_seen("shopify", "main", "d-1").await.unwrap());
    assert!(
        store
            .remember_delivery("shopify", "main", "d-1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_delivery("shopify", "main", "d-1")
            .await
            .unwrap()
    );
    assert!(store.delivery_seen("shopify", "main", "d-1").await.unwrap());
    assert!(
        !store
            .delivery_seen("shopify", "other", "d-1")
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_delivery("woocommerce", "main", "d-1")
            .await
            .unwrap()
    );
    assert_eq!(store.expire_deliveries(HOUR).await.unwrap(), 0);
    assert_eq!(store.expire_deliveries(Duration::ZERO).await.unwrap(), 2);
    assert!(!store.delivery_seen("shopify", "main", "d-1").await.unwrap());
}

async fn bookings_are_listed_by_status(store: SqlStore) {
    for order in ["a", "b", "c"] {
        store
            .claim_booking(claim_of(&key(order), "w", HOUR, "m", order))
            .await
            .unwrap();
    }
    store.mark_review(&key("b"), "why", "m").await.unwrap();
    let all = store.bookings(None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    let review = store
        .bookings(Some(BookingStatus::Review), 10)
        .await
        .unwrap();
    assert_eq!(
        review
            .iter()
            .map(|b| b.key.order_id.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(review[0].reason.as_deref(), Some("why"));
    assert_eq!(
        store
            .bookings(Some(BookingStatus::Sent), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .bookings(Some(BookingStatus::Booked), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_to_one_sqlite_file_acquire_once() {
    // Two stores on one file behave like two processes: separate writers.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let first = SqlStore::connect(&url).await.unwrap();
    let second = SqlStore::connect(&url).await.unwrap();
    let order = key("shared");
    let answers = race_claims(&[first, second], &order).await;
    let acquired = answers
        .iter()
        .filter(|answer| **answer == Reservation::Acquired)
        .count();
    assert_eq!(acquired, 1);
}

#[tokio::test]
async fn a_write_lock_held_elsewhere_is_waited_for_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.db");
    let store = SqlStore::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    // Another process (`waybill dlq replay`, say) holds the write lock.
    let other = rusqlite::Connection::open(&file).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let claim = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_booking(claim_of(
                    &key("1"),
                    "me",
                    Duration::from_secs(30),
                    "m1",
                    "#1",
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!claim.is_finished(), "the claim must wait for the lock");
    other.execute_batch("COMMIT").unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(10), claim)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.unwrap(), Reservation::Acquired);
    store
        .mark_booked(&key("1"), &result("CN1"), "m1")
        .await
        .unwrap();
    let actions: Vec<String> = store
        .audit(&key("1"))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(actions, ["sent", "booked"]);
    store.close().await;
}

#[tokio::test]
async fn an_in_memory_store_reads_what_it_wrote() {
    // Reads and writes use different pools: they must share one memory database.
    let store = SqlStore::connect("sqlite::memory:").await.unwrap();
    assert!(
        store
            .remember_delivery("shopify", "main", "d")
            .await
            .unwrap()
    );
    assert!(store.delivery_seen("shopify", "main", "d").await.unwrap());
}

#[tokio::test]
async fn unknown_url_schemes_are_rejected() {
    let error = SqlStore::connect("mysql://localhost/waybill")
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("mysql"), "{error}");
}

async fn an_orders_bookings_keep_their_shipment_and_the_change_noted(store: SqlStore) {
    let first = key("820982911946154508");
    let second = BookingKey {
        sequence: 1,
        ..first.clone()
    };
    for (key, shipment) in [
        (&second, r#"{"sequence":1}"#),
        (&first, r#"{"sequence":0}"#),
    ] {
        let claim = Claim {
            shipment,
            ..claim_of(key, "a", HOUR, "msg-1", "#1001")
        };
        assert_eq!(
            store.claim_booking(claim).await.unwrap(),
            Reservation::Acquired
        );
    }
    store
        .mark_booked(&first, &result("CN-1"), "msg-1")
        .await
        .unwrap();
    let bookings = store
        .order_bookings("shopify", "shopify-main", &first.order_id)
        .await
        .unwrap();
    let sequences: Vec<u32> = bookings.iter().map(|b| b.key.sequence).collect();
    assert_eq!(sequences, [0, 1]);
    assert_eq!(bookings[0].status, BookingStatus::Booked);
    assert!(
        store
            .order_bookings("shopify", "other", &first.order_id)
            .await
            .unwrap()
            .is_empty()
    );
    let kept = store.booked_shipment(&first).await.unwrap().unwrap();
    assert_eq!(kept.shipment.as_deref(), Some(r#"{"sequence":0}"#));
    assert_eq!((kept.change, kept.change_message_id), (None, None));
    store
        .note_change(&first, r#"{"sequence":0,"cancelled":true}"#, "msg-2")
        .await
        .unwrap();
    let noted = store.booked_shipment(&first).await.unwrap().unwrap();
    assert_eq!(
        noted.change.as_deref(),
        Some(r#"{"sequence":0,"cancelled":true}"#)
    );
    assert_eq!(noted.change_message_id.as_deref(), Some("msg-2"));
    assert_eq!(noted.shipment, kept.shipment);
    let unknown = key("1");
    assert_eq!(store.booked_shipment(&unknown).await.unwrap(), None);
    assert!(matches!(
        store.note_change(&unknown, "{}", "msg-3").await,
        Err(StoreError::NotFound(_))
    ));
}

/// A write-back row: one sender at a time, done once, and after an
/// ambiguous answer or a crash, claimed again only to be looked up first.
async fn write_backs_are_claimed_once_and_looked_up_after_doubt(store: SqlStore) {
    use crate::store::write_backs::{WriteBackClaim, WriteBackStore, WriteBackTicket};
    let key = key("820982911946154508");
    let ticket = |operation, owner, lease| WriteBackTicket {
        key: &key,
        operation,
        owner,
        lease,
    };
    let fresh = WriteBackClaim::Acquired { checked: true };
    let doubtful = WriteBackClaim::Acquired { checked: false };
    assert_eq!(
        store
            .claim_write_back(ticket("fulfillment", "a", HOUR))
            .await
            .unwrap(),
        fresh
    );
    // Another instance waits while the owner's answer may still come.
    assert_eq!(
        store
            .claim_write_back(ticket("fulfillment", "b", HOUR))
            .await
            .unwrap(),
        WriteBackClaim::Busy
    );
    // Other rows of the same shipment are free.
    assert_eq!(
        store
            .claim_write_back(ticket("event:in_transit", "b", HOUR))
            .await
            .unwrap(),
        fresh
    );
    // The store certainly did not act: the row is free again.
    store
        .release_write_back(&key, "event:in_transit", "b")
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_write_back(ticket("event:in_transit", "a", HOUR))
            .await
            .unwrap(),
        fresh
    );
    // An ambiguous answer ends the lease: the next claimer looks first.
    store
        .doubt_write_back(&key, "fulfillment", "a")
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_write_back(ticket("fulfillment", "b", HOUR))
            .await
            .unwrap(),
        doubtful
    );
    // The same owner again (one machine, restarted) looks first too.
    assert_eq!(
        store
            .claim_write_back(ticket("fulfillment", "b", HOUR))
            .await
            .unwrap(),
        doubtful
    );
    store
        .finish_write_back(&key, "fulfillment", Some("gid://shopify/Fulfillment/1"))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_write_back(ticket("fulfillment", "c", HOUR))
            .await
            .unwrap(),
        WriteBackClaim::Done(Some("gid://shopify/Fulfillment/1".into()))
    );
    assert_eq!(
        store
            .write_back_id(&key, "fulfillment")
            .await
            .unwrap()
            .as_deref(),
        Some("gid://shopify/Fulfillment/1")
    );
    // A lapsed lease of a dead owner is taken over, to be looked up first.
    assert_eq!(
        store
            .claim_write_back(ticket("event:delivered", "dead", Duration::ZERO))
            .await
            .unwrap(),
        fresh
    );
    assert_eq!(
        store
            .claim_write_back(ticket("event:delivered", "c", HOUR))
            .await
            .unwrap(),
        doubtful
    );
    // Releasing is the owner's only.
    store
        .release_write_back(&key, "event:delivered", "dead")
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_write_back(ticket("event:delivered", "d", HOUR))
            .await
            .unwrap(),
        WriteBackClaim::Busy
    );
}
