//! Hostile clients against the running gateway (real TLS, real RabbitMQ).
//!
//! Every case asserts the documented outcome *and* that the gateway then
//! still answers a legitimate signed request with 200: an attack that gets
//! the status right but wedges the listener is still a failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gateway::{signed_usaepay_headers, BASIC, USAEPAY_BODY, USAEPAY_SOURCE};
use crate::support::{amqp_url, schema_validator, Broker, TestGateway};
use crate::support::{nexio_signature, unix_now, usaepay_signature};

const USAEPAY_KEY: &str = "example-signature-key";
const OTHER_KEY: &str = "other-source-signature-key";
const NEXIO_SECRET: &str = "attack-nexio-webhook-secret";
const STICKY_TOKEN: &str = "sticky-attack-token-0123456789abcdef";

/// The USAePay source from `gateway.rs`, plus a second USAePay source with its
/// own key, a Nexio legacy (signed) source and a Sticky (token) source.
fn sources() -> String {
    format!(
        r#"{USAEPAY_SOURCE}
[[source]]
id = "usaepay-other"
vendor = "usaepay"
[source.auth]
hmac = {{ keys = ["{OTHER_KEY}"] }}
basic = {{ username = "webhook-user", password = "webhook-pass" }}

[[source]]
id = "nexio-legacy"
vendor = "nexio"
auth = {{ hmac = {{ keys = ["{NEXIO_SECRET}"], tolerance_secs = 300 }} }}

[[source]]
id = "sticky-main"
vendor = "stickypay"
auth = {{ token = "{STICKY_TOKEN}" }}
"#
    )
}

async fn start(extra_server: &str) -> TestGateway {
    TestGateway::start_with(&sources(), extra_server, &amqp_url(), true).await
}

/// A legitimate, signed USAePay request still gets 200.
async fn assert_still_serves(gw: &TestGateway, after: &str) {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        gw.client().try_post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("after {after}: no answer to a legitimate request in 10 s"));
    assert_eq!(
        reply.map(|(status, _)| status),
        Ok(200),
        "after {after}: a legitimate signed request must still be accepted"
    );
}

/// What a raw client hears back.
#[derive(Debug, PartialEq)]
enum Heard {
    /// A complete HTTP response head with this status.
    Status(u16),
    /// The server closed the connection (EOF or reset) without a response.
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// Reads one response head (or the close) within `wait`.
async fn hear<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> Heard {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                return head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse::<u16>().ok());
            }
        }
    };
    match tokio::time::timeout(wait, read).await {
        Ok(Some(status)) => Heard::Status(status),
        Ok(None) => Heard::Closed,
        Err(_) => Heard::Silent,
    }
}

/// Whether the server closes the connection within `wait` (reading and
/// discarding anything it still sends).
async fn closes_within<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    let drain = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(wait, drain).await.is_ok()
}

fn signed_head(path: &str, extra: &str) -> String {
    let sig = usaepay_signature(USAEPAY_KEY, USAEPAY_BODY.as_bytes());
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {BASIC}\r\nX-Signature: {sig}\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_declared_or_chunked() {
    let gw = start("max_body_bytes = 1024").await;
    let client = gw.client();

    // Declared: a 100 MB Content-Length is refused before a byte of body is sent.
    let mut tls = client.tls_stream().await.unwrap();
    let head = signed_head("/webhooks/usaepay-main", "Content-Length: 100000000\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(
        hear(&mut tls, Duration::from_secs(5)).await,
        Heard::Status(413)
    );
    assert_still_serves(&gw, "a declared oversized body").await;

    // Undeclared: chunked, 4 KiB in 1 KiB chunks, never a Content-Length.
    let mut tls = client.tls_stream().await.unwrap();
    let head = signed_head("/webhooks/usaepay-main", "Transfer-Encoding: chunked\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
        // The server may answer and close before every chunk is written.
        if tls.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tls.write_all(b"0\r\n\r\n").await;
    assert_eq!(
        hear(&mut tls, Duration::from_secs(5)).await,
        Heard::Status(413)
    );
    assert_still_serves(&gw, "a chunked oversized body").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_or_numerous_headers_are_refused_and_the_gateway_survives() {
    let gw = start("").await;
    let client = gw.client();

    // One 100 KiB header: over the 64 KiB head buffer.
    let mut tls = client.tls_stream().await.unwrap();
    let head = signed_head(
        "/webhooks/usaepay-main",
        &format!(
            "X-Filler: {}\r\nContent-Length: 2\r\n",
            "a".repeat(100 * 1024)
        ),
    );
    let _ = tls.write_all(head.as_bytes()).await;
    let heard = hear(&mut tls, Duration::from_secs(5)).await;
    assert!(
        matches!(heard, Heard::Status(431) | Heard::Closed),
        "huge header: {heard:?}"
    );
    assert_still_serves(&gw, "a 100 KiB header").await;

    // 500 small headers: over hyper's header count limit.
    let mut tls = client.tls_stream().await.unwrap();
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let head = signed_head(
        "/webhooks/usaepay-main",
        &format!("{many}Content-Length: 2\r\n"),
    );
    let _ = tls.write_all(head.as_bytes()).await;
    let heard = hear(&mut tls, Duration::from_secs(5)).await;
    assert!(
        matches!(heard, Heard::Status(431) | Heard::Closed),
        "many headers: {heard:?}"
    );
    assert_still_serves(&gw, "500 headers").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off_and_slow_bodies_get_408() {
    let gw = start("header_timeout_ms = 500\nbody_timeout_ms = 500").await;
    let client = gw.client();

    // Slowloris: a partial head, then one byte every 100 ms. The deadline
    // covers the whole head, so trickling does not extend it.
    let mut tls = client.tls_stream().await.unwrap();
    tls.write_all(b"POST /webhooks/usaepay-main HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut_off = false;
    while started.elapsed() < Duration::from_secs(4) {
        if tls.write_all(b"h").await.is_err() {
            cut_off = true;
            break;
        }
        if let Ok(heard) =
            tokio::time::timeout(Duration::from_millis(100), hear(&mut tls, Duration::MAX)).await
        {
            assert!(
                matches!(heard, Heard::Closed | Heard::Status(408)),
                "slow head: {heard:?}"
            );
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a trickled head was not cut off within 4 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "cut off before the header timeout: {:?}",
        started.elapsed()
    );
    assert_still_serves(&gw, "a slowloris head").await;

    // A slow body: the head promises 100 bytes, 10 arrive.
    let mut tls = client.tls_stream().await.unwrap();
    let head = signed_head("/webhooks/usaepay-main", "Content-Length: 100\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&USAEPAY_BODY.as_bytes()[..10]).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        hear(&mut tls, Duration::from_secs(5)).await,
        Heard::Status(408)
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_still_serves(&gw, "a slow body").await;
    gw.stop().await;
}

/// A client that completes the TLS handshake and then sends nothing, or only
/// the start of something (one byte, or most of the HTTP/2 preface, which
/// keeps HTTP/1-vs-2 detection waiting), holds a connection slot;
/// `server.header_timeout_ms` must reclaim it like any other slow head (the
/// README: "request head deadline (slowloris)").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_after_the_tls_handshake_is_cut_off() {
    let gw = start("header_timeout_ms = 500").await;
    for (what, opening) in [
        ("nothing", &b""[..]),
        ("one byte", &b"P"[..]),
        (
            "23 of the 24 bytes of the HTTP/2 preface",
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r"[..],
        ),
    ] {
        let mut tls = gw.client().tls_stream().await.unwrap();
        tls.write_all(opening).await.unwrap();
        tls.flush().await.unwrap();
        assert!(
            closes_within(&mut tls, Duration::from_secs(3)).await,
            "a TLS client that sent {what} is still connected 3 s past a 500 ms header timeout"
        );
    }
    assert_still_serves(&gw, "silent TLS clients").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_stall_others() {
    let gw = start("").await;
    // Pipeline cheap requests (unknown source: 404 before any auth work) and
    // never read a response: once the socket buffers fill, the gateway must
    // stop reading from this client rather than buffer its answers without bound.
    let tls = gw.client().tls_stream().await.unwrap();
    let (reader, writer) = tokio::io::split(tls);
    let flood = flood_until_blocked(writer).await;
    assert!(
        !flood.is_finished(),
        "the flood writer is blocked, not done"
    );
    assert_still_serves(&gw, "a client that stopped reading").await;
    // Hang up (otherwise shutdown waits the whole drain timeout for it).
    flood.abort();
    let _ = flood.await;
    drop(reader);
    gw.stop().await;
}

/// An HTTP/2 connection to the gateway (TLS with ALPN `h2`): its request
/// sender and the task driving it, which ends when the connection does.
async fn h2_connect(
    gw: &TestGateway,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2_tls(gw).await))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

/// A TLS connection to the gateway that negotiated HTTP/2 (ALPN `h2`).
async fn h2_tls(gw: &TestGateway) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = (*gw.cert.client_config()).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_admin_connections_waits_its_turn_and_spares_the_public_listener() {
    let gw = start("").await;
    async fn ask(gw: &TestGateway, path: &str) -> TcpStream {
        let mut conn = TcpStream::connect(gw.admin).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        conn
    }
    async fn status_within(conn: &mut TcpStream, wait: Duration) -> Option<[u8; 12]> {
        let mut first = [0u8; 12];
        match tokio::time::timeout(wait, conn.read_exact(&mut first)).await {
            Ok(Ok(_)) => Some(first),
            _ => None,
        }
    }
    // Every general admin slot taken by a connection that never sends a request.
    let mut silent = Vec::new();
    for _ in 0..hookgate::admin::MAX_CONNECTIONS {
        silent.push(TcpStream::connect(gw.admin).await.unwrap());
    }
    // The orchestrator's probes still get through, on the slots kept for them;
    // nothing else does.
    let mut health = ask(&gw, "/healthz").await;
    assert_eq!(
        status_within(&mut health, Duration::from_secs(2)).await,
        Some(*b"HTTP/1.1 200"),
        "/healthz answered while every general slot is taken"
    );
    let mut metrics = ask(&gw, "/metrics").await;
    assert_eq!(
        status_within(&mut metrics, Duration::from_secs(2)).await,
        Some(*b"HTTP/1.1 503")
    );
    drop((health, metrics));
    // With the probe slots taken too, a request waits for a slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..hookgate::admin::PROBE_CONNECTIONS {
        silent.push(TcpStream::connect(gw.admin).await.unwrap());
    }
    let mut probe = ask(&gw, "/healthz").await;
    assert!(
        status_within(&mut probe, Duration::from_millis(1000))
            .await
            .is_none(),
        "a request beyond every admin slot was served at once"
    );
    assert_still_serves(&gw, "the admin port was flooded").await;
    // Slots free up as connections end; the waiting probe is then served.
    drop(silent);
    assert_eq!(
        status_within(&mut probe, Duration::from_secs(3)).await,
        Some(*b"HTTP/1.1 200"),
        "the waiting admin request was served once slots freed"
    );
    gw.stop().await;
}

/// An HTTP/2 connection that has just been answered 200 for the signed
/// USAePay sale, so it is established and idle.
async fn h2_after_one_sale(
    gw: &TestGateway,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let (mut sender, conn) = h2_connect(gw).await;
    let mut request = Request::post("https://localhost/webhooks/usaepay-main");
    for (name, value) in signed_usaepay_headers() {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(USAEPAY_BODY.as_bytes())))
        .unwrap();
    let answered = sender.send_request(request).await.unwrap();
    assert_eq!(answered.status(), 200);
    (sender, conn)
}

/// An HTTP/2 client's connection ends without error only when the server
/// sent a GOAWAY before closing; a bare close is an unexpected EOF.
fn assert_closed_with_goaway(closed: Result<(), hyper::Error>) {
    assert!(
        closed.is_ok(),
        "the HTTP/2 connection was closed without a GOAWAY: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_finishes_the_goodbye_is_cut_off() {
    const GOAWAY: u8 = 0x7;
    let gw = start("idle_timeout_ms = 1000").await;
    // A raw HTTP/2 client: the preface and empty SETTINGS, then it only
    // reads. It never acknowledges anything, so it never answers the PING
    // that a graceful close waits for.
    let mut h2 = h2_tls(&gw).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let opened = Instant::now();
    let mut frame_types = Vec::new();
    let read_frames = async {
        let mut head = [0u8; 9];
        while h2.read_exact(&mut head).await.is_ok() {
            frame_types.push(head[3]);
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if h2.read_exact(&mut payload).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_frames)
        .await
        .expect("a client that ignores the GOAWAY was still connected after 10 s");
    let lasted = opened.elapsed();
    assert!(
        frame_types.contains(&GOAWAY),
        "no GOAWAY before the close; frame types seen: {frame_types:?}"
    );
    // Idle for 1 s, then one more idle period to finish closing.
    assert!(
        lasted >= Duration::from_millis(1800),
        "cut off after {lasted:?}, before the second idle period ended"
    );
    assert_still_serves(&gw, "a client ignored the goodbye").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_idle_http2_clients_a_goaway_without_waiting_for_them() {
    // Default idle timeout (75 s) and drain timeout (30 s): a shutdown that
    // left the idle connection open would wait out the drain for it.
    let gw = start("").await;
    let (_sender, conn) = h2_after_one_sale(&gw).await;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), gw.stop())
        .await
        .expect("the gateway stopped within 10 s");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with one idle HTTP/2 connection",
        stopping.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the HTTP/2 connection ended with the gateway")
        .unwrap();
    assert_closed_with_goaway(closed);
}

/// Writes pipelined 404 requests on `writer` until the gateway stops taking
/// them (no progress for 500 ms) or the connection fails; returns the writer
/// task, still running if it is blocked.
async fn flood_until_blocked<W>(mut writer: W) -> tokio::task::JoinHandle<()>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let flood = tokio::spawn(async move {
        let one = b"POST /webhooks/nope HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 256).collect();
        while counter.load(Ordering::Relaxed) < 256 * 1024 * 1024 {
            if writer.write_all(&batch).await.is_err() {
                return;
            }
            counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    });
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = written.load(Ordering::Relaxed);
        if (now == last && now > 0) || flood.is_finished() {
            return flood;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway kept reading {now} bytes of requests whose answers nobody reads"
        );
        last = now;
    }
}

/// `server.write_timeout_ms`: once its responses stop draining, the client
/// loses its connection instead of holding the slot for as long as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_timeout() {
    // A long header deadline, so only the write deadline can close it.
    let gw = start("write_timeout_ms = 1000\nheader_timeout_ms = 60000").await;
    let tls = gw.client().tls_stream().await.unwrap();
    let (mut reader, writer) = tokio::io::split(tls);
    let flood = flood_until_blocked(writer).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Had the gateway kept the connection, reading now would let it answer
    // the backlog and take more of the flood, with no end in sight.
    assert!(
        closes_within(&mut reader, Duration::from_secs(10)).await,
        "the gateway kept a connection whose client read nothing for 2.5 s"
    );
    tokio::time::timeout(Duration::from_secs(5), flood)
        .await
        .expect("the flood's writes fail once the gateway hung up")
        .unwrap();
    assert_still_serves(&gw, "a client cut off at the write timeout").await;
    gw.stop().await;
}

/// `server.idle_timeout_ms`: an HTTP/2 client that stays connected, answering
/// the gateway's pings, is closed once it has sent no request for that long;
/// a request in progress, however slow, is never idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_at_the_idle_timeout_but_slow_requests_do_not() {
    let gw = start("idle_timeout_ms = 1000").await;
    let (sender, conn) = h2_after_one_sale(&gw).await;
    let idle_since = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("an idle HTTP/2 connection was still open after 10 s")
        .unwrap();
    assert_closed_with_goaway(closed);
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed {:?} after the last request, before the idle timeout",
        idle_since.elapsed()
    );
    drop(sender);

    // HTTP/1: a body that takes twice the idle timeout to arrive is answered.
    let mut tls = gw.client().tls_stream().await.unwrap();
    let head = signed_head(
        "/webhooks/usaepay-main",
        &format!("Content-Length: {}\r\n", USAEPAY_BODY.len()),
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&USAEPAY_BODY.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    tls.write_all(&USAEPAY_BODY.as_bytes()[10..]).await.unwrap();
    assert_eq!(
        hear(&mut tls, Duration::from_secs(5)).await,
        Heard::Status(200)
    );
    assert_still_serves(&gw, "idle connections closed").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_but_authenticated_bodies_are_published_not_crashed_on() {
    let gw = start("").await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "usaepay-main.#").await;
    let client = gw.client();

    let sale = |id: &str, extra: &str| {
        format!(
            r#"{{"type":"event","event_triggered":"2021-04-07 15:14:26","event_type":"transaction.sale.success","event_body":{{"merchant":{{"merch_key":"m"}},"object":{{"type":"transaction","key":"k-{id}","amount_detail":{{"amount":"5.00"}}{extra}}}}},"event_id":"{id}"}}"#
        )
        .into_bytes()
    };
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let unique = crate::support::unique("attack");
    let mut invalid_utf8 = sale(&format!("{unique}-utf8"), "");
    invalid_utf8.splice(10..10, [0xff, 0xfe]);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "nested 10 000 deep (over the parser's limit)",
            sale(&format!("{unique}-deep"), &format!(r#","x":{}"#, nested(10_000))),
            &["unmapped"],
        ),
        (
            "nested 100 deep",
            sale(&format!("{unique}-100"), &format!(r#","x":{}"#, nested(100))),
            &["payment.succeeded", "unmapped"],
        ),
        ("invalid UTF-8", invalid_utf8, &["unmapped"]),
        (
            "duplicate keys",
            format!(
                r#"{{"type":"event","event_type":"transaction.sale.success","event_id":"{unique}-dup1","event_body":{{"object":{{"type":"transaction","key":"k1","amount_detail":{{"amount":"1.00"}}}}}},"event_id":"{unique}-dup2","event_body":{{"object":{{"type":"transaction","key":"k2","amount_detail":{{"amount":"2.00"}}}}}}}}"#
            )
            .into_bytes(),
            &["payment.succeeded", "unmapped"],
        ),
        (
            "a refnum over u64",
            sale(&format!("{unique}-u64"), r#","refnum":18446744073709551616"#),
            &["payment.succeeded", "unmapped"],
        ),
        (
            "an amount over i64 minor units",
            sale(&format!("{unique}-i64"), "")
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
                .replace(r#""amount":"5.00""#, r#""amount":"92233720368547758.08""#)
                .into_bytes(),
            &["payment.succeeded"],
        ),
        (
            "an amount as a float literal beyond f64",
            sale(&format!("{unique}-f64"), "")
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
                .replace(r#""amount":"5.00""#, r#""amount":1e400"#)
                .into_bytes(),
            // No JSON parser reads a number beyond f64: the body is not JSON.
            &["unmapped"],
        ),
    ];
    let validator = schema_validator();
    for (what, body, types) in cases {
        let sig = usaepay_signature(USAEPAY_KEY, &body);
        let headers = [
            ("authorization", BASIC),
            ("x-signature", sig.as_str()),
            ("content-type", "application/json"),
        ];
        let reply = client.post("/webhooks/usaepay-main", &headers, body).await;
        assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
        let msg = broker
            .next(&queue, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{what}: nothing published"));
        let kind = msg.properties.kind().as_ref().map(|s| s.to_string());
        assert!(
            types.iter().any(|t| kind.as_deref() == Some(*t)),
            "{what}: published as {kind:?}, expected one of {types:?}"
        );
        let event: Value = serde_json::from_slice(&msg.raw)
            .unwrap_or_else(|e| panic!("{what}: consumers cannot parse the event: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:?}");
        if what == "invalid UTF-8" {
            assert_eq!(event["data"]["unmapped"]["raw_body_encoding"], "base64");
        }
        if what == "an amount over i64 minor units" {
            // The unreadable figure is left out and named; the sale stays a sale.
            assert!(event["data"].get("amount").is_none(), "{what}: {event}");
            assert_eq!(
                event["data"]["skipped"][0]["field"], "event_body.object.amount_detail.amount",
                "{what}: {event}"
            );
        }
        if what == "duplicate keys" && kind.as_deref() == Some("payment.succeeded") {
            // One reading (the last occurrence), not a mix of both.
            assert_eq!(
                event["data"]["vendor_event_id"],
                format!("{unique}-dup2").as_str()
            );
            assert_eq!(event["data"]["object"]["id"], "k2");
            assert_eq!(event["data"]["amount"]["minor"], 200);
        }
    }
    assert_still_serves(&gw, "hostile bodies").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_cross_source_signatures_get_401() {
    let gw = start("").await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();
    let nexio_body =
        br#"{"eventType":"TRANSACTION_AUTHORIZED","data":{"id":"replay-1","merchantId":"100039"}}"#;

    // A genuine Nexio legacy capture replayed 10 minutes later (tolerance 300 s).
    let stale = nexio_signature(NEXIO_SECRET, nexio_body, unix_now() - 600);
    let reply = client
        .post(
            "/webhooks/nexio-legacy",
            &[("nexio-signature", stale.as_str())],
            &nexio_body[..],
        )
        .await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    // ... or dated 10 minutes ahead.
    let ahead = nexio_signature(NEXIO_SECRET, nexio_body, unix_now() + 600);
    let reply = client
        .post(
            "/webhooks/nexio-legacy",
            &[("nexio-signature", ahead.as_str())],
            &nexio_body[..],
        )
        .await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);

    // Signed with another source's key: that source's URL accepts it, ours does not.
    let sig = usaepay_signature(OTHER_KEY, USAEPAY_BODY.as_bytes());
    let headers = [("authorization", BASIC), ("x-signature", sig.as_str())];
    let reply = client
        .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
        .await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    let reply = client
        .post("/webhooks/usaepay-other", &headers, USAEPAY_BODY)
        .await;
    assert_eq!(
        reply.status, 200,
        "control: the key is right for its own source"
    );
    // A Nexio signature made with a USAePay key.
    let wrong = nexio_signature(USAEPAY_KEY, nexio_body, unix_now());
    let reply = client
        .post(
            "/webhooks/nexio-legacy",
            &[("nexio-signature", wrong.as_str())],
            &nexio_body[..],
        )
        .await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);

    // Only the control request was published.
    let published = broker.drain(&queue).await;
    assert_eq!(published.len(), 1, "refused requests publish nothing");
    assert_eq!(published[0].routing_key, "usaepay-other.payment.succeeded");
    // A fresh signature is still accepted.
    let fresh = nexio_signature(NEXIO_SECRET, nexio_body, unix_now());
    let reply = client
        .post(
            "/webhooks/nexio-legacy",
            &[("nexio-signature", fresh.as_str())],
            &nexio_body[..],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_still_serves(&gw, "replays").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_on_the_source_id_get_404() {
    let gw = start("").await;
    let client = gw.client();
    let sticky_ok = format!("/webhooks/sticky-main/{STICKY_TOKEN}");
    let mut tricks: Vec<(String, u16)> = [
        "/webhooks/..",
        "/webhooks/../webhooks/usaepay-main",
        "/webhooks/./usaepay-main",
        "/webhooks/usaepay-main/.",
        "/webhooks/usaepay-main/..",
        "/webhooks/..%2Fusaepay-main",
        "/webhooks/usaepay-main%2F",
        "/webhooks/usaepay%2Dmain",
        "/webhooks/usaepay%2dmain",
        "/webhooks/%75saepay-main",
        "/webhooks/USAEPAY-MAIN",
        "/webhooks/Usaepay-main",
        "/WEBHOOKS/usaepay-main",
        "/webhooks/usaepay-main/",
        "/webhooks//usaepay-main",
        "//webhooks/usaepay-main",
        "/webhooks/usaepay-main//",
        "/webhooks/usaepay-main%00",
        "/webhooks/usaepay-main%20",
        "/webhooks/usaepay-main;x",
        "/webhook/usaepay-main",
        "/webhooks/usaepay-main/extra",
        "/webhooks/sticky-main",
    ]
    .into_iter()
    .map(|p| (p.to_owned(), 404))
    .collect();
    // A token source: the token must be the one extra segment, exactly.
    tricks.extend([
        (format!("{sticky_ok}/"), 404),
        (format!("{sticky_ok}/x"), 404),
        (format!("/webhooks/sticky-main//{STICKY_TOKEN}"), 404),
        (format!("/webhooks/Sticky-main/{STICKY_TOKEN}"), 404),
        // Right shape, wrong token: refused by the token check.
        (
            format!("/webhooks/sticky-main/{}", STICKY_TOKEN.to_uppercase()),
            401,
        ),
    ]);
    for (path, expected) in &tricks {
        let reply = client
            .post(path, &signed_usaepay_headers(), USAEPAY_BODY)
            .await;
        assert_eq!(reply.status.as_u16(), *expected, "{path}: {:?}", reply.body);
        assert!(reply.body.get("id").is_none(), "{path}");
    }
    // The exact URLs work.
    let sticky = std::fs::read(
        crate::fixtures::fixture_dir(hookgate::vendors::VendorKind::Stickypay)
            .join("seed-session-cart-pay.json"),
    )
    .unwrap();
    assert_eq!(client.post(&sticky_ok, &[], sticky).await.status, 200);
    assert_still_serves(&gw, "path tricks").await;
    gw.stop().await;
}

/// A TLS 1.0 / 1.1 ClientHello with no `supported_versions` extension, as an
/// old client sends it (rustls cannot build one, so it is written by hand).
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut hello = version.to_vec();
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    let suites: [u8; 8] = [0x00, 0x2f, 0x00, 0x35, 0x00, 0x0a, 0xc0, 0x13];
    hello.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    hello.extend_from_slice(&suites);
    hello.extend_from_slice(&[1, 0]); // compression: null only
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tls_versions_and_plaintext_are_refused() {
    let gw = start("").await;
    for (name, version) in [("TLS 1.0", [3, 1]), ("TLS 1.1", [3, 2])] {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "{name}: the server did not close the connection"
        );
        assert_ne!(
            answer.first(),
            Some(&0x16),
            "{name}: the server answered with a handshake record (ServerHello)"
        );
        if let Some(&first) = answer.first() {
            assert_eq!(
                first, 0x15,
                "{name}: only an alert may come back: {answer:02x?}"
            );
        }
    }

    // Plain HTTP on the TLS port: no HTTP response, the connection is closed.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "POST /webhooks/usaepay-main HTTP/1.1\r\nHost: localhost\r\nX-Signature: {}\r\nAuthorization: {BASIC}\r\nContent-Length: {}\r\n\r\n{USAEPAY_BODY}",
        usaepay_signature(USAEPAY_KEY, USAEPAY_BODY.as_bytes()),
        USAEPAY_BODY.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "plaintext: the server did not close the connection"
    );
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext got an HTTP answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_still_serves(&gw, "old TLS and plaintext").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_by_max_connections() {
    let gw = start("max_connections = 16").await;
    // 64 TCP connections that never start TLS: the first 16 hold every
    // permit (for up to the 10 s handshake timeout), the rest wait in the backlog.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = gw.client();
    let legit = tokio::spawn(async move {
        client
            .try_post(
                "/webhooks/usaepay-main",
                &signed_usaepay_headers(),
                USAEPAY_BODY,
            )
            .await
    });
    // The cap holds: nothing is served while every slot is taken.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !legit.is_finished(),
        "a request was served while 16 of 16 connection slots were held by idle clients"
    );
    // Closing the idle clients frees the slots; the queued request completes.
    drop(idle);
    let served = tokio::time::timeout(Duration::from_secs(8), legit)
        .await
        .expect("the queued request is served once idle connections close")
        .unwrap();
    assert_eq!(served.map(|(s, _)| s), Ok(200));
    assert_still_serves(&gw, "64 idle connections").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_does_not_take_the_gateway_down() {
    let gw = start("").await;
    let (mut sender, conn) = h2_connect(&gw).await;
    // Open streams and cancel each at once (RST_STREAM), 2000 times.
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..2000 {
        if sender.ready().await.is_err() {
            break; // the server sent GOAWAY: acceptable mitigation
        }
        let req = Request::post("https://localhost/webhooks/usaepay-main")
            .header("x-signature", "0".repeat(64))
            .body(Full::new(Bytes::from_static(USAEPAY_BODY.as_bytes())))
            .unwrap();
        let response = sender.send_request(req);
        // Poll once so the HEADERS frame goes out, then drop: RST_STREAM(CANCEL).
        let _ = tokio::time::timeout(Duration::ZERO, response).await;
        sent += 1;
    }
    // h2's rapid-reset guard answers with GOAWAY(ENHANCE_YOUR_CALM) long
    // before 2000 cancellations.
    assert!(sent < 2000, "the server accepted {sent} cancelled streams");
    drop(sender);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection ended")
        .unwrap();
    let error = format!("{ended:?}");
    // The server's GOAWAY(ENHANCE_YOUR_CALM) is what the client reads,
    // unless it was still writing when the server closed: then its write
    // fails first (broken pipe or reset) and the GOAWAY goes unread. Either
    // way the server ended the connection, and before 2000 streams.
    assert!(
        error.contains("ENHANCE_YOUR_CALM")
            || error.contains("BrokenPipe")
            || error.contains("ConnectionReset"),
        "after {sent} resets in {:?}: {error}",
        started.elapsed()
    );
    assert_still_serves(&gw, "an HTTP/2 rapid-reset flood").await;
    let (status, _) = gw.admin("GET", "/healthz").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// A `/proc/<pid>/status` figure in MiB; the test fails if it is unreadable.
fn status_mib(pid: u32, key: &str) -> u64 {
    hookgate::test_util::proc_status_kib(pid, key)
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
        / 1024
}

/// Resident memory of a process now (`VmRSS`), in MiB.
fn rss_mib(pid: u32) -> u64 {
    status_mib(pid, "VmRSS")
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    status_mib(pid, "VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_http2_bodies_cannot_take_the_gateway_past_its_body_budget() {
    // The gateway as its own process, so /proc shows its memory alone; the
    // per-address limit is opened up so every stream reaches the body read.
    let cert = crate::support::TestCert::generate();
    let (_dir, mut gateway) = crate::support::spawn_gateway_process(
        &cert,
        "ip_rate_limit = { per_second = 100000, burst = 100000 }",
        USAEPAY_SOURCE,
        "",
    );
    let addr = gateway.addr;
    let before = peak_rss_mib(gateway.child.id());

    // 34 connections × 64 streams × 262,000-byte bodies with the Basic
    // password but a forged signature, so every body must be read before it
    // is refused (with no credentials at all, the Basic check refuses before
    // the body and the gateway peaks at ~26 MiB): 570 MB pushed at once.
    let body = Bytes::from(vec![b'{'; 262_000]);
    let mut attack = tokio::task::JoinSet::new();
    for _ in 0..34 {
        let mut tls = (*cert.client_config()).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..64 {
            let mut sender = sender.clone();
            let body = body.clone();
            attack.spawn(async move {
                let req = Request::builder()
                    .method("POST")
                    .uri("https://localhost/webhooks/usaepay-main")
                    .header("content-length", body.len())
                    .header("authorization", BASIC)
                    .header("x-signature", "00".repeat(32))
                    .body(Full::new(body))
                    .unwrap();
                match sender.send_request(req).await {
                    Ok(resp) => resp.status().as_u16(),
                    Err(_) => 0,
                }
            });
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = attack.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    let peak = peak_rss_mib(gateway.child.id());
    // Memory goes back after the burst: glibc alone kept ~77 of the ~88 MiB
    // peak; the gateway trims the freed heap once a burst has passed (checked
    // every second; ten are allowed).
    let returned = before + 32;
    let mut after = rss_mib(gateway.child.id());
    for _ in 0..100 {
        if after < returned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss_mib(gateway.child.id());
    }
    assert_eq!(
        statuses.get(&200),
        None,
        "nothing unauthenticated got through: {statuses:?}"
    );
    // Bodies in memory are bounded by the 64 MiB budget (plus the copy made
    // when one is joined) and 256 KiB of HTTP/2 window per connection; the
    // unbounded gateway reached about 565 MiB here.
    assert!(
        peak < before + 200,
        "peak RSS {peak} MiB (from {before} MiB at start) under the attack; statuses {statuses:?}"
    );

    assert!(
        after < returned,
        "RSS {after} MiB 10 s after a {peak} MiB peak, from {before} MiB at start: memory was not returned"
    );

    // A real vendor is still served afterwards.
    let client = crate::support::Client::new(addr, &cert);
    let reply = client
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let _ = gateway.child.kill();
    let _ = gateway.child.wait();
    eprintln!("peak RSS {peak} MiB from {before} MiB, {after} MiB after; statuses {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_need_no_body_are_refused_before_the_body_is_read() {
    let gw = start("").await;
    // A head that declares a large body and then sends none of it: with
    // the Basic check after the body read, this would wait the 15 s body
    // deadline and then answer 408.
    let mut tls = gw.client().tls_stream().await.unwrap();
    tls.write_all(
        b"POST /webhooks/usaepay-main HTTP/1.1\r\nhost: localhost\r\n\
          content-type: application/json\r\ncontent-length: 200000\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut head))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        gw.metric("hookgate_auth_failures_total{source=\"usaepay-main\",reason=\"basic_missing\"}")
            .await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_two_methods_never_says_which_one_failed() {
    let gw = start("").await;
    let client = gw.client();
    let right_password_no_signature = client
        .post(
            "/webhooks/usaepay-main",
            &[
                ("content-type", "application/json"),
                ("authorization", BASIC),
            ],
            USAEPAY_BODY,
        )
        .await;
    let wrong_password_right_signature = client
        .post(
            "/webhooks/usaepay-main",
            &[
                ("content-type", "application/json"),
                ("x-signature", crate::gateway::USAEPAY_SIGNATURE),
                ("authorization", "Basic d2ViaG9vay11c2VyOndyb25n"),
            ],
            USAEPAY_BODY,
        )
        .await;
    for reply in [
        &right_password_no_signature,
        &wrong_password_right_signature,
    ] {
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.body["error"], "authentication failed",
            "{:?}",
            reply.body
        );
        assert_eq!(
            reply.headers.get("www-authenticate").unwrap(),
            "Basic realm=\"hookgate\""
        );
    }
    // Operators still see which check failed.
    for reason in ["signature_missing", "basic_mismatch"] {
        let series =
            format!("hookgate_auth_failures_total{{source=\"usaepay-main\",reason=\"{reason}\"}}");
        assert_eq!(gw.metric(&series).await, 1.0, "{reason}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_for_source_ids_spends_the_address_budget_and_is_counted() {
    let gw = start("ip_rate_limit = { per_second = 1, burst = 5 }").await;
    let prober = gw.client().connecting_from("127.0.0.4");
    let mut statuses = Vec::new();
    for n in 0..8 {
        let path = format!("/webhooks/guess-{n}");
        statuses.push(prober.post(&path, &[], "{}").await.status.as_u16());
    }
    assert_eq!(statuses[..5], [404; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        gw.metric("hookgate_requests_total{source=\"unknown\",status=\"404\"}")
            .await,
        5.0
    );
    assert_eq!(
        gw.metric("hookgate_requests_total{source=\"unknown\",status=\"429\"}")
            .await,
        3.0
    );
    // Another address is not affected.
    assert_still_serves(&gw, "a probe from another address").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_header_block_that_never_ends_is_cut_off_at_the_header_timeout() {
    // Default idle timeout (75 s); the header deadline is what must apply.
    let gw = start("header_timeout_ms = 1000").await;
    let mut h2 = h2_tls(&gw).await;
    // Preface, empty SETTINGS, then HEADERS for stream 1 without END_HEADERS
    // (flags 0): a header block that is never finished.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    h2.write_all(b"\0\0\x01\x01\x00\0\0\0\x01\x82")
        .await
        .unwrap();
    let opened = Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), h2.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "an unfinished header block held its connection for 8 s"
    );
    // One header period to the GOAWAY, at most one more to the cut.
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "{:?}",
        opened.elapsed()
    );
    assert_still_serves(&gw, "an unfinished HTTP/2 header block").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let gw = start("max_connections_per_address = 3").await;
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(gw.addr)
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(from("127.0.0.6").await.unwrap());
    }
    let mut fourth = from("127.0.0.6").await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), fourth.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the fourth connection from one address is closed at once: {closed:?}"
    );
    assert_eq!(gw.metric("hookgate_connections_refused_total").await, 1.0);
    // Others are served, and the address gets its places back as it closes.
    assert_still_serves(&gw, "one address holding its share").await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let vendor = gw.client().connecting_from("127.0.0.6");
    let reply = vendor
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200);
    gw.stop().await;
}

/// `curl --http2` (Debian 12's 7.88) posting `size` bytes to `path`: the
/// status it read, or its exit code when it read none.
fn curl_http2(gw: &TestGateway, path: &str, headers: &[(&str, &str)], size: usize) -> String {
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), vec![b'{'; size]).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "--http2",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(gw.cert.cert_path())
        .arg(format!("https://localhost:{}{path}", gw.addr.port()))
        .args(
            headers
                .iter()
                .flat_map(|(k, v)| ["-H".to_owned(), format!("{k}: {v}")]),
        )
        .arg("--data-binary")
        .arg(format!("@{}", body.path().display()))
        .output()
        .expect("curl on PATH (.ci/run installs it)");
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        status
    } else {
        format!(
            "curl exit {:?} ({status}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Request headers as `(name, value)` pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_read_early_answers() {
    // curl 7.88 over HTTP/2 turns an answer sent before it finished sending
    // the body into `curl: (92)` without a status in most tries; the
    // gateway reads a body under the cap before answering, and answers
    // a declared length over the cap at once (curl stops sending then).
    let gw = start("").await;
    let signed = signed_usaepay_headers();
    let cases: [(&str, Headers, usize, &str); 4] = [
        ("/webhooks/no-such-source", &[], 40_000, "404"),
        ("/nowhere", &[], 40_000, "404"),
        ("/webhooks/usaepay-main", &[], 40_000, "401"),
        // Over the 256 KiB cap, declared: credentials fine, body refused.
        ("/webhooks/usaepay-main", &signed, 300_000, "413"),
    ];
    let mut got = Vec::new();
    for (path, headers, size, want) in cases {
        for _ in 0..5 {
            let answer = tokio::task::block_in_place(|| curl_http2(&gw, path, headers, size));
            if answer != want {
                got.push(format!("{path} ({size} B): {answer}, not {want}"));
            }
        }
    }
    gw.stop().await;
    assert!(got.is_empty(), "{}", got.join("\n"));
}
