//! A real 3-node RabbitMQ cluster on loopback (`scripts/cluster`): a node
//! killed under load, a memory alarm, and `amqps` with a CA made for the test.
//!
//! The cluster is started once per run and shared; these tests take turns
//! on it (a process-wide lock here, and one nextest test group in
//! `.config/nextest.toml`), because each one kills a node or raises an alarm
//! on every node.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::durability::send;
use crate::gateway::USAEPAY_SOURCE;
use crate::support::{Broker, TestGateway};

/// Serializes the tests of this file within one test process.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");

/// The shared cluster, held by one test at a time; every node is up and
/// joined when [`Cluster::up`] returns.
struct Cluster {
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    async fn up() -> Self {
        let turn = TURN.lock().await;
        let started = tokio::task::spawn_blocking(|| Command::new(SCRIPT).arg("start").status())
            .await
            .unwrap()
            .expect("scripts/cluster runs");
        assert!(started.success(), "scripts/cluster start failed");
        let cluster = Self { _turn: turn };
        // A test that failed half-way may have left an alarm behind.
        cluster.set_memory_watermark("0.4");
        cluster
    }

    fn port(node: usize) -> u16 {
        5680 + node as u16
    }

    fn url(node: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", Self::port(node))
    }

    /// The `[broker]` keys naming all three nodes.
    fn urls_key() -> String {
        let urls: Vec<String> = (1..=3).map(|n| format!("\"{}\"", Self::url(n))).collect();
        format!("urls = [{}]", urls.join(", "))
    }

    /// `rabbitmqctl` against `node` (a number, or a full node name); its stdout.
    fn ctl(node: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(SCRIPT)
            .arg("ctl")
            .arg(node)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn set_memory_watermark(&self, value: &str) {
        for node in 1..=3 {
            Self::ctl(&node.to_string(), &["set_vm_memory_high_watermark", value])
                .unwrap_or_else(|e| panic!("watermark on node {node}: {e}"));
        }
    }

    /// The node whose AMQP port a connection named `name` is on, from the
    /// broker's own connection list.
    fn node_serving(name: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = Self::ctl("1", &["list_connections", "port", "client_properties"])
                .expect("list_connections");
            let port = listed
                .lines()
                .find(|line| line.contains(&format!("{{\"connection_name\",\"{name}\"}}")))
                .and_then(|line| line.split_whitespace().next())
                .and_then(|port| port.parse::<u16>().ok());
            if let Some(port) = port {
                return usize::from(port - 5680);
            }
            assert!(
                Instant::now() < deadline,
                "no connection named {name}:\n{listed}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs a node's Erlang VM.
    fn kill(node: usize) {
        let pid = Self::ctl(&node.to_string(), &["eval", "os:getpid()."]).expect("node pid");
        let pid = pid.trim().trim_matches('"');
        let killed = Command::new("kill").args(["-9", pid]).status().unwrap();
        assert!(killed.success(), "kill -9 {pid}");
    }

    fn answers(node: usize) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", Self::port(node))).is_ok()
    }
}

/// Puts the watermark back even when an assertion fails mid-test, so the
/// next test does not start under an alarm.
struct AlarmGuard<'c>(&'c Cluster);

impl Drop for AlarmGuard<'_> {
    fn drop(&mut self) {
        self.0.set_memory_watermark("0.4");
    }
}

fn spool_source(dir: &Path) -> String {
    format!("{USAEPAY_SOURCE}\n[spool]\ndir = \"{}\"\n", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_connected_node_is_killed_every_accepted_event_reaches_the_quorum_queue_through_another(
) {
    let cluster = Cluster::up().await;
    let spool = tempfile::tempdir().unwrap();
    let gw =
        TestGateway::start_on_broker(&spool_source(spool.path()), &Cluster::urls_key(), true).await;
    let victim = Cluster::node_serving("hookgate");
    let survivor = if victim == 1 { 2 } else { 1 };
    // The queue's leader sits on the node that will die, so its loss also
    // forces a leader election while the gateway fails over.
    let declarer = Broker::connect_to(&Cluster::url(victim)).await;
    let queue = declarer.bind_quorum_queue(&gw.exchange, "#").await;
    declarer.connection.close(200, "declared".into()).await.ok();

    let client = gw.client();
    let stream = tokio::spawn(async move {
        let mut answers = Vec::new();
        for n in 0..120 {
            answers.push(send(&client, 50_000 + n).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    Cluster::kill(victim);
    let killed_at = Instant::now();
    let answers = stream.await.unwrap();

    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(refused.is_empty(), "not every request got 200: {refused:?}");
    let accepted: HashSet<String> = answers.into_iter().filter_map(|(_, id)| id).collect();
    assert_eq!(accepted.len(), 120);

    let reader = Broker::connect_to(&Cluster::url(survivor)).await;
    let deadline = tokio::time::Instant::from_std(killed_at) + Duration::from_secs(15);
    let arrived = reader.ids_until(&queue, &accepted, deadline).await;
    let missing = accepted.difference(&arrived).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} accepted events not on the quorum queue {:?} after the kill",
        accepted.len(),
        killed_at.elapsed()
    );
    assert!(
        !Cluster::answers(victim),
        "the killed node stayed down throughout"
    );

    assert!(gw.metric("hookgate_broker_failovers_total").await >= 1.0);
    let on = |node: usize| {
        format!(
            "hookgate_broker_endpoint{{endpoint=\"127.0.0.1:{}\"}}",
            Cluster::port(node)
        )
    };
    assert_eq!(gw.metric(&on(victim)).await, 0.0);
    let mut in_use = 0.0;
    for node in (1..=3).filter(|n| *n != victim) {
        in_use += gw.metric(&on(node)).await;
    }
    assert_eq!(in_use, 1.0, "exactly one surviving endpoint is in use");
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        !metrics.contains("guest:guest"),
        "credentials in the metrics"
    );
    gw.stop().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_memory_alarm_requests_are_spooled_at_once_and_drain_when_it_clears() {
    let cluster = Cluster::up().await;
    let spool = tempfile::tempdir().unwrap();
    let gw =
        TestGateway::start_on_broker(&spool_source(spool.path()), &Cluster::urls_key(), true).await;
    let reader = Broker::connect_to(&Cluster::url(1)).await;
    let queue = reader.bind_quorum_queue(&gw.exchange, "#").await;
    let client = gw.client();
    let mut accepted = HashSet::new();
    let (status, id) = send(&client, 60_000).await;
    assert_eq!(status, 200);
    accepted.extend(id);

    let alarm = AlarmGuard(&cluster);
    cluster.set_memory_watermark("0.0000001");
    // The memory monitor raises the alarm on its next check.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in 1..=6 {
        let started = Instant::now();
        let (status, id) = send(&client, 60_000 + n).await;
        let took = started.elapsed();
        assert_eq!(status, 200, "request {n} during the alarm");
        assert!(
            took < Duration::from_secs(1),
            "request {n} during the alarm took {took:?}"
        );
        accepted.extend(id);
    }
    let (_, ready) = gw.admin("GET", "/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("broker blocked publishing (") && reasons.contains("memory"),
        "{reasons}"
    );
    assert!(gw.metric("hookgate_broker_blocked_total").await >= 1.0);
    assert!(gw.metric("hookgate_spooled_total").await >= 1.0);

    drop(alarm);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let arrived = reader.ids_until(&queue, &accepted, deadline).await;
    assert!(
        accepted.is_subset(&arrived),
        "{} of {} events did not arrive after the alarm cleared",
        accepted.difference(&arrived).count(),
        accepted.len()
    );
    let (_, ready) = gw.admin("GET", "/readyz").await;
    assert!(ready.contains("\"ready\""), "{ready}");
    gw.stop().await;
}

/// A CA, and a broker certificate for `localhost` it signed, as PEM files.
struct TestCa {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestCa {
    fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hookgate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("broker.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("broker.key"), key.serialize_pem()).unwrap();
        Self {
            ca_pem: ca.pem(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A single RabbitMQ node with only a TLS listener, started for one test
/// and stopped when dropped.
struct TlsNode {
    name: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsNode {
    fn start(ca: &TestCa) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, dist) = (free(), free());
        let dir = tempfile::tempdir().unwrap();
        let name = format!("hookgate-tls-{port}@localhost");
        let conf = dir.path().join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 log.file.level = warning\n",
                ca = ca.path("ca.pem").display(),
                cert = ca.path("broker.pem").display(),
                key = ca.path("broker.key").display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        // The cluster's home holds the cookie `scripts/cluster ctl` uses.
        let home = std::env::var("HOOKGATE_CLUSTER_DIR").unwrap_or_else(|_| {
            format!(
                "{}/hookgate-cluster",
                std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())
            )
        });
        let status = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .arg("-detached")
            .env("HOME", home)
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                dir.path().join("enabled_plugins"),
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("rabbitmq-server starts");
        assert!(status.success());
        let node = Self {
            name,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while Cluster::ctl(&node.name, &["await_startup"]).is_err() {
            assert!(Instant::now() < deadline, "TLS node did not start in 90 s");
            std::thread::sleep(Duration::from_millis(500));
        }
        node
    }

    fn url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.port)
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = Cluster::ctl(&self.name, &["stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_amqps_events_flow_with_the_right_ca_and_are_spooled_with_the_wrong_one() {
    let _cluster = Cluster::up().await;
    let ca = TestCa::generate();
    let node = tokio::task::block_in_place(|| TlsNode::start(&ca));
    let trusted = format!(
        "urls = [\"{}\"]\nca_file = \"{}\"",
        node.url(),
        ca.path("ca.pem").display()
    );
    let gw = TestGateway::start_on_broker(USAEPAY_SOURCE, &trusted, true).await;
    let reader = Broker::connect_tls(&node.url(), &ca.ca_pem).await;
    let queue = reader.bind_queue(&gw.exchange, "#").await;
    let (status, id) = send(&gw.client(), 70_000).await;
    assert_eq!(status, 200);
    let message = reader
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("the event arrived over amqps");
    assert_eq!(
        message
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        id
    );
    gw.stop().await;

    // Another CA: the broker's certificate does not verify.
    let other = TestCa::generate();
    let spool = tempfile::tempdir().unwrap();
    let untrusted = format!(
        "urls = [\"{}\"]\nca_file = \"{}\"",
        node.url(),
        other.path("ca.pem").display()
    );
    let gw = TestGateway::start_on_broker(&spool_source(spool.path()), &untrusted, false).await;
    let (status, _) = send(&gw.client(), 70_001).await;
    assert_eq!(status, 200, "accepted into the spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reasons = loop {
        let (_, ready) = gw.admin("GET", "/readyz").await;
        if ready.contains("certificate") || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reasons.contains("degraded")
            && reasons.contains(&format!("localhost:{}", node.port))
            && reasons.contains("certificate"),
        "{reasons}"
    );
    assert!(!gw.gateway.as_ref().unwrap().publisher().is_connected());
    assert_eq!(gw.metric("hookgate_spooled_total").await, 1.0);
    assert!(
        reader
            .next(&queue, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing reached the broker through an unverified connection"
    );
    gw.stop().await;
}
