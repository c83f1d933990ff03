//! The `route` step: the first rule whose `when` matches and whose courier
//! account is active names the account; a rule without `when` is the
//! default. A rule to an account with `active: false` is passed over.
//!
//! ```yaml
//! - route:
//!     - when: "shipment.recipient.city in ['Karachi', 'Lahore']"
//!       to: courier-main
//!     - to: courier-main
//! ```

use crate::config::RouteRule;
use crate::connector::Account;
use crate::mapping::Context;
use crate::model::Failure;
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn choose(
    rules: &[RouteRule],
    ctx: &Context,
    accounts: &BTreeMap<String, Arc<Account>>,
) -> Result<String, Failure> {
    let mut inactive = Vec::new();
    for rule in rules {
        let matched = match &rule.when {
            None => true,
            Some(expr) => expr
                .eval_bool_in(ctx)
                .map_err(|e| Failure::permanent("route", e.to_string()))?,
        };
        if !matched {
            continue;
        }
        if accounts
            .get(&rule.to)
            .is_some_and(|account| !account.active)
        {
            inactive.push(rule.to.as_str());
            continue;
        }
        return Ok(rule.to.clone());
    }
    let message = if inactive.is_empty() {
        "no route matched and there is no default route (a rule without `when`)".to_string()
    } else {
        format!(
            "every route that matched leads to an inactive account ({}): set `active: true` or add a route to an active one",
            inactive.join(", ")
        )
    };
    Err(Failure::new(
        "route",
        crate::model::ErrorClass::NeedsReview,
        message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Expr;
    use crate::redact::Secrets;

    fn account(name: &str, active: bool) -> (String, Arc<Account>) {
        let account = Account {
            name: name.into(),
            connector: "sandbox".into(),
            credentials: BTreeMap::new(),
            settings: serde_json::Map::new(),
            base_url: None,
            secrets: Secrets::default(),
            active,
            rate_limit: None,
        };
        (name.to_string(), Arc::new(account))
    }

    fn rule(when: Option<&str>, to: &str) -> RouteRule {
        RouteRule {
            when: when.map(|w| Expr::compile(w).unwrap()),
            to: to.into(),
        }
    }

    #[test]
    fn inactive_accounts_are_passed_over() {
        let accounts: BTreeMap<_, _> = [account("off", false), account("on", true)].into();
        let mut ctx = Context::default();
        ctx.set(
            "shipment",
            &serde_json::json!({ "recipient": { "city": "Karachi" } }),
        );
        let rules = [
            rule(Some("shipment.recipient.city == 'Karachi'"), "off"),
            rule(None, "on"),
        ];
        assert_eq!(choose(&rules, &ctx, &accounts).unwrap(), "on");
        let only_inactive = [rule(None, "off")];
        let err = choose(&only_inactive, &ctx, &accounts).unwrap_err();
        assert_eq!(err.class, crate::model::ErrorClass::NeedsReview);
        assert!(
            err.message.contains("inactive account (off)"),
            "{}",
            err.message
        );
    }
}
