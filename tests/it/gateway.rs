//! The real gateway over TLS with the real broker: what a vendor sees and
//! what a consumer receives.

use std::time::Duration;

use lapin::types::AMQPValue;
use serde_json::Value;

use crate::support::{schema_validator, Broker, TestGateway};

/// docs/vendors.md §5 vector 1: body, key and signature (self-computed from
/// USAePay's documented algorithm).
pub const USAEPAY_BODY: &str = r#"{"type":"event","event_triggered":"2021-04-07 15:14:26","event_type":"transaction.sale.success","event_body":{"merchant":{"merch_key":"7qwnw4j2kmqvrb3"},"object":{"type":"transaction","key":"1nftvzx7xtcggm3","amount_detail":{"amount":"5.00"},"authcode":"538228"}},"event_id":"c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd"}"#;
pub const USAEPAY_SIGNATURE: &str =
    "7d8e06674339e407b817d9ceb283342b0d6d38e730dea28b05232db532f92896";
/// docs/vendors.md §5 vector 3: `webhook-user:webhook-pass`.
pub const BASIC: &str = "Basic d2ViaG9vay11c2VyOndlYmhvb2stcGFzcw==";

/// A USAePay source with both methods; the signing key is the second of two
/// (as during a rotation).
pub const USAEPAY_SOURCE: &str = r#"
[[source]]
id = "usaepay-main"
vendor = "usaepay"
[source.auth]
hmac = { keys = ["previous-signature-key", "example-signature-key"] }
basic = { username = "webhook-user", password = "webhook-pass" }
"#;

pub fn signed_usaepay_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("content-type", "application/json"),
        ("x-signature", USAEPAY_SIGNATURE),
        ("authorization", BASIC),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_usaepay_webhook_becomes_one_confirmed_canonical_event() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "*.payment.#").await;

    let reply = gw
        .client()
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let id = reply.body["id"]
        .as_str()
        .expect("response carries the event id")
        .to_owned();
    assert_eq!(
        reply.body,
        serde_json::json!({ "id": id }),
        "a first delivery's answer is its id alone (no duplicate flag)"
    );

    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("one message published");
    let errors: Vec<String> = schema_validator()
        .iter_errors(&msg.body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:?}\n{}", msg.body);

    // Values from the vendor's example: a $5.00 sale on transaction 1nftvzx7xtcggm3.
    let event = &msg.body;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["type"], "payment.succeeded");
    assert_eq!(event["source"], "/sources/usaepay-main");
    assert_eq!(event["subject"], "1nftvzx7xtcggm3");
    assert_eq!(event["vendor"], "usaepay");
    assert_eq!(event["vendoreventtype"], "transaction.sale.success");
    assert_eq!(
        event["data"]["amount"],
        serde_json::json!({"value": "5.00", "minor": 500, "currency": "USD"})
    );
    assert_eq!(event["data"]["merchant"]["id"], "7qwnw4j2kmqvrb3");
    assert_eq!(event["data"]["occurred_at"], "2021-04-07T15:14:26Z");
    assert_eq!(
        event["data"]["vendor_event_id"],
        "c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd"
    );
    assert_eq!(msg.routing_key, "usaepay-main.payment.succeeded");

    // AMQP properties: persistent, identified, CloudEvents headers.
    let p = &msg.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/cloudevents+json")
    );
    assert_eq!(
        p.kind().as_ref().map(|s| s.as_str()),
        Some("payment.succeeded")
    );
    assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("hookgate"));
    assert!(p.timestamp().is_some());
    let headers = p.headers().as_ref().expect("headers");
    let header = |k: &str| match headers.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).to_string(),
        other => panic!("header {k}: {other:?}"),
    };
    assert_eq!(header("cloudEvents_id"), id);
    assert_eq!(header("cloudEvents_type"), "payment.succeeded");
    assert_eq!(header("cloudEvents_source"), "/sources/usaepay-main");
    assert_eq!(header("cloudEvents_specversion"), "1.0");

    assert!(
        broker
            .next(&queue, Duration::from_millis(300))
            .await
            .is_none(),
        "exactly one message"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_its_tls_session() {
    use rustls::HandshakeKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    // One client config for both connections: it keeps the session the server gave it.
    let client = gw.client();
    for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let mut tls = client.tls_stream().await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected));
        // A whole request and answer, so the client reads the server's session
        // ticket (TLS 1.3 sends it after the handshake).
        tls.write_all(
            b"GET /webhooks/usaepay-main HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 405"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misaddressed_requests_are_refused_and_publish_nothing() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();
    let ct = ("content-type", "application/json");

    let wrong_sig = "0".repeat(64);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "wrong signature",
            vec![ct, ("x-signature", &wrong_sig), ("authorization", BASIC)],
            USAEPAY_BODY.into(),
            401,
        ),
        (
            "missing signature",
            vec![ct, ("authorization", BASIC)],
            USAEPAY_BODY.into(),
            401,
        ),
        (
            "signature over a re-serialized body",
            signed_usaepay_headers(),
            serde_json::to_vec_pretty(&serde_json::from_str::<Value>(USAEPAY_BODY).unwrap())
                .unwrap(),
            401,
        ),
        (
            "wrong Basic password",
            vec![
                ct,
                ("x-signature", USAEPAY_SIGNATURE),
                ("authorization", "Basic d2ViaG9vay11c2VyOndyb25n"),
            ],
            USAEPAY_BODY.into(),
            401,
        ),
        (
            "missing Basic",
            vec![ct, ("x-signature", USAEPAY_SIGNATURE)],
            USAEPAY_BODY.into(),
            401,
        ),
    ];
    for (what, headers, body, status) in cases {
        let reply = client.post("/webhooks/usaepay-main", &headers, body).await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {:?}", reply.body);
        assert!(reply.body["error"].is_string(), "{what}: JSON error body");
        assert!(reply.body.get("id").is_none(), "{what}");
    }
    let reply = client
        .post(
            "/webhooks/usaepay-main",
            &[ct, ("x-signature", USAEPAY_SIGNATURE)],
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(
        reply
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Basic realm=\"hookgate\"")
    );

    // Unknown sources and path tricks: 404 with no detail.
    for path in [
        "/webhooks/nope",
        "/webhooks/USAEPAY-MAIN",
        "/webhooks/usaepay-main/extra",
        "/webhooks/..%2Fusaepay-main",
        "/",
    ] {
        let reply = client
            .post(path, &signed_usaepay_headers(), USAEPAY_BODY)
            .await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(
            reply.body,
            serde_json::json!({"error": "not found"}),
            "{path}"
        );
    }
    let reply = client
        .request(
            "GET",
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            Default::default(),
        )
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers.get("allow").unwrap(), "POST");

    // The broker saw none of it: only the one genuine request lands.
    let reply = client
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200);
    let all = broker.drain(&queue).await;
    assert_eq!(all.len(), 1, "only the authenticated request was published");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_and_retries_share_one_message_id() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "usaepay-main.#").await;
    let client = gw.client();

    // Signed with the *previous* key: still accepted during a rotation.
    let previous =
        crate::support::usaepay_signature("previous-signature-key", USAEPAY_BODY.as_bytes());
    let headers = [("x-signature", previous.as_str()), ("authorization", BASIC)];
    assert_eq!(
        client
            .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
            .await
            .status,
        200
    );
    // The same vendor event again, signed with the current key (a vendor retry).
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

    let messages = broker.drain(&queue).await;
    assert_eq!(
        messages.len(),
        2,
        "a retry is published again: consumers de-duplicate"
    );
    let ids: Vec<_> = messages
        .iter()
        .map(|m| m.properties.message_id().clone())
        .collect();
    assert!(ids[0].is_some());
    assert_eq!(ids[0], ids[1], "both deliveries carry the same message_id");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_cap_get_413_before_being_read() {
    let gw = TestGateway::start_with_server(USAEPAY_SOURCE, "max_body_bytes = 1024").await;
    let big = vec![b' '; 4096];
    let reply = gw
        .client()
        .post("/webhooks/usaepay-main", &signed_usaepay_headers(), big)
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.body["error"], "body too large");
    // The gateway still serves the next legitimate request.
    assert_eq!(
        gw.client()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_body_nobody_understands_is_published_as_unmapped() {
    let gw = TestGateway::start(
        r#"
[[source]]
id = "usaepay-basic"
vendor = "usaepay"
auth = { basic = { username = "webhook-user", password = "webhook-pass" } }
"#,
    )
    .await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "*.unmapped").await;
    let body: &[u8] = b"this is not json \xff";
    let reply = gw
        .client()
        .post("/webhooks/usaepay-basic", &[("authorization", BASIC)], body)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("unmapped event published");
    assert_eq!(msg.routing_key, "usaepay-basic.unmapped");
    assert_eq!(msg.body["type"], "unmapped");
    let unmapped = &msg.body["data"]["unmapped"];
    assert_eq!(unmapped["raw_body_encoding"], "base64");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(unmapped["raw_body"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, body, "the raw body survives byte for byte");
    assert!(unmapped["reason"].as_str().unwrap().contains("JSON"));
    let errors: Vec<String> = schema_validator()
        .iter_errors(&msg.body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_full_card_number_is_published_whatever_field_or_encoding_holds_it() {
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "a mapped field (event_id)",
            USAEPAY_BODY
                .replace(
                    "c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd",
                    "4111111111111111",
                )
                .into_bytes(),
        ),
        (
            "escaped digits in a body that does not map",
            br#"{"event_type": 7, "note": "\u0034111111111111111"}"#.to_vec(),
        ),
        (
            "a numeric card number in a body that does not map",
            br#"{"event_type": 7, "pan": 4012888888881881}"#.to_vec(),
        ),
        ("a body that is not UTF-8", {
            let mut b = b"\xff\xfe pan=5500000000000004 ".to_vec();
            b.push(0x80);
            b
        }),
    ];
    for (what, body) in &bodies {
        let signature = crate::support::usaepay_signature("example-signature-key", body);
        let reply = client
            .post(
                "/webhooks/usaepay-main",
                &[
                    ("x-signature", signature.as_str()),
                    ("authorization", BASIC),
                ],
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
    }
    let published = broker.drain(&queue).await;
    assert_eq!(published.len(), bodies.len());
    for message in published {
        let text = String::from_utf8(message.raw.clone()).unwrap();
        let mut seen = vec![text.clone()];
        // Look inside the raw body too, however it is encoded.
        if let Some(raw) = message
            .body
            .pointer("/data/unmapped/raw_body")
            .and_then(Value::as_str)
        {
            seen.push(raw.to_owned());
            if let Ok(bytes) =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw)
            {
                seen.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            if let Ok(doc) = serde_json::from_str::<Value>(raw) {
                seen.push(doc.to_string());
            }
        }
        for view in seen {
            for pan in ["4111111111111111", "4012888888881881", "5500000000000004"] {
                assert!(!view.contains(pan), "{pan} published: {view}");
            }
        }
        if message.body["type"] == "unmapped" {
            let reason = message.body["data"]["unmapped"]["reason"].as_str().unwrap();
            assert!(
                !reason.contains("4012") && !reason.contains("41111"),
                "{reason}"
            );
        }
    }
    gw.stop().await;
}
