//! Queue housekeeping for `scripts/bench` (the broker has no rabbitmqadmin here).
//!
//! ```sh
//! bench_queue declare <exchange> <queue>   # gateway topology + durable queue bound with `#`
//! bench_queue count <queue>                # prints the queue's ready message count
//! bench_queue delete <exchange> <queue>    # deletes the queue, the exchange and its `.unroutable` pair
//! ```
//!
//! The exchange is declared exactly as the gateway declares it
//! ([`hookgate::publish::declare_topology`]: durable topic exchange with the
//! `{exchange}.unroutable` alternate exchange), so the gateway's own
//! redeclaration at start is a no-op. The broker URL comes from
//! `BENCH_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//!
//! The queue is a quorum queue, like the queues in
//! `deploy/rabbitmq/definitions.json`: the benchmark measures the shape that
//! is deployed. `BENCH_QUEUE_TYPE=classic` declares a classic queue instead,
//! to compare the two.

use lapin::options::{
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties};

async fn channel() -> Result<(Connection, Channel), lapin::Error> {
    let url = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// `x-queue-type` for the declared queue: quorum unless `BENCH_QUEUE_TYPE` says otherwise.
fn queue_arguments() -> FieldTable {
    let kind = std::env::var("BENCH_QUEUE_TYPE").unwrap_or_else(|_| "quorum".to_owned());
    if !matches!(kind.as_str(), "quorum" | "classic") {
        eprintln!("bench_queue: BENCH_QUEUE_TYPE must be quorum or classic, not {kind:?}");
        std::process::exit(2);
    }
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(kind.into_bytes())),
    );
    arguments
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_queue declare <exchange> <queue> | count <queue> | delete <exchange> <queue>"
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lapin::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (connection, ch) = channel().await?;
    match (args.first().map(String::as_str), args.get(1), args.get(2)) {
        (Some("declare"), Some(exchange), Some(queue)) => {
            hookgate::publish::declare_topology(&connection, exchange).await?;
            let durable = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            ch.queue_declare(queue.as_str().into(), durable, queue_arguments())
                .await?;
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            eprintln!("bench_queue: {queue} bound to {exchange} with #");
        }
        (Some("count"), Some(queue), None) => {
            let passive = QueueDeclareOptions {
                passive: true,
                durable: true,
                ..QueueDeclareOptions::default()
            };
            let q = ch
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await?;
            println!("{}", q.message_count());
        }
        (Some("delete"), Some(exchange), Some(queue)) => {
            let unroutable = format!("{exchange}.unroutable");
            let dropped = ch
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
            let unroutable_dropped = ch
                .queue_delete(unroutable.as_str().into(), QueueDeleteOptions::default())
                .await?;
            ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
            ch.exchange_delete(unroutable.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
            eprintln!(
                "bench_queue: deleted {queue} ({dropped} messages), {exchange} and {unroutable} ({unroutable_dropped} messages)"
            );
        }
        _ => usage(),
    }
    let _ = connection.close(200, "bench_queue done".into()).await;
    Ok(())
}
