//! Pipeline runner, HTTP server and shutdown: everything `waybill run` starts.

mod changes;
mod feed;
pub mod http;
pub mod payments;
mod progress;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod tracker;

use crate::bus::embedded::EmbeddedBus;
use crate::bus::{Bus, BusError};
use crate::config::{BusSettings, Config};
use crate::connector::Engine;
use crate::connector::sandbox::{Moves, Sandbox};
use crate::sinks::book::Booker;
use crate::sinks::notify::Notifier;
use crate::sinks::write_back::WriteBacker;
use crate::sources::Ingest;
use crate::sources::body::BodyBudget;
use crate::sources::enqueue::{self, Enqueue};
use crate::store::{NotificationStore, ShipmentStore, Store, StoreError, WriteBackStore};
use crate::telemetry::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long shutdown waits for in-flight work before abandoning it (it is
/// redelivered on the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the embedded log keeps messages every consumer has passed.
const LOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long webhook delivery ids are remembered: longer than any store's
/// retry window (Shopify retries for 4 hours).
const DELIVERY_TTL: Duration = Duration::from_secs(72 * 3600);

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the bus: {0}")]
    Bus(#[from] BusError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("{0}")]
    Unsupported(String),
}

/// The opened backends.
#[derive(Clone)]
pub struct Backends {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    /// The same store: shipments and their history.
    pub shipments: Arc<dyn ShipmentStore>,
    /// The same store: customer notifications.
    pub notifications: Arc<dyn NotificationStore>,
    /// The same store: write-backs to stores.
    pub write_backs: Arc<dyn WriteBackStore>,
    /// The embedded bus when it shares its database with the store: webhook
    /// append and delivery-id record are then one transaction.
    pub embedded: Option<EmbeddedBus>,
}

/// Opens the bus and store the config names.
pub async fn open_backends(config: &Config) -> Result<Backends, RunError> {
    match &config.bus {
        BusSettings::Embedded => {
            let (bus, store) = crate::bus::embedded::open_embedded(&config.data_dir).await?;
            if config.store.url.starts_with("postgres") {
                let store = crate::store::sql::SqlStore::connect(&config.store.url).await?;
                return Ok(Backends::over(Arc::new(bus), store, None));
            }
            Ok(Backends::over(Arc::new(bus.clone()), store, Some(bus)))
        }
        BusSettings::Kafka {
            brokers,
            topic_prefix,
            properties,
        } => {
            let bus = crate::bus::kafka::KafkaBus::connect(
                brokers,
                properties,
                crate::bus::kafka::KafkaOptions {
                    topic_prefix: topic_prefix.clone(),
                    ..crate::bus::kafka::KafkaOptions::default()
                },
            )?;
            let store = crate::store::sql::SqlStore::connect(&config.store.url).await?;
            Ok(Backends::over(Arc::new(bus), store, None))
        }
    }
}

impl Backends {
    /// `bus`, and one SQL store serving every store trait.
    fn over(
        bus: Arc<dyn Bus>,
        store: crate::store::sql::SqlStore,
        embedded: Option<EmbeddedBus>,
    ) -> Backends {
        Backends {
            bus,
            store: Arc::new(store.clone()),
            shipments: Arc::new(store.clone()),
            notifications: Arc::new(store.clone()),
            write_backs: Arc::new(store),
            embedded,
        }
    }
}

/// Binds the configured listen address.
pub async fn bind(config: &Config) -> Result<TcpListener, RunError> {
    let addr = config.http.listen;
    TcpListener::bind(addr)
        .await
        .map_err(|error| RunError::Listen { addr, error })
}

/// Runs the HTTP server and every pipeline until `shutdown` completes, then
/// stops taking webhooks, finishes in-flight work and commits.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let backends = open_backends(&config).await?;
    let bus = backends.bus.clone();
    let ran = run_with(Arc::new(config), backends, listener, shutdown).await;
    bus.close().await;
    ran
}

/// [`run`] on backends the caller opened (tests keep handles to inspect them).
pub async fn run_with(
    config: Arc<Config>,
    backends: Backends,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Backends {
        bus,
        store,
        shipments,
        notifications,
        write_backs,
        embedded,
    } = backends;
    let metrics = Arc::new(Metrics::new());
    let local = listener.local_addr().map_err(|error| RunError::Listen {
        addr: config.http.listen,
        error,
    })?;
    let self_base = self_base(local);
    let booker = booker(&config, &store, &metrics, &self_base)?;
    let writer = Arc::new(WriteBacker::new(
        config.clone(),
        shipments.clone(),
        write_backs,
        booker.engine.clone(),
        metrics.clone(),
        booker.owner.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sandbox = sandbox(&config, self_base, &stop_rx)?;
    let notifier = Arc::new(Notifier {
        config: config.clone(),
        store: notifications.clone(),
        bookings: store.clone(),
        http: Engine::client().map_err(|e| RunError::Http(e.to_string()))?,
        metrics: metrics.clone(),
    });
    let sinks = Sinks {
        booker: booker.clone(),
        shipments: shipments.clone(),
        notifier,
        writer,
    };
    let mut pipelines = spawn_pipelines(&config, &bus, &sinks, &metrics, &stop_rx);
    let tracker = Arc::new(tracker::Tracker {
        config: config.clone(),
        bus: bus.clone(),
        store: shipments.clone(),
        metrics: metrics.clone(),
    });
    let mut tracking = tracker.spawn(&stop_rx);
    let scheduler = Arc::new(scheduler::Scheduler::new(
        config.clone(),
        bus.clone(),
        shipments.clone(),
        booker.engine.clone(),
        metrics.clone(),
        booker.owner.clone(),
    ));
    let scheduler_state = scheduler.state.clone();
    tracking.spawn(scheduler.run(stop_rx.clone()));
    let retention = tokio::spawn(retention(embedded.clone(), store.clone(), stop_rx.clone()));
    let ingest = Ingest {
        enqueue: enqueuer(bus.clone(), store.clone(), embedded),
        metrics,
    };
    let state = server::AppState {
        config: config.clone(),
        ingest,
        bus,
        store,
        scheduler: scheduler_state,
    };
    let metrics = state.ingest.metrics.clone();
    let routers = http::Routers {
        probes: server::probe_router(state.clone()),
        app: server::router(state, sandbox.router()),
    };
    let limits = http::ConnectionLimits {
        max_connections: config.http.max_connections,
        header_read_timeout: config.http.header_read_timeout,
        max_header_bytes: config.http.max_header_bytes,
    };
    let bodies = BodyBudget::new(
        config.http.max_buffered_body_bytes,
        config.http.body_read_timeout,
    );
    tracing::info!(listen = %local, pipelines = config.pipelines.len(), data_dir = %config.data_dir.display(), "waybill is running");
    let server = tokio::spawn(http::serve(
        listener,
        routers,
        limits,
        bodies,
        metrics,
        stop_rx.clone(),
        SHUTDOWN_GRACE,
    ));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "HTTP server task failed at shutdown");
    }
    while pipelines.join_next().await.is_some() {}
    while tracking.join_next().await.is_some() {}
    let _ = retention.await;
    tracing::info!("stopped");
    Ok(())
}

/// waybill's own base URL, as it reaches itself (the sandbox courier, and
/// the sandbox's callbacks) from the address it listens on.
fn self_base(local: SocketAddr) -> String {
    let self_host = if local.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], local.port()))
    } else {
        local
    };
    format!("http://{self_host}")
}

/// The sandbox courier, its parcels posting their moves to `self_base`
/// until `stop`.
fn sandbox(
    config: &Config,
    self_base: String,
    stop: &watch::Receiver<bool>,
) -> Result<Sandbox, RunError> {
    let http = Engine::client().map_err(|e| RunError::Http(e.to_string()))?;
    let moves = Moves::new(
        &config.connectors,
        &config.accounts,
        self_base,
        http,
        stop.clone(),
    );
    Ok(moves.map_or_else(Sandbox::new, Sandbox::moving))
}

/// The booker, its engine reaching waybill's own server (the sandbox
/// courier) at `self_base`.
fn booker(
    config: &Arc<Config>,
    store: &Arc<dyn Store>,
    metrics: &Arc<Metrics>,
    self_base: &str,
) -> Result<Arc<Booker>, RunError> {
    let http = Engine::client().map_err(|e| RunError::Http(e.to_string()))?;
    let engine = Engine::new(http, self_base.to_string()).with_metrics(metrics.clone());
    // Reservations of one machine have one owner; instances sharing a store
    // must tell theirs apart.
    let owner = match config.bus {
        BusSettings::Embedded => "local".to_string(),
        BusSettings::Kafka { .. } => format!("instance-{}", uuid::Uuid::new_v4()),
    };
    Ok(Arc::new(Booker {
        config: config.clone(),
        store: store.clone(),
        engine,
        metrics: metrics.clone(),
        owner,
    }))
}

/// What pipelines' steps act through, shared by every runner.
struct Sinks {
    booker: Arc<Booker>,
    shipments: Arc<dyn ShipmentStore>,
    notifier: Arc<Notifier>,
    writer: Arc<WriteBacker>,
}

/// One runner task per pipeline, stopping when `stop` turns true.
fn spawn_pipelines(
    config: &Arc<Config>,
    bus: &Arc<dyn Bus>,
    sinks: &Sinks,
    metrics: &Arc<Metrics>,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut pipelines = tokio::task::JoinSet::new();
    for pipeline in &config.pipelines {
        let runner = Arc::new(runner::Runner {
            pipeline: pipeline.clone(),
            config: config.clone(),
            bus: bus.clone(),
            booker: sinks.booker.clone(),
            shipments: sinks.shipments.clone(),
            notifier: sinks.notifier.clone(),
            writer: sinks.writer.clone(),
            metrics: metrics.clone(),
        });
        let stop = stop.clone();
        let name = pipeline.name.clone();
        pipelines.spawn(async move {
            if let Err(e) = runner.run(stop, SHUTDOWN_GRACE).await {
                tracing::error!(pipeline = %name, error = %e, "pipeline stopped");
            }
        });
    }
    pipelines
}

/// How webhooks are enqueued: in one transaction with their delivery id
/// when the bus shares the store's database.
fn enqueuer(
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    embedded: Option<EmbeddedBus>,
) -> Arc<dyn Enqueue> {
    match embedded {
        Some(embedded) => Arc::new(enqueue::Embedded(embedded)),
        None => Arc::new(enqueue::Separate { bus, store }),
    }
}

/// Trims the embedded log and expires old delivery ids, periodically.
async fn retention(
    embedded: Option<EmbeddedBus>,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Some(bus) = &embedded {
            match bus.trim(LOG_RETENTION).await {
                Ok(n) if n > 0 => tracing::info!(messages = n, "trimmed the embedded log"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not trim the embedded log"),
            }
        }
        match store.expire_deliveries(DELIVERY_TTL).await {
            Ok(n) if n > 0 => tracing::info!(deliveries = n, "expired webhook delivery ids"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not expire webhook delivery ids"),
        }
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_waybill_leaves_its_database_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("waybill.yaml");
        std::fs::write(
            &file,
            "data_dir: ./data\nhttp: { listen: '127.0.0.1:0' }\naccounts: {}\n",
        )
        .expect("config");
        let config = crate::config::load(&file).expect("config loads");
        let listener = bind(&config).await.expect("bind");
        run(
            config,
            listener,
            tokio::time::sleep(Duration::from_millis(300)),
        )
        .await
        .expect("runs and stops");
        let data = dir.path().join("data");
        assert!(data.join("waybill.db").exists());
        assert!(
            !data.join("waybill.db-wal").exists(),
            "the WAL was checkpointed and removed"
        );
    }
}
