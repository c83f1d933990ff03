//! Field-mapping templates and expressions (DESIGN §6).
//!
//! A mapping is a YAML tree whose leaves are minijinja templates, evaluated
//! into a `serde_json::Value`. Expressions (`trigger`, `route.when`, a
//! connector's `success` rule) are minijinja expressions over the same context.
//!
//! ```yaml
//! $tables:                                   # optional lookup tables (variable `tables`),
//!   cities: { khi: Karachi, lhr: Lahore }    #   for `lookup('cities', …)`
//! $let:                                      # optional named values, evaluated in order
//!   ship: "{{ order.shipping_address | default(none) }}"
//! reference: "{{ order.name }}"              # exactly "{{ expr }}": keeps the type (number, list, null…)
//! cod_amount: "{{ order.total_outstanding | money }}"
//! label: "Order {{ order.name }} for {{ order.customer.first_name }}"   # anything else: text
//! city: "{{ ship.city }}"
//! "pickupAddressCode?": "{{ account.settings.pickup_code | default(none) }}"  # `?`: left out when null
//! items:                                     # a list built from a list
//!   $each: "{{ order.line_items }}"          # must give a list (null gives an empty list)
//!   $as: item                                # the element's name inside `$map` (default `item`)
//!   $map:                                    # evaluated once per element
//!     name: "{{ item.title }}"
//!     quantity: "{{ item.quantity }}"
//! ```
//!
//! - Leaves are compiled once, when the mapping is loaded; evaluation never
//!   re-parses. Strings without template syntax are constants.
//! - The output is assembled as a value, never as JSON text: a value such as
//!   `Ali "The Rock" {{x}}` or an Urdu address is copied as data, never
//!   evaluated or escaped. Auto-escaping is off everywhere.
//! - Integers stay exact (ids beyond 2^53); `| id` gives an id as a string.
//! - Undefined values: lookups through null are safe
//!   (`order.shipping_address.phone` is null when `shipping_address` is null),
//!   while a variable that is not in the context or a key that a map does not
//!   have is an error as soon as the undefined value reaches the output. See
//!   `env.rs` for how (minijinja's `Chainable` behaviour plus a path check).
//!   Use `| default(…)` for keys that may be absent.
//! - Every evaluation is bounded by minijinja fuel; a failing template is a
//!   [`MappingError`] naming the file, line and output key, never a panic.
//!
//! Built-in filters and functions are listed in `filters.rs`.

mod env;
mod filters;
mod testfile;
mod tree;

pub use filters::{
    LOOKUPS_VAR, PhoneFormat, money_string, normalize_key, normalize_phone, parse_decimal,
};
pub use testfile::{CaseFailure, TestReport, run_tests};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::yaml::{self, ReadError};
use minijinja::value::{Value as MjValue, ValueKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use tree::{Leaf, LeafKind, Node};

/// A template or expression failed for one message: a permanent error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct MappingError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

use env::{from_json as to_context, to_json};

/// Template variables converted to minijinja values once, so that every step
/// of a pipeline evaluates over one conversion of the order, not one each.
#[derive(Clone, Default)]
pub struct Context {
    vars: BTreeMap<String, MjValue>,
}

impl Context {
    /// Sets variable `name` to a JSON value.
    pub fn set(&mut self, name: &str, value: &Value) {
        self.vars.insert(name.to_string(), to_context(value));
    }

    /// The variables as one minijinja map; cheap, values are shared.
    fn value(&self) -> MjValue {
        MjValue::from(self.vars.clone())
    }
}

/// A compiled minijinja expression.
pub struct Expr {
    source: String,
    compiled: minijinja::Expression<'static, 'static>,
    /// Attribute paths read, checked when an undefined value comes out.
    paths: Vec<String>,
    /// The variables it reads (`event`, `order`, …), sorted.
    variables: Vec<String>,
    /// Where the expression was written, for error messages.
    origin: (String, usize),
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`; the error message says what is wrong.
    pub fn compile(source: &str) -> Result<Expr, String> {
        let compiled = env::ENV
            .compile_expression_owned(source.to_string())
            .map_err(|e| format!("invalid expression `{source}`: {}", env::describe(&e)))?;
        let paths = env::checked_paths(compiled.undeclared_variables(true));
        let mut variables: Vec<String> = compiled.undeclared_variables(false).into_iter().collect();
        variables.sort();
        Ok(Expr {
            source: source.to_string(),
            compiled,
            paths,
            variables,
            origin: ("<expression>".into(), 0),
        })
    }

    /// Records where the expression was written, so errors point there.
    pub fn at(mut self, file: impl Into<String>, line: usize) -> Expr {
        self.origin = (file.into(), line);
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads no variable but those in `allowed`, so
    /// a context holding only them gives the answer the full one would.
    pub fn reads_only(&self, allowed: &[&str]) -> bool {
        self.variables.iter().all(|v| allowed.contains(&v.as_str()))
    }

    fn error(&self, message: String) -> MappingError {
        MappingError {
            file: self.origin.0.clone(),
            line: self.origin.1,
            message,
        }
    }

    fn eval_value(&self, ctx: &MjValue) -> Result<MjValue, String> {
        env::take_undefined();
        let value = self
            .compiled
            .eval(ctx.clone())
            .map_err(|e| env::describe(&e))?;
        if (env::take_undefined() || value.is_undefined())
            && let Some(missing) = env::missing_field(ctx, &self.paths)
        {
            return Err(missing);
        }
        Ok(value)
    }

    /// Evaluates against a JSON context.
    pub fn eval(&self, ctx: &Value) -> Result<Value, MappingError> {
        self.eval_value(&to_context(ctx))
            .and_then(|v| to_json(&v))
            .map_err(|m| self.error(format!("`{}`: {m}", self.source)))
    }

    /// Evaluates and takes minijinja's truthiness.
    pub fn eval_bool(&self, ctx: &Value) -> Result<bool, MappingError> {
        self.truthy(&to_context(ctx))
    }

    /// [`Expr::eval_bool`] over variables converted already.
    pub fn eval_bool_in(&self, ctx: &Context) -> Result<bool, MappingError> {
        self.truthy(&ctx.value())
    }

    fn truthy(&self, ctx: &MjValue) -> Result<bool, MappingError> {
        self.eval_value(ctx)
            .map(|v| v.is_true())
            .map_err(|m| self.error(format!("`{}`: {m}", self.source)))
    }
}

/// A compiled text template (e.g. a header value or URL path), rendered many times.
pub struct Template {
    env: minijinja::Environment<'static>,
    source: String,
    paths: Vec<String>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

const TEMPLATE_NAME: &str = "template";

impl Template {
    /// Compiles `source`; the error message says what is wrong.
    pub fn compile(source: &str) -> Result<Template, String> {
        let mut env = env::ENV.clone();
        let invalid = |e: minijinja::Error| {
            let at = e
                .line()
                .map(|l| format!(" (template line {l})"))
                .unwrap_or_default();
            format!("invalid template: {}{at}", env::describe(&e))
        };
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(invalid)?;
        let paths = env
            .get_template(TEMPLATE_NAME)
            .map_err(invalid)?
            .undeclared_variables(true);
        Ok(Template {
            paths: env::checked_paths(paths),
            env,
            source: source.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn render_value(&self, ctx: &MjValue) -> Result<String, String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| env::describe(&e))?;
        env::take_undefined();
        let text = template
            .render(ctx.clone())
            .map_err(|e| env::describe(&e))?;
        if env::take_undefined()
            && let Some(missing) = env::missing_field(ctx, &self.paths)
        {
            return Err(missing);
        }
        Ok(text)
    }

    /// Renders against a JSON context.
    pub fn render(&self, ctx: &Value) -> Result<String, MappingError> {
        self.render_value(&to_context(ctx))
            .map_err(|message| MappingError {
                file: "<template>".into(),
                line: 0,
                message: format!("`{}`: {message}", self.source),
            })
    }
}

/// Renders a one-off text template (e.g. a header value) against a context.
/// Templates used for every message should be compiled once with [`Template`].
pub fn render_str(template: &str, ctx: &Value) -> Result<String, MappingError> {
    Template::compile(template)
        .map_err(|message| MappingError {
            file: "<template>".into(),
            line: 0,
            message,
        })?
        .render(ctx)
}

/// A compiled mapping file.
pub struct Mapping {
    path: PathBuf,
    /// `$let`: named values evaluated in order, then in scope for the tree.
    lets: Vec<(String, Leaf)>,
    root: Node,
    /// `$tables`, offered to templates as `tables`.
    tables: Option<MjValue>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping").field("path", &self.path).finish()
    }
}

impl Mapping {
    /// Reads and compiles a mapping file, reporting every template error.
    /// A file that cannot be read is reported at `0:0`; callers that know
    /// where the file was referenced read it with [`crate::yaml::read`] and
    /// call [`Mapping::compile`].
    pub fn load(path: &Path) -> Result<Mapping, Vec<Diagnostic>> {
        match yaml::read(path) {
            Ok(tree) => Mapping::compile(path, &tree),
            Err(ReadError::Syntax(e)) => Err(vec![syntax_error(path, &e)]),
            Err(ReadError::Io { source, .. }) => Err(vec![Diagnostic::new(
                path,
                0,
                0,
                format!("cannot read mapping: {source}"),
            )]),
        }
    }

    /// Compiles mapping text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Mapping, Vec<Diagnostic>> {
        let tree = yaml::parse(text).map_err(|e| vec![syntax_error(path, &e)])?;
        Mapping::compile(path, &tree)
    }

    /// Compiles a mapping file's YAML tree.
    pub fn compile(path: &Path, tree: &yaml::Node) -> Result<Mapping, Vec<Diagnostic>> {
        let mut compiler = tree::Compiler {
            file: path,
            diagnostics: Diagnostics::default(),
        };
        let mut tables = None;
        let mut lets = Vec::new();
        for (key, value) in tree.entries().unwrap_or_default() {
            match key.name.as_str() {
                tree::TABLES => tables = Some(to_context(&value.to_json())),
                tree::LET => lets = compiler.lets(value),
                _ => {}
            }
        }
        let root = compiler.node(tree, "");
        let mapping = Mapping {
            path: path.to_path_buf(),
            lets,
            root,
            tables,
        };
        compiler
            .diagnostics
            .finish(Some(mapping), path, "the mapping could not be compiled")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Evaluates the tree against a JSON context.
    pub fn eval(&self, ctx: &Value) -> Result<Value, MappingError> {
        let Value::Object(vars) = ctx else {
            return Err(self.error(
                0,
                format!("the context must be a map of variables, got {ctx}"),
            ));
        };
        let mut converted = Context::default();
        for (name, value) in vars {
            converted.set(name, value);
        }
        self.eval_in(&converted)
    }

    /// [`Mapping::eval`] over variables converted already.
    pub fn eval_in(&self, ctx: &Context) -> Result<Value, MappingError> {
        let mut scope = ctx.vars.clone();
        if let Some(tables) = &self.tables {
            scope
                .entry("tables".into())
                .or_insert_with(|| tables.clone());
        }
        for (name, leaf) in &self.lets {
            let value = self.eval_leaf(leaf, &MjValue::from(scope.clone()))?;
            scope.insert(name.clone(), value);
        }
        let ctx = MjValue::from(scope.clone());
        self.eval_node(&self.root, &scope, &ctx)
    }

    fn error(&self, line: usize, message: String) -> MappingError {
        MappingError {
            file: self.path.display().to_string(),
            line,
            message,
        }
    }

    fn eval_leaf(&self, leaf: &Leaf, ctx: &MjValue) -> Result<MjValue, MappingError> {
        let result = match &leaf.kind {
            LeafKind::Value(expr) => expr.eval_value(ctx),
            LeafKind::Text(template) => template.render_value(ctx).map(MjValue::from),
        };
        result.map_err(|message| self.error(leaf.line, format!("{}: {message}", leaf.key)))
    }

    /// `scope` holds the variables, `ctx` the same as one minijinja value.
    fn eval_node(
        &self,
        node: &Node,
        scope: &BTreeMap<String, MjValue>,
        ctx: &MjValue,
    ) -> Result<Value, MappingError> {
        match node {
            Node::Const(value) => Ok(value.clone()),
            Node::Leaf(leaf) => {
                let value = self.eval_leaf(leaf, ctx)?;
                to_json(&value).map_err(|m| self.error(leaf.line, format!("{}: {m}", leaf.key)))
            }
            Node::List(items) => items
                .iter()
                .map(|n| self.eval_node(n, scope, ctx))
                .collect(),
            Node::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (key, optional, n) in entries {
                    let value = self.eval_node(n, scope, ctx)?;
                    if !(*optional && value.is_null()) {
                        out.insert(key.clone(), value);
                    }
                }
                Ok(Value::Object(out))
            }
            Node::Each { source, var, body } => {
                let list = self.eval_leaf(source, ctx)?;
                match list.kind() {
                    ValueKind::None | ValueKind::Undefined => return Ok(Value::Array(Vec::new())),
                    ValueKind::Seq | ValueKind::Iterable => {}
                    other => {
                        return Err(self.error(
                            source.line,
                            format!("{}: `$each` needs a list, got {other}", source.key),
                        ));
                    }
                }
                let items = list.try_iter().map_err(|e| {
                    self.error(
                        source.line,
                        format!("{}: {}", source.key, env::describe(&e)),
                    )
                })?;
                let mut inner = scope.clone();
                items
                    .map(|item| {
                        inner.insert(var.clone(), item);
                        let inner_ctx = MjValue::from(inner.clone());
                        self.eval_node(body, &inner, &inner_ctx)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
        }
    }
}

fn syntax_error(path: &Path, e: &yaml::Error) -> Diagnostic {
    Diagnostic::at(path, e.position(), format!("invalid YAML: {e}"))
}

#[cfg(test)]
pub(crate) mod tests;
