//! The parts of a connector that serve every operation: `auth:` (HTTP Basic,
//! token exchange), `lookups:` (name → id tables) and `account_check:`, each
//! checked against the operations the connector declares.
//!
//! ```yaml
//! auth:
//!   token: { header: Authorization, value: "Bearer {{ token }}", lifetime: 1h }
//! lookups:
//!   cities: { operation: cities, ttl: 24h }
//! account_check: { operation: cities }
//! ```

use super::Compiler;
use crate::clock::parse_duration;
use crate::connector::definition::{
    AccountCheck, Auth, BasicAuth, DEFAULT_LOOKUP_TTL, DEFAULT_REFRESH_BEFORE,
    DEFAULT_TOKEN_LIFETIME, Lookup, TokenAuth, lookup_key,
};
use crate::connector::raw::{RawAccountCheck, RawAuth, RawLookup};
use crate::mapping::Template;
use crate::yaml::Located;
use std::collections::BTreeMap;
use std::time::Duration;

/// Operations a `lookups:` entry may fetch from.
const LOOKUP_OPERATIONS: [&str; 1] = ["cities"];

impl Compiler<'_> {
    pub(super) fn auth(&mut self, raw: Option<Located<RawAuth>>, declared: &[&str]) -> Auth {
        let token_declared = declared.contains(&"token");
        let Some(raw) = raw else {
            if token_declared && let Some(at) = self.key("operations") {
                self.report(
                    at,
                    "a `token` operation is used through `auth: { token: {} }`; declare it or remove the operation",
                );
            }
            return Auth::default();
        };
        let at = raw.position();
        let raw = raw.value;
        let basic = raw.basic.and_then(|basic| {
            let username = self.template(&basic.value.username, "auth.basic.username");
            let password = self.template(&basic.value.password, "auth.basic.password");
            Some(BasicAuth {
                username: username?,
                password: password?,
            })
        });
        let token = raw.token.and_then(|token| {
            if !token_declared {
                self.report(
                    token.position(),
                    "`auth.token` needs an operation `token` under `operations:` that extracts `token`",
                );
            }
            let token = token.value;
            let header = token
                .header
                .map_or_else(|| "Authorization".to_string(), |h| h.value);
            let value = match &token.value {
                Some(source) => self.template(source, "auth.token.value"),
                None => Template::compile("Bearer {{ token }}").ok(),
            };
            let lifetime =
                self.duration(token.lifetime.as_ref(), "lifetime", DEFAULT_TOKEN_LIFETIME);
            let refresh_before = self.duration(
                token.refresh_before.as_ref(),
                "refresh_before",
                DEFAULT_REFRESH_BEFORE,
            );
            Some(TokenAuth {
                header,
                value: value?,
                lifetime,
                refresh_before,
            })
        });
        if basic.is_none() && token.is_none() && self.diagnostics.count() == 0 {
            self.report(at, "`auth` needs `basic` or `token`");
        }
        Auth { basic, token }
    }

    pub(super) fn lookups(
        &mut self,
        raw: BTreeMap<String, Located<RawLookup>>,
        declared: &[&str],
    ) -> BTreeMap<String, Lookup> {
        let mut lookups = BTreeMap::new();
        for (name, node) in raw {
            let at = node.position();
            let raw = node.value;
            let lookup = match (raw.table, raw.operation) {
                (Some(table), None) => {
                    if let Some(ttl) = &raw.ttl {
                        self.report(
                            ttl.position(),
                            "`ttl` applies to a lookup fetched with `operation`",
                        );
                    }
                    let mut keyed = BTreeMap::new();
                    for (key, id) in table {
                        if !(id.is_string() || id.is_number()) {
                            self.report(
                                at,
                                format!(
                                    "lookup `{name}`: the id of `{key}` must be a number or text"
                                ),
                            );
                            continue;
                        }
                        if keyed.insert(lookup_key(&key), id).is_some() {
                            self.report(at, format!("lookup `{name}`: `{key}` is written twice (names compare trimmed and case-insensitively)"));
                        }
                    }
                    Lookup::Table(keyed)
                }
                (None, Some(operation)) => {
                    if !LOOKUP_OPERATIONS.contains(&operation.value.as_str()) {
                        self.report(
                            operation.position(),
                            format!(
                                "lookup `{name}`: `operation` must be one of {LOOKUP_OPERATIONS:?}"
                            ),
                        );
                    } else if !declared.contains(&operation.value.as_str()) {
                        self.report(
                            operation.position(),
                            format!("lookup `{name}`: no operation `{}` is declared under `operations:`", operation.value),
                        );
                    }
                    let ttl = self.duration(raw.ttl.as_ref(), "ttl", DEFAULT_LOOKUP_TTL);
                    Lookup::Operation {
                        operation: operation.value,
                        ttl,
                    }
                }
                _ => {
                    self.report(at, format!("lookup `{name}` needs exactly one of `table` (name: id) and `operation` (e.g. `operation: cities`)"));
                    continue;
                }
            };
            lookups.insert(name, lookup);
        }
        lookups
    }

    pub(super) fn account_check(
        &mut self,
        raw: Located<RawAccountCheck>,
        declared: &[&str],
    ) -> Option<AccountCheck> {
        let raw = raw.value;
        if !declared.contains(&raw.operation.value.as_str()) {
            self.report(
                raw.operation.position(),
                format!(
                    "`account_check.operation`: no operation `{}` is declared (declared: {})",
                    raw.operation.value,
                    declared.join(", ")
                ),
            );
            return None;
        }
        let ok_when = match &raw.ok_when {
            Some(source) => Some(self.expr(source, "account_check.ok_when")?),
            None => None,
        };
        Some(AccountCheck {
            operation: raw.operation.value,
            vars: raw.vars.into_iter().collect(),
            ok_when,
        })
    }

    fn template(&mut self, source: &Located<String>, what: &str) -> Option<Template> {
        match Template::compile(&source.value) {
            Ok(template) => Some(template),
            Err(err) => {
                self.report(source.position(), format!("`{what}`: {err}"));
                None
            }
        }
    }

    fn duration(
        &mut self,
        raw: Option<&Located<String>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        let Some(text) = raw else { return default };
        match parse_duration(&text.value) {
            Ok(duration) if !duration.is_zero() => duration,
            _ => {
                self.report(
                    text.position(),
                    format!(
                        "`{what}` `{}` is not a duration such as `30s`, `1h` or `24h`",
                        text.value
                    ),
                );
                default
            }
        }
    }
}
