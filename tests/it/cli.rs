//! The `hookgate` binary as an operator runs it.

use std::process::Command;

fn hookgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `hookgate <args> --config <config>` and waits for it.
fn run(args: &[&str], config: &std::path::Path) -> std::process::Output {
    hookgate()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn check_config_accepts_the_example_and_lists_every_problem_otherwise() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
    let out = hookgate()
        .args(["check-config", "--config", example])
        .env("HOOKGATE_AMQP_PASSWORD", "p")
        .env("USAEPAY_SIGNATURE_KEY", "k")
        .env("USAEPAY_BASIC_PASSWORD", "b")
        .env("HOOKGATE_ADMIN_TOKEN", "admin-token-0123456789")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 source(s))"));

    let bad = write_config(
        r#"
[server]
listen = "nowhere"
[broker]
url = "redis://x"
[[source]]
id = "Bad Id"
vendor = "paypal"
[source.auth]
token = "short"
"#,
    );
    let out = run(&["check-config"], bad.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "broker.url",
        "source[0].id",
        "source[0].vendor",
        "source[0].auth.token",
    ] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
}

#[test]
fn serve_refuses_to_start_on_a_bad_config() {
    let bad = write_config("[server]\nlisten = \"127.0.0.1:0\"\n");
    let out = run(&["serve"], bad.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broker"));

    let missing = hookgate()
        .args(["serve", "--config", "/nonexistent/hookgate.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn serve_names_an_unreadable_certificate() {
    let cfg = write_config(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "/nonexistent/cert.pem"
tls_key = "/nonexistent/key.pem"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[source]]
id = "s"
vendor = "usaepay"
auth = { basic = { username = "u", password = "p" } }
"#,
    );
    let out = run(&["serve"], cfg.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls_cert") && stderr.contains("/nonexistent/cert.pem"),
        "{stderr}"
    );
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_then_exits_cleanly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cert = crate::support::TestCert::generate();
    let exchange = crate::support::unique("test-exchange");
    let text = crate::support::config_text(
        &cert,
        &crate::support::amqp_url(),
        &exchange,
        "",
        crate::gateway::USAEPAY_SOURCE,
    )
    .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "");
    let config = write_config(&text);
    let mut gateway = crate::support::GatewayProcess::spawn(config.path(), true);
    let addr = gateway.addr;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let client = crate::support::Client::new(addr, &cert);
        let mut stream = client.tls_stream().await.unwrap();
        let body = crate::gateway::USAEPAY_BODY.as_bytes();
        let mut head = format!(
            "POST /webhooks/usaepay-main HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in crate::gateway::signed_usaepay_headers() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..50]).await.unwrap();
        stream.flush().await.unwrap();

        let kill = Command::new("kill")
            .args(["-TERM", &gateway.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        stream.write_all(&body[50..]).await.unwrap();
        stream.flush().await.unwrap();
        let mut response = vec![0u8; 1024];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read(&mut response),
        )
        .await
        .expect("a response before the drain deadline")
        .unwrap();
        let text = String::from_utf8_lossy(&response[..n]).to_string();
        text.split(' ').nth(1).unwrap_or("").to_owned()
    });
    assert_eq!(status, "200", "the request in flight at SIGTERM was served");

    let exit = gateway.child.wait().unwrap();
    assert!(exit.success(), "clean exit after draining: {exit:?}");
    let logs = gateway.logs_after_exit().join("\n");
    assert!(logs.contains("Broker connection closed."), "{logs}");
}

/// `hookgate sign --source SOURCE --config CFG --body BODY`, run.
fn sign(
    cfg: &tempfile::NamedTempFile,
    source: &str,
    body: &tempfile::NamedTempFile,
) -> std::process::Output {
    hookgate()
        .args(["sign", "--source", source, "--config"])
        .arg(cfg.path())
        .arg("--body")
        .arg(body.path())
        .output()
        .unwrap()
}

#[test]
fn sign_prints_the_request_a_vendor_would_send() {
    let cfg = write_config(&format!(
        r#"
[server]
listen = "127.0.0.1:8443"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
{}
[[source]]
id = "sticky-main"
vendor = "stickypay"
auth = {{ token = "sticky-url-token-0123456789" }}
"#,
        crate::gateway::USAEPAY_SOURCE.replace("previous-signature-key", "example-signature-key")
    ));
    let body = write_config(crate::gateway::USAEPAY_BODY);
    let out = sign(&cfg, "usaepay-main", &body);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    // The self-computed vector of docs/vendors.md §5 and the Basic vector.
    assert!(
        text.contains(&format!(
            "x-signature: {}",
            crate::gateway::USAEPAY_SIGNATURE
        )),
        "{text}"
    );
    assert!(
        text.contains(&crate::gateway::BASIC.to_lowercase()),
        "{text}"
    );
    assert!(
        text.contains("url: http://localhost:8443/webhooks/usaepay-main"),
        "{text}"
    );

    let out = sign(&cfg, "sticky-main", &body);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("/webhooks/sticky-main/sticky-url-token-0123456789"));

    let out = sign(&cfg, "nope", &body);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source `nope`"));
}

#[test]
fn spool_commands_show_replay_and_purge_what_is_spooled() {
    use hookgate::publish::Outgoing;

    let dir = tempfile::tempdir().unwrap();
    let exchange = crate::support::unique("test-exchange");
    let cfg = write_config(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[broker]
url = "{}"
exchange = "{exchange}"
[spool]
dir = "{}"
{}
"#,
        crate::support::amqp_url(),
        dir.path().display(),
        crate::gateway::USAEPAY_SOURCE
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (broker, queue) = runtime.block_on(async {
        let broker = crate::support::Broker::connect().await;
        let queue = broker.bind_queue(&exchange, "#").await;
        let spool = hookgate::spool::Spool::open(dir.path(), 1 << 20).unwrap();
        for n in 0..3 {
            let outgoing = Outgoing {
                id: format!("00000000-0000-8000-8000-00000000000{n}"),
                source: "/sources/usaepay-main".into(),
                event_type: "payment.succeeded".into(),
                time: "2021-04-07T15:14:26Z".into(),
                routing_key: "usaepay-main.payment.succeeded".into(),
                body: format!("{{\"n\":{n}}}").into_bytes(),
            };
            spool.append(&outgoing).await.unwrap();
        }
        spool.close().await;
        (broker, queue)
    });

    let run = |args: &[&str]| {
        let out = hookgate()
            .arg("spool")
            .args(args)
            .arg("--config")
            .arg(cfg.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stats, _) = run(&["stats"]);
    assert_eq!(code, Some(0));
    assert!(stats.contains("3 event(s)"), "{stats}");
    let (_, list, _) = run(&["list"]);
    assert_eq!(list.lines().count(), 3);
    assert!(
        list.contains("00000000-0000-8000-8000-000000000000\tusaepay-main.payment.succeeded"),
        "{list}"
    );
    let (code, _, err) = run(&["purge"]);
    assert_eq!(code, Some(2), "purge needs --yes");
    assert!(err.contains("--yes"));

    let (code, out, err) = run(&["replay"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("ERROR"), "replay succeeded but said:\n{err}");
    assert!(out.contains("3 event(s) published"), "{out}");
    let ids: Vec<String> = runtime.block_on(async {
        broker
            .drain(&queue)
            .await
            .iter()
            .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
            .collect()
    });
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        ids[0].ends_with('0') && ids[2].ends_with('2'),
        "oldest first: {ids:?}"
    );
    let (_, stats, _) = run(&["stats"]);
    assert!(stats.contains(": 0 event(s)"), "{stats}");
}

fn broker_config(exchange: &str) -> tempfile::NamedTempFile {
    write_config(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[broker]
url = "{}"
exchange = "{exchange}"
{}
[[source]]
id = "sticky-main"
vendor = "stickypay"
auth = {{ token = "sticky-url-token-0123456789" }}
"#,
        crate::support::amqp_url(),
        crate::gateway::USAEPAY_SOURCE
    ))
}

#[test]
fn send_publishes_a_captured_body_as_if_the_vendor_had_sent_it() {
    let exchange = crate::support::unique("test-exchange");
    let cfg = broker_config(&exchange);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (broker, queue) = runtime.block_on(async {
        let broker = crate::support::Broker::connect().await;
        let queue = broker.bind_queue(&exchange, "sticky-main.#").await;
        (broker, queue)
    });
    let fixture = crate::fixtures::fixture_dir(hookgate::vendors::VendorKind::Stickypay)
        .join("seed-session-cart-pay.json");
    let out = hookgate()
        .args(["send", "--source", "sticky-main", "--config"])
        .arg(cfg.path())
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ERROR"),
        "send succeeded but said:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (id, kind) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(kind, "payment.succeeded");
    let msg = runtime
        .block_on(broker.next(&queue, std::time::Duration::from_secs(5)))
        .expect("published");
    assert_eq!(msg.body["id"], id);
    assert_eq!(msg.body["data"]["amount"]["value"], "3.60");
}

#[test]
fn remap_turns_parked_unmapped_events_into_canonical_ones_with_their_original_ids() {
    use hookgate::canonical::Event;
    use hookgate::publish::Outgoing;
    use hookgate::vendors::VendorKind;

    let exchange = crate::support::unique("test-exchange");
    let cfg = broker_config(&exchange);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    // What an older release parked: a body it could not read (now readable), and garbage.
    let readable = Event::unmapped(
        VendorKind::Usaepay,
        "usaepay-main",
        crate::gateway::USAEPAY_BODY.as_bytes(),
        Some(crate::gateway::USAEPAY_BODY.as_bytes()),
        "unknown shape (older release)".into(),
        received,
    );
    let garbage = Event::unmapped(
        VendorKind::Usaepay,
        "usaepay-main",
        b"nope",
        Some(b"nope"),
        "not JSON".into(),
        received,
    );
    // Parked on a durable named queue, as `deploy/rabbitmq/definitions.json`'s
    // `unmapped` queue would hold them (test queues are exclusive to the test's
    // connection, which the remap process could not open).
    let named = crate::support::unique("parked");
    let (broker, payments) = runtime.block_on(async {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let broker = crate::support::Broker::connect().await;
        let payments = broker.bind_queue(&exchange, "*.payment.#").await;
        broker
            .channel
            .queue_declare(
                named.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        broker
            .channel
            .queue_bind(
                named.as_str().into(),
                exchange.as_str().into(),
                "*.unmapped".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let settings = hookgate::config::load(cfg.path()).unwrap();
        let mut watchdog = hookgate::watchdog::Watchdog::new();
        let publisher = hookgate::publish::Publisher::start(
            settings.broker,
            &hookgate::metrics::Metrics::new(),
            &mut watchdog,
        );
        assert!(
            publisher
                .wait_connected(std::time::Duration::from_secs(10))
                .await
        );
        for event in [&readable, &garbage] {
            publisher
                .publish(&Outgoing::from_event(event))
                .await
                .unwrap();
        }
        watchdog.shut_down().await;
        (broker, payments)
    });

    let out = run(&["remap", "--from-queue", &named], cfg.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("ERROR"),
        "remap succeeded but said:\n{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 remapped, 1 still unmapped"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    runtime.block_on(async {
        let remapped = broker
            .next(&payments, std::time::Duration::from_secs(5))
            .await
            .expect("remapped event");
        assert_eq!(
            remapped.body["id"],
            readable.id.as_str(),
            "published under the parked event's id"
        );
        assert_eq!(remapped.body["type"], "payment.succeeded");
        assert_eq!(remapped.body["data"]["amount"]["minor"], 500);
        let left = broker.drain(&named).await;
        assert_eq!(left.len(), 1, "what still does not map stays parked");
        assert_eq!(left[0].body["id"], garbage.id.as_str());
        let _ = broker
            .channel
            .queue_delete(
                named.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    });
}

#[test]
fn completions_cover_every_subcommand() {
    let out = hookgate().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "serve",
        "check-config",
        "sign",
        "send",
        "tail",
        "remap",
        "spool",
    ] {
        assert!(
            script.contains(sub),
            "{sub} missing from the bash completions"
        );
    }
}

#[test]
fn sign_prints_standard_webhooks_headers_that_verify() {
    let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cfg = write_config(&format!(
        r#"
[server]
listen = "127.0.0.1:8443"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[source]]
id = "sticky-svix"
vendor = "stickypay"
auth = {{ standard_webhooks = {{ keys = ["{key}"] }} }}
"#
    ));
    let body = write_config(r#"{"v2":{"event":{"type":"SESSION_READ","id":"e-1"}}}"#);
    let out = sign(&cfg, "sticky-svix", &body);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut headers = hyper::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} not printed: {text}"));
        headers.insert(name, value.parse().unwrap());
        assert!(text.contains(&format!("-H '{name}: {value}'")), "{text}");
    }
    let verifier = hookgate::auth::StandardWebhooks::new(
        &[hookgate::secret::Secret::new(key)],
        std::time::Duration::from_secs(300),
    )
    .unwrap();
    let sent = std::fs::read(body.path()).unwrap();
    assert_eq!(
        verifier.verify(&headers, &sent, std::time::SystemTime::now()),
        Ok(())
    );
}
