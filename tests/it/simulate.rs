//! `waybill simulate` posts from a store connector's `webhook:` rules alone:
//! a store that exists only in this test's connector YAML, with header names
//! of its own, is signed, posted, accepted and enqueued; a wrong secret is
//! refused. The README's `simulate shopify …` line still books.

use crate::common::*;
use std::time::Duration;
use waybill::cli::simulate::{self, SimulateArgs};
use waybill::store::BookingStatus;

const ACME_SECRET: &str = "acme-signing-key";

/// A store connector no Rust knows about: hex signatures in its own headers.
const ACME: &str = "\
name: acme
kind: store
description: \"A made-up store that signs with hex HMACs\"
credentials:
  signing_key: { type: string, secret: true, required: true, description: \"Shared signing key\" }
webhook:
  source: acme
  signature: { header: X-Acme-Signature, algorithm: hmac-sha256, encoding: hex, secret: signing_key }
  topic_header: X-Acme-Event
  delivery_id_header: X-Acme-Delivery
  order_id: \"$.order.number\"
";

/// A pipeline that consumes acme's orders, so the account is not refused as
/// consumed by nothing; its trigger holds every order back, since no mapping
/// for acme exists.
const ACME_PIPELINE: &str = "\
name: acme-orders
input: { topic: orders.acme, accounts: [acme-main] }
steps:
  - trigger: \"false\"
dead_letter: { topic: dlq.acme-orders }
";

/// Adds the acme connector, a pipeline for it and an `acme-main` account
/// whose signing key is [`ACME_SECRET`] to the tree.
fn with_acme(dir: &ConfigDir) -> std::path::PathBuf {
    std::fs::write(dir.dir.path().join("connectors/acme.yaml"), ACME).expect("connector");
    std::fs::write(
        dir.dir.path().join("pipelines/acme-orders.yaml"),
        ACME_PIPELINE,
    )
    .expect("pipeline");
    let text = std::fs::read_to_string(dir.path()).expect("config");
    let account = format!(
        "accounts:\n  acme-main: {{ connector: acme, credentials: {{ signing_key: \"{ACME_SECRET}\" }} }}\n"
    );
    std::fs::write(dir.path(), text.replacen("accounts:\n", &account, 1)).expect("write config");
    dir.path()
}

fn args(
    app: &App,
    source: &str,
    account: &str,
    file: std::path::PathBuf,
    topic: &str,
) -> SimulateArgs {
    SimulateArgs {
        source: source.into(),
        account: account.into(),
        file,
        topic: Some(topic.into()),
        url: Some(app.url("")),
    }
}

#[tokio::test]
async fn simulate_signs_for_a_store_declared_only_in_yaml() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let config = with_acme(&dir);
    let app = App::start(&dir).await;
    let order = dir.dir.path().join("acme-order.json");
    std::fs::write(&order, br#"{"order": {"number": 4417, "total": "12.50"}}"#).expect("order");

    let code = simulate::run(
        &config,
        args(&app, "acme", "acme-main", order.clone(), "order.created"),
    )
    .await
    .expect("simulate runs");
    assert_eq!(code, 0, "the signed delivery is accepted");
    let enqueued = eventually(
        Duration::from_secs(10),
        "the acme event on the bus",
        || async {
            let read = app.backends.bus.read("orders.acme", 0, 10).await.ok()?;
            (!read.is_empty()).then_some(read)
        },
    )
    .await;
    assert_eq!(enqueued.len(), 1);
    let message = &enqueued[0].message;
    assert_eq!(message.key, "acme-main:4417");
    assert_eq!(message.headers["waybill-source"], "acme");
    assert_eq!(message.headers["waybill-account"], "acme-main");
    assert_eq!(message.headers["waybill-topic"], "order.created");
    assert_eq!(message.payload, std::fs::read(&order).expect("order"));

    // Signed with another key, the same delivery is refused and not enqueued.
    let wrong = dir.dir.path().join("waybill-wrong.yaml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&wrong, text.replace(ACME_SECRET, "not-the-key")).expect("write config");
    let code = simulate::run(
        &wrong,
        args(&app, "acme", "acme-main", order.clone(), "order.created"),
    )
    .await
    .expect("simulate runs");
    assert_eq!(code, 1, "a wrongly signed delivery is refused");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "waybill_webhooks_received_total{source=\"acme\",account=\"acme-main\",outcome=\"unauthorized\"} 1"
        ),
        "{metrics}"
    );
    let read = app
        .backends
        .bus
        .read("orders.acme", 0, 10)
        .await
        .expect("read");
    assert_eq!(read.len(), 1, "nothing more was enqueued");

    // A source the account's connector does not receive is not posted at all.
    let err = simulate::run(
        &config,
        args(&app, "shopify", "acme-main", order, "order.created"),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not receive `shopify` webhooks"),
        "{err}"
    );

    // Without --topic the connector's sample topic is sent; acme declares none.
    let mut untitled = args(&app, "acme", "acme-main", order_path(&dir), "unused");
    untitled.topic = None;
    let err = simulate::run(&config, untitled).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("declares no `webhook.sample_topic`: name the event with --topic"),
        "{err}"
    );
    app.stop().await;
}

fn order_path(dir: &ConfigDir) -> std::path::PathBuf {
    dir.dir.path().join("acme-order.json")
}

#[tokio::test]
async fn the_readme_simulate_line_books_a_shopify_order() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let output = tokio::task::spawn_blocking({
        let config = dir.path();
        let url = app.url("");
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
                .args(["simulate", "shopify", "--account", "shopify-main", "--file"])
                .arg(repo().join("samples/shopify/order-cod.json"))
                .arg("--url")
                .arg(url)
                .arg("--config")
                .arg(config)
                .output()
                .expect("run waybill simulate")
        }
    })
    .await
    .expect("simulate task");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(Duration::from_secs(20), "a booked booking", || async {
        let booked = app
            .backends
            .store
            .bookings(Some(BookingStatus::Booked), 10)
            .await
            .ok()?;
        (!booked.is_empty()).then_some(())
    })
    .await;
    app.stop().await;
}
