//! Mapping tests: every `mappings/**/<name>.test.yaml` holds cases run against
//! the mapping `<name>.yaml` beside it (what `waybill test` runs).
//!
//! ```yaml
//! - name: COD order
//!   input_files: { order: ../../samples/shopify/order-cod.json }  # relative to this file
//!   input:                                   # merged over input_files, key by key
//!     account: { name: shopify-main, settings: {} }
//!   expect:                                  # maps: only the keys written are compared
//!     payment: cod
//!     recipient: { phone: "+923001234567" }
//! - name: bad amount
//!   input: { order: { total_outstanding: abc } }
//!   expect_error: "is not a number"          # a substring of the error
//! ```
//!
//! Maps in `expect` are compared by the keys they list (a key written as
//! `null` must be null or absent); lists and scalars must be equal.

use super::Mapping;
use crate::yaml;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One test case as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    input: serde_json::Map<String, Value>,
    /// Variable name → JSON file, relative to the test file.
    #[serde(default)]
    input_files: BTreeMap<String, String>,
    expect: Option<Value>,
    expect_error: Option<String>,
}

/// One failed case (or a test file that could not be run).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFailure {
    pub file: PathBuf,
    pub case: String,
    pub message: String,
}

/// Outcome of running mapping tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestReport {
    /// Test files found.
    pub files: usize,
    pub passed: usize,
    pub failures: Vec<CaseFailure>,
}

impl TestReport {
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    fn fail(&mut self, file: &Path, case: &str, message: String) {
        self.failures.push(CaseFailure {
            file: file.to_path_buf(),
            case: case.to_string(),
            message,
        });
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.failures {
            writeln!(f, "FAIL {}: {}", failure.file.display(), failure.case)?;
            for line in failure.message.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        write!(
            f,
            "{} passed, {} failed ({} test file{})",
            self.passed,
            self.failed(),
            self.files,
            if self.files == 1 { "" } else { "s" }
        )
    }
}

/// Runs every `mappings/**/*.test.yaml` under `base_dir`.
pub fn run_tests(base_dir: &Path) -> TestReport {
    let mut report = TestReport::default();
    let pattern = base_dir.join("mappings").join("**").join("*.test.yaml");
    let files = match glob::glob(&pattern.to_string_lossy()) {
        Ok(paths) => paths,
        Err(e) => {
            report.fail(&pattern, "(search)", format!("bad search pattern: {e}"));
            return report;
        }
    };
    let mut files: Vec<PathBuf> = files.filter_map(Result::ok).collect();
    files.sort();
    for file in files {
        report.files += 1;
        run_file(&file, &mut report);
    }
    report
}

fn run_file(test_file: &Path, report: &mut TestReport) {
    let name = test_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mapping_path = test_file.with_file_name(name.replace(".test.yaml", ".yaml"));
    let mapping = match Mapping::load(&mapping_path) {
        Ok(mapping) => mapping,
        Err(diagnostics) => {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            report.fail(test_file, "(mapping)", lines.join("\n"));
            return;
        }
    };
    let cases = match read_cases(test_file) {
        Ok(cases) => cases,
        Err(e) => {
            report.fail(test_file, "(test file)", e);
            return;
        }
    };
    for case in cases {
        match run_case(&mapping, test_file, &case) {
            Ok(()) => report.passed += 1,
            Err(message) => report.fail(test_file, &case.name, message),
        }
    }
}

fn read_cases(test_file: &Path) -> Result<Vec<Case>, String> {
    let tree = yaml::read(test_file).map_err(|e| match e {
        yaml::ReadError::Syntax(e) => format!("{}:{}: invalid YAML: {e}", e.line, e.column),
        io => io.to_string(),
    })?;
    yaml::from_node(&tree).map_err(|e| format!("{}:{}: {e}", e.line, e.column))
}

fn run_case(mapping: &Mapping, test_file: &Path, case: &Case) -> Result<(), String> {
    let dir = test_file.parent().unwrap_or(Path::new("."));
    let mut context = serde_json::Map::new();
    for (var, file) in &case.input_files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        context.insert(var.clone(), value);
    }
    for (var, value) in &case.input {
        match context.get_mut(var) {
            Some(base) => merge(base, value),
            None => {
                context.insert(var.clone(), value.clone());
            }
        }
    }
    let result = mapping.eval(&Value::Object(context));
    match (&case.expect, &case.expect_error, result) {
        (Some(_), Some(_), _) | (None, None, _) => {
            Err("a case needs exactly one of `expect` and `expect_error`".to_string())
        }
        (Some(expected), None, Ok(actual)) => {
            let mut differences = Vec::new();
            compare(expected, &actual, "", &mut differences);
            if differences.is_empty() {
                Ok(())
            } else {
                Err(differences.join("\n"))
            }
        }
        (Some(_), None, Err(err)) => Err(format!("mapping failed: {err}")),
        (None, Some(wanted), Err(err)) if err.to_string().contains(wanted.as_str()) => Ok(()),
        (None, Some(wanted), Err(err)) => Err(format!(
            "expected an error containing {wanted:?}, got: {err}"
        )),
        (None, Some(wanted), Ok(actual)) => Err(format!(
            "expected an error containing {wanted:?}, but the mapping gave {actual}"
        )),
    }
}

/// Overlays `over` on `base`: maps merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// Integers compare exactly; an integer equals a float only below 2^53, where floats are exact.
fn same_number(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let integer =
        |n: &serde_json::Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    match (integer(a), integer(b), a.as_f64(), b.as_f64()) {
        (Some(x), Some(y), _, _) => x == y,
        (None, None, Some(x), Some(y)) => x == y,
        (_, _, Some(x), Some(y)) => x == y && x.abs() < EXACT,
        _ => false,
    }
}

fn compare(expected: &Value, actual: &Value, at: &str, differences: &mut Vec<String>) {
    let here = if at.is_empty() { "(root)" } else { at };
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, value) in want {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                compare(
                    value,
                    got.get(key).unwrap_or(&Value::Null),
                    &path,
                    differences,
                );
            }
        }
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                compare(w, g, &format!("{at}[{i}]"), differences);
            }
        }
        (Value::Number(want), Value::Number(got)) if same_number(want, got) => {}
        (want, got) if want == got => {}
        (want, got) => {
            differences.push(format!("at {here}:\n  expected: {want}\n  actual:   {got}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn differences(expected: Value, actual: Value) -> Vec<String> {
        let mut out = Vec::new();
        compare(&expected, &actual, "", &mut out);
        out
    }

    #[test]
    fn expectations_compare_listed_keys_and_whole_lists() {
        assert!(differences(json!({"a": 1}), json!({"a": 1, "b": 2})).is_empty());
        assert!(differences(json!({"a": null}), json!({})).is_empty());
        assert!(differences(json!({"n": 1.5}), json!({"n": 1.5})).is_empty());
        assert!(differences(json!({"n": 1500}), json!({"n": 1500.0})).is_empty());
        let diff = differences(
            json!({"r": {"phone": "+92"}, "l": [1]}),
            json!({"r": {"phone": null}, "l": [1, 2]}),
        );
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].contains("expected: [1]"), "{}", diff[0]);
        assert!(diff[1].starts_with("at r.phone:"), "{}", diff[1]);
        assert_eq!(
            differences(json!(820982911946154508u64), json!(820982911946154509u64)).len(),
            1
        );
    }

    #[test]
    fn inputs_merge_over_files_key_by_key() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut base, &json!({"a": {"c": null}, "d": [2]}));
        assert_eq!(base, json!({"a": {"b": 1, "c": null}, "d": [2]}));
    }

    #[test]
    fn runner_reports_passes_and_readable_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mappings = dir.path().join("mappings/demo");
        std::fs::create_dir_all(&mappings).unwrap();
        std::fs::write(
            mappings.join("m.yaml"),
            "ref: \"{{ order.name }}\"\nn: \"{{ order.n | money }}\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("order.json"),
            r##"{"name": "#1", "n": "5"}"##,
        )
        .unwrap();
        std::fs::write(
            mappings.join("m.test.yaml"),
            r##"
- name: from file
  input_files: { order: ../../order.json }
  expect: { ref: "#1", n: "5.00" }
- name: override
  input_files: { order: ../../order.json }
  input: { order: { name: "#2" } }
  expect: { ref: "#1" }
- name: error
  input: { order: { name: x, n: abc } }
  expect_error: "is not a number"
"##,
        )
        .unwrap();
        let report = run_tests(dir.path());
        assert_eq!(
            (report.files, report.passed, report.failed()),
            (1, 2, 1),
            "{report}"
        );
        let text = report.to_string();
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("override"), "{text}");
        assert!(
            text.contains("expected: \"#1\"") && text.contains("actual:   \"#2\""),
            "{text}"
        );
        assert!(text.ends_with("2 passed, 1 failed (1 test file)"), "{text}");
    }
}
