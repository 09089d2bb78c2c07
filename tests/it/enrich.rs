//! Thin Nexio pings filled in from a fake Nexio API (a real HTTP server
//! answering with the fields docs/vendors.md §3.5 documents).

use std::time::Duration;

use crate::fixtures::fixture_dir;
use crate::support::{Broker, FakeVendorApi, TestGateway};
use hookgate::vendors::VendorKind;

const TOKEN: &str = "nexio-url-token-0123456789abcdef";
/// `api-user:api-key-123`
const API_AUTH: &str = "Basic YXBpLXVzZXI6YXBpLWtleS0xMjM=";
const TRANSACTION_PATH: &str = "/transaction/v3/211302211";

/// Documented transaction fields (docs/vendors.md §3.5 legacy `data` and the
/// view-transaction list shape); `cardType` 10 = Visa from the official table.
/// `card.lastFour` is assumed (the by-id response body was never published).
const TRANSACTION: &str = r#"{"id": 211302211, "merchantId": "100039", "transactionDate": "2019-12-23T20:50:23.060Z",
  "transactionStatus": 10, "amount": 1.15, "currency": "USD", "cardType": 10,
  "card": {"lastFour": "1111"}, "apiUserCredentials": {"apiKey": "LEAKED-KEY-999", "userName": "leak@example.com"}}"#;

fn sources(api: &FakeVendorApi, extra: &str) -> String {
    format!(
        r#"
[[source]]
id = "nexio-main"
vendor = "nexio"
auth = {{ token = "{TOKEN}" }}
[source.enrich]
base_url = "{}"
username = "api-user"
api_key = "api-key-123"
timeout_ms = 500
inline_deadline_ms = 300
{extra}
"#,
        api.base_url()
    )
}

fn with_spool(sources: String, dir: &std::path::Path) -> String {
    format!("{sources}\n[spool]\ndir = \"{}\"\n", dir.display())
}

async fn send_ping(gw: &TestGateway) -> serde_json::Value {
    let body = std::fs::read(fixture_dir(VendorKind::Nexio).join("seed-transaction.json")).unwrap();
    let reply = gw
        .client()
        .post(&format!("/webhooks/nexio-main/{TOKEN}"), &[], body)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_ping_is_published_with_the_looked_up_facts() {
    let api = FakeVendorApi::start(API_AUTH).await;
    api.answer(TRANSACTION_PATH, &[(200, TRANSACTION)]);
    let gw = TestGateway::start(&sources(&api, "")).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;

    send_ping(&gw).await;
    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("published");
    let data = &msg.body["data"];
    assert_eq!(data["enrichment"]["status"], "complete");
    assert_eq!(
        data["amount"],
        serde_json::json!({"value": "1.15", "minor": 115, "currency": "USD"})
    );
    assert_eq!(data["payment_method"]["last4"], "1111");
    assert_eq!(data["merchant"]["id"], "100039");
    // The ping's status (10 = approved, not settled) stays the type.
    assert_eq!(msg.body["type"], "payment.succeeded");
    let text = String::from_utf8_lossy(&msg.raw);
    assert!(
        !text.contains("LEAKED-KEY-999") && !text.contains("apiUserCredentials"),
        "{text}"
    );
    assert!(!text.contains("api-key-123"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_appears_after_two_404s_yields_one_complete_event() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeVendorApi::start(API_AUTH).await;
    // Inline attempt: 404; first background retry: 404; then the record exists.
    api.answer(
        TRANSACTION_PATH,
        &[(404, "{}"), (404, "{}"), (200, TRANSACTION)],
    );
    let gw = TestGateway::start(&with_spool(sources(&api, ""), dir.path())).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;

    let reply = send_ping(&gw).await;
    assert!(
        broker
            .next(&queue, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing thin was published"
    );
    let msg = broker
        .next(&queue, Duration::from_secs(15))
        .await
        .expect("enriched in the background");
    assert_eq!(msg.body["id"], reply["id"], "the id the vendor was given");
    assert_eq!(msg.body["data"]["enrichment"]["status"], "complete");
    assert_eq!(msg.body["data"]["enrichment"]["attempts"], 3);
    assert_eq!(msg.body["data"]["amount"]["value"], "1.15");
    assert!(
        broker
            .next(&queue, Duration::from_millis(500))
            .await
            .is_none(),
        "exactly one event"
    );
    assert_eq!(api.hits(TRANSACTION_PATH), 3);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_never_appears_yields_a_thin_failed_event_after_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeVendorApi::start(API_AUTH).await;
    let gw = TestGateway::start(&with_spool(
        sources(&api, "retry_period_secs = 2"),
        dir.path(),
    ))
    .await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;

    let reply = send_ping(&gw).await;
    let msg = broker
        .next(&queue, Duration::from_secs(15))
        .await
        .expect("published thin");
    assert_eq!(msg.body["id"], reply["id"]);
    let enrichment = &msg.body["data"]["enrichment"];
    assert_eq!(enrichment["status"], "failed");
    assert!(
        enrichment["reason"]
            .as_str()
            .unwrap()
            .contains("no usable record after 2 s"),
        "{enrichment}"
    );
    assert!(
        msg.body["data"].get("amount").is_none(),
        "only the ping's facts"
    );
    assert_eq!(msg.body["type"], "payment.succeeded");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_credentials_fail_fast_and_say_so() {
    let api = FakeVendorApi::start("Basic c29tZW9uZS1lbHNlOng=").await;
    api.answer(TRANSACTION_PATH, &[(200, TRANSACTION)]);
    let gw = TestGateway::start(&sources(&api, "")).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    send_ping(&gw).await;
    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("published");
    assert_eq!(msg.body["data"]["enrichment"]["status"], "failed");
    assert!(!String::from_utf8_lossy(&msg.raw).contains("api-key-123"));
    gw.stop().await;
}
