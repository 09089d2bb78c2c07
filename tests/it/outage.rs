//! Broker outages, simulated with a TCP proxy the test cuts and restores
//! (the broker itself keeps running for the other tests).

use std::time::{Duration, Instant};

use crate::gateway::{signed_usaepay_headers, USAEPAY_BODY, USAEPAY_SOURCE};
use crate::support::{Broker, TcpProxy, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_unreachable_requests_fail_fast_and_recover_without_restart() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let gw = TestGateway::start_with(USAEPAY_SOURCE, "", &proxy.amqp_url(), true).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();
    let headers = signed_usaepay_headers();

    assert_eq!(
        client
            .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
            .await
            .status,
        200
    );

    proxy.cut();
    let started = Instant::now();
    let reply = client
        .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.headers.get("retry-after").unwrap(), "5");
    // The test config's confirm timeout is 2 s; the answer must not wait longer.
    assert!(took < Duration::from_millis(2_500), "503 took {took:?}");

    proxy.restore().await;
    assert!(
        gw.gateway
            .as_ref()
            .unwrap()
            .publisher()
            .wait_connected(Duration::from_secs(15))
            .await,
        "the gateway reconnects by itself"
    );
    assert_eq!(
        client
            .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
            .await
            .status,
        200
    );

    // One before the cut, one after: the refused request published nothing.
    assert_eq!(broker.drain(&queue).await.len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_at_all_requests_get_503_quickly() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("amqp://guest:guest@{closed}/%2f");
    let gw = TestGateway::start_with(USAEPAY_SOURCE, "", &url, false).await;
    let started = Instant::now();
    let reply = gw
        .client()
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    gw.stop().await;
}
