//! The test harness: real parts behind calls that read as sentences.
//!
//! `TestGateway::start(sources_toml)` runs the real gateway on 127.0.0.1:0
//! with a TLS certificate generated for the run; `Broker` is a plain lapin
//! client on the test's own RabbitMQ for declaring queues and reading what
//! was published; `TcpProxy` sits between the gateway and RabbitMQ so a test
//! can cut and restore the broker link.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The RabbitMQ virtual host tests work in when `HOOKGATE_TEST_AMQP_URL`
/// names none. `scripts/test` creates one of its own for each run (empty,
/// deleted after), so tests never touch the default vhost `/` a dev gateway
/// (the quick start's) publishes into, and two runs never share one.
pub const TEST_VHOST: &str = "hookgate-test";

/// The broker the tests use.
pub fn amqp_url() -> String {
    std::env::var("HOOKGATE_TEST_AMQP_URL")
        .unwrap_or_else(|_| format!("amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}"))
}

/// The vhost of [`amqp_url`] (its path, which these URLs never escape).
pub fn test_vhost() -> String {
    let url = amqp_url();
    let after_host = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    after_host
        .split_once('/')
        .map_or(String::new(), |(_, vhost)| vhost.to_owned())
}

/// A name unique to this test run and call.
pub fn unique(prefix: &str) -> String {
    hookgate::test_util::unique_name(prefix)
}

/// What USAePay sends in `X-Signature` for `body` under `key`.
pub fn usaepay_signature(key: &str, body: &[u8]) -> String {
    signer(
        hookgate::auth::SignatureScheme::HexBody {
            header: "x-signature",
        },
        key,
    )
    .sign(0, None, body)
}

/// What Nexio's legacy webhooks send in `Nexio-signature` for `body` at unix time `at`.
pub fn nexio_signature(key: &str, body: &[u8], at: u64) -> String {
    signer(
        hookgate::auth::SignatureScheme::TimestampedHex {
            header: "nexio-signature",
        },
        key,
    )
    .sign(0, Some(at), body)
}

fn signer(scheme: hookgate::auth::SignatureScheme, key: &str) -> hookgate::auth::HmacVerifier {
    hookgate::auth::HmacVerifier::new(
        scheme,
        vec![hookgate::secret::Secret::new(key)],
        Duration::from_secs(300),
    )
}

/// `Authorization: Basic` for a user and password.
pub fn basic_auth(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The canonical-event schema, compiled with format assertions on.
pub fn schema_validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/canonical-event.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

/// Where `wanted` (a partial document) differs from `actual`, if anywhere:
/// objects are compared key by key, arrays of the same length element by
/// element, everything else exactly.
pub fn subset_mismatch(wanted: &Value, actual: &Value, at: &str) -> Option<String> {
    match (wanted, actual) {
        (Value::Array(w), Value::Array(a)) if w.len() == a.len() => w
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (wv, av))| subset_mismatch(wv, av, &format!("{at}[{i}]"))),
        (Value::Object(w), Value::Object(a)) => w.iter().find_map(|(k, wv)| {
            let path = format!("{at}.{k}");
            match a.get(k) {
                None => Some(format!("{path}: missing (wanted {wv})")),
                Some(av) => subset_mismatch(wv, av, &path),
            }
        }),
        _ if wanted == actual => None,
        _ => Some(format!("{at}: wanted {wanted}, got {actual}")),
    }
}

/// A self-signed certificate for 127.0.0.1/localhost, written as PEM files.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_pem: String,
}

impl TestCert {
    pub fn generate() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Self {
            cert_pem: cert.pem(),
            dir,
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A rustls client that trusts only this certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A response as the test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// An HTTPS client for the gateway under test (one connection per request).
pub struct Client {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    /// Local address to connect from (loopback has all of 127.0.0.0/8).
    from: Option<std::net::IpAddr>,
}

impl Client {
    /// A client for a gateway at `addr` serving `cert`.
    pub fn new(addr: SocketAddr, cert: &TestCert) -> Self {
        Self {
            addr,
            tls: cert.client_config(),
            from: None,
        }
    }

    /// The same client, connecting from another loopback address.
    pub fn connecting_from(mut self, ip: &str) -> Self {
        self.from = Some(ip.parse().unwrap());
        self
    }

    /// A client that trusts a different certificate.
    pub fn trusting(mut self, cert: &TestCert) -> Self {
        self.tls = cert.client_config();
        self
    }

    async fn tcp(&self) -> std::io::Result<TcpStream> {
        match self.from {
            None => TcpStream::connect(self.addr).await,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(self.addr).await
            }
        }
    }

    /// A raw TLS connection, for tests that write HTTP by hand.
    pub async fn tls_stream(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = self.tcp().await?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }

    /// A POST that reports connection failures instead of panicking: `(status, body id)`.
    pub async fn try_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<(u16, String), String> {
        let reply = self.send("POST", path, headers, body.into()).await?;
        let id = reply.body["id"].as_str().unwrap_or_default().to_owned();
        Ok((reply.status.as_u16(), id))
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.request("POST", path, headers, body.into()).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        self.send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// One request on a fresh TLS connection; any transport failure is an `Err`.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let tls = self
            .tls_stream()
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .map_err(|_| "no answer within 30 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// A lapin client for arranging and inspecting the broker.
pub struct Broker {
    pub connection: Connection,
    pub channel: lapin::Channel,
}

/// A message as read back from a queue.
#[derive(Debug)]
pub struct Received {
    pub body: Value,
    pub raw: Vec<u8>,
    pub properties: BasicProperties,
    pub routing_key: String,
}

impl Broker {
    pub async fn connect() -> Self {
        Self::connect_to(&amqp_url()).await
    }

    /// A client of the broker (or cluster node) at `url`.
    pub async fn connect_to(url: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ at {url}: {e} (scripts/test starts the broker and creates the \
                     `{TEST_VHOST}` vhost; or run `scripts/broker start` and \
                     `scripts/broker vhost {TEST_VHOST}`)"
                )
            });
        Self::on(connection).await
    }

    /// A client over `amqps://` that trusts `ca_pem`.
    pub async fn connect_tls(url: &str, ca_pem: &str) -> Self {
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: Some(ca_pem.to_owned()),
        };
        let connection = Connection::connect_with_config(
            url,
            ConnectionProperties::default(),
            tls,
            lapin::runtime::default_runtime().unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ over TLS at {url}: {e}"));
        Self::on(connection).await
    }

    async fn on(connection: Connection) -> Self {
        let channel = connection.create_channel().await.unwrap();
        Self {
            connection,
            channel,
        }
    }

    /// As [`Broker::bind_queue`], but a durable quorum queue (replicated on
    /// every node of a cluster, its leader on the node this client is on).
    pub async fn bind_quorum_queue(&self, exchange: &str, pattern: &str) -> String {
        hookgate::publish::declare_topology(&self.connection, exchange)
            .await
            .unwrap();
        let queue = unique("test-quorum");
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-queue-leader-locator".into(),
            lapin::types::AMQPValue::LongString("client-local".into()),
        );
        // Gone a minute after the test stops using it.
        args.insert("x-expires".into(), lapin::types::AMQPValue::LongInt(60_000));
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
        self.bind(&queue, exchange, pattern).await;
        queue
    }

    /// Declares the exchange topology as the gateway would, plus an
    /// exclusive queue bound with `pattern`, and returns the queue name.
    pub async fn bind_queue(&self, exchange: &str, pattern: &str) -> String {
        hookgate::publish::declare_topology(&self.connection, exchange)
            .await
            .unwrap();
        let queue = unique("test-queue");
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.bind(&queue, exchange, pattern).await;
        queue
    }

    /// Binds `queue` to `exchange` with `pattern`.
    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Message ids read from `queue` until every one of `wanted` has come or
    /// `deadline` passes; what arrived, duplicates folded.
    pub async fn ids_until(
        &self,
        queue: &str,
        wanted: &std::collections::HashSet<String>,
        deadline: tokio::time::Instant,
    ) -> std::collections::HashSet<String> {
        let mut arrived = std::collections::HashSet::new();
        while !wanted.is_subset(&arrived) && tokio::time::Instant::now() < deadline {
            if let Some(message) = self.next(queue, Duration::from_millis(300)).await {
                if let Some(id) = message.properties.message_id() {
                    arrived.insert(id.to_string());
                }
            }
        }
        arrived
    }

    /// The next message on `queue`, waiting up to `wait` for one to arrive.
    pub async fn next(&self, queue: &str, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            if let Some(msg) = got {
                let delivery = msg.delivery;
                return Some(Received {
                    body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
                    raw: delivery.data.clone(),
                    properties: delivery.properties.clone(),
                    routing_key: delivery.routing_key.to_string(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every message currently on `queue` (after a short settle time).
    pub async fn drain(&self, queue: &str) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(m) = self.next(queue, Duration::from_millis(300)).await {
            out.push(m);
        }
        out
    }
}

/// The real gateway, configured for one test.
pub struct TestGateway {
    pub gateway: Option<hookgate::Gateway>,
    pub exchange: String,
    pub cert: TestCert,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The config file the gateway was started from (rewrite it, then reload).
    pub config_path: PathBuf,
    /// The `[broker]` endpoint keys it was started with, kept on rewrites.
    pub broker: String,
}

/// Builds the config text a test gateway runs with.
pub fn config_text(
    cert: &TestCert,
    amqp: &str,
    exchange: &str,
    extra_server: &str,
    sources: &str,
) -> String {
    config_text_with_admin(cert, amqp, exchange, extra_server, "", sources)
}

/// As [`config_text`], with extra keys in `[admin]`.
pub fn config_text_with_admin(
    cert: &TestCert,
    amqp: &str,
    exchange: &str,
    extra_server: &str,
    extra_admin: &str,
    sources: &str,
) -> String {
    let broker = format!("url = \"{amqp}\"");
    config_text_on_broker(cert, &broker, exchange, extra_server, extra_admin, sources)
}

/// The config text with `broker` as the `[broker]` table's endpoint keys
/// (`url = …`, or `urls = […]` with TLS keys).
pub fn config_text_on_broker(
    cert: &TestCert,
    broker: &str,
    exchange: &str,
    extra_server: &str,
    extra_admin: &str,
    sources: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
{extra_server}

[broker]
{broker}
exchange = "{exchange}"
confirm_timeout_ms = 2000
connect_timeout_ms = 1000

[admin]
listen = "127.0.0.1:0"
{extra_admin}

{sources}
"#,
        cert = cert.cert_path().display(),
        key = cert.key_path().display(),
    )
}

impl TestGateway {
    /// Starts a gateway with these `[[source]]` tables and waits for its broker link.
    pub async fn start(sources: &str) -> Self {
        Self::start_with(sources, "", &amqp_url(), true).await
    }

    pub async fn start_with(
        sources: &str,
        extra_server: &str,
        amqp: &str,
        wait_for_broker: bool,
    ) -> Self {
        Self::launch(sources, extra_server, "", amqp, wait_for_broker).await
    }

    /// Starts with extra `[server]` keys, on the test broker.
    pub async fn start_with_server(sources: &str, extra_server: &str) -> Self {
        Self::start_with(sources, extra_server, &amqp_url(), true).await
    }

    /// Starts on a given exchange (a restart of an earlier gateway).
    pub async fn start_on_exchange(sources: &str, exchange: &str) -> Self {
        Self::launch_on(sources, "", "", &amqp_url(), true, exchange.to_owned()).await
    }

    /// Starts with extra `[admin]` keys (e.g. a token).
    pub async fn start_with_admin(sources: &str, extra_admin: &str) -> Self {
        Self::launch(sources, "", extra_admin, &amqp_url(), true).await
    }

    async fn launch(
        sources: &str,
        extra_server: &str,
        extra_admin: &str,
        amqp: &str,
        wait_for_broker: bool,
    ) -> Self {
        Self::launch_on(
            sources,
            extra_server,
            extra_admin,
            amqp,
            wait_for_broker,
            unique("test-exchange"),
        )
        .await
    }

    async fn launch_on(
        sources: &str,
        extra_server: &str,
        extra_admin: &str,
        amqp: &str,
        wait_for_broker: bool,
        exchange: String,
    ) -> Self {
        let broker = format!("url = \"{amqp}\"");
        Self::launch_on_broker(
            sources,
            extra_server,
            extra_admin,
            &broker,
            wait_for_broker,
            exchange,
        )
        .await
    }

    /// Starts with `broker` as the `[broker]` endpoint keys (a cluster's
    /// `urls`, amqps trust), on a fresh exchange.
    pub async fn start_on_broker(sources: &str, broker: &str, wait_for_broker: bool) -> Self {
        Self::launch_on_broker(
            sources,
            "",
            "",
            broker,
            wait_for_broker,
            unique("test-exchange"),
        )
        .await
    }

    async fn launch_on_broker(
        sources: &str,
        extra_server: &str,
        extra_admin: &str,
        broker: &str,
        wait_for_broker: bool,
        exchange: String,
    ) -> Self {
        let cert = TestCert::generate();
        let text =
            config_text_on_broker(&cert, broker, &exchange, extra_server, extra_admin, sources);
        let config_path = cert.dir.path().join("hookgate.toml");
        std::fs::write(&config_path, &text).unwrap();
        let settings =
            hookgate::config::load(&config_path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let gateway = hookgate::Gateway::start_from_file(settings, config_path.clone())
            .await
            .expect("gateway starts");
        if wait_for_broker {
            assert!(
                gateway
                    .publisher()
                    .wait_connected(Duration::from_secs(10))
                    .await,
                "gateway connected to the broker"
            );
        }
        let addr = gateway.local_addr();
        let admin = gateway.admin_addr().expect("admin listener configured");
        Self {
            gateway: Some(gateway),
            exchange,
            cert,
            addr,
            admin,
            config_path,
            broker: broker.to_owned(),
        }
    }

    pub fn client(&self) -> Client {
        Client {
            addr: self.addr,
            tls: self.cert.client_config(),
            from: None,
        }
    }

    /// Rewrites the config file with other `[[source]]` tables / server keys.
    pub fn rewrite_config(&self, sources: &str, extra_server: &str) {
        self.rewrite_config_with_cert(&self.cert, sources, extra_server);
    }

    /// Rewrites the config file, pointing it at another certificate.
    pub fn rewrite_config_with_cert(&self, cert: &TestCert, sources: &str, extra_server: &str) {
        let text = config_text_on_broker(
            cert,
            &self.broker,
            &self.exchange,
            extra_server,
            "",
            sources,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    /// A plain-HTTP request to the admin listener: (status, body text).
    pub async fn admin(&self, method: &str, path: &str) -> (StatusCode, String) {
        self.admin_request(method, path, None).await
    }

    /// As [`TestGateway::admin`], with a bearer token.
    pub async fn admin_with_token(
        &self,
        method: &str,
        path: &str,
        token: &str,
    ) -> (StatusCode, String) {
        self.admin_request(method, path, Some(token)).await
    }

    async fn admin_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        let req = match token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        };
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    /// The value of one Prometheus sample line (`name{labels}`), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin("GET", "/metrics").await;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Shuts the gateway down, after checking that none of its long-lived
    /// tasks died during the test (which would have made a real one exit).
    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            if let Ok(fault) = tokio::time::timeout(Duration::ZERO, g.fault()).await {
                panic!("{fault} during the test");
            }
            g.shutdown().await;
        }
    }
}

/// A TCP relay to RabbitMQ that a test can cut (closing every relayed
/// connection and refusing new ones) and restore on the same port.
pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

struct ProxyState {
    acceptor: Option<JoinHandle<()>>,
    links: Vec<JoinHandle<()>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            acceptor: None,
            links: Vec::new(),
        }));
        let proxy = Self {
            addr,
            target,
            state,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let target = self.target;
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.lock().unwrap().links.push(link);
            }
        });
        self.state.lock().unwrap().acceptor = Some(acceptor);
    }

    /// The AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        amqp_url().replace("127.0.0.1:5672", &self.addr.to_string())
    }

    /// Drops every relayed connection and stops listening.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(a) = state.acceptor.take() {
            a.abort();
        }
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }
}

/// The `hookgate` binary run as a separate process, for crash and signal tests.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Log lines after start-up, collected until the process exits.
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `hookgate serve --config <path>` and waits for its "Gateway
    /// listening." line (and, with `wait_for_broker`, "Connected to the broker.").
    pub fn spawn(config_path: &std::path::Path, wait_for_broker: bool) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--config"])
            .arg(config_path)
            .env_remove("RUST_LOG")
            .env_remove("HOOKGATE_LOG_FORMAT")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addr = None;
        let mut connected = !wait_for_broker;
        for line in lines.by_ref() {
            let line = line.unwrap();
            let entry: Value = serde_json::from_str(&line).unwrap_or_default();
            if entry["message"] == "Gateway listening." {
                addr = entry["listen"].as_str().map(|s| s.parse().unwrap());
            }
            if entry["message"] == "Connected to the broker." {
                connected = true;
            }
            if addr.is_some() && connected {
                break;
            }
        }
        let addr = addr.expect("the gateway logs its address as JSON");
        let logs = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Self {
            child,
            addr,
            logs: Some(logs),
        }
    }

    /// Every log line after start-up; call once the process has exited.
    pub fn logs_after_exit(&mut self) -> Vec<String> {
        let logs = self.logs.take().expect("logs are collected once");
        logs.join().unwrap()
    }
}

/// A gateway process on the test config for `sources` (`extra_server` in
/// `[server]`, no admin listener, an exchange of its own), with `extra`
/// appended; `{dir}` in `extra` is the temp dir the config is written to.
/// Waits for its broker link. The dir lives as long as the returned guard.
pub fn spawn_gateway_process(
    cert: &TestCert,
    extra_server: &str,
    sources: &str,
    extra: &str,
) -> (tempfile::TempDir, GatewayProcess) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        cert,
        &amqp_url(),
        &unique("test-exchange"),
        extra_server,
        sources,
    )
    .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "");
    let extra = extra.replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, format!("{text}\n{extra}\n")).unwrap();
    let gateway = GatewayProcess::spawn(&path, true);
    (dir, gateway)
}

impl Drop for GatewayProcess {
    /// A test that fails midway must not leave its gateway running (it would
    /// hold the test runner's output pipe open, and the port).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Scripted answers per path, in order.
type Script =
    Arc<Mutex<std::collections::HashMap<String, std::collections::VecDeque<(u16, String)>>>>;

/// A fake Nexio API: a real HTTP server answering look-ups from a script
/// (per path, a queue of `(status, body)`; 404 once the queue is empty), and
/// refusing any request without the expected Basic credentials.
pub struct FakeVendorApi {
    pub addr: SocketAddr,
    script: Script,
    hits: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FakeVendorApi {
    /// Starts the server; `authorization` is the exact header value it requires.
    pub async fn start(authorization: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Script = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let expected = authorization.to_owned();
        let (s, h) = (script.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, hits, expected) = (s.clone(), h.clone(), expected.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let path = req.uri().path().to_owned();
                            let authorized = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                == Some(&expected);
                            hits.lock().unwrap().push(path.clone());
                            let (status, body) = if !authorized {
                                (401, "{\"error\":\"unauthorized\"}".to_owned())
                            } else {
                                script
                                    .lock()
                                    .unwrap()
                                    .get_mut(&path)
                                    .and_then(|q| q.pop_front())
                                    .unwrap_or((404, "{\"error\":\"not found\"}".to_owned()))
                            };
                            async move {
                                let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            script,
            hits,
            task,
        }
    }

    /// Queues answers for a path, in order.
    pub fn answer(&self, path: &str, replies: &[(u16, &str)]) {
        let mut script = self.script.lock().unwrap();
        let queue = script.entry(path.to_owned()).or_default();
        for (status, body) in replies {
            queue.push_back((*status, (*body).to_owned()));
        }
    }

    /// How many requests reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeVendorApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real `redis-server` (Debian's package) on a loopback port of its own,
/// no persistence, stopped when dropped.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (as a crash or a network cut would look to its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian's package; scripts/test installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
