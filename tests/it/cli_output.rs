//! What the line-per-record subcommands print: order names from a store
//! never reach the operator's terminal raw, and a reader that goes away
//! (`| head -1`) ends the command quietly.

use crate::common::*;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// An order name that would clear the screen, set the window title and break
/// the one-record-per-line format if printed as it is.
const HOSTILE_NAME: &str = "#HX\u{1b}[2J\u{1b}]0;owned\u{7}\tcol\nline\u{202e}";

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

/// stdout as a pipe whose reader has already gone, so the first write fails.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

/// A tree with one order booked and one dead-lettered, both named
/// [`HOSTILE_NAME`], and waybill stopped again.
async fn one_booking_and_one_dead_letter() -> ConfigDir {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let booked = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(9_300_000_001u64);
        o["name"] = serde_json::json!(HOSTILE_NAME);
    });
    let dead = order_with("order-no-phone.json", |o| {
        o["id"] = serde_json::json!(9_300_000_002u64);
        o["name"] = serde_json::json!(HOSTILE_NAME);
    });
    assert_eq!(app.shopify(&booked, "orders/paid", "hx-1").await.0, 200);
    assert_eq!(app.shopify(&dead, "orders/paid", "hx-2").await.0, 200);
    eventually(
        Duration::from_secs(60),
        "the booking and the dead letter",
        || async {
            let booked = app.backends.store.bookings(None, 10).await.ok()?;
            let booked = booked.iter().any(|b| b.result.is_some());
            let letters = dead_letters(&app, "shopify-orders").await;
            (booked && !letters.is_empty()).then_some(())
        },
    )
    .await;
    app.stop().await;
    dir
}

fn assert_one_safe_line_per_record(what: &str, output: &Output, fields: usize) {
    assert!(output.status.success(), "{what}: {output:?}");
    let text = String::from_utf8(output.stdout.clone()).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what} prints one line per record: {text:?}"
    );
    assert_eq!(lines[0].split('\t').count(), fields, "{what}: {text:?}");
    assert!(
        !text
            .chars()
            .any(|c| c != '\t' && c != '\n' && c.is_control())
            && !text.contains('\u{202e}'),
        "{what} printed a raw control character: {text:?}"
    );
    assert!(
        text.contains(r"#HX\u{1b}[2J\u{1b}]0;owned\u{7}\tcol\nline\u{202e}"),
        "{what} shows the name escaped: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_escape_control_characters() {
    let dir = one_booking_and_one_dead_letter().await;
    let listed = waybill(&dir, &["dlq", "list"], Stdio::piped());
    assert_one_safe_line_per_record("dlq list", &listed, 7);
    let listed = waybill(&dir, &["bookings", "list"], Stdio::piped());
    assert_one_safe_line_per_record("bookings list", &listed, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_ends_quietly_on_a_closed_pipe() {
    let dir = one_booking_and_one_dead_letter().await;
    let id = String::from_utf8_lossy(&waybill(&dir, &["dlq", "list"], Stdio::piped()).stdout)
        .split('\t')
        .next()
        .expect("an id")
        .to_string();
    for args in [
        vec!["dlq", "list"],
        vec!["dlq", "show", id.as_str()],
        vec!["bookings", "list"],
        vec!["test"],
        vec!["validate"],
    ] {
        let output = waybill(&dir, &args, closed_pipe());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success()
                && !stderr.contains("panicked")
                && !stderr.contains("Broken pipe"),
            "`waybill {}` on a closed pipe: {:?}, stderr {stderr}",
            args.join(" "),
            output.status
        );
    }
}
