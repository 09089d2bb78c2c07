//! hookgate's integration tests: one binary, one module per area.
//!
//! Tests that need a broker use the RabbitMQ on 127.0.0.1:5672 (or
//! `HOOKGATE_TEST_AMQP_URL`) that `.ci/run` / `scripts/broker start` provide,
//! in a vhost of the run's own (which `scripts/test` creates and deletes),
//! each with its own random exchange and queue names so they run in parallel.

/// Shared harness: gateway, broker, TLS client, TCP proxy.
mod support;

/// Every fixture of every vendor through the real mapping code, validated
/// against the JSON Schema and against values written from the vendor docs.
mod fixtures;

/// The running gateway over TLS with a real broker: auth, limits, publishing.
mod gateway;

/// Broker outages through a TCP proxy the test can cut.
mod outage;

/// The `hookgate` binary: check-config output and exit codes.
mod cli;

/// The docs' command lines, and the quick start and walkthrough followed literally.
mod first_hour;

/// Each vendor end to end: its auth method, a refused attempt, no secret on the bus.
mod vendors;

/// Quotas, the pre-auth IP guard, reload, certificate rotation, metrics, readiness.
mod ops;

/// The spool: outages, a full spool, restarts and SIGKILL lose nothing accepted.
mod durability;

/// Deployment files and the AsyncAPI contract, checked against the real broker and gateway.
mod deploy;

/// Hostile clients: oversized, slow, malformed and replayed requests, old TLS, connection floods.
mod attacks;

/// Thin Nexio pings filled in from a fake vendor API.
mod enrich;

/// A real 3-node RabbitMQ cluster: a node killed under load, a memory alarm, amqps.
mod cluster;

/// Several gateway processes as one: a dedup window shared in a real Redis.
mod replicas;

/// The event archive: a stream bound to the exchange, `archive find` and `archive replay`.
mod archive;
