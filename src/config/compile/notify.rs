//! The `notify` step: a notifier account to post through, a body mapping,
//! the statuses notified, the signature header; and the shape of a notify
//! pipeline (it reads `shipments.status`, and only triggers may come before
//! its one `notify`, which is last).
//!
//! ```yaml
//! name: notify-customers
//! input: { topic: shipments.status }
//! steps:
//!   - notify:
//!       to: notify-main
//!       body: mappings/notify/sms.yaml
//!       statuses: [out_for_delivery, delivered, delivery_failed]
//! ```

use super::{AccountRef, Compiler};
use crate::config::NotifyStep;
use crate::config::Step;
use crate::config::raw::{RawNotify, RawPipeline, RawStep};
use crate::connector::ConnectorKind;
use crate::diagnostic::Position;
use crate::model::tracking::STATUS_TOPIC;
use crate::yaml::{Located, Node};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The signature header when the step names none.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Waybill-Signature";

/// How long the receiver may take to answer when the step says nothing.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pipeline-shape check needs to know of one step as written.
pub(super) struct StepKind {
    at: Position,
    notify: bool,
    trigger: bool,
}

impl StepKind {
    pub(super) fn of(node: &Node, step: &RawStep) -> StepKind {
        StepKind {
            at: node.position(),
            notify: matches!(step, RawStep::Notify(_)),
            trigger: matches!(step, RawStep::Trigger(_)),
        }
    }
}

impl Compiler<'_> {
    pub(super) fn notify(
        &mut self,
        file: &Path,
        base_dir: &Path,
        node: &Node,
        raw: Box<RawNotify>,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<NotifyStep> {
        let url = self.notify_target(file, &raw.to, accounts);
        if raw.statuses.is_empty() {
            self.report(
                file,
                node.position(),
                "`notify.statuses` is empty: list the canonical statuses to notify on, e.g. `[out_for_delivery, delivered, delivery_failed]`",
            );
        }
        let signature_header = match &raw.signature_header {
            Some(header) => {
                if reqwest::header::HeaderName::from_bytes(header.value.as_bytes()).is_err() {
                    let message = format!(
                        "`signature_header` `{}` is not a valid HTTP header name: use letters, digits and `-`, e.g. `{DEFAULT_SIGNATURE_HEADER}`",
                        header.shown()
                    );
                    self.report(file, header.position(), message);
                }
                header.value.clone()
            }
            None => DEFAULT_SIGNATURE_HEADER.to_string(),
        };
        let timeout = match &raw.timeout {
            Some(t) if t.value.0.is_zero() => {
                self.report(file, t.position(), "`notify.timeout` must be more than 0");
                DEFAULT_TIMEOUT
            }
            Some(t) => t.value.0,
            None => DEFAULT_TIMEOUT,
        };
        let body = self.mapping(file, base_dir, &raw.body);
        let mut statuses: Vec<_> = raw.statuses.iter().map(|s| s.value).collect();
        statuses.dedup();
        Some(NotifyStep {
            account: raw.to.value,
            url: url?,
            body: body?,
            statuses,
            signature_header,
            timeout,
        })
    }

    /// The URL notifications go to: the notifier account's `base_url`, or
    /// its connector's.
    fn notify_target(
        &mut self,
        file: &Path,
        to: &Located<String>,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<String> {
        let account = self.account_ref(file, to, accounts)?;
        // A connector or account that did not compile was reported there.
        let connector = account.connector.as_ref()?;
        if connector.kind != ConnectorKind::Notifier {
            let message = format!(
                "account `{}` uses connector `{}`, which is not a notifier; `notify.to` names an account of a `kind: notifier` connector, e.g. `{{ connector: notify-webhook, base_url: …, credentials: {{ signing_secret: … }} }}`",
                to.shown(),
                connector.name
            );
            self.report(file, to.position(), message);
            return None;
        }
        let compiled = account.compiled.as_ref()?;
        let url = compiled.base_url.clone().or(connector.base_url.clone());
        if url.is_none() {
            let message = format!(
                "account `{}` has no `base_url`, nor has connector `{}`: write the receiver's URL as the account's `base_url` in the main config file",
                to.shown(),
                connector.name
            );
            self.report(file, to.position(), message);
        }
        url
    }

    /// A notify step reads status changes, and only triggers may come
    /// before it: a map, route or book there would have nothing to work on.
    pub(super) fn notify_shape(&mut self, file: &Path, kinds: &[StepKind]) {
        let Some(first) = kinds.iter().position(|k| k.notify) else {
            return;
        };
        for (index, kind) in kinds.iter().enumerate() {
            if kind.notify && index != first {
                self.report(
                    file,
                    kind.at,
                    "a pipeline has at most one `notify` step: write another pipeline for another receiver",
                );
            } else if !(kind.notify || kind.trigger && index < first) {
                self.report(
                    file,
                    kind.at,
                    "in a pipeline with a `notify` step only `trigger` steps may come, and only before it",
                );
            }
        }
    }

    /// A notify pipeline's input is the tracker's status changes.
    pub(super) fn notify_input(&mut self, file: &Path, raw: &RawPipeline, steps: Option<&[Step]>) {
        let notifies = steps.is_some_and(|s| s.iter().any(|s| matches!(s, Step::Notify(_))));
        if notifies && raw.input.topic.value != STATUS_TOPIC {
            let message = format!(
                "a pipeline with a `notify` step reads status changes: write `input: {{ topic: {STATUS_TOPIC} }}`"
            );
            self.report(file, raw.input.topic.position(), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const NOTIFIER: &str = "name: hook\nkind: notifier\ncredentials:\n  signing_secret: { type: string, secret: true, required: true }\n";
    const COURIER: &str = "name: courier\nkind: courier\nbase_url: https://c.example\noperations:\n  book:\n    request: { method: POST, path: /b }\n    success: 'true'\n    extract: { tracking_number: $.cn }\n";
    const MAPPING: &str =
        "to: \"{{ shipment.recipient.phone }}\"\nstatus: \"{{ change.status }}\"\n";

    fn tree(waybill_accounts: &str, pipeline: &str) -> Tree {
        Tree::new(&[
            ("waybill.yaml", &format!("accounts:\n{waybill_accounts}")),
            ("connectors/hook.yaml", NOTIFIER),
            ("connectors/courier.yaml", COURIER),
            ("mappings/n.yaml", MAPPING),
            ("pipelines/n.yaml", pipeline),
        ])
    }

    const ACCOUNTS: &str = "  n: { connector: hook, base_url: 'https://sms.example/hook', credentials: { signing_secret: s3cret } }\n  c: { connector: courier }\n";

    #[test]
    fn a_notify_step_compiles_with_its_defaults() {
        let pipeline = "name: n\ninput: { topic: shipments.status }\nsteps:\n  - trigger: \"change.via != 'store'\"\n  - notify: { to: n, body: mappings/n.yaml, statuses: [delivered, out_for_delivery] }\n";
        let config = tree(ACCOUNTS, pipeline).load().unwrap();
        let notify = config.pipelines[0].notify().unwrap();
        assert_eq!(notify.url, "https://sms.example/hook");
        assert_eq!(notify.account, "n");
        assert_eq!(notify.signature_header, DEFAULT_SIGNATURE_HEADER);
        assert_eq!(notify.timeout, DEFAULT_TIMEOUT);
        let statuses: Vec<&str> = notify.statuses.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, ["delivered", "out_for_delivery"]);
    }

    #[test]
    fn notify_mistakes_are_located_and_say_what_to_write() {
        let pipeline = "name: n\ninput: { topic: orders.x }\nsteps:\n  - notify: { to: c, body: mappings/n.yaml, statuses: [] }\n  - map: mappings/n.yaml\n";
        let problems = tree(ACCOUNTS, pipeline).problems();
        assert_positions(
            &problems,
            &[
                ("pipelines/n.yaml", 4, 5),
                ("pipelines/n.yaml", 4, 19),
                ("pipelines/n.yaml", 5, 5),
            ],
        );
        assert_mentions(&problems[0], "`notify.statuses` is empty");
        assert_mentions(&problems[1], "not a notifier");
        assert_mentions(&problems[2], "only `trigger` steps may come");

        let pipeline = "name: n\ninput: { topic: orders.x }\nsteps:\n  - notify: { to: n, body: mappings/n.yaml, statuses: [delivered], signature_header: 'bad header', timeout: 0s }\n";
        let problems = tree(ACCOUNTS, pipeline).problems();
        assert_positions(
            &problems,
            &[
                ("pipelines/n.yaml", 2, 17),
                ("pipelines/n.yaml", 4, 86),
                ("pipelines/n.yaml", 4, 109),
            ],
        );
        assert_mentions(&problems[0], "input: { topic: shipments.status }");
        assert_mentions(&problems[1], "not a valid HTTP header name");
        assert_mentions(&problems[2], "more than 0");

        let pipeline = "name: n\ninput: { topic: shipments.status }\nsteps:\n  - notify: { to: n, body: mappings/n.yaml, statuses: [delivred] }\n";
        let problem = tree(ACCOUNTS, pipeline).sole_problem(("pipelines/n.yaml", 4, 56));
        assert_mentions(&problem, "delivered");
    }

    #[test]
    fn a_notifier_account_needs_a_url() {
        let accounts = "  n: { connector: hook, credentials: { signing_secret: s } }\n";
        let pipeline = "name: n\ninput: { topic: shipments.status }\nsteps:\n  - notify: { to: n, body: mappings/n.yaml, statuses: [delivered] }\n";
        let problem = tree(accounts, pipeline).sole_problem(("pipelines/n.yaml", 4, 19));
        assert_mentions(&problem, "has no `base_url`");
    }

    #[test]
    fn a_notifier_is_no_input_account() {
        let pipeline = "name: n\ninput: { topic: shipments.status, accounts: [n] }\nsteps:\n  - notify: { to: n, body: mappings/n.yaml, statuses: [delivered] }\n";
        let problem = tree(ACCOUNTS, pipeline).sole_problem(("pipelines/n.yaml", 2, 46));
        assert_mentions(&problem, "is a notifier account");
    }

    #[test]
    fn the_filter_and_the_triggers_see_the_status_change() {
        use crate::stages::{Event, Plan, plan};
        let pipeline = "name: n\ninput: { topic: shipments.status }\nsteps:\n  - trigger: \"change.via != 'store'\"\n  - notify: { to: n, body: mappings/n.yaml, statuses: [delivered, out_for_delivery] }\n";
        let config = tree(ACCOUNTS, pipeline).load().unwrap();
        let event = Event {
            topic: String::new(),
            account: "shop".into(),
            source: "shopify".into(),
            headers: Default::default(),
        };
        let outcome = |status: &str, via: &str| {
            let change = serde_json::json!({ "key": "k", "status": status, "via": via });
            plan(&config.pipelines[0], &config.accounts, &event, change).outcome
        };
        assert!(
            matches!(outcome("delivered", "callback"), Ok(Plan::Notify { change }) if change["status"] == "delivered")
        );
        assert!(matches!(
            outcome("in_transit", "poll"),
            Ok(Plan::Skip {
                stage: "notify",
                ..
            })
        ));
        assert!(matches!(
            outcome("delivered", "store"),
            Ok(Plan::Skip {
                stage: "trigger",
                ..
            })
        ));
    }
}
