//! The per-request CPU path for each vendor: authenticate the raw body (where
//! the vendor signs), parse and map it, guard it, and serialize the canonical
//! event: everything a request costs except the network and the broker.
//!
//! Run: `cargo bench --bench request_path` (results in target/criterion/).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use hookgate::auth::{
    AuthMethods, Authenticator, BasicCredentials, HmacVerifier, Presented, SignatureScheme,
};
use hookgate::pipeline::normalize;
use hookgate::publish::Outgoing;
use hookgate::secret::Secret;
use hookgate::vendors::{MapOptions, VendorKind};
use hyper::body::Bytes;
use hyper::HeaderMap;

fn fixture(vendor: &str, name: &str) -> Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(vendor)
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// One vendor's request: the auth a source of that vendor typically uses.
struct Case {
    name: &'static str,
    vendor: VendorKind,
    body: Bytes,
    auth: Authenticator,
    headers: HeaderMap,
    token: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let usaepay_body = fixture("usaepay", "seed-transaction-sale-success.json");
    let usaepay_auth = Authenticator::new(AuthMethods {
        hmac: Some(HmacVerifier::new(
            SignatureScheme::HexBody {
                header: "x-signature",
            },
            vec![Secret::new("example-signature-key")],
            Duration::from_secs(300),
        )),
        basic: Some(BasicCredentials::new(
            "webhook-user",
            Secret::new("webhook-pass"),
        )),
        ..Default::default()
    })
    .expect("one method");
    let mut usaepay_headers = HeaderMap::new();
    let sig = usaepay_auth
        .methods()
        .hmac
        .as_ref()
        .unwrap()
        .sign(0, None, &usaepay_body);
    usaepay_headers.insert("x-signature", sig.parse().unwrap());
    usaepay_headers.insert(
        "authorization",
        usaepay_auth
            .methods()
            .basic
            .as_ref()
            .unwrap()
            .header_value()
            .parse()
            .unwrap(),
    );

    let strictly_auth = Authenticator::new(AuthMethods {
        basic: Some(BasicCredentials::new(
            "strictly",
            Secret::new("strictly-pass"),
        )),
        ..Default::default()
    })
    .expect("one method");
    let mut strictly_headers = HeaderMap::new();
    strictly_headers.insert(
        "authorization",
        strictly_auth
            .methods()
            .basic
            .as_ref()
            .unwrap()
            .header_value()
            .parse()
            .unwrap(),
    );

    let token = "bench-url-token-0123456789abcdef";
    let token_auth = || {
        Authenticator::new(AuthMethods {
            token: Some(Secret::new(token)),
            ..Default::default()
        })
        .expect("one method")
    };
    vec![
        Case {
            name: "usaepay_hmac_basic",
            vendor: VendorKind::Usaepay,
            body: usaepay_body,
            auth: usaepay_auth,
            headers: usaepay_headers,
            token: None,
        },
        Case {
            name: "strictly_basic_json",
            vendor: VendorKind::Strictly,
            body: fixture("strictly", "json-sale-card.json"),
            auth: strictly_auth,
            headers: strictly_headers.clone(),
            token: None,
        },
        Case {
            name: "strictly_basic_shell_notation",
            vendor: VendorKind::Strictly,
            body: fixture("strictly", "doc-sale-card.txt"),
            auth: Authenticator::new(AuthMethods {
                basic: Some(BasicCredentials::new(
                    "strictly",
                    Secret::new("strictly-pass"),
                )),
                ..Default::default()
            })
            .expect("one method"),
            headers: strictly_headers,
            token: None,
        },
        Case {
            name: "nexio_token",
            vendor: VendorKind::Nexio,
            body: fixture("nexio", "seed-transaction.json"),
            auth: token_auth(),
            headers: HeaderMap::new(),
            token: Some(token),
        },
        Case {
            name: "stickypay_token",
            vendor: VendorKind::Stickypay,
            body: fixture("stickypay", "seed-session-cart-pay.json"),
            auth: token_auth(),
            headers: HeaderMap::new(),
            token: Some(token),
        },
    ]
}

fn request_path(c: &mut Criterion) {
    let options = MapOptions::default();
    let received = time::OffsetDateTime::now_utc();
    let mut group = c.benchmark_group("request_path");
    for case in cases() {
        group.bench_function(case.name, |b| {
            b.iter(|| {
                let presented = Presented {
                    headers: &case.headers,
                    token: case.token,
                    client_ip: "127.0.0.1".parse().unwrap(),
                    now: SystemTime::now(),
                };
                let verified = case
                    .auth
                    .verify(&presented, case.body.clone())
                    .expect("authentic");
                let event = normalize(case.vendor, "bench-source", &options, &verified, received);
                black_box(Outgoing::from_event(&event))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
