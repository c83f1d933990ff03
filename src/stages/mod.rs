//! Pipeline stages as plain functions over an envelope, testable without I/O.
//!
//! [`plan`] runs every step up to the booking (trigger → map → validate →
//! route) and says what to do with the message; the runner and `waybill try`
//! share it, so what `try` prints is what `run` does.

pub mod map;
pub mod route;
pub mod trigger;
pub mod validate;

use crate::config::{Account, Pipeline, Step};
use crate::mapping::Context;
use crate::model::{ErrorClass, Failure, Headers, Shipment};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the pipeline knows about the incoming event besides its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The store's event name, e.g. `orders/paid`.
    pub topic: String,
    /// Store account name.
    pub account: String,
    /// Source connector, e.g. `shopify`.
    pub source: String,
    pub headers: Headers,
}

impl Event {
    /// Reads the event from a message's `waybill-*` headers.
    pub fn from_headers(headers: &Headers) -> Event {
        use crate::model::header;
        let get = |name: &str| headers.get(name).cloned().unwrap_or_default();
        Event {
            topic: get(header::TOPIC),
            account: get(header::ACCOUNT),
            source: get(header::SOURCE),
            headers: headers.clone(),
        }
    }
}

/// What to do with a message after the pure steps.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Acknowledge and do nothing (trigger did not match, account filtered).
    Skip { stage: &'static str, reason: String },
    /// Book `shipment` on courier account `route`.
    Book { shipment: Shipment, route: String },
    /// The pipeline has no booking step: emit the shipment as it is.
    Emit { shipment: Option<Shipment> },
    /// Post the pipeline's notification for this status change.
    Notify { change: Value },
    /// Write the message (a booking or a status change) back to its store.
    WriteBack,
}

/// What the pure steps made of one event; `waybill try` prints all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// False when the input filter or the trigger let the event pass by.
    pub triggered: bool,
    pub shipment: Option<Shipment>,
    /// Courier account chosen by `route`.
    pub route: Option<String>,
    pub outcome: Result<Plan, Failure>,
}

/// Runs a pipeline's pure steps over one event and its order body.
pub fn plan(
    pipeline: &Pipeline,
    accounts: &BTreeMap<String, Arc<Account>>,
    event: &Event,
    order: Value,
) -> Planned {
    let mut planned = Planned {
        triggered: true,
        shipment: None,
        route: None,
        outcome: Ok(Plan::Emit { shipment: None }),
    };
    planned.outcome = run_steps(pipeline, accounts, event, order, &mut planned);
    if matches!(planned.outcome, Ok(Plan::Skip { .. })) {
        planned.triggered = false;
    }
    planned
}

/// Judges what can be judged from the event alone, before its body is read:
/// the input's account filter, then the leading `trigger` steps that read
/// only `event` and `account`. `Some(skip)` when the pipeline does not take
/// the event, so a body it would never use is never decoded, and a body
/// that cannot be read fails only in the pipelines that take it.
pub fn screen(
    pipeline: &Pipeline,
    accounts: &BTreeMap<String, Arc<Account>>,
    event: &Event,
) -> Result<Option<Plan>, Failure> {
    if let Some(skip) = account_filter(pipeline, event) {
        return Ok(Some(skip));
    }
    let mut ctx = None;
    for step in &pipeline.steps {
        let Step::Trigger(expr) = step else { break };
        if !expr.reads_only(&["event", "account"]) {
            break;
        }
        let ctx = ctx.get_or_insert_with(|| event_context(accounts, event));
        if !trigger::matches(expr, ctx)? {
            return Ok(Some(trigger_skip(expr)));
        }
    }
    Ok(None)
}

/// A skip when the event's account is not one the pipeline's input takes.
fn account_filter(pipeline: &Pipeline, event: &Event) -> Option<Plan> {
    let admitted =
        pipeline.accounts.is_empty() || pipeline.accounts.iter().any(|a| a == &event.account);
    (!admitted).then(|| Plan::Skip {
        stage: "input",
        reason: format!(
            "account `{}` is not an input of this pipeline",
            event.account
        ),
    })
}

fn trigger_skip(expr: &crate::mapping::Expr) -> Plan {
    Plan::Skip {
        stage: "trigger",
        reason: format!("trigger `{}` did not match", expr.source()),
    }
}

/// What expressions and mappings see: `event`, the message body and
/// `account` (its name and settings). The body is `order`, or `change` in a
/// notify pipeline, which reads status changes.
fn context(
    pipeline: &Pipeline,
    accounts: &BTreeMap<String, Arc<Account>>,
    event: &Event,
    body: &Value,
) -> Context {
    let mut ctx = event_context(accounts, event);
    let name = if pipeline.notify().is_some() {
        "change"
    } else {
        "order"
    };
    ctx.set(name, body);
    ctx
}

/// [`context`] without the order: all a header-only trigger reads.
fn event_context(accounts: &BTreeMap<String, Arc<Account>>, event: &Event) -> Context {
    let settings = accounts
        .get(&event.account)
        .map(|a| Value::Object(a.settings.clone()))
        .unwrap_or_else(|| json!({}));
    let mut ctx = Context::default();
    ctx.set(
        "event",
        &json!({ "topic": event.topic, "account": event.account, "source": event.source, "headers": event.headers }),
    );
    ctx.set(
        "account",
        &json!({ "name": event.account, "settings": settings }),
    );
    ctx
}

fn run_steps(
    pipeline: &Pipeline,
    accounts: &BTreeMap<String, Arc<Account>>,
    event: &Event,
    order: Value,
    planned: &mut Planned,
) -> Result<Plan, Failure> {
    if let Some(skip) = account_filter(pipeline, event) {
        return Ok(skip);
    }
    let mut ctx = context(pipeline, accounts, event, &order);
    for step in &pipeline.steps {
        match step {
            Step::Trigger(expr) => {
                if !trigger::matches(expr, &ctx)? {
                    return Ok(trigger_skip(expr));
                }
            }
            Step::Map(mapping) => {
                let (value, typed) = map::apply(mapping, &ctx)?;
                ctx.set("shipment", &value);
                planned.shipment = Some(typed);
            }
            Step::Validate(rules) => {
                let current = planned.shipment.as_ref().ok_or_else(|| {
                    Failure::permanent(
                        "validate",
                        "no shipment to validate: add a `map` step before `validate`",
                    )
                })?;
                // A cancelled shipment is never booked: what it lacks does
                // not matter, and it must still reach the booking it cancels.
                if current.cancelled {
                    continue;
                }
                validate::validate(current, rules).map_err(|problems| {
                    Failure::new("validate", ErrorClass::NeedsReview, problems.join("; "))
                })?;
            }
            Step::Route(rules) => planned.route = Some(route::choose(rules, &ctx, accounts)?),
            Step::Book => {
                let shipment = planned.shipment.clone().ok_or_else(|| {
                    Failure::permanent(
                        "book",
                        "no shipment to book: add a `map` step before `book`",
                    )
                })?;
                let route = planned.route.clone().ok_or_else(|| {
                    Failure::permanent(
                        "book",
                        "no courier account chosen: add a `route` step before `book`",
                    )
                })?;
                return Ok(Plan::Book { shipment, route });
            }
            Step::Notify(notify) => {
                let status = order["status"].as_str().unwrap_or_default();
                if !notify.statuses.iter().any(|s| s.as_str() == status) {
                    return Ok(Plan::Skip {
                        stage: "notify",
                        reason: format!("status `{status}` is not one this pipeline notifies"),
                    });
                }
                return Ok(Plan::Notify { change: order });
            }
            Step::WriteBack => return Ok(Plan::WriteBack),
        }
    }
    Ok(Plan::Emit {
        shipment: planned.shipment.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;
    use crate::mapping::Expr;

    fn pipeline(accounts: &[&str], steps: Vec<Step>) -> Pipeline {
        Pipeline {
            name: "p".into(),
            input: "orders.shop".into(),
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            steps,
            output: None,
            retry: RetryPolicy::default(),
            dead_letter: "dlq.p".into(),
            max_in_flight: 1,
            on_change: Default::default(),
            file: "pipelines/p.yaml".into(),
        }
    }

    fn trigger(source: &str) -> Step {
        Step::Trigger(Expr::compile(source).unwrap())
    }

    fn event(account: &str, topic: &str) -> Event {
        Event {
            topic: topic.into(),
            account: account.into(),
            source: "shop".into(),
            headers: Headers::new(),
        }
    }

    fn stage(screened: Option<Plan>) -> Option<&'static str> {
        match screened {
            Some(Plan::Skip { stage, .. }) => Some(stage),
            Some(other) => panic!("not a skip: {other:?}"),
            None => None,
        }
    }

    #[test]
    fn screening_judges_the_account_filter_and_header_only_leading_triggers() {
        let accounts = BTreeMap::new();
        let screen = |p: &Pipeline, e: &Event| stage(screen(p, &accounts, e).unwrap());
        let paid = trigger("event.topic == 'orders/paid'");
        let p = pipeline(&["a"], vec![paid]);
        assert_eq!(screen(&p, &event("b", "orders/paid")), Some("input"));
        assert_eq!(screen(&p, &event("a", "orders/create")), Some("trigger"));
        assert_eq!(screen(&p, &event("a", "orders/paid")), None);

        // A trigger that reads the order needs the body; so does one after
        // another step, which may fail first.
        let reads_order = trigger("event.topic == 'orders/paid' and order.id");
        let p = pipeline(&[], vec![reads_order]);
        assert_eq!(screen(&p, &event("a", "orders/create")), None);
        let after_validate = vec![
            Step::Validate(vec![]),
            trigger("event.topic == 'orders/paid'"),
        ];
        let p = pipeline(&[], after_validate);
        assert_eq!(screen(&p, &event("a", "orders/create")), None);
        let settings = trigger("account.name == 'a'");
        let p = pipeline(&[], vec![settings]);
        assert_eq!(screen(&p, &event("b", "orders/paid")), Some("trigger"));
    }
}
