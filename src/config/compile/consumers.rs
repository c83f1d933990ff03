//! What the pipelines leave unconsumed: a store account whose webhooks no
//! pipeline reads would have every delivery answered `200 accepted` and
//! never booked, so it is an error at the account.
//!
//! ```yaml
//! accounts:
//!   shop-main: { connector: shopify }   # needs a pipeline with input.topic orders.shopify
//! ```

use super::{AccountRef, Compiler};
use crate::connector::ConnectorKind;
use crate::diagnostic::did_you_mean;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What one pipeline file reads, as written, whether or not it compiled:
/// a pipeline with a mistake still names what it means to consume.
pub(super) struct Reads {
    pub pipeline: String,
    pub topic: String,
    /// `input.accounts`; `None` when not written (every account).
    pub accounts: Option<Vec<String>>,
}

impl Reads {
    /// Whether this pipeline takes `account`'s messages from `topic`. An
    /// input that nothing produces but is close to `topic` counts: it was
    /// reported with `topic` as the suggestion, and fixing it consumes the
    /// account, so reporting the account too would only repeat the mistake.
    fn takes(&self, topic: &str, account: &str, produced: &BTreeSet<String>) -> bool {
        let meant = !produced.contains(&self.topic) && did_you_mean(&self.topic, [topic]).is_some();
        (self.topic == topic || meant)
            && self
                .accounts
                .as_ref()
                .is_none_or(|accounts| accounts.iter().any(|a| a == account))
    }
}

/// `orders.<source>` of a store account whose connector loaded: the
/// connector's webhook source, or its name.
pub(super) fn source_topic(account: &AccountRef) -> Option<String> {
    let connector = account.connector.as_ref()?;
    if connector.kind != ConnectorKind::Store {
        return None;
    }
    let source = connector
        .webhook
        .as_ref()
        .map_or(connector.name.as_str(), |w| w.source.as_str());
    Some(format!("orders.{source}"))
}

impl Compiler<'_> {
    /// Reports, at the account, each store account that no pipeline takes:
    /// none reads its source topic, or those that do leave it out of their
    /// `input.accounts`.
    pub(super) fn unconsumed_accounts(
        &mut self,
        file: &Path,
        accounts: &BTreeMap<String, AccountRef>,
        reads: &[Reads],
        produced: &BTreeSet<String>,
    ) {
        for (name, account) in accounts {
            let Some(topic) = source_topic(account) else {
                continue;
            };
            if reads.iter().any(|r| r.takes(&topic, name, produced)) {
                continue;
            }
            let readers: Vec<String> = reads
                .iter()
                .filter(|r| r.topic == topic)
                .map(|r| format!("`{}`", r.pipeline))
                .collect();
            let what_to_write = if readers.is_empty() {
                format!("add a pipeline with `input: {{ topic: {topic} }}`, or remove the account")
            } else {
                format!(
                    "pipeline {} reads `{topic}` but its `input.accounts` leaves the account out: add `{name}` there, or remove the account",
                    readers.join(", ")
                )
            };
            let message = format!(
                "store account `{name}` is consumed by no pipeline, so its webhooks would be accepted and never processed; {what_to_write}"
            );
            self.report(file, account.at, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const SHOP: &str = "name: shop\nkind: store\n";

    /// A pipeline reading `input` (a flow map's inside), with one step.
    fn reader(name: &str, input: &str) -> String {
        format!("name: {name}\ninput: {{ {input} }}\nsteps:\n  - validate: {{ rules: [phone] }}\n")
    }

    #[test]
    fn a_written_pattern_that_matches_nothing_is_an_error_at_it() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts: {}\npipelines:\n  - pipelines/*.yaml\n  - pipelnes/*.yaml\n",
            ),
            ("pipelines/p.yaml", &reader("p", "topic: dlq.p")),
        ]);
        let problem = tree.sole_problem(("waybill.yaml", 4, 5));
        assert_mentions(&problem, "no pipeline file matches `pipelnes/*.yaml`");
        assert_mentions(&problem, "pipelines/*.yaml");

        let tree = Tree::waybill("pipelines: []\n");
        let problem = tree.sole_problem(("waybill.yaml", 1, 12));
        assert_mentions(&problem, "`pipelines` is empty");
    }

    #[test]
    fn a_store_account_no_pipeline_consumes_is_an_error_at_it() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts:\n  shop-main: { connector: shop }\n  shop-other:\n    connector: shop\n  \
                 lone: { connector: lone }\n  broken: { connector: nothing }\n",
            ),
            ("connectors/shop.yaml", SHOP),
            (
                "connectors/lone.yaml",
                "name: lone\nkind: store\nwebhook: { source: lone-src }\n",
            ),
            (
                "pipelines/a.yaml",
                &reader("a", "topic: orders.shop, accounts: [shop-main]"),
            ),
            ("pipelines/b.yaml", &reader("b", "topic: orders.lone")),
        ]);
        let problems = tree.problems();
        assert_positions(
            &problems,
            &[
                ("waybill.yaml", 3, 3),
                ("waybill.yaml", 5, 3),
                ("waybill.yaml", 6, 24),
                ("pipelines/b.yaml", 2, 17),
            ],
        );
        assert_mentions(&problems[0], "store account `shop-other`");
        assert_mentions(&problems[0], "pipeline `a` reads `orders.shop`");
        assert_mentions(&problems[0], "`input.accounts`");
        assert_mentions(&problems[1], "input: { topic: orders.lone-src }");
        assert_mentions(&problems[2], "unknown connector `nothing`");
    }

    #[test]
    fn a_misspelt_input_is_reported_once_not_again_at_the_account() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts:\n  shop-main: { connector: shop }\n",
            ),
            ("connectors/shop.yaml", SHOP),
            ("pipelines/a.yaml", &reader("a", "topic: orders.shpo")),
        ]);
        let problem = tree.sole_problem(("pipelines/a.yaml", 2, 17));
        assert_mentions(&problem, "did you mean `orders.shop`");
    }

    #[test]
    fn a_pipeline_with_mistakes_still_counts_as_consuming_its_accounts() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts:\n  shop-main: { connector: shop }\n",
            ),
            ("connectors/shop.yaml", SHOP),
            (
                "pipelines/a.yaml",
                "name: a\ninput: { topic: orders.shop }\nsteps:\n  - validate: { rules: [] }\n",
            ),
        ]);
        let problem = tree.sole_problem(("pipelines/a.yaml", 4, 5));
        assert_mentions(&problem, "`validate.rules` is empty");
    }
}
