//! A minimal downstream consumer of hookgate's canonical events.
//!
//! Declares a durable queue, binds it to the event exchange with a routing
//! pattern, and prints one line per event, acknowledging each only after it
//! has been handled (so a crash mid-way redelivers rather than loses it).
//! Real consumers de-duplicate on the event `id` (= AMQP `message_id`): the
//! gateway delivers at least once.
//!
//! ```text
//! cargo run --example consumer -- [AMQP_URL] [EXCHANGE] [PATTERN] [QUEUE]
//! defaults: amqp://guest:guest@127.0.0.1:5672/%2f hookgate.events '#' hookgate-example
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use lapin::message::DeliveryResult;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = args.next().unwrap_or_else(|| "hookgate.events".into());
    let pattern = args.next().unwrap_or_else(|| "#".into());
    let queue = args.next().unwrap_or_else(|| "hookgate-example".into());

    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    // The gateway declares the exchange with its alternate exchange; so does this.
    hookgate::publish::declare_topology(&connection, &exchange).await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            pattern.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.basic_qos(16, BasicQosOptions::default()).await?;
    eprintln!("consuming `{queue}` bound to `{exchange}` with `{pattern}`; Ctrl-C stops");

    // A real consumer keeps this set in its database, with the side effects.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "hookgate-example".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    consumer.set_delegate(move |delivery: DeliveryResult| {
        let seen = seen.clone();
        async move {
            let Ok(Some(delivery)) = delivery else { return };
            let event: serde_json::Value =
                serde_json::from_slice(&delivery.data).unwrap_or_default();
            let id = event["id"].as_str().unwrap_or("?").to_owned();
            let fresh = seen.lock().unwrap().insert(id.clone());
            let amount = event["data"]["amount"]
                .as_object()
                .map(|a| {
                    format!(
                        " {} {}",
                        a["value"].as_str().unwrap_or(""),
                        a["currency"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            println!(
                "{}{} {} {} subject={}{amount}",
                if fresh { "" } else { "(duplicate) " },
                delivery.routing_key,
                event["type"].as_str().unwrap_or("?"),
                id,
                event["subject"].as_str().unwrap_or("-"),
            );
            if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                eprintln!("ack failed: {error}");
            }
        }
    });

    tokio::signal::ctrl_c().await?;
    connection.close(200, "consumer done".into()).await?;
    Ok(())
}
