//! The `hookgate` binary as an operator runs it.

use std::process::Command;

fn hookgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.env_remove("RUST_LOG");
    cmd
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
    let out = hookgate()
        .args(["check-config", "--config"])
        .arg(bad.path())
        .output()
        .unwrap();
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
    let out = hookgate()
        .args(["serve", "--config"])
        .arg(bad.path())
        .output()
        .unwrap();
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
    let out = hookgate()
        .args(["serve", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls_cert") && stderr.contains("/nonexistent/cert.pem"),
        "{stderr}"
    );
}
