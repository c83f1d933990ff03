//! `waybill validate`: compiles the whole configuration (main file,
//! pipelines, connectors, mappings) and prints every problem, one per line as
//! `FILE:LINE:COL: message`. Exit code 0 when clean, 1 otherwise.
//!
//! ```yaml
//! # waybill validate --config waybill.yaml
//! pipelines: [ "pipelines/*.yaml" ]
//! ```

use crate::config::{self, Config, Diagnostic};
use std::io::Write;
use std::path::Path;

/// Validates the configuration at `config`; returns the process exit code.
pub fn run(config: &Path) -> i32 {
    let result = config::load(config);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    report(&result, &mut stdout.lock(), &mut stderr.lock())
}

/// Writes diagnostics to `out` and the summary to `err`; returns the exit code.
fn report(
    result: &Result<Config, Vec<Diagnostic>>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    // A closed pipe (e.g. `| head`) must not turn a verdict into a panic.
    match result {
        Ok(config) => {
            for note in notes(config) {
                let _ = writeln!(err, "{note}");
            }
            let _ = writeln!(
                err,
                "{}: ok ({} accounts, {} pipelines)",
                config.path.display(),
                config.accounts.len(),
                config.pipelines.len()
            );
            0
        }
        Err(diagnostics) => {
            for d in diagnostics {
                let _ = writeln!(out, "{d}");
            }
            let plural = if diagnostics.len() == 1 { "" } else { "s" };
            let _ = writeln!(err, "{} problem{plural} found", diagnostics.len());
            1
        }
    }
}

/// What is valid but worth knowing, one line each, for stderr: a note is
/// not a problem, so the exit code stays 0.
pub fn notes(config: &Config) -> Vec<String> {
    let mut notes = inactive_routes(config);
    notes.extend(skipped_write_backs(config));
    notes
}

/// A route step all of whose rules lead to inactive accounts books nothing.
fn inactive_routes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    for pipeline in &config.pipelines {
        for step in &pipeline.steps {
            let crate::config::Step::Route(rules) = step else {
                continue;
            };
            let inactive: Vec<&str> = rules
                .iter()
                .filter(|rule| config.accounts.get(&rule.to).is_some_and(|a| !a.active))
                .map(|rule| rule.to.as_str())
                .collect();
            if !rules.is_empty() && inactive.len() == rules.len() {
                notes.push(format!(
                    "{}: note: pipeline `{}` routes only to inactive accounts ({}): it will book nothing until one is `active: true`",
                    pipeline.file.display(),
                    pipeline.name,
                    inactive.join(", ")
                ));
            }
        }
    }
    notes
}

/// What is configured on purpose but worth knowing: store accounts that
/// `write_back` pipelines take but that lack the credential turning
/// write-back on (the quick start has none), so they are skipped.
fn skipped_write_backs(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, account) in &config.accounts {
        let Some(spec) = config
            .connectors
            .get(&account.connector)
            .and_then(|c| c.write_back.as_ref())
        else {
            continue;
        };
        if account.credentials.contains_key(&spec.credential) {
            continue;
        }
        let pipelines: Vec<&str> = config
            .pipelines
            .iter()
            .filter(|p| p.steps.iter().any(|s| matches!(s, config::Step::WriteBack)))
            .filter(|p| p.accounts.is_empty() || p.accounts.contains(name))
            .map(|p| p.name.as_str())
            .collect();
        if !pipelines.is_empty() {
            notes.push(format!(
                "note: account `{name}` has no `{}`: {} skip it and write nothing back to the store (set `credentials.{}` to write tracking and statuses back)",
                spec.credential,
                pipelines.join(", "),
                spec.credential
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_each_problem_and_fails() {
        let diagnostics = vec![
            Diagnostic::new("waybill.yaml", 3, 1, "unknown key `datadir`"),
            Diagnostic::new("pipelines/a.yaml", 9, 13, "unknown account `courier-mian`"),
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(report(&Err(diagnostics), &mut out, &mut err), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "waybill.yaml:3:1: unknown key `datadir`\npipelines/a.yaml:9:13: unknown account `courier-mian`\n"
        );
        assert_eq!(String::from_utf8(err).unwrap(), "2 problems found\n");
    }

    #[test]
    fn missing_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run(&dir.path().join("nope.yaml")), 1);
    }
}
