//! The broker ceiling for `scripts/bench`: how many confirmed publishes per
//! second this machine's RabbitMQ takes in the gateway's publishing shape,
//! with no HTTP, TLS or request work in front of it.
//!
//! It publishes the exact message the gateway publishes for the benchmark's
//! USAePay body (the canonical CloudEvent built by the library's own
//! `normalize` + `Outgoing::from_event`, about 1.1 KB, with the same AMQP
//! properties and CloudEvents headers), persistent (delivery_mode 2) and
//! mandatory, to `<exchange>` on one connection with `channels` confirm-mode
//! channels picked round-robin, from `inflight` concurrent tasks that each
//! wait for their own confirm before publishing again: the most the gateway
//! has in flight with that many keep-alive connections. Declare and bind the
//! queue first (`bench_queue declare`), so messages are routed and persisted
//! as the gateway's are.
//!
//! ```sh
//! bench_broker_ceiling <exchange> <seconds> [channels=4] [inflight=64]
//! ```
//!
//! Prints one line: `BROKER confirmed=N seconds=S rate=R failed=F body_bytes=B
//! p50_ms=.. p99_ms=.. p999_ms=..` (latency from publish to confirm).
//! The broker URL comes from `BENCH_AMQP_URL` (default guest on 127.0.0.1:5672).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hookgate::auth::{AuthMethods, Authenticator, BasicCredentials, Presented};
use hookgate::pipeline::normalize;
use hookgate::publish::{properties, Outgoing};
use hookgate::secret::Secret;
use hookgate::vendors::{MapOptions, VendorKind};
use hyper::body::Bytes;
use hyper::HeaderMap;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Confirmation, Connection, ConnectionProperties};

const BODY: &str = r#"{"type":"event","event_triggered":"2021-04-07 15:14:26","event_type":"transaction.sale.success","event_body":{"merchant":{"merch_key":"7qwnw4j2kmqvrb3"},"object":{"type":"transaction","key":"1nftvzx7xtcggm3","amount_detail":{"amount":"5.00"},"authcode":"538228"}},"event_id":"c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd"}"#;

/// The message the gateway publishes for the benchmark body.
fn gateway_message() -> Outgoing {
    let auth = Authenticator::new(AuthMethods {
        basic: Some(BasicCredentials::new("hook", Secret::new("pass"))),
        ..Default::default()
    })
    .expect("one method");
    let mut headers = HeaderMap::new();
    let basic = auth
        .methods()
        .basic
        .as_ref()
        .expect("set above")
        .header_value();
    headers.insert("authorization", basic.parse().expect("valid header"));
    let presented = Presented {
        headers: &headers,
        token: None,
        client_ip: "127.0.0.1".parse().expect("valid ip"),
        now: SystemTime::now(),
    };
    let verified = auth
        .verify(&presented, Bytes::from_static(BODY.as_bytes()))
        .expect("authentic");
    let event = normalize(
        VendorKind::Usaepay,
        "usaepay-main",
        &MapOptions::default(),
        &verified,
        time::OffsetDateTime::now_utc(),
    );
    Outgoing::from_event(&event)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: bench_broker_ceiling <exchange> <seconds> [channels=4] [inflight=64]");
        std::process::exit(2);
    }
    let exchange = args[0].clone();
    let seconds: f64 = args[1].parse().expect("seconds is a number");
    let channels: usize = args.get(2).map_or(4, |a| a.parse().expect("channels"));
    let inflight: usize = args.get(3).map_or(64, |a| a.parse().expect("inflight"));
    // Two workers, like the gateway on this two-core machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(exchange, seconds, channels, inflight));
}

async fn run(exchange: String, seconds: f64, channels: usize, inflight: usize) {
    let url = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let mut pool = Vec::with_capacity(channels);
    for _ in 0..channels {
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        pool.push(channel);
    }
    let pool = Arc::new(pool);
    let message = Arc::new(gateway_message());
    let confirmed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(inflight);
    for _ in 0..inflight {
        let (pool, message, confirmed, failed, next, exchange) = (
            pool.clone(),
            message.clone(),
            confirmed.clone(),
            failed.clone(),
            next.clone(),
            exchange.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let n = next.fetch_add(1, Ordering::Relaxed);
                let channel = &pool[n % pool.len()];
                let outcome = async {
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            message.routing_key.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            &message.body,
                            properties(&message),
                        )
                        .await?
                        .await
                }
                .await;
                match outcome {
                    Ok(Confirmation::Ack(None)) => {
                        latencies.push(sent.elapsed());
                        confirmed.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |p: f64| {
        let i =
            ((latencies.len() as f64 * p / 100.0) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let confirmed = confirmed.load(Ordering::Relaxed);
    println!(
        "BROKER confirmed={confirmed} seconds={elapsed:.3} rate={:.1} failed={} body_bytes={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        confirmed as f64 / elapsed,
        failed.load(Ordering::Relaxed),
        message.body.len(),
        ms(50.0),
        ms(99.0),
        ms(99.9)
    );
    let _ = connection.close(200, "ceiling measured".into()).await;
}
