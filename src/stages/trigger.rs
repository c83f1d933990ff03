//! The `trigger` step: an expression that decides whether an event is acted on.
//! Non-matching events are acknowledged and counted.
//!
//! ```yaml
//! - trigger: "event.topic == 'orders/paid'"
//! ```

use super::StageError;
use crate::mapping::Expr;
use serde_json::Value;

pub fn matches(expr: &Expr, ctx: &Value) -> Result<bool, StageError> {
    expr.eval_bool(ctx)
        .map_err(|e| StageError::permanent("trigger", e.to_string()))
}
