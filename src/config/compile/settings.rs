//! The main file's own settings: the bus, the store it must share, and the
//! HTTP server, each checked against the others.
//!
//! ```yaml
//! bus: { kind: kafka, brokers: "kafka:9092" }
//! store: { url: "postgres://waybill@postgres/waybill" }   # Kafka needs a shared store
//! http: { listen: "0.0.0.0:8080", max_body_bytes: 1048576, max_connections: 1024,
//!         header_read_timeout: 10s, body_read_timeout: 10s }
//! ```

use super::Compiler;
use crate::config::raw::{BusKind, RawConfig, RawDuration};
use crate::config::{BusSettings, HttpSettings, StoreSettings};
use crate::diagnostic::Position;
use crate::yaml::Located;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_LISTEN_PORT: u16 = 8080;
/// Far above what one instance serves behind a load balancer, and a bound
/// that keeps idle connections (about 1 KiB each before their first byte)
/// from adding up.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The connection count is waited for as one semaphore request at shutdown.
const MAX_CONNECTIONS_CEILING: usize = 1 << 20;
/// Stores send heads of 1–2 KiB; 16 KiB leaves room and bounds what a
/// connection holds before its handler runs.
const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Stores give up on an answer after 5 s and retry later; 10 s still lets a
/// 1 MiB body arrive at 100 KiB/s, and frees a stalled sender's share soon.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies of the largest size that may be read at once by default.
const DEFAULT_BUFFERED_BODIES: usize = 16;

impl Compiler<'_> {
    /// The bus, and where Kafka was chosen (for the shared-store check).
    pub(super) fn bus(&mut self, file: &Path, raw: &RawConfig) -> (BusSettings, Option<Position>) {
        let Some(bus) = &raw.bus else {
            return (BusSettings::Embedded, None);
        };
        let at = bus.kind.position();
        match bus.kind.value {
            BusKind::Embedded => {
                if let Some(b) = &bus.brokers {
                    self.report(
                        file,
                        b.position(),
                        "`brokers` is only used with `kind: kafka`",
                    );
                }
                if let Some(p) = &bus.properties {
                    self.report(
                        file,
                        p.position(),
                        "`properties` is only used with `kind: kafka`",
                    );
                }
                if let Some(p) = &bus.topic_prefix {
                    self.report(
                        file,
                        p.position(),
                        "`topic_prefix` is only used with `kind: kafka`",
                    );
                }
                (BusSettings::Embedded, None)
            }
            BusKind::Kafka => {
                let brokers = match &bus.brokers {
                    Some(b) if !b.value.trim().is_empty() => b.value.clone(),
                    _ => {
                        self.report(
                            file,
                            at,
                            "`kind: kafka` needs `brokers`, e.g. `brokers: \"localhost:9092\"`",
                        );
                        String::new()
                    }
                };
                let properties = bus
                    .properties
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default();
                let topic_prefix = bus
                    .topic_prefix
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default();
                (
                    BusSettings::Kafka {
                        brokers,
                        topic_prefix,
                        properties,
                    },
                    Some(at),
                )
            }
        }
    }

    pub(super) fn store(
        &mut self,
        file: &Path,
        raw: &RawConfig,
        base_dir: &Path,
        data_dir: &Path,
        kafka_at: Option<Position>,
    ) -> StoreSettings {
        let url = raw.store.as_ref().and_then(|s| s.url.as_ref());
        let shared = data_dir.join(crate::bus::embedded::DATABASE_FILE);
        let resolved = match url {
            Some(url) => {
                let known = ["sqlite://", "postgres://", "postgresql://"];
                if !known.iter().any(|scheme| url.value.starts_with(scheme)) {
                    self.report(file, url.position(), format!("store url `{}` is not supported: expected `sqlite://PATH` or `postgres://…`", url.shown()));
                }
                // The embedded bus keeps the store in its own database, so
                // that append and dedupe are one transaction (DESIGN §8): a
                // SQLite file of its own would be silently unused.
                if let (None, Some(named)) = (kafka_at, url.value.strip_prefix("sqlite://")) {
                    let named = named.split('?').next().unwrap_or_default();
                    if base_dir.join(named) != shared {
                        self.report(file, url.position(), format!("with the embedded bus the store is kept in the bus's database, `{}`: remove `store.url`, or set it to a postgres:// URL", shared.display()));
                    }
                }
                url.value.clone()
            }
            None => format!("sqlite://{}", shared.display()),
        };
        if let Some(kafka_at) = kafka_at
            && !(resolved.starts_with("postgres://") || resolved.starts_with("postgresql://"))
        {
            self.report(
                file,
                url.map_or(kafka_at, |u| u.position()),
                "kafka needs a shared store: set store.url to a postgres:// URL",
            );
        }
        StoreSettings { url: resolved }
    }

    pub(super) fn http(&mut self, file: &Path, raw: &RawConfig) -> HttpSettings {
        let http = raw.http.as_ref();
        let listen = http
            .and_then(|h| h.listen)
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_LISTEN_PORT)));
        let max_body_bytes = self.at_least(
            file,
            http.and_then(|h| h.max_body_bytes.as_ref()),
            ("max_body_bytes", 1),
            DEFAULT_MAX_BODY_BYTES,
        );
        let max_connections = self.at_least(
            file,
            http.and_then(|h| h.max_connections.as_ref()),
            ("max_connections", 1),
            DEFAULT_MAX_CONNECTIONS,
        );
        if let Some(m) = http.and_then(|h| h.max_connections.as_ref())
            && m.value > MAX_CONNECTIONS_CEILING
        {
            self.report(
                file,
                m.position(),
                format!("`max_connections` must be at most {MAX_CONNECTIONS_CEILING}"),
            );
        }
        let max_header_bytes = self.at_least(
            file,
            http.and_then(|h| h.max_header_bytes.as_ref()),
            ("max_header_bytes", 1024),
            DEFAULT_MAX_HEADER_BYTES,
        );
        let default_buffered = max_body_bytes.saturating_mul(DEFAULT_BUFFERED_BODIES);
        let max_buffered_body_bytes = self.at_least(
            file,
            http.and_then(|h| h.max_buffered_body_bytes.as_ref()),
            ("max_buffered_body_bytes", max_body_bytes),
            default_buffered,
        );
        HttpSettings {
            listen,
            max_body_bytes,
            max_connections,
            header_read_timeout: self.timeout(
                file,
                http.and_then(|h| h.header_read_timeout.as_ref()),
                "header_read_timeout",
            ),
            max_header_bytes,
            body_read_timeout: self.timeout(
                file,
                http.and_then(|h| h.body_read_timeout.as_ref()),
                "body_read_timeout",
            ),
            max_buffered_body_bytes,
        }
    }

    /// A written count of at least `least` (reported otherwise), or `default`.
    fn at_least(
        &mut self,
        file: &Path,
        written: Option<&Located<usize>>,
        (key, least): (&str, usize),
        default: usize,
    ) -> usize {
        match written {
            Some(m) if m.value < least => {
                let why = if key == "max_buffered_body_bytes" {
                    format!("`{key}` must be at least `max_body_bytes` ({least})")
                } else {
                    format!("`{key}` must be at least {least}")
                };
                self.report(file, m.position(), why);
                default.max(least)
            }
            Some(m) => m.value,
            None => default,
        }
    }

    /// A written timeout longer than zero (reported otherwise), or the default.
    fn timeout(
        &mut self,
        file: &Path,
        written: Option<&Located<RawDuration>>,
        key: &str,
    ) -> Duration {
        match written {
            Some(d) if d.value.0.is_zero() => {
                self.report(file, d.position(), format!("`{key}` must be longer than 0"));
                DEFAULT_HTTP_TIMEOUT
            }
            Some(d) => d.value.0,
            None => DEFAULT_HTTP_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    #[test]
    fn empty_config_gets_defaults() {
        let tree = Tree::waybill("accounts: {}\n");
        let config = tree.load().unwrap();
        let base = tree.dir.path();
        assert_eq!(config.base_dir, base);
        assert_eq!(config.data_dir, base.join("./data"));
        assert_eq!(
            config.data_dir.display().to_string(),
            base.join("data").display().to_string()
        );
        assert_eq!(config.bus, BusSettings::Embedded);
        assert_eq!(
            config.store.url,
            format!(
                "sqlite://{}",
                base.join("data").join("waybill.db").display()
            )
        );
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.http.max_body_bytes, 1024 * 1024);
        assert!(config.pipelines.is_empty());
    }

    #[test]
    fn main_file_settings_and_interpolation() {
        let tree = Tree::new(&[(
            "waybill.yaml",
            "data_dir: /var/lib/waybill\nbus: { kind: kafka, brokers: 'k:9092', topic_prefix: 'team-a.', properties: { session.timeout.ms: '${TIMEOUT:-6000}' } }\n\
             store: { url: 'postgres://db/w' }\nhttp: { listen: '0.0.0.0:9000', max_body_bytes: 10 }\n",
        )]);
        let config = tree.load().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/waybill"));
        let properties = BTreeMap::from([("session.timeout.ms".to_string(), "6000".to_string())]);
        assert_eq!(
            config.bus,
            BusSettings::Kafka {
                brokers: "k:9092".to_string(),
                topic_prefix: "team-a.".to_string(),
                properties
            }
        );
        assert_eq!(config.store.url, "postgres://db/w");
        assert_eq!(config.http.max_body_bytes, 10);
    }

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let config = Tree::waybill("accounts: {}\n").load().unwrap();
        let http = &config.http;
        assert_eq!(http.max_connections, 1024);
        assert_eq!(http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(http.max_header_bytes, 16 * 1024);
        assert_eq!(http.body_read_timeout, Duration::from_secs(10));
        assert_eq!(http.max_buffered_body_bytes, 16 * 1024 * 1024);

        let tree = Tree::waybill(
            "http: { max_body_bytes: 1000, max_connections: 8, header_read_timeout: 200ms, \
             max_header_bytes: 2048, body_read_timeout: 1s }\n",
        );
        let http = tree.load().unwrap().http;
        assert_eq!(http.max_connections, 8);
        assert_eq!(http.header_read_timeout, Duration::from_millis(200));
        assert_eq!(http.max_header_bytes, 2048);
        assert_eq!(http.body_read_timeout, Duration::from_secs(1));
        assert_eq!(
            http.max_buffered_body_bytes, 16_000,
            "16 bodies of the largest size"
        );

        let tree = Tree::waybill(
            "http:\n  max_connections: 0\n  header_read_timeout: 0s\n  max_header_bytes: 100\n  \
             body_read_timeout: 0ms\n  max_body_bytes: 4096\n  max_buffered_body_bytes: 4095\n",
        );
        let problems = tree.problems();
        assert_positions(
            &problems,
            &[
                ("waybill.yaml", 2, 20),
                ("waybill.yaml", 3, 24),
                ("waybill.yaml", 4, 21),
                ("waybill.yaml", 5, 22),
                ("waybill.yaml", 7, 28),
            ],
        );
        let text: Vec<&str> = problems.iter().map(|p| p.3.as_str()).collect();
        assert!(
            text.contains(&"`max_buffered_body_bytes` must be at least `max_body_bytes` (4096)"),
            "{text:?}"
        );
        assert!(
            text.contains(&"`header_read_timeout` must be longer than 0"),
            "{text:?}"
        );
    }

    #[test]
    fn an_admin_token_is_rejected_until_there_is_an_admin_api() {
        let tree = Tree::waybill("http: { listen: '127.0.0.1:0', admin_token: secret }\n");
        let problem = tree.sole_problem(("waybill.yaml", 1, 32));
        assert!(
            problem.3.starts_with("unknown key `admin_token`"),
            "{}",
            problem.3
        );
    }

    #[test]
    fn kafka_with_sqlite_is_rejected() {
        let tree = Tree::waybill("bus: { kind: kafka, brokers: 'k:9092' }\n");
        let problem = tree.sole_problem(("waybill.yaml", 1, 14));
        assert_eq!(
            problem.3,
            "kafka needs a shared store: set store.url to a postgres:// URL"
        );

        let tree = Tree::waybill(
            "bus: { kind: kafka, brokers: 'k:9092' }\nstore: { url: 'sqlite://x.db' }\n",
        );
        assert_positions(&tree.problems(), &[("waybill.yaml", 2, 15)]);
    }

    #[test]
    fn embedded_bus_with_another_sqlite_file_is_rejected() {
        let tree = Tree::waybill("data_dir: ./d\nstore: { url: 'sqlite://other.db' }\n");
        let problem = tree.sole_problem(("waybill.yaml", 2, 15));
        assert_mentions(&problem, "remove `store.url`");
        // Naming the file it uses anyway, or PostgreSQL, is fine.
        for url in ["sqlite://d/waybill.db", "postgres://db/w"] {
            let tree = Tree::waybill(&format!("data_dir: ./d\nstore: {{ url: '{url}' }}\n"));
            assert!(tree.load().is_ok(), "{url}");
        }
    }

    #[test]
    fn topic_prefix_is_kafka_only_and_empty_by_default() {
        let tree = Tree::waybill("bus: { kind: embedded, topic_prefix: 'a.' }\n");
        let problem = tree.sole_problem(("waybill.yaml", 1, 38));
        assert_eq!(problem.3, "`topic_prefix` is only used with `kind: kafka`");

        let tree = Tree::waybill(
            "bus: { kind: kafka, brokers: 'k:9092' }\nstore: { url: 'postgres://db/w' }\n",
        );
        let config = tree.load().unwrap();
        assert!(
            matches!(&config.bus, BusSettings::Kafka { topic_prefix, .. } if topic_prefix.is_empty())
        );
    }

    #[test]
    fn missing_variable_is_located_and_yaml_shape_is_safe() {
        let tree = Tree::waybill(
            "bus: { kind: embedded }\ndata_dir:      '${NOT_SET}'\nhttp:\n  listen: \"${NOT_SET_EITHER:-127.0.0.1:7000}\"\n",
        );
        let problem = tree.sole_problem(("waybill.yaml", 2, 16));
        assert_mentions(&problem, "`NOT_SET` is not set");
    }
}
