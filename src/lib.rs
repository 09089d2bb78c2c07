//! hookgate: one HTTPS endpoint for every payment vendor's webhooks.
//!
//! For each `POST /webhooks/{source_id}` it authenticates the request the way
//! that source is configured, maps the vendor's body to one canonical
//! CloudEvents event, publishes it to a RabbitMQ topic exchange with publisher
//! confirms, and answers 200 only once the broker has confirmed it.
//!
//! # Layout
//!
//! ```text
//! main.rs        CLI shell: run what cli.rs parsed, print errors, exit codes
//! cli.rs         every subcommand and flag (clap), shared with the tests
//! lib.rs         Gateway: wires the parts below and runs them
//! config.rs      TOML file → validated Settings (every error names its key)
//! secret.rs      Secret: credentials that never print
//! tls.rs         PEM files → rustls ServerConfig (TLS 1.2+, h2 + http/1.1)
//! server.rs      accept loop, limits and timeouts, the thin HTTP handler
//! body_budget.rs request-body bytes held at once; memory returned after bursts
//! pipeline.rs    the request path: authenticate → map → publish
//! auth/          Basic, HMAC signatures, URL token, IP allowlist (constant-time)
//! vendors/       one module per vendor behind the `Vendor` trait
//! canonical.rs   the CloudEvents envelope, `data`, exact amounts, event ids
//! guard.rs       masks full card numbers before anything is published
//! scrub.rs       error text from input without the quoted values
//! per_address.rs open connections per client address
//! write_health.rs since when a store's writes fail
//! broker.rs      broker endpoints, amqps trust, opening one connection
//! publish.rs     lapin connection supervisor, confirm-mode channels
//! ratelimit.rs   per-source quotas and the per-IP guard (governor)
//! metrics.rs     Prometheus series
//! admin.rs       /healthz, /readyz, /metrics, /admin/reload
//! tools.rs       `hookgate sign`, `send`, `remap` and `spool ...`
//! tail.rs        `hookgate tail`: canonical events printed as they are published
//! spool.rs       durable local store for events the broker has not confirmed
//! drain.rs       background publishing: the spool's drain, deferred look-ups
//! enrich/        vendor API look-ups that fill thin pings in (Nexio)
//! dedup.rs       window of recently accepted ids: repeats are not published twice
//! watchdog.rs    long-lived tasks; the first that dies stops the process for a restart
//! ```

// Every public item says why it exists; clippy's -D warnings makes this binding.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod body_budget;
pub mod broker;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod drain;
pub mod enrich;
pub mod guard;
pub mod metrics;
pub mod per_address;
pub mod pipeline;
pub mod publish;
pub mod ratelimit;
pub mod scrub;
pub mod secret;
pub mod server;
pub mod spool;
pub mod tail;
pub mod tls;
pub mod tools;
pub mod vendors;
pub mod watchdog;
pub mod write_health;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::{AdminSettings, BrokerSettings, ConfigErrors, ServerSettings, Settings};
use metrics::{Metrics, OutcomeLabel};
use pipeline::{Pipeline, Runtime};
use publish::{LinkState, Publisher, PublisherTask};
use watchdog::{TaskFault, Watchdog};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The dedup window's file cannot be used.
    #[error("dedup.dir: {0}")]
    Dedup(#[from] dedup::DedupError),
    /// The spool directory cannot be used.
    #[error("spool.dir: {0}")]
    Spool(#[from] spool::SpoolError),
    /// A listen address could not be bound.
    #[error("{key} `{addr}`: cannot bind ({source})")]
    Bind {
        /// Config key of the address.
        key: &'static str,
        /// Configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a reload was refused; the running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started from settings, not a file.
    #[error("no config file to reload")]
    NoFile,
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The new certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl ReloadError {
    /// One line per problem, for the admin API's JSON answer.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Config(errors) => errors.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// The settings a reload cannot change (they are bound sockets or live connections).
#[derive(Debug, Clone)]
struct Fixed {
    server: ServerSettings,
    broker: BrokerSettings,
    admin: Option<AdminSettings>,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the instance can make every accepted event safe now.
    pub ready: bool,
    /// What blocks it or what is degraded; empty when all is well.
    pub reasons: Vec<String>,
}

/// Operations shared by the admin API and signal handlers.
pub struct Control {
    pipeline: Arc<Pipeline>,
    config_path: Option<PathBuf>,
    fixed: Fixed,
    /// Serializes reloads so two at once cannot interleave.
    reloading: tokio::sync::Mutex<()>,
}

impl Control {
    /// Re-reads the config file, validates it fully, and swaps in the new
    /// sources, secrets, quotas and certificate for requests that start from
    /// now on. On any error nothing changes and the reasons are returned.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload();
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        self.metrics()
            .reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        match &result {
            Ok(()) => tracing::info!("Configuration reloaded."),
            Err(error) => {
                tracing::warn!(errors = ?error.messages(), "Reload refused; keeping the running configuration.")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let settings = config::load(path)?;
        let tls = acceptor(&settings)?;
        self.warn_about_fixed(&settings);
        let current = self.pipeline.runtime();
        self.metrics()
            .export_sources(settings.sources.iter().map(|s| s.id.as_str()));
        let runtime = Runtime::new(settings.sources, settings.server, tls, Some(&current));
        self.pipeline.swap_runtime(runtime);
        Ok(())
    }

    fn warn_about_fixed(&self, new: &Settings) {
        let fixed = &self.fixed;
        let mut keys = Vec::new();
        if new.server.listen != fixed.server.listen {
            keys.push("server.listen");
        }
        if new.server.max_connections != fixed.server.max_connections {
            keys.push("server.max_connections");
        }
        if new.server.header_timeout != fixed.server.header_timeout {
            keys.push("server.header_timeout_ms");
        }
        if new.server.max_buffered_body_bytes != fixed.server.max_buffered_body_bytes {
            keys.push("server.max_buffered_body_bytes");
        }
        if new.server.max_connections_per_address != fixed.server.max_connections_per_address {
            keys.push("server.max_connections_per_address");
        }
        if new.broker.endpoints != fixed.broker.endpoints
            || new.broker.tls != fixed.broker.tls
            || new.broker.exchange != fixed.broker.exchange
            || new.broker.channels != fixed.broker.channels
            || new.broker.confirm_timeout != fixed.broker.confirm_timeout
        {
            keys.push("broker");
        }
        if new.admin.as_ref().map(|a| (a.listen, a.token.clone()))
            != fixed.admin.as_ref().map(|a| (a.listen, a.token.clone()))
        {
            keys.push("admin");
        }
        if !keys.is_empty() {
            tracing::warn!(keys = ?keys, "These settings changed but only take effect after a restart.");
        }
    }

    /// Whether this instance should receive traffic, and what is degraded.
    ///
    /// Ready means every accepted event can be made safe right now. With a
    /// spool that has room, a broker outage only degrades (events are spooled),
    /// so the instance stays in the load balancer: taking it out would turn
    /// the outage into refused connections, which Sticky never retries.
    pub fn readiness(&self) -> Readiness {
        let mut degraded = Vec::new();
        let mut blocking = Vec::new();
        let problem = match self.pipeline.publisher().state() {
            LinkState::Up => None,
            LinkState::Down(None) => Some("broker disconnected".to_owned()),
            LinkState::Down(Some(last)) => Some(format!("broker disconnected ({last})")),
            LinkState::Blocked(reason) => Some(format!("broker blocked publishing ({reason})")),
        };
        match (problem, self.pipeline.spool()) {
            (None, _) => {}
            (Some(problem), Some(_)) => degraded.push(format!("{problem}; events are spooled")),
            (Some(problem), None) => blocking.push(problem),
        }
        if let Some(failing) = self.pipeline.spool().and_then(spool::Spool::failing_for) {
            blocking.push(format!(
                "spool writes failing for {} s (disk full?); events cannot be kept",
                failing.as_secs()
            ));
        }
        if let Some(failing) = self
            .pipeline
            .dedup()
            .and_then(dedup::DedupWindow::failing_for)
        {
            // Events stay safe; only repeats may be published twice meanwhile.
            degraded.push(format!(
                "dedup commits failing for {} s (disk full?); repeats may be published twice",
                failing.as_secs()
            ));
        }
        if let Some(spool) = self.pipeline.spool() {
            let stats = spool.stats();
            // Within 1% of the bound counts as full: the next events may not fit.
            if stats.bytes >= spool.max_bytes() - spool.max_bytes() / 100 {
                blocking.push(format!(
                    "spool full ({} events, {} bytes)",
                    stats.events, stats.bytes
                ));
            } else if stats.events > 0 {
                degraded.push(format!(
                    "{} spooled events waiting for the broker",
                    stats.events
                ));
            }
        }
        Readiness {
            ready: blocking.is_empty(),
            reasons: blocking.into_iter().chain(degraded).collect(),
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        self.pipeline.metrics()
    }

    /// Brings state gauges up to date; called right before a scrape so they
    /// are exact at the moment they are read.
    pub fn refresh_gauges(&self) {
        let connected = self.pipeline.publisher().is_connected();
        self.metrics().broker_connected.set(i64::from(connected));
        if let Some(spool) = self.pipeline.spool() {
            let stats = spool.stats();
            self.metrics().spool_events.set(stats.events as i64);
            self.metrics().spool_bytes.set(stats.bytes as i64);
        }
    }
}

/// Opens the on-disk stores the config asks for, off the async threads (redb
/// recovery after a crash reads the file).
async fn open_stores(settings: &Settings) -> Result<pipeline::Stores, StartError> {
    let mut stores = pipeline::Stores::default();
    if let Some(cfg) = settings.spool.clone() {
        let (spool, pending) = tokio::task::spawn_blocking(move || {
            let spool = spool::Spool::open(&cfg.dir, cfg.max_bytes)?;
            // Thin events waiting for a background look-up live beside the spool.
            let pending = spool::Spool::open(&cfg.dir.join("pending-enrichment"), cfg.max_bytes)?;
            Ok::<_, spool::SpoolError>((spool, pending))
        })
        .await
        .expect("spool open does not panic")?;
        stores.spool = Some(spool);
        stores.pending = Some(pending);
    }
    if let Some(cfg) = settings.dedup.clone() {
        let dedup = tokio::task::spawn_blocking(move || {
            dedup::DedupWindow::open(&cfg.dir, cfg.window, cfg.max_entries)
        })
        .await
        .expect("dedup open does not panic")?;
        stores.dedup = Some(dedup);
    }
    Ok(stores)
}

fn acceptor(settings: &Settings) -> Result<Option<tokio_rustls::TlsAcceptor>, tls::TlsError> {
    Ok(match &settings.server.tls {
        Some(paths) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(paths)?)),
        None => None,
    })
}

/// How often housekeeping runs.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(30);

/// A running gateway: the public listener, the admin listener and the broker connection.
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    /// The long-lived tasks except the broker's, which closes last.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    watchdog: Watchdog,
    spool: Option<spool::Spool>,
    pending: Option<spool::Spool>,
    dedup: Option<dedup::DedupWindow>,
    control: Arc<Control>,
    publisher_task: PublisherTask,
}

impl Gateway {
    /// Starts from settings already loaded; reload is unavailable.
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        Self::launch(settings, None).await
    }

    /// Starts from settings loaded from `path`, which SIGHUP and
    /// `POST /admin/reload` re-read.
    pub async fn start_from_file(settings: Settings, path: PathBuf) -> Result<Self, StartError> {
        Self::launch(settings, Some(path)).await
    }

    async fn launch(settings: Settings, config_path: Option<PathBuf>) -> Result<Self, StartError> {
        let tls = acceptor(&settings)?;
        if tls.is_none() {
            tracing::warn!("No TLS certificate configured: serving plain HTTP. Only do this behind a TLS-terminating proxy.");
        }
        let addr = settings.server.listen;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                key: "server.listen",
                addr,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| StartError::Bind {
            key: "server.listen",
            addr,
            source,
        })?;
        let admin_tcp =
            match &settings.admin {
                Some(admin) => Some(TcpListener::bind(admin.listen).await.map_err(|source| {
                    StartError::Bind {
                        key: "admin.listen",
                        addr: admin.listen,
                        source,
                    }
                })?),
                None => None,
            };
        let admin_addr = admin_tcp.as_ref().and_then(|l| l.local_addr().ok());

        let stores = open_stores(&settings).await?;
        let metrics = Arc::new(Metrics::new());
        metrics.export_sources(settings.sources.iter().map(|s| s.id.as_str()));
        let watchdog = Watchdog::new();
        let (publisher, publisher_task) =
            Publisher::start(settings.broker.clone(), &metrics, &watchdog);
        let fixed = Fixed {
            server: settings.server.clone(),
            broker: settings.broker.clone(),
            admin: settings.admin.clone(),
        };
        let source_count = settings.sources.iter().count();
        let runtime = Runtime::new(settings.sources, settings.server.clone(), tls, None);
        let spool = stores.spool.clone();
        let pending = stores.pending.clone();
        let dedup = stores.dedup.clone();
        let pipeline = Arc::new(Pipeline::new(
            runtime,
            publisher.clone(),
            stores,
            metrics.clone(),
        ));
        let control = Arc::new(Control {
            pipeline: pipeline.clone(),
            config_path,
            fixed: fixed.clone(),
            reloading: tokio::sync::Mutex::new(()),
        });

        let (stop, stop_rx) = watch::channel(false);
        let listener = server::Listener {
            tcp,
            settings: fixed.server.clone(),
            pipeline: pipeline.clone(),
        };
        let mut tasks = vec![watchdog.spawn(
            "public listener",
            listener.run(stop_rx.clone(), fixed.server.drain_timeout),
        )];
        if let (Some(tcp), Some(admin)) = (admin_tcp, &fixed.admin) {
            tasks.push(watchdog.spawn(
                "admin listener",
                admin::serve(tcp, control.clone(), admin.token.clone(), stop_rx.clone()),
            ));
        }
        tasks.push(watchdog.spawn(
            "housekeeping",
            housekeeping(pipeline.clone(), stop_rx.clone()),
        ));
        if let Some(spool) = &spool {
            tasks.push(watchdog.spawn(
                "spool drain",
                drain::run(
                    spool.clone(),
                    publisher.clone(),
                    metrics.clone(),
                    stop_rx.clone(),
                ),
            ));
        }
        if pending.is_some() {
            tasks.push(watchdog.spawn(
                "deferred look-ups",
                drain::enrichment(pipeline.clone(), stop_rx.clone()),
            ));
        }
        tracing::info!(
            listen = %local_addr,
            admin = %admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            tls = fixed.server.tls.is_some(),
            sources = source_count,
            "Gateway listening."
        );
        Ok(Self {
            local_addr,
            admin_addr,
            stop,
            tasks,
            watchdog,
            spool,
            pending,
            dedup,
            control,
            publisher_task,
        })
    }

    /// The public address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin address actually bound, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reload, readiness and metrics.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The broker handle (readiness, tests).
    pub fn publisher(&self) -> &Publisher {
        self.control.pipeline.publisher()
    }

    /// Resolves when one of the gateway's long-lived tasks (a listener, the
    /// broker supervisor, the drain, housekeeping) has died before
    /// [`Self::shutdown`]: the process is no longer whole and should be shut
    /// down and restarted. Pending while all is well.
    pub async fn fault(&self) -> TaskFault {
        self.watchdog.fault().await
    }

    /// Stops accepting, lets in-flight requests finish (up to
    /// `server.drain_timeout_ms`), then closes the broker connection cleanly.
    pub async fn shutdown(self) {
        self.watchdog.stand_down();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.publisher_task.shutdown().await;
        // The pipeline (inside control) holds a spool handle too; this closes
        // the file once the last handle is gone.
        drop(self.control);
        for store in [self.spool, self.pending].into_iter().flatten() {
            store.close().await;
        }
        if let Some(dedup) = self.dedup {
            dedup.close().await;
        }
        tracing::info!("Gateway stopped.");
    }
}

/// Drops a store's shared state if this is the last handle to it, on the
/// blocking pool: dropping the last handle of a spool or dedup store joins
/// its writer thread after a final commit, which must not stall a runtime
/// worker. Returns once the file is closed, so the directory can be opened
/// again.
pub(crate) async fn close_if_last<T: Send + 'static>(shared: Arc<T>) {
    if let Ok(inner) = Arc::try_unwrap(shared) {
        let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
    }
}

/// Periodic upkeep: forget client addresses whose budget is full again (so
/// the per-IP table stays bounded by recent traffic) and drop dedup ids older
/// than the window. Returns early, which the watchdog turns into a restart,
/// when the spool's or the dedup window's writes have failed for longer than
/// [`spool::MAX_WRITE_FAILURE`]: a gateway that can keep no event helps no
/// one by staying up.
async fn housekeeping(pipeline: Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_PERIOD);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let failing = [
            (
                "spool",
                pipeline.spool().and_then(spool::Spool::failing_for),
            ),
            (
                "dedup",
                pipeline.dedup().and_then(dedup::DedupWindow::failing_for),
            ),
        ];
        for (store, failing) in failing {
            if failing.is_some_and(|f| f > spool::MAX_WRITE_FAILURE) {
                tracing::error!(
                    store,
                    "Writes have failed for too long; stopping for a restart."
                );
                return;
            }
        }
        pipeline.runtime().per_ip.forget_idle();
        if let Some(dedup) = pipeline.dedup() {
            if let Err(error) = dedup.expire().await {
                tracing::warn!(error = %error, "Dedup window expiry failed.");
            }
        }
    }
}
