//! The COD ledger on both backends: status writes move the COD state in
//! the same transaction (the courier's and the forced ones), remittances
//! are judged and all-or-nothing, disputes and the report's listing.

use super::SqlStore;
use super::tests::{on_postgres, on_sqlite};
use crate::model::cod::{Judgement, Remittance};
use crate::model::{BookingKey, CodState, Status, Via};
use crate::store::cod::{CodFilter, RemitOutcome};
use crate::store::shipments::{NewShipment, StatusEvent};
use crate::store::{ShipmentStore, Store};
use rust_decimal::Decimal;
use std::str::FromStr;

fn new(order_id: &str, cod: Option<&str>) -> NewShipment {
    NewShipment {
        key: BookingKey {
            source: "shopify".into(),
            account: "shopify-main".into(),
            order_id: order_id.into(),
            sequence: 1,
        },
        order_key: format!("shopify-main:{order_id}"),
        reference: Some(format!("#{order_id}")),
        courier: "postex".into(),
        courier_account: "courier-main".into(),
        tracking_number: format!("CX-{order_id}"),
        booked_at: "2026-12-01T08:00:00.000000Z".into(),
        next_poll_at: None,
        cod_amount: cod.map(str::to_string),
        cod_currency: cod.map(|_| "PKR".to_string()),
        event_id: format!("booked-{order_id}"),
    }
}

fn event(order_id: &str, id: &str, status: Status, at: &str) -> StatusEvent {
    StatusEvent {
        event_id: id.into(),
        courier_account: "courier-main".into(),
        tracking_number: format!("CX-{order_id}"),
        raw: status.as_str().into(),
        code: None,
        status,
        sub_status: None,
        reason: None,
        event_time: Some(at.into()),
        received_at: at.into(),
        via: Via::Poll,
    }
}

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

async fn state(store: &SqlStore, order_id: &str) -> crate::store::shipments::ShipmentRecord {
    store
        .shipment_by_tracking("courier-main", &format!("CX-{order_id}"))
        .await
        .unwrap()
        .unwrap()
}

async fn ledger(store: SqlStore) {
    let tolerance = d("1.00");
    for (id, cod) in [
        ("1", Some("1500.00")),
        ("2", None),
        ("3", Some("0")),
        ("4", Some("900.50")),
        ("5", Some("100")),
    ] {
        assert!(store.create_shipment(&new(id, cod)).await.unwrap());
    }
    assert_eq!(state(&store, "1").await.cod_state, CodState::Pending);
    assert_eq!(state(&store, "2").await.cod_state, CodState::NotApplicable);
    assert_eq!(state(&store, "3").await.cod_state, CodState::NotApplicable);

    // Delivery collects, at the event's time; a prepaid parcel stays out of it.
    let at = "2026-12-02T10:00:00.000000Z";
    store
        .apply_status(&event("1", "e1", Status::Delivered, at))
        .await
        .unwrap();
    store
        .apply_status(&event("2", "e2", Status::Delivered, at))
        .await
        .unwrap();
    let one = state(&store, "1").await;
    assert_eq!(one.cod_state, CodState::Collected);
    assert_eq!(one.cod_collected_at.as_deref(), Some(at));
    assert_eq!(state(&store, "2").await.cod_state, CodState::NotApplicable);

    // A return through the courier, a cancellation through the forced path.
    store
        .apply_status(&event(
            "4",
            "e4a",
            Status::InTransit,
            "2026-12-01T10:00:00.000000Z",
        ))
        .await
        .unwrap();
    store
        .apply_status(&event("4", "e4", Status::Returned, at))
        .await
        .unwrap();
    assert_eq!(state(&store, "4").await.cod_state, CodState::NotCollected);
    store
        .correct_shipment(
            &state(&store, "5").await.key,
            Status::Cancelled,
            "cancelled by the store",
        )
        .await
        .unwrap();
    assert_eq!(state(&store, "5").await.cod_state, CodState::NotCollected);

    // Not-collected and prepaid shipments refuse a remittance, and then
    // nothing of the batch is recorded.
    let key1 = one.key.clone();
    let paid = |amount: &str, fees: Option<&str>, reference: &str| Remittance {
        amount: Some(d(amount)),
        at: Some("2026-12-05".into()),
        reference: Some(reference.into()),
        fees: fees.map(d),
    };
    let batch = [
        (key1.clone(), paid("1300.00", Some("150.00"), "CPR-1")),
        (state(&store, "4").await.key, paid("900.50", None, "CPR-4")),
    ];
    let outcomes = store
        .record_remittances(&batch, tolerance, "import")
        .await
        .unwrap();
    assert!(matches!(outcomes[0], RemitOutcome::Recorded { .. }));
    assert!(outcomes[1].is_refused(), "{outcomes:?}");
    assert_eq!(
        state(&store, "1").await.cod_state,
        CodState::Collected,
        "rolled back"
    );

    // Short of expected less fees beyond the tolerance.
    let outcomes = store
        .record_remittances(&batch[..1], tolerance, "import")
        .await
        .unwrap();
    assert!(
        matches!(
            outcomes[0],
            RemitOutcome::Recorded {
                from: CodState::Collected,
                to: CodState::ShortPaid,
                judgement: Judgement::Short,
                ..
            }
        ),
        "{outcomes:?}"
    );
    let one = state(&store, "1").await;
    assert_eq!(
        (one.cod_remitted.as_deref(), one.cod_fees.as_deref()),
        (Some("1300.00"), Some("150.00"))
    );
    // A corrected sheet tops it up to a match.
    let outcomes = store
        .record_remittances(
            &[(key1.clone(), paid("1349.50", Some("150.00"), "CPR-1b"))],
            tolerance,
            "import",
        )
        .await
        .unwrap();
    assert!(matches!(
        outcomes[0],
        RemitOutcome::Recorded {
            to: CodState::Remitted,
            judgement: Judgement::Matched,
            ..
        }
    ));
    // The same again changes nothing; a different one is refused.
    let again = store
        .record_remittances(
            &[(key1.clone(), paid("1349.50", Some("150.00"), "CPR-1b"))],
            tolerance,
            "import",
        )
        .await
        .unwrap();
    assert!(
        matches!(
            again[0],
            RemitOutcome::Already {
                state: CodState::Remitted,
                ..
            }
        ),
        "{again:?}"
    );
    let other = store
        .record_remittances(
            &[(key1.clone(), paid("1.00", None, "X"))],
            tolerance,
            "import",
        )
        .await
        .unwrap();
    assert!(other[0].is_refused());
    let actions: Vec<String> = store
        .audit(&key1)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["cod_short_paid", "cod_remitted"]);

    // A remittance without an amount (a payment status) is checked by a
    // sheet that names one, keeping what the first one said where the
    // sheet says nothing.
    store
        .create_shipment(&new("6", Some("600.00")))
        .await
        .unwrap();
    store
        .apply_status(&event("6", "e6", Status::Delivered, at))
        .await
        .unwrap();
    let key6 = state(&store, "6").await.key;
    let settled = Remittance {
        at: Some("2026-12-06".into()),
        reference: Some("CPR-6".into()),
        ..Remittance::default()
    };
    let outcomes = store
        .record_remittances(&[(key6.clone(), settled)], tolerance, "payment")
        .await
        .unwrap();
    assert!(matches!(
        outcomes[0],
        RemitOutcome::Recorded {
            to: CodState::Remitted,
            judgement: Judgement::Unchecked,
            ..
        }
    ));
    let sheet = Remittance {
        amount: Some(d("550.00")),
        fees: Some(d("10.00")),
        ..Remittance::default()
    };
    let outcomes = store
        .record_remittances(&[(key6.clone(), sheet)], tolerance, "import")
        .await
        .unwrap();
    assert!(
        matches!(
            outcomes[0],
            RemitOutcome::Recorded {
                from: CodState::Remitted,
                to: CodState::ShortPaid,
                ..
            }
        ),
        "{outcomes:?}"
    );
    let six = state(&store, "6").await;
    assert_eq!(
        (
            six.cod_remitted_at.as_deref(),
            six.cod_remittance_ref.as_deref()
        ),
        (Some("2026-12-06"), Some("CPR-6"))
    );

    // Disputes.
    assert_eq!(
        store
            .dispute_cod(&key1, "the sheet shows two receipts")
            .await
            .unwrap(),
        Some(CodState::Remitted)
    );
    let one = state(&store, "1").await;
    assert_eq!(one.cod_state, CodState::Disputed);
    assert_eq!(
        one.cod_note.as_deref(),
        Some("the sheet shows two receipts")
    );
    let prepaid = state(&store, "2").await.key;
    assert_eq!(
        store.dispute_cod(&prepaid, "x").await.unwrap(),
        Some(CodState::NotApplicable)
    );
    assert_eq!(state(&store, "2").await.cod_state, CodState::NotApplicable);

    // The report's listing and the gauges.
    let listed = store.cod_shipments(&CodFilter::default()).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|s| s.key.order_id.as_str()).collect();
    assert_eq!(keys, ["1", "4", "5", "6"]);
    let none = CodFilter {
        from: Some("2026-12-02T00:00:00Z".into()),
        ..CodFilter::default()
    };
    assert!(store.cod_shipments(&none).await.unwrap().is_empty());
    let postex = CodFilter {
        courier: Some("postex".into()),
        to: Some("2026-12-02T00:00:00Z".into()),
        ..CodFilter::default()
    };
    assert_eq!(store.cod_shipments(&postex).await.unwrap().len(), 4);
    let gauges = store.cod_gauges().await.unwrap();
    assert!(
        gauges
            .amounts
            .contains(&("postex".into(), "PKR".into(), CodState::Disputed, 1500.0)),
        "{gauges:?}"
    );
    assert!(
        gauges.amounts.contains(&(
            "postex".into(),
            "PKR".into(),
            CodState::NotCollected,
            1000.5
        )),
        "{gauges:?}"
    );
    assert_eq!(gauges.reconciled, [("postex".to_string(), 2, 0)]);
}

/// A collected shipment is first asked about once collected long enough,
/// then not again until its next check.
async fn payment_checks_are_leased(store: SqlStore) {
    store.create_shipment(&new("7", Some("700"))).await.unwrap();
    store
        .apply_status(&event(
            "7",
            "e7",
            Status::Delivered,
            "2026-12-02T10:00:00.000000Z",
        ))
        .await
        .unwrap();
    let lease = |now: &'static str, before: &'static str| crate::store::cod::PaymentLease {
        now,
        collected_before: before,
        next_check_at: "2026-12-03T00:00:00.000000Z",
        limit: 10,
    };
    let early = store
        .lease_payment_checks(lease(
            "2026-12-02T11:00:00.000000Z",
            "2026-12-02T05:00:00.000000Z",
        ))
        .await
        .unwrap();
    assert!(early.is_empty());
    let due = store
        .lease_payment_checks(lease(
            "2026-12-02T17:00:00.000000Z",
            "2026-12-02T11:00:00.000000Z",
        ))
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    let leased = store
        .lease_payment_checks(lease(
            "2026-12-02T18:00:00.000000Z",
            "2026-12-02T12:00:00.000000Z",
        ))
        .await
        .unwrap();
    assert!(leased.is_empty(), "checked again only at its next check");
    let next = store
        .lease_payment_checks(lease(
            "2026-12-03T00:00:00.000000Z",
            "2026-12-02T18:00:00.000000Z",
        ))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_on_sqlite() {
    on_sqlite(ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_on_postgres() {
    on_postgres(ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_checks_on_sqlite() {
    on_sqlite(payment_checks_are_leased).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_checks_on_postgres() {
    on_postgres(payment_checks_are_leased).await;
}
