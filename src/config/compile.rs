//! Turns raw configuration files into the checked [`Config`], collecting
//! every problem as a located [`Diagnostic`] instead of stopping at the first.
//!
//! Each file is parsed on its own, each account and each pipeline step is read
//! on its own, and one semantic pass then checks what refers to what
//! (connectors, credential and settings schemas, route targets, mappings,
//! expressions).
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: postex, credentials: { token: "${POSTEX_TOKEN}" } }
//! ```

use super::interpolate::{Lookup, interpolate_node};
use super::raw::{
    BusKind, RawAccount, RawConfig, RawDuration, RawPipeline, RawRetry, RawRoute, RawRule, RawStep,
};
use super::{
    Account, BusSettings, Config, Diagnostic, HttpSettings, Pipeline, RetryPolicy, RouteRule, Step,
    StoreSettings, ValidationRule,
};
use crate::connector::{Connector, ConnectorKind, FieldSpec, FieldType};
use crate::diagnostic::did_you_mean;
use crate::mapping::{Expr, Mapping};
use crate::yaml::{self, Located, Node, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
const DEFAULT_LISTEN_PORT: u16 = 8080;

/// Reads and compiles the configuration rooted at `path`, taking `${VAR}`
/// values from `lookup`.
pub fn load_with(path: &Path, lookup: Lookup<'_>) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Compiler {
        diagnostics: Vec::new(),
        lookup,
        mappings: BTreeMap::new(),
    };
    let config = cx.config(path);
    match config {
        Some(config) if cx.diagnostics.is_empty() => Ok(config),
        _ => Err(cx.into_sorted()),
    }
}

struct Compiler<'a> {
    diagnostics: Vec<Diagnostic>,
    lookup: Lookup<'a>,
    /// Mappings already loaded, so one shared by pipelines is read (and reported) once.
    mappings: BTreeMap<PathBuf, Option<Arc<Mapping>>>,
}

/// What a pipeline may refer to about an account, including accounts that
/// failed to compile (so their mistakes are not reported again at each use).
struct AccountRef {
    /// `None` when the connector could not be loaded.
    connector: Option<Arc<Connector>>,
}

impl AccountRef {
    fn kind(&self) -> Option<ConnectorKind> {
        self.connector.as_ref().map(|c| c.kind)
    }
}

impl Compiler<'_> {
    fn report(&mut self, file: &Path, line: usize, column: usize, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(file, line, column, message));
    }

    fn report_node_errors(&mut self, file: &Path, errors: Vec<yaml::Error>) {
        for e in errors {
            self.report(file, e.line, e.column, e.to_string());
        }
    }

    /// Problems grouped by file in the order files were read, then by position.
    fn into_sorted(self) -> Vec<Diagnostic> {
        let mut order: Vec<&PathBuf> = Vec::new();
        for d in &self.diagnostics {
            if !order.contains(&&d.file) {
                order.push(&d.file);
            }
        }
        let rank = |d: &Diagnostic| {
            order
                .iter()
                .position(|f| **f == d.file)
                .unwrap_or(usize::MAX)
        };
        let mut sorted = self.diagnostics.clone();
        sorted.sort_by_key(|d| (rank(d), d.line, d.column));
        sorted.dedup();
        sorted
    }

    /// Reads, parses and substitutes one YAML file.
    fn read_yaml(&mut self, file: &Path) -> Option<Node> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                self.report(file, 0, 0, format!("cannot read file: {e}"));
                return None;
            }
        };
        let mut node = match yaml::parse(&text) {
            Ok(node) => node,
            Err(e) => {
                self.report(file, e.line, e.column, format!("invalid YAML: {e}"));
                return None;
            }
        };
        interpolate_node(&mut node, file, self.lookup, &mut self.diagnostics);
        Some(node)
    }

    fn config(&mut self, path: &Path) -> Option<Config> {
        let node = self.read_yaml(path)?;
        if node.value == Value::Null {
            self.report(
                path,
                1,
                1,
                "the file is empty; expected a map with `accounts:` and `pipelines:`",
            );
            return None;
        }
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawConfig>(&node, &mut errors);
        self.report_node_errors(path, errors);
        let raw = raw?;

        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Collecting the components drops the inner `.` of `./` + `./data`,
        // so logs and errors show `./data`, not `././data`.
        let data_dir: PathBuf = base_dir
            .join(raw.data_dir.as_ref().map_or("./data", |d| d.value.as_str()))
            .components()
            .collect();
        let (bus, kafka_at) = self.bus(path, &raw);
        let store = self.store(path, &raw, &base_dir, &data_dir, kafka_at);
        let http = self.http(path, &raw);

        let mut connectors = BTreeMap::new();
        let mut accounts = BTreeMap::new();
        let mut account_refs = BTreeMap::new();
        for (name, node) in &raw.accounts {
            let (account, connector) = self.account(path, &base_dir, name, node, &mut connectors);
            account_refs.insert(name.clone(), AccountRef { connector });
            if let Some(account) = account {
                accounts.insert(name.clone(), Arc::new(account));
            }
        }
        let connectors = connectors
            .into_iter()
            .filter_map(|(name, c)| Some((name, c?)))
            .collect();

        let pipelines = self.pipelines(path, &base_dir, raw.pipelines.as_deref(), &account_refs);
        Some(Config {
            path: path.to_path_buf(),
            base_dir,
            data_dir,
            bus,
            store,
            http,
            accounts,
            connectors,
            pipelines,
        })
    }

    /// The bus, and where Kafka was chosen (for the shared-store check).
    fn bus(&mut self, file: &Path, raw: &RawConfig) -> (BusSettings, Option<(usize, usize)>) {
        let Some(bus) = &raw.bus else {
            return (BusSettings::Embedded, None);
        };
        let at = (bus.kind.line, bus.kind.column);
        match bus.kind.value {
            BusKind::Embedded => {
                if let Some(b) = &bus.brokers {
                    self.report(
                        file,
                        b.line,
                        b.column,
                        "`brokers` is only used with `kind: kafka`",
                    );
                }
                if let Some(p) = &bus.properties {
                    self.report(
                        file,
                        p.line,
                        p.column,
                        "`properties` is only used with `kind: kafka`",
                    );
                }
                if let Some(p) = &bus.topic_prefix {
                    self.report(
                        file,
                        p.line,
                        p.column,
                        "`topic_prefix` is only used with `kind: kafka`",
                    );
                }
                (BusSettings::Embedded, None)
            }
            BusKind::Kafka => {
                let brokers = match &bus.brokers {
                    Some(b) if !b.value.trim().is_empty() => b.value.clone(),
                    _ => {
                        self.report(
                            file,
                            at.0,
                            at.1,
                            "`kind: kafka` needs `brokers`, e.g. `brokers: \"localhost:9092\"`",
                        );
                        String::new()
                    }
                };
                let properties = bus
                    .properties
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default();
                let topic_prefix = bus
                    .topic_prefix
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default();
                (
                    BusSettings::Kafka {
                        brokers,
                        topic_prefix,
                        properties,
                    },
                    Some(at),
                )
            }
        }
    }

    fn store(
        &mut self,
        file: &Path,
        raw: &RawConfig,
        base_dir: &Path,
        data_dir: &Path,
        kafka_at: Option<(usize, usize)>,
    ) -> StoreSettings {
        let url = raw.store.as_ref().and_then(|s| s.url.as_ref());
        let shared = data_dir.join(crate::bus::embedded::DATABASE_FILE);
        let resolved = match url {
            Some(url) => {
                let known = ["sqlite://", "postgres://", "postgresql://"];
                if !known.iter().any(|scheme| url.value.starts_with(scheme)) {
                    self.report(file, url.line, url.column, format!("store url `{}` is not supported: expected `sqlite://PATH` or `postgres://…`", url.value));
                }
                // The embedded bus keeps the store in its own database, so
                // that append and dedupe are one transaction (DESIGN §8): a
                // SQLite file of its own would be silently unused.
                if let (None, Some(named)) = (kafka_at, url.value.strip_prefix("sqlite://")) {
                    let named = named.split('?').next().unwrap_or_default();
                    if base_dir.join(named) != shared {
                        self.report(file, url.line, url.column, format!("with the embedded bus the store is kept in the bus's database, `{}`: remove `store.url`, or set it to a postgres:// URL", shared.display()));
                    }
                }
                url.value.clone()
            }
            None => format!("sqlite://{}", shared.display()),
        };
        if let Some((line, column)) = kafka_at
            && !(resolved.starts_with("postgres://") || resolved.starts_with("postgresql://"))
        {
            let (line, column) = url.map_or((line, column), |u| (u.line, u.column));
            self.report(
                file,
                line,
                column,
                "kafka needs a shared store: set store.url to a postgres:// URL",
            );
        }
        StoreSettings { url: resolved }
    }

    fn http(&mut self, file: &Path, raw: &RawConfig) -> HttpSettings {
        let http = raw.http.as_ref();
        let listen = http
            .and_then(|h| h.listen)
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_LISTEN_PORT)));
        let admin_token = http
            .and_then(|h| h.admin_token.clone())
            .filter(|t| !t.is_empty());
        let max_body_bytes = match http.and_then(|h| h.max_body_bytes.as_ref()) {
            Some(m) if m.value == 0 => {
                self.report(
                    file,
                    m.line,
                    m.column,
                    "`max_body_bytes` must be at least 1",
                );
                DEFAULT_MAX_BODY_BYTES
            }
            Some(m) => m.value,
            None => DEFAULT_MAX_BODY_BYTES,
        };
        HttpSettings {
            listen,
            admin_token,
            max_body_bytes,
        }
    }

    /// Loads a connector once; `None` (kept in the cache) when it is unknown or broken.
    fn connector(
        &mut self,
        file: &Path,
        base_dir: &Path,
        name: &Located<String>,
        cache: &mut BTreeMap<String, Option<Arc<Connector>>>,
    ) -> Option<Arc<Connector>> {
        if let Some(cached) = cache.get(&name.value) {
            return cached.clone();
        }
        let dir = base_dir.join("connectors");
        let connector_file = dir.join(format!("{}.yaml", name.value));
        let valid_name = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let loaded = if valid_name && connector_file.is_file() {
            match Connector::load_with_base(&connector_file, base_dir) {
                Ok(c) => Some(Arc::new(c)),
                Err(diagnostics) => {
                    self.report(
                        file,
                        name.line,
                        name.column,
                        format!(
                            "connector `{}` has errors (listed under {})",
                            name.value,
                            connector_file.display()
                        ),
                    );
                    self.diagnostics.extend(diagnostics);
                    None
                }
            }
        } else {
            let available = available_connectors(&dir);
            let mut message = format!("unknown connector `{}`", name.value);
            if let Some(s) = did_you_mean(&name.value, available.iter().map(String::as_str)) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
            if available.is_empty() {
                message.push_str(&format!("; no connector files found in {}", dir.display()));
            } else {
                message.push_str(&format!("; available: {}", available.join(", ")));
            }
            self.report(file, name.line, name.column, message);
            None
        };
        cache.insert(name.value.clone(), loaded.clone());
        loaded
    }

    fn account(
        &mut self,
        file: &Path,
        base_dir: &Path,
        name: &str,
        node: &Node,
        connectors: &mut BTreeMap<String, Option<Arc<Connector>>>,
    ) -> (Option<Account>, Option<Arc<Connector>>) {
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawAccount>(node, &mut errors);
        let clean = errors.is_empty();
        self.report_node_errors(file, errors);
        let Some(raw) = raw else { return (None, None) };
        let Some(connector) = self.connector(file, base_dir, &raw.connector, connectors) else {
            return (None, None);
        };

        let at = (node.line, node.column);
        let what = Schema {
            account: name,
            connector: &connector.name,
            at,
        };
        let credentials = self.fields(
            file,
            &what,
            "credential",
            &connector.credentials,
            raw.credentials.as_ref(),
        );
        let settings = self.fields(
            file,
            &what,
            "setting",
            &connector.settings,
            raw.settings.as_ref(),
        );
        if let Some(url) = &raw.base_url
            && let Err(e) = url::Url::parse(&url.value)
        {
            self.report(file, url.line, url.column, format!("`base_url` is not a valid URL ({e}): expected e.g. `https://api.example.com/v1`"));
        }
        let (Some(credentials), Some(settings)) = (credentials, settings) else {
            return (None, Some(connector));
        };
        if !clean {
            return (None, Some(connector));
        }
        let secrets = connector
            .credentials
            .iter()
            .filter(|(_, spec)| spec.secret)
            .filter_map(|(field, _)| credentials.get(field))
            .filter_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
            .collect();
        let credentials = credentials
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect();
        let account = Account {
            name: name.to_string(),
            connector: connector.name.clone(),
            credentials,
            settings,
            base_url: raw.base_url.map(|u| u.value),
            secrets,
        };
        (Some(account), Some(connector))
    }

    /// Checks `credentials:` or `settings:` against the connector's schema,
    /// filling in defaults. `None` when something was wrong.
    fn fields(
        &mut self,
        file: &Path,
        what: &Schema<'_>,
        noun: &str,
        schema: &BTreeMap<String, FieldSpec>,
        node: Option<&Node>,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let before = self.diagnostics.len();
        let mut values = serde_json::Map::new();
        let entries = match node.map(|n| (n, n.entries())) {
            None => &[][..],
            Some((n, _)) if n.value == Value::Null => &[][..],
            Some((_, Some(entries))) => entries,
            Some((n, None)) => {
                self.report(
                    file,
                    n.line,
                    n.column,
                    format!("{noun}s: expected a map of name: value, found {}", n.kind()),
                );
                return None;
            }
        };
        for (key, value) in entries {
            let Some(spec) = schema.get(&key.name) else {
                let mut message = format!(
                    "unknown {noun} `{}` for connector `{}`",
                    key.name, what.connector
                );
                if let Some(s) = did_you_mean(&key.name, schema.keys().map(String::as_str)) {
                    message.push_str(&format!(" (did you mean `{s}`?)"));
                }
                if schema.is_empty() {
                    message.push_str(&format!("; it takes no {noun}s"));
                } else {
                    let names: Vec<&str> = schema.keys().map(String::as_str).collect();
                    message.push_str(&format!("; expected: {}", names.join(", ")));
                }
                self.report(file, key.line, key.column, message);
                continue;
            };
            match typed(value, spec.field_type) {
                Some(v) if spec.required && v.as_str() == Some("") => {
                    let message = format!(
                        "{noun} `{}` is empty; connector `{}` requires it ({})",
                        key.name, what.connector, spec.description
                    );
                    self.report(file, value.line, value.column, message);
                }
                Some(v) => {
                    values.insert(key.name.clone(), v);
                }
                None if value.value == Value::Null => {}
                None => {
                    let message = format!(
                        "{noun} `{}` must be {}, found {}",
                        key.name,
                        type_name(spec.field_type),
                        value.kind()
                    );
                    self.report(file, value.line, value.column, message);
                }
            }
        }
        for (field, spec) in schema {
            if values.contains_key(field)
                || entries
                    .iter()
                    .any(|(k, v)| &k.name == field && v.value != Value::Null)
            {
                continue;
            }
            if let Some(default) = &spec.default {
                values.insert(field.clone(), default.clone());
            } else if spec.required {
                let mut message = format!(
                    "account `{}` is missing {noun} `{field}` required by connector `{}`",
                    what.account, what.connector
                );
                if !spec.description.is_empty() {
                    message.push_str(&format!(" ({})", spec.description));
                }
                self.report(file, what.at.0, what.at.1, message);
            }
        }
        (self.diagnostics.len() == before).then_some(values)
    }

    fn pipelines(
        &mut self,
        file: &Path,
        base_dir: &Path,
        patterns: Option<&[Located<String>]>,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Vec<Arc<Pipeline>> {
        let default = [Located {
            value: "pipelines/*.yaml".to_string(),
            line: 0,
            column: 0,
        }];
        let patterns = patterns.unwrap_or(&default);
        let mut files: Vec<PathBuf> = Vec::new();
        for pattern in patterns {
            let full = base_dir.join(&pattern.value);
            let full_text = full.to_string_lossy().into_owned();
            let is_glob = pattern.value.contains(['*', '?', '[']);
            match glob::glob(&full_text) {
                Err(e) => self.report(
                    file,
                    pattern.line,
                    pattern.column,
                    format!("invalid pipeline pattern `{}`: {}", pattern.value, e.msg),
                ),
                Ok(paths) => {
                    let mut matched: Vec<PathBuf> = paths
                        .filter_map(Result::ok)
                        .filter(|p| p.is_file())
                        .collect();
                    matched.sort();
                    if matched.is_empty() && !is_glob {
                        self.report(
                            file,
                            pattern.line,
                            pattern.column,
                            format!("pipeline file not found: {}", full.display()),
                        );
                    }
                    for m in matched {
                        if !files.contains(&m) {
                            files.push(m);
                        }
                    }
                }
            }
        }
        let mut seen: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
        let mut pipelines = Vec::new();
        for pipeline_file in files {
            let Some(pipeline) = self.pipeline(&pipeline_file, base_dir, accounts) else {
                continue;
            };
            if let Some((other, line)) = seen.get(&pipeline.0.name) {
                let message = format!(
                    "duplicate pipeline name `{}` (also used at {}:{line})",
                    pipeline.0.name,
                    other.display()
                );
                self.report(&pipeline_file, pipeline.1.0, pipeline.1.1, message);
                continue;
            }
            seen.insert(
                pipeline.0.name.clone(),
                (pipeline_file.clone(), pipeline.1.0),
            );
            pipelines.push(Arc::new(pipeline.0));
        }
        pipelines
    }

    /// A compiled pipeline and the position of its name.
    fn pipeline(
        &mut self,
        file: &Path,
        base_dir: &Path,
        accounts: &BTreeMap<String, AccountRef>,
    ) -> Option<(Pipeline, (usize, usize))> {
        let node = self.read_yaml(file)?;
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawPipeline>(&node, &mut errors);
        let mut clean = errors.is_empty();
        self.report_node_errors(file, errors);
        let raw: RawPipeline = raw?;
        let before = self.diagnostics.len();

        let name = raw.name.value.clone();
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            self.report(
                file,
                raw.name.line,
                raw.name.column,
                format!("invalid pipeline name `{name}`: use letters, digits, `-`, `_` and `.`"),
            );
        }
        if raw.input.topic.value.trim().is_empty() {
            self.report(
                file,
                raw.input.topic.line,
                raw.input.topic.column,
                "`input.topic` is empty: expected a topic such as `orders.shopify`",
            );
        }
        let mut input_accounts = Vec::new();
        for account in raw.input.accounts.iter().flatten() {
            match self
                .account_ref(file, account, accounts)
                .and_then(AccountRef::kind)
            {
                Some(ConnectorKind::Courier) => {
                    self.report(file, account.line, account.column, format!("account `{}` is a courier account; `input.accounts` lists store accounts", account.value));
                }
                _ => input_accounts.push(account.value.clone()),
            }
        }

        let mut steps = Vec::new();
        let mut routed = false;
        for (index, step_node) in raw.steps.iter().enumerate() {
            let step = match yaml::from_node::<RawStep>(step_node) {
                Ok(step) => step,
                Err(e) => {
                    self.report(file, e.line, e.column, format!("step {}: {e}", index + 1));
                    clean = false;
                    continue;
                }
            };
            let compiled = match step {
                RawStep::Trigger(source) => self.expr(file, "trigger", &source).map(Step::Trigger),
                RawStep::Map(path) => self.mapping(file, base_dir, &path).map(Step::Map),
                RawStep::Validate(v) => {
                    if v.rules.is_empty() {
                        self.report(file, step_node.line, step_node.column, "`validate.rules` is empty: expected some of phone, shipping_address, cod_amount");
                    }
                    Some(Step::Validate(
                        v.rules.iter().map(|r| validation_rule(*r)).collect(),
                    ))
                }
                RawStep::Route(rules) => {
                    routed = true;
                    self.route(file, step_node, &rules, accounts)
                        .map(Step::Route)
                }
                RawStep::Book(_) => {
                    if !routed {
                        self.report(
                            file,
                            step_node.line,
                            step_node.column,
                            "`book` needs a `route` step before it to choose the courier account",
                        );
                    }
                    Some(Step::Book)
                }
            };
            steps.extend(compiled);
        }
        if raw.steps.is_empty() {
            self.report(file, node.line, node.column, "`steps` is empty: expected at least one step (trigger, map, validate, route, book)");
        }

        let retry = self.retry(file, raw.retry.as_ref());
        let max_in_flight = match &raw.max_in_flight {
            Some(m) if m.value == 0 => {
                self.report(file, m.line, m.column, "`max_in_flight` must be at least 1");
                DEFAULT_MAX_IN_FLIGHT
            }
            Some(m) => m.value,
            None => DEFAULT_MAX_IN_FLIGHT,
        };
        let dead_letter = raw
            .dead_letter
            .map_or_else(|| format!("dlq.{name}"), |d| d.topic.value);
        if !clean || self.diagnostics.len() != before {
            return None;
        }
        let pipeline = Pipeline {
            name,
            input: raw.input.topic.value,
            accounts: input_accounts,
            steps,
            output: raw.output.map(|o| o.topic.value),
            retry,
            dead_letter,
            max_in_flight,
            file: file.to_path_buf(),
        };
        Some((pipeline, (raw.name.line, raw.name.column)))
    }

    fn account_ref<'r>(
        &mut self,
        file: &Path,
        name: &Located<String>,
        accounts: &'r BTreeMap<String, AccountRef>,
    ) -> Option<&'r AccountRef> {
        let found = accounts.get(&name.value);
        if found.is_none() {
            let mut message = format!("unknown account `{}`", name.value);
            if let Some(s) = did_you_mean(&name.value, accounts.keys().map(String::as_str)) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
            if accounts.is_empty() {
                message.push_str("; no accounts are defined in the main config file");
            } else {
                let names: Vec<&str> = accounts.keys().map(String::as_str).collect();
                message.push_str(&format!("; defined accounts: {}", names.join(", ")));
            }
            self.report(file, name.line, name.column, message);
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
            self.report(file, step.line, step.column, "`route` is empty: expected a list of `{ when: EXPR, to: ACCOUNT }`, the last one without `when`");
            return None;
        }
        let mut compiled = Vec::new();
        let mut default_seen = false;
        let mut failed = false;
        for rule in rules {
            if default_seen {
                self.report(file, rule.to.line, rule.to.column, "this route rule is never used: a rule without `when` before it matches everything");
            }
            let target = self.account_ref(file, &rule.to, accounts);
            if let Some(connector) = target.and_then(|a| a.connector.as_ref()) {
                let (line, column) = (rule.to.line, rule.to.column);
                if connector.kind == ConnectorKind::Store {
                    let message = format!(
                        "account `{}` is a store account; `route.to` must name a courier account",
                        rule.to.value
                    );
                    self.report(file, line, column, message);
                } else if !connector.has_operation("book") {
                    let message = format!(
                        "account `{}` uses connector `{}`, which has no `book` operation",
                        rule.to.value, connector.name
                    );
                    self.report(file, line, column, message);
                }
            }
            let when = match &rule.when {
                Some(source) => match self.expr(file, "route `when`", source) {
                    Some(expr) => Some(expr),
                    None => {
                        failed = true;
                        None
                    }
                },
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

    fn expr(&mut self, file: &Path, what: &str, source: &Located<String>) -> Option<Expr> {
        match Expr::compile(&source.value) {
            Ok(expr) => Some(expr),
            Err(e) => {
                self.report(
                    file,
                    source.line,
                    source.column,
                    format!("invalid {what} expression: {e}"),
                );
                None
            }
        }
    }

    fn mapping(
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
            match Mapping::load(&full) {
                Ok(m) => Some(Arc::new(m)),
                Err(diagnostics) => {
                    self.report(
                        file,
                        path.line,
                        path.column,
                        format!(
                            "mapping `{}` has errors (listed under {})",
                            path.value,
                            full.display()
                        ),
                    );
                    self.diagnostics.extend(diagnostics);
                    None
                }
            }
        } else {
            self.report(
                file,
                path.line,
                path.column,
                format!(
                    "mapping file not found: {} (paths are relative to the main config file)",
                    full.display()
                ),
            );
            None
        };
        self.mappings.insert(full, loaded.clone());
        loaded
    }

    fn retry(&mut self, file: &Path, raw: Option<&RawRetry>) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        let Some(raw) = raw else { return policy };
        if let Some(m) = &raw.max_attempts {
            if m.value == 0 {
                self.report(
                    file,
                    m.line,
                    m.column,
                    "`max_attempts` must be at least 1 (1 means no retries)",
                );
            } else {
                policy.max_attempts = m.value;
            }
        }
        let take =
            |d: &Option<Located<RawDuration>>| d.as_ref().map(|d| (d.value.0, d.line, d.column));
        let initial = take(&raw.initial);
        let max_delay = take(&raw.max_delay);
        let max_elapsed = take(&raw.max_elapsed);
        policy.initial = initial.map_or(policy.initial, |d| d.0);
        policy.max_delay = max_delay.map_or(policy.max_delay, |d| d.0);
        policy.max_elapsed = max_elapsed.map_or(policy.max_elapsed, |d| d.0);
        if policy.initial > policy.max_delay {
            let (line, column) = initial.or(max_delay).map_or((0, 0), |d| (d.1, d.2));
            self.report(
                file,
                line,
                column,
                "`retry.initial` is longer than `retry.max_delay`",
            );
        }
        policy
    }
}

/// Which account and connector a schema check is for, and where the account is.
struct Schema<'a> {
    account: &'a str,
    connector: &'a str,
    at: (usize, usize),
}

fn validation_rule(rule: RawRule) -> ValidationRule {
    match rule {
        RawRule::Phone => ValidationRule::Phone,
        RawRule::ShippingAddress => ValidationRule::ShippingAddress,
        RawRule::CodAmount => ValidationRule::CodAmount,
    }
}

/// The value as JSON of the declared type; `None` when it does not fit.
fn typed(node: &Node, field_type: FieldType) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    // A `${VAR}` value is text, but may stand for a number, bool or list.
    let reparsed;
    let node = match &node.value {
        Value::Str(s) if node.interpolated && field_type != FieldType::String => {
            reparsed = yaml::parse(s).ok()?;
            &reparsed
        }
        _ => node,
    };
    match (field_type, &node.value) {
        (FieldType::String, Value::Seq(_) | Value::Map(_) | Value::Null) => None,
        (FieldType::String, _) => node.scalar_text().map(J::String),
        (FieldType::Bool, Value::Bool(b)) => Some(J::Bool(*b)),
        (FieldType::Number, Value::Int(_) | Value::UInt(_) | Value::Float(_)) => {
            Some(node.to_json())
        }
        (FieldType::List, Value::Seq(_)) => Some(node.to_json()),
        _ => None,
    }
}

fn type_name(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String => "a string",
        FieldType::Number => "a number",
        FieldType::Bool => "true or false",
        FieldType::List => "a list",
    }
}

/// Connector names available in `dir` (file stems of `*.yaml`).
fn available_connectors(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config tree in a temporary directory.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Tree {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                let path = dir.path().join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            Tree { dir }
        }

        fn load(&self) -> Result<Config, Vec<Diagnostic>> {
            let env = |name: &str| (name == "TOKEN").then(|| "t0k#n: x".to_string());
            load_with(&self.dir.path().join("waybill.yaml"), &env)
        }

        /// `(file name, line, column, message)` of every problem.
        fn problems(&self) -> Vec<(String, usize, usize, String)> {
            let diagnostics = self.load().expect_err("expected problems");
            diagnostics
                .into_iter()
                .map(|d| {
                    let name = d
                        .file
                        .strip_prefix(self.dir.path())
                        .unwrap_or(&d.file)
                        .display()
                        .to_string();
                    (name, d.line, d.column, d.message)
                })
                .collect()
        }
    }

    fn positions(problems: &[(String, usize, usize, String)]) -> Vec<(&str, usize, usize)> {
        problems
            .iter()
            .map(|(f, l, c, _)| (f.as_str(), *l, *c))
            .collect()
    }

    #[test]
    fn empty_config_gets_defaults() {
        let tree = Tree::new(&[("waybill.yaml", "accounts: {}\n")]);
        let config = tree.load().unwrap();
        let base = tree.dir.path();
        assert_eq!(config.base_dir, base);
        assert_eq!(config.data_dir, base.join("./data"));
        assert_eq!(
            config.data_dir.display().to_string(),
            base.join("data").display().to_string()
        );
        assert_eq!(config.bus, BusSettings::Embedded);
        assert_eq!(
            config.store.url,
            format!(
                "sqlite://{}",
                base.join("data").join("waybill.db").display()
            )
        );
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.http.admin_token, None);
        assert_eq!(config.http.max_body_bytes, 1024 * 1024);
        assert!(config.pipelines.is_empty());
    }

    #[test]
    fn main_file_settings_and_interpolation() {
        let tree = Tree::new(&[(
            "waybill.yaml",
            "data_dir: /var/lib/waybill\nbus: { kind: kafka, brokers: 'k:9092', topic_prefix: 'team-a.', properties: { session.timeout.ms: '6000' } }\n\
             store: { url: 'postgres://db/w' }\nhttp: { listen: '0.0.0.0:9000', admin_token: '${TOKEN}', max_body_bytes: 10 }\n",
        )]);
        let config = tree.load().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/waybill"));
        let properties = BTreeMap::from([("session.timeout.ms".to_string(), "6000".to_string())]);
        assert_eq!(
            config.bus,
            BusSettings::Kafka {
                brokers: "k:9092".to_string(),
                topic_prefix: "team-a.".to_string(),
                properties
            }
        );
        assert_eq!(config.store.url, "postgres://db/w");
        assert_eq!(config.http.admin_token.as_deref(), Some("t0k#n: x"));
        assert_eq!(config.http.max_body_bytes, 10);
    }

    #[test]
    fn kafka_with_sqlite_is_rejected() {
        let tree = Tree::new(&[("waybill.yaml", "bus: { kind: kafka, brokers: 'k:9092' }\n")]);
        let problems = tree.problems();
        assert_eq!(positions(&problems), vec![("waybill.yaml", 1, 14)]);
        assert_eq!(
            problems[0].3,
            "kafka needs a shared store: set store.url to a postgres:// URL"
        );

        let tree = Tree::new(&[(
            "waybill.yaml",
            "bus: { kind: kafka, brokers: 'k:9092' }\nstore: { url: 'sqlite://x.db' }\n",
        )]);
        assert_eq!(positions(&tree.problems()), vec![("waybill.yaml", 2, 15)]);
    }

    #[test]
    fn embedded_bus_with_another_sqlite_file_is_rejected() {
        let tree = Tree::new(&[(
            "waybill.yaml",
            "data_dir: ./d\nstore: { url: 'sqlite://other.db' }\n",
        )]);
        let problems = tree.problems();
        assert_eq!(positions(&problems), vec![("waybill.yaml", 2, 15)]);
        assert!(
            problems[0].3.contains("remove `store.url`"),
            "{}",
            problems[0].3
        );
        // Naming the file it uses anyway, or PostgreSQL, is fine.
        for url in ["sqlite://d/waybill.db", "postgres://db/w"] {
            let tree = Tree::new(&[(
                "waybill.yaml",
                &*format!("data_dir: ./d\nstore: {{ url: '{url}' }}\n"),
            )]);
            assert!(tree.load().is_ok(), "{url}");
        }
    }

    #[test]
    fn topic_prefix_is_kafka_only_and_empty_by_default() {
        let tree = Tree::new(&[(
            "waybill.yaml",
            "bus: { kind: embedded, topic_prefix: 'a.' }\n",
        )]);
        let problems = tree.problems();
        assert_eq!(positions(&problems), vec![("waybill.yaml", 1, 38)]);
        assert_eq!(
            problems[0].3,
            "`topic_prefix` is only used with `kind: kafka`"
        );

        let tree = Tree::new(&[(
            "waybill.yaml",
            "bus: { kind: kafka, brokers: 'k:9092' }\nstore: { url: 'postgres://db/w' }\n",
        )]);
        let config = tree.load().unwrap();
        assert!(
            matches!(&config.bus, BusSettings::Kafka { topic_prefix, .. } if topic_prefix.is_empty())
        );
    }

    #[test]
    fn unknown_keys_at_every_level_are_all_reported() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "datadir: ./d\nbus: { kind: embeded }\nhttp: { listen: '127.0.0.1:1', max_body: 5 }\nstore: { uri: x }\n",
            ),
            (
                "pipelines/p.yaml",
                "name: p\nnmae: q\ninput: { topic: t, acounts: [] }\nsteps:\n  - validate: { rules: [phone], strict: true }\n  - route:\n      - { to: c, wen: x }\n  - bookk: {}\n\
                 retry: { max_attempts: 2, delay: 1s }\ndead_letter: { topc: d }\n",
            ),
        ]);
        let problems = tree.problems();
        let expected = vec![
            ("waybill.yaml", 1, 1),
            ("waybill.yaml", 2, 14),
            ("waybill.yaml", 3, 32),
            ("waybill.yaml", 4, 10),
            ("pipelines/p.yaml", 2, 1),
            ("pipelines/p.yaml", 3, 20),
            ("pipelines/p.yaml", 5, 33),
            ("pipelines/p.yaml", 7, 18),
            ("pipelines/p.yaml", 8, 5),
            ("pipelines/p.yaml", 9, 27),
            ("pipelines/p.yaml", 10, 16),
        ];
        assert_eq!(positions(&problems), expected, "{problems:#?}");
        assert!(
            problems[0].3.contains("did you mean `data_dir`"),
            "{}",
            problems[0].3
        );
        assert!(
            problems[1].3.contains("did you mean `embedded`"),
            "{}",
            problems[1].3
        );
        assert!(
            problems[8].3.contains("did you mean `book`"),
            "{}",
            problems[8].3
        );
    }

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
        let expected = vec![
            ("waybill.yaml", 1, 49),
            ("pipelines/a.yaml", 2, 31),
            ("pipelines/a.yaml", 4, 5),
            ("pipelines/a.yaml", 6, 13),
            ("pipelines/a.yaml", 7, 19),
            ("pipelines/a.yaml", 8, 16),
            ("pipelines/b.yaml", 2, 31),
            ("pipelines/b.yaml", 4, 5),
            ("pipelines/b.yaml", 6, 13),
        ];
        assert_eq!(positions(&problems), expected, "{problems:#?}");
        assert!(problems[0].3.contains("pipeline file not found"));
        assert!(problems[2].3.contains("`book` needs a `route`"));
        assert!(problems[4].3.contains("invalid duration `5 min`"));
    }

    #[test]
    fn duplicate_pipeline_names() {
        let pipeline =
            "name: same\ninput: { topic: t }\nsteps:\n  - validate: { rules: [phone] }\n";
        let tree = Tree::new(&[
            ("waybill.yaml", "{}\n"),
            ("pipelines/a.yaml", pipeline),
            ("pipelines/b.yaml", pipeline),
        ]);
        let problems = tree.problems();
        assert_eq!(positions(&problems), vec![("pipelines/b.yaml", 1, 7)]);
        assert!(
            problems[0].3.contains("duplicate pipeline name `same`"),
            "{}",
            problems[0].3
        );
    }

    #[test]
    fn compiled_pipeline_defaults() {
        let pipeline = "name: p\ninput: { topic: t }\nsteps:\n  - validate: { rules: [phone, cod_amount] }\nretry: { initial: 1s }\n";
        let tree = Tree::new(&[("waybill.yaml", "{}\n"), ("pipelines/p.yaml", pipeline)]);
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
    fn missing_variable_is_located_and_yaml_shape_is_safe() {
        let tree = Tree::new(&[(
            "waybill.yaml",
            "http:\n  admin_token: '${NOT_SET}'\n  listen: \"${NOT_SET_EITHER:-127.0.0.1:7000}\"\n",
        )]);
        let problems = tree.problems();
        assert_eq!(positions(&problems), vec![("waybill.yaml", 2, 16)]);
        assert!(problems[0].3.contains("`NOT_SET` is not set"));
    }

    #[test]
    fn syntax_error_and_missing_file() {
        let tree = Tree::new(&[("waybill.yaml", "http: [1, 2\nbus: x\n")]);
        let problems = tree.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].3.starts_with("invalid YAML"),
            "{}",
            problems[0].3
        );
        let tree = Tree::new(&[]);
        assert_eq!(positions(&tree.problems()), vec![("waybill.yaml", 0, 0)]);
    }

    const SHOP: &str = "name: shop\nkind: store\ncredentials:\n  webhook_secret: { type: string, secret: true, required: true, description: \"HMAC key\" }\n\
                        settings:\n  cod_gateways: { type: list, default: [] }\n";
    const COURIER: &str = "name: courier\nkind: courier\ncredentials:\n  token: { type: string, secret: true, required: true, description: \"API token\" }\n\
                           base_url: https://courier.example/api\noperations:\n  book:\n    request: { method: POST, path: /book }\n    success: \"response.status == 200\"\n    extract: { tracking_number: \"$.tracking_number\" }\n";

    #[test]
    fn three_mistakes_in_three_files_give_three_diagnostics() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "data_dir: ./data\nlisten: 1\naccounts:\n  shop-main: { connector: shop, credentials: { webhook_secret: x } }\n  \
                 courier-main: { connector: courier }\n",
            ),
            ("connectors/shop.yaml", SHOP),
            ("connectors/courier.yaml", COURIER),
            (
                "pipelines/p.yaml",
                "name: p\ninput: { topic: orders.shop, accounts: [shop-main] }\nsteps:\n  - route:\n      - to: courier-mian\n  - book: {}\n",
            ),
        ]);
        let problems = tree.problems();
        assert_eq!(
            positions(&problems),
            vec![
                ("waybill.yaml", 2, 1),
                ("waybill.yaml", 5, 17),
                ("pipelines/p.yaml", 5, 13)
            ],
            "{problems:#?}"
        );
        assert!(
            problems[1].3.contains("missing credential `token`"),
            "{}",
            problems[1].3
        );
        assert!(
            problems[2].3.contains("did you mean `courier-main`"),
            "{}",
            problems[2].3
        );
    }

    #[test]
    fn accounts_against_connector_schemas() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts:\n  a: { connector: shop, credentials: { webhook_secret: '${TOKEN}' }, settings: { cod_gateways: [COD] } }\n  \
                 b: { connector: courier, credentials: { tokn: x, token: [1] } }\n  c: { connector: shopp }\n  \
                 d: { connector: courier, credentials: { token: t }, base_url: 'not a url' }\n",
            ),
            ("connectors/shop.yaml", SHOP),
            ("connectors/courier.yaml", COURIER),
        ]);
        let problems = tree.problems();
        assert_eq!(
            positions(&problems),
            vec![
                ("waybill.yaml", 3, 43),
                ("waybill.yaml", 3, 59),
                ("waybill.yaml", 4, 19),
                ("waybill.yaml", 5, 65)
            ],
            "{problems:#?}"
        );
        assert!(
            problems[0].3.contains("unknown credential `tokn`")
                && problems[0].3.contains("did you mean `token`")
        );
        assert!(problems[1].3.contains("must be a string, found a list"));
        assert!(
            problems[2]
                .3
                .contains("unknown connector `shopp` (did you mean `shop`?)"),
            "{}",
            problems[2].3
        );

        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "accounts:\n  a: { connector: shop, credentials: { webhook_secret: '${TOKEN}' } }\n",
            ),
            ("connectors/shop.yaml", SHOP),
        ]);
        let config = tree.load().unwrap();
        let a = &config.accounts["a"];
        assert_eq!(a.credentials["webhook_secret"], "t0k#n: x");
        assert_eq!(a.secrets, vec!["t0k#n: x".to_string()]);
        assert_eq!(a.settings["cod_gateways"], serde_json::json!([]));
        assert!(config.connectors.contains_key("shop"));
    }

    #[test]
    fn shipped_config_loads_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = load_with(&root.join("waybill.yaml"), &|_| None).unwrap_or_else(|d| {
            panic!(
                "{}",
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(config.bus, BusSettings::Embedded);
        assert_eq!(
            config.accounts["shopify-main"].credentials["webhook_secret"],
            "dev-secret"
        );
        assert_eq!(config.accounts["courier-main"].connector, "sandbox");
        assert_eq!(config.http.admin_token, None);
        let pipeline = config
            .pipelines
            .iter()
            .find(|p| p.name == "shopify-orders")
            .unwrap();
        let stages: Vec<_> = pipeline.steps.iter().map(Step::stage).collect();
        assert_eq!(stages, ["trigger", "map", "validate", "route", "book"]);
    }

    #[test]
    fn shipped_trigger_books_paid_and_cod_orders_only() {
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
        assert!(!fires(
            "orders/paid",
            "shopify_payments",
            serde_json::json!("2026-01-01T00:00:00Z")
        ));
        assert!(!fires(
            "orders/updated",
            cod,
            serde_json::json!("2026-01-01T00:00:00Z")
        ));
    }

    /// The shipped Shopify mapping applied to a shipped sample order.
    fn sample_shipment(sample: &str) -> crate::model::Shipment {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mapping = Mapping::load(&root.join("mappings/shopify/order-to-shipment.yaml")).unwrap();
        let order: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(sample)).unwrap()).unwrap();
        let ctx = serde_json::json!({
            "order": order,
            "event": {"topic": "orders/create", "account": "shopify-main", "source": "shopify", "headers": {}},
            "account": {"name": "shopify-main", "settings": {"cod_gateways": ["Cash on Delivery (COD)"]}},
        });
        serde_json::from_value(mapping.eval(&ctx).unwrap()).unwrap()
    }

    #[test]
    fn shopify_samples_map_to_valid_canonical_shipments() {
        use crate::config::ValidationRule::{CodAmount, Phone, ShippingAddress};
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
