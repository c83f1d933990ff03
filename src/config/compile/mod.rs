//! Turns raw configuration files into the checked [`Config`], collecting
//! every problem as a located [`Diagnostic`] instead of stopping at the first.
//!
//! Each file is parsed on its own, each account and each pipeline step is read
//! on its own, and one semantic pass then checks what refers to what
//! (connectors, credential and settings schemas, route targets, mappings,
//! expressions).
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: postex, credentials: { token: "${POSTEX_TOKEN}" } }
//! ```

mod accounts;
mod cod;
mod consumers;
mod notify;
mod pipelines;
mod settings;
mod sync;

use super::interpolate::{Lookup, interpolate_node};
use super::raw::RawConfig;
use super::{Config, Diagnostic};
use crate::connector::{Connector, ConnectorKind};
use crate::diagnostic::{Diagnostics, Position};
use crate::mapping::Mapping;
use crate::yaml::{self, Located, Node, ReadError, Value};
use pipelines::Patterns;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads and compiles the configuration rooted at `path`, taking `${VAR}`
/// values from `lookup`.
pub fn load_with(path: &Path, lookup: Lookup<'_>) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Compiler {
        diagnostics: Diagnostics::default(),
        lookup,
        mappings: BTreeMap::new(),
    };
    let config = cx.config(path);
    cx.diagnostics
        .finish(config, path, "the configuration could not be compiled")
}

/// Compiles the main file and everything it refers to, collecting every problem.
struct Compiler<'a> {
    diagnostics: Diagnostics,
    lookup: Lookup<'a>,
    /// Mappings already loaded, so one shared by pipelines is read (and reported) once.
    mappings: BTreeMap<PathBuf, Option<Arc<Mapping>>>,
}

/// What a pipeline may refer to about an account, including accounts that
/// failed to compile (so their mistakes are not reported again at each use).
struct AccountRef {
    /// `None` when the connector could not be loaded.
    connector: Option<Arc<Connector>>,
    /// The connector name as written, when it could be read.
    connector_name: Option<String>,
    /// The account, when it compiled cleanly.
    compiled: Option<Arc<crate::connector::Account>>,
    /// Where the account is named in the main file.
    at: Position,
}

impl AccountRef {
    fn kind(&self) -> Option<ConnectorKind> {
        self.connector.as_ref().map(|c| c.kind)
    }
}

/// Where a file was named (a pipeline pattern, a `map:` step, an account's
/// connector), so a file that cannot be read is reported there.
#[derive(Clone, Copy)]
struct Reference<'a> {
    file: &'a Path,
    at: Position,
}

impl Compiler<'_> {
    fn report(&mut self, file: &Path, at: Position, message: impl Into<String>) {
        self.diagnostics.report(file, at, message);
    }

    fn report_node_errors(&mut self, file: &Path, errors: Vec<yaml::Error>) {
        for e in errors {
            self.report(file, e.position(), e.to_string());
        }
    }

    /// Reads and parses one YAML file. One that cannot be read is reported
    /// where it was named, or in itself when nothing named it.
    fn read_tree(&mut self, file: &Path, from: Option<Reference<'_>>) -> Option<Node> {
        match yaml::read(file) {
            Ok(node) => Some(node),
            Err(ReadError::Syntax(e)) => {
                self.report(file, e.position(), format!("invalid YAML: {e}"));
                None
            }
            Err(ReadError::Io { source, .. }) => {
                match from {
                    Some(from) => self.report(
                        from.file,
                        from.at,
                        format!("cannot read {}: {source}", file.display()),
                    ),
                    None => self.report(
                        file,
                        Position::default(),
                        format!("cannot read file: {source}"),
                    ),
                }
                None
            }
        }
    }

    /// Reads the file `full`, named by `name` in `file`, and compiles it.
    /// When it has errors they are kept, and `name` is reported as a `what`
    /// with errors, so the file naming it points at them.
    fn compile_named<T>(
        &mut self,
        file: &Path,
        name: &Located<String>,
        full: &Path,
        what: &str,
        compile: impl FnOnce(&Node) -> Result<T, Vec<Diagnostic>>,
    ) -> Option<Arc<T>> {
        let from = Reference {
            file,
            at: name.position(),
        };
        let tree = self.read_tree(full, Some(from))?;
        match compile(&tree) {
            Ok(compiled) => Some(Arc::new(compiled)),
            Err(diagnostics) => {
                let message = format!(
                    "{what} `{}` has errors (listed under {})",
                    name.shown(),
                    full.display()
                );
                self.report(file, name.position(), message);
                self.diagnostics.extend(diagnostics);
                None
            }
        }
    }

    /// [`Compiler::read_tree`], then `${VAR}` substituted in its strings.
    fn read_yaml(&mut self, file: &Path, from: Option<Reference<'_>>) -> Option<Node> {
        let mut node = self.read_tree(file, from)?;
        interpolate_node(&mut node, file, self.lookup, &mut self.diagnostics);
        Some(node)
    }

    fn config(&mut self, path: &Path) -> Option<Config> {
        let node = self.read_yaml(path, None)?;
        if node.value == Value::Null {
            self.report(
                path,
                Position::START,
                "the file is empty; expected a map with `accounts:` and `pipelines:`",
            );
            return None;
        }
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawConfig>(&node, &mut errors);
        self.report_node_errors(path, errors);
        let raw = raw?;

        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Collecting the components drops the inner `.` of `./` + `./data`,
        // so logs and errors show `./data`, not `././data`.
        let data_dir: PathBuf = base_dir
            .join(raw.data_dir.as_ref().map_or("./data", |d| d.value.as_str()))
            .components()
            .collect();
        let (bus, kafka_at) = self.bus(path, &raw);
        let store = self.store(path, &raw, &base_dir, &data_dir, kafka_at);
        let http = self.http(path, &raw);
        let account_keys: BTreeMap<&str, Position> = node
            .get("accounts")
            .and_then(Node::entries)
            .into_iter()
            .flatten()
            .map(|(key, _)| (key.name.as_str(), key.position()))
            .collect();
        let accounts = self.accounts(path, &base_dir, &raw.accounts, &account_keys);
        let list_at = node
            .get("pipelines")
            .map_or(Position::START, Node::position);
        let patterns = Patterns {
            written: raw.pipelines.as_deref().map(|p| (p, list_at)),
        };
        let pipelines = self.pipelines(path, &base_dir, patterns, &accounts);
        let (sync, polled_accounts) =
            self.sync(path, raw.sync.as_ref(), &raw.accounts, &accounts.connectors);
        let cod = self.cod(path, raw.cod.as_ref());
        Some(Config {
            path: path.to_path_buf(),
            base_dir,
            data_dir,
            bus,
            store,
            http,
            accounts: accounts.compiled,
            connectors: accounts.connectors,
            pipelines,
            sync,
            polled_accounts,
            cod,
        })
    }
}

#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// A config tree in a temporary directory.
    pub(in crate::config) struct Tree {
        pub(in crate::config) dir: tempfile::TempDir,
    }

    impl Tree {
        pub(in crate::config) fn new(files: &[(&str, &str)]) -> Tree {
            let tree = Tree {
                dir: tempfile::tempdir().unwrap(),
            };
            for (name, text) in files {
                tree.write(name, text.as_bytes());
            }
            tree
        }

        /// A tree holding only `waybill.yaml`, with `text` in it.
        pub(in crate::config) fn waybill(text: &str) -> Tree {
            Tree::new(&[("waybill.yaml", text)])
        }

        /// Writes `bytes` to the file `name`, making its directory first.
        pub(in crate::config) fn write(&self, name: &str, bytes: &[u8]) {
            let path = self.dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }

        pub(in crate::config) fn load(&self) -> Result<Config, Vec<Diagnostic>> {
            let env = |name: &str| (name == "TOKEN").then(|| "t0k#n: x".to_string());
            load_with(&self.dir.path().join("waybill.yaml"), &env)
        }

        /// `(file name, line, column, message)` of every problem.
        pub(in crate::config) fn problems(&self) -> Vec<(String, usize, usize, String)> {
            let diagnostics = self.load().expect_err("expected problems");
            diagnostics
                .into_iter()
                .map(|d| {
                    let name = d
                        .file
                        .strip_prefix(self.dir.path())
                        .unwrap_or(&d.file)
                        .display()
                        .to_string();
                    (name, d.line, d.column, d.message)
                })
                .collect()
        }

        /// The one problem, which must be at `at` (file name, line, column).
        #[track_caller]
        pub(in crate::config) fn sole_problem(
            &self,
            at: (&str, usize, usize),
        ) -> (String, usize, usize, String) {
            let mut problems = self.problems();
            assert_positions(&problems, &[at]);
            problems.remove(0)
        }
    }

    /// Asserts that the message of `problem` says `text`, showing the message if not.
    #[track_caller]
    pub(in crate::config) fn assert_mentions(problem: &(String, usize, usize, String), text: &str) {
        assert!(problem.3.contains(text), "{}", problem.3);
    }

    /// Asserts where the problems are, showing them all if that is not so.
    #[track_caller]
    pub(in crate::config) fn assert_positions(
        problems: &[(String, usize, usize, String)],
        expected: &[(&str, usize, usize)],
    ) {
        assert_eq!(positions(problems), expected, "{problems:#?}");
    }

    fn positions(problems: &[(String, usize, usize, String)]) -> Vec<(&str, usize, usize)> {
        problems
            .iter()
            .map(|(f, l, c, _)| (f.as_str(), *l, *c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::config::{BusSettings, Step};

    #[test]
    fn unknown_keys_at_every_level_are_all_reported() {
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "datadir: ./d\nbus: { kind: embeded }\nhttp: { listen: '127.0.0.1:1', max_body: 5 }\nstore: { uri: x }\n",
            ),
            (
                "pipelines/p.yaml",
                "name: p\nnmae: q\ninput: { topic: t, acounts: [] }\nsteps:\n  - validate: { rules: [phone], strict: true }\n  - route:\n      - { to: c, wen: x }\n  - bookk: {}\n\
                 retry: { max_attempts: 2, delay: 1s }\ndead_letter: { topc: d }\n",
            ),
        ]);
        let problems = tree.problems();
        let expected = [
            ("waybill.yaml", 1, 1),
            ("waybill.yaml", 2, 14),
            ("waybill.yaml", 3, 32),
            ("waybill.yaml", 4, 10),
            ("pipelines/p.yaml", 2, 1),
            ("pipelines/p.yaml", 3, 20),
            ("pipelines/p.yaml", 5, 33),
            ("pipelines/p.yaml", 7, 18),
            ("pipelines/p.yaml", 8, 5),
            ("pipelines/p.yaml", 9, 27),
            ("pipelines/p.yaml", 10, 16),
        ];
        assert_positions(&problems, &expected);
        assert_mentions(&problems[0], "did you mean `data_dir`");
        assert_mentions(&problems[1], "did you mean `embedded`");
        assert_mentions(&problems[8], "did you mean `book`");
    }

    #[test]
    fn syntax_error_and_missing_file() {
        let tree = Tree::waybill("http: [1, 2\nbus: x\n");
        let problems = tree.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].3.starts_with("invalid YAML"),
            "{}",
            problems[0].3
        );
        let tree = Tree::new(&[]);
        assert_positions(&tree.problems(), &[("waybill.yaml", 0, 0)]);
    }

    /// A value from `${VAR}` substitution, wherever a diagnostic quotes it,
    /// is quoted as written: the expansion may be a secret.
    #[test]
    fn substituted_values_are_quoted_as_written_in_every_diagnostic() {
        const SECRET: &str = "ZQX-shop/secret+91a7c3";
        const NUMBER: &str = "-73311";
        let tree = Tree::new(&[
            (
                "waybill.yaml",
                "bus: { kind: '${S}' }\nstore: { url: '${S}' }\n\
                 http: { max_body_bytes: '${S}', max_connections: '${N}', header_read_timeout: '${S}' }\n\
                 accounts:\n  a: { connector: '${S}' }\n\
                 pipelines: ['pipelines/*.yaml', '${S}', 'more/${S}*']\n\
                 sync: { interval: '${D}', max_interval: 1s }\n",
            ),
            (
                "pipelines/p.yaml",
                "name: '${S}'\ninput: { topic: '${S}', accounts: ['${S}'] }\nsteps:\n  \
                 - trigger: '${S} +'\n  - map: '${S}'\n  - validate: { rules: ['${S}'] }\n  \
                 - route: [ { to: '${S}' } ]\n  - book: {}\n\
                 retry: { max_attempts: '${N}', initial: '${S}' }\nmax_in_flight: '${S}'\n",
            ),
            (
                "pipelines/q.yaml",
                "name: 'q-${N}'\ninput: { topic: 'x.${S}' }\nsteps:\n  - validate: { rules: [phone] }\n\
                 output: { topic: '${S}' }\n",
            ),
        ]);
        let env = |name: &str| match name {
            "S" => Some(SECRET.to_string()),
            "N" => Some(NUMBER.to_string()),
            "D" => Some("7243s".to_string()),
            _ => None,
        };
        let diagnostics =
            load_with(&tree.dir.path().join("waybill.yaml"), &env).expect_err("expected problems");
        let all: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        let all = all.join("\n");
        for leaked in [SECRET, "ZQX", "secret+91a7c3", NUMBER, "73311", "7243"] {
            assert!(!all.contains(leaked), "`{leaked}` shown:\n{all}");
        }
        let at = |line: usize| -> Vec<&Diagnostic> {
            diagnostics
                .iter()
                .filter(|d| d.line == line && d.file.ends_with("waybill.yaml"))
                .collect()
        };
        let quoted = |d: &[&Diagnostic], written: &str| {
            d.iter()
                .any(|d| d.message.contains(&format!("`{written}`")))
        };
        assert!(quoted(&at(1), "${S}"), "{all}"); // an enum value
        assert!(quoted(&at(2), "${S}"), "{all}"); // the store url
        assert!(quoted(&at(3), "${S}"), "{all}"); // a number, a duration
        assert!(quoted(&at(3), "${N}"), "{all}"); // a negative count
        assert!(quoted(&at(5), "${S}"), "{all}"); // the connector
        assert!(all.contains("${S}*"), "{all}"); // a pattern
        assert!(quoted(&at(7), "${D}") || all.contains("(${D})"), "{all}"); // a duration compared
        let in_pipeline = diagnostics
            .iter()
            .filter(|d| d.file.ends_with("p.yaml") && d.message.contains("${S}"))
            .count();
        assert!(in_pipeline >= 6, "{all}");
        assert!(
            all.contains("`x.${S}`") && all.contains(" dlq.${S},"),
            "{all}"
        );
    }

    #[test]
    fn shipped_config_loads_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = load_with(&root.join("waybill.yaml"), &|_| None).unwrap_or_else(|d| {
            panic!(
                "{}",
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(config.bus, BusSettings::Embedded);
        assert_eq!(
            config.accounts["shopify-main"].credentials["webhook_secret"],
            "dev-secret"
        );
        assert_eq!(config.accounts["courier-main"].connector, "sandbox");
        let pipeline = config
            .pipelines
            .iter()
            .find(|p| p.name == "shopify-orders")
            .unwrap();
        let stages: Vec<_> = pipeline.steps.iter().map(Step::stage).collect();
        assert_eq!(stages, ["trigger", "map", "validate", "route", "book"]);
    }
}
