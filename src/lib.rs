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
//! main.rs        CLI shell: parse flags, print errors, exit codes
//! lib.rs         Gateway: wires the parts below and runs them
//! config.rs      TOML file → validated Settings (every error names its key)
//! secret.rs      Secret: credentials that never print
//! tls.rs         PEM files → rustls ServerConfig (TLS 1.2+, h2 + http/1.1)
//! server.rs      accept loop, limits and timeouts, the thin HTTP handler
//! pipeline.rs    the request path: authenticate → map → publish
//! auth/          Basic, HMAC signatures, URL token, IP allowlist (constant-time)
//! vendors/       one module per vendor behind the `Vendor` trait
//! canonical.rs   the CloudEvents envelope, `data`, exact amounts, event ids
//! publish.rs     lapin connection supervisor, confirm-mode channels
//! ```

pub mod auth;
pub mod canonical;
pub mod config;
pub mod pipeline;
pub mod publish;
pub mod secret;
pub mod server;
pub mod tls;
pub mod vendors;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::Settings;
use pipeline::Pipeline;
use publish::{Publisher, PublisherTask};

/// How long in-flight requests may run after shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listen address could not be bound.
    #[error("server.listen `{addr}`: cannot bind ({source})")]
    Bind {
        /// Configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running gateway: the listener and the broker connection.
pub struct Gateway {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listener: tokio::task::JoinHandle<()>,
    publisher: Publisher,
    publisher_task: PublisherTask,
}

impl Gateway {
    /// Binds `server.listen`, connects to the broker in the background and
    /// starts serving. Port 0 binds an ephemeral port (see [`Gateway::local_addr`]).
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        let tls = match &settings.server.tls {
            Some(paths) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(paths)?)),
            None => {
                tracing::warn!("No TLS certificate configured: serving plain HTTP. Only do this behind a TLS-terminating proxy.");
                None
            }
        };
        let addr = settings.server.listen;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = tcp
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;

        let (publisher, publisher_task) = Publisher::start(settings.broker.clone());
        let pipeline = Arc::new(Pipeline::new(
            settings.sources.clone(),
            publisher.clone(),
            settings.server.trusted_proxies.clone(),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let listener = server::Listener {
            tcp,
            tls,
            settings: settings.server.clone(),
            pipeline,
        };
        let listener = tokio::spawn(listener.run(stop_rx, DRAIN_DEADLINE));
        tracing::info!(
            listen = %local_addr,
            tls = settings.server.tls.is_some(),
            sources = settings.sources.iter().count(),
            "Gateway listening."
        );
        Ok(Self {
            local_addr,
            stop,
            listener,
            publisher,
            publisher_task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker handle (readiness, tests).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Stops accepting, lets in-flight requests finish, then closes the
    /// broker connection cleanly.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.listener.await;
        self.publisher_task.shutdown().await;
        tracing::info!("Gateway stopped.");
    }
}
