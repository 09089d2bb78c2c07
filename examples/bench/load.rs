//! The load and the helpers around it: wrk with `benches/support/wrk.lua`,
//! the signed request files (`bench_bodies`), queue housekeeping
//! (`bench_queue`), the broker ceiling and the HTTP ceiling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::gateway::{Gateway, BASIC_PASS, BASIC_USER, PATH, SIG_KEY};
use crate::results::Run;
use crate::Fallible;
use hookgate::test_util::unique_name;

/// One run's own exchange and bound queue, and the id that names them
/// (and the run's work dir): no two runs share broker state.
pub struct Topology {
    /// Unique to the run.
    pub id: String,
    /// The gateway's exchange, `hookgate.<id>`.
    pub exchange: String,
    /// The durable queue bound to it with `#`, `<id>`.
    pub queue: String,
}

/// Where the tools are and how wrk drives the load.
pub struct Tools {
    /// `target/release/examples`.
    pub examples: PathBuf,
    /// The wrk script.
    pub lua: PathBuf,
    /// wrk threads.
    pub threads: u64,
    /// Keep-alive connections.
    pub connections: u64,
    /// The broker the helpers talk to.
    pub amqp_url: String,
    /// `quorum` or `classic`.
    pub queue_type: String,
}

/// How long a wrk run lasts.
#[derive(Clone, Copy)]
pub enum Length {
    /// `-d` seconds, cycling through the bodies.
    Seconds(u64),
    /// Every body once, then stop (`BENCH_ONCE=1`).
    Once,
}

impl Tools {
    fn example(&self, name: &str) -> Command {
        let mut command = Command::new(self.examples.join(name));
        command
            .env("BENCH_AMQP_URL", &self.amqp_url)
            .env("BENCH_QUEUE_TYPE", &self.queue_type);
        command
    }

    /// Writes `count` signed requests into `<prefix>.<thread>` files.
    pub fn bodies(&self, count: u64, prefix: &Path) -> Fallible<()> {
        let status = self
            .example("bench_bodies")
            .arg(count.to_string())
            .arg(prefix)
            .args([SIG_KEY, &self.threads.to_string()])
            .stderr(Stdio::null())
            .status()?;
        ok(status, "bench_bodies")
    }

    /// Declares a fresh exchange for the gateway and a durable queue bound
    /// to it with `#`, named for this run alone.
    pub fn declare_fresh(&self) -> Fallible<Topology> {
        let id = unique_name("bench");
        let topology = Topology {
            exchange: format!("hookgate.{id}"),
            queue: id.clone(),
            id,
        };
        let status = self
            .example("bench_queue")
            .args(["declare", &topology.exchange, &topology.queue])
            .stderr(Stdio::null())
            .status()?;
        ok(status, "bench_queue declare")?;
        Ok(topology)
    }

    /// Deletes them again.
    pub fn delete(&self, exchange: &str, queue: &str) {
        let _ = self
            .example("bench_queue")
            .args(["delete", exchange, queue])
            .stderr(Stdio::null())
            .status();
    }

    /// The queue's message count, once two reads agree.
    pub fn queue_count(&self, queue: &str) -> Fallible<f64> {
        crate::gateway::settle(|| {
            let out = self
                .example("bench_queue")
                .args(["count", queue])
                .output()?;
            ok(out.status, "bench_queue count")?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        })
    }

    /// The minimal confirmed publisher for `seconds` on `exchange`.
    pub fn broker_ceiling(&self, exchange: &str, seconds: u64) -> Fallible<Run> {
        let out = self
            .example("bench_broker_ceiling")
            .args([
                exchange,
                &seconds.to_string(),
                "4",
                &self.connections.to_string(),
            ])
            .output()?;
        ok(out.status, "bench_broker_ceiling")?;
        Run::parse("broker", "BROKER ", &String::from_utf8_lossy(&out.stdout))
            .ok_or_else(|| "bench_broker_ceiling printed no BROKER line".into())
    }

    /// Starts the do-nothing TLS/HTTP server on `port`.
    pub fn http_ceiling(&self, port: u16, cert: &Path, key: &Path) -> Fallible<Ceiling> {
        if crate::port_answers(port) {
            return Err(format!("port {port} is in use (set BENCH_CEILING_PORT)").into());
        }
        let child = self
            .example("bench_http_ceiling")
            .arg(format!("127.0.0.1:{port}"))
            .args([cert, key])
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !crate::port_answers(port) && Instant::now() < deadline {
            sleep(Duration::from_millis(100));
        }
        Ok(Ceiling(child))
    }

    fn wrk(
        &self,
        port: u16,
        bodies: &Path,
        delay_ms: u64,
        length: Length,
        out: &Path,
    ) -> Fallible<Child> {
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASS}"));
        let seconds = match length {
            Length::Seconds(s) => s,
            Length::Once => 3600,
        };
        let mut command = Command::new("wrk");
        command
            .env("BENCH_BODIES", bodies)
            .env("BENCH_PATH", PATH)
            .env("BENCH_AUTH", format!("Basic {auth}"))
            .env("BENCH_DELAY_MS", delay_ms.to_string())
            .env(
                "BENCH_ONCE",
                if matches!(length, Length::Once) {
                    "1"
                } else {
                    "0"
                },
            )
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{seconds}s"))
            .args(["--timeout", "10s", "--latency", "-s"])
            .arg(&self.lua)
            .arg(format!("https://127.0.0.1:{port}{PATH}"))
            .stdout(std::fs::File::create(out)?)
            .stderr(Stdio::null());
        Ok(command.spawn()?)
    }

    /// Starts wrk for `seconds` against `port`; [`Wrk::finish`] reads its result.
    pub fn start_wrk(
        &self,
        port: u16,
        bodies: &Path,
        delay_ms: u64,
        seconds: u64,
        out: &Path,
    ) -> Fallible<Wrk> {
        let child = self.wrk(port, bodies, delay_ms, Length::Seconds(seconds), out)?;
        Ok(Wrk {
            child,
            out: out.to_owned(),
        })
    }

    /// wrk for `seconds` against `port`, waited for.
    pub fn run_wrk(
        &self,
        port: u16,
        bodies: &Path,
        delay_ms: u64,
        seconds: u64,
        out: &Path,
    ) -> Fallible<Run> {
        self.start_wrk(port, bodies, delay_ms, seconds, out)?
            .finish()
    }

    /// wrk sends every body once. Its threads stop when their files are used
    /// up, but wrk itself sleeps out `-d`, so once the gateway has seen no new
    /// request for a second wrk gets SIGINT, which ends it with its report.
    pub fn run_once(
        &self,
        gateway: &Gateway,
        port: u16,
        bodies: &Path,
        out: &Path,
    ) -> Fallible<Run> {
        let mut child = self.wrk(port, bodies, 0, Length::Once, out)?;
        let mut seen = -1.0;
        while child.try_wait()?.is_none() {
            sleep(Duration::from_secs(1));
            let now = gateway.metric("hookgate_requests_total", "")?;
            if now == seen {
                let _ = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
            }
            seen = now;
        }
        Wrk {
            child,
            out: out.to_owned(),
        }
        .finish()
    }
}

/// A wrk run under way.
pub struct Wrk {
    child: Child,
    out: PathBuf,
}

impl Wrk {
    /// Waits for wrk and reads its `BENCH` line.
    pub fn finish(mut self) -> Fallible<Run> {
        let status = self.child.wait()?;
        let text = std::fs::read_to_string(&self.out)?;
        if !status.success() && !text.contains("BENCH ") {
            return Err(format!("wrk failed ({status}): {}", tail(&text)).into());
        }
        Run::parse("wrk", "BENCH ", &text)
            .ok_or_else(|| format!("wrk printed no BENCH line: {}", tail(&text)).into())
    }
}

/// The HTTP ceiling server, stopped when dropped.
pub struct Ceiling(Child);

impl Ceiling {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(status: std::process::ExitStatus, what: &str) -> Fallible<()> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})").into())
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}
