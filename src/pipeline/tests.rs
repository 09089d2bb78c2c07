//! `Pipeline::process` through a fake sink: every outcome, and what reached
//! the sink and the stores, without a broker.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::publish::{LinkState, Publishing};
use crate::spool::SpoolEntry;

/// Records what it is given; refuses everything while `down`.
#[derive(Default)]
struct FakeSink {
    down: AtomicBool,
    /// `(id, routing key)` of every event offered, taken or not.
    offered: Mutex<Vec<(String, String)>>,
}

impl EventSink for FakeSink {
    fn publish<'a>(&'a self, event: &'a Outgoing) -> Publishing<'a> {
        self.offered
            .lock()
            .unwrap()
            .push((event.id.clone(), event.routing_key.clone()));
        let down = self.down.load(Ordering::Acquire);
        Box::pin(async move {
            if down {
                Err(PublishError::Unavailable)
            } else {
                Ok(())
            }
        })
    }

    fn state(&self) -> LinkState {
        if self.down.load(Ordering::Acquire) {
            LinkState::Down(None)
        } else {
            LinkState::Up
        }
    }
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[source]]
id = "usaepay-main"
vendor = "usaepay"
[source.auth]
hmac = { keys = ["pipeline-test-key"] }
basic = { username = "hook", password = "pipeline-test-password" }
"#;

const BODY: &str = r#"{"type":"event","event_triggered":"2021-04-07 15:14:26","event_type":"transaction.sale.success","event_body":{"merchant":{"merch_key":"7qwnw4j2kmqvrb3"},"object":{"type":"transaction","key":"1nftvzx7xtcggm3","amount_detail":{"amount":"5.00"},"authcode":"538228"}},"event_id":"c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd"}"#;

struct Harness {
    pipeline: Pipeline,
    sink: Arc<FakeSink>,
    source: Arc<Source>,
    _dir: tempfile::TempDir,
}

/// A pipeline over [`CONFIG`], with a spool and a dedup window when asked.
fn harness(spool: bool, dedup: bool) -> Harness {
    let settings = crate::config::from_toml_with_env(CONFIG, &|_| None).expect("valid config");
    let source = settings.sources.get("usaepay-main").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores {
        spool: spool.then(|| Spool::open(&dir.path().join("spool"), 1 << 20).unwrap()),
        pending: None,
        dedup: dedup.then(|| {
            DedupWindow::open(&dir.path().join("dedup"), Duration::from_secs(3600), 1000).unwrap()
        }),
        shared_dedup: None,
    };
    let runtime = Runtime::new(settings.sources, settings.server, None, None);
    let sink = Arc::new(FakeSink::default());
    let pipeline = Pipeline::new(runtime, sink.clone(), stores, Arc::new(Metrics::new()));
    Harness {
        pipeline,
        sink,
        source,
        _dir: dir,
    }
}

/// The request USAePay would send, signed with the source's key.
fn signed(source: &Source, body: &str) -> Inbound {
    let methods = source.auth.methods();
    let mut headers = HeaderMap::new();
    let basic = methods.basic.as_ref().unwrap().header_value();
    headers.insert("authorization", basic.parse().unwrap());
    let signature = methods
        .hmac
        .as_ref()
        .unwrap()
        .sign(0, None, body.as_bytes());
    headers.insert("x-signature", signature.parse().unwrap());
    Inbound {
        token: None,
        headers,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        body: Bytes::from(body.to_owned()),
        received_at: SystemTime::now(),
    }
}

impl Harness {
    fn offered(&self) -> Vec<(String, String)> {
        self.sink.offered.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_confirmed_event_is_accepted_as_confirmed() {
    let h = harness(false, false);
    let outcome = h.pipeline.process(&h.source, signed(&h.source, BODY)).await;
    let Outcome::Accepted { event_id, safe } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(safe, Safe::Confirmed);
    assert_eq!(
        h.offered(),
        [(event_id, "usaepay-main.payment.succeeded".to_owned())]
    );
}

#[tokio::test]
async fn an_unconfirmed_event_is_spooled_when_there_is_a_spool() {
    let h = harness(true, false);
    h.sink.down.store(true, Ordering::Release);
    let outcome = h.pipeline.process(&h.source, signed(&h.source, BODY)).await;
    assert!(
        matches!(
            outcome,
            Outcome::Accepted {
                safe: Safe::Spooled,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(h.offered().len(), 1, "the broker was tried first");
    assert_eq!(h.pipeline.spool().unwrap().stats().events, 1);
}

#[tokio::test]
async fn an_unconfirmed_event_without_a_spool_is_not_safe() {
    let h = harness(false, false);
    h.sink.down.store(true, Ordering::Release);
    let outcome = h.pipeline.process(&h.source, signed(&h.source, BODY)).await;
    assert!(
        matches!(
            outcome,
            Outcome::Unavailable {
                error: NotSafe::Publish(PublishError::Unavailable),
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_forged_signature_reaches_neither_the_sink_nor_the_spool() {
    let h = harness(true, false);
    let mut inbound = signed(&h.source, BODY);
    inbound.body = Bytes::from(BODY.replace("5.00", "500.00"));
    let outcome = h.pipeline.process(&h.source, inbound).await;
    assert!(
        matches!(outcome, Outcome::Unauthorized(AuthError::SignatureMismatch)),
        "{outcome:?}"
    );
    assert!(h.offered().is_empty());
    assert_eq!(h.pipeline.spool().unwrap().stats().events, 0);
}

#[tokio::test]
async fn a_repeat_is_a_duplicate_and_is_not_offered_again() {
    let h = harness(true, true);
    let first = h.pipeline.process(&h.source, signed(&h.source, BODY)).await;
    let Outcome::Accepted { event_id, .. } = first else {
        panic!("{first:?}");
    };
    // Remembered once safe; the window's writer commits in the background.
    let dedup = h.pipeline.dedup().unwrap();
    for _ in 0..100 {
        if dedup.seen(&event_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = h.pipeline.process(&h.source, signed(&h.source, BODY)).await;
    let Outcome::Duplicate { event_id: repeat } = again else {
        panic!("{again:?}");
    };
    assert_eq!(repeat, event_id);
    assert_eq!(h.offered().len(), 1);
}

/// A Nexio source whose look-up API refuses every connection (port 1), so
/// every look-up fails as "try again later".
const NEXIO_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[source]]
id = "nexio-main"
vendor = "nexio"
[source.auth]
token = "pipeline-test-token-0123456789abcdef"
[source.enrich]
base_url = "http://127.0.0.1:1"
username = "api-user@example.com"
api_key = "pipeline-test-api-key"
inline_deadline_ms = 200
retry_period_secs = 1
"#;

/// The TRANSACTION ping of seed 002, with a card number in a field no
/// mapping reads.
const PING: &str = r#"{"eventType":"TRANSACTION","transactionStatus":10,"processMethod":10,"transactionId":211302211,"note":"4111 1111 1111 1111"}"#;

fn nexio_harness() -> (Pipeline, Arc<FakeSink>, Arc<Source>, tempfile::TempDir) {
    let settings =
        crate::config::from_toml_with_env(NEXIO_CONFIG, &|_| None).expect("valid config");
    let source = settings.sources.get("nexio-main").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores {
        spool: Some(Spool::open(&dir.path().join("spool"), 1 << 20).unwrap()),
        pending: Some(Spool::open(&dir.path().join("pending"), 1 << 20).unwrap()),
        dedup: None,
        shared_dedup: None,
    };
    let runtime = Runtime::new(settings.sources, settings.server, None, None);
    let sink = Arc::new(FakeSink::default());
    let pipeline = Pipeline::new(runtime, sink.clone(), stores, Arc::new(Metrics::new()));
    (pipeline, sink, source, dir)
}

fn ping() -> Inbound {
    Inbound {
        token: Some("pipeline-test-token-0123456789abcdef".to_owned()),
        headers: HeaderMap::new(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        body: Bytes::from_static(PING.as_bytes()),
        received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

#[tokio::test]
async fn an_unsettled_lookup_keeps_the_mapped_ping_and_finishes_it_once() {
    let (pipeline, sink, source, _dir) = nexio_harness();
    let outcome = pipeline.process(&source, ping()).await;
    let Outcome::Accepted { event_id, safe } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(safe, Safe::AwaitingLookup);
    assert!(
        sink.offered.lock().unwrap().is_empty(),
        "nothing published yet"
    );

    // The pending store holds the mapped ping and its look-up, not an event.
    let pending = pipeline.pending().unwrap();
    let stored = pending.oldest(10).unwrap();
    assert_eq!(stored.len(), 1);
    let Pending::Lookup(kept) = &stored[0].entry else {
        panic!("{:?}", stored[0].entry);
    };
    assert_eq!(kept.source_id, "nexio-main");
    assert_eq!(kept.vendor, VendorKind::Nexio);
    assert_eq!(
        (kept.lookup.kind.as_str(), kept.lookup.id.as_str()),
        ("transaction", "211302211")
    );
    assert_eq!(kept.received_at.unix_timestamp(), 1_700_000_000);
    assert_eq!(kept.mapped.vendor_event_id, "TRANSACTION:211302211:10:10");
    let at_rest = serde_json::to_string(&kept.mapped).unwrap();
    assert!(!at_rest.contains("4111 1111 1111 1111"), "{at_rest}");

    // Too early for a verdict: the API is still down and the period not over.
    let enqueued = stored[0].enqueued_at_ms;
    assert!(pipeline
        .retry_deferred(&stored[0], enqueued)
        .await
        .is_none());

    // Past the retry period: published thin, failed, under the same id.
    let settled = pipeline
        .retry_deferred(&stored[0], enqueued + 1_000)
        .await
        .expect("settled after the retry period");
    assert_eq!(settled.id, event_id);
    assert_eq!(settled.routing_key, "nexio-main.payment.succeeded");
    let event: serde_json::Value = serde_json::from_slice(&settled.body).unwrap();
    assert_eq!(event["data"]["enrichment"]["status"], "failed");
    assert_eq!(event["data"]["enrichment"]["attempts"], 2);
    assert_eq!(event["data"]["received_at"], "2023-11-14T22:13:20Z");
    assert_eq!(event["data"]["object"]["id"], "211302211");
}

#[tokio::test]
async fn pending_entries_round_trip_and_old_thin_events_still_read() {
    let (pipeline, _sink, source, _dir) = nexio_harness();
    pipeline.process(&source, ping()).await;
    let pending = pipeline.pending().unwrap();
    let stored = pending.oldest(1).unwrap().remove(0);
    let mut bytes = Vec::new();
    stored.entry.encode(&mut bytes).unwrap();
    assert_eq!(bytes[0], b'{');
    let Pending::Lookup(back) = Pending::decode(&bytes).unwrap() else {
        panic!("not a look-up");
    };
    let Pending::Lookup(original) = &stored.entry else {
        unreachable!()
    };
    assert_eq!(
        serde_json::to_value(&back.mapped).unwrap(),
        serde_json::to_value(&original.mapped).unwrap()
    );

    // A thin event as an earlier version kept it is published as it is, marked failed.
    let thin = Outgoing {
        id: "00000000-0000-8000-8000-000000000000".into(),
        source: "/sources/nexio-main".into(),
        event_type: "payment.succeeded".into(),
        time: "2023-11-14T22:13:20Z".into(),
        routing_key: "nexio-main.payment.succeeded".into(),
        body: br#"{"id":"00000000-0000-8000-8000-000000000000","data":{"source_id":"nexio-main"}}"#
            .to_vec(),
    };
    let mut old = Vec::new();
    thin.encode(&mut old).unwrap();
    let entry = Pending::decode(&old).unwrap();
    assert!(
        matches!(&entry, Pending::Event(o) if *o == thin),
        "{entry:?}"
    );
    let spooled = crate::spool::Spooled {
        seq: 1,
        entry,
        enqueued_at_ms: 0,
        attempts: 0,
    };
    let out = pipeline.retry_deferred(&spooled, 0).await.unwrap();
    assert_eq!(out.id, thin.id);
    let event: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(event["data"]["enrichment"]["status"], "failed");
    assert!(Pending::decode(b"{not json").is_err());
}
