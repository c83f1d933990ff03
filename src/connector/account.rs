//! An account as the connector engine uses it: one store or courier account
//! of the main config file, its credentials and settings checked against its
//! connector's schemas when the configuration is compiled.
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: postex, credentials: { token: "${POSTEX_TOKEN}" } }
//! ```

use super::RateLimit;
use crate::redact::Secrets;
use std::collections::BTreeMap;

/// One store or courier account.
#[derive(Clone, PartialEq)]
pub struct Account {
    pub name: String,
    /// Connector name, e.g. `shopify`, `postex`, `sandbox`.
    pub connector: String,
    /// Checked against the connector's credential schema.
    pub credentials: BTreeMap<String, String>,
    /// Checked against the connector's settings schema, defaults filled in.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Overrides the connector's `base_url`.
    pub base_url: Option<String>,
    /// Credential values the connector marks secret: never logged, redacted.
    pub secrets: Secrets,
    /// `false`: never booked on; routing passes over it.
    pub active: bool,
    /// Overrides the connector's `rate_limit.per_account` for this account.
    pub rate_limit: Option<RateLimit>,
}

/// Credential names only: a `{:?}` of an account must not print its values.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("connector", &self.connector)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .field("base_url", &self.base_url)
            .field("active", &self.active)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}
