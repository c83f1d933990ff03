//! Compiles a connector file, read by the one YAML reader into the structs
//! of `raw.rs`, into a checked [`Connector`]: every problem is reported at
//! once, at the key or value at fault, as `FILE:LINE:COL: message`.
//!
//! ```yaml
//! name: sandbox
//! kind: courier
//! base_url: "waybill:/sandbox"
//! operations:
//!   book:
//!     request: { method: POST, path: /book, body: mappings/sandbox/book.yaml }
//!     success: "response.status == 200 and body.tracking_number"
//!     extract: { tracking_number: "$.tracking_number" }
//! statuses:
//!   table: { "Booked": booked, "Attempt Made:*": { status: delivery_failed, sub_status: attempted } }
//! ```

mod auth;
mod operations;
mod receiving;
mod settlement;
mod write_back;

use super::definition::{
    Connector, ConnectorKind, FieldSpec, FieldType, Operation, RateLimit, SIGNING_SECRET,
};
use super::raw::{
    RawConnector, RawField, RawFieldType, RawKind, RawRate, RawStatusEntry, RawStatuses,
};
use super::statuses::{StatusEntry, StatusTable};
use crate::clock::parse_duration;
use crate::diagnostic::{Diagnostic, Diagnostics, Position};
use crate::model::Status;
use crate::yaml::{self, Located, Node, ReadError, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The longest period a `rate_limit` may name.
const MAX_RATE_PERIOD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Connector {
    /// Reads and compiles a connector file, reporting every problem. Mapping
    /// paths resolve against the parent of the file's `connectors/` folder.
    pub fn load(path: &Path) -> Result<Connector, Vec<Diagnostic>> {
        let base_dir = path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Connector::load_with_base(path, &base_dir)
    }

    /// Like [`Connector::load`], with mapping paths resolved against `base_dir`.
    /// A file that cannot be read is reported at `0:0`; callers that know
    /// where the connector was named read it with [`yaml::read`] and call
    /// [`Connector::compile`].
    pub fn load_with_base(path: &Path, base_dir: &Path) -> Result<Connector, Vec<Diagnostic>> {
        match yaml::read(path) {
            Ok(tree) => Connector::compile(&tree, path, base_dir),
            Err(ReadError::Syntax(e)) => Err(vec![syntax_error(path, &e)]),
            Err(ReadError::Io { source, .. }) => Err(vec![Diagnostic::new(
                path,
                0,
                0,
                format!("cannot read connector file: {source}"),
            )]),
        }
    }

    /// Compiles connector YAML read from `file`.
    pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Connector, Vec<Diagnostic>> {
        let tree = yaml::parse(text).map_err(|e| vec![syntax_error(file, &e)])?;
        Connector::compile(&tree, file, base_dir)
    }

    /// Compiles a connector file's YAML tree.
    pub fn compile(
        tree: &Node,
        file: &Path,
        base_dir: &Path,
    ) -> Result<Connector, Vec<Diagnostic>> {
        let mut compiler = Compiler {
            file,
            base_dir,
            tree,
            diagnostics: Diagnostics::default(),
        };
        let connector = compiler.read().and_then(|raw| compiler.connector(raw));
        compiler
            .diagnostics
            .finish(connector, file, "the connector could not be compiled")
    }
}

fn syntax_error(file: &Path, e: &yaml::Error) -> Diagnostic {
    Diagnostic::at(file, e.position(), format!("invalid YAML: {e}"))
}

/// Compiles one connector file, collecting every problem.
struct Compiler<'a> {
    file: &'a Path,
    base_dir: &'a Path,
    /// The file's tree, for the positions of its top-level keys.
    tree: &'a Node,
    diagnostics: Diagnostics,
}

impl Compiler<'_> {
    fn report(&mut self, at: Position, message: impl Into<String>) {
        self.diagnostics.report(self.file, at, message);
    }

    /// Where the top-level key `name` is written, if it is.
    fn key(&self, name: &str) -> Option<Position> {
        self.tree.key(name).map(|key| key.position())
    }

    /// Where a problem about the file as a whole (a missing key) is reported.
    fn top(&self) -> Position {
        match self.tree.position() {
            at if at.line == 0 => Position::START,
            at => at,
        }
    }

    /// Reads the raw connector, reporting every bad key; the entries at
    /// fault are left out, so the rest is still checked.
    fn read(&mut self) -> Option<RawConnector> {
        if self.tree.value == Value::Null {
            return Some(RawConnector::default());
        }
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawConnector>(self.tree, &mut errors);
        for e in errors {
            self.report(e.position(), e.to_string());
        }
        raw
    }

    fn connector(&mut self, raw: RawConnector) -> Option<Connector> {
        let name = self.name(raw.name);
        let kind = self.kind(raw.kind.as_ref());
        let credentials = self.fields(raw.credentials.unwrap_or_default());
        let settings = self.fields(raw.settings.unwrap_or_default());
        if let Some(base_url) = &raw.base_url {
            let checked = if super::target::is_template(&base_url.value) {
                crate::mapping::Template::compile(&base_url.value).map(|_| ())
            } else {
                super::target::check_base_url(&base_url.value)
            };
            if let Err(message) = checked {
                self.report(base_url.position(), message);
            }
        }
        let raw_operations = raw.operations.unwrap_or_default();
        let declared = raw_operations.declared();
        let operations = self.operations(raw_operations);
        let auth = self.auth(raw.auth, &declared);
        let lookups = self.lookups(raw.lookups.unwrap_or_default(), &declared);
        let account_check = raw
            .account_check
            .and_then(|check| self.account_check(check, &declared));
        self.required_parts(raw.kind.as_ref(), &operations, raw.base_url.is_some());
        let webhook = raw
            .webhook
            .map(|webhook| self.webhook(webhook, &credentials));
        if webhook.is_some()
            && kind == Some(ConnectorKind::Courier)
            && let Some(at) = self.key("webhook")
        {
            self.report(
                at,
                "`webhook` describes store deliveries; couriers use `callback`",
            );
        }
        let callback = raw
            .callback
            .and_then(|callback| self.callback(callback, &credentials));
        if callback.is_some()
            && kind == Some(ConnectorKind::Store)
            && let Some(at) = self.key("callback")
        {
            self.report(
                at,
                "`callback` describes courier status events; stores use `webhook`",
            );
        }
        if kind == Some(ConnectorKind::Notifier) {
            self.notifier_parts(&credentials);
        }
        let statuses = raw.statuses.map(|statuses| self.statuses(statuses));
        let rate_limit = raw
            .rate_limit
            .and_then(|limit| self.rate_limit(limit.per_account));
        let settlement = raw
            .settlement
            .and_then(|settlement| self.settlement(settlement, kind));
        let tracking_page = raw.tracking_page.and_then(|page| self.tracking_page(page));
        let write_back = raw
            .write_back
            .and_then(|spec| self.write_back(spec, &credentials, &operations));
        Some(Connector {
            name: name?,
            kind: kind?,
            description: raw.description,
            credentials,
            settings,
            base_url: raw.base_url.map(|b| b.value),
            operations,
            webhook,
            callback,
            statuses,
            rate_limit,
            settlement,
            auth,
            lookups,
            account_check,
            tracking_page,
            write_back,
            file: self.file.to_path_buf(),
        })
    }

    /// `name`; a key written but unreadable was reported already.
    fn name(&mut self, name: Option<Located<String>>) -> Option<String> {
        let Some(name) = name else {
            if self.key("name").is_none() {
                self.report(self.top(), "missing `name`");
            }
            return None;
        };
        let valid = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            let message = format!(
                "connector name `{}` must be lowercase letters, digits, `-` or `_`",
                name.value
            );
            self.report(name.position(), message);
        }
        Some(name.value)
    }

    fn kind(&mut self, kind: Option<&Located<RawKind>>) -> Option<ConnectorKind> {
        match kind.map(|k| k.value) {
            Some(RawKind::Store) => Some(ConnectorKind::Store),
            Some(RawKind::Courier) => Some(ConnectorKind::Courier),
            Some(RawKind::Notifier) => Some(ConnectorKind::Notifier),
            None => {
                if self.key("kind").is_none() {
                    self.report(
                        self.top(),
                        "missing `kind` (expected `store`, `courier` or `notifier`)",
                    );
                }
                None
            }
        }
    }

    /// A notifier is a receiver's URL and signing key: the `notify` step
    /// makes the request, so operations, webhooks, callbacks, status tables
    /// and rate limits would do nothing there.
    fn notifier_parts(&mut self, credentials: &BTreeMap<String, FieldSpec>) {
        for key in [
            "operations",
            "webhook",
            "callback",
            "statuses",
            "rate_limit",
        ] {
            if let Some(at) = self.key(key) {
                let message = format!(
                    "a notifier connector takes no `{key}`: the `notify` step posts the mapped body to the account's `base_url`"
                );
                self.report(at, message);
            }
        }
        if !credentials.get(SIGNING_SECRET).is_some_and(|f| f.secret) {
            let message = format!(
                "a notifier connector must declare the credential `{SIGNING_SECRET}` with `secret: true`: it keys the HMAC-SHA256 signature of every notification"
            );
            let at = self.key("credentials").unwrap_or(self.top());
            self.report(at, message);
        }
    }

    /// What a connector of its kind must declare: a courier books, and
    /// operations need a base URL to be sent to. A key written but dropped
    /// for a reported error counts as declared, so it is not reported twice.
    fn required_parts(
        &mut self,
        kind: Option<&Located<RawKind>>,
        operations: &BTreeMap<String, Operation>,
        has_base_url: bool,
    ) {
        let operations_at = self.key("operations");
        let book_written = self
            .tree
            .get("operations")
            .is_some_and(|node| node.key("book").is_some());
        if let Some(kind) = kind
            && matches!(kind.value, RawKind::Courier)
            && !book_written
        {
            self.report(
                operations_at.unwrap_or(kind.position()),
                "a courier connector must declare `operations.book`",
            );
        }
        if !operations.is_empty()
            && !has_base_url
            && self.key("base_url").is_none()
            && let Some(at) = operations_at
        {
            self.report(
                at,
                "missing `base_url` (accounts may override it, but the connector needs a default)",
            );
        }
    }

    fn fields(&mut self, raw: BTreeMap<String, Located<RawField>>) -> BTreeMap<String, FieldSpec> {
        raw.into_iter()
            .map(|(name, node)| {
                let spec = self.field(&name, node);
                (name, spec)
            })
            .collect()
    }

    fn field(&mut self, name: &str, node: Located<RawField>) -> FieldSpec {
        let at = node.position();
        let raw = node.value;
        let field_type = match raw.field_type {
            RawFieldType::String => FieldType::String,
            RawFieldType::Number => FieldType::Number,
            RawFieldType::Bool => FieldType::Bool,
            RawFieldType::List => FieldType::List,
        };
        if let Some(default) = &raw.default {
            let fits = match field_type {
                FieldType::String => default.is_string(),
                FieldType::Number => default.is_number(),
                FieldType::Bool => default.is_boolean(),
                FieldType::List => default.is_array(),
            };
            if !fits {
                self.report(at, format!("default of `{name}` does not match its type"));
            }
            if raw.required {
                self.report(
                    at,
                    format!("`{name}` is required, so its default would never be used"),
                );
            }
        }
        FieldSpec {
            field_type,
            required: raw.required,
            secret: raw.secret,
            description: raw.description,
            default: raw.default,
        }
    }

    fn statuses(&mut self, node: Located<RawStatuses>) -> StatusTable {
        let raw = node.value;
        let mut table = StatusTable::new(raw.unknown.unwrap_or(Status::Unknown));
        // In the order written, so a repeat is reported at the later key
        // and names the earlier one.
        let mut entries: Vec<(String, Located<RawStatusEntry>)> = raw.table.into_iter().collect();
        entries.sort_by_key(|(_, entry)| entry.position());
        let mut lines = BTreeMap::new();
        for (key, entry) in entries {
            let at = entry.position();
            let found = match entry.value {
                RawStatusEntry::Plain(status) => StatusEntry {
                    status,
                    sub_status: None,
                },
                RawStatusEntry::Detailed(detail) => StatusEntry {
                    status: detail.status,
                    sub_status: detail.sub_status,
                },
            };
            match table.insert(&key, found) {
                Ok(()) => {
                    lines.insert(key, at.line);
                }
                Err(first) => {
                    let line = lines.get(&first).copied().unwrap_or_default();
                    let message = format!(
                        "status `{key}` and `{first}` (line {line}) are the same once trimmed, \
                         whitespace-collapsed and lowercased: keep one"
                    );
                    self.report(at, message);
                }
            }
        }
        for rule in raw.rules {
            let rule = rule.value;
            let entry = StatusEntry {
                status: rule.status,
                sub_status: rule.sub_status,
            };
            if let Err(e) = table.add_rule(&rule.regex.value, entry) {
                let message = format!("`{}` is not a valid regex: {e}", rule.regex.value);
                self.report(rule.regex.position(), message);
            }
        }
        table
    }

    fn rate_limit(&mut self, node: Located<RawRate>) -> Option<RateLimit> {
        let at = node.position();
        let raw = node.value;
        let per = parse_duration(&raw.per).ok().filter(|d| !d.is_zero());
        match per {
            None => self.report(
                at,
                format!(
                    "rate limit period `{}` is not a duration such as `1s` or `1m`",
                    raw.per
                ),
            ),
            // Couriers document limits per second, minute or hour; a longer
            // period is a typo, and an absurd one could not be scheduled.
            Some(per) if per > MAX_RATE_PERIOD => self.report(
                at,
                format!(
                    "rate limit period `{}` is longer than a day: write the limit per second, minute or hour",
                    raw.per
                ),
            ),
            Some(_) => {}
        }
        if raw.requests == 0 {
            self.report(at, "a rate limit must allow at least one request");
        }
        Some(RateLimit {
            requests: raw.requests,
            per: per?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::definition::{SignatureAlgorithm, SignatureEncoding};
    use super::*;
    use crate::connector::{CALLBACK_SECRET, CallbackVerify, EventTime, OrderIdPath, TimeFormat};
    use std::path::PathBuf;
    use std::time::Duration;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn parse(text: &str) -> Result<Connector, Vec<Diagnostic>> {
        Connector::parse(text, Path::new("connectors/test.yaml"), &repo())
    }

    /// The one problem [`parse`] finds in `text`.
    #[track_caller]
    fn only_problem(text: &str) -> Diagnostic {
        let mut diagnostics = parse(text).unwrap_err();
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        diagnostics.remove(0)
    }

    /// Asserts that the one problem [`parse`] finds in `text` is on `line` and says `mention`.
    #[track_caller]
    fn assert_only_problem(text: &str, line: usize, mention: &str) {
        let problem = only_problem(text);
        assert_eq!(problem.line, line);
        assert!(problem.message.contains(mention), "{}", problem.message);
    }

    #[test]
    fn every_shipped_connector_loads() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(repo().join("connectors")).unwrap() {
            let path = entry.unwrap().path();
            let connector =
                Connector::load(&path).unwrap_or_else(|d| panic!("{}: {d:#?}", path.display()));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            assert_eq!(connector.name, stem, "{}", path.display());
            names.push(connector.name);
        }
        for shipped in [
            "blueex",
            "callcourier",
            "leopards",
            "notify-webhook",
            "postex",
            "sandbox",
            "shopify",
            "tcs",
            "trax",
        ] {
            assert!(
                names.iter().any(|n| n == shipped),
                "{shipped} missing from {names:?}"
            );
        }
    }

    #[test]
    fn shopify_exposes_its_webhook_rule() {
        let shopify = Connector::load(&repo().join("connectors/shopify.yaml")).unwrap();
        assert_eq!(shopify.kind, ConnectorKind::Store);
        let webhook = shopify.webhook.unwrap();
        assert_eq!(webhook.source, "shopify");
        let signature = webhook.signature.unwrap();
        assert_eq!(signature.header, "X-Shopify-Hmac-Sha256");
        assert_eq!(signature.algorithm, SignatureAlgorithm::HmacSha256);
        assert_eq!(signature.encoding, SignatureEncoding::Base64);
        assert_eq!(signature.secret, "webhook_secret");
        assert_eq!(webhook.topic_header.as_deref(), Some("X-Shopify-Topic"));
        assert_eq!(
            webhook.delivery_id_header.as_deref(),
            Some("X-Shopify-Webhook-Id")
        );
        assert!(
            shopify.credentials["webhook_secret"].secret
                && shopify.credentials["webhook_secret"].required
        );
        assert!(!shopify.credentials["shop_domain"].required);
        assert_eq!(
            shopify.settings["cod_gateways"].default,
            Some(serde_json::json!(["Cash on Delivery (COD)"]))
        );
    }

    #[test]
    fn shopify_declares_its_write_back() {
        let shopify = Connector::load(&repo().join("connectors/shopify.yaml")).unwrap();
        let spec = shopify.write_back.as_ref().unwrap();
        assert_eq!(spec.credential, "access_token");
        assert!(!shopify.credentials["access_token"].required);
        assert!(shopify.credentials["access_token"].secret);
        for (status, event) in [
            (Status::InTransit, Some("IN_TRANSIT")),
            (Status::OutForDelivery, Some("OUT_FOR_DELIVERY")),
            (Status::DeliveryFailed, Some("ATTEMPTED_DELIVERY")),
            (Status::Delivered, Some("DELIVERED")),
            (Status::Booked, None),
            (Status::Unknown, None),
        ] {
            assert_eq!(spec.event_status(status), event, "{status:?}");
        }
        for operation in [
            "open_fulfillments",
            "fulfill",
            "find_fulfillment",
            "fulfillment_event",
        ] {
            let op = shopify.operation(operation).unwrap();
            assert_eq!(op.path, "/admin/api/2025-07/graphql.json");
            assert!(
                op.headers
                    .iter()
                    .any(|(name, _)| name == "X-Shopify-Access-Token")
            );
        }
        assert!(
            shopify
                .operation("find_fulfillment")
                .unwrap()
                .each
                .is_some()
        );
        let sandbox = Connector::load(&repo().join("connectors/sandbox.yaml")).unwrap();
        assert_eq!(sandbox.tracking_page.unwrap().company, "Waybill Sandbox");
    }

    #[test]
    fn a_write_back_names_declared_credentials_canonical_statuses_and_its_operations() {
        let text = "name: s\nkind: store\ncredentials:\n  token: { type: string, secret: true }\nwrite_back:\n  credential: tokn\n  statuses: { in_transit: IN_TRANSIT, on_the_way: X }\n";
        let problems = parse(text).unwrap_err();
        let said: Vec<&str> = problems.iter().map(|d| d.message.as_str()).collect();
        assert!(said.iter().any(|m| m.contains("`tokn`")), "{said:?}");
        assert!(
            said.iter()
                .any(|m| m.contains("`on_the_way` is not a canonical status")),
            "{said:?}"
        );
        assert!(
            said.iter().any(|m| m.contains("operations.fulfill`")),
            "{said:?}"
        );
        assert_only_problem(
            "name: c\nkind: courier\nbase_url: https://c.example\noperations:\n  book:\n    request: { method: POST, path: /b }\n    success: 'true'\n    extract: { tracking_number: $.cn }\n    errors:\n      - { when: 'true', class: permanent, retry_after: '3' }\n",
            10,
            "only for rules of class `retryable`",
        );
    }

    #[test]
    fn postex_statuses_normalise() {
        // The table does not depend on the body mapping, so stand one in.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mappings/postex")).unwrap();
        for body in ["book.yaml", "cancel.yaml"] {
            std::fs::write(
                dir.path().join("mappings/postex").join(body),
                "\"{{ shipment }}\"\n",
            )
            .unwrap();
        }
        let postex =
            Connector::load_with_base(&repo().join("connectors/postex.yaml"), dir.path()).unwrap();
        assert!(postex.has_operation("book") && !postex.has_operation("lookup"));
        let table = postex.statuses.unwrap();
        assert_eq!(table.lookup("  UnBooked ").status, Status::Booked);
        assert_eq!(
            table.lookup("unbooked").sub_status.as_deref(),
            Some("awaiting_handover")
        );
        assert_eq!(
            table.lookup("Out  For   Delivery").status,
            Status::OutForDelivery
        );
        assert_eq!(
            table.lookup("Attempt Made: customer not home").status,
            Status::DeliveryFailed
        );
        assert_eq!(table.lookup("Teleported").status, Status::Unknown);
        assert!(table.find("Teleported").is_none());
    }

    #[test]
    fn several_mistakes_give_several_diagnostics() {
        let text = "\
name: Bad Name
kind: courier
credentials:
  token: { type: strng, secret: true }
base_url: ftp://example.com
operations:
  book:
    request: { method: FETCH, path: order }
    success: \"response.status == 200\"
    timeout: soon
statuses:
  table: { \"Delivered\": delivered, \"delivered \": delivered }
colour: blue
";
        let diagnostics = parse(text).unwrap_err();
        let lines: Vec<usize> = diagnostics.iter().map(|d| d.line).collect();
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().all(|d| d.starts_with("connectors/test.yaml:")),
            "{text:#?}"
        );
        for expected in [4, 13] {
            assert!(
                lines.contains(&expected),
                "no diagnostic on line {expected}: {text:#?}"
            );
        }
        assert!(text.iter().any(|d| d.contains("strng")), "{text:#?}");
        assert!(text.iter().any(|d| d.contains("colour")), "{text:#?}");
    }

    #[test]
    fn semantic_mistakes_are_all_reported_with_positions() {
        let text = "\
name: Bad Name
kind: courier
base_url: ftp://example.com
operations:
  book:
    request: { method: FETCH, path: order, body: mappings/none.yaml }
    success: \"response.status == 200\"
    status_classes: { \"999\": retryable }
    timeout: soon
statuses:
  table: { \"Delivered\": delivered, \"delivered \": delivered }
";
        let diagnostics = parse(text).unwrap_err();
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        for expected in [
            "test.yaml:1:7: connector name",
            "test.yaml:3:11: base URL",
            "FETCH",
            "path `order` must start with `/`",
            "mappings/none.yaml",
            "must extract `tracking_number`",
            "999",
            "timeout `soon`",
            "same once trimmed",
        ] {
            assert!(
                text.iter().any(|d| d.contains(expected)),
                "missing `{expected}` in {text:#?}"
            );
        }
    }

    #[test]
    fn missing_name_and_kind_are_reported() {
        let diagnostics = parse("description: nothing else\n").unwrap_err();
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|d| d.contains("missing `name`")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|d| d.contains("missing `kind`")),
            "{text:#?}"
        );
    }

    #[test]
    fn signature_secret_must_be_a_secret_credential() {
        let text = "\
name: shop
kind: store
credentials:
  key: { type: string }
webhook:
  source: shop
  signature: { header: X-Sig, algorithm: hmac-sha256, encoding: hex, secret: nope }
";
        assert_only_problem(text, 7, "`nope` is not a declared credential");
    }

    fn courier_with_callback(credentials: &str, callback: &str) -> String {
        format!(
            "name: c\nkind: courier\ncredentials:\n{credentials}base_url: https://c.example\n\
             operations:\n  book:\n    request: {{ method: POST, path: /b }}\n    success: 'true'\n    \
             extract: {{ tracking_number: $.cn }}\ncallback:\n{callback}"
        )
    }

    const SECRET_FIELD: &str = "  callback_secret: { type: string, secret: true }\n";
    const PATHS: &str = "  tracking_number: $.cn\n  status: $.status\n";

    #[test]
    fn the_shipped_callbacks_compile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mappings/postex")).unwrap();
        for body in ["book.yaml", "cancel.yaml"] {
            std::fs::write(
                dir.path().join("mappings/postex").join(body),
                "\"{{ shipment }}\"\n",
            )
            .unwrap();
        }
        let postex =
            Connector::load_with_base(&repo().join("connectors/postex.yaml"), dir.path()).unwrap();
        let callback = postex.callback.unwrap();
        assert_eq!(callback.verify, CallbackVerify::PathSecret);
        assert_eq!(callback.secret_credential(), CALLBACK_SECRET);
        assert!(postex.credentials[CALLBACK_SECRET].secret);
        assert!(!postex.credentials[CALLBACK_SECRET].required);
        assert_eq!(
            callback.time.zone,
            time::UtcOffset::from_hms(5, 0, 0).unwrap()
        );
        assert!(callback.events.is_none());
        let sandbox = Connector::load(&repo().join("connectors/sandbox.yaml")).unwrap();
        let callback = sandbox.callback.unwrap();
        assert!(matches!(callback.verify, CallbackVerify::Signature(_)));
        assert!(callback.events.is_some());
        assert_eq!(
            callback.delivery_id_header.as_deref(),
            Some("X-Sandbox-Delivery")
        );
    }

    #[test]
    fn a_callback_rule_reads_every_way_of_verifying() {
        for (way, expected) in [
            (
                "  query_secret: token\n",
                CallbackVerify::QuerySecret("token".into()),
            ),
            (
                "  header_secret: X-Token\n",
                CallbackVerify::HeaderSecret("X-Token".into()),
            ),
        ] {
            let text = courier_with_callback(SECRET_FIELD, &format!("{way}{PATHS}"));
            let callback = parse(&text).unwrap().callback.unwrap();
            assert_eq!(callback.verify, expected);
            assert_eq!(callback.time, EventTime::default());
        }
        let signed = courier_with_callback(
            "  key: { type: string, secret: true }\n",
            &format!(
                "  signature: {{ header: X-Sig, algorithm: hmac-sha256, encoding: hex, secret: key }}\n{PATHS}"
            ),
        );
        assert_eq!(
            parse(&signed)
                .unwrap()
                .callback
                .unwrap()
                .secret_credential(),
            "key"
        );
        let unix = courier_with_callback(
            SECRET_FIELD,
            &format!("  path_secret: true\n{PATHS}  time_format: unix_ms\n  time_zone: UTC\n"),
        );
        assert_eq!(
            parse(&unix).unwrap().callback.unwrap().time.format,
            TimeFormat::UnixMillis
        );
    }

    #[test]
    fn callback_mistakes_are_reported_where_they_are_written() {
        let secret = SECRET_FIELD;
        let cases = [
            (secret, PATHS.to_string(), 12, "exactly one of"),
            (
                secret,
                format!("  path_secret: true\n  header_secret: X-T\n{PATHS}"),
                12,
                "found 2",
            ),
            (
                "",
                format!("  path_secret: true\n{PATHS}"),
                11,
                "must declare (`callback_secret",
            ),
            (
                "  callback_secret: { type: string }\n",
                format!("  path_secret: true\n{PATHS}"),
                12,
                "must be `secret: true`",
            ),
            (
                secret,
                "  path_secret: true\n  tracking_number: \"$.[\"\n  status: $.s\n".to_string(),
                13,
                "`callback.tracking_number` is not a JSONPath",
            ),
            (
                secret,
                format!("  path_secret: true\n{PATHS}  time_format: \"[yr]\"\n"),
                15,
                "`time_format`",
            ),
            (
                secret,
                format!("  path_secret: true\n{PATHS}  time_zone: Asia/Karachi\n"),
                15,
                "not a UTC offset",
            ),
            (
                secret,
                format!("  path_secret: true\n{PATHS}  delivery_id_header: \"bad header\"\n"),
                15,
                "not a valid header name",
            ),
            (
                secret,
                "  path_secret: true\n  status: $.s\n".to_string(),
                12,
                "missing key `tracking_number`",
            ),
            (
                secret,
                format!("  path_secret: true\n{PATHS}  colour: blue\n"),
                15,
                "colour",
            ),
        ];
        for (credentials, callback, line, mention) in cases {
            let text = courier_with_callback(credentials, &callback);
            let problem = only_problem(&text);
            assert!(
                problem.message.contains(mention),
                "{text}\n{}",
                problem.message
            );
            assert_eq!(problem.line, line, "{text}\n{}", problem.message);
        }
        assert_only_problem(
            &format!(
                "name: s\nkind: store\ncredentials:\n{SECRET_FIELD}callback:\n  path_secret: true\n{PATHS}"
            ),
            5,
            "stores use `webhook`",
        );
    }

    #[test]
    fn the_order_id_path_is_compiled_at_load() {
        let store = |order_id: &str| {
            format!(
                "name: shop\nkind: store\nwebhook:\n  source: shop\n  order_id: \"{order_id}\"\n"
            )
        };
        let webhook = |text: &str| parse(text).unwrap().webhook.unwrap();
        assert_eq!(
            webhook("name: shop\nkind: store\nwebhook: { source: shop }\n").order_id,
            OrderIdPath::Member("id".into())
        );
        assert_eq!(
            webhook(&store("$.number")).order_id,
            OrderIdPath::Member("number".into())
        );
        assert!(matches!(
            webhook(&store("$.order.id")).order_id,
            OrderIdPath::Path(_)
        ));
        assert!(
            OrderIdPath::parse("$.1st").is_err(),
            "a shorthand member name starts with a letter or `_`"
        );
        assert_only_problem(
            &store("$.order["),
            5,
            "`webhook.order_id` is not a JSONPath",
        );
    }

    #[test]
    fn rate_limits_are_checked() {
        let courier = |rate: &str| {
            format!("name: c\nkind: store\nrate_limit: {{ per_account: {{ {rate} }} }}\n")
        };
        let limit = parse(&courier("requests: 10, per: 1s"))
            .unwrap()
            .rate_limit
            .unwrap();
        assert_eq!(limit.requests, 10);
        assert_eq!(limit.per, Duration::from_secs(1));
        for (rate, problem) in [
            ("requests: 0, per: 1s", "at least one request"),
            ("requests: 1, per: soon", "is not a duration"),
            ("requests: 1, per: 0s", "is not a duration"),
            (
                "requests: 1, per: 18446744073709551615ms",
                "longer than a day",
            ),
        ] {
            let diagnostics = parse(&courier(rate)).unwrap_err();
            assert!(
                diagnostics.iter().any(|d| d.message.contains(problem)),
                "{rate}: {diagnostics:#?}"
            );
            assert_eq!(diagnostics[0].line, 3, "{rate}");
        }
    }

    #[test]
    fn problems_of_the_whole_connector_are_reported_at_their_key() {
        let at = |text: &str| -> Vec<(usize, usize, String)> {
            parse(text)
                .unwrap_err()
                .into_iter()
                .map(|d| (d.line, d.column, d.message))
                .collect()
        };
        let found =
            at("# a courier that cannot book\nname: c\nkind: courier\nwebhook: { source: c }\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!((found[0].0, found[0].1), (3, 7), "{found:#?}");
        assert!(found[0].2.contains("must declare `operations.book`"));
        assert_eq!((found[1].0, found[1].1), (4, 1), "{found:#?}");
        assert!(found[1].2.contains("couriers use `callback`"));

        let found = at(
            "name: c\nkind: courier\noperations:\n  track:\n    request: { method: GET, path: /t }\n    success: 'true'\n",
        );
        let lines: Vec<(usize, usize)> = found.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(lines, [(3, 1), (3, 1)], "{found:#?}");
        assert!(found.iter().any(|f| f.2.contains("missing `base_url`")));

        // A `book` written but unreadable is reported once, inside it.
        let found = at(
            "name: c\nkind: courier\nbase_url: https://c.example\noperations:\n  book:\n    request: { path: /b }\n    success: 'true'\n",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, 6, "{found:#?}");
        assert!(found[0].2.contains("missing key `method`"), "{found:#?}");
    }

    #[test]
    fn an_unreadable_body_mapping_is_reported_where_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
        std::fs::write(dir.path().join("mappings/book.yaml"), b"a: \xff\n").unwrap();
        let text = "name: c\nkind: courier\nbase_url: https://c.example\noperations:\n  book:\n    request: { method: POST, path: /b, body: mappings/book.yaml }\n    success: 'true'\n    extract: { tracking_number: $.cn }\n";
        let found = Connector::parse(text, Path::new("connectors/c.yaml"), dir.path()).unwrap_err();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            (found[0].file.as_path(), found[0].line, found[0].column),
            (Path::new("connectors/c.yaml"), 6, 46),
            "{found:#?}"
        );
        assert!(found[0].message.contains("cannot be read"), "{found:#?}");
    }

    #[test]
    fn request_template_errors_point_at_their_value() {
        let text = "name: c\nkind: courier\nbase_url: https://c.example\noperations:\n  book:\n    request:\n      method: POST\n      path: /b\n      headers: { token: \"{{ credentials.token \" }\n    success: 'true'\n    extract: { tracking_number: $.cn }\n";
        let found = only_problem(text);
        assert_eq!((found.line, found.column), (9, 25), "{found:#?}");
        assert!(found.message.contains("request template"), "{found:#?}");
    }

    /// A store connector (no operations needed) with `statuses` as written.
    fn with_statuses(statuses: &str) -> String {
        format!("name: c\nkind: store\nstatuses:\n{statuses}")
    }

    const VOCABULARY: &str = "draft, booked, picked_up, in_transit, out_for_delivery, \
         delivery_failed, on_hold, delivered, returning, returned, cancelled, exception, unknown";

    #[test]
    fn a_status_outside_the_vocabulary_is_refused_with_the_valid_names() {
        for (statuses, line, column) in [
            ("  table:\n    \"Booked\": bookd\n", 5, 15),
            (
                "  table:\n    \"Booked\": booked\n    \"Lost\": { status: lost, sub_status: x }\n",
                6,
                23,
            ),
            (
                "  rules:\n    - { regex: \"^lost\", status: lost }\n",
                5,
                33,
            ),
            ("  table: {}\n  unknown: nope\n", 5, 12),
        ] {
            let problem = only_problem(&with_statuses(statuses));
            assert_eq!(
                (problem.line, problem.column),
                (line, column),
                "{problem:#?}"
            );
            assert!(
                problem.message.contains(VOCABULARY),
                "{statuses}: {}",
                problem.message
            );
        }
        let problem = only_problem(&with_statuses("  table:\n    \"Booked\": bookd\n"));
        assert!(
            problem.message.contains("`bookd` (did you mean `booked`?)"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn keys_that_collide_once_normalised_name_each_other() {
        let text = with_statuses(
            "  table:\n    \"Unbooked\": booked\n    \"Delivered\": delivered\n    \" UnBooked \": booked\n    \"Attempt Made:*\": delivery_failed\n    \"attempt  made: *\": delivery_failed\n",
        );
        let diagnostics = parse(&text).unwrap_err();
        let found: Vec<(usize, &str)> = diagnostics
            .iter()
            .map(|d| (d.line, d.message.as_str()))
            .collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].0, 7, "{found:#?}");
        assert!(
            found[0].1.contains("` UnBooked ` and `Unbooked` (line 5)"),
            "{found:#?}"
        );
        assert_eq!(found[1].0, 9, "{found:#?}");
        assert!(
            found[1]
                .1
                .contains("`attempt  made: *` and `Attempt Made:*` (line 8)"),
            "{found:#?}"
        );
    }

    #[test]
    fn an_invalid_regex_is_reported_at_it_with_the_regex_error() {
        let text = with_statuses(
            "  rules:\n    - { regex: \"^fine$\", status: exception }\n    - regex: \"(?P<reason>unclosed\"\n      status: exception\n",
        );
        let problem = only_problem(&text);
        assert_eq!((problem.line, problem.column), (6, 14), "{problem:#?}");
        assert_eq!(
            problem.message,
            "`(?P<reason>unclosed` is not a valid regex: unclosed group"
        );
        assert_only_problem(
            &with_statuses("  rules:\n    - { regex: x, status: exception, reason: y }\n"),
            5,
            "unknown key `reason`",
        );
    }

    #[test]
    fn rules_follow_the_table_in_the_order_written() {
        let text = with_statuses(
            "  table: { \"Undelivered\": delivery_failed }\n  rules:\n    - { regex: \"^undelivered due to (?P<reason>.+)$\", status: delivery_failed, sub_status: address_issue }\n    - { regex: \"returned to shipper\", status: returned }\n",
        );
        let table = parse(&text).unwrap().statuses.unwrap();
        let found = table.lookup("UNDELIVERED  due to Incorrect Address");
        assert_eq!(found.status, Status::DeliveryFailed);
        assert_eq!(found.sub_status.as_deref(), Some("address_issue"));
        assert_eq!(found.reason.as_deref(), Some("Incorrect Address"));
        assert_eq!(table.lookup("undelivered").sub_status, None);
        assert_eq!(
            table.lookup("Parcel Returned to Shipper on Monday").status,
            Status::Returned
        );
        assert!(table.lookup("Returned").is_unmatched());
    }

    #[test]
    fn a_notifier_is_a_signing_secret_and_a_url() {
        let notifier = "name: n\nkind: notifier\ncredentials:\n  signing_secret: { type: string, secret: true, required: true }\n";
        assert_eq!(parse(notifier).unwrap().kind, ConnectorKind::Notifier);
        let not_secret =
            "name: n\nkind: notifier\ncredentials:\n  signing_secret: { type: string }\n";
        assert_only_problem(not_secret, 3, "`signing_secret` with `secret: true`");
        let limited =
            format!("{notifier}rate_limit: {{ per_account: {{ requests: 1, per: 1s }} }}\n");
        assert_only_problem(&limited, 5, "takes no `rate_limit`");
    }
}
