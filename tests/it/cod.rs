//! The COD ledger end to end: a COD order booked with PostEx (a `wiremock`
//! courier) is tracked to delivered by polling and becomes `collected`,
//! PostEx's payment status makes it `remitted`, and `waybill cod report`
//! shows it as a table, CSV and JSON; on the sandbox, a returned parcel is
//! `not_collected`, a settlement sheet remits one parcel and finds another
//! short-paid (a malformed or wrong sheet records nothing), and
//! `waybill cod dispute` marks a third.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;
use waybill::model::{CodState, Message, TrackingEvent, Via, header, tracking};
use waybill::store::shipments::ShipmentRecord;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn postex_answer(dist: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "statusCode": "200",
        "statusMessage": "SUCCESSFULLY OPERATED",
        "dist": dist
    }))
}

async fn shipment_in(app: &App, order_id: &str, state: CodState) -> ShipmentRecord {
    eventually(
        Duration::from_secs(60),
        &format!("order {order_id} COD {}", state.as_str()),
        || async {
            all_shipments(app)
                .await?
                .into_iter()
                .find(|s| s.key.order_id == order_id && s.cod_state == state)
        },
    )
    .await
}

async fn payment_checks(courier: &MockServer) -> usize {
    courier
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().starts_with("/order/v1/payment-status/"))
        .count()
}

#[tokio::test]
async fn postex_delivery_collects_and_its_payment_status_remits() {
    let courier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/order/v3/create-order"))
        .respond_with(ResponseTemplate::new(200).set_body_json(postex_ok("CX-COD-1")))
        .mount(&courier)
        .await;
    Mock::given(method("GET"))
        .and(path("/order/v1/track-order/CX-COD-1"))
        .respond_with(postex_answer(
            json!({ "trackingNumber": "CX-COD-1", "transactionStatus": "Delivered" }),
        ))
        .mount(&courier)
        .await;
    let payment = || path("/order/v1/payment-status/CX-COD-1");
    Mock::given(method("GET"))
        .and(payment())
        .respond_with(postex_answer(json!({
            "orderRefNumber": "#1042", "trackingNumber": "CX-COD-1", "settle": false,
            "settlementDate": null, "cprNumber_1": "CPR-1001", "cprNumber_2": null
        })))
        .up_to_n_times(1)
        .mount(&courier)
        .await;
    Mock::given(method("GET"))
        .and(payment())
        .respond_with(postex_answer(json!({
            "orderRefNumber": "#1042", "trackingNumber": "CX-COD-1", "settle": true,
            "settlementDate": "2026-12-06 11:00:00", "upfrontPaymentDate": "2026-12-03 10:00:00",
            "cprNumber_1": "CPR-1001", "reservePaymentDate": "2026-12-06 11:00:00",
            "cprNumber_2": "CPR-1002"
        })))
        .mount(&courier)
        .await;
    let dir = ConfigDir::with_extra(
        &postex_at(&courier.uri()),
        "sync: { interval: 1s, max_interval: 2s, max_age: 1h }\ncod: { payment_interval: 1s }\n",
    );
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| o["id"] = json!(9_700_000_001u64));
    assert_eq!(app.shopify(&order, "orders/paid", "cod-1").await.0, 200);

    let collected = eventually(Duration::from_secs(60), "collected", || async {
        all_shipments(&app)
            .await?
            .into_iter()
            .find(|s| s.key.order_id == "9700000001" && s.cod_state != CodState::Pending)
    })
    .await;
    assert!(
        matches!(
            collected.cod_state,
            CodState::Collected | CodState::Remitted
        ),
        "{collected:?}"
    );
    assert!(collected.cod_collected_at.is_some());
    assert_eq!(collected.cod_amount.as_deref(), Some("5050.00"));

    let remitted = shipment_in(&app, "9700000001", CodState::Remitted).await;
    assert!(
        payment_checks(&courier).await >= 2,
        "unsettled, then settled"
    );
    assert_eq!(remitted.cod_remitted, None, "PostEx names no amount");
    assert_eq!(
        remitted.cod_remittance_ref.as_deref(),
        Some("CPR-1001 / CPR-1002")
    );
    assert_eq!(
        remitted.cod_remitted_at.as_deref(),
        Some("2026-12-06 11:00:00")
    );
    let metrics = eventually(Duration::from_secs(30), "the COD gauges", || async {
        let metrics = app.metrics().await;
        metrics
            .contains(
                "waybill_cod_amount{courier=\"postex\",currency=\"PKR\",state=\"remitted\"} 5050",
            )
            .then_some(metrics)
    })
    .await;
    assert!(
        metrics.contains("waybill_cod_reconciled_ratio{courier=\"postex\"} 0"),
        "remitted without an amount is not reconciled: {metrics}"
    );
    assert!(
        metrics.contains(
            "waybill_cod_remittances_total{courier=\"postex\",via=\"payment\",state=\"remitted\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "waybill_cod_payment_checks_total{courier=\"postex\",account=\"courier-main\",outcome=\"settled\"} 1"
        ),
        "{metrics}"
    );
    let checks = payment_checks(&courier).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        payment_checks(&courier).await,
        checks,
        "a remitted COD is not asked about"
    );
    app.stop().await;

    let key = remitted.key.to_string();
    let report: Value =
        serde_json::from_str(&waybill_cli(&dir, &["cod", "report", "--format", "json"]))
            .expect("json");
    assert_eq!(
        report["shipments"],
        json!([{
            "key": key, "reference": "#1042", "courier": "postex", "account": "courier-main",
            "tracking_number": "CX-COD-1", "state": "remitted", "currency": "PKR",
            "expected": "5050.00", "collected_at": remitted.cod_collected_at,
            "remitted": null, "remitted_at": "2026-12-06 11:00:00",
            "remittance_ref": "CPR-1001 / CPR-1002", "fees": null
        }])
    );
    assert_eq!(
        report["totals"],
        json!([{ "courier": "postex", "state": "remitted", "currency": "PKR", "count": 1,
                 "expected": "5050.00", "remitted": "0", "fees": "0" }])
    );
    let table = waybill_cli(&dir, &["cod", "report", "--courier", "postex"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with(&format!(
            "{key}\t#1042\tpostex\tcourier-main\tCX-COD-1\tremitted\tPKR\t5050.00\t"
        )),
        "{table}"
    );
    assert_eq!(lines[1], "total\tpostex\tremitted\tPKR\t1\t5050.00\t0\t0");
    let csv = waybill_cli(&dir, &["cod", "report", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "row,key,reference,courier,account,tracking_number,state,currency,expected,collected_at,\
         remitted,remitted_at,remittance_ref,fees,count"
    );
    assert!(
        lines[1].starts_with(&format!("shipment,{key},#1042,postex,")),
        "{csv}"
    );
    assert!(
        lines[1].ends_with(",,2026-12-06 11:00:00,CPR-1001 / CPR-1002,,"),
        "{csv}"
    );
    assert_eq!(lines[2], "total,,,postex,,,remitted,PKR,5050.00,,0,,,0,1");
    let other_courier = waybill_cli(&dir, &["cod", "report", "--courier", "sandbox"]);
    assert_eq!(other_courier, "");
    let later = waybill_cli(&dir, &["cod", "report", "--from", "2999-01-01"]);
    assert_eq!(later, "");

    // PostEx's settlement sheet names the amounts the payment status did
    // not: 4900.00 paid where 5050.00 less 118.00 of fees was owed.
    let sheet = dir.dir.path().join("postex-sheet.csv");
    std::fs::write(
        &sheet,
        "Tracking Number,Balance Payment,Settlement Date,CPR Number,Transaction Fee,Transaction Tax
         CX-COD-1,4900.00,2026-12-06,,100.00,18.00
",
    )
    .expect("write");
    let printed = waybill_cli(
        &dir,
        &[
            "cod",
            "import",
            "--courier",
            "postex",
            sheet.to_str().expect("path"),
        ],
    );
    assert!(printed.contains("remitted -> short_paid"), "{printed}");
    let report: Value =
        serde_json::from_str(&waybill_cli(&dir, &["cod", "report", "--format", "json"]))
            .expect("json");
    let row = &report["shipments"][0];
    assert_eq!(
        [
            &row["state"],
            &row["remitted"],
            &row["fees"],
            &row["remittance_ref"]
        ],
        [
            &json!("short_paid"),
            &json!("4900.00"),
            &json!("118.00"),
            &json!("CPR-1001 / CPR-1002")
        ]
    );
}

/// Publishes a status event for `shipment` as a callback would.
async fn publish(app: &App, shipment: &ShipmentRecord, id: &str, raw: &str) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let event = TrackingEvent {
        connector: shipment.courier.clone(),
        account: shipment.courier_account.clone(),
        tracking_number: shipment.tracking_number.clone(),
        raw_status: raw.to_string(),
        code: None,
        event_time: Some(now.clone()),
        reason: None,
        via: Via::Callback,
        received_at: now,
    };
    let mut headers = waybill::model::Headers::new();
    headers.insert(header::ID.into(), id.to_string());
    let message = Message {
        key: tracking::tracking_key(&event.account, &event.tracking_number),
        headers,
        payload: serde_json::to_vec(&event).expect("json"),
    };
    app.backends
        .bus
        .publish(&tracking::tracking_topic(&event.connector), message)
        .await
        .expect("publish");
}

/// Runs `waybill ARGS --config <the tree>`: exit code, stdout, stderr.
fn cli(dir: &ConfigDir, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .arg("--config")
        .arg(dir.path())
        .output()
        .expect("run waybill");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn returns_settlement_sheets_short_payments_and_disputes() {
    // Parcels stay where the events put them: the sandbox moves none for an hour.
    let dir = ConfigDir::with_extra(
        "{ connector: sandbox, settings: { step: 1h } }",
        "cod: { tolerance: \"1.00\", payment_interval: 1h }\n",
    );
    let app = App::start(&dir).await;
    let mut shipments = Vec::new();
    for id in 1..=4u64 {
        let order_id = 9_700_000_100 + id;
        let order = order_with("order-cod.json", |o| {
            o["id"] = json!(order_id);
            o["name"] = json!(format!("#C{id}"));
        });
        let delivery = format!("cod-sheet-{id}");
        assert_eq!(app.shopify(&order, "orders/paid", &delivery).await.0, 200);
        shipments.push(shipment_in(&app, &order_id.to_string(), CodState::Pending).await);
    }
    for (n, shipment) in shipments.iter().enumerate() {
        publish(&app, shipment, &format!("sheet-{n}-a"), "in transit").await;
        let last = if n == 3 { "returned" } else { "delivered" };
        publish(&app, shipment, &format!("sheet-{n}-b"), last).await;
    }
    for shipment in &shipments[..3] {
        shipment_in(&app, &shipment.key.order_id, CodState::Collected).await;
    }
    let returned = shipment_in(&app, &shipments[3].key.order_id, CodState::NotCollected).await;
    assert_eq!(returned.cod_collected_at, None);
    app.stop().await;

    let header = "Tracking Number,Amount Paid,Paid On,Payment Ref,Fee\n";
    let [a, b, _, d] = [0, 1, 2, 3].map(|i| shipments[i].tracking_number.clone());
    let sheet = dir.dir.path().join("sheet.csv");
    let state_of = |n: usize| {
        let report: Value =
            serde_json::from_str(&waybill_cli(&dir, &["cod", "report", "--format", "json"]))
                .expect("json");
        report["shipments"][n]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let sheet_arg = sheet.to_str().expect("path");

    // A malformed line: nothing recorded, the line named.
    std::fs::write(
        &sheet,
        format!("{header}{a},4949.00,2026-12-05,PAY-1,101.00\n{b},4000\n"),
    )
    .expect("write");
    let (code, _, stderr) = cli(&dir, &["cod", "import", "--courier", "sandbox", sheet_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("sheet.csv:3: 2 fields where the header has 5"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was recorded"), "{stderr}");
    // A returned parcel is owed nothing, and an unknown tracking number is
    // no shipment: still nothing recorded, even for the good line.
    std::fs::write(
        &sheet,
        format!("{header}{a},4949.00,2026-12-05,PAY-1,101.00\n{d},5050.00,2026-12-05,PAY-4,0\nSBX-NOPE,1,,,\n"),
    )
    .expect("write");
    let (code, _, stderr) = cli(&dir, &["cod", "import", "--courier", "sandbox", sheet_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "sheet.csv:4: no shipment of courier `sandbox` has tracking number `SBX-NOPE`"
        ),
        "{stderr}"
    );
    std::fs::write(
        &sheet,
        format!("{header}{a},4949.00,2026-12-05,PAY-1,101.00\n{d},5050.00,2026-12-05,PAY-4,0\n"),
    )
    .expect("write");
    let (code, _, stderr) = cli(&dir, &["cod", "import", "--courier", "sandbox", sheet_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("sheet.csv:3:") && stderr.contains("not_collected"),
        "{stderr}"
    );
    assert_eq!(
        state_of(0),
        "collected",
        "nothing of a refused sheet is recorded"
    );

    // The good sheet: one matched (fees declared), one short.
    std::fs::write(
        &sheet,
        format!(
            "{header}{a},\"4,949.00\",2026-12-05,PAY-1,101.00\n{b},4000.00,2026-12-05,PAY-2,50\n"
        ),
    )
    .expect("write");
    let printed = waybill_cli(&dir, &["cod", "import", "--courier", "sandbox", sheet_arg]);
    assert!(
        printed.contains("collected -> remitted (matched)"),
        "{printed}"
    );
    assert!(printed.contains("collected -> short_paid"), "{printed}");
    assert!(printed.contains("imported 2 rows"), "{printed}");
    // The same sheet again changes nothing.
    let again = waybill_cli(&dir, &["cod", "import", "--courier", "sandbox", sheet_arg]);
    assert!(again.contains("remitted already, unchanged"), "{again}");

    let key = shipments[2].key.to_string();
    let disputed = waybill_cli(
        &dir,
        &[
            "cod",
            "dispute",
            &key,
            "--reason",
            "customer says paid twice",
        ],
    );
    assert_eq!(disputed.trim(), format!("disputed {key} (was collected)"));
    let (code, _, stderr) = cli(
        &dir,
        &[
            "cod",
            "dispute",
            "shopify:shopify-main:1:1",
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, 2, "an error");
    assert!(stderr.contains("no shipment has booking key"), "{stderr}");

    let report: Value =
        serde_json::from_str(&waybill_cli(&dir, &["cod", "report", "--format", "json"]))
            .expect("json");
    let states: Vec<&str> = report["shipments"]
        .as_array()
        .expect("shipments")
        .iter()
        .map(|s| s["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        states,
        ["remitted", "short_paid", "disputed", "not_collected"]
    );
    assert_eq!(report["shipments"][0]["remitted"], "4949.00");
    assert_eq!(report["shipments"][0]["fees"], "101.00");
    assert_eq!(report["shipments"][0]["remittance_ref"], "PAY-1");
    assert_eq!(report["shipments"][1]["remitted"], "4000.00");
    let totals = report["totals"].as_array().expect("totals");
    assert_eq!(totals.len(), 4, "{totals:?}");
    assert!(
        totals.contains(
            &json!({ "courier": "sandbox", "state": "short_paid", "currency": "PKR",
        "count": 1, "expected": "5050.00", "remitted": "4000.00", "fees": "50" })
        ),
        "{totals:?}"
    );
}

/// The quick start's loop: the sandbox delivers a COD parcel by itself,
/// then its payment operation pays it less its fee, and the remittance
/// matches.
#[tokio::test]
async fn the_sandbox_delivers_and_pays_by_itself() {
    let dir = ConfigDir::with_extra(
        "{ connector: sandbox, settings: { step: 200ms } }",
        "cod: { payment_interval: 1s }\n",
    );
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| o["id"] = json!(9_700_000_201u64));
    assert_eq!(
        app.shopify(&order, "orders/paid", "cod-sandbox").await.0,
        200
    );
    let paid = shipment_in(&app, "9700000201", CodState::Remitted).await;
    assert_eq!(paid.status.as_str(), "delivered");
    assert_eq!(
        paid.cod_remitted.as_deref(),
        Some("4949.00"),
        "5050.00 less 2%"
    );
    assert_eq!(paid.cod_fees.as_deref(), Some("101.00"));
    assert!(
        paid.cod_remittance_ref
            .as_deref()
            .is_some_and(|r| r.starts_with("SBXPAY-")),
        "{paid:?}"
    );
    let metrics = eventually(Duration::from_secs(30), "the ratio", || async {
        let metrics = app.metrics().await;
        metrics
            .contains("waybill_cod_reconciled_ratio{courier=\"sandbox\"} 1")
            .then_some(metrics)
    })
    .await;
    assert!(
        metrics.contains(
            "waybill_cod_amount{courier=\"sandbox\",currency=\"PKR\",state=\"remitted\"} 5050"
        ),
        "{metrics}"
    );
    app.stop().await;
}
