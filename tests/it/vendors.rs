//! Each vendor through the running gateway: its own auth method accepted,
//! a forged attempt refused, and no secret of any kind on the bus.

use std::time::Duration;

use hookgate::vendors::VendorKind;

use crate::fixtures::fixtures;
use crate::gateway::{BASIC, USAEPAY_BODY, USAEPAY_SIGNATURE};
use crate::support::{basic_auth, nexio_signature, unix_now, usaepay_signature};
use crate::support::{Broker, TestGateway};

const STRICTLY_PASSWORD: &str = "strictly-basic-pass-4471";
const NEXIO_TOKEN: &str = "nexio-url-token-0123456789abcdef";
const NEXIO_SECRET: &str = "example-nexio-webhook-secret";
const STICKY_TOKEN: &str = "sticky-url-token-fedcba9876543210";
const USAEPAY_KEY: &str = "example-signature-key";
const GENERIC_TOKEN: &str = "generic-url-token-0a1b2c3d4e5f6a7b";

/// Every secret configured below; none may ever appear in a published message.
const CONFIGURED_SECRETS: [&str; 7] = [
    STRICTLY_PASSWORD,
    GENERIC_TOKEN,
    NEXIO_TOKEN,
    NEXIO_SECRET,
    STICKY_TOKEN,
    USAEPAY_KEY,
    "webhook-pass",
];

fn sources() -> String {
    let map = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generic.map.toml"),
    )
    .unwrap()
    .replace("[types]", "[source.map.types]");
    format!(
        r#"
[[source]]
id = "usaepay-main"
vendor = "usaepay"
[source.auth]
hmac = {{ keys = ["{USAEPAY_KEY}"] }}
basic = {{ username = "webhook-user", password = "webhook-pass" }}

[[source]]
id = "strictly-main"
vendor = "strictly"
auth = {{ basic = {{ username = "strictly", password = "{STRICTLY_PASSWORD}" }} }}

[[source]]
id = "nexio-simple"
vendor = "nexio"
auth = {{ token = "{NEXIO_TOKEN}", ip_allow = ["127.0.0.0/8"] }}

[[source]]
id = "nexio-elsewhere"
vendor = "nexio"
auth = {{ token = "{NEXIO_TOKEN}", ip_allow = ["203.0.113.0/24"] }}

[[source]]
id = "nexio-legacy"
vendor = "nexio"
auth = {{ hmac = {{ keys = ["{NEXIO_SECRET}"], tolerance_secs = 300 }} }}

[[source]]
id = "sticky-main"
vendor = "stickypay"
auth = {{ token = "{STICKY_TOKEN}" }}

[[source]]
id = "generic-main"
vendor = "generic"
auth = {{ token = "{GENERIC_TOKEN}" }}
[source.map]
{map}
"#
    )
}

fn fixture(vendor: VendorKind, name: &str) -> Vec<u8> {
    let path = crate::fixtures::fixture_dir(vendor).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_vendor_is_accepted_its_own_way_and_refused_otherwise() {
    let gw = TestGateway::start(&sources()).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();

    // Strictly: HTTP Basic, the doc's shell-notation body.
    let body = fixture(VendorKind::Strictly, "doc-sale-card.txt");
    let good = basic_auth("strictly", STRICTLY_PASSWORD);
    let bad = basic_auth("strictly", "guess");
    assert_eq!(
        client
            .post(
                "/webhooks/strictly-main",
                &[("authorization", bad.as_str())],
                body.clone()
            )
            .await
            .status,
        401
    );
    assert_eq!(
        client
            .post(
                "/webhooks/strictly-main",
                &[("authorization", good.as_str())],
                body
            )
            .await
            .status,
        200
    );
    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("strictly event");
    assert_eq!(msg.routing_key, "strictly-main.payment.succeeded");

    // Nexio simplified: URL token plus IP allowlist.
    let body = fixture(VendorKind::Nexio, "seed-transaction.json");
    let wrong = format!("/webhooks/nexio-simple/{}", "x".repeat(32));
    assert_eq!(client.post(&wrong, &[], body.clone()).await.status, 401);
    assert_eq!(
        client
            .post("/webhooks/nexio-simple", &[], body.clone())
            .await
            .status,
        404,
        "token source without token"
    );
    let elsewhere = format!("/webhooks/nexio-elsewhere/{NEXIO_TOKEN}");
    assert_eq!(
        client.post(&elsewhere, &[], body.clone()).await.status,
        403,
        "right token, wrong network"
    );
    let right = format!("/webhooks/nexio-simple/{NEXIO_TOKEN}");
    assert_eq!(client.post(&right, &[], body).await.status, 200);
    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("nexio event");
    // transactionStatus 10 = approved, not yet settled.
    assert_eq!(msg.routing_key, "nexio-simple.payment.succeeded");
    assert_eq!(msg.body["data"]["object"]["id"], "211302211");

    // Nexio legacy: signed with a timestamp; a stale one is a replay.
    let body = fixture(VendorKind::Nexio, "legacy-signed-vector.json");
    let stale = nexio_signature(NEXIO_SECRET, &body, unix_now() - 600);
    let reply = client
        .post(
            "/webhooks/nexio-legacy",
            &[("nexio-signature", stale.as_str())],
            body.clone(),
        )
        .await;
    assert_eq!(reply.status, 401);
    let fresh = nexio_signature(NEXIO_SECRET, &body, unix_now());
    let reply = client
        .post(
            "/webhooks/nexio-legacy",
            &[("nexio-signature", fresh.as_str())],
            body,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("nexio legacy event");
    assert_eq!(msg.routing_key, "nexio-legacy.payment.authorized");

    // Sticky: URL token only.
    let body = fixture(VendorKind::Stickypay, "seed-session-cart-pay.json");
    let wrong = format!("/webhooks/sticky-main/{}", "y".repeat(32));
    assert_eq!(client.post(&wrong, &[], body.clone()).await.status, 401);
    let right = format!("/webhooks/sticky-main/{STICKY_TOKEN}");
    assert_eq!(client.post(&right, &[], body).await.status, 200);
    let msg = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("sticky event");
    assert_eq!(msg.routing_key, "sticky-main.payment.succeeded");
    assert_eq!(msg.body["data"]["amount"]["value"], "3.60");
    assert_eq!(msg.body["data"]["amount"]["currency"], "GBP");
    assert!(
        msg.body["data"].get("customer").is_none(),
        "personal data is opt-in"
    );

    // USAePay: signature and Basic.
    let headers = [("x-signature", USAEPAY_SIGNATURE), ("authorization", BASIC)];
    assert_eq!(
        client
            .post("/webhooks/usaepay-main", &headers, USAEPAY_BODY)
            .await
            .status,
        200
    );

    // Nothing from the refused attempts reached the bus.
    let rest = broker.drain(&queue).await;
    assert_eq!(rest.len(), 1, "only the USAePay event is left");
    gw.stop().await;
}

/// Sends a fixture to the source configured for its vendor, authenticated
/// the way that source requires (legacy Nexio bodies go to the signed source).
async fn deliver_fixture(
    client: &crate::support::Client,
    vendor: VendorKind,
    path: &std::path::Path,
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    let legacy = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("legacy"));
    match vendor {
        VendorKind::Usaepay => {
            let sig = usaepay_signature(USAEPAY_KEY, &body);
            let headers = [("x-signature", sig.as_str()), ("authorization", BASIC)];
            client
                .try_post("/webhooks/usaepay-main", &headers, body)
                .await
        }
        VendorKind::Strictly => {
            let auth = basic_auth("strictly", STRICTLY_PASSWORD);
            client
                .try_post(
                    "/webhooks/strictly-main",
                    &[("authorization", auth.as_str())],
                    body,
                )
                .await
        }
        VendorKind::Nexio if legacy => {
            let sig = nexio_signature(NEXIO_SECRET, &body, unix_now());
            client
                .try_post(
                    "/webhooks/nexio-legacy",
                    &[("nexio-signature", sig.as_str())],
                    body,
                )
                .await
        }
        VendorKind::Nexio => {
            client
                .try_post(&format!("/webhooks/nexio-simple/{NEXIO_TOKEN}"), &[], body)
                .await
        }
        VendorKind::Stickypay => {
            client
                .try_post(&format!("/webhooks/sticky-main/{STICKY_TOKEN}"), &[], body)
                .await
        }
        VendorKind::Generic => {
            client
                .try_post(
                    &format!("/webhooks/generic-main/{GENERIC_TOKEN}"),
                    &[],
                    body,
                )
                .await
        }
    }
}

/// The values planted in fixtures that must never be published.
fn planted_secrets() -> Vec<String> {
    let mut out = Vec::new();
    for (vendor, key) in [
        (VendorKind::Strictly, "\"password\""),
        (VendorKind::Stickypay, "\"userPrivateKey\""),
    ] {
        for (path, _) in fixtures(vendor) {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
            let mut rest = text.as_str();
            while let Some(at) = rest.find(key) {
                rest = &rest[at + key.len()..];
                let after_colon = rest.trim_start().trim_start_matches(':').trim_start();
                if let Some(value) = after_colon.strip_prefix('"') {
                    let value = &value[..value.find('"').unwrap()];
                    if value.len() >= 8 {
                        out.push(value.to_owned());
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_published_as_documented_and_without_a_secret() {
    let planted = planted_secrets();
    assert!(
        planted.len() >= 2,
        "fixtures plant a Strictly password and a Sticky private key: {planted:?}"
    );

    let gw = TestGateway::start(&sources()).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "#").await;
    let client = gw.client();

    let mut sent = Vec::new();
    for vendor in VendorKind::ALL {
        for (path, expect) in fixtures(vendor) {
            let body = std::fs::read(&path).unwrap();
            let (status, _) = deliver_fixture(&client, vendor, &path, body).await.unwrap();
            assert_eq!(status, 200, "{}", path.display());
            sent.push((path, expect));
        }
    }

    let messages = broker.drain(&queue).await;
    assert_eq!(
        messages.len(),
        sent.len(),
        "every authenticated fixture was published exactly once"
    );
    // What the running gateway published is what each fixture documents,
    // field by field (fixtures that need per-source options are checked by
    // the mapping test, whose sources can set them).
    let validator = crate::support::schema_validator();
    let mut checked = 0;
    for ((path, expect), msg) in sent.iter().zip(&messages) {
        let published: serde_json::Value = serde_json::from_slice(&msg.raw).unwrap();
        assert!(
            validator.is_valid(&published),
            "{}: published event fails the schema",
            path.display()
        );
        if expect.get("_options").is_some() {
            continue;
        }
        let mut wanted = expect.clone();
        if let Some(obj) = wanted.as_object_mut() {
            obj.retain(|k, _| !k.starts_with('_'));
        }
        // A body without a time of its own is dated by its receipt: the
        // mapping test receives at a fixed instant, the gateway now.
        let fixed_receipt = crate::fixtures::RECEIVED_AT;
        if wanted["data"]["occurred_at"] == fixed_receipt {
            assert_eq!(
                published["data"]["occurred_at"],
                published["data"]["received_at"],
                "{}",
                path.display()
            );
            assert_eq!(
                published["time"],
                published["data"]["received_at"],
                "{}",
                path.display()
            );
            wanted["data"]
                .as_object_mut()
                .unwrap()
                .remove("occurred_at");
        }
        if wanted["time"] == fixed_receipt {
            wanted.as_object_mut().unwrap().remove("time");
        }
        if let Some(mismatch) = crate::support::subset_mismatch(&wanted, &published, "") {
            panic!("{}: {mismatch}\n  published: {published}", path.display());
        }
        assert_eq!(
            msg.routing_key,
            format!(
                "{}.{}",
                published["data"]["source_id"].as_str().unwrap(),
                published["type"].as_str().unwrap()
            )
        );
        checked += 1;
    }
    assert!(
        checked > 60,
        "most fixtures were checked through the gateway ({checked})"
    );
    for msg in &messages {
        let text = String::from_utf8_lossy(&msg.raw);
        for secret in CONFIGURED_SECRETS
            .iter()
            .copied()
            .chain(planted.iter().map(String::as_str))
        {
            assert!(
                !text.contains(secret),
                "`{secret}` published in {}: {text}",
                msg.routing_key
            );
        }
        assert!(
            !text.contains("\"server\""),
            "Strictly's server block published: {text}"
        );
        assert!(
            !text.contains("apiUserCredentials"),
            "Nexio credentials published: {text}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_of_a_run_through_every_fixture_hold_no_secret() {
    use crate::support::{spawn_gateway_process, Client, TestCert};

    let cert = TestCert::generate();
    let (_dir, mut gateway) = spawn_gateway_process(&cert, "", &sources(), "");
    let client = Client::new(gateway.addr, &cert);

    let wrong_token = format!("/webhooks/sticky-main/{}", "z".repeat(32));
    let mut sent = 0;
    for vendor in VendorKind::ALL {
        for (path, _) in fixtures(vendor) {
            let body = std::fs::read(&path).unwrap();
            let result = deliver_fixture(&client, vendor, &path, body).await;
            assert_eq!(result.unwrap().0, 200, "{}", path.display());
            sent += 1;
        }
    }
    // Refusals are logged too: a wrong token, wrong Basic credentials.
    client.try_post(&wrong_token, &[], "{}").await.unwrap();
    let wrong_basic = basic_auth("strictly", "not-the-password");
    client
        .try_post(
            "/webhooks/strictly-main",
            &[("authorization", wrong_basic.as_str())],
            "{}",
        )
        .await
        .unwrap();

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    gateway.child.wait().unwrap();
    let logs = gateway.logs_after_exit().join("\n");
    assert!(
        logs.matches("Request handled.").count() >= sent,
        "every request was logged"
    );

    let personal = ["tim@sticky.to", "John Doe", "Zq8!vR2#kLp0-never-publish"];
    for secret in CONFIGURED_SECRETS
        .iter()
        .chain(personal.iter())
        .copied()
        .chain(planted_secrets().iter().map(String::as_str))
    {
        assert!(!logs.contains(secret), "`{secret}` appears in the logs");
    }
    assert!(
        !logs.contains(&"z".repeat(32)),
        "a URL token (even a wrong one) appears in the logs"
    );
    assert!(
        !logs.contains("/webhooks/"),
        "request paths are never logged"
    );
}

/// Everything the gateway logs while a test runs, in the text format.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_card_number_or_forged_line_reaches_the_log() {
    let capture = LogCapture::default();
    // This test process's only subscriber (nextest runs each test alone):
    // text format, every level hookgate writes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("hookgate=debug")
        .with_ansi(false)
        .with_writer(capture.clone())
        .try_init();
    let gw = TestGateway::start(&sources()).await;
    let client = gw.client();
    // A value where each vendor's parser expects an object, so its error
    // would quote it: a card number, a secret and a line break.
    let value = r#""4111111111111111\r\nFORGED line hunter2-log-secret""#;
    let hostile = |secret_key: &str| {
        format!(
            r#"{{"type": "event", "event_type": "transaction.sale.success", "event_id": "x",
                "eventType": "TRANSACTION_AUTHORIZED", "event_body": {value}, "data": {value},
                "v2": {value}, "{secret_key}": "hunter2-log-secret", "note": "4012888888881881"}}"#
        )
        .into_bytes()
    };
    let mut sent = 0;
    for vendor in VendorKind::ALL {
        let mut bodies: Vec<Vec<u8>> = fixtures(vendor)
            .into_iter()
            .map(|(path, _)| std::fs::read(path).unwrap())
            .collect();
        bodies.push(hostile("userPrivateKey"));
        bodies.push(hostile("apiKey"));
        for body in bodies {
            let (path, headers): (String, Vec<(String, String)>) = match vendor {
                VendorKind::Usaepay => (
                    "/webhooks/usaepay-main".into(),
                    vec![
                        ("x-signature".into(), usaepay_signature(USAEPAY_KEY, &body)),
                        ("authorization".into(), BASIC.into()),
                    ],
                ),
                VendorKind::Strictly => (
                    "/webhooks/strictly-main".into(),
                    vec![(
                        "authorization".into(),
                        basic_auth("strictly", STRICTLY_PASSWORD),
                    )],
                ),
                VendorKind::Nexio => (format!("/webhooks/nexio-simple/{NEXIO_TOKEN}"), vec![]),
                VendorKind::Stickypay => (format!("/webhooks/sticky-main/{STICKY_TOKEN}"), vec![]),
                VendorKind::Generic => (format!("/webhooks/generic-main/{GENERIC_TOKEN}"), vec![]),
            };
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let reply = client.post(&path, &headers, body).await;
            assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
            sent += 1;
        }
    }
    assert!(sent > 20, "{sent} bodies sent");
    gw.stop().await;

    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("Request handled."),
        "the capture saw the gateway's log"
    );
    let fixture_secrets = [
        "private:0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b61",
        "Zq8!vR2#kLp0-never-publish",
        "not-a-real-key-0000",
        "hunter2-log-secret",
        "4111111111111111",
        "4012888888881881",
    ];
    for secret in CONFIGURED_SECRETS.iter().chain(&fixture_secrets) {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    for line in log.lines() {
        assert!(
            !line.starts_with("FORGED"),
            "a body forged a log line: {line}"
        );
    }
}

/// A Standard Webhooks secret (the reference libraries' test key).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_webhooks_sender_is_a_source_defined_in_config() {
    let config = format!(
        r#"
[[source]]
id = "acme"
vendor = "generic"
auth = {{ standard_webhooks = {{ keys = ["whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkhIQ==", "{WHSEC}"] }} }}
[source.map]
id = "header:webhook-id"
type = "/type"
time = "/timestamp"
object_type = "/data/object"
object_id = "/data/id"
amount_minor = "/data/amount"
currency = "/data/currency"
[source.map.types]
"invoice.paid" = "invoice.paid"
"#
    );
    let gw = TestGateway::start(&config).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "acme.#").await;
    let client = gw.client();
    let verifier = hookgate::auth::StandardWebhooks::new(
        &[hookgate::secret::Secret::new(WHSEC)],
        Duration::from_secs(300),
    )
    .unwrap();
    let now = unix_now();
    let send = |prefix: &'static str,
                id: &'static str,
                at: u64,
                body: &'static str,
                signature: Option<String>| {
        let signature = signature.unwrap_or_else(|| verifier.sign(0, id, at, body.as_bytes()));
        let client = &client;
        async move {
            let names = [
                format!("{prefix}-id"),
                format!("{prefix}-timestamp"),
                format!("{prefix}-signature"),
            ];
            let at = at.to_string();
            let headers = [
                (names[0].as_str(), id),
                (names[1].as_str(), at.as_str()),
                (names[2].as_str(), signature.as_str()),
            ];
            let (status, _) = client
                .try_post("/webhooks/acme", &headers, body.as_bytes().to_vec())
                .await
                .unwrap();
            status
        }
    };
    let paid = r#"{"type":"invoice.paid","timestamp":"2024-06-01T12:00:00Z","data":{"object":"invoice","id":"in_42","amount":9900,"currency":"usd"}}"#;
    assert_eq!(send("webhook", "msg_a1", now, paid, None).await, 200);
    let first = broker
        .next(&queue, Duration::from_secs(5))
        .await
        .expect("published");
    assert_eq!(first.routing_key, "acme.invoice.paid");
    let event = &first.body;
    assert_eq!(event["vendor"], "generic");
    assert_eq!(event["subject"], "in_42");
    assert_eq!(event["time"], "2024-06-01T12:00:00Z");
    assert_eq!(event["data"]["vendor_event_id"], "msg_a1", "the webhook-id");
    assert_eq!(event["data"]["object"]["type"], "invoice");
    assert_eq!(event["data"]["amount"]["value"], "99.00");
    assert_eq!(event["data"]["amount"]["currency"], "USD");
    assert!(
        crate::support::schema_validator().is_valid(event),
        "{event}"
    );

    // The sender's retry: same webhook-id (and body), a new timestamp and
    // signature, Svix's header names, several entries of which one is valid.
    let retry_signature = format!(
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}",
        verifier.sign(0, "msg_a1", now + 5, paid.as_bytes())
    );
    assert_eq!(
        send("svix", "msg_a1", now + 5, paid, Some(retry_signature)).await,
        200
    );
    let ids: Vec<String> = std::iter::once(first)
        .chain(broker.drain(&queue).await)
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same webhook-id is the same message id: {ids:?}"
    );

    // A type the map does not list, and a body that is not JSON.
    let other = r#"{"type":"customer.updated","data":{}}"#;
    assert_eq!(send("webhook", "msg_b2", now, other, None).await, 200);
    assert_eq!(
        send("webhook", "msg_c3", now, "not json at all", None).await,
        200
    );
    let published = broker.drain(&queue).await;
    let kinds: Vec<&str> = published.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(kinds, ["acme.unknown", "acme.unmapped"]);
    assert_eq!(published[0].body["vendoreventtype"], "customer.updated");

    // Refused, and nothing published: a wrong signature, a timestamp too old
    // and one too far ahead, a header of v1a entries only.
    let wrong = Some(verifier.sign(0, "msg_d4", now, b"another body"));
    assert_eq!(send("webhook", "msg_d4", now, paid, wrong).await, 401);
    assert_eq!(send("webhook", "msg_e5", now - 330, paid, None).await, 401);
    assert_eq!(send("webhook", "msg_f6", now + 330, paid, None).await, 401);
    let asymmetric = Some("v1a,c29tZSBzaWduYXR1cmU=".to_owned());
    assert_eq!(send("webhook", "msg_g7", now, paid, asymmetric).await, 401);
    assert!(
        broker.drain(&queue).await.is_empty(),
        "nothing refused is published"
    );
    for (reason, count) in [
        ("webhook_signature_mismatch", 1.0),
        ("webhook_timestamp_outside_tolerance", 2.0),
        ("webhook_v1a_unsupported", 1.0),
    ] {
        assert_eq!(
            gw.metric(&format!(
                "hookgate_auth_failures_total{{source=\"acme\",reason=\"{reason}\"}}"
            ))
            .await,
            count,
            "{reason}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_vendor_may_take_standard_webhooks_signatures_and_forgeries_are_counted_apart() {
    let config = format!(
        r#"
[[source]]
id = "sticky-svix"
vendor = "stickypay"
auth = {{ standard_webhooks = {{ keys = ["whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkhIQ==", "{WHSEC}"] }} }}
"#
    );
    let gw = TestGateway::start(&config).await;
    let broker = Broker::connect().await;
    let queue = broker.bind_queue(&gw.exchange, "sticky-svix.#").await;
    let client = gw.client();
    let verifier = hookgate::auth::StandardWebhooks::new(
        &[hookgate::secret::Secret::new(WHSEC)],
        Duration::from_secs(300),
    )
    .unwrap();
    let body = fixture(VendorKind::Stickypay, "seed-session-cart-pay.json");
    let now = unix_now();
    let post = |prefix: &'static str, id: &'static str, at: u64, body: Vec<u8>, signed: Vec<u8>| {
        let signature = verifier.sign(0, id, at, &signed);
        let client = &client;
        async move {
            let (id_h, ts_h, sig_h) = (
                format!("{prefix}-id"),
                format!("{prefix}-timestamp"),
                format!("{prefix}-signature"),
            );
            let at = at.to_string();
            let headers = [
                (id_h.as_str(), id),
                (ts_h.as_str(), at.as_str()),
                (sig_h.as_str(), signature.as_str()),
            ];
            client
                .try_post("/webhooks/sticky-svix", &headers, body)
                .await
                .unwrap()
                .0
        }
    };
    // Signed under the second key, with the spec's headers and with Svix's.
    assert_eq!(
        post("webhook", "msg_1", now, body.clone(), body.clone()).await,
        200
    );
    let refund = fixture(VendorKind::Stickypay, "zapier-refund-second-partial.json");
    assert_eq!(
        post("svix", "msg_2", now, refund.clone(), refund).await,
        200
    );
    let published = broker.drain(&queue).await;
    let keys: Vec<&str> = published.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sticky-svix.payment.succeeded",
            "sticky-svix.refund.succeeded"
        ]
    );

    // Forgeries and replays: refused, nothing published, each reason counted.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        post("webhook", "msg_3", now, tampered, body.clone()).await,
        401
    );
    assert_eq!(
        post("webhook", "msg_4", now - 301, body.clone(), body.clone()).await,
        401
    );
    assert_eq!(
        post("webhook", "msg.5", now, body.clone(), body.clone()).await,
        401
    );
    let unsigned = client
        .try_post("/webhooks/sticky-svix", &[], body.clone())
        .await
        .unwrap()
        .0;
    assert_eq!(unsigned, 401);
    assert!(
        broker.drain(&queue).await.is_empty(),
        "nothing refused is published"
    );
    for reason in [
        "webhook_signature_mismatch",
        "webhook_timestamp_outside_tolerance",
        "webhook_id_invalid",
        "webhook_headers_missing",
    ] {
        assert_eq!(
            gw.metric(&format!(
                "hookgate_auth_failures_total{{source=\"sticky-svix\",reason=\"{reason}\"}}"
            ))
            .await,
            1.0,
            "{reason}"
        );
    }
    gw.stop().await;
}
