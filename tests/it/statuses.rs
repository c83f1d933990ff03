//! The shipped couriers' status tables against every raw status string
//! found for them (courier-domain.md §3.4), as written and in the case and
//! spacing variants couriers send; and `waybill statuses map`.

use crate::common::*;
use std::process::{Command, Output, Stdio};
use waybill::connector::{Connector, MatchedBy, StatusMatch};
use waybill::model::Status;

pub fn shipped(name: &str) -> Connector {
    let path = repo().join("connectors").join(format!("{name}.yaml"));
    Connector::load(&path).unwrap_or_else(|problems| panic!("{name}: {problems:#?}"))
}

/// `raw` as written, upper- and lowercased, and with its spaces doubled,
/// tabs around it and a newline inside.
fn variants(raw: &str) -> Vec<String> {
    vec![
        raw.to_string(),
        raw.to_uppercase(),
        raw.to_lowercase(),
        format!("  {}\t", raw.replace(' ', "  ")),
        format!("\t{} ", raw.replacen(' ', " \n ", 1)),
    ]
}

pub fn assert_maps(courier: &Connector, raw: &str, status: Status, sub_status: Option<&str>) {
    for variant in variants(raw) {
        let found = courier.status_of(&variant);
        assert_eq!(
            (found.status, found.sub_status.as_deref(), &found.reason),
            (status, sub_status, &None),
            "{}: {variant:?}",
            courier.name
        );
        assert_eq!(found.matched_by, MatchedBy::Exact, "{variant:?}");
    }
}

pub(crate) fn assert_unknown(found: StatusMatch, raw: &str) {
    assert_eq!(found.status, Status::Unknown, "{raw:?}");
    assert!(found.is_unmatched(), "{raw:?}");
    assert_eq!((found.sub_status, found.reason), (None, None), "{raw:?}");
}

#[test]
fn every_postex_status_string_maps_to_its_canonical_status() {
    use Status::*;
    let postex = shipped("postex");
    let table: &[(&str, Status, Option<&str>)] = &[
        ("Unbooked", Booked, Some("awaiting_handover")),
        ("UnBooked", Booked, Some("awaiting_handover")),
        ("Booked", Booked, None),
        ("At Merchant's Warehouse", Booked, Some("awaiting_pickup")),
        ("Picked By PostEx", PickedUp, None),
        ("En-Route to PostEx warehouse", InTransit, None),
        ("PostEx WareHouse", InTransit, Some("at_origin_hub")),
        ("At PostEx Warehouse", InTransit, Some("at_origin_hub")),
        ("Package on Root", InTransit, None),
        ("Package on Route", InTransit, None),
        ("Out For Delivery", OutForDelivery, None),
        ("Attempted", DeliveryFailed, None),
        (
            "Delivery Under Review",
            DeliveryFailed,
            Some("awaiting_shipper_advice"),
        ),
        ("Delivered", Delivered, None),
        ("Out For Return", Returning, None),
        ("Returned", Returned, None),
        ("Un-Assigned By Me", Cancelled, None),
        ("Expired", Cancelled, Some("expired")),
    ];
    for (raw, status, sub_status) in table {
        assert_maps(&postex, raw, *status, *sub_status);
    }
}

#[test]
fn a_postex_attempt_gives_its_reason() {
    let postex = shipped("postex");
    for (raw, reason) in [
        (
            "Attempt Made: Customer not available",
            Some("Customer not available"),
        ),
        ("attempt made:Refused to accept", Some("Refused to accept")),
        (
            "  ATTEMPT   MADE:   Address  not found ",
            Some("Address not found"),
        ),
        ("Attempt Made:", None),
        ("Attempt Made:   ", None),
    ] {
        let found = postex.status_of(raw);
        assert_eq!(found.status, Status::DeliveryFailed, "{raw:?}");
        assert_eq!(found.sub_status, None, "{raw:?}");
        assert_eq!(found.reason.as_deref(), reason, "{raw:?}");
        assert_eq!(found.matched_by, MatchedBy::Prefix, "{raw:?}");
    }
}

#[test]
fn an_unlisted_postex_status_is_unknown() {
    let postex = shipped("postex");
    for raw in [
        "Teleported",
        "",
        "   ",
        "Attempt Made",
        "Delivered to neighbour",
        "Booked!",
    ] {
        assert_unknown(postex.status_of(raw), raw);
    }
}

#[test]
fn every_sandbox_status_maps_to_its_canonical_status() {
    use Status::*;
    let sandbox = shipped("sandbox");
    for (raw, status) in [
        ("booked", Booked),
        ("picked_up", PickedUp),
        ("picked up", PickedUp),
        ("in_transit", InTransit),
        ("in transit", InTransit),
        ("out_for_delivery", OutForDelivery),
        ("out for delivery", OutForDelivery),
        ("delivery_failed", DeliveryFailed),
        ("delivery failed", DeliveryFailed),
        ("delivered", Delivered),
        ("returning", Returning),
        ("returned", Returned),
        ("cancelled", Cancelled),
    ] {
        assert_maps(&sandbox, raw, status, None);
    }
    for raw in ["lost in space", "return", "picked-up"] {
        assert_unknown(sandbox.status_of(raw), raw);
    }
}

fn waybill(dir: &ConfigDir, args: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .arg("--config")
        .arg(dir.path())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run waybill")
}

fn postex_config() -> ConfigDir {
    ConfigDir::new("{ connector: postex, credentials: { token: \"t0ken\" } }")
}

/// The one JSON object `statuses map` printed, its keys in order.
fn mapped(output: &Output) -> serde_json::Map<String, serde_json::Value> {
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout.clone()).expect("UTF-8");
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    let object: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let object = object.as_object().expect("an object").clone();
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["courier", "raw", "reason", "status", "sub_status"],
        "{text}"
    );
    object
}

#[test]
fn statuses_map_prints_one_json_object() {
    let dir = postex_config();
    let raw = "  attempt made:  CNEE not home ";
    let out = mapped(&waybill(
        &dir,
        &["statuses", "map", "postex", raw],
        Stdio::piped(),
    ));
    let expected = serde_json::json!({
        "courier": "postex", "raw": raw, "status": "delivery_failed",
        "sub_status": null, "reason": "CNEE not home",
    });
    assert_eq!(serde_json::Value::Object(out), expected);

    let out = mapped(&waybill(
        &dir,
        &["statuses", "map", "postex", "UNBOOKED"],
        Stdio::piped(),
    ));
    assert_eq!(out["status"], "booked");
    assert_eq!(out["sub_status"], "awaiting_handover");
    assert_eq!(out["reason"], serde_json::Value::Null);

    let out = mapped(&waybill(
        &dir,
        &["statuses", "map", "postex", "Teleported"],
        Stdio::piped(),
    ));
    assert_eq!(out["status"], "unknown");
    assert_eq!(out["sub_status"], serde_json::Value::Null);
}

#[test]
fn statuses_map_refuses_a_connector_that_is_not_a_configured_courier() {
    let dir = postex_config();
    for name in ["leopards", "sandbox", "shopify"] {
        let output = waybill(
            &dir,
            &["statuses", "map", name, "Delivered"],
            Stdio::piped(),
        );
        assert!(!output.status.success(), "{name}: {output:?}");
        assert!(output.stdout.is_empty(), "{name}: {output:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains(&format!("`{name}`")) && err.contains("couriers: postex"),
            "{name}: {err}"
        );
    }
}

#[test]
fn statuses_map_ends_quietly_when_its_reader_has_gone() {
    let dir = postex_config();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = waybill(
        &dir,
        &["statuses", "map", "postex", "Delivered"],
        Stdio::from(writer),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn validate_reports_each_status_mistake_at_its_line() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("connectors/sandbox.yaml", |t| {
        t.replace(
            "    \"cancelled\": cancelled\n",
            "    \"cancelled\": cancelled\n    \"Lost\": misplaced\n    \" Delivered \": delivered\n  rules:\n    - { regex: \"^held (?P<reason>.+\", status: on_hold }\n",
        )
    });
    let text = std::fs::read_to_string(dir.dir.path().join("connectors/sandbox.yaml")).unwrap();
    let line_of = |what: &str| 1 + text.lines().position(|l| l.contains(what)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .expect("run waybill");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let out = String::from_utf8_lossy(&output.stdout);
    // Beside the account naming the connector as having errors.
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("connectors/sandbox.yaml:"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (what, says) in [
        ("misplaced", "expected one of: draft, booked, picked_up"),
        (" Delivered ", "` Delivered ` and `delivered` (line"),
        ("^held", "is not a valid regex"),
    ] {
        let at = format!("connectors/sandbox.yaml:{}:", line_of(what));
        assert!(
            lines.iter().any(|l| l.contains(&at) && l.contains(says)),
            "no `{says}` at {at} in {out}"
        );
    }
}
