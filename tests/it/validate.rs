//! `waybill validate` on the shipped config and on a config with mistakes.

use crate::common::*;
use std::process::Command;

fn validate(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .arg("validate")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run waybill");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn shipped_config_is_clean() {
    let (code, out) = validate(&repo().join("waybill.yaml"));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn three_mistakes_three_located_errors() {
    let dir = ConfigDir::with_extra("{ connector: sandbox }", "colour: blue\n");
    // A store account without its required secret, and a route to nowhere.
    dir.edit("waybill.yaml", |t| {
        t.replace(
            &format!("credentials: {{ webhook_secret: \"{SECRET}\" }}"),
            "credentials: {}",
        )
    });
    dir.edit("pipelines/shopify-orders.yaml", |t| {
        t.replacen("to: courier-main", "to: courier-mian", 1)
    });
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let located = |file: &str, what: &str| {
        lines.iter().any(|l| {
            let mut parts = l.splitn(4, ':');
            let (f, line, col) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            f.ends_with(file)
                && line.parse::<usize>().is_ok_and(|n| n > 0)
                && col.parse::<usize>().is_ok()
                && l.contains(what)
        })
    };
    assert!(located("waybill.yaml", "colour"), "{out}");
    assert!(located("waybill.yaml", "webhook_secret"), "{out}");
    assert!(located("shopify-orders.yaml", "courier-mian"), "{out}");
}

#[test]
fn docker_config_is_clean_in_the_image_layout() {
    // The image lays the config out as /app/{waybill.yaml,pipelines,mappings,connectors}.
    let dir = ConfigDir::new("{ connector: sandbox }");
    std::fs::copy(repo().join("docker/waybill.yaml"), dir.path()).expect("copy");
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_admin_token_is_an_unknown_key() {
    // Nothing serves an admin API yet, so a token for it would guard nothing.
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("waybill.yaml", |t| {
        t.replace(
            "http: { listen: \"127.0.0.1:0\" }",
            "http: { listen: \"127.0.0.1:0\", admin_token: \"secret\" }",
        )
    });
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("waybill.yaml:") && l.contains("unknown key `admin_token`")),
        "{out}"
    );
}

#[test]
fn a_misspelt_input_topic_is_located_with_a_suggestion() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("pipelines/shopify-orders.yaml", |t| {
        t.replacen("topic: orders.shopify", "topic: orders.shopfy", 1)
    });
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("shopify-orders.yaml:"), "{out}");
    assert!(
        lines[0].contains("no source or pipeline produces `orders.shopfy`")
            && lines[0].contains("did you mean `orders.shopify`"),
        "{out}"
    );
}

#[test]
fn a_missing_body_mapping_is_reported_at_the_connector_line_naming_it() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("connectors/sandbox.yaml", |t| {
        t.replace("mappings/sandbox/book.yaml", "mappings/sandbox/bok.yaml")
    });
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 1, "{out}");
    let sandbox =
        std::fs::read_to_string(dir.path().parent().unwrap().join("connectors/sandbox.yaml"))
            .expect("read");
    let body_line = sandbox
        .lines()
        .position(|l| l.contains("bok.yaml"))
        .map(|i| i + 1)
        .expect("body line");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("sandbox.yaml:{body_line}:"))
                && l.contains("mappings/sandbox/bok.yaml")
                && l.contains("not found")),
        "{out}"
    );
    assert!(!out.contains(":0:0:"), "{out}");
}

#[test]
fn a_connector_mistake_is_reported_at_its_key() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("connectors/sandbox.yaml", |t| {
        t.replace("operations:", "webhook: { source: sandbox }\noperations:")
    });
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("sandbox.yaml:") && l.contains("couriers use `callback`")),
        "{out}"
    );
    assert!(!out.contains("sandbox.yaml:1:1:"), "{out}");
}

#[test]
fn a_pattern_matching_nothing_and_an_unconsumed_store_account_are_located() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("waybill.yaml", |t| {
        t.replace("\"pipelines/*.yaml\"", "\"pipelnes/*.yaml\"")
    });
    let (code, out) = validate(&dir.path());
    assert_eq!(code, 1, "{out}");
    let text = std::fs::read_to_string(dir.path()).expect("read");
    let line_of = |what: &str| {
        text.lines()
            .position(|l| l.contains(what))
            .map(|i| i + 1)
            .expect("line")
    };
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    let at = |line: usize, what: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("waybill.yaml:{line}:")) && l.contains(what))
    };
    assert!(
        at(
            line_of("shopify-main:"),
            "store account `shopify-main` is consumed by no pipeline"
        ),
        "{out}"
    );
    assert!(
        at(
            line_of("pipelnes"),
            "no pipeline file matches `pipelnes/*.yaml`"
        ),
        "{out}"
    );
}

#[test]
fn a_substituted_value_is_shown_as_written_never_expanded() {
    const WRITTEN_SECRET: &str = "ZQX-shopsecret-91a7c3";
    let dir = ConfigDir::new("{ connector: \"${WB_COURIER}\" }");
    dir.edit("waybill.yaml", |t| {
        t.replace(
            "http: { listen: \"127.0.0.1:0\" }",
            "http: { listen: \"127.0.0.1:0\", max_body_bytes: \"${WB_SECRET}\", body_read_timeout: \"${WB_SECRET}\" }",
        )
        .replace(
            &format!("webhook_secret: \"{SECRET}\""),
            "webhook_secret: \"${WB_SECRET}\"",
        )
    });
    dir.edit("pipelines/shopify-orders.yaml", |t| {
        t.replace("rules: [phone,", "rules: [\"${WB_SECRET}\",")
            .replace("max_in_flight: 64", "max_in_flight: \"${WB_SECRET}\"")
    });
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .arg("validate")
        .arg("--config")
        .arg(dir.path())
        .env("WB_SECRET", WRITTEN_SECRET)
        .env("WB_COURIER", format!("courier-{WRITTEN_SECRET}"))
        .output()
        .expect("run waybill");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("shopsecret"), "{text}");
    let shown = |what: &str| {
        text.lines()
            .any(|l| l.contains(what) && l.contains("`${WB_SECRET}`"))
    };
    assert!(shown("waybill.yaml:"), "{text}");
    assert!(shown("shopify-orders.yaml:"), "{text}");
    assert!(text.contains("unknown connector `${WB_COURIER}`"), "{text}");
    let lines = text.lines().filter(|l| l.contains("${WB_SECRET}")).count();
    assert!(lines >= 4, "{text}");
}
