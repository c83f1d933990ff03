//! What the engine does beyond sending one prepared request: HTTP Basic
//! and token headers, the token exchange, lookup lists for body mappings,
//! labels and the account check. The caches they fill are in `session.rs`.
//!
//! ```yaml
//! auth:
//!   token: { header: Authorization, value: "Bearer {{ token }}" }
//! lookups:
//!   cities: { operation: cities, ttl: 24h }
//! account_check: { operation: cities }
//! ```

use super::definition::{BasicAuth, Lookup, TokenAuth};
use super::engine::{find, stage_of};
use super::session::Token;
use super::{Account, Connector, Engine, OperationOutput, PreparedRequest};
use crate::model::{ErrorClass, Failure};
use crate::telemetry::events::CourierRequestCompleted;
use serde_json::{Map, Value};
use std::time::Duration;

impl Engine {
    /// Counts a request the engine made on its own, as bookings are counted.
    fn count(
        &self,
        connector: &Connector,
        account: &Account,
        operation: &str,
        started: std::time::Instant,
        failure: Option<&Failure>,
    ) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        CourierRequestCompleted {
            courier: &connector.name,
            account: &account.name,
            operation,
            outcome: failure.map_or("success", |f| f.class.as_str()),
            elapsed: started.elapsed(),
            detail: failure.map_or("", |f| f.message.as_str()),
        }
        .emit(metrics);
    }

    /// `ctx` with the connector's lookups under `lookups`, when it declares
    /// any: tables as written, fetched lists as last fetched by [`Engine::warm`].
    pub(super) fn with_lookups(
        &self,
        connector: &Connector,
        account: &Account,
        ctx: &Value,
    ) -> Option<Value> {
        if connector.lookups.is_empty() {
            return None;
        }
        let mut lookups = Map::new();
        for (name, lookup) in &connector.lookups {
            let ids = match lookup {
                Lookup::Table(table) => Value::Object(table.clone().into_iter().collect()),
                Lookup::Operation { .. } => {
                    let key = super::session::key(&connector.name, &account.name, name);
                    match self.session.lists.cached(&key) {
                        Some(ids) => Value::Object((*ids).clone()),
                        None => continue,
                    }
                }
            };
            lookups.insert(name.clone(), ids);
        }
        let mut with = ctx.clone();
        if let Value::Object(vars) = &mut with {
            vars.insert(crate::mapping::LOOKUPS_VAR.into(), Value::Object(lookups));
        }
        Some(with)
    }

    /// Fetches the lookup lists `account` needs that are not held or have
    /// expired, so that the next [`Engine::prepare`] finds them.
    pub async fn warm(&self, connector: &Connector, account: &Account) -> Result<(), Failure> {
        for (name, lookup) in &connector.lookups {
            let Lookup::Operation { operation, ttl } = lookup else {
                continue;
            };
            let key = super::session::key(&connector.name, &account.name, name);
            self.session
                .lists
                .ensure(&key, *ttl, async || {
                    let started = std::time::Instant::now();
                    let fetched = self.fetch_list(connector, account, operation).await;
                    self.count(
                        connector,
                        account,
                        operation,
                        started,
                        fetched.as_ref().err(),
                    );
                    fetched
                })
                .await?;
        }
        Ok(())
    }

    /// A list operation's items as normalised name → id.
    async fn fetch_list(
        &self,
        connector: &Connector,
        account: &Account,
        operation: &str,
    ) -> Result<Map<String, Value>, Failure> {
        let ctx = Engine::context(account, Map::new());
        let request = self.prepare(connector, operation, account, &ctx)?;
        let output = self.execute(connector, operation, account, request).await?;
        let mut ids = Map::new();
        for item in &output.items {
            let name = match item.get("name") {
                Some(Value::String(name)) => name.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => continue,
            };
            if let Some(id) = item.get("id").filter(|id| id.is_string() || id.is_number()) {
                ids.insert(super::definition::lookup_key(&name), id.clone());
            }
        }
        if ids.is_empty() {
            return Err(Failure::new(
                stage_of(operation),
                ErrorClass::Retryable,
                format!("{operation}: the courier's list had no usable `name` and `id`"),
            ));
        }
        Ok(ids)
    }

    /// The account's token for `connector`, fetched when none is held, it
    /// is due for refresh, or it is the one just `rejected`.
    pub(super) async fn token(
        &self,
        connector: &Connector,
        account: &Account,
        rejected: Option<&str>,
    ) -> Result<Token, Failure> {
        let key = super::session::key(&connector.name, &account.name, "token");
        self.session
            .tokens
            .get(&key, rejected, async || {
                let started = std::time::Instant::now();
                let fetched = self.fetch_token(connector, account).await;
                self.count(connector, account, "token", started, fetched.as_ref().err());
                fetched
            })
            .await
    }

    async fn fetch_token(
        &self,
        connector: &Connector,
        account: &Account,
    ) -> Result<Token, Failure> {
        let Some(auth) = &connector.auth.token else {
            return Err(Failure::permanent(
                "connector",
                "the connector declares no `auth.token`",
            ));
        };
        let ctx = Engine::context(account, Map::new());
        let request = self.prepare(connector, "token", account, &ctx)?;
        let op = find(connector, "token")?;
        let output = self.execute_plain(op, "token", request, None).await?;
        let value = match output.extracted.get("token") {
            Some(Value::String(token)) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                return Err(Failure::new(
                    "connector",
                    ErrorClass::Retryable,
                    "token: the courier answered without a token",
                ));
            }
        };
        let lifetime = match output.extracted.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map_or(auth.lifetime, |secs| Duration::from_secs_f64(secs.min(1e9)));
        Ok(Token::new(
            value,
            lifetime,
            auth.refresh_before,
            &account.secrets,
        ))
    }

    /// Fetches a shipment's label with the `label` operation: its bytes and
    /// content type for a `format: binary` answer.
    pub async fn label(
        &self,
        connector: &Connector,
        account: &Account,
        tracking_number: &str,
    ) -> Result<OperationOutput, Failure> {
        let mut vars = Map::new();
        vars.insert(
            "tracking_number".into(),
            Value::String(tracking_number.into()),
        );
        let ctx = Engine::context(account, vars);
        let request = self.prepare(connector, "label", account, &ctx)?;
        self.execute(connector, "label", account, request).await
    }

    /// The connector's `account_check`: `Ok` when the account works, else
    /// the courier's answer as a failure. `None` when none is declared.
    pub async fn check_account(
        &self,
        connector: &Connector,
        account: &Account,
    ) -> Option<Result<OperationOutput, Failure>> {
        let check = connector.account_check.as_ref()?;
        let ctx = Engine::context(account, check.vars.clone());
        let checked = async {
            let request = self.prepare(connector, &check.operation, account, &ctx)?;
            self.execute_accepting(
                connector,
                &check.operation,
                account,
                request,
                check.ok_when.as_ref(),
            )
            .await
        };
        Some(checked.await)
    }
}

/// `Authorization: Basic …` from the account's rendered user name and password.
pub(super) fn basic_header(basic: &BasicAuth, ctx: &Value) -> Result<String, String> {
    use base64::Engine as _;
    let username = basic.username.render(ctx).map_err(|e| e.to_string())?;
    let password = basic.password.render(ctx).map_err(|e| e.to_string())?;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    Ok(format!("Basic {encoded}"))
}

/// `request` carrying `token` as `auth.token` declares, the token a secret.
pub(super) fn with_token(
    request: &PreparedRequest,
    auth: &TokenAuth,
    token: &Token,
    account: &Account,
) -> Result<PreparedRequest, String> {
    let value = auth
        .value
        .render(&serde_json::json!({ "token": token.value }))
        .map_err(|e| e.to_string())?;
    let mut sent = request.clone();
    sent.headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case(&auth.header));
    sent.headers.push((auth.header.clone(), value));
    // The usual case reuses the secrets compiled with the token; a request
    // with secrets of its own (a Basic header) compiles its own set.
    sent.secrets = if request.secrets == account.secrets {
        token.secrets.clone()
    } else {
        request.secrets.with([token.value.clone()])
    };
    Ok(sent)
}
