//! An account as the connector engine uses it: one store or courier account
//! of the main config file, its credentials and settings checked against its
//! connector's schemas when the configuration is compiled.
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: postex, credentials: { token: "${POSTEX_TOKEN}" } }
//! ```

use std::collections::BTreeMap;

/// One store or courier account.
#[derive(Debug, Clone, PartialEq)]
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
    pub secrets: Vec<String>,
}
