//! The admin listener: liveness, readiness, metrics and live reload.
//!
//! It is a separate address from the public listener (loopback by default)
//! so it is never reachable by vendors through the same port. `/healthz` and
//! `/readyz` are open (orchestrators probe them); `/metrics` and
//! `/admin/reload` require `Authorization: Bearer <admin.token>` when a token
//! is configured. Plain HTTP: put it behind the platform's own network policy.
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once (more wait in
//! the kernel backlog), each for at most a minute: probes and a scraper need
//! a handful, and a flood of connections to an exposed admin port must not
//! use up the file descriptors the public listener needs. When all of them
//! are taken (32 keep-alive clients suffice), [`PROBE_CONNECTIONS`] more are
//! kept for the orchestrator: such a connection answers one request, only
//! `/healthz` or `/readyz` (anything else gets 503), within two seconds, so
//! liveness and readiness stay answerable whoever holds the other slots.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::secret::Secret;

type AdminResponse = Response<Full<Bytes>>;

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections kept for `/healthz` and `/readyz` when the others are taken.
pub const PROBE_CONNECTIONS: usize = 4;

/// Serves admin requests until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    token: Option<Secret>,
    stop: CancellationToken,
) {
    let token = Arc::new(token);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let probe_slots = Arc::new(Semaphore::new(PROBE_CONNECTIONS));
    loop {
        // A general slot when there is one; else one kept for probes.
        let (permit, probes_only) = tokio::select! {
            biased;
            permit = slots.clone().acquire_owned() => (permit, false),
            permit = probe_slots.clone().acquire_owned() => (permit, true),
            () = stop.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "Admin accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let control = control.clone();
        let token = token.clone();
        let service = hyper::service::service_fn(move |req| {
            let control = control.clone();
            let token = token.clone();
            async move {
                let response = if probes_only && !is_probe(&req) {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({ "error": "admin busy: only /healthz and /readyz are served" }),
                    )
                } else {
                    route(req, &control, token.as_ref().as_ref()).await
                };
                Ok::<_, Infallible>(response)
            }
        });
        let (header_timeout, lifetime) = if probes_only {
            (Duration::from_secs(2), Duration::from_secs(2))
        } else {
            (Duration::from_secs(5), Duration::from_secs(60))
        };
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(!probes_only)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(lifetime, conn).await;
        });
    }
}

/// A liveness or readiness probe.
fn is_probe(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && matches!(req.uri().path(), "/healthz" | "/readyz")
}

async fn route(req: Request<Incoming>, control: &Control, token: Option<&Secret>) -> AdminResponse {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => {
            let readiness = control.readiness();
            let (status, word) = match (readiness.ready, readiness.reasons.is_empty()) {
                (true, true) => (StatusCode::OK, "ready"),
                (true, false) => (StatusCode::OK, "degraded"),
                (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            };
            json(
                status,
                serde_json::json!({ "status": word, "reasons": readiness.reasons }),
            )
        }
        (&Method::GET, "/metrics") => {
            if !authorized(&req, token) {
                return unauthorized();
            }
            control.refresh_gauges();
            let mut resp = Response::new(Full::new(Bytes::from(control.metrics().render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        (&Method::POST, "/admin/reload") => {
            if !authorized(&req, token) {
                return unauthorized();
            }
            match control.reload().await {
                Ok(()) => json(StatusCode::OK, serde_json::json!({ "reloaded": true })),
                Err(error) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({ "reloaded": false, "errors": error.messages() }),
                ),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/admin/reload") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "method not allowed" }),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not found" }),
        ),
    }
}

fn authorized(req: &Request<Incoming>, token: Option<&Secret>) -> bool {
    let Some(expected) = token else { return true };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::auth::equal_secrets(given.as_bytes(), expected.expose().as_bytes())
}

fn unauthorized() -> AdminResponse {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "error": "admin token required" }),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> AdminResponse {
    crate::server::json(status, body.to_string())
}
