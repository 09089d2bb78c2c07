//! The thin webhook handler: route, cheap checks, the body within its
//! budget, the pipeline, and the answer with its one log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{AuthError, Presented};
use crate::body_budget::BodyBudget;
use crate::config::{ServerSettings, Source, UNKNOWN_SOURCE};
use crate::pipeline::{Inbound, NotSafe, Outcome, Pipeline, Safe};
use crate::ratelimit::RetryAfter;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};

/// Every answer: a small, fully buffered body.
pub(super) type HttpResponse = Response<Full<Bytes>>;

/// Routes one request; docs/operations.md has the status code table.
pub(super) async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    pipeline: Arc<Pipeline>,
    bodies: &BodyBudget,
) -> HttpResponse {
    let started = Instant::now();
    let received_at = SystemTime::now();
    let rt = pipeline.runtime();
    let settings = &rt.server;
    // Every request is counted and logged once; those that name no
    // configured source (a wrong path, a probe) as source `unknown`, an id
    // no source may have.
    let answer = |source_id: &str, event: Option<Receipt>, response: HttpResponse| {
        pipeline
            .metrics()
            .request(source_id, response.status().as_u16());
        log(source_id, started, event, response)
    };
    let unknown = |response: HttpResponse| answer(UNKNOWN_SOURCE, None, response);
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // An answer before the body is read waits for the rest of a small body
    // (see `discard_body`).
    let http2 = parts.version == hyper::Version::HTTP_2;
    let early = |body: Incoming| discard_body(body, http2, declared, settings);
    let Some((source_id, token)) = parse_route(parts.uri.path()) else {
        early(body).await;
        return unknown(error(StatusCode::NOT_FOUND, "not found"));
    };
    if parts.method != Method::POST {
        early(body).await;
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return unknown(resp);
    }
    // The per-address limit comes first, so probing for source ids costs
    // budget like any other request; its 429 is answered at once (reading
    // bodies for a flood would spend what the limit saves).
    let client_ip = match pipeline.admit(&rt, peer.ip(), &parts.headers) {
        Ok(ip) => ip,
        Err(retry) => return unknown(too_many(retry)),
    };
    let Some(source) = pipeline.lookup(&rt, source_id, token.is_some()) else {
        early(body).await;
        return unknown(error(StatusCode::NOT_FOUND, "not found"));
    };
    let token = token.map(str::to_owned);
    let finish =
        |event: Option<Receipt>, response: HttpResponse| answer(&source.id, event, response);

    // Credentials that need no body are checked before any of it is read.
    let head = Presented {
        headers: &parts.headers,
        token: token.as_deref(),
        client_ip,
        now: received_at,
    };
    if let Err(reason) = pipeline.check_head(&source, &head) {
        early(body).await;
        return finish(None, refusal(&source, reason));
    }
    if declared.is_some_and(|n| n > settings.max_body_bytes as u64) {
        early(body).await;
        return finish(None, error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
    }
    // The body's share of the budget, held until the answer is sent.
    let deadline = tokio::time::Instant::now() + settings.body_timeout;
    let want = declared.map_or(settings.max_body_bytes, |n| n as usize);
    // Config bounds both to u32; a larger value could never be granted and
    // would end in the 503 below, not a panic.
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    let Some(_budget) = bodies.take(want, deadline).await else {
        tracing::warn!(source = %source.id, "Body budget exhausted; answering 503.");
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later");
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return finish(None, resp);
    };
    let read = Limited::new(body, settings.max_body_bytes).collect();
    let body = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return finish(None, error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
        }
        Ok(Err(_)) => {
            return finish(
                None,
                error(StatusCode::BAD_REQUEST, "body could not be read"),
            )
        }
        Err(_) => {
            return finish(
                None,
                error(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
            )
        }
    };

    let inbound = Inbound {
        token,
        headers: parts.headers,
        client_ip,
        body,
        received_at,
    };
    // Once the body is in, the event's fate no longer depends on the client:
    // a vendor that hangs up while we wait for the confirm must not cancel
    // the dedup claim, the metrics or the log line of an event that reached
    // the broker (its retry would otherwise be published twice).
    let task = {
        let (pipeline, source) = (pipeline.clone(), source.clone());
        tokio::spawn(async move { pipeline.process(&source, inbound).await })
    };
    let outcome = match task.await {
        Ok(outcome) => outcome,
        Err(panicked) => {
            tracing::error!(source = %source.id, error = %panicked, "Request processing panicked.");
            return finish(
                None,
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            );
        }
    };
    let (event, response) = match outcome {
        Outcome::Unauthorized(reason) => (None, refusal(&source, reason)),
        outcome => respond(outcome),
    };
    finish(event.as_ref().map(EventAnswer::receipt), response)
}

/// The event a request was answered about, for its log line.
struct EventAnswer {
    event_id: String,
    /// A repeat of an accepted event, answered 200 without publishing.
    duplicate: bool,
    /// Where an accepted event is safe.
    safe: Option<Safe>,
}

impl EventAnswer {
    fn receipt(&self) -> Receipt<'_> {
        Receipt {
            event_id: &self.event_id,
            duplicate: self.duplicate,
            safe: self.safe,
        }
    }
}

/// [`EventAnswer`] borrowed for the log line.
#[derive(Clone, Copy)]
struct Receipt<'a> {
    event_id: &'a str,
    duplicate: bool,
    safe: Option<Safe>,
}

/// The answer to a request refused by authentication, logged with its reason.
/// A source that requires several methods is told only that authentication
/// failed (the log line and `hookgate_auth_failures_total` say which), so a
/// caller cannot learn that one of its guesses was right.
fn refusal(source: &Source, reason: AuthError) -> HttpResponse {
    tracing::info!(source = %source.id, reason = reason.reason(), "Request refused by authentication.");
    let status = match reason {
        AuthError::IpNotAllowed => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let several = source.auth.method_count() > 1;
    let text = if several && status == StatusCode::UNAUTHORIZED {
        "authentication failed".to_owned()
    } else {
        reason.to_string()
    };
    let mut resp = error(status, &text);
    let challenge = if several {
        status == StatusCode::UNAUTHORIZED && source.auth.methods().basic.is_some()
    } else {
        reason.wants_basic_challenge()
    };
    if challenge {
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hookgate\""),
        );
    }
    resp
}

/// 429 with the limiter's own wait as `Retry-After`.
fn too_many(retry: RetryAfter) -> HttpResponse {
    let seconds = retry.header_seconds();
    let body =
        serde_json::json!({ "error": "rate limit exceeded", "retry_after_seconds": seconds });
    let mut resp = json(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    resp
}

/// Bodies up to this size are read and dropped before an early answer.
pub const DISCARD_BODY_BYTES: usize = 1024 * 1024;

/// Over HTTP/2, reads and drops what a client still sends of a body the
/// gateway answers without reading (404, 405, a refusal by the head, 413 by
/// declared length), when it declares at most [`DISCARD_BODY_BYTES`],
/// within `server.body_timeout_ms`; nothing is kept. An HTTP/2 answer sent
/// while the client is still sending ends its stream with
/// RST_STREAM(NO_ERROR), which is correct (RFC 9113 §8.1) but which Debian
/// 12's curl 7.88 reports as `curl: (92)` with no status in most tries. A
/// body declared larger is answered at once: reading it would spend more
/// than the answer is worth. HTTP/1 clients read an early answer as it is,
/// so they get it without waiting for their body.
async fn discard_body(
    body: Incoming,
    http2: bool,
    declared: Option<u64>,
    settings: &ServerSettings,
) {
    if !http2 || declared.is_some_and(|n| n > DISCARD_BODY_BYTES as u64) {
        return;
    }
    let deadline = tokio::time::Instant::now() + settings.body_timeout;
    let mut body = Limited::new(body, DISCARD_BODY_BYTES);
    while let Ok(Some(Ok(_frame))) = tokio::time::timeout_at(deadline, body.frame()).await {}
}

/// Turns the pipeline's verdict into a status and a safe body.
fn respond(outcome: Outcome) -> (Option<EventAnswer>, HttpResponse) {
    let about = |event_id: String, duplicate: bool, safe: Option<Safe>| {
        Some(EventAnswer {
            event_id,
            duplicate,
            safe,
        })
    };
    match outcome {
        Outcome::Accepted { event_id, safe } => {
            let body = receipt(&event_id, false);
            (
                about(event_id, false, Some(safe)),
                json(StatusCode::OK, body),
            )
        }
        // Answered by `refusal`, which knows the source.
        Outcome::Unauthorized(reason) => {
            (None, error(StatusCode::UNAUTHORIZED, &reason.to_string()))
        }
        Outcome::RateLimited(retry) => (None, too_many(retry)),
        Outcome::Duplicate { event_id } => {
            let body = receipt(&event_id, true);
            (about(event_id, true, None), json(StatusCode::OK, body))
        }
        Outcome::Unavailable { event_id, error: e } => {
            match e {
                // An operator must act: the spool is full or failing, and a
                // vendor that does not retry (Sticky) loses this event.
                NotSafe::SpoolFull | NotSafe::SpoolFailed(_) => {
                    tracing::error!(event_id = %event_id, reason = %e, "Event neither confirmed nor spooled; asking the vendor to retry.")
                }
                NotSafe::Publish(_) | NotSafe::InFlightElsewhere => {
                    tracing::warn!(event_id = %event_id, reason = %e, "Event not confirmed; asking the vendor to retry.")
                }
            }
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "event could not be stored; retry later",
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            (about(event_id, false, None), resp)
        }
    }
}

/// Splits `/webhooks/{source_id}[/{token}]`. Segments are matched raw, not
/// percent-decoded, so `%2F` or `..` can never reach another source.
fn parse_route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/webhooks/")?;
    let mut parts = rest.split('/');
    let source = parts.next().filter(|s| !s.is_empty())?;
    let token = match parts.next() {
        None => None,
        Some(t) if !t.is_empty() => Some(t),
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((source, token))
}

/// A small JSON response; shared with the admin listener.
pub(crate) fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The body of a 200, `{"id":...}` with `"duplicate":true` for a retry:
/// written straight from borrowed fields, since every accepted request
/// sends one.
fn receipt(event_id: &str, duplicate: bool) -> String {
    #[derive(serde::Serialize)]
    struct Receipt<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    }
    serde_json::to_string(&Receipt {
        id: event_id,
        duplicate,
    })
    .unwrap_or_default()
}

fn error(status: StatusCode, reason: &str) -> HttpResponse {
    json(status, serde_json::json!({ "error": reason }).to_string())
}

/// One log line per routed request: never the path (it may hold a token),
/// never a header or a body.
fn log(
    source_id: &str,
    started: Instant,
    event: Option<Receipt>,
    mut response: HttpResponse,
) -> HttpResponse {
    let request_id = next_request_id();
    let status = response.status().as_u16();
    let latency_ms = latency_ms(started.elapsed());
    tracing::info!(
        request_id = %request_id,
        source = %source_id,
        status,
        event_id = event.map_or("", |e| e.event_id),
        duplicate = event.is_some_and(|e| e.duplicate),
        safe = event.and_then(|e| e.safe).map_or("", Safe::label),
        latency_ms,
        "Request handled."
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Milliseconds to the microsecond (`0.302`, not `0.30196900000000004`).
fn latency_ms(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

/// A process-unique request id: the start time of the process (so ids from
/// two runs differ) and a counter (so ids in one run are ordered).
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static EPOCH: OnceLock<u64> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    format!("{epoch:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::{latency_ms, parse_route};

    #[test]
    fn latency_is_logged_to_the_microsecond() {
        let elapsed = std::time::Duration::from_nanos(301_969_123);
        assert_eq!(latency_ms(elapsed), 301.969);
        assert_eq!(latency_ms(std::time::Duration::from_nanos(302_999)), 0.302);
    }

    #[test]
    fn routes_are_matched_raw() {
        assert_eq!(
            parse_route("/webhooks/usaepay-main"),
            Some(("usaepay-main", None))
        );
        assert_eq!(
            parse_route("/webhooks/sticky/abc"),
            Some(("sticky", Some("abc")))
        );
        assert_eq!(parse_route("/webhooks/"), None);
        assert_eq!(parse_route("/webhooks/a/"), None);
        assert_eq!(parse_route("/webhooks/a/b/c"), None);
        assert_eq!(parse_route("/webhooks//a"), None);
        assert_eq!(parse_route("/other/a"), None);
        assert_eq!(parse_route("/webhooks/a%2Fb"), Some(("a%2Fb", None)));
    }
}
