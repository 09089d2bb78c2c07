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
//! config/        TOML file → validated Settings (every error names its key)
//! secret.rs      Secret: credentials that never print
//! tls.rs         PEM files → rustls ServerConfig (TLS 1.2+, h2 + http/1.1)
//! server/        accept loop, connection guard, the thin HTTP handler
//! body_budget.rs request-body bytes held at once; memory returned after bursts
//! pipeline/      the request path: authenticate → map → publish (unit-tested through a fake sink)
//! auth/          Basic, HMAC signatures, URL token, IP allowlist (constant-time)
//! vendors/       one module per vendor behind the `Vendor` trait
//! canonical/     the CloudEvents envelope, `data`, exact amounts, event ids
//! guard/         masks full card numbers before anything is published
//! scrub.rs       error text from input without the quoted values
//! per_address.rs open connections per client address
//! broker.rs      broker endpoints, amqps trust, opening one connection
//! publish.rs     lapin connection supervisor, confirm-mode channels
//! ratelimit.rs   per-source quotas and the per-IP guard (governor)
//! metrics.rs     Prometheus series
//! admin.rs       /healthz, /readyz, /metrics, /admin/reload
//! control.rs     reload and readiness, shared by the admin API and SIGHUP
//! tools.rs       `hookgate sign`, `send`, `remap` and `spool ...`
//! tail.rs        `hookgate tail`: canonical events printed as they are published
//! archive.rs     the event archive stream: declared at connect, `archive find` and `replay`
//! store/         what the spool and the dedup window share: clock, write health, close
//! spool/         durable local store for events the broker has not confirmed
//! drain.rs       background publishing: the spool's drain, deferred look-ups
//! enrich/        the look-up service: vendor API calls, cache, one call per object
//! dedup/         window of recently accepted ids (local redb, or Redis shared by replicas)
//! watchdog.rs    long-lived tasks; the first that dies stops the process for a restart
//! test_util.rs   for tests, benchmarks and fuzzing only (feature `test-util`)
//! ```

// Every public item says why it exists; clippy's -D warnings makes this binding.
#![warn(missing_docs)]

pub mod admin;
pub mod archive;
pub mod auth;
pub(crate) mod body_budget;
pub(crate) mod broker;
pub mod canonical;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub(crate) mod dedup;
pub(crate) mod drain;
pub(crate) mod enrich;
pub mod guard;
pub mod metrics;
pub(crate) mod per_address;
pub mod pipeline;
pub mod publish;
pub(crate) mod ratelimit;
pub(crate) mod scrub;
pub mod secret;
pub(crate) mod server;
pub mod spool;
pub(crate) mod store;
pub mod tail;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub(crate) mod tls;
pub mod tools;
pub mod vendors;
pub mod watchdog;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Settings;
use control::Fixed;
pub use control::{Control, Readiness, ReloadError};
use metrics::Metrics;
use pipeline::{Pipeline, Runtime};
use publish::Publisher;
use watchdog::{TaskFault, Watchdog};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The shared dedup store's URL cannot be used.
    #[error("dedup.redis_url: {0}")]
    SharedDedup(#[from] redis::RedisError),
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

/// How often housekeeping runs.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(30);

/// A running gateway: the public listener, the admin listener and the broker connection.
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    /// The long-lived tasks, the broker connection's among them (it closes
    /// last); locked by [`Self::fault`] while it waits.
    watchdog: tokio::sync::Mutex<Watchdog>,
    spool: Option<spool::Spool>,
    pending: Option<spool::Spool<pipeline::Pending>>,
    dedup: Option<dedup::DedupWindow>,
    control: Arc<Control>,
    /// The broker link the pipeline publishes through.
    publisher: Publisher,
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
        let tls = tls::acceptor(settings.server.tls.as_ref())?;
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

        let mut stores = open_stores(&settings).await?;
        let settings_spool = settings.spool.clone();
        let metrics = Arc::new(Metrics::new());
        if let Some(cfg) = settings.shared_dedup.clone() {
            let errors = metrics.dedup_backend_errors.clone();
            stores.shared_dedup = Some(dedup::SharedWindow::start(cfg, errors)?);
        }
        metrics.export_sources(settings.sources.iter().map(|s| s.id.as_str()));
        let mut watchdog = Watchdog::new();
        let publisher = Publisher::start(settings.broker.clone(), &metrics, &mut watchdog);
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
            Arc::new(publisher.clone()),
            stores,
            metrics.clone(),
        ));
        let control = Arc::new(Control {
            pipeline: pipeline.clone(),
            config_path,
            fixed: fixed.clone(),
            reloading: tokio::sync::Mutex::new(()),
        });

        let stop = watchdog.stop_signal();
        let listener = server::Listener {
            tcp,
            settings: fixed.server.clone(),
            pipeline: pipeline.clone(),
        };
        watchdog.spawn(
            "public listener",
            listener.run(stop.clone(), fixed.server.drain_timeout),
        );
        if let (Some(tcp), Some(admin)) = (admin_tcp, &fixed.admin) {
            watchdog.spawn(
                "admin listener",
                admin::serve(tcp, control.clone(), admin.token.clone(), stop.clone()),
            );
        }
        watchdog.spawn("housekeeping", housekeeping(pipeline.clone(), stop.clone()));
        if let (Some(spool), Some(cfg)) = (&spool, &settings_spool) {
            let (spool, publisher, metrics, on_stop) = (
                spool.clone(),
                publisher.clone(),
                metrics.clone(),
                cfg.drain_on_stop,
            );
            watchdog.spawn_at("spool drain", watchdog::Stage::Drain, move |stop| {
                drain::run(spool, publisher, metrics, stop, on_stop)
            });
        }
        if pending.is_some() {
            watchdog.spawn(
                "deferred look-ups",
                drain::enrichment(pipeline.clone(), stop.clone()),
            );
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
            watchdog: tokio::sync::Mutex::new(watchdog),
            spool,
            pending,
            dedup,
            control,
            publisher,
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
        &self.publisher
    }

    /// Resolves when one of the gateway's long-lived tasks (a listener, the
    /// broker supervisor, the drain, housekeeping) has died before
    /// [`Self::shutdown`]: the process is no longer whole and should be shut
    /// down and restarted. Pending while all is well.
    pub async fn fault(&self) -> TaskFault {
        self.watchdog.lock().await.fault().await
    }

    /// Stops accepting, lets in-flight requests finish (up to
    /// `server.drain_timeout_ms`), then closes the broker connection cleanly.
    pub async fn shutdown(self) {
        // The listeners drain, the background tasks stop, then the broker
        // connection waits for in-flight confirms and closes.
        self.watchdog.into_inner().shut_down().await;
        // The pipeline (inside control) holds a spool handle too; this closes
        // the file once the last handle is gone.
        drop(self.control);
        if let Some(spool) = self.spool {
            spool.close().await;
        }
        if let Some(pending) = self.pending {
            pending.close().await;
        }
        if let Some(dedup) = self.dedup {
            dedup.close().await;
        }
        tracing::info!("Gateway stopped.");
    }
}

/// Periodic upkeep: forget client addresses whose budget is full again (so
/// the per-IP table stays bounded by recent traffic) and drop dedup ids older
/// than the window. Returns early, which the watchdog turns into a restart,
/// when the spool's or the dedup window's writes have failed for longer than
/// [`spool::MAX_WRITE_FAILURE`]: a gateway that can keep no event helps no
/// one by staying up.
async fn housekeeping(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_PERIOD);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
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
