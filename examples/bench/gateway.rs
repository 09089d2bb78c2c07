//! The gateway under test: its config (one USAePay source, TLS, quotas
//! that never cap the load, `[spool]` so dedup is on as in production), its
//! process, and its admin endpoint's metrics.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::Fallible;
use hookgate::test_util::unique_name;

/// The signing key and Basic credentials of the benchmark's source.
pub const SIG_KEY: &str = "example-signature-key";
/// The Basic user name.
pub const BASIC_USER: &str = "hook";
/// The Basic password.
pub const BASIC_PASS: &str = "bench-pass";
/// The source's webhook path.
pub const PATH: &str = "/webhooks/usaepay-main";

/// How one gateway run is configured.
#[derive(Clone, Default)]
pub struct Shape {
    /// The broker: `url = "..."` or `urls = [...]`.
    pub broker_line: String,
    /// The exchange the run publishes to.
    pub exchange: String,
    /// Without `[spool]` (and so without dedup).
    pub no_spool: bool,
    /// `[dedup] backend = "redis"` on this port.
    pub redis_port: Option<u16>,
    /// An `[archive]` stream of this name.
    pub archive: Option<String>,
}

/// Ports and files every gateway run shares.
pub struct Setup {
    /// The HTTPS port.
    pub port: u16,
    /// The admin port.
    pub admin_port: u16,
    /// The self-signed certificate and key.
    pub cert: PathBuf,
    /// The key.
    pub key: PathBuf,
    /// `RUST_LOG` for the gateway.
    pub rust_log: String,
}

/// Writes `<dir>/hookgate.toml` for a run.
pub fn write_config(dir: &Path, setup: &Setup, shape: &Shape) -> Fallible<PathBuf> {
    fs::create_dir_all(dir.join("spool"))?;
    let mut extra = String::new();
    if shape.no_spool {
        extra.push_str("# no [spool]: no spool, no dedup\n");
    } else {
        writeln!(extra, "[spool]\ndir = {:?}", dir.join("spool"))?;
    }
    if let Some(stream) = &shape.archive {
        writeln!(extra, "[archive]\nstream = {stream:?}\nmax_age = \"1h\"")?;
    }
    if let Some(port) = shape.redis_port {
        let prefix = format!("{}:", unique_name("bench"));
        writeln!(
            extra,
            "[dedup]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = {prefix:?}"
        )?;
    }
    let config = format!(
        r#"# Written by the benchmark: one USAePay source (HMAC + Basic), TLS,
# quotas raised so they never cap the load.
[server]
listen = "127.0.0.1:{port}"
tls_cert = {cert:?}
tls_key = {key:?}
ip_rate_limit = {{ per_second = 1000000, burst = 1000000 }}

[broker]
{broker}
exchange = {exchange:?}

[admin]
listen = "127.0.0.1:{admin}"

{extra}
[defaults]
rate_limit = {{ per_second = 1000000, burst = 1000000 }}

[[source]]
id = "usaepay-main"
vendor = "usaepay"
[source.auth]
hmac = {{ keys = [{SIG_KEY:?}] }}
basic = {{ username = {BASIC_USER:?}, password = {BASIC_PASS:?} }}
"#,
        port = setup.port,
        cert = setup.cert,
        key = setup.key,
        broker = shape.broker_line,
        exchange = shape.exchange,
        admin = setup.admin_port,
    );
    let path = dir.join("hookgate.toml");
    fs::write(&path, config)?;
    Ok(path)
}

/// A running gateway process and its admin endpoint.
pub struct Gateway {
    child: Child,
    admin: Admin,
}

/// What the gateway must say before a run starts.
#[derive(Clone, Copy)]
pub enum Await {
    /// `/readyz` ready (the broker is connected).
    Ready,
    /// `/healthz` ok (the process serves; the broker may be away).
    Healthy,
}

impl Gateway {
    /// Checks the config, starts `bin serve` with JSON logs to
    /// `<dir>/gateway.log`, and waits for it.
    pub fn start(bin: &Path, config: &Path, setup: &Setup, wait: Await) -> Fallible<Self> {
        for port in [setup.port, setup.admin_port] {
            if crate::port_answers(port) {
                return Err(
                    format!("port {port} is in use (set BENCH_PORT / BENCH_ADMIN_PORT)").into(),
                );
            }
        }
        let check = Command::new(bin)
            .args(["check-config", "--config"])
            .arg(config)
            .output()?;
        if !check.status.success() {
            return Err(format!(
                "check-config refused {}: {}",
                config.display(),
                String::from_utf8_lossy(&check.stderr)
            )
            .into());
        }
        let log_path = config.with_file_name("gateway.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("HOOKGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", &setup.rust_log)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut gateway = Self {
            child,
            admin: Admin::new(setup.admin_port)?,
        };
        let (path, want) = match wait {
            Await::Ready => ("/readyz", "\"ready\""),
            Await::Healthy => ("/healthz", "\"ok\""),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if gateway
                .admin
                .get(path)
                .is_ok_and(|body| body.contains(want))
            {
                return Ok(gateway);
            }
            if let Some(status) = gateway.child.try_wait()? {
                return Err(
                    format!("gateway exited ({status}); see {}", log_path.display()).into(),
                );
            }
            sleep(Duration::from_millis(100));
        }
        gateway.stop();
        Err(format!("gateway not {path} after 10 s; see {}", log_path.display()).into())
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sum of a metric's samples whose labels contain `filter`.
    pub fn metric(&self, name: &str, filter: &str) -> Fallible<f64> {
        let text = self.admin.get("/metrics")?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let named = series == name || series.starts_with(&format!("{name}{{"));
                (named && series.contains(filter))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum())
    }

    /// The gateway's own count of 200 answers, once in-flight requests have finished.
    pub fn served_200(&self) -> Fallible<f64> {
        settle(|| self.metric("hookgate_requests_total", "status=\"200\""))
    }

    /// Waits (up to 600 s) for the spool to be empty; false if it never is.
    pub fn wait_spool_empty(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            if self
                .metric("hookgate_spool_events", "")
                .is_ok_and(|n| n == 0.0)
            {
                return true;
            }
            sleep(Duration::from_millis(500));
        }
        false
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Reads a figure until two reads half a second apart agree (up to 10 s).
pub fn settle(mut read: impl FnMut() -> Fallible<f64>) -> Fallible<f64> {
    let mut last = read()?;
    for _ in 0..20 {
        sleep(Duration::from_millis(500));
        let now = read()?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// A plain-HTTP client of the admin endpoint, on a runtime of its own.
struct Admin {
    runtime: tokio::runtime::Runtime,
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
}

impl Admin {
    fn new(port: u16) -> Fallible<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // A fresh connection per read: the admin listener closes idle ones,
        // and a pooled connection it closed fails the next read.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Ok(Self {
            runtime,
            client,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    fn get(&self, path: &str) -> Fallible<String> {
        let uri: hyper::Uri = format!("{}{path}", self.base).parse()?;
        self.runtime.block_on(async {
            let answer = tokio::time::timeout(Duration::from_secs(2), async {
                let response = self.client.get(uri).await?;
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, Box<dyn std::error::Error>>(String::from_utf8_lossy(&body).into_owned())
            })
            .await??;
            Ok(answer)
        })
    }
}
