//! Two real gateway processes behind one URL, sharing one real
//! `redis-server` and one RabbitMQ exchange: a vendor's retry is recognised
//! whichever replica it lands on, and Redis going away costs no event.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::gateway::USAEPAY_SOURCE;
use crate::support::{config_text, unique, Broker, Client, GatewayProcess, RedisServer, TestCert};

/// Two gateways on `exchange`, each with its own spool, sharing `redis`.
fn two_replicas(
    cert: &TestCert,
    exchange: &str,
    redis: &RedisServer,
) -> (tempfile::TempDir, GatewayProcess, GatewayProcess) {
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let spool = dir.path().join(name);
        let sources = format!(
            "{USAEPAY_SOURCE}\n[spool]\ndir = \"{}\"\n\n[dedup]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{}:\"\n",
            spool.display(),
            redis.url(),
            unique("test-dedup"),
        );
        let text = config_text(cert, &crate::support::amqp_url(), exchange, "", &sources)
            .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "");
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        GatewayProcess::spawn(&path, true)
    };
    let a = start("a");
    // Both must share the prefix: rewrite b's from a's file.
    let a_text = std::fs::read_to_string(dir.path().join("a.toml")).unwrap();
    let b_spool = dir.path().join("b");
    let b_text = a_text.replace(
        &format!("dir = \"{}\"", dir.path().join("a").display()),
        &format!("dir = \"{}\"", b_spool.display()),
    );
    let b_path = dir.path().join("b.toml");
    std::fs::write(&b_path, b_text).unwrap();
    let b = GatewayProcess::spawn(&b_path, true);
    (dir, a, b)
}

/// Sends event `n` to `client`: status and whether it was answered as a duplicate.
async fn deliver(client: &Client, n: usize) -> (u16, bool, Option<String>) {
    let reply = crate::durability::post_event(client, n).await;
    (
        reply.status.as_u16(),
        reply.body["duplicate"] == true,
        reply.body["id"].as_str().map(str::to_owned),
    )
}

/// Two replicas on one Redis and one exchange, with a queue bound to all of it.
struct Pair {
    redis: RedisServer,
    cert: TestCert,
    broker: Broker,
    queue: String,
    _dir: tempfile::TempDir,
    a: GatewayProcess,
    b: GatewayProcess,
}

async fn pair() -> Pair {
    let redis = RedisServer::start();
    let cert = TestCert::generate();
    let exchange = unique("test-exchange");
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&exchange, "#").await;
    let (_dir, a, b) = two_replicas(&cert, &exchange, &redis);
    Pair {
        redis,
        cert,
        broker,
        queue,
        _dir,
        a,
        b,
    }
}

/// Message ids on `queue` after a short settle time.
async fn published(broker: &Broker, queue: &str) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker
        .drain(queue)
        .await
        .into_iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_lands_on_the_other_replica_is_a_duplicate() {
    let Pair {
        redis: _redis,
        cert,
        broker,
        queue,
        _dir,
        a,
        b,
    } = pair().await;
    let (on_a, on_b) = (Client::new(a.addr, &cert), Client::new(b.addr, &cert));

    let (status, duplicate, first_id) = deliver(&on_a, 80_001).await;
    assert_eq!((status, duplicate), (200, false));
    let (status, duplicate, retry_id) = deliver(&on_b, 80_001).await;
    assert_eq!((status, duplicate), (200, true), "B knows what A accepted");
    assert_eq!(retry_id, first_id);
    // And the other way round, for an event B took first.
    assert!(!deliver(&on_b, 80_002).await.1);
    assert!(deliver(&on_a, 80_002).await.1, "A knows what B accepted");

    let ids = published(&broker, &queue).await;
    assert_eq!(ids.len(), 2, "each event published once: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_at_both_replicas_at_once_is_published_once() {
    let Pair {
        redis: _redis,
        cert,
        broker,
        queue,
        _dir,
        a,
        b,
    } = pair().await;
    let on_a = Arc::new(Client::new(a.addr, &cert));
    let on_b = Arc::new(Client::new(b.addr, &cert));

    let mut both = Vec::new();
    for n in 81_000..81_020 {
        for client in [on_a.clone(), on_b.clone()] {
            both.push(tokio::spawn(async move { (n, deliver(&client, n).await) }));
        }
    }
    let mut kept = HashSet::new();
    for task in both {
        let (n, (status, duplicate, _)) = task.await.unwrap();
        assert_eq!(status, 200, "event {n}: one replica waited for the other");
        if !duplicate {
            assert!(kept.insert(n), "event {n} accepted as new twice");
        }
    }
    assert_eq!(kept.len(), 20, "every event accepted once as new");
    let ids = published(&broker, &queue).await;
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 20, "published exactly once each: {ids:?}");
    assert_eq!(unique_ids.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_events_are_accepted_and_the_window_returns_with_it() {
    let Pair {
        mut redis,
        cert,
        broker,
        queue,
        _dir,
        mut a,
        b,
    } = pair().await;
    let (on_a, on_b) = (Client::new(a.addr, &cert), Client::new(b.addr, &cert));
    assert!(!deliver(&on_a, 82_001).await.1);

    redis.stop();
    for n in 82_100..82_105 {
        let (status, duplicate, _) = deliver(&on_a, n).await;
        assert_eq!(
            (status, duplicate),
            (200, false),
            "fail open: event {n} accepted"
        );
    }
    // Without the shared window a retry on the other replica cannot be
    // recognised: it is published again (consumers de-duplicate on the id).
    let (status, duplicate, _) = deliver(&on_b, 82_100).await;
    assert_eq!((status, duplicate), (200, false));
    let during = published(&broker, &queue).await;
    assert_eq!(during.len(), 1 + 5 + 1, "{during:?}");

    redis.restart();
    // The window works again once the replicas have reconnected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 82_200;
    loop {
        n += 1;
        let _ = deliver(&on_a, n).await;
        if deliver(&on_b, n).await.1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the window did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drop(b);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let logs = a.logs_after_exit();
    let outages = logs
        .iter()
        .filter(|l| l.contains("shared dedup store is unreachable"))
        .count();
    assert_eq!(
        outages, 1,
        "logged once per outage, not per request: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_degraded_while_the_shared_store_is_away() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sources = format!(
        "{USAEPAY_SOURCE}\n[spool]\ndir = \"{}\"\n\n[dedup]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{}:\"\n",
        dir.path().display(),
        redis.url(),
        unique("test-dedup"),
    );
    let gw = crate::support::TestGateway::start(&sources).await;
    let client = gw.client();
    assert_eq!(deliver(&client, 83_001).await.0, 200);
    let (status, body) = gw.admin("GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("dedup"), "{body}");

    redis.stop();
    assert_eq!(deliver(&client, 83_002).await.0, 200, "fail open");
    let (status, body) = gw.admin("GET", "/readyz").await;
    assert_eq!(status, 200, "still ready: events are safe; {body}");
    assert!(
        body.contains("degraded") && body.contains("shared dedup store unreachable"),
        "{body}"
    );
    assert!(gw.metric("hookgate_dedup_backend_errors_total").await >= 1.0);
}
