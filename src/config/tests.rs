use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "dev/cert.pem"
tls_key = "dev/key.pem"
max_body_bytes = 262144

[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
exchange = "hookgate.events"

[[source]]
id = "usaepay-main"
vendor = "usaepay"
[source.auth]
hmac = { keys = ["${USAEPAY_SIGNATURE_KEY}"] }
basic = { username = "hook", password = "${USAEPAY_BASIC_PASSWORD}" }
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "USAEPAY_SIGNATURE_KEY" => Some("sig-key".into()),
        "USAEPAY_BASIC_PASSWORD" => Some("basic-pass".into()),
        _ => None,
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match from_toml_with_env(text, &env) {
        Ok(_) => panic!("config was accepted"),
        Err(e) => e.0,
    }
}

/// `text` plus a second source, `nexio-main`, whose look-ups are
/// configured with `enrich_keys` on top of the required ones.
fn with_nexio_lookups(text: &str, enrich_keys: &str) -> String {
    format!(
        "{text}
[[source]]
id = \"nexio-main\"
vendor = \"nexio\"
auth = {{ token = \"0123456789abcdef0123456789abcdef\" }}
[source.enrich]
base_url = \"https://api.nexiopaysandbox.com\"
username = \"api-user@example.com\"
api_key = \"api-key\"
{enrich_keys}
"
    )
}

fn keys(text: &str) -> Vec<String> {
    errors(text).into_iter().map(|e| e.key).collect()
}

#[test]
fn the_documented_example_loads() {
    let settings = from_toml_with_env(GOOD, &env).expect("valid config");
    assert_eq!(settings.server.listen.port(), 8443);
    assert_eq!(settings.server.max_body_bytes, 262_144);
    assert_eq!(settings.broker.exchange, "hookgate.events");
    let source = settings.sources.get("usaepay-main").expect("source");
    assert_eq!(source.vendor, VendorKind::Usaepay);
    assert!(source.auth.methods().basic.is_some() && source.auth.methods().hmac.is_some());
}

#[test]
fn an_auth_table_with_no_method_is_refused_at_its_key() {
    let text = format!("{GOOD}\n[[source]]\nid = \"open\"\nvendor = \"stickypay\"\nauth = {{}}\n");
    assert_eq!(keys(&text), ["source[1].auth"]);
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let text = GOOD
        .replace("max_body_bytes = 262144\n", "")
        .replace("exchange = \"hookgate.events\"\n", "");
    let settings = from_toml_with_env(&text, &env).expect("valid config");
    assert_eq!(settings.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(settings.broker.exchange, "hookgate.events");
    // The documented connection deadlines (docs/configuration.md).
    assert_eq!(settings.server.write_timeout, Duration::from_secs(15));
    assert_eq!(settings.server.idle_timeout, Duration::from_secs(75));
}

#[test]
fn a_reload_keeps_unchanged_lookup_services_and_rebuilds_changed_ones() {
    let text = |ttl: u64| with_nexio_lookups(GOOD, &format!("cache_ttl_secs = {ttl}"));
    let enricher = |settings: &Settings| {
        let source = settings.sources.get("nexio-main").expect("nexio source");
        let enrichment = source.enrichment.as_ref().expect("enrichment");
        enrichment.enricher.clone()
    };
    let running = from_toml_with_env(&text(120), &env).expect("valid config");
    let mut same = from_toml_with_env(&text(120), &env).expect("valid config");
    assert!(!enricher(&same).same_service(&enricher(&running)));
    same.sources.inherit_state(&running.sources);
    assert!(enricher(&same).same_service(&enricher(&running)));

    let mut changed = from_toml_with_env(&text(60), &env).expect("valid config");
    changed.sources.inherit_state(&running.sources);
    assert!(!enricher(&changed).same_service(&enricher(&running)));
}

#[test]
fn a_zero_connection_deadline_is_refused_by_name() {
    let text = GOOD.replace(
        "max_body_bytes = 262144\n",
        "max_body_bytes = 262144\nwrite_timeout_ms = 0\nidle_timeout_ms = 0\n",
    );
    let found = keys(&text);
    assert!(
        found.contains(&"server.write_timeout_ms".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"server.idle_timeout_ms".to_string()),
        "{found:?}"
    );
}

#[test]
fn counts_beyond_their_bound_are_refused_by_name_not_panicked_on() {
    let text = GOOD
        .replace(
            "max_body_bytes = 262144\n",
            "max_body_bytes = 262144\nmax_connections = 3000000000000000000\n",
        )
        .replace(
            "exchange = \"hookgate.events\"\n",
            "exchange = \"hookgate.events\"\nchannels = 100000\n",
        );
    let text = with_nexio_lookups(&text, "max_concurrency = 5000000000");
    let errs = errors(&text);
    for key in [
        "server.max_connections",
        "broker.channels",
        "source[1].enrich.max_concurrency",
    ] {
        let err = errs.iter().find(|e| e.key == key);
        assert!(
            err.is_some_and(|e| e.message.starts_with("must be at most")),
            "{key}: {errs:?}"
        );
    }
    // The bounds themselves are accepted.
    let at_bound = text
        .replace("3000000000000000000", &MAX_CONNECTIONS_LIMIT.to_string())
        .replace("100000", &MAX_CHANNELS.to_string())
        .replace("5000000000", &MAX_LOOKUP_CONCURRENCY.to_string());
    from_toml_with_env(&at_bound, &env).expect("counts at their bound are valid");
}

#[test]
fn an_unset_variable_names_the_key_and_the_variable() {
    let text = GOOD.replace("USAEPAY_BASIC_PASSWORD", "NOT_SET_ANYWHERE");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].key, "source[0].auth.basic.password");
    assert!(errs[0].message.contains("NOT_SET_ANYWHERE"));
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let text = GOOD.replace("max_body_bytes", "max_bdy_bytes");
    let errs = errors(&text);
    assert_eq!(errs[0].key, "server.max_bdy_bytes", "{errs:?}");
    assert!(errs[0].to_string().contains("max_bdy_bytes"), "{errs:?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = GOOD
        .replace("127.0.0.1:8443", "localhost")
        .replace("amqp://guest", "http://guest")
        .replace("usaepay-main", "UsaEpay Main")
        .replace("vendor = \"usaepay\"", "vendor = \"paypal\"");
    let found = keys(&text);
    for key in [
        "server.listen",
        "broker.url",
        "source[0].id",
        "source[0].vendor",
    ] {
        assert!(
            found.contains(&key.to_string()),
            "{key} missing from {found:?}"
        );
    }
}

#[test]
fn a_source_without_any_auth_is_refused() {
    let text = GOOD
        .replace("[source.auth]\n", "")
        .replace("hmac = { keys = [\"${USAEPAY_SIGNATURE_KEY}\"] }\n", "")
        .replace(
            "basic = { username = \"hook\", password = \"${USAEPAY_BASIC_PASSWORD}\" }\n",
            "",
        );
    assert_eq!(keys(&text), vec!["source[0].auth"]);
    let empty_auth = GOOD
        .replace("hmac = { keys = [\"${USAEPAY_SIGNATURE_KEY}\"] }\n", "")
        .replace(
            "basic = { username = \"hook\", password = \"${USAEPAY_BASIC_PASSWORD}\" }\n",
            "",
        );
    assert_eq!(keys(&empty_auth), vec!["source[0].auth"]);
}

#[test]
fn duplicate_ids_and_half_tls_are_named() {
    let text = format!(
        "{}\n[[source]]\nid = \"usaepay-main\"\nvendor = \"usaepay\"\nauth = {{ token = \"0123456789abcdef0123\" }}\n",
        GOOD.replace("tls_key = \"dev/key.pem\"\n", "")
    );
    let found = keys(&text);
    assert!(found.contains(&"server.tls_key".to_string()), "{found:?}");
    assert!(found.contains(&"source[1].id".to_string()), "{found:?}");
}

#[test]
fn weak_tokens_bad_cidrs_and_empty_keys_are_named() {
    let text = GOOD.replace(
        "hmac = { keys = [\"${USAEPAY_SIGNATURE_KEY}\"] }",
        "hmac = { keys = [\"k1\", \"\"] }\ntoken = \"short\"\nip_allow = [\"10.0.0.0/8\", \"not-an-ip\"]",
    );
    let found = keys(&text);
    for key in [
        "source[0].auth.hmac.keys[1]",
        "source[0].auth.token",
        "source[0].auth.ip_allow[1]",
    ] {
        assert!(
            found.contains(&key.to_string()),
            "{key} missing from {found:?}"
        );
    }
}

#[test]
fn a_syntax_error_says_where_without_echoing_the_line() {
    let text = GOOD.replace(
        "password = \"${USAEPAY_BASIC_PASSWORD}\"",
        "password = \"inline-hunter2",
    );
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].message.starts_with("TOML at line "),
        "{}",
        found[0].message
    );
    assert!(
        !found[0].message.contains("hunter2"),
        "{}",
        found[0].message
    );
    let typed = GOOD.replace("max_body_bytes = 262144", "max_body_bytes = \"hunter2\"");
    let found = errors(&typed);
    assert!(
        !found[0].message.contains("hunter2"),
        "{}",
        found[0].message
    );
    assert!(found[0].message.contains("line 6"), "{}", found[0].message);
}

#[test]
fn the_body_budget_must_hold_at_least_one_full_body() {
    let small = GOOD.replace(
        "max_body_bytes = 262144",
        "max_body_bytes = 262144\nmax_buffered_body_bytes = 1000",
    );
    assert_eq!(keys(&small), ["server.max_buffered_body_bytes"]);
    let settings = from_toml_with_env(GOOD, &env).expect("valid config");
    assert_eq!(
        settings.server.max_buffered_body_bytes,
        DEFAULT_MAX_BUFFERED_BODY_BYTES
    );
}

#[test]
fn a_cluster_is_a_list_of_urls_amqps_included() {
    let text = GOOD.replace(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "urls = [\"amqp://guest:guest@rabbit-1:5672/%2f\", \"amqps://u:p@rabbit-2/%2f\"]",
    );
    let settings = from_toml_with_env(&text, &env).expect("valid config");
    let names: Vec<&str> = settings
        .broker
        .endpoints
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["rabbit-1:5672", "rabbit-2:5671"]);
    assert_eq!(
        settings
            .broker
            .endpoints
            .iter()
            .map(|e| e.tls)
            .collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn broker_endpoint_mistakes_name_their_key() {
    let both = GOOD.replace(
        "exchange = \"hookgate.events\"",
        "urls = [\"amqp://guest:guest@rabbit-1:5672/%2f\"]\nexchange = \"hookgate.events\"",
    );
    assert_eq!(keys(&both), ["broker.urls"]);
    let neither = GOOD.replace("url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n", "");
    assert_eq!(keys(&neither), ["broker.url"]);
    let second_bad = GOOD.replace(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "urls = [\"amqp://guest:guest@rabbit-1:5672/%2f\", \"amqp://guest:hunter2@rabbit-2:port/%2f\"]",
    );
    let found = errors(&second_bad);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "broker.urls[1]");
    assert!(
        !found[0].message.contains("hunter2"),
        "{}",
        found[0].message
    );
    let empty = GOOD.replace(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "urls = []",
    );
    assert_eq!(keys(&empty), ["broker.urls"]);
}

#[test]
fn broker_tls_files_are_read_at_load_and_named_when_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let amqps = GOOD.replace("url = \"amqp://", "url = \"amqps://");
    let with = |keys_text: &str| {
        amqps.replace(
            "exchange = \"hookgate.events\"",
            &format!("exchange = \"hookgate.events\"\n{keys_text}"),
        )
    };
    let missing = with("ca_file = \"/nonexistent/ca.pem\"");
    let found = errors(&missing);
    assert_eq!(found[0].key, "broker.ca_file");
    assert!(
        found[0].message.contains("/nonexistent/ca.pem"),
        "{found:?}"
    );
    let garbage = with(&format!("ca_file = \"{}\"", not_pem.display()));
    assert_eq!(keys(&garbage), ["broker.ca_file"]);
    let half = with(&format!("client_cert = \"{}\"", not_pem.display()));
    assert!(keys(&half).contains(&"broker.client_key".to_owned()));

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let good = with(&format!("ca_file = \"{}\"", ca.display()));
    let settings = from_toml_with_env(&good, &env).expect("valid config");
    assert_eq!(
        settings.broker.tls.ca_pem.as_deref(),
        Some(cert.pem().as_str())
    );
    // A CA for a broker that is only reached over plain amqp:// is a mistake.
    let plain = GOOD.replace(
        "exchange = \"hookgate.events\"",
        &format!(
            "exchange = \"hookgate.events\"\nca_file = \"{}\"",
            ca.display()
        ),
    );
    assert_eq!(keys(&plain), ["broker.ca_file"]);
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let settings = from_toml_with_env(GOOD, &env).expect("valid config");
    let debug = format!("{settings:?}");
    assert!(!debug.contains("sig-key"), "{debug}");
    assert!(!debug.contains("basic-pass"), "{debug}");
    assert!(!debug.contains("guest:guest"), "{debug}");
}

#[test]
fn the_example_config_in_deploy_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/config.example.toml"
    ))
    .expect("deploy/config.example.toml exists");
    let any_env = |_: &str| Some("0123456789abcdef0123456789".to_string());
    if let Err(e) = from_toml_with_env(&text, &any_env) {
        panic!("deploy/config.example.toml is invalid: {e}");
    }
}

#[test]
fn every_unknown_key_is_reported_with_its_path_beside_other_problems() {
    let text = GOOD
        .replace("max_body_bytes = 262144", "max_body_bytes = 262144\nmax_bdoy = 1")
        .replace(
            "exchange = \"hookgate.events\"",
            "exchange = \"hookgate.events\"\nconfirm_timout_ms = 5",
        )
        .replace("[source.auth]", "rate_limt = 3\n[source.auth]")
        .replace("hmac = { keys", "hmac = { tolerence_secs = 1, keys")
        + "\n[[source]]\nid = \"second\"\nvendor = \"nope\"\nauth = { token = \"0123456789abcdef0123456789abcdef\", tokne = \"x\" }\n";
    let found = errors(&text);
    let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "server.max_bdoy",
        "broker.confirm_timout_ms",
        "source[0].rate_limt",
        "source[0].auth.hmac.tolerence_secs",
        "source[1].auth.tokne",
    ] {
        let error = found
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("{key} not reported: {keys:?}"));
        assert!(error.message.starts_with("unknown key"), "{error}");
    }
    assert!(
        keys.contains(&"source[1].vendor"),
        "the other problems are still listed: {keys:?}"
    );
    // The known keys were read: none of them is reported.
    assert!(!keys.contains(&"server.max_body_bytes"), "{keys:?}");
}

#[test]
fn standard_webhooks_keys_are_checked_and_any_vendor_may_use_them() {
    let source = |auth: &str| {
        format!(
            "{GOOD}\n[[source]]\nid = \"sticky-svix\"\nvendor = \"stickypay\"\nauth = {{ {auth} }}\n"
        )
    };
    let ok = source(r#"standard_webhooks = { keys = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] }"#);
    let settings = from_toml_with_env(&ok, &env).unwrap();
    let sticky = settings.sources.get("sticky-svix").unwrap();
    assert!(sticky.auth.methods().standard_webhooks.is_some());
    assert_eq!(
        keys(&source(
            r#"standard_webhooks = { keys = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64"] }"#
        )),
        ["source[1].auth.standard_webhooks.keys[1]"]
    );
    assert_eq!(
        keys(&source(r#"standard_webhooks = { keys = [] }"#)),
        ["source[1].auth.standard_webhooks.keys"]
    );
    assert_eq!(
        keys(&source(
            r#"standard_webhooks = { keys = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], tolerance_secs = 0 }"#
        )),
        ["source[1].auth.standard_webhooks.tolerance_secs"]
    );
    let errors = errors(&source(
        r#"standard_webhooks = { keys = ["whsec_c2hvcnQ="] }"#,
    ));
    assert!(errors[0].message.contains("24 to 64"), "{}", errors[0]);
    assert!(
        !errors[0].to_string().contains("c2hvcnQ"),
        "the key is not echoed"
    );
}

#[test]
fn lookup_paths_are_the_vendors_kinds_and_vendors_without_lookups_refuse_them() {
    let text = with_nexio_lookups(
        GOOD,
        "paths = { payout = \"/payout/v9/{id}\", chargeback = \"/chargeback/{id}\" }",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "source[1].enrich.paths.chargeback");
    assert!(errs[0].message.contains("transaction, payout"), "{errs:?}");

    let text = with_nexio_lookups(GOOD, "paths = { payout = \"/payout/v9/{id}\" }");
    let settings = from_toml_with_env(&text, &env).expect("a known kind is accepted");
    let source = settings.sources.get("nexio-main").unwrap();
    let enricher = &source.enrichment.as_ref().unwrap().enricher;
    let shown = format!("{enricher:?}");
    assert!(shown.contains("/payout/v9/{id}"), "{shown}");
    assert!(
        shown.contains("/transaction/v3/{id}"),
        "defaults stay: {shown}"
    );

    let usaepay_with_lookups =
        with_nexio_lookups(GOOD, "").replace("vendor = \"nexio\"", "vendor = \"usaepay\"");
    let errs = errors(&usaepay_with_lookups);
    assert!(
        errs.iter()
            .any(|e| e.key == "source[1].enrich"
                && e.message.contains("`usaepay` sends whole records")),
        "{errs:?}"
    );
}

#[test]
fn a_shared_dedup_window_needs_a_redis_url_and_names_what_is_wrong() {
    let shared = |keys: &str| format!("{GOOD}\n[dedup]\n{keys}\n");
    let settings = from_toml_with_env(
        &shared("backend = \"redis\"\nredis_url = \"redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0\""),
        &|name| {
            (name == "REDIS_PASSWORD")
                .then(|| "s3cret".to_owned())
                .or_else(|| env(name))
        },
    )
    .expect("a shared window loads");
    let window = settings.shared_dedup.as_ref().expect("shared");
    assert!(settings.dedup.is_none(), "no local window beside it");
    assert_eq!(window.key_prefix, "hookgate:dedup:");
    assert_eq!(window.window, Duration::from_secs(73 * 3600));
    assert!(window.pending_ttl > settings.broker.confirm_timeout);
    assert!(
        !format!("{window:?}").contains("s3cret"),
        "the URL's password never prints"
    );

    assert_eq!(keys(&shared("backend = \"redis\"")), ["dedup.redis_url"]);
    assert_eq!(
        keys(&shared(
            "backend = \"redis\"\nredis_url = \"http://127.0.0.1\""
        )),
        ["dedup.redis_url"]
    );
    assert_eq!(keys(&shared("backend = \"memcached\"")), ["dedup.backend"]);
    assert_eq!(
        keys(&shared(
            "backend = \"redis\"\nredis_url = \"redis://127.0.0.1\"\ndir = \"/tmp\""
        )),
        ["dedup.dir"]
    );
}

#[test]
fn the_archive_has_documented_defaults_and_names_a_bad_age() {
    let settings = from_toml_with_env(&format!("{GOOD}\n[archive]\n"), &env).unwrap();
    let archive = settings
        .broker
        .archive
        .as_ref()
        .expect("an [archive] table turns it on");
    assert_eq!(
        (
            archive.stream.as_str(),
            archive.max_age.as_str(),
            archive.max_bytes
        ),
        ("hookgate.archive", "7D", None)
    );
    assert!(from_toml_with_env(GOOD, &env)
        .unwrap()
        .broker
        .archive
        .is_none());
    assert_eq!(
        keys(&format!("{GOOD}\n[archive]\nmax_age = \"7 days\"\n")),
        ["archive.max_age"]
    );
    assert_eq!(
        keys(&format!(
            "{GOOD}\n[archive]\nstream = \"amq.x\"\nmax_bytes = 0\n"
        )),
        ["archive.stream", "archive.max_bytes"]
    );
}
