//! Accounts: each names a connector, loaded once, and gives credentials and
//! settings checked against that connector's schemas, defaults filled in.
//!
//! ```yaml
//! accounts:
//!   shopify-main: { connector: shopify, credentials: { webhook_secret: "${SHOPIFY_SECRET:-dev-secret}" } }
//!   courier-main: { connector: postex, credentials: { token: "${POSTEX_TOKEN}" } }
//! ```

use super::{AccountRef, Compiler};
use crate::config::raw::RawAccount;
use crate::connector::{Account, Connector, FieldSpec, FieldType};
use crate::diagnostic::{Position, alternatives};
use crate::redact::Secrets;
use crate::yaml::{self, Key, Located, Node, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The accounts of the main file, compiled.
pub(super) struct Accounts {
    /// Accounts that compiled cleanly, by name.
    pub compiled: BTreeMap<String, Arc<Account>>,
    /// Connectors the accounts use, each loaded once.
    pub connectors: BTreeMap<String, Arc<Connector>>,
    /// Every account named, compiled or not, for pipelines to refer to.
    pub refs: BTreeMap<String, AccountRef>,
}

/// Which account and connector a schema check is for, and where the account is.
struct Schema<'a> {
    account: &'a str,
    connector: &'a str,
    at: Position,
    /// `credential` or `setting`.
    noun: &'a str,
    fields: &'a BTreeMap<String, FieldSpec>,
}

type Values = serde_json::Map<String, serde_json::Value>;

impl Compiler<'_> {
    pub(super) fn accounts(
        &mut self,
        file: &Path,
        base_dir: &Path,
        raw: &BTreeMap<String, Node>,
        keys: &BTreeMap<&str, Position>,
    ) -> Accounts {
        let mut connectors = BTreeMap::new();
        let mut compiled = BTreeMap::new();
        let mut refs = BTreeMap::new();
        for (name, node) in raw {
            let (account, connector) = self.account(file, base_dir, name, node, &mut connectors);
            let account = account.map(Arc::new);
            // One from `${VAR}` substitution is left out: its topic would be
            // listed in messages, and it may be a secret.
            let connector_name = node
                .get("connector")
                .filter(|n| !n.interpolated)
                .and_then(Node::scalar_text);
            refs.insert(
                name.clone(),
                AccountRef {
                    connector,
                    connector_name,
                    compiled: account.clone(),
                    at: keys
                        .get(name.as_str())
                        .copied()
                        .unwrap_or_else(|| node.position()),
                },
            );
            if let Some(account) = account {
                compiled.insert(name.clone(), account);
            }
        }
        let connectors = connectors
            .into_iter()
            .filter_map(|(name, c)| Some((name, c?)))
            .collect();
        Accounts {
            compiled,
            connectors,
            refs,
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
            self.compile_named(file, name, &connector_file, "connector", |tree| {
                Connector::compile(tree, &connector_file, base_dir)
            })
        } else {
            let available = available_connectors(&dir);
            let available: Vec<&str> = available.iter().map(String::as_str).collect();
            let message = format!(
                "unknown connector `{}`{}",
                name.shown(),
                alternatives(
                    name.shown(),
                    &available,
                    &format!("no connector files found in {}", dir.display()),
                    "available"
                )
            );
            self.report(file, name.position(), message);
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
        let schema = |noun, fields| Schema {
            account: name,
            connector: &connector.name,
            at: node.position(),
            noun,
            fields,
        };
        let credentials = self.fields(
            file,
            &schema("credential", &connector.credentials),
            raw.credentials.as_ref(),
        );
        let settings = self.fields(
            file,
            &schema("setting", &connector.settings),
            raw.settings.as_ref(),
        );
        if let Some(url) = &raw.base_url
            && let Err(e) = url::Url::parse(&url.value)
        {
            self.report(file, url.position(), format!("`base_url` is not a valid URL ({e}): expected e.g. `https://api.example.com/v1`"));
        }
        let rate_limit = raw.rate_limit.as_ref().and_then(|rate| {
            match account_rate(rate.value.requests, &rate.value.per) {
                Ok(limit) => Some(limit),
                Err(message) => {
                    self.report(file, rate.position(), message);
                    None
                }
            }
        });
        if raw.rate_limit.is_some() && rate_limit.is_none() {
            return (None, Some(connector));
        }
        let (Some(credentials), Some(settings), true) = (credentials, settings, clean) else {
            return (None, Some(connector));
        };
        let account = Account {
            name: name.to_string(),
            connector: connector.name.clone(),
            secrets: secrets(&connector, &credentials),
            credentials: credentials
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            settings,
            base_url: raw.base_url.map(|u| u.value),
            active: raw.active.is_none_or(|a| a.value),
            rate_limit,
        };
        if let Err(why) = crate::connector::target::write_back_base(&connector, &account) {
            self.report(file, node.position(), why);
        }
        (Some(account), Some(connector))
    }

    /// Checks `credentials:` or `settings:` against the connector's schema,
    /// filling in defaults. `None` when something was wrong.
    fn fields(&mut self, file: &Path, schema: &Schema<'_>, node: Option<&Node>) -> Option<Values> {
        let before = self.diagnostics.count();
        let entries = match node.map(|n| (n, n.entries())) {
            None => &[][..],
            Some((n, _)) if n.value == Value::Null => &[][..],
            Some((_, Some(entries))) => entries,
            Some((n, None)) => {
                let message = format!(
                    "{}s: expected a map of name: value, found {}",
                    schema.noun,
                    n.kind()
                );
                self.report(file, n.position(), message);
                return None;
            }
        };
        let mut values = Values::new();
        for (key, value) in entries {
            if let Some(v) = self.field(file, schema, key, value) {
                values.insert(key.name.clone(), v);
            }
        }
        self.unwritten_fields(file, schema, entries, &mut values);
        (self.diagnostics.count() == before).then_some(values)
    }

    /// One value written for the schema, if it fits.
    fn field(
        &mut self,
        file: &Path,
        schema: &Schema<'_>,
        key: &Key,
        value: &Node,
    ) -> Option<serde_json::Value> {
        let noun = schema.noun;
        let Some(spec) = schema.fields.get(&key.name) else {
            let names: Vec<&str> = schema.fields.keys().map(String::as_str).collect();
            let message = format!(
                "unknown {noun} `{}` for connector `{}`{}",
                key.name,
                schema.connector,
                alternatives(
                    &key.name,
                    &names,
                    &format!("it takes no {noun}s"),
                    "expected"
                )
            );
            self.report(file, key.position(), message);
            return None;
        };
        match typed(value, spec.field_type) {
            Some(v) if spec.required && v.as_str() == Some("") => {
                let message = format!(
                    "{noun} `{}` is empty; connector `{}` requires it ({})",
                    key.name, schema.connector, spec.description
                );
                self.report(file, value.position(), message);
                None
            }
            Some(v) => Some(v),
            None if value.value == Value::Null => None,
            None => {
                let message = format!(
                    "{noun} `{}` must be {}, found {}",
                    key.name,
                    type_name(spec.field_type),
                    value.kind()
                );
                self.report(file, value.position(), message);
                None
            }
        }
    }

    /// Defaults for the fields not written; the required ones are reported
    /// at the account.
    fn unwritten_fields(
        &mut self,
        file: &Path,
        schema: &Schema<'_>,
        entries: &[(Key, Node)],
        values: &mut Values,
    ) {
        for (field, spec) in schema.fields {
            let written = entries
                .iter()
                .any(|(k, v)| &k.name == field && v.value != Value::Null);
            if values.contains_key(field) || written {
                continue;
            }
            if let Some(default) = &spec.default {
                values.insert(field.clone(), default.clone());
            } else if spec.required {
                let mut message = format!(
                    "account `{}` is missing {} `{field}` required by connector `{}`",
                    schema.account, schema.noun, schema.connector
                );
                if !spec.description.is_empty() {
                    message.push_str(&format!(" ({})", spec.description));
                }
                self.report(file, schema.at, message);
            }
        }
    }
}

/// Credential values the connector marks secret, to be redacted wherever shown.
fn secrets(connector: &Connector, credentials: &Values) -> Secrets {
    Secrets::new(
        connector
            .credentials
            .iter()
            .filter(|(_, spec)| spec.secret)
            .filter_map(|(field, _)| credentials.get(field))
            .filter_map(|v| v.as_str().map(str::to_string)),
    )
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

/// An account's own `rate_limit`, held to what a connector's may say.
fn account_rate(requests: u32, per: &str) -> Result<crate::connector::RateLimit, String> {
    let period = crate::clock::parse_duration(per)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!("rate limit period `{per}` is not a duration such as `1s` or `1m`")
        })?;
    if period > std::time::Duration::from_secs(24 * 3600) {
        return Err(format!(
            "rate limit period `{per}` is longer than a day: write the limit per second, minute or hour"
        ));
    }
    if requests == 0 {
        return Err("a rate limit must allow at least one request".into());
    }
    Ok(crate::connector::RateLimit {
        requests,
        per: period,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const SHOP: &str = "name: shop\nkind: store\ncredentials:\n  webhook_secret: { type: string, secret: true, required: true, description: \"HMAC key\" }\n\
                        settings:\n  cod_gateways: { type: list, default: [] }\n";
    /// A pipeline taking the store accounts of `SHOP`, so they are consumed.
    const READER: &str =
        "name: p\ninput: { topic: orders.shop }\nsteps:\n  - validate: { rules: [phone] }\n";
    const COURIER: &str = "name: courier\nkind: courier\ncredentials:\n  token: { type: string, secret: true, required: true, description: \"API token\" }\n\
                           base_url: https://courier.example/api\noperations:\n  book:\n    request: { method: POST, path: /book }\n    success: \"response.status == 200\"\n    extract: { tracking_number: \"$.tracking_number\" }\n";

    #[test]
    fn accounts_are_active_by_default_and_may_have_their_own_rate_limit() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "data_dir: ./data\naccounts:\n  a: { connector: courier, credentials: { token: x } }\n  \
                 b: { connector: courier, credentials: { token: y }, active: false, rate_limit: { requests: 3, per: 1m } }\n",
            ),
            ("connectors/courier.yaml", COURIER),
        ]);
        let config = tree.load().unwrap();
        assert!(config.accounts["a"].active);
        assert_eq!(config.accounts["a"].rate_limit, None);
        let b = &config.accounts["b"];
        assert!(!b.active);
        let limit = b.rate_limit.unwrap();
        assert_eq!(
            (limit.requests, limit.per),
            (3, std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn an_accounts_rate_limit_and_active_flag_are_checked_where_written() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "data_dir: ./data\naccounts:\n  a: { connector: courier, credentials: { token: x }, rate_limit: { requests: 0, per: 1s } }\n  \
                 b: { connector: courier, credentials: { token: y }, active: sometimes }\n",
            ),
            ("connectors/courier.yaml", COURIER),
        ]);
        let problems = tree.problems();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!((problems[0].1, problems[1].1), (3, 4), "{problems:#?}");
        assert!(
            problems[0].3.contains("at least one request"),
            "{problems:#?}"
        );
    }

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
        assert_positions(
            &problems,
            &[
                ("waybill.yaml", 2, 1),
                ("waybill.yaml", 5, 17),
                ("pipelines/p.yaml", 5, 13),
            ],
        );
        assert_mentions(&problems[1], "missing credential `token`");
        assert_mentions(&problems[2], "did you mean `courier-main`");
    }

    #[test]
    fn an_unreadable_connector_is_reported_where_the_account_names_it() {
        let tree = Tree::waybill("accounts:\n  c: { connector: courier }\n");
        tree.write("connectors/courier.yaml", b"name: \xff\n");
        let problem = tree.sole_problem(("waybill.yaml", 2, 19));
        assert_mentions(&problem, "cannot read");
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
            ("pipelines/p.yaml", READER),
        ]);
        let problems = tree.problems();
        assert_positions(
            &problems,
            &[
                ("waybill.yaml", 3, 43),
                ("waybill.yaml", 3, 59),
                ("waybill.yaml", 4, 19),
                ("waybill.yaml", 5, 65),
            ],
        );
        assert!(
            problems[0].3.contains("unknown credential `tokn`")
                && problems[0].3.contains("did you mean `token`")
        );
        assert_mentions(&problems[1], "must be a string, found a list");
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
            ("pipelines/p.yaml", READER),
        ]);
        let config = tree.load().unwrap();
        let a = &config.accounts["a"];
        assert_eq!(a.credentials["webhook_secret"], "t0k#n: x");
        assert_eq!(a.secrets, crate::redact::Secrets::new(["t0k#n: x"]));
        assert_eq!(a.settings["cod_gateways"], serde_json::json!([]));
        assert!(config.connectors.contains_key("shop"));
    }
}
