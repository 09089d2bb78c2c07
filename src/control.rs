//! Operations on a running gateway that the admin API and signal handlers
//! share: reloading the config file, and readiness (can every accepted event
//! be made safe right now, and what is degraded).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, AdminSettings, BrokerSettings, ConfigErrors, ServerSettings, Settings};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::pipeline::{Pipeline, Runtime};
use crate::publish::LinkState;
use crate::{dedup, spool, tls};

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
pub(crate) struct Fixed {
    pub(crate) server: ServerSettings,
    pub(crate) broker: BrokerSettings,
    pub(crate) admin: Option<AdminSettings>,
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
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) fixed: Fixed,
    /// Serializes reloads so two at once cannot interleave.
    pub(crate) reloading: tokio::sync::Mutex<()>,
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
        let tls = tls::acceptor(settings.server.tls.as_ref())?;
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
        let problem = match self.pipeline.sink().state() {
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
        if self
            .pipeline
            .shared_dedup()
            .is_some_and(dedup::SharedWindow::is_failing)
        {
            // Events are accepted and published (fail open); repeats are not recognised.
            degraded
                .push("shared dedup store unreachable; repeats may be published twice".to_owned());
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
        let connected = self.pipeline.sink().is_connected();
        self.metrics().broker_connected.set(i64::from(connected));
        if let Some(spool) = self.pipeline.spool() {
            let stats = spool.stats();
            self.metrics().spool_events.set(stats.events as i64);
            self.metrics().spool_bytes.set(stats.bytes as i64);
        }
    }
}
