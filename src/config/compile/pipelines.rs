//! Pipeline files: found through the main file's patterns, each compiled on
//! its own (steps, routes against the accounts, mappings, retry policy),
//! then checked together: unique names, inputs that something produces, and
//! store accounts that some pipeline consumes.
//!
//! ```yaml
//! name: shopify-orders
//! input: { topic: orders.shopify }
//! steps:
//!   - map: mappings/shopify/order-to-shipment.yaml
//!   - route: [ { to: courier-main } ]
//!   - book: {}
//! ```

use super::accounts::Accounts;
use super::consumers::{Reads, source_topic};
use super::notify::StepKind;
use super::{AccountRef, Compiler, Reference};
use crate::config::raw::{RawDuration, RawPipeline, RawRetry, RawRoute, RawRule, RawStep};
use crate::config::{OnChange, Pipeline, RetryPolicy, RouteRule, Step, ValidationRule};
use crate::connector::ConnectorKind;
use crate::diagnostic::{Position, alternatives};
use crate::mapping::{Expr, Mapping};
use crate::model::tracking::STATUS_TOPIC;
use crate::yaml::{self, Located, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Where pipeline files are looked for when `pipelines:` is not written.
const DEFAULT_PATTERN: &str = "pipelines/*.yaml";

/// One pipeline file, read: what it produces whether or not it compiled,
/// so other pipelines' inputs are checked against every file written.
struct Read {
    /// `None` when the file had problems (all reported).
    compiled: Option<Pipeline>,
    name_at: Position,
    input_at: Position,
    /// Its output and dead-letter topics.
    produces: Vec<String>,
    /// Topics it names that came from `${VAR}` substitution, each with the
    /// text messages show instead: (topic, as written).
    shown_topics: Vec<(String, String)>,
    /// What it reads, as written.
    reads: Reads,
}

/// The main file's `pipelines:` as written: its patterns, and where the
/// list is (`None` when the key is not written and the default applies).
#[derive(Clone, Copy)]
pub(super) struct Patterns<'a> {
    pub written: Option<(&'a [Located<String>], Position)>,
}

impl Compiler<'_> {
    pub(super) fn pipelines(
        &mut self,
        file: &Path,
        base_dir: &Path,
        patterns: Patterns<'_>,
        accounts: &Accounts,
    ) -> Vec<Arc<Pipeline>> {
        let mut produced = source_topics(&accounts.refs);
        // The tracker publishes every applied status change.
        produced.insert(STATUS_TOPIC.to_string());
        let mut shown_topics = BTreeMap::new();
        let mut seen: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
        let mut pipelines = Vec::new();
        let mut reads = Vec::new();
        let mut all_read = true;
        for (pipeline_file, from) in self.pipeline_files(file, base_dir, patterns) {
            let from = from.map(|at| Reference { file, at });
            let Some(read) = self.pipeline(&pipeline_file, from, base_dir, &accounts.refs) else {
                all_read = false;
                continue;
            };
            produced.extend(read.produces);
            shown_topics.extend(read.shown_topics);
            let shown_name = read.reads.pipeline.clone();
            reads.push(read.reads);
            let Some(pipeline) = read.compiled else {
                continue;
            };
            if let Some((other, line)) = seen.get(&pipeline.name) {
                let message = format!(
                    "duplicate pipeline name `{shown_name}` (also used at {}:{line})",
                    other.display()
                );
                self.report(&pipeline_file, read.name_at, message);
                continue;
            }
            seen.insert(
                pipeline.name.clone(),
                (pipeline_file.clone(), read.name_at.line),
            );
            pipelines.push((pipeline, read.input_at));
        }
        for (pipeline, input_at) in &pipelines {
            self.input_produced(pipeline, *input_at, &produced, &shown_topics);
        }
        // A file that could not be read may be the consumer: saying an
        // account has none would then be wrong.
        if all_read {
            self.unconsumed_accounts(file, &accounts.refs, &reads, &produced);
        }
        pipelines
            .into_iter()
            .map(|(pipeline, _)| Arc::new(pipeline))
            .collect()
    }

    /// The files the patterns name, each with where its pattern is written
    /// (`None` for the default pattern, which is not written anywhere). A
    /// written pattern or list that names no file is an error: it would
    /// validate and run nothing.
    fn pipeline_files(
        &mut self,
        file: &Path,
        base_dir: &Path,
        patterns: Patterns<'_>,
    ) -> Vec<(PathBuf, Option<Position>)> {
        let default = [Located {
            value: DEFAULT_PATTERN.to_string(),
            line: 0,
            column: 0,
            written: None,
        }];
        let written = patterns.written.is_some();
        if let Some(([], at)) = patterns.written {
            let message = format!(
                "`pipelines` is empty: list pipeline files or patterns relative to this file, e.g. `pipelines: [\"{DEFAULT_PATTERN}\"]`"
            );
            self.report(file, at, message);
        }
        let mut files: Vec<(PathBuf, Option<Position>)> = Vec::new();
        for pattern in patterns.written.map_or(&default[..], |(p, _)| p) {
            let full = base_dir.join(&pattern.value);
            // What messages show: the pattern as written, never expanded.
            let shown = base_dir.join(pattern.shown());
            let is_glob = pattern.value.contains(['*', '?', '[']);
            let paths = match glob::glob(&full.to_string_lossy()) {
                Ok(paths) => paths,
                Err(e) => {
                    let message =
                        format!("invalid pipeline pattern `{}`: {}", pattern.shown(), e.msg);
                    self.report(file, pattern.position(), message);
                    continue;
                }
            };
            let mut matched: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            matched.sort();
            if matched.is_empty() && !is_glob {
                let message = format!("pipeline file not found: {}", shown.display());
                self.report(file, pattern.position(), message);
            } else if matched.is_empty() && written {
                let message = format!(
                    "no pipeline file matches `{}` (looked for {}): write a pattern naming pipeline files relative to this file, e.g. `{DEFAULT_PATTERN}`, or remove it",
                    pattern.shown(),
                    shown.display()
                );
                self.report(file, pattern.position(), message);
            }
            for m in matched {
                if !files.iter().any(|(f, _)| *f == m) {
                    files.push((m, written.then(|| pattern.position())));
                }
            }
        }
        files
    }

    /// A pipeline's input must be something a source or a pipeline produces:
    /// otherwise it validates and then sits idle. Topic prefixes (Kafka's
    /// `topic_prefix`) are added by the bus, so names here are unprefixed.
    fn input_produced(
        &mut self,
        pipeline: &Pipeline,
        at: Position,
        produced: &BTreeSet<String>,
        shown: &BTreeMap<String, String>,
    ) {
        if produced.contains(&pipeline.input) {
            return;
        }
        let show = |topic: &str| shown.get(topic).map_or(topic, String::as_str).to_string();
        let produced: Vec<String> = produced.iter().map(|t| show(t)).collect();
        let produced: Vec<&str> = produced.iter().map(String::as_str).collect();
        let input = show(&pipeline.input);
        let message = format!(
            "no source or pipeline produces `{input}`{}",
            alternatives(
                &input,
                &produced,
                "nothing produces any topic: add a store account",
                "produced"
            )
        );
        self.report(&pipeline.file, at, message);
    }

    /// Reads and compiles one pipeline file; `None` when it could not be read.
    fn pipeline(
        &mut self,
        file: &Path,
        from: Option<Reference<'_>>,
        base_dir: &Path,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<Read> {
        let node = self.read_yaml(file, from)?;
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawPipeline>(&node, &mut errors);
        let clean = errors.is_empty();
        self.report_node_errors(file, errors);
        let raw: RawPipeline = raw?;
        let before = self.diagnostics.count();

        let name = raw.name.value.clone();
        self.pipeline_name(file, &raw.name);
        let input_accounts = self.input(file, &raw, accounts);
        let steps = self.steps(file, base_dir, &node, &raw.steps, accounts);
        self.notify_input(file, &raw, steps.as_deref());
        let retry = self.retry(file, raw.retry.as_ref());
        let max_in_flight = self.max_in_flight(file, raw.max_in_flight.as_ref());
        let on_change = self.on_change(file, raw.on_change.as_ref(), steps.as_deref(), accounts);
        let shown_topics = shown_topics(&raw);
        let dead_letter = raw
            .dead_letter
            .map_or_else(|| format!("dlq.{name}"), |d| d.topic.value);
        let output = raw.output.map(|o| o.topic.value);
        let produces = output.iter().chain([&dead_letter]).cloned().collect();
        let (name_at, input_at) = (raw.name.position(), raw.input.topic.position());
        let reads = Reads {
            pipeline: raw.name.shown().to_string(),
            topic: raw.input.topic.value.clone(),
            accounts: raw
                .input
                .accounts
                .as_ref()
                .map(|a| a.iter().map(|a| a.value.clone()).collect()),
        };
        let compiled = match steps {
            Some(steps) if clean && self.diagnostics.count() == before => Some(Pipeline {
                name,
                input: raw.input.topic.value,
                accounts: input_accounts,
                steps,
                output,
                retry,
                dead_letter,
                max_in_flight,
                on_change,
                file: file.to_path_buf(),
            }),
            _ => None,
        };
        Some(Read {
            compiled,
            name_at,
            input_at,
            produces,
            shown_topics,
            reads,
        })
    }

    fn pipeline_name(&mut self, file: &Path, name: &Located<String>) {
        let valid = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            let message = format!(
                "invalid pipeline name `{}`: use letters, digits, `-`, `_` and `.`",
                name.shown()
            );
            self.report(file, name.position(), message);
        }
    }

    /// Checks `input:`, returning the store accounts it is limited to.
    fn input(
        &mut self,
        file: &Path,
        raw: &RawPipeline,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Vec<String> {
        if raw.input.topic.value.trim().is_empty() {
            self.report(
                file,
                raw.input.topic.position(),
                "`input.topic` is empty: expected a topic such as `orders.shopify`",
            );
        }
        let mut input_accounts = Vec::new();
        for account in raw.input.accounts.iter().flatten() {
            match self
                .account_ref(file, account, accounts)
                .and_then(AccountRef::kind)
            {
                Some(kind @ (ConnectorKind::Courier | ConnectorKind::Notifier)) => {
                    let kind = if kind == ConnectorKind::Courier {
                        "courier"
                    } else {
                        "notifier"
                    };
                    self.report(file, account.position(), format!("account `{}` is a {kind} account; `input.accounts` lists store accounts", account.shown()));
                }
                _ => input_accounts.push(account.value.clone()),
            }
        }
        input_accounts
    }

    /// Each step read and compiled on its own; `None` when one could not be read.
    fn steps(
        &mut self,
        file: &Path,
        base_dir: &Path,
        pipeline: &Node,
        nodes: &[Node],
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<Vec<Step>> {
        if nodes.is_empty() {
            self.report(file, pipeline.position(), "`steps` is empty: expected at least one step (trigger, map, validate, route, book, notify)");
        }
        let mut steps = Vec::new();
        let mut routed = false;
        let mut readable = true;
        let mut kinds = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            let step = match yaml::from_node::<RawStep>(node) {
                Ok(step) => step,
                Err(e) => {
                    self.report(file, e.position(), format!("step {}: {e}", index + 1));
                    readable = false;
                    continue;
                }
            };
            routed |= matches!(step, RawStep::Route(_));
            kinds.push(StepKind::of(node, &step));
            steps.extend(self.step(file, base_dir, node, step, routed, accounts));
        }
        self.notify_shape(file, &kinds);
        readable.then_some(steps)
    }

    fn step(
        &mut self,
        file: &Path,
        base_dir: &Path,
        node: &Node,
        step: RawStep,
        routed: bool,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<Step> {
        match step {
            RawStep::Trigger(source) => self.expr(file, "trigger", &source).map(Step::Trigger),
            RawStep::Map(path) => self.mapping(file, base_dir, &path).map(Step::Map),
            RawStep::Validate(v) => {
                if v.rules.is_empty() {
                    self.report(file, node.position(), "`validate.rules` is empty: expected some of phone, shipping_address, cod_amount");
                }
                Some(Step::Validate(
                    v.rules.iter().map(|r| validation_rule(*r)).collect(),
                ))
            }
            RawStep::Route(rules) => self.route(file, node, &rules, accounts).map(Step::Route),
            RawStep::Book(_) => {
                if !routed {
                    self.report(
                        file,
                        node.position(),
                        "`book` needs a `route` step before it to choose the courier account",
                    );
                }
                Some(Step::Book)
            }
            RawStep::Notify(notify) => self
                .notify(file, base_dir, node, notify, accounts)
                .map(|n| Step::Notify(Arc::new(n))),
            RawStep::WriteBack(_) => Some(Step::WriteBack),
        }
    }

    fn max_in_flight(&mut self, file: &Path, raw: Option<&Located<usize>>) -> usize {
        match raw {
            Some(m) if m.value == 0 => {
                self.report(file, m.position(), "`max_in_flight` must be at least 1");
                DEFAULT_MAX_IN_FLIGHT
            }
            Some(m) => m.value,
            None => DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// `on_change:`; `rebook` cancels before it books again, so every
    /// courier account the routes reach must be able to cancel.
    fn on_change(
        &mut self,
        file: &Path,
        raw: Option<&Located<String>>,
        steps: Option<&[Step]>,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> OnChange {
        let Some(raw) = raw else {
            return OnChange::default();
        };
        let Some(on_change) = OnChange::parse(&raw.value) else {
            let message = format!(
                "unknown `on_change` value `{}`{}",
                raw.shown(),
                alternatives(raw.shown(), &OnChange::NAMES, "", "expected one of")
            );
            self.report(file, raw.position(), message);
            return OnChange::default();
        };
        if let Some(steps) = steps
            && !steps.iter().any(|step| matches!(step, Step::Book))
        {
            let message = "`on_change` says what an edit of a booked order does, but this pipeline \
                           has no `book` step: remove it, or add `- book: {}`";
            self.report(file, raw.position(), message);
        }
        if on_change == OnChange::Rebook {
            for to in routed_accounts(steps.unwrap_or_default()) {
                let connector = accounts.get(to).and_then(|a| a.connector.clone());
                if let Some(connector) = connector
                    && !connector.has_operation("cancel")
                {
                    let message = format!(
                        "`on_change: rebook` cancels a booking before booking again, but route target `{to}` \
                         uses connector `{}`, which has no `cancel` operation: write `on_change: review` \
                         (or `ignore`), or route to couriers that can cancel",
                        connector.name
                    );
                    self.report(file, raw.position(), message);
                }
            }
        }
        on_change
    }

    pub(super) fn account_ref<'r>(
        &mut self,
        file: &Path,
        name: &Located<String>,
        accounts: &'r BTreeMap<String, AccountRef>,
    ) -> Option<&'r AccountRef> {
        let found = accounts.get(&name.value);
        if found.is_none() {
            let names: Vec<&str> = accounts.keys().map(String::as_str).collect();
            let message = format!(
                "unknown account `{}`{}",
                name.shown(),
                alternatives(
                    name.shown(),
                    &names,
                    "no accounts are defined in the main config file",
                    "defined accounts"
                )
            );
            self.report(file, name.position(), message);
        }
        found
    }

    fn route(
        &mut self,
        file: &Path,
        step: &Node,
        rules: &[RawRoute],
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<Vec<RouteRule>> {
        if rules.is_empty() {
            self.report(file, step.position(), "`route` is empty: expected a list of `{ when: EXPR, to: ACCOUNT }`, the last one without `when`");
            return None;
        }
        let mut compiled = Vec::new();
        let mut default_seen = false;
        let mut failed = false;
        for rule in rules {
            if default_seen {
                self.report(file, rule.to.position(), "this route rule is never used: a rule without `when` before it matches everything");
            }
            self.route_target(file, &rule.to, accounts);
            let when = match &rule.when {
                Some(source) => {
                    let when = self.expr(file, "route `when`", source);
                    failed |= when.is_none();
                    when
                }
                None => {
                    default_seen = true;
                    None
                }
            };
            compiled.push(RouteRule {
                when,
                to: rule.to.value.clone(),
            });
        }
        (!failed).then_some(compiled)
    }

    /// A route must name a courier account that can book.
    fn route_target(
        &mut self,
        file: &Path,
        to: &Located<String>,
        accounts: &BTreeMap<String, AccountRef>,
    ) {
        let target = self.account_ref(file, to, accounts);
        let Some(connector) = target.and_then(|a| a.connector.as_ref()) else {
            return;
        };
        if connector.kind == ConnectorKind::Store {
            let message = format!(
                "account `{}` is a store account; `route.to` must name a courier account",
                to.shown()
            );
            self.report(file, to.position(), message);
        } else if !connector.has_operation("book") {
            let message = format!(
                "account `{}` uses connector `{}`, which has no `book` operation",
                to.shown(),
                connector.name
            );
            self.report(file, to.position(), message);
        }
    }

    fn retry(&mut self, file: &Path, raw: Option<&RawRetry>) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        let Some(raw) = raw else { return policy };
        if let Some(m) = &raw.max_attempts {
            if m.value == 0 {
                self.report(
                    file,
                    m.position(),
                    "`max_attempts` must be at least 1 (1 means no retries)",
                );
            } else {
                policy.max_attempts = m.value;
            }
        }
        let take = |d: &Option<Located<RawDuration>>| d.as_ref().map(|d| (d.value.0, d.position()));
        let initial = take(&raw.initial);
        let max_delay = take(&raw.max_delay);
        policy.initial = initial.map_or(policy.initial, |d| d.0);
        policy.max_delay = max_delay.map_or(policy.max_delay, |d| d.0);
        policy.max_elapsed = take(&raw.max_elapsed).map_or(policy.max_elapsed, |d| d.0);
        // Only a written value can make `initial` exceed `max_delay`.
        if policy.initial > policy.max_delay
            && let Some((_, at)) = initial.or(max_delay)
        {
            self.report(file, at, "`retry.initial` is longer than `retry.max_delay`");
        }
        policy
    }

    pub(super) fn expr(
        &mut self,
        file: &Path,
        what: &str,
        source: &Located<String>,
    ) -> Option<Expr> {
        match Expr::compile(&source.value) {
            Ok(expr) => Some(expr),
            Err(e) => {
                self.report(
                    file,
                    source.position(),
                    format!("invalid {what} expression: {}", source.quote_as_written(&e)),
                );
                None
            }
        }
    }

    /// A `map:` step's mapping, loaded once however many pipelines use it.
    pub(super) fn mapping(
        &mut self,
        file: &Path,
        base_dir: &Path,
        path: &Located<String>,
    ) -> Option<Arc<Mapping>> {
        let full = base_dir.join(&path.value);
        if let Some(cached) = self.mappings.get(&full) {
            return cached.clone();
        }
        let loaded = if full.is_file() {
            self.compile_named(file, path, &full, "mapping", |tree| {
                Mapping::compile(&full, tree)
            })
        } else {
            let message = format!(
                "mapping file not found: {} (paths are relative to the main config file)",
                base_dir.join(path.shown()).display()
            );
            self.report(file, path.position(), message);
            None
        };
        self.mappings.insert(full, loaded.clone());
        loaded
    }
}

/// `orders.<source>` for each store account: its connector's webhook source,
/// or the connector's name. An account whose connector could not be loaded
/// may be a store too: its connector name counts, so its mistake is not
/// reported again at every pipeline.
fn source_topics(accounts: &BTreeMap<String, AccountRef>) -> BTreeSet<String> {
    accounts
        .values()
        .filter_map(|account| match &account.connector {
            Some(_) => source_topic(account),
            None => account
                .connector_name
                .as_ref()
                .map(|name| format!("orders.{name}")),
        })
        .collect()
}

/// The topics a pipeline names that came from `${VAR}` substitution, with
/// the text messages show instead; the default dead-letter topic is the
/// name's, and is shown as the name is.
fn shown_topics(raw: &RawPipeline) -> Vec<(String, String)> {
    let dead_letter = match &raw.dead_letter {
        Some(d) => (d.topic.value.clone(), d.topic.shown().to_string()),
        None => (
            format!("dlq.{}", raw.name.value),
            format!("dlq.{}", raw.name.shown()),
        ),
    };
    let written = [
        Some(&raw.input.topic),
        raw.output.as_ref().map(|o| &o.topic),
    ];
    written
        .into_iter()
        .flatten()
        .map(|t| (t.value.clone(), t.shown().to_string()))
        .chain([dead_letter])
        .filter(|(value, shown)| value != shown)
        .collect()
}

/// The courier accounts the `route` steps can choose, each once.
fn routed_accounts(steps: &[Step]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for step in steps {
        if let Step::Route(rules) = step {
            for rule in rules {
                if !names.contains(&rule.to.as_str()) {
                    names.push(&rule.to);
                }
            }
        }
    }
    names
}

fn validation_rule(rule: RawRule) -> ValidationRule {
    match rule {
        RawRule::Phone => ValidationRule::Phone,
        RawRule::ShippingAddress => ValidationRule::ShippingAddress,
        RawRule::CodAmount => ValidationRule::CodAmount,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn pipeline_semantics() {
        let pipeline = |name: &str, extra: &str| {
            format!(
                "name: {name}\ninput: {{ topic: t, accounts: [shop] }}\nsteps:\n  - book: {{}}\n  - route:\n      - to: couier\n{extra}"
            )
        };
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "pipelines: [pipelines/a.yaml, pipelines/b.yaml, pipelines/missing.yaml, 'more/*.yaml']\n",
            ),
            (
                "pipelines/a.yaml",
                &pipeline("same", "retry: { initial: 5 min }\nmax_in_flight: 0\n"),
            ),
            ("pipelines/b.yaml", &pipeline("same", "")),
        ]);
        let problems = tree.problems();
        let expected = [
            ("waybill.yaml", 1, 49),
            ("waybill.yaml", 1, 73),
            ("pipelines/a.yaml", 2, 31),
            ("pipelines/a.yaml", 4, 5),
            ("pipelines/a.yaml", 6, 13),
            ("pipelines/a.yaml", 7, 19),
            ("pipelines/a.yaml", 8, 16),
            ("pipelines/b.yaml", 2, 31),
            ("pipelines/b.yaml", 4, 5),
            ("pipelines/b.yaml", 6, 13),
        ];
        assert_positions(&problems, &expected);
        assert_mentions(&problems[0], "pipeline file not found");
        assert_mentions(&problems[1], "no pipeline file matches `more/*.yaml`");
        assert_mentions(&problems[3], "`book` needs a `route`");
        assert_mentions(&problems[5], "invalid duration `5 min`");
    }

    /// A pipeline consuming `input` and producing `output`, so that a
    /// pipeline under test has something producing its input.
    fn producer(name: &str, input: &str, output: &str) -> String {
        format!(
            "name: {name}\ninput: {{ topic: {input} }}\nsteps:\n  - validate: {{ rules: [phone] }}\noutput: {{ topic: {output} }}\n"
        )
    }

    #[test]
    fn an_input_nothing_produces_is_located_with_a_suggestion() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts:\n  shop-main: { connector: shop }\n  courier-main: { connector: courier }\n",
            ),
            (
                "connectors/shop.yaml",
                "name: shop\nkind: store\nwebhook: { source: shopp }\n",
            ),
            (
                "connectors/courier.yaml",
                "name: courier\nkind: courier\nbase_url: https://c.example\noperations:\n  book:\n    request: { method: POST, path: /b }\n    success: 'true'\n    extract: { tracking_number: $.cn }\n",
            ),
            (
                "pipelines/a.yaml",
                &producer("a", "orders.shop", "shipments.booked"),
            ),
            ("pipelines/b.yaml", &producer("b", "shipments.boked", "x")),
            ("pipelines/c.yaml", &producer("c", "dlq.a", "y")),
            ("pipelines/d.yaml", &producer("d", "orders.shopp", "z")),
        ]);
        let problems = tree.problems();
        assert_positions(
            &problems,
            &[("pipelines/a.yaml", 2, 17), ("pipelines/b.yaml", 2, 17)],
        );
        assert!(
            problems[0]
                .3
                .contains("no source or pipeline produces `orders.shop`")
                && problems[0].3.contains("did you mean `orders.shopp`"),
            "{}",
            problems[0].3
        );
        assert_mentions(&problems[1], "did you mean `shipments.booked`");
    }

    #[test]
    fn an_unreadable_mapping_is_reported_where_it_is_named() {
        let pipeline = "name: p\ninput: { topic: t }\nsteps:\n  - map: mappings/m.yaml\n";
        let tree = Tree::new(&[("waybill.yaml", "{}\n"), ("pipelines/p.yaml", pipeline)]);
        // Not UTF-8: the file is there but cannot be read as text.
        tree.write("mappings/m.yaml", b"a: \xff\n");
        let problem = tree.sole_problem(("pipelines/p.yaml", 4, 10));
        assert_mentions(&problem, "cannot read");
    }

    #[test]
    fn duplicate_pipeline_names() {
        let pipeline =
            "name: same\ninput: { topic: t }\nsteps:\n  - validate: { rules: [phone] }\n";
        let tree = Tree::new(&[
            ("waybill.yaml", "{}\n"),
            ("pipelines/a.yaml", pipeline),
            ("pipelines/b.yaml", pipeline),
            ("pipelines/z.yaml", &producer("z", "dlq.same", "t")),
        ]);
        let problem = tree.sole_problem(("pipelines/b.yaml", 1, 7));
        assert_mentions(&problem, "duplicate pipeline name `same`");
    }

    #[test]
    fn compiled_pipeline_defaults() {
        let pipeline = "name: p\ninput: { topic: t }\nsteps:\n  - validate: { rules: [phone, cod_amount] }\nretry: { initial: 1s }\n";
        let tree = Tree::new(&[
            ("waybill.yaml", "{}\n"),
            ("pipelines/p.yaml", pipeline),
            ("pipelines/q.yaml", &producer("q", "dlq.p", "t")),
        ]);
        let config = tree.load().unwrap();
        let p = &config.pipelines[0];
        assert_eq!(
            (p.name.as_str(), p.input.as_str(), p.group()),
            ("p", "t", "waybill.p".to_string())
        );
        assert_eq!(p.dead_letter, "dlq.p");
        assert_eq!(p.max_in_flight, 64);
        assert_eq!(p.output, None);
        assert_eq!(
            p.retry,
            RetryPolicy {
                initial: std::time::Duration::from_secs(1),
                ..RetryPolicy::default()
            }
        );
        assert!(
            matches!(&p.steps[..], [Step::Validate(rules)] if rules == &[ValidationRule::Phone, ValidationRule::CodAmount])
        );
    }

    #[test]
    fn on_change_values_are_checked_where_written() {
        let compile = |extra: &str, steps: &str| {
            let yaml = format!("name: p\ninput: {{ topic: t }}\nsteps:\n{steps}{extra}");
            let tree = Tree::new(&[
                ("waybill.yaml", "{}\n"),
                ("pipelines/p.yaml", &yaml),
                ("pipelines/q.yaml", &producer("q", "dlq.p", "t")),
            ]);
            let problems: Vec<crate::diagnostic::Diagnostic> = tree
                .load()
                .err()
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.message.contains("on_change"))
                .collect();
            problems
        };
        let book = "  - route: [ { to: courier-main } ]\n  - book: {}\n";
        let typo = compile("on_change: rebok\n", book);
        assert!(
            typo.iter().any(|d| d.line == 6
                && d.message.contains("unknown `on_change` value `rebok`")
                && d.message.contains("did you mean `rebook`")),
            "{typo:#?}"
        );
        let no_book = compile("on_change: ignore\n", "  - trigger: 'true'\n");
        assert!(
            no_book
                .iter()
                .any(|d| d.line == 5 && d.message.contains("no `book` step")),
            "{no_book:#?}"
        );
        assert!(compile("on_change: ignore\n", book).is_empty());
    }

    #[test]
    fn shipped_trigger_takes_paid_and_cod_orders_and_cancellations() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/shopify-orders.yaml");
        let node = yaml::parse(&std::fs::read_to_string(file).unwrap()).unwrap();
        let raw: RawPipeline = yaml::from_node(&node).unwrap();
        let Ok(RawStep::Trigger(source)) = yaml::from_node::<RawStep>(&raw.steps[0]) else {
            panic!("the first step is not a trigger")
        };
        let trigger = Expr::compile(&source.value).unwrap();
        let fires = |topic: &str, gateway: &str, cancelled_at: serde_json::Value| {
            let ctx = serde_json::json!({
                "event": { "topic": topic, "account": "shopify-main", "source": "shopify", "headers": {} },
                "order": { "payment_gateway_names": [gateway], "cancelled_at": cancelled_at },
                "account": { "name": "shopify-main", "settings": { "cod_gateways": ["Cash on Delivery (COD)"] } },
            });
            trigger.eval_bool(&ctx).unwrap()
        };
        let cod = "Cash on Delivery (COD)";
        let null = serde_json::Value::Null;
        assert!(fires("orders/paid", "shopify_payments", null.clone()));
        assert!(fires("orders/create", cod, null.clone()));
        assert!(fires("orders/updated", cod, null.clone()));
        assert!(!fires("orders/create", "shopify_payments", null.clone()));
        assert!(!fires("orders/cancelled", cod, null.clone()));
        // Cancellations reach the booking step, which never books them and
        // cancels a booking made before.
        let cancelled = serde_json::json!("2026-01-01T00:00:00Z");
        assert!(fires(
            "orders/cancelled",
            "shopify_payments",
            cancelled.clone()
        ));
        assert!(fires("orders/updated", cod, cancelled));
    }

    #[test]
    fn shopify_samples_map_to_valid_canonical_shipments() {
        use crate::config::ValidationRule::{CodAmount, Phone, ShippingAddress};
        use crate::mapping::tests::sample_shipment;
        use crate::stages::validate::validate;
        let cod = sample_shipment("samples/shopify/order-cod.json");
        assert_eq!(cod.order_id, "820982911946154508");
        assert_eq!(cod.cod_amount.to_string(), "5050.00");
        assert_eq!(validate(&cod, &[Phone, ShippingAddress, CodAmount]), Ok(()));
        let prepaid = sample_shipment("samples/shopify/order-prepaid.json");
        assert_eq!(
            (prepaid.payment.as_str(), prepaid.items.len()),
            ("prepaid", 1)
        );
        assert_eq!(
            validate(&prepaid, &[Phone, ShippingAddress, CodAmount]),
            Ok(())
        );
        let no_phone = sample_shipment("samples/shopify/order-no-phone.json");
        let failures = validate(&no_phone, &[Phone, ShippingAddress, CodAmount]).unwrap_err();
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].starts_with("recipient has no usable phone"),
            "{failures:?}"
        );
    }
}
