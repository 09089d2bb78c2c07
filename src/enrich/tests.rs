//! The look-up service against a real (fake) vendor API on 127.0.0.1, with
//! Nexio's records applied through the `Vendor` trait as the pipeline does.
//!
//! Record bodies are built from the fields docs/vendors.md §3.5 documents; each
//! fixture marks which fields are documented and which are ASSUMED.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::MAX_BODY_BYTES;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use super::*;
use crate::canonical::{Event, Facts, Mapped, ObjectRef, Status};
use crate::secret::Secret;
use crate::vendors::{Lookup, VendorKind};

const USER: &str = "api-user@example.com";
const KEY: &str = "test-api-key";
/// The kinds of object Nexio looks up, with their default paths.
const NEXIO: &[crate::vendors::LookupPath] = crate::vendors::nexio::lookup::LOOKUP_PATHS;
/// `base64("api-user@example.com:test-api-key")`, computed independently
/// (`printf %s 'api-user@example.com:test-api-key' | base64`).
const EXPECTED_AUTH: &str = "Basic YXBpLXVzZXJAZXhhbXBsZS5jb206dGVzdC1hcGkta2V5";

/// A transaction record as the transaction service might return it.
/// Documented (docs/vendors.md §3.5, legacy `data` example and the 3P list model):
/// `id`, `merchantId`, `transactionDate`, `amount`, `currency`, `authCode`,
/// `transactionType`, `data.{amount,currency,settlementCurrency,customer}`,
/// numeric `transactionStatus`. ASSUMED: `cardType` at the top level (the code
/// table is official, its location is not), `card.{cardHolder,lastFour}`,
/// `processMethod`.
const TRANSACTION: &str = r#"{
  "id": 211302211,
  "merchantId": "100039",
  "transactionDate": "2019-12-23T20:50:23.060Z",
  "authCode": "458399",
  "transactionStatus": 10,
  "amount": 1.15,
  "transactionType": "sale",
  "currency": "USD",
  "processMethod": 10,
  "cardType": 10,
  "card": {"cardHolder": "Pat Payer", "lastFour": "1111", "expirationMonth": "12"},
  "data": {"amount": 1.15, "currency": "USD", "settlementCurrency": "USD",
           "customer": {"firstName": "Pat", "lastName": "Payer", "email": "pat@example.com"}}
}"#;

/// An onboarding application. Documented (docs/vendors.md §3.5, "View application
/// by onboarding ID" response parameters): every field below, including the
/// `apiUserCredentials.{apiKey,userName,merchantIds,accountId}` secret.
const ONBOARDING: &str = r#"{
  "merchantName": "Example Shop",
  "merchantId": "100077",
  "status": "Underwriting Signed",
  "signer": "Sam Signer",
  "phoneNumber": "+1 555 0100",
  "agentName": "Agent A",
  "repCode": "123Z",
  "agentId": "a-1",
  "onboardingId": "16c3d4c3673f3b5193e56a651df0d3e4",
  "credsReady": true,
  "pendingItemsUpdatedAt": null,
  "pendingNotes": [{"dateAdded": "2024-01-02T03:04:05Z", "note": "send ID"}],
  "apiUserCredentials": {"apiKey": "LEAKED-API-KEY", "userName": "leaked-user@example.com",
                         "merchantIds": ["100077"], "accountId": "acc-9"}
}"#;

/// A spendback. Documented (docs/vendors.md §3.5): every field below.
const SPENDBACK: &str = r#"{
  "id": 2437652, "spendbackRef": "dfbb8efc-6e85-4973-8f2e-69baf8624ae6", "recipientId": 5,
  "recipientRef": "r-5", "payoutAccountId": 9, "providerId": 1, "providerType": "interchecks",
  "providerSpendbackRef": "p-1", "amount": 25.50, "currency": "USD", "description": "refund",
  "spendbackDate": "2024-03-01T10:00:00Z", "spendbackStatus": 20, "providerResponse": null,
  "createdAt": "2024-03-01T09:59:00Z", "updatedAt": "2024-03-01T10:00:01Z"
}"#;

/// What the fake API answers for one request.
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(body: &str) -> Self {
        Self::status(200, body)
    }

    fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Route = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// A fake Nexio API: checks Basic auth (401 otherwise), counts requests
/// (including refused ones), and answers by path and request number.
struct FakeApi {
    base_url: String,
    hits: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeApi {
    async fn start(route: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let (h, p) = (hits.clone(), paths.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (route, hits, paths) = (route.clone(), h.clone(), p.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (route, hits, paths) = (route.clone(), hits.clone(), paths.clone());
                        async move {
                            let n = hits.fetch_add(1, Ordering::SeqCst);
                            let path = req.uri().path().to_owned();
                            paths.lock().unwrap().push(path.clone());
                            let authorized = req
                                .headers()
                                .get(hyper::header::AUTHORIZATION)
                                .is_some_and(|v| v == EXPECTED_AUTH);
                            let reply = if authorized {
                                route(&path, n)
                            } else {
                                Reply::status(401, r#"{"error":401,"message":"Unauthorized"}"#)
                            };
                            tokio::time::sleep(reply.delay).await;
                            let mut response = Response::new(Full::new(Bytes::from(reply.body)));
                            *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            base_url,
            hits,
            paths,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn api(&self) -> LookupApi {
        let mut api = LookupApi::new(
            &self.base_url,
            USER,
            Secret::new(KEY),
            VendorKind::Nexio.vendor().lookup_paths(),
        );
        api.timeout = Duration::from_millis(500);
        api
    }

    fn enricher(&self) -> Enricher {
        Enricher::new(self.api(), Duration::from_secs(60), 100)
    }
}

fn lookup(kind: &str, id: &str) -> Lookup {
    Lookup {
        kind: kind.to_owned(),
        id: id.to_owned(),
    }
}

/// What Nexio's mapping asks to look up for `mapped`.
fn wanted_for(mapped: &Mapped) -> Option<Lookup> {
    VendorKind::Nexio.vendor().lookup(mapped)
}

/// Applies a record as the pipeline does, through the vendor.
fn apply(mapped: &mut Mapped, lookup: &Lookup, found: &Value) -> Result<(), String> {
    VendorKind::Nexio.vendor().apply_lookup(
        mapped,
        lookup,
        found,
        &crate::vendors::MapOptions::default(),
    )
}

/// The mapped TRANSACTION ping of docs/vendors.md §3.3, as the Nexio mapping makes it.
fn transaction_ping() -> Mapped {
    Mapped {
        event_type: "payment.succeeded".into(),
        vendor_event_type: "TRANSACTION".into(),
        vendor_event_id: "TRANSACTION:211302211:10:10".into(),
        occurred_at: None,
        facts: Facts {
            object: Some(ObjectRef {
                kind: "transaction".into(),
                id: "211302211".into(),
            }),
            status: Some(Status {
                field: "transactionStatus".into(),
                code: Some(10),
                name: "pending".into(),
            }),
            vendor_data: json!({"eventType": "TRANSACTION", "transactionStatus": 10,
                                "processMethod": 10, "transactionId": 211302211}),
            ..Facts::default()
        },
    }
}

#[tokio::test]
async fn a_transaction_lookup_fills_amount_card_merchant_and_time() {
    let api = FakeApi::start(|path, _| match path {
        "/transaction/v3/211302211" => Reply::ok(TRANSACTION),
        _ => Reply::status(404, ""),
    })
    .await;
    let enricher = api.enricher();
    let mut mapped = transaction_ping();
    let wanted = wanted_for(&mapped).expect("a thin ping needs a look-up");
    assert_eq!(wanted, lookup("transaction", "211302211"));

    let found = enricher.lookup(&wanted).await.unwrap();
    assert_eq!(found["id"], 211302211);
    assert_eq!(found["amount"], "1.15", "decimals keep their literal text");
    apply(&mut mapped, &wanted, &found).unwrap();

    let facts = &mapped.facts;
    let amount = facts.amount.as_ref().unwrap();
    assert_eq!(
        (
            amount.value.as_str(),
            amount.minor,
            amount.currency.as_str()
        ),
        ("1.15", 115, "USD")
    );
    let card = facts.payment_method.as_ref().unwrap();
    assert_eq!(
        (
            card.kind.as_str(),
            card.brand.as_deref(),
            card.last4.as_deref()
        ),
        ("card", Some("visa"), Some("1111"))
    );
    assert_eq!(facts.merchant.as_ref().unwrap().id, "100039");
    assert_eq!(facts.status.as_ref().unwrap().code, Some(10));
    let event = Event::from_mapped(
        VendorKind::Nexio,
        "nexio-main",
        mapped,
        time::OffsetDateTime::now_utc(),
    );
    assert_eq!(event.data.occurred_at, "2019-12-23T20:50:23.06Z");
    assert_eq!(event.time, event.data.occurred_at);
    let data = serde_json::to_value(&event.data).unwrap();
    assert_eq!(
        data["vendor_data"]["transactionId"], 211302211,
        "the ping stays"
    );
    assert_eq!(data["vendor_data"]["lookup"]["authCode"], "458399");
    let text = data.to_string();
    for personal in ["Pat Payer", "pat@example.com"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    assert_eq!(
        api.paths.lock().unwrap().as_slice(),
        ["/transaction/v3/211302211"]
    );
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_wrong_key_is_a_permanent_failure() {
    let api = FakeApi::start(|_, _| Reply::ok(SPENDBACK)).await;
    assert!(api
        .enricher()
        .lookup(&lookup("spendback", "2437652"))
        .await
        .is_ok());
    assert_eq!(api.paths.lock().unwrap()[0], "/payout/v3/spendback/2437652");

    let mut wrong = api.api();
    wrong.api_key = Secret::new("wrong-key");
    let error = Enricher::new(wrong, Duration::from_secs(60), 10)
        .lookup(&lookup("spendback", "2437652"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LookupError::Permanent(m) if m.contains("401")),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("wrong-key"));
}

#[tokio::test]
async fn statuses_are_classified_by_what_retrying_can_do() {
    let api = FakeApi::start(|path, _| match path {
        "/transaction/v3/missing" => Reply::status(404, r#"{"message":"not found"}"#),
        "/transaction/v3/broken" => Reply::status(500, "oops"),
        "/transaction/v3/busy" => Reply::status(429, ""),
        "/transaction/v3/forbidden" => Reply::status(403, r#"{"message":"no access"}"#),
        "/transaction/v3/garbage" => Reply::ok("<html>"),
        "/transaction/v3/huge" => Reply::ok(&format!("[{}0]", "0,".repeat(MAX_BODY_BYTES))),
        _ => Reply::ok("{}"),
    })
    .await;
    let enricher = api.enricher();
    let get = |id: &'static str| {
        let enricher = enricher.clone();
        async move { enricher.lookup(&lookup("transaction", id)).await }
    };
    assert_eq!(get("missing").await, Err(LookupError::NotFound));
    assert!(matches!(get("broken").await, Err(LookupError::Transient(m)) if m.contains("500")));
    assert!(matches!(get("busy").await, Err(LookupError::Transient(m)) if m.contains("429")));
    assert!(
        matches!(get("forbidden").await, Err(LookupError::Permanent(m)) if m.contains("403") && m.contains("no access"))
    );
    assert!(
        matches!(get("garbage").await, Err(LookupError::Permanent(m)) if m.contains("not JSON"))
    );
    assert!(matches!(get("huge").await, Err(LookupError::Permanent(m)) if m.contains("larger")));
    // Failures are not cached: the object may appear any second.
    let before = api.hits();
    assert_eq!(get("missing").await, Err(LookupError::NotFound));
    assert_eq!(api.hits(), before + 1);
}

#[tokio::test]
async fn a_server_that_never_answers_is_transient_after_the_timeout() {
    let api = FakeApi::start(|_, _| Reply::ok("{}").after(Duration::from_secs(60))).await;
    let mut settings = api.api();
    settings.timeout = Duration::from_millis(200);
    let enricher = Enricher::new(settings, Duration::from_secs(60), 10);
    let started = Instant::now();
    let error = enricher.lookup(&lookup("payout", "1")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&error, LookupError::Transient(m) if m.contains("200 ms")),
        "{error:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let enricher = Enricher::new(
        LookupApi::new(base, USER, Secret::new(KEY), NEXIO),
        Duration::from_secs(60),
        10,
    );
    let error = enricher.lookup(&lookup("payout", "1")).await.unwrap_err();
    assert!(
        matches!(&error, LookupError::Transient(m) if m.contains("connect")),
        "{error:?}"
    );
}

#[tokio::test]
async fn invalid_settings_fail_every_lookup_permanently() {
    let enricher = Enricher::new(
        LookupApi::new("ftp://nexio", USER, Secret::new(KEY), NEXIO),
        Duration::from_secs(60),
        10,
    );
    let error = enricher.lookup(&lookup("payout", "1")).await.unwrap_err();
    assert!(
        matches!(&error, LookupError::Permanent(m) if m.contains("base_url")),
        "{error:?}"
    );
}

#[tokio::test]
async fn concurrent_lookups_of_one_object_share_one_request_and_then_the_cache() {
    let api = FakeApi::start(|_, _| Reply::ok(TRANSACTION).after(Duration::from_millis(300))).await;
    let enricher = api.enricher();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let enricher = enricher.clone();
            tokio::spawn(async move { enricher.lookup(&lookup("transaction", "211302211")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap()["merchantId"], "100039");
    }
    assert_eq!(api.hits(), 1, "ten concurrent look-ups, one HTTP request");

    enricher
        .lookup(&lookup("transaction", "211302211"))
        .await
        .unwrap();
    assert_eq!(
        api.hits(),
        1,
        "the second look-up is answered from the cache"
    );

    // A different kind with the same id is a different object.
    enricher
        .lookup(&lookup("payout", "211302211"))
        .await
        .unwrap();
    assert_eq!(api.hits(), 2);
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_cancel_the_call_and_its_answer_is_cached() {
    let api = FakeApi::start(|_, _| Reply::ok(TRANSACTION).after(Duration::from_millis(200))).await;
    let enricher = api.enricher();
    let wanted = lookup("transaction", "211302211");
    let inline = tokio::time::timeout(Duration::from_millis(50), enricher.lookup(&wanted)).await;
    assert!(inline.is_err(), "the inline deadline passes first");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(enricher.lookup(&wanted).await.is_ok());
    assert_eq!(api.hits(), 1);
}

#[tokio::test]
async fn concurrency_is_bounded_per_source() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = arrived.clone();
    let api = FakeApi::start(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Reply::ok("{}").after(Duration::from_millis(400))
    })
    .await;
    let mut settings = api.api();
    settings.max_concurrency = 2;
    let enricher = Enricher::new(settings, Duration::from_secs(60), 100);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let enricher = enricher.clone();
            tokio::spawn(async move {
                enricher
                    .lookup(&lookup("transaction", &i.to_string()))
                    .await
            })
        })
        .collect();
    // Each answer takes 400 ms: within the first 200 ms only the calls
    // holding the two permits can have reached the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(arrived.load(Ordering::SeqCst), 2, "only two calls at once");
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(api.hits(), 6, "the others ran once permits were free");
}

#[tokio::test]
async fn onboarding_credentials_never_reach_the_event() {
    let api = FakeApi::start(|path, _| match path {
        "/partner/v3/onboarding/16c3d4c3673f3b5193e56a651df0d3e4" => Reply::ok(ONBOARDING),
        _ => Reply::status(404, ""),
    })
    .await;
    let enricher = api.enricher();
    let mut mapped = Mapped {
        event_type: "merchant_onboarding.updated".into(),
        vendor_event_type: "PROCESSOR_ONBOARDING".into(),
        vendor_event_id: "PROCESSOR_ONBOARDING:16c3d4c3673f3b5193e56a651df0d3e4:x".into(),
        occurred_at: None,
        facts: Facts {
            object: Some(ObjectRef {
                kind: "merchant_application".into(),
                id: "16c3d4c3673f3b5193e56a651df0d3e4".into(),
            }),
            vendor_data: json!({"eventType": "PROCESSOR_ONBOARDING", "applicationStatus": "App Created",
                                "onboardingId": "16c3d4c3673f3b5193e56a651df0d3e4"}),
            ..Facts::default()
        },
    };
    let wanted = wanted_for(&mapped).unwrap();
    let found = enricher.lookup(&wanted).await.unwrap();
    apply(&mut mapped, &wanted, &found).unwrap();
    let event = Event::from_mapped(
        VendorKind::Nexio,
        "nexio-onboarding",
        mapped,
        time::OffsetDateTime::now_utc(),
    );
    let text = serde_json::to_string(&event).unwrap();
    for secret in [
        "apiUserCredentials",
        "LEAKED-API-KEY",
        "leaked-user@example.com",
        "acc-9",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    for personal in ["Sam Signer", "555 0100"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    assert_eq!(event.data.facts.merchant.as_ref().unwrap().id, "100077");
    assert_eq!(
        event.data.facts.status.as_ref().unwrap().name,
        "Underwriting Signed"
    );
    assert_eq!(
        event.data.facts.vendor_data["lookup"]["merchantName"],
        "Example Shop"
    );
}

#[tokio::test]
async fn spendbacks_fill_amount_and_date() {
    let api = FakeApi::start(|_, _| Reply::ok(SPENDBACK)).await;
    let found = api
        .enricher()
        .lookup(&lookup("spendback", "2437652"))
        .await
        .unwrap();
    let mut mapped = Mapped {
        event_type: "spendback.completed".into(),
        vendor_event_type: "SPENDBACK".into(),
        vendor_event_id: "SPENDBACK:2437652:20".into(),
        facts: Facts {
            vendor_data: json!({"eventType": "SPENDBACK"}),
            ..Facts::default()
        },
        ..Mapped::default()
    };
    apply(&mut mapped, &lookup("spendback", "1"), &found).unwrap();
    let amount = mapped.facts.amount.unwrap();
    assert_eq!((amount.value.as_str(), amount.minor), ("25.50", 2550));
    assert_eq!(
        crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
        "2024-03-01T10:00:00Z"
    );
}

#[tokio::test]
async fn background_retries_ride_out_the_vendors_lag() {
    // 404 twice (not visible yet), then the record.
    let api = FakeApi::start(|_, n| {
        if n < 2 {
            Reply::status(404, "")
        } else {
            Reply::ok(TRANSACTION)
        }
    })
    .await;
    let enricher = api.enricher();
    let wanted = lookup("transaction", "211302211");
    let quick = |_: u32| Duration::from_millis(20);
    let found = enricher
        .retry_with(&wanted, Duration::from_secs(5), quick)
        .await
        .unwrap();
    assert_eq!(found["id"], 211302211);
    assert_eq!(api.hits(), 3);

    // Permanent failures stop at once; a period that runs out returns the last error.
    let refusing = FakeApi::start(|_, _| Reply::status(403, "")).await;
    let result = refusing
        .enricher()
        .retry_with(&wanted, Duration::from_secs(5), quick)
        .await;
    assert!(matches!(result, Err(LookupError::Permanent(_))));
    assert_eq!(refusing.hits(), 1);
    let missing = FakeApi::start(|_, _| Reply::status(404, "")).await;
    let result = missing
        .enricher()
        .retry_with(&wanted, Duration::from_millis(100), quick)
        .await;
    assert_eq!(result, Err(LookupError::NotFound));
    assert!((1..=7).contains(&missing.hits()), "{}", missing.hits());
}

#[test]
fn the_retry_schedule_doubles_from_one_second_up_to_thirty() {
    let secs: Vec<u64> = (0..8).map(|a| next_delay(a).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(next_delay(63), Duration::from_secs(30));
    assert_eq!(next_delay(64), Duration::from_secs(30));
    assert_eq!(next_delay(u32::MAX), Duration::from_secs(30));
    // Over the default period that is 5 ramp-up attempts, then one every 30 s.
    let mut total = Duration::ZERO;
    let mut attempts = 0;
    while total + next_delay(attempts) <= RETRY_PERIOD {
        total += next_delay(attempts);
        attempts += 1;
    }
    assert_eq!(attempts, 5 + (600 - 31) / 30);
}

#[tokio::test]
async fn https_works_with_the_configured_roots_and_fails_with_the_public_ones() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let ok = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .is_some_and(|v| v == EXPECTED_AUTH);
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(SPENDBACK.as_bytes())));
                    if !ok {
                        *response.status_mut() = StatusCode::UNAUTHORIZED;
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let mut settings = LookupApi::new(
        format!("https://localhost:{port}"),
        USER,
        Secret::new(KEY),
        NEXIO,
    );
    settings.timeout = Duration::from_secs(2);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let trusting = Enricher::with_client(
        client::HttpClient::with_roots(&settings, roots),
        &settings,
        Duration::from_secs(60),
        10,
    );
    let found = trusting
        .lookup(&lookup("spendback", "2437652"))
        .await
        .unwrap();
    assert_eq!(found["amount"], "25.50");

    let public = Enricher::new(settings, Duration::from_secs(60), 10);
    let error = public
        .lookup(&lookup("spendback", "2437652"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LookupError::Transient(m) if m.contains("TLS")),
        "{error:?}"
    );
}

#[tokio::test]
async fn records_are_reused_for_the_ttl_only_and_failures_never() {
    let api = FakeApi::start(|path, n| match path {
        "/payout/v3/1" if n == 2 => Reply::status(404, ""),
        _ => Reply::ok(TRANSACTION),
    })
    .await;
    let enricher = Enricher::new(api.api(), Duration::from_millis(300), 100);
    let wanted = lookup("transaction", "211302211");
    enricher.lookup(&wanted).await.unwrap();
    enricher.lookup(&wanted).await.unwrap();
    assert_eq!(api.hits(), 1, "reused within the TTL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    enricher.lookup(&wanted).await.unwrap();
    assert_eq!(api.hits(), 2, "asked again once the TTL ran out");

    let missing = lookup("payout", "1");
    assert_eq!(enricher.lookup(&missing).await, Err(LookupError::NotFound));
    assert!(
        enricher.lookup(&missing).await.is_ok(),
        "a 404 is not cached"
    );
    assert_eq!(api.hits(), 4);
}

#[tokio::test]
async fn sequential_lookups_reuse_one_pooled_connection() {
    let connections = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let enricher = Enricher::new(
        LookupApi::new(base, USER, Secret::new(KEY), NEXIO),
        Duration::ZERO,
        0,
    );
    for id in ["1", "2", "3"] {
        enricher.lookup(&lookup("payout", id)).await.unwrap();
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "three look-ups, one connection"
    );
}
