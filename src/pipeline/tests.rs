//! `Pipeline::process` through a fake sink: every outcome, and what reached
//! the sink and the stores, without a broker.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::publish::{LinkState, Publishing};

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
