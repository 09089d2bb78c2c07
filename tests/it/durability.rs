//! Nothing accepted is lost: broker outages, a full spool, restarts and a
//! SIGKILL, with the spool enabled.

use std::collections::HashSet;
use std::time::Duration;

use crate::gateway::{BASIC, USAEPAY_BODY, USAEPAY_SOURCE};
use crate::support::{Broker, Client, TcpProxy, TestGateway};

/// A distinct USAePay event (its own `event_id`) and the headers that sign it.
pub fn usaepay_event(n: usize) -> (Vec<u8>, String) {
    let event_id = format!("{n:064x}");
    let body = USAEPAY_BODY
        .replace(
            "c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd",
            &event_id,
        )
        .into_bytes();
    let signature = crate::support::usaepay_signature("example-signature-key", &body);
    (body, signature)
}

/// Posts USAePay event `n`, signed, and returns the gateway's answer.
pub async fn post_event(client: &Client, n: usize) -> crate::support::Reply {
    let (body, signature) = usaepay_event(n);
    client
        .post(
            "/webhooks/usaepay-main",
            &[
                ("x-signature", signature.as_str()),
                ("authorization", BASIC),
            ],
            body,
        )
        .await
}

pub async fn send(client: &Client, n: usize) -> (u16, Option<String>) {
    let reply = post_event(client, n).await;
    (
        reply.status.as_u16(),
        reply.body["id"].as_str().map(str::to_owned),
    )
}

fn spool_config(dir: &std::path::Path, max_bytes: u64) -> String {
    format!(
        "{USAEPAY_SOURCE}\n[spool]\ndir = \"{}\"\nmax_bytes = {max_bytes}\n",
        dir.display()
    )
}

/// Message ids of everything on `queue`, waiting until `expected` arrived (or 20 s).
async fn collect_ids(broker: &Broker, queue: &str, expected: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ids.len() < expected && tokio::time::Instant::now() < deadline {
        if let Some(msg) = broker.next(queue, Duration::from_millis(500)).await {
            ids.push(msg.properties.message_id().as_ref().unwrap().to_string());
        }
    }
    // Anything extra (a duplicate) would show up now.
    for msg in broker.drain(queue).await {
        ids.push(msg.properties.message_id().as_ref().unwrap().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_sent_during_an_outage_are_accepted_and_all_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let gw = TestGateway::start_with(
        &spool_config(dir.path(), 16 << 20),
        "",
        &proxy.amqp_url(),
        true,
    )
    .await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();

    proxy.cut();
    let mut accepted = HashSet::new();
    for n in 0..25 {
        let (status, id) = send(&client, n).await;
        assert_eq!(
            status, 200,
            "request {n} during the outage is accepted into the spool"
        );
        accepted.insert(id.unwrap());
    }
    assert_eq!(accepted.len(), 25);
    assert!(gw.metric("hookgate_spooled_total").await >= 25.0);
    // Degraded but still ready: with room in the spool, nothing is refused.
    let (status, ready) = gw.admin("GET", "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.contains("\"degraded\"") && ready.contains("events are spooled"),
        "{ready}"
    );

    proxy.restore().await;
    let ids = collect_ids(&broker, &queue, 25).await;
    assert_eq!(ids.len(), 25, "none lost, none twice: {ids:?}");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), accepted);
    // Spooled events are drained oldest first.
    assert_eq!(gw.metric("hookgate_drained_total").await, 25.0);
    assert_eq!(gw.metric("hookgate_spool_events").await, 0.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_loses_nothing_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let gw = TestGateway::start_with(
        &spool_config(dir.path(), 65_536),
        "",
        &proxy.amqp_url(),
        true,
    )
    .await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();

    proxy.cut();
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for n in 0..200 {
        let (body, signature) = usaepay_event(n);
        let reply = client
            .post(
                "/webhooks/usaepay-main",
                &[
                    ("x-signature", signature.as_str()),
                    ("authorization", BASIC),
                ],
                body,
            )
            .await;
        match reply.status.as_u16() {
            200 => {
                accepted.insert(reply.body["id"].as_str().unwrap().to_owned());
            }
            503 => {
                assert_eq!(reply.headers["retry-after"], "5");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        accepted.len() > 10 && refused > 0,
        "{} accepted, {refused} refused",
        accepted.len()
    );
    let (status, ready) = gw.admin("GET", "/readyz").await;
    assert_eq!(status, 503);
    assert!(ready.contains("spool full"), "{ready}");

    proxy.restore().await;
    let ids = collect_ids(&broker, &queue, accepted.len()).await;
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        accepted,
        "every 200 arrived"
    );
    assert_eq!(ids.len(), accepted.len(), "and only once");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_spool_holds_is_drained_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let first = TestGateway::start_with(
        &spool_config(dir.path(), 16 << 20),
        "",
        &proxy.amqp_url(),
        true,
    )
    .await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&first.exchange, "#").await;
    proxy.cut();
    let mut accepted = HashSet::new();
    for n in 0..10 {
        let (status, id) = send(&first.client(), n).await;
        assert_eq!(status, 200);
        accepted.insert(id.unwrap());
    }
    let exchange = first.exchange.clone();
    first.stop().await;
    assert!(
        broker.drain(&queue).await.is_empty(),
        "nothing reached the broker yet"
    );

    // A new process on the same spool, with the broker reachable.
    let second =
        TestGateway::start_on_exchange(&spool_config(dir.path(), 16 << 20), &exchange).await;
    let ids = collect_ids(&broker, &queue, 10).await;
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), accepted);
    assert_eq!(ids.len(), 10);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_answered_200_survives_a_sigkill() {
    use crate::support::{config_text, unique, GatewayProcess, TestCert};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate();
    let exchange = unique("test-exchange");
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&exchange, "#").await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    proxy.cut();

    let sources = spool_config(dir.path(), 64 << 20);
    let write = |amqp: &str| {
        let path = dir.path().join("hookgate.toml");
        let text = config_text(&cert, amqp, &exchange, "", &sources)
            .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "");
        std::fs::write(&path, text).unwrap();
        path
    };

    // First run: the broker is unreachable, so every 200 means "fsynced to the spool".
    let mut first = GatewayProcess::spawn(&write(&proxy.amqp_url()), false);
    let client = Arc::new(Client::new(first.addr, &cert));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for worker in 0..4 {
        let client = client.clone();
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..1_000 {
                let n = worker * 10_000 + i;
                let (body, signature) = usaepay_event(n);
                let headers = [
                    ("x-signature", signature.as_str()),
                    ("authorization", BASIC),
                ];
                let Ok(reply) = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.try_post("/webhooks/usaepay-main", &headers, body),
                )
                .await
                else {
                    return;
                };
                match reply {
                    Ok((200, id)) => accepted.lock().unwrap().push(id),
                    Ok(_) => {}
                    Err(_) => return, // the process is gone
                }
            }
        }));
    }
    // Let a stream of requests run, then kill -9 in the middle of it.
    while accepted.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    for s in senders {
        let _ = s.await;
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(accepted.len() >= 40);
    assert!(
        broker.drain(&queue).await.is_empty(),
        "nothing reached the broker before the crash"
    );

    // Second run on the same spool, broker reachable: everything answered 200 arrives.
    let mut second = GatewayProcess::spawn(&write(&crate::support::amqp_url()), true);
    let ids: HashSet<String> = collect_ids(&broker, &queue, accepted.len())
        .await
        .into_iter()
        .collect();
    let missing: Vec<_> = accepted.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted events lost: {missing:?}",
        missing.len(),
        accepted.len()
    );
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_delivery_is_answered_200_and_not_published_again_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(dir.path(), 16 << 20);
    let first = TestGateway::start(&config).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&first.exchange, "#").await;

    let (status, id) = send(&first.client(), 7).await;
    assert_eq!(status, 200);
    let (body, signature) = usaepay_event(7);
    let retry = first
        .client()
        .post(
            "/webhooks/usaepay-main",
            &[
                ("x-signature", signature.as_str()),
                ("authorization", BASIC),
            ],
            body,
        )
        .await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body["id"].as_str(), id.as_deref(), "the original id");
    assert_eq!(retry.body["duplicate"], true);
    assert_eq!(
        first
            .metric("hookgate_dedup_hits_total{source=\"usaepay-main\"}")
            .await,
        1.0
    );

    let exchange = first.exchange.clone();
    first.stop().await;
    let second = TestGateway::start_on_exchange(&config, &exchange).await;
    let (status, again) = send(&second.client(), 7).await;
    assert_eq!((status, again), (200, id), "remembered across a restart");
    assert_eq!(broker.drain(&queue).await.len(), 1, "published once");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_failed_is_not_mistaken_for_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    // A dedup window but no spool: an unconfirmed event gets 503.
    let config = format!(
        "{USAEPAY_SOURCE}\n[dedup]\ndir = \"{}\"\n",
        dir.path().display()
    );
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let gw = TestGateway::start_with(&config, "", &proxy.amqp_url(), true).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;

    proxy.cut();
    assert_eq!(send(&gw.client(), 9).await.0, 503);
    proxy.restore().await;
    assert!(
        gw.gateway
            .as_ref()
            .unwrap()
            .publisher()
            .wait_connected(Duration::from_secs(15))
            .await
    );
    let (status, _) = send(&gw.client(), 9).await;
    assert_eq!(status, 200);
    let published = broker.drain(&queue).await;
    assert_eq!(
        published.len(),
        1,
        "the vendor's retry after a 503 is published"
    );
    gw.stop().await;
}

/// A gateway process with a spool (its `[spool]` keys plus `spool_extra`)
/// whose broker link runs through `proxy`, on `exchange`.
fn spool_process(
    dir: &std::path::Path,
    cert: &crate::support::TestCert,
    proxy: &TcpProxy,
    exchange: &str,
    spool_extra: &str,
) -> crate::support::GatewayProcess {
    let sources = format!("{}{spool_extra}\n", spool_config(dir, 16 << 20));
    let text = crate::support::config_text(cert, &proxy.amqp_url(), exchange, "", &sources)
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "");
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    crate::support::GatewayProcess::spawn(&path, false)
}

/// Sends SIGTERM and waits (up to `within`) for the process to exit; its status.
async fn terminate(
    gateway: &mut crate::support::GatewayProcess,
    within: Duration,
) -> std::process::ExitStatus {
    let pid = gateway.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running {within:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_publishes_its_spool_before_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let cert = crate::support::TestCert::generate();
    let exchange = crate::support::unique("test-exchange");
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&exchange, "#").await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    proxy.cut();
    let mut gateway = spool_process(
        dir.path(),
        &cert,
        &proxy,
        &exchange,
        "drain_on_stop_ms = 20000",
    );
    let client = Client::new(gateway.addr, &cert);
    let mut accepted = HashSet::new();
    for n in 0..30 {
        let (status, id) = send(&client, 60_000 + n).await;
        assert_eq!(status, 200, "spooled while the broker is away");
        accepted.insert(id.unwrap());
    }

    // The broker comes back and the process is told to stop at once: as a
    // replica removed by a scale-down would be.
    proxy.restore().await;
    let status = terminate(&mut gateway, Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let logs = gateway.logs_after_exit();
    assert!(
        logs.iter()
            .any(|l| l.contains("Spool drained before exit.")),
        "{logs:#?}"
    );

    // No second process: everything is on the queue already.
    let ids: HashSet<String> = collect_ids(&broker, &queue, accepted.len())
        .await
        .into_iter()
        .collect();
    assert_eq!(ids, accepted);
    let left: hookgate::spool::Spool = hookgate::spool::Spool::open(dir.path(), 16 << 20).unwrap();
    assert_eq!(left.stats().events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_that_cannot_drain_in_time_says_what_is_left_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let cert = crate::support::TestCert::generate();
    let exchange = crate::support::unique("test-exchange");
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    proxy.cut();
    let mut gateway = spool_process(
        dir.path(),
        &cert,
        &proxy,
        &exchange,
        "drain_on_stop_ms = 500",
    );
    let client = Client::new(gateway.addr, &cert);
    for n in 0..5 {
        assert_eq!(send(&client, 70_000 + n).await.0, 200);
    }
    let started = std::time::Instant::now();
    let status = terminate(&mut gateway, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let logs = gateway.logs_after_exit();
    let warning = logs
        .iter()
        .find(|l| l.contains("Spool not empty at exit"))
        .unwrap_or_else(|| panic!("{logs:#?}"));
    let entry: serde_json::Value = serde_json::from_str(warning).unwrap();
    assert_eq!(entry["events"], 5, "{warning}");
    assert_eq!(entry["dir"], dir.path().display().to_string(), "{warning}");
    let left: hookgate::spool::Spool = hookgate::spool::Spool::open(dir.path(), 16 << 20).unwrap();
    assert_eq!(
        left.stats().events,
        5,
        "kept for the next process or a replay"
    );
}
