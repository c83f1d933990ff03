//! `waybill try` finds the store account feeding a pipeline and its source
//! from the account's connector, with no store named in the command.

use crate::common::*;

fn try_pipeline(config: &std::path::Path) -> (bool, serde_json::Value) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "try",
            "--pipeline",
            "shopify-orders",
            "--topic",
            "orders/create",
            "--input",
        ])
        .arg(repo().join("samples/shopify/order-cod.json"))
        .arg("--config")
        .arg(config)
        .output()
        .expect("run waybill try");
    let printed = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "try prints one JSON object ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), printed)
}

#[test]
fn try_takes_the_account_and_source_from_the_config() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    // A store connector and account named after nothing, and a pipeline
    // that names no input account: only the connector's `webhook.source`
    // says the account feeds `orders.shopify`.
    let shipped = std::fs::read_to_string(repo().join("connectors/shopify.yaml")).expect("read");
    std::fs::write(
        dir.dir.path().join("connectors/karachi-store.yaml"),
        shipped.replace("name: shopify", "name: karachi-store"),
    )
    .expect("write connector");
    dir.edit("waybill.yaml", |text| {
        text.replace(
            "shopify-main: { connector: shopify",
            "karachi-shop: { connector: karachi-store",
        )
    });
    for pipeline in ["shopify-orders", "shopify-tracking", "shopify-status"] {
        dir.edit(&format!("pipelines/{pipeline}.yaml"), |text| {
            text.replace(", accounts: [shopify-main]", "")
        });
    }
    let (ok, printed) = try_pipeline(&dir.path());
    assert!(ok, "{printed:#}");
    assert_eq!(printed["triggered"], true, "{printed:#}");
    assert_eq!(printed["errors"], serde_json::json!([]), "{printed:#}");
    let url = printed["request"]["url"].as_str().unwrap_or_default();
    assert!(url.ends_with("/sandbox/book"), "{printed:#}");
}
