//! The cost of the pure steps per order: the shipped `waybill.yaml`'s
//! `shopify-orders` pipeline (trigger → map → validate → route, the shipped
//! Shopify mapping and validation rules) over varied sample orders, against
//! `serde_json` parsing and serialising the same order bytes, timed in the
//! same run, alternating in rounds so both see the same machine.
//!
//! Both sides start from the webhook body as bytes: the pipeline side parses
//! it and plans (what the runner does for every message), the baseline side
//! parses it and serialises it again.
//!
//! ```sh
//! cargo bench --bench mapping -- --orders 2000 --rounds 10
//! ```

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};
use support::*;
use waybill::model::Headers;
use waybill::stages::{self, Event, Plan};

fn main() {
    let orders = arg("--orders", 2000);
    let rounds = arg("--rounds", 10);
    let config = waybill::config::load(&repo().join("waybill.yaml")).unwrap_or_else(|errors| {
        panic!("the shipped waybill.yaml must load: {errors:?}");
    });
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.name == "shopify-orders")
        .expect("the shipped shopify-orders pipeline");
    let account = pipeline.accounts.first().cloned().unwrap_or_default();
    let source = config
        .accounts
        .get(&account)
        .map(|a| a.connector.clone())
        .unwrap_or_default();
    let event = Event {
        topic: "orders/create".into(),
        account,
        source,
        headers: Headers::new(),
    };
    let bodies: Vec<Vec<u8>> = (0..orders).map(order).collect();

    let pipeline_round = || {
        let start = Instant::now();
        for body in &bodies {
            let order: serde_json::Value = serde_json::from_slice(body).expect("json");
            let planned = stages::plan(pipeline, &config.accounts, &event, order);
            assert!(
                matches!(planned.outcome, Ok(Plan::Book { .. })),
                "every sample order books: {:?}",
                planned.outcome
            );
            black_box(planned);
        }
        start.elapsed()
    };
    let json_round = || {
        let start = Instant::now();
        for body in &bodies {
            let order: serde_json::Value = serde_json::from_slice(body).expect("json");
            black_box(serde_json::to_vec(&order).expect("json"));
        }
        start.elapsed()
    };

    // Warm-up: templates, allocator and caches.
    pipeline_round();
    json_round();
    let mut planned = Vec::new();
    let mut json = Vec::new();
    for _ in 0..rounds {
        planned.push(pipeline_round());
        json.push(json_round());
    }
    let per_order = |d: &Duration| d.as_secs_f64() * 1e6 / orders as f64;
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (p, j) = (median(&mut planned), median(&mut json));
    let bytes = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    println!("orders: {orders} of about {bytes} bytes, {rounds} rounds, medians per order:");
    println!(
        "  pipeline (parse + trigger, map, validate, route): {:8.2} µs",
        per_order(&p)
    );
    println!(
        "  serde_json parse + serialise:                     {:8.2} µs",
        per_order(&j)
    );
    println!(
        "  ratio: {:.2}× (aim ≤ 3×)",
        p.as_secs_f64() / j.as_secs_f64()
    );
}
