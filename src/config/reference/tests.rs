use super::*;

/// A TOML document setting `keys` (each `Some(value)`), sections as dotted
/// keys at the root and `source.` keys inside the `[[source]]` tables given.
fn document(root: &[(&str, String)], sources: &[Vec<(&str, String)>]) -> String {
    let mut out = String::new();
    for (key, value) in root {
        let _ = writeln!(out, "{key} = {value}");
    }
    for source in sources {
        out.push_str("\n[[source]]\n");
        for (key, value) in source {
            let _ = writeln!(out, "{key} = {value}");
        }
    }
    out
}

#[test]
fn the_generated_file_is_the_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == markdown(),
        "docs/configuration.md is stale: run `cargo run -q -- config-reference > docs/configuration.md`"
    );
}

#[test]
fn every_documented_key_is_one_the_loader_reads() {
    let all = keys();
    let root: Vec<(&str, String)> = all
        .iter()
        .filter(|k| !k.key.starts_with("source."))
        .map(|k| {
            (
                k.key.as_str(),
                k.value()
                    .unwrap_or_else(|| panic!("{} has no value", k.key)),
            )
        })
        .collect();
    let source: Vec<(&str, String)> = all
        .iter()
        .filter_map(|k| Some((k.key.strip_prefix("source.")?, k.value()?)))
        .collect();
    assert_eq!(
        source.len(),
        all.iter().filter(|k| k.key.starts_with("source.")).count(),
        "every source key has a value to try"
    );
    let text = document(&root, &[source]);
    let mut unknown = Vec::new();
    let parsed: Result<super::super::RawConfig, _> =
        serde_ignored::deserialize(toml::Deserializer::new(&text), |path| {
            unknown.push(path.to_string())
        });
    parsed.unwrap_or_else(|e| panic!("a documented value is not accepted: {e}\n{text}"));
    assert!(unknown.is_empty(), "documented but never read: {unknown:?}");
    // And a misspelt key is seen by the same check.
    let mut seen = Vec::new();
    let _: Result<super::super::RawConfig, _> = serde_ignored::deserialize(
        toml::Deserializer::new(&text.replace("server.max_body_bytes", "server.max_bdoy")),
        |path| seen.push(path.to_string()),
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn setting_every_key_to_its_documented_default_changes_nothing() {
    let base_root: Vec<(&str, String)> = vec![
        ("server.listen", "\"127.0.0.1:8443\"".into()),
        (
            "broker.url",
            "\"amqp://guest:guest@127.0.0.1:5672/%2f\"".into(),
        ),
        ("admin.token", "\"admin-token-0123456789\"".into()),
        ("spool.dir", "\"/tmp/hookgate-reference-spool\"".into()),
        // The [archive] table exists only when it is written.
        ("archive.max_bytes", "10737418240".into()),
    ];
    let base_sources = |vendor: VendorKind| -> Vec<(&str, String)> {
        let mut source = vec![
            ("id", format!("\"{}-src\"", vendor.name())),
            ("vendor", format!("\"{}\"", vendor.name())),
            ("auth.token", "\"0123456789abcdef0123456789abcdef\"".into()),
        ];
        if vendor == VendorKind::Nexio {
            source.push((
                "enrich.base_url",
                "\"https://api.nexiopaysandbox.com\"".into(),
            ));
            source.push(("enrich.username", "\"api-user@example.com\"".into()));
            source.push(("enrich.api_key", "\"api-key\"".into()));
        }
        source
    };
    let defaults: Vec<KeyDoc> = keys()
        .into_iter()
        .filter(|k| matches!(k.default, KeyDefault::Value(_)))
        .collect();
    let mut explicit_root = base_root.clone();
    explicit_root.extend(
        defaults
            .iter()
            .filter(|k| !k.key.starts_with("source."))
            .map(|k| (k.key.as_str(), k.value().unwrap())),
    );
    let vendors = [
        VendorKind::Strictly,
        VendorKind::Stickypay,
        VendorKind::Nexio,
    ];
    let plain: Vec<_> = vendors.iter().map(|v| base_sources(*v)).collect();
    let explicit: Vec<_> = vendors
        .iter()
        .map(|v| {
            let mut source = base_sources(*v);
            source.extend(defaults.iter().filter_map(|k| {
                let key = k.key.strip_prefix("source.")?;
                // A tolerance needs its method's keys; both are checked
                // below, on a source that can sign.
                let signature_key =
                    key.starts_with("auth.hmac") || key.starts_with("auth.standard_webhooks");
                let applies = k.vendor.is_none_or(|only| only == *v) && !signature_key;
                applies.then(|| (key, k.value().unwrap()))
            }));
            source
        })
        .collect();
    // Everything the loader built, sources in id order (they live in a map).
    let load = |text: &str| {
        let settings = crate::config::from_toml_with_env(text, &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut sources: Vec<String> = settings.sources.iter().map(|s| format!("{s:?}")).collect();
        sources.sort();
        format!(
            "{:?} {:?} {:?} {:?} {:?} {sources:?}",
            settings.server, settings.broker, settings.admin, settings.spool, settings.dedup
        )
    };
    let a = load(&document(&base_root, &plain));
    let b = load(&document(&explicit_root, &explicit));
    assert_eq!(a, b, "a documented default is not the loader's default");

    // The signature methods' tolerances, each on a source that can use it.
    for (method, keys) in [
        ("hmac", "[\"signature-key\"]"),
        (
            "standard_webhooks",
            "[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
        ),
    ] {
        let signed = |tolerance: Option<String>| {
            let mut source = vec![
                ("id", "\"usaepay-src\"".to_owned()),
                ("vendor", "\"usaepay\"".to_owned()),
                (
                    if method == "hmac" {
                        "auth.hmac.keys"
                    } else {
                        "auth.standard_webhooks.keys"
                    },
                    keys.to_owned(),
                ),
            ];
            if let Some(t) = tolerance {
                let key = if method == "hmac" {
                    "auth.hmac.tolerance_secs"
                } else {
                    "auth.standard_webhooks.tolerance_secs"
                };
                source.push((key, t));
            }
            load(&document(&base_root, &[source]))
        };
        let documented = defaults
            .iter()
            .find(|k| k.key == format!("source.auth.{method}.tolerance_secs"))
            .unwrap_or_else(|| panic!("{method}.tolerance_secs is documented"));
        assert_eq!(signed(None), signed(documented.value()), "{method}");
        // The comparison has teeth: a value other than the default shows.
        assert_ne!(signed(None), signed(Some("301".to_owned())), "{method}");
    }
}

/// Dotted keys of a parsed TOML document, stopping at documented keys (an
/// inline table such as `rate_limit = { .. }` is one key).
fn leaves(value: &toml::Value, at: String, documented: &[&str], out: &mut Vec<String>) {
    if documented.contains(&at.as_str()) {
        out.push(at);
        return;
    }
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                leaves(v, path, documented, out);
            }
        }
        toml::Value::Array(items) if at == "source" => {
            for item in items {
                leaves(item, at.clone(), documented, out);
            }
        }
        _ => out.push(at),
    }
}

#[test]
fn the_example_config_uses_only_documented_keys_and_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let all = keys();
    let documented: Vec<&str> = all.iter().map(|k| k.key.as_str()).collect();
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    let mut found = Vec::new();
    leaves(&parsed, String::new(), &documented, &mut found);
    let undocumented: Vec<&String> = found
        .iter()
        .filter(|k| !documented.contains(&k.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "undocumented keys in the example: {undocumented:?}"
    );
    assert!(found.len() >= 12, "{found:?}");

    // Commented-out keys show what leaving them out means: their default,
    // unless the comment says the value is an example.
    let mut section = String::new();
    let mut checked = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header
                .trim_matches(|c| c == '[' || c == ']')
                .split(']')
                .next()
                .unwrap()
                .to_owned();
            continue;
        }
        let Some(commented) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((name, rest)) = commented.split_once(" = ") else {
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let key = format!("{section}.{name}");
        let doc = all
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("`{key}`, commented in the example, is not documented"));
        let (value, note) = rest.split_once(" #").unwrap_or((rest, ""));
        let value = value.split(';').next().unwrap().trim();
        if let KeyDefault::Value(default) = &doc.default {
            if note.contains("e.g.") {
                continue;
            }
            let parse = |v: &str| toml::from_str::<toml::Table>(&format!("v = {v}")).unwrap();
            assert_eq!(
                parse(value),
                parse(default),
                "`# {key} = {value}` in the example is not its default"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "commented defaults checked: {checked}");
}
