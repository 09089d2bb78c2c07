//! The config loader on arbitrary text: never panics, and every refusal
//! names at least one key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Variables starting with `UNSET` are missing; others expand to a
    // value derived from their name (which may itself be hostile).
    let env = |name: &str| (!name.starts_with("UNSET")).then(|| format!("{name}{name}"));
    if let Err(errors) = hookgate::config::from_toml_with_env(text, &env) {
        assert!(!errors.0.is_empty(), "a refusal lists its problems");
        for e in &errors.0 {
            assert!(!e.key.is_empty(), "every problem names a key: {e:?}");
        }
        let _ = errors.to_string();
    }
});
