//! The deployment files and the consumer contract: RabbitMQ definitions
//! loaded into the real broker and used by the real gateway, Kubernetes and
//! compose manifests, the systemd unit, the Dockerfile and the AsyncAPI
//! document, each checked against what hookgate actually does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lapin::options::QueuePurgeOptions;
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::gateway::{signed_usaepay_headers, USAEPAY_BODY, USAEPAY_SOURCE};
use crate::support::{test_vhost, Broker, TestGateway};

/// The exchange the definitions declare (in the tests' vhost); no other
/// test uses this name.
const EXCHANGE: &str = "hookgate.events";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn definitions() -> Value {
    serde_json::from_str(&read("deploy/rabbitmq/definitions.json"))
        .expect("deploy/rabbitmq/definitions.json is JSON")
}

/// Every document of a YAML file.
fn yaml_docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_one(path: &str) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{path}: one YAML document expected");
    docs.remove(0)
}

/// YAML as JSON, for comparisons and for the JSON Schema validator.
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unsupported YAML key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// A TOML line without its comment (a `#` outside a quoted string).
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

/// The `${NAME}` references of a hookgate config (outside comments), sorted.
fn env_refs(config: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = config
        .lines()
        .map(|l| format!("{}\n", without_comment(l)))
        .collect();
    let mut rest = code.as_str();
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("closed ${");
        out.insert(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// Runs `hookgate check-config` on `text` with every variable it references
/// set to a dummy that satisfies every rule (tokens need 16+ URL-safe chars).
fn check_config(what: &str, text: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(["check-config", "--config"])
        .arg(file.path())
        .env_remove("RUST_LOG");
    for name in env_refs(text) {
        cmd.env(
            &name,
            format!("dummy-{}-0123456789abcdef", name.to_lowercase()),
        );
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} fails check-config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("`{name}` missing from the definitions"))
}

fn has_binding(defs: &Value, source: &str, queue: &str, key: &str) -> bool {
    defs["bindings"].as_array().unwrap().iter().any(|b| {
        b["source"] == source
            && b["destination"] == queue
            && b["destination_type"] == "queue"
            && b["routing_key"] == key
            && b["vhost"] == "/"
    })
}

#[test]
fn the_definitions_declare_the_documented_topology() {
    let defs = definitions();
    assert!(
        defs["vhosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "/"),
        "vhost / declared"
    );
    assert!(
        defs.get("users")
            .is_none_or(|u| u.as_array().is_some_and(|u| u.is_empty()))
            && defs
                .get("permissions")
                .is_none_or(|p| p.as_array().is_some_and(|p| p.is_empty())),
        "no credentials in the definitions"
    );

    // Exactly what `publish::declare_topology` declares, or the gateway's
    // redeclaration fails with PRECONDITION_FAILED.
    let exchanges = &defs["exchanges"];
    let events = find(exchanges, EXCHANGE);
    assert_eq!(events["type"], "topic");
    assert_eq!(events["durable"], true);
    assert_eq!(events["auto_delete"], false);
    assert_eq!(events["internal"], false);
    assert_eq!(
        events["arguments"],
        json!({ "alternate-exchange": "hookgate.events.unroutable" })
    );
    let unroutable = find(exchanges, "hookgate.events.unroutable");
    assert_eq!(unroutable["type"], "fanout");
    assert_eq!(unroutable["durable"], true);
    assert_eq!(unroutable["auto_delete"], false);
    assert_eq!(unroutable["arguments"], json!({}));
    let dlx = find(exchanges, "hookgate.dlx");
    assert_eq!(dlx["type"], "topic");
    assert_eq!(dlx["durable"], true);

    let queues = &defs["queues"];
    let parked = find(queues, "hookgate.events.unroutable");
    assert_eq!(parked["durable"], true);
    assert_eq!(parked["auto_delete"], false);
    assert_eq!(
        parked["arguments"],
        json!({ "x-queue-type": "quorum" }),
        "a quorum queue, as the gateway declares it"
    );
    // The archive stream, declared as `archive::declare` does with the
    // documented defaults, bound for every routing key.
    let archive = find(queues, "hookgate.archive");
    assert_eq!(archive["durable"], true);
    assert_eq!(
        archive["arguments"],
        json!({"x-queue-type": "stream", "x-max-age": hookgate::config::DEFAULT_ARCHIVE_MAX_AGE})
    );
    assert!(has_binding(
        &defs,
        "hookgate.events",
        hookgate::config::DEFAULT_ARCHIVE_STREAM,
        "#"
    ));
    assert_eq!(find(queues, "hookgate.dead")["durable"], true);
    for name in ["payments", "unmapped"] {
        let q = find(queues, name);
        assert_eq!(q["vhost"], "/");
        assert_eq!(q["durable"], true, "{name}");
        assert_eq!(q["auto_delete"], false, "{name}");
        assert_eq!(q["arguments"]["x-queue-type"], "quorum", "{name}");
        assert_eq!(
            q["arguments"]["x-dead-letter-exchange"], "hookgate.dlx",
            "{name}"
        );
    }

    for (source, queue, key) in [
        (
            "hookgate.events.unroutable",
            "hookgate.events.unroutable",
            "",
        ),
        ("hookgate.dlx", "hookgate.dead", "#"),
        (EXCHANGE, "payments", "*.payment.#"),
        (EXCHANGE, "payments", "*.refund.#"),
        (EXCHANGE, "unmapped", "*.unmapped"),
    ] {
        assert!(
            has_binding(&defs, source, queue, key),
            "binding {source} -> {queue} ({key:?}) missing"
        );
    }
}

/// `rabbitmqctl import_definitions` on the test broker. The Debian wrapper
/// re-runs itself as the `rabbitmq` user when called as root, so the file
/// must be readable by that user: a world-readable copy in the temp dir.
fn import_definitions() {
    use std::os::unix::fs::PermissionsExt;
    let copy = tempfile::Builder::new()
        .prefix("hookgate-definitions-")
        .suffix(".json")
        .tempfile_in(std::env::temp_dir())
        .unwrap();
    // Into the tests' own vhost: the definitions name `/`, where a dev
    // gateway's `hookgate.events` lives.
    let mut defs = definitions();
    let vhost = test_vhost();
    defs["vhosts"] = json!([{ "name": vhost }]);
    for kind in ["exchanges", "queues", "bindings"] {
        for item in defs[kind].as_array_mut().unwrap() {
            assert_eq!(
                item["vhost"], "/",
                "{kind}: the shipped definitions use `/`"
            );
            item["vhost"] = json!(vhost);
        }
    }
    std::fs::write(copy.path(), defs.to_string()).unwrap();
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("rabbitmqctl")
        .arg("import_definitions")
        .arg(copy.path())
        .output()
        .expect("rabbitmqctl on PATH (scripts/broker installs it)");
    assert!(
        out.status.success(),
        "rabbitmqctl import_definitions failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The import is asynchronous: wait until the bindings (created last) exist.
    let wanted = [
        (EXCHANGE, "payments", "*.payment.#"),
        (EXCHANGE, "payments", "*.refund.#"),
        (EXCHANGE, "unmapped", "*.unmapped"),
        ("hookgate.dlx", "hookgate.dead", "#"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("rabbitmqctl")
            .args([
                "-q",
                "list_bindings",
                "-p",
                &vhost,
                "source_name",
                "destination_name",
                "routing_key",
            ])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(s, d, k)| !listed.lines().any(|l| l == format!("{s}\t{d}\t{k}")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bindings still missing 30 s after the import: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn purge(broker: &Broker, queue: &str) {
    broker
        .channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .unwrap_or_else(|e| panic!("purge {queue}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_definitions_load_into_rabbitmq_and_the_gateway_publishes_through_them() {
    tokio::task::spawn_blocking(import_definitions)
        .await
        .unwrap();
    let broker = Broker::connect().await;
    // Idempotent across reruns: whatever an earlier run left is gone.
    purge(&broker, "payments").await;

    // The gateway redeclares the exchange, its alternate exchange and queue:
    // with different arguments it would never connect (PRECONDITION_FAILED).
    let gw = TestGateway::start_on_exchange(USAEPAY_SOURCE, EXCHANGE).await;
    let reply = gw
        .client()
        .post(
            "/webhooks/usaepay-main",
            &signed_usaepay_headers(),
            USAEPAY_BODY,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let id = reply.body["id"].as_str().expect("event id").to_owned();

    // Through the definitions' binding `*.payment.#` into the quorum queue.
    let mut found = None;
    while let Some(msg) = broker.next("payments", Duration::from_secs(5)).await {
        if msg.properties.message_id().as_ref().map(|m| m.as_str()) == Some(id.as_str()) {
            found = Some(msg);
            break;
        }
    }
    purge(&broker, "payments").await;
    gw.stop().await;
    let msg = found.expect("the event arrived in the `payments` queue");
    assert_eq!(msg.routing_key, "usaepay-main.payment.succeeded");
    assert_eq!(msg.body["id"], id.as_str());

    // The AsyncAPI document describes this very message.
    let api = yaml_one("schemas/asyncapi.yaml");
    let message = &api["components"]["messages"]["canonicalEvent"];
    let documented: BTreeSet<String> = message["headers"]["properties"]
        .as_hash()
        .expect("message headers listed")
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let published: BTreeSet<String> = msg
        .properties
        .headers()
        .as_ref()
        .expect("headers published")
        .inner()
        .keys()
        .map(|k| k.to_string())
        // Added by the broker (a quorum queue's x-delivery-count), not hookgate.
        .filter(|k| !k.starts_with("x-"))
        .collect();
    assert_eq!(
        documented, published,
        "AsyncAPI headers vs published headers"
    );
    let required: BTreeSet<String> = message["headers"]["required"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(required, published, "every published header is required");
    assert_eq!(
        msg.properties
            .content_type()
            .as_ref()
            .map(|c| c.to_string()),
        message["contentType"].as_str().map(str::to_owned)
    );
    let send = &api["operations"]["publishEvent"]["bindings"]["amqp"];
    assert_eq!(
        msg.properties.delivery_mode().map(i64::from),
        send["deliveryMode"].as_i64()
    );
    let channel = &api["channels"]["events"];
    assert_eq!(
        channel["bindings"]["amqp"]["exchange"]["name"].as_str(),
        Some(EXCHANGE)
    );
    let event_type = msg.body["type"].as_str().unwrap();
    let address = channel["address"]
        .as_str()
        .unwrap()
        .replace("{source_id}", "usaepay-main")
        .replace("{type}", event_type);
    assert_eq!(
        address, msg.routing_key,
        "routing key = the channel address"
    );
}

/// Every YAML file under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&repo("deploy"), &mut files);
    files.push(repo("schemas/asyncapi.yaml"));
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            !docs.is_empty() && docs.iter().all(|d| d.as_hash().is_some()),
            "{}: every document is a mapping",
            file.display()
        );
    }
}

/// Every Kubernetes object in deploy/k8s, by kind.
fn k8s_objects() -> BTreeMap<String, Vec<Yaml>> {
    let mut files = Vec::new();
    yaml_files(&repo("deploy/k8s"), &mut files);
    let mut by_kind: BTreeMap<String, Vec<Yaml>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap() {
            let kind = doc["kind"].as_str().expect("every object has a kind");
            by_kind.entry(kind.to_owned()).or_default().push(doc);
        }
    }
    by_kind
}

#[test]
fn the_kubernetes_manifests_have_every_kind_and_probe_the_admin_port() {
    let objects = k8s_objects();
    for kind in [
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    ] {
        assert!(objects.contains_key(kind), "no {kind} in deploy/k8s");
    }
    // The admin port is open only to the listed sources; the public one to all.
    let policy = &objects["NetworkPolicy"][0]["spec"];
    let rules = policy["ingress"].as_vec().unwrap();
    let admin_rule = rules
        .iter()
        .find(|r| r["ports"][0]["port"].as_str() == Some("admin"))
        .expect("a rule for the admin port");
    assert!(
        !admin_rule["from"].as_vec().unwrap().is_empty(),
        "the admin port is not open to everyone"
    );
    assert!(rules
        .iter()
        .any(|r| r["ports"][0]["port"].as_str() == Some("https") && r["from"].is_badvalue()));
    let workloads: Vec<&Yaml> = ["StatefulSet", "Deployment"]
        .iter()
        .filter_map(|k| objects.get(*k))
        .flatten()
        .filter(|w| w["metadata"]["name"].as_str() == Some("hookgate"))
        .collect();
    assert_eq!(workloads.len(), 1, "one hookgate StatefulSet or Deployment");
    // The shared dedup window the replicas are configured with is a Service here.
    let services: Vec<(&str, i64)> = objects["Service"]
        .iter()
        .flat_map(|s| {
            let name = s["metadata"]["name"].as_str().unwrap_or_default();
            s["spec"]["ports"]
                .as_vec()
                .into_iter()
                .flatten()
                .map(move |p| (name, p["port"].as_i64().unwrap_or_default()))
        })
        .collect();
    assert!(services.contains(&("valkey", 6379)), "{services:?}");
    let workload = workloads[0];
    let name = workload["metadata"]["name"].as_str().unwrap();
    let spec = &workload["spec"];
    let pod = &spec["template"]["spec"];
    let container = pod["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("hookgate"))
        .expect("a container named hookgate");

    // The probes hit the admin port: the config's admin.listen port.
    let configmap = &objects["ConfigMap"][0];
    let config = configmap["data"]["hookgate.toml"].as_str().unwrap();
    let settings =
        hookgate::config::from_toml_with_env(config, &|_| Some("dummy-0123456789abcdef".into()))
            .expect("the ConfigMap's config loads");
    let admin_port = settings.admin.as_ref().expect("[admin] configured").listen;
    assert!(
        admin_port.ip().is_unspecified(),
        "kubelet probes the pod IP: admin.listen must not be loopback"
    );
    let port_named = |port: &Yaml| -> i64 {
        match port {
            Yaml::Integer(n) => *n,
            Yaml::String(name) => container["ports"]
                .as_vec()
                .unwrap()
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_i64())
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => panic!("probe port {other:?}"),
        }
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            port_named(&get["port"]),
            i64::from(admin_port.port()),
            "{probe} targets the admin port"
        );
    }
    let https = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("https"))
        .expect("https port");
    assert_eq!(
        https["containerPort"].as_i64(),
        Some(i64::from(settings.server.listen.port()))
    );

    // The config file is where the container is told to read it.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mounts = container["volumeMounts"].as_vec().unwrap();
    let config_mount = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some("config"))
        .unwrap();
    assert_eq!(
        Path::new(config_path).parent().unwrap(),
        Path::new(config_mount["mountPath"].as_str().unwrap())
    );

    // The spool is on a volume of its own per pod, not an emptyDir.
    let spool_dir = settings
        .spool
        .as_ref()
        .expect("[spool] configured")
        .dir
        .clone();
    let spool_mount = mounts
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == spool_dir)
        .expect("the spool dir is a volume mount");
    let spool_volume = spool_mount["name"].as_str().unwrap();
    if workload["kind"].as_str() == Some("StatefulSet") {
        assert!(
            spec["volumeClaimTemplates"]
                .as_vec()
                .unwrap()
                .iter()
                .any(|t| t["metadata"]["name"].as_str() == Some(spool_volume)),
            "spool volume from volumeClaimTemplates"
        );
    }

    // Every ${VAR} of the config comes from the Secret the pod loads.
    let secret = &objects["Secret"][0];
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    assert!(container["envFrom"]
        .as_vec()
        .unwrap()
        .iter()
        .any(|e| e["secretRef"]["name"].as_str() == Some(secret_name)));
    let keys: BTreeSet<String> = secret["stringData"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let refs = env_refs(config);
    assert!(
        refs.is_subset(&keys),
        "{refs:?} not all in the Secret {keys:?}"
    );

    // PDB and HPA point at the workload.
    let labels = spec["selector"]["matchLabels"].clone();
    assert_eq!(
        objects["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"],
        labels
    );
    let target = &objects["HorizontalPodAutoscaler"][0]["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], workload["kind"]);
    assert_eq!(target["name"].as_str(), Some(name));
    assert!(
        objects["Service"]
            .iter()
            .any(|s| s["spec"]["selector"] == labels),
        "a Service selects the pods"
    );
}

#[test]
fn the_shipped_configs_pass_check_config() {
    let objects = k8s_objects();
    let configmap = objects["ConfigMap"][0]["data"]["hookgate.toml"]
        .as_str()
        .expect("ConfigMap key hookgate.toml")
        .to_owned();
    check_config("deploy/k8s/configmap.yaml", &configmap);

    let compose_config = read("deploy/compose/hookgate.toml");
    check_config("deploy/compose/hookgate.toml", &compose_config);

    // The compose service mounts that file where the image reads it and
    // passes every variable it references.
    let compose = yaml_one("deploy/docker-compose.yml");
    let service = &compose["services"]["hookgate"];
    let volumes: Vec<&str> = service["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.contains(&"./compose/hookgate.toml:/etc/hookgate/hookgate.toml:ro"),
        "{volumes:?}"
    );
    assert!(read("deploy/Dockerfile").contains(r#""--config", "/etc/hookgate/hookgate.toml""#));
    let env: BTreeSet<String> = service["environment"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let refs = env_refs(&compose_config);
    assert!(
        refs.is_subset(&env),
        "{refs:?} not all passed to the container: {env:?}"
    );

    // The broker gets the definitions file and the same credentials.
    let rabbit = &compose["services"]["rabbitmq"];
    assert!(rabbit["image"]
        .as_str()
        .unwrap()
        .starts_with("rabbitmq:3-management"));
    let importer = &compose["services"]["rabbitmq-definitions"];
    assert!(importer["volumes"].as_vec().unwrap().iter().any(|v| v
        .as_str()
        .unwrap()
        .starts_with("./rabbitmq/definitions.json:")));
    assert_eq!(
        service["depends_on"]["rabbitmq-definitions"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
}

#[test]
fn the_rabbitmq_conf_is_key_value_and_does_not_import_at_boot() {
    let conf = read("deploy/rabbitmq/rabbitmq.conf");
    for line in conf.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(" = ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(!key.is_empty() && !value.is_empty(), "{line:?}");
        // Boot-time import would stop RabbitMQ from creating
        // RABBITMQ_DEFAULT_USER; compose imports after boot instead.
        assert_ne!(key, "load_definitions", "see the comment in rabbitmq.conf");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = read("deploy/systemd/hookgate.service");
    for key in [
        "ProtectSystem=strict",
        "StateDirectory=hookgate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "User=hookgate",
    ] {
        assert!(unit.contains(key), "{key:?} missing from the unit");
    }
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(exec_start.contains(" serve --config "), "{exec_start}");

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit verification skipped");
        return;
    }
    // The binary is not installed here: verify a copy that runs /bin/true.
    // A second copy with a misspelt key proves the check sees problems.
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: &str| {
        let path = dir.path().join("hookgate.service");
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let about_unit: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("hookgate.service"))
            .map(str::to_owned)
            .collect();
        (out.status.success(), about_unit, stderr)
    };
    let runnable = unit.replace("/usr/local/bin/hookgate", "/bin/true");
    let (ok, about_unit, stderr) = verify(&runnable);
    assert!(
        ok && about_unit.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    let broken = runnable.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes");
    let (_, about_broken, stderr) = verify(&broken);
    assert!(
        about_broken.iter().any(|l| l.contains("ProtectHomme")),
        "verify did not notice a bad key:\n{stderr}"
    );
}

/// The Dockerfile's instructions with continuation lines joined.
fn dockerfile_instructions() -> Vec<String> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The HEALTHCHECK's exec-form command.
fn healthcheck_command() -> Vec<String> {
    let instructions = dockerfile_instructions();
    let check = instructions
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let cmd = &check[check.find(" CMD ").expect("HEALTHCHECK ... CMD") + 5..];
    serde_json::from_str(cmd.trim()).expect("exec-form HEALTHCHECK CMD (a JSON array)")
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_locked_and_checks_healthz() {
    let instructions = dockerfile_instructions();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|i| i.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains(" AS "),
        "the build stage is named: {}",
        froms[0]
    );
    let runtime_start = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let runtime = &instructions[runtime_start..];
    assert!(
        instructions[..runtime_start]
            .iter()
            .any(|i| i.starts_with("RUN ") && i.contains("cargo build --release --locked")),
        "the build stage runs cargo build --release --locked"
    );
    assert!(runtime
        .iter()
        .any(|i| i.starts_with("COPY --from=") && i.contains("hookgate")));
    // Without .cargo/config.toml jemalloc keeps freed pages for 10 s, and
    // without make it does not build at all.
    let build = &instructions[..runtime_start];
    assert!(
        build.iter().any(|i| i.starts_with("COPY .cargo ")),
        "the build stage copies .cargo/config.toml: {build:?}"
    );
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN ") && i.contains("install") && i.contains(" make")),
        "the build stage installs make for jemalloc: {build:?}"
    );
    assert!(runtime.iter().any(|i| i.contains("ca-certificates")));
    let user = runtime
        .iter()
        .rfind(|i| i.starts_with("USER "))
        .expect("USER in the runtime stage");
    let who = user["USER ".len()..].split(':').next().unwrap().trim();
    assert!(who != "root" && who != "0", "runs as {who}");
    let health = healthcheck_command();
    assert!(health.join(" ").contains("/healthz"), "{health:?}");
    assert!(runtime
        .iter()
        .any(|i| i.starts_with("ENTRYPOINT ") && i.contains("hookgate")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_healthcheck_probe_answers_for_a_running_admin_listener() {
    let command = healthcheck_command();
    let probe = |port: u16| {
        let command = command.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(&command[0])
                    .args(&command[1..])
                    .env("HOOKGATE_ADMIN_PORT", port.to_string())
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let gw = TestGateway::start(USAEPAY_SOURCE).await;
    let out = probe(gw.admin.port()).await;
    assert!(
        out.status.success(),
        "probe failed against a live admin listener: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing listening: the probe must fail, not hang or pass.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = probe(free).await;
    assert!(!out.status.success(), "probe passed with nothing listening");
    // A listener that answers something else than 200 (the webhook port
    // speaks TLS): not healthy either.
    let out = probe(gw.addr.port()).await;
    assert!(!out.status.success(), "probe passed against the TLS port");
    gw.stop().await;
}

#[test]
fn the_asyncapi_document_matches_the_schema_and_the_gateway() {
    let api = yaml_one("schemas/asyncapi.yaml");
    let version = api["asyncapi"].as_str().expect("asyncapi: version string");
    assert!(version.starts_with("3."), "AsyncAPI {version}");

    // The payload is the canonical-event schema, by reference.
    let message = &api["components"]["messages"]["canonicalEvent"];
    let payload = &message["payload"];
    assert_eq!(
        payload["schemaFormat"].as_str(),
        Some("application/schema+json;version=draft-2020-12")
    );
    let reference = payload["schema"]["$ref"].as_str().expect("payload $ref");
    let schema_path = repo("schemas").join(reference);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(&schema_path)
            .unwrap_or_else(|e| panic!("{}: {e}", schema_path.display())),
    )
    .unwrap();
    assert_eq!(schema["$id"], hookgate::canonical::DATASCHEMA);
    assert_eq!(
        message["contentType"].as_str(),
        Some(hookgate::canonical::CONTENT_TYPE)
    );

    // The channel: the exchange, with the routing key as its address.
    let channel = &api["channels"]["events"];
    assert_eq!(channel["address"].as_str(), Some("{source_id}.{type}"));
    for parameter in ["source_id", "type"] {
        assert!(
            !channel["parameters"][parameter].is_badvalue(),
            "channel parameter {parameter}"
        );
    }
    let exchange = &channel["bindings"]["amqp"]["exchange"];
    assert_eq!(exchange["name"].as_str(), Some(EXCHANGE));
    assert_eq!(exchange["type"].as_str(), Some("topic"));
    assert_eq!(exchange["durable"].as_bool(), Some(true));
    let operation = &api["operations"]["publishEvent"];
    assert_eq!(operation["action"].as_str(), Some("send"));
    assert_eq!(
        operation["channel"]["$ref"].as_str(),
        Some("#/channels/events")
    );
    assert_eq!(
        operation["bindings"]["amqp"]["deliveryMode"].as_i64(),
        Some(2)
    );
    assert_eq!(api["servers"]["local"]["protocol"].as_str(), Some("amqp"));

    // The header list is the one the consumers' page documents.
    let readme = read("docs/consumers.md");
    let headers: Vec<String> = message["headers"]["properties"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(headers.len(), 5, "{headers:?}");
    for header in &headers {
        assert!(
            readme.contains(&format!("`{header}`")),
            "{header} not in docs/consumers.md"
        );
    }

    // The examples are valid: types match the schema's pattern, the example
    // payload validates against the schema.
    let validator = crate::support::schema_validator();
    let type_validator =
        jsonschema::validator_for(&schema["$defs"]["eventType"]).expect("eventType compiles");
    for example in api["components"]["parameters"]["type"]["examples"]
        .as_vec()
        .unwrap()
    {
        let t = to_json(example);
        assert!(
            type_validator.is_valid(&t),
            "example type {t} is not canonical"
        );
    }
    for example in message["examples"].as_vec().expect("message examples") {
        let payload = to_json(&example["payload"]);
        let errors: Vec<String> = validator
            .iter_errors(&payload)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "example payload: {errors:?}");
        let example_headers = to_json(&example["headers"]);
        assert_eq!(example_headers["cloudEvents_id"], payload["id"]);
        assert_eq!(example_headers["cloudEvents_type"], payload["type"]);
    }
}
