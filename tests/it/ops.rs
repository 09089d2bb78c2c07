//! What operators rely on: quotas, the pre-auth IP guard, live reload,
//! certificate rotation, metrics and readiness.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gateway::{signed_usaepay_headers, USAEPAY_BODY, USAEPAY_SOURCE};
use crate::support::{TcpProxy, TestCert, TestGateway};

/// Two USAePay sources sharing the test signing key; `tight` has a small quota.
fn two_sources(tight_rate: &str) -> String {
    format!(
        "{USAEPAY_SOURCE}\n{}",
        USAEPAY_SOURCE
            .replace("usaepay-main", "usaepay-tight")
            .replace(
                "vendor = \"usaepay\"",
                &format!("vendor = \"usaepay\"\nrate_limit = {tight_rate}")
            )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_quota_gets_429_while_another_is_unaffected() {
    let gw = TestGateway::start(&two_sources("{ per_second = 1, burst = 2 }")).await;
    let client = gw.client();
    let headers = signed_usaepay_headers();

    for _ in 0..2 {
        assert_eq!(
            client
                .post("/webhooks/usaepay-tight", &headers, USAEPAY_BODY)
                .await
                .status,
            200
        );
    }
    let refused = client
        .post("/webhooks/usaepay-tight", &headers, USAEPAY_BODY)
        .await;
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One request per second: the next slot is at most a second away.
    assert_eq!(retry_after, 1);
    assert_eq!(refused.body["error"], "rate limit exceeded");

    for _ in 0..5 {
        assert_eq!(
            client
                .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        gw.metric("hookgate_rate_limited_total{source=\"usaepay-tight\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("hookgate_rate_limited_total{source=\"usaepay-main\"}")
            .await,
        0.0
    );
    assert_eq!(
        gw.metric("hookgate_requests_total{source=\"usaepay-tight\",status=\"429\"}")
            .await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_flood_from_one_address_is_cut_off_before_authentication() {
    let gw = TestGateway::start_with(
        USAEPAY_SOURCE,
        "ip_rate_limit = { per_second = 1, burst = 5 }",
        &crate::support::amqp_url(),
        true,
    )
    .await;
    let attacker = gw.client().connecting_from("127.0.0.2");
    let forged = [
        ("x-signature", "00".repeat(32)),
        ("authorization", crate::gateway::BASIC.to_owned()),
    ];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            attacker
                .post("/webhooks/usaepay-main", &forged, USAEPAY_BODY)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    // Only the five requests inside the burst reached signature checking.
    assert_eq!(
        gw.metric(
            "hookgate_auth_failures_total{source=\"usaepay-main\",reason=\"signature_mismatch\"}"
        )
        .await,
        5.0
    );
    assert_eq!(gw.metric("hookgate_ip_rate_limited_total").await, 15.0);

    let vendor = gw.client().connecting_from("127.0.0.3");
    assert_eq!(
        vendor
            .post(
                "/webhooks/usaepay-main",
                &signed_usaepay_headers(),
                USAEPAY_BODY
            )
            .await
            .status,
        200
    );
    gw.stop().await;
}

/// Sends the head and half the body, returns the stream to finish later.
async fn start_request(gw: &TestGateway) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut stream = gw.client().tls_stream().await.unwrap();
    let mut head = format!(
        "POST /webhooks/usaepay-main HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n",
        USAEPAY_BODY.len()
    );
    for (k, v) in signed_usaepay_headers() {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&USAEPAY_BODY.as_bytes()[..100])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    stream
}

async fn finish_request(mut stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> u16 {
    stream
        .write_all(&USAEPAY_BODY.as_bytes()[100..])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lowers_a_quota_without_dropping_in_flight_requests() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let in_flight = start_request(&gw).await;

    let lowered = USAEPAY_SOURCE.replace(
        "vendor = \"usaepay\"",
        "vendor = \"usaepay\"\nrate_limit = { per_second = 1, burst = 1 }",
    );
    gw.rewrite_config(&lowered, "");
    let (status, body) = gw.admin("POST", "/admin/reload").await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(
        finish_request(in_flight).await,
        200,
        "the request that began before the reload completes"
    );
    // The in-flight request may have been handled under either config (its
    // head raced the reload), so it may have used the new quota's only slot:
    // of two more requests, the second is refused either way, which the old
    // quota (200/s) never would.
    let client = gw.client();
    let headers = signed_usaepay_headers();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let reply = client
            .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
            .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses[1], 429, "{statuses:?}");
    assert_eq!(
        gw.metric("hookgate_reloads_total{outcome=\"ok\"}").await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_and_the_old_config_keeps_serving() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    std::fs::write(&gw.config_path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let (status, body) = gw.admin("POST", "/admin/reload").await;
    assert_eq!(status, 422, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["reloaded"], false);
    let errors = answer["errors"].to_string();
    assert!(
        errors.contains("broker"),
        "the reasons name the missing section: {errors}"
    );

    let reply = gw
        .client()
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        gw.metric("hookgate_reloads_total{outcome=\"rejected\"}")
            .await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_to_new_connections_after_reload() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let rotated = TestCert::generate();
    gw.rewrite_config_with_cert(&rotated, USAEPAY_SOURCE, "");
    let (status, body) = gw.admin("POST", "/admin/reload").await;
    assert_eq!(status, 200, "{body}");

    let new_client = gw.client().trusting(&rotated);
    let reply = new_client
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200);
    let old_client = gw.client();
    assert!(
        old_client.tls_stream().await.is_err(),
        "the old certificate is no longer served"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_readiness_follows_the_broker() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let gw = TestGateway::start_with(USAEPAY_SOURCE, "", &proxy.amqp_url(), true).await;
    let (status, _) = gw.admin("GET", "/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = gw.admin("GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");

    let ok = "hookgate_requests_total{source=\"usaepay-main\",status=\"200\"}";
    let acks = "hookgate_confirms_total{outcome=\"ack\"}";
    assert_eq!(gw.metric(ok).await, 0.0);
    let client = gw.client();
    for _ in 0..3 {
        assert_eq!(
            client
                .post(
                    "/webhooks/usaepay-main",
                    &signed_usaepay_headers(),
                    USAEPAY_BODY
                )
                .await
                .status,
            200
        );
    }
    client
        .post("/webhooks/usaepay-main", &[], USAEPAY_BODY)
        .await;
    assert_eq!(gw.metric(ok).await, 3.0);
    assert_eq!(gw.metric(acks).await, 3.0);
    assert_eq!(
        gw.metric("hookgate_auth_failures_total{source=\"usaepay-main\",reason=\"basic_missing\"}")
            .await,
        1.0
    );
    assert_eq!(gw.metric("hookgate_publish_seconds_count").await, 3.0);
    assert_eq!(gw.metric("hookgate_broker_connected").await, 1.0);

    proxy.cut();
    let mut ready = (hyper::StatusCode::OK, String::new());
    for _ in 0..50 {
        ready = gw.admin("GET", "/readyz").await;
        if ready.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("broker disconnected"), "{}", ready.1);

    proxy.restore().await;
    assert!(
        gw.gateway
            .as_ref()
            .unwrap()
            .publisher()
            .wait_connected(Duration::from_secs(15))
            .await
    );
    let (status, _) = gw.admin("GET", "/readyz").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_metrics_and_reload_but_not_probes() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    // Restart-only settings are read at start; rewrite and start a second gateway.
    gw.stop().await;
    let gw =
        TestGateway::start_with_admin(USAEPAY_SOURCE, "token = \"admin-token-0123456789\"").await;
    assert_eq!(gw.admin("GET", "/healthz").await.0, 200);
    assert_eq!(gw.admin("GET", "/metrics").await.0, 401);
    assert_eq!(gw.admin("POST", "/admin/reload").await.0, 401);
    let (status, text) = gw
        .admin_with_token("GET", "/metrics", "admin-token-0123456789")
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("hookgate_ip_rate_limited_total 0"), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_exist_at_zero_and_stray_requests_are_counted() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let (_, text) = gw.admin("GET", "/metrics").await;
    // An alert on these must see 0 before the first event, not nothing.
    for line in [
        "hookgate_rate_limited_total{source=\"usaepay-main\"} 0",
        "hookgate_pan_masked_total{source=\"usaepay-main\"} 0",
        "hookgate_unmapped_total{source=\"usaepay-main\"} 0",
        "hookgate_dedup_hits_total{source=\"usaepay-main\"} 0",
        "hookgate_enrichment_total{outcome=\"failed\"} 0",
        "hookgate_reloads_total{outcome=\"rejected\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let client = gw.client();
    assert_eq!(client.post("/nowhere", &[], "{}").await.status, 404);
    let get = client
        .request("GET", "/webhooks/usaepay-main", &[], Default::default())
        .await;
    assert_eq!(get.status, 405);
    let (_, text) = gw.admin("GET", "/metrics").await;
    for line in [
        "hookgate_requests_total{source=\"unknown\",status=\"404\"} 1",
        "hookgate_requests_total{source=\"unknown\",status=\"405\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_logs_one_line_saying_what_it_was() {
    use crate::support::{spawn_gateway_process, Client};
    use serde_json::Value;

    let cert = TestCert::generate();
    // A spool keeps the dedup window, so the retry is a duplicate.
    let (_dir, mut gateway) =
        spawn_gateway_process(&cert, "", USAEPAY_SOURCE, "[spool]\ndir = \"{dir}/spool\"");
    let client = Client::new(gateway.addr, &cert);
    let headers = signed_usaepay_headers();
    let first = client
        .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
        .await;
    let again = client
        .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
        .await;
    assert_eq!(
        (first.status.as_u16(), again.status.as_u16()),
        (200, 200),
        "{:?}",
        first.body
    );
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(client.post("/nowhere", &[], "{}").await.status, 404);
    std::process::Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    gateway.child.wait().unwrap();

    let handled: Vec<(String, Value)> = gateway
        .logs_after_exit()
        .into_iter()
        .filter_map(|line| {
            let entry: Value = serde_json::from_str(&line).ok()?;
            (entry["message"] == "Request handled.").then_some((line, entry))
        })
        .collect();
    assert_eq!(handled.len(), 3, "one line per request: {handled:?}");
    let id = first.body["id"].as_str().unwrap();
    assert_eq!(handled[0].1["event_id"], id);
    assert_eq!(handled[0].1["duplicate"], false);
    assert_eq!(handled[0].1["safe"], "confirmed", "{}", handled[0].0);
    assert_eq!(handled[1].1["event_id"], id);
    assert_eq!(handled[1].1["duplicate"], true, "{}", handled[1].0);
    assert_eq!(handled[2].1["source"], "unknown");
    assert_eq!(handled[2].1["status"], 404);
    for (line, _) in &handled {
        // Milliseconds to the microsecond: at most three decimals.
        let value = line
            .split("\"latency_ms\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .unwrap_or_else(|| panic!("no latency_ms: {line}"));
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "latency_ms {value} in {line}");
    }
}
