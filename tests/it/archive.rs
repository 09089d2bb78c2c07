//! The archive stream on the real broker: events published through the
//! gateway (one of them through the spool) are found by canonical id and by
//! vendor event id; a window is replayed, filtered, to another exchange with
//! the original ids; a replay cut by a broker outage says where to resume.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::durability::usaepay_event;
use crate::gateway::{BASIC, USAEPAY_SOURCE};
use crate::support::{unique, Broker, Client, TcpProxy, TestGateway};

/// A second USAePay source, so a replay can filter by source.
const SECOND_SOURCE: &str = r#"
[[source]]
id = "usaepay-second"
vendor = "usaepay"
[source.auth]
hmac = { keys = ["example-signature-key"] }
basic = { username = "webhook-user", password = "webhook-pass" }
"#;

fn sources(stream: &str, spool: &std::path::Path) -> String {
    format!(
        "{USAEPAY_SOURCE}{SECOND_SOURCE}\n[spool]\ndir = \"{}\"\n\n[archive]\nstream = \"{stream}\"\nmax_age = \"1h\"\n",
        spool.display()
    )
}

/// Posts USAePay event `n` to `source`: the canonical id.
async fn post(client: &Client, source: &str, n: usize) -> String {
    let (body, signature) = usaepay_event(n);
    let reply = client
        .post(
            &format!("/webhooks/{source}"),
            &[
                ("x-signature", signature.as_str()),
                ("authorization", BASIC),
            ],
            body,
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn hookgate(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn now() -> String {
    hookgate::canonical::rfc3339(time::OffsetDateTime::now_utc())
}

/// Deletes the test's stream when dropped (streams outlive their readers).
struct StreamGuard(String);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_queue", &self.0, "-p"])
            .arg(
                crate::support::amqp_url()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default(),
            )
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_events_are_found_by_canonical_and_vendor_id_spooled_ones_too() {
    let stream = unique("test-archive");
    let _guard = StreamGuard(stream.clone());
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let gw =
        TestGateway::start_with(&sources(&stream, dir.path()), "", &proxy.amqp_url(), true).await;
    let client = gw.client();
    let confirmed = post(&client, "usaepay-main", 90_001).await;
    proxy.cut();
    let spooled = post(&client, "usaepay-main", 90_002).await;
    proxy.restore().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gw.metric("hookgate_spool_events").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool did not drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let spooled_vendor_id = format!("{:064x}", 90_002);
    let out = hookgate(
        &["archive", "find", &confirmed, &spooled_vendor_id],
        &gw.config_path,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, id) in lines.iter().zip([&confirmed, &spooled]) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert!(
            time::OffsetDateTime::parse(fields[0], &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{line}"
        );
        assert_eq!(fields[1], "usaepay-main.payment.succeeded");
        assert_eq!(fields[2], "payment.succeeded");
        assert_eq!(fields[3], id.as_str());
    }

    let out = hookgate(&["archive", "find", "--json", &spooled], &gw.config_path);
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["data"]["vendor_event_id"], spooled_vendor_id);

    let out = hookgate(&["archive", "find", "no-such-id"], &gw.config_path);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_one_source_is_replayed_to_another_exchange_with_its_original_ids() {
    let stream = unique("test-archive");
    let _guard = StreamGuard(stream.clone());
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&sources(&stream, dir.path())).await;
    let client = gw.client();
    let since =
        hookgate::canonical::rfc3339(time::OffsetDateTime::now_utc() - Duration::from_secs(2));
    let wanted = post(&client, "usaepay-main", 91_001).await;
    let _other_source = post(&client, "usaepay-second", 91_002).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let until = now();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let _too_late = post(&client, "usaepay-main", 91_003).await;

    let broker = Broker::connect().await;
    let target = unique("test-replay");
    let queue = broker.bind_queue(&target, "#").await;
    let window = [
        "archive",
        "replay",
        "--since",
        &since,
        "--until",
        &until,
        "--source",
        "usaepay-main",
        "--type",
        "payment.*",
        "--to-exchange",
        &target,
    ];
    let mut dry = window.to_vec();
    dry.push("--dry-run");
    let out = hookgate(&dry, &gw.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 matched; dry run, nothing published"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        broker.drain(&queue).await.is_empty(),
        "a dry run publishes nothing"
    );

    let out = hookgate(&window, &gw.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 matched, 1 confirmed"
    );
    let replayed = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("the replayed event");
    assert_eq!(
        replayed.properties.message_id().as_ref().unwrap().as_str(),
        wanted
    );
    assert_eq!(*replayed.properties.delivery_mode(), Some(2), "persistent");
    assert!(
        broker.drain(&queue).await.is_empty(),
        "nothing else: other source, outside the window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_by_the_broker_says_where_to_resume_and_resuming_loses_nothing() {
    let stream = unique("test-archive");
    let _guard = StreamGuard(stream.clone());
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&sources(&stream, dir.path())).await;
    let client = gw.client();
    let since =
        hookgate::canonical::rfc3339(time::OffsetDateTime::now_utc() - Duration::from_secs(2));
    let mut sent = HashSet::new();
    for n in 0..400 {
        sent.insert(post(&client, "usaepay-main", 92_000 + n).await);
    }
    let broker = Broker::connect().await;
    let target = unique("test-replay");
    let queue = broker.bind_queue(&target, "#").await;

    // The replay reads and publishes through a proxy the test cuts once it
    // starts publishing.
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let config = dir.path().join("replay.toml");
    let text = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace(&crate::support::amqp_url(), &proxy.amqp_url());
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "archive",
            "replay",
            "--since",
            &since,
            "--to-exchange",
            &target,
            "--config",
        ])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let publishing = line.contains("publishing to");
        said.push(line);
        if publishing {
            proxy.cut();
            break;
        }
    }
    said.extend(stderr.map_while(Result::ok));
    let status = child.wait().unwrap();
    assert!(!status.success(), "a cut replay exits non-zero: {said:#?}");
    let stop = said
        .iter()
        .find(|l| l.contains("resume with --since"))
        .unwrap_or_else(|| panic!("{said:#?}"));
    let resume = stop.rsplit("--since ").next().unwrap().trim().to_owned();

    proxy.restore().await;
    let out = hookgate(
        &[
            "archive",
            "replay",
            "--since",
            &resume,
            "--to-exchange",
            &target,
        ],
        &config,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut arrived = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while arrived.len() < sent.len() && tokio::time::Instant::now() < deadline {
        for m in broker.drain(&queue).await {
            arrived.insert(m.properties.message_id().as_ref().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<_> = sent.difference(&arrived).collect();
    assert!(
        missing.is_empty(),
        "{} of {} lost: {stop}",
        missing.len(),
        sent.len()
    );
}
