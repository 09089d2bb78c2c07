//! The measured runs: the gateway under load, the gateway with its broker
//! away (the spool path and its drain), and the broker ceiling alone or
//! beside HTTP load. Each returns one [`Run`] with the figures read around it.

use std::path::{Path, PathBuf};

use crate::gateway::{Await, Gateway, Setup, Shape};
use crate::load::{Tools, Topology};
use crate::machine::{self, MachineTicks};
use crate::results::Run;
use crate::Fallible;
use hookgate::test_util::unique_name;

/// What every run shares: the tools, the gateway setup, the broker under
/// test (its processes, found by their AMQP ports) and the work dir.
pub struct Bench {
    /// Load and helpers.
    pub tools: Tools,
    /// Ports and certificate.
    pub setup: Setup,
    /// The broker's `url = ...` / `urls = [...]` line for gateway configs.
    pub broker_line: String,
    /// The broker's processes, whose CPU the runs report.
    pub broker_pids: Vec<u32>,
    /// Scratch files of this run.
    pub work: PathBuf,
    /// The port nothing listens on, for the spool path.
    pub dead_port: u16,
    /// The HTTP ceiling's port.
    pub ceiling_port: u16,
}

/// Which gateway and how it is set up for one run.
#[derive(Clone)]
pub struct Variant {
    /// The hookgate binary.
    pub bin: PathBuf,
    /// Its config's shape (the exchange is filled in per run).
    pub shape: Shape,
}

impl Bench {
    fn broker_ticks(&self) -> u64 {
        machine::cpu_ticks_of(&self.broker_pids)
    }

    fn per_request_us(ticks: u64, requests: f64) -> f64 {
        if requests > 0.0 {
            ticks as f64 / machine::clock_ticks_per_second() / requests * 1e6
        } else {
            0.0
        }
    }

    /// The gateway under wrk for `seconds` (with `delay_ms` think time per
    /// request), publishing to a fresh exchange and bound queue; then the
    /// accounting: every 200 a client saw, and every 200 the gateway counted,
    /// is on the queue, with no duplicate answer. wrk stops with up to one
    /// request in flight per connection: those may still be published, hence
    /// the bound of one per connection.
    pub fn gateway_run(
        &self,
        kind: &str,
        variant: &Variant,
        bodies: &Path,
        delay_ms: u64,
        seconds: u64,
    ) -> Fallible<Run> {
        let Topology {
            id,
            exchange,
            queue,
        } = self.tools.declare_fresh()?;
        let dir = self.work.join(format!("{kind}-{id}"));
        let shape = Shape {
            exchange: exchange.clone(),
            ..variant.shape.clone()
        };
        let config = crate::gateway::write_config(&dir, &self.setup, &shape)?;
        let mut gateway = Gateway::start(&variant.bin, &config, &self.setup, Await::Ready)?;
        let (cpu0, machine0, broker0) = (
            machine::cpu_ticks(gateway.pid()),
            MachineTicks::now(),
            self.broker_ticks(),
        );
        let mut run = self.tools.run_wrk(
            self.setup.port,
            bodies,
            delay_ms,
            seconds,
            &dir.join("wrk.txt"),
        )?;
        let (cpu1, machine1, broker1) = (
            machine::cpu_ticks(gateway.pid()),
            MachineTicks::now(),
            self.broker_ticks(),
        );
        run.kind = kind.to_owned();
        run.set("hwm_mib", machine::peak_rss_mib(gateway.pid()) as f64);
        run.set("rss_mib", machine::rss_mib(gateway.pid()) as f64);
        gateway.wait_spool_empty();
        let served = gateway.served_200()?;
        let spooled = gateway.metric("hookgate_spooled_total", "")?;
        let dedup = gateway.metric("hookgate_dedup_hits_total", "")?;
        gateway.stop();
        let count = self.tools.queue_count(&queue)?;
        self.tools.delete(&exchange, &queue);
        if let Some(stream) = &shape.archive {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["-q", "delete_queue", stream])
                .output();
        }
        let (requests, ok200) = (run.get("requests"), run.get("status_200"));
        run.set(
            "cpu_s",
            (cpu1 - cpu0) as f64 / machine::clock_ticks_per_second(),
        );
        run.set(
            "cpu_us_per_req",
            Self::per_request_us(cpu1 - cpu0, requests),
        );
        run.set(
            "broker_cpu_us_per_req",
            Self::per_request_us(broker1 - broker0, requests),
        );
        run.set(
            "machine_busy_pct",
            machine1.busy_pct_since(machine0).round(),
        );
        run.set("queue", count);
        run.set("served_200", served);
        run.set("unread_200", count - ok200);
        run.set("unanswered", count - served);
        run.set("spooled", spooled);
        run.set("dedup_hits", dedup);
        let connections = self.tools.connections as f64;
        let pass = ok200 <= served
            && served <= count
            && count <= ok200 + connections
            && run.get("dup") == 0.0
            && run.get("wraps") == 0.0
            && dedup == 0.0;
        run.verdict("accounting", pass);
        Ok(run)
    }

    /// The spool path: the broker URL points at a closed port, so every
    /// accepted event is fsynced to the spool. Then, if `drain`, the gateway
    /// restarts with the broker reachable and the spool must drain into the
    /// bound queue; the second run returned holds the drain's figures.
    pub fn spool_run(
        &self,
        kind: &str,
        bin: &Path,
        bodies: &Path,
        seconds: u64,
        drain: bool,
    ) -> Fallible<(Run, Option<Run>)> {
        if crate::port_answers(self.dead_port) {
            return Err(format!(
                "port {} answers; set BENCH_DEAD_PORT to a closed port",
                self.dead_port
            )
            .into());
        }
        let Topology {
            id,
            exchange,
            queue,
        } = self.tools.declare_fresh()?;
        let dir = self.work.join(format!("{kind}-{id}"));
        let dead = Shape {
            broker_line: format!(
                "url = \"amqp://guest:guest@127.0.0.1:{}/%2f\"",
                self.dead_port
            ),
            exchange: exchange.clone(),
            ..Shape::default()
        };
        let config = crate::gateway::write_config(&dir, &self.setup, &dead)?;
        let mut gateway = Gateway::start(bin, &config, &self.setup, Await::Healthy)?;
        let (cpu0, machine0) = (machine::cpu_ticks(gateway.pid()), MachineTicks::now());
        let mut run =
            self.tools
                .run_wrk(self.setup.port, bodies, 0, seconds, &dir.join("wrk.txt"))?;
        let (cpu1, machine1) = (machine::cpu_ticks(gateway.pid()), MachineTicks::now());
        run.kind = kind.to_owned();
        let served = gateway.served_200()?;
        let events = gateway.metric("hookgate_spool_events", "")?;
        let dedup = gateway.metric("hookgate_dedup_hits_total", "")?;
        run.set(
            "cpu_us_per_req",
            Self::per_request_us(cpu1 - cpu0, run.get("requests")),
        );
        run.set("hwm_mib", machine::peak_rss_mib(gateway.pid()) as f64);
        run.set("served_200", served);
        run.set("spool_events", events);
        run.set("dedup_hits", dedup);
        run.set(
            "machine_busy_pct",
            machine1.busy_pct_since(machine0).round(),
        );
        gateway.stop();
        let mut drained = None;
        if drain {
            crate::log(&format!(
                "spool drain: restarting with the broker reachable ({events} events)"
            ));
            let live = Shape {
                broker_line: self.broker_line.clone(),
                ..dead
            };
            let config = crate::gateway::write_config(&dir, &self.setup, &live)?;
            let started = std::time::Instant::now();
            let mut gateway = Gateway::start(bin, &config, &self.setup, Await::Healthy)?;
            let emptied = gateway.wait_spool_empty();
            let seconds = started.elapsed().as_secs_f64();
            gateway.stop();
            let count = self.tools.queue_count(&queue)?;
            let ok200 = run.get("status_200");
            let mut d = Run {
                kind: "drain".to_owned(),
                ..Run::default()
            };
            d.set("drain_seconds", (seconds * 10.0).round() / 10.0);
            d.set("drain_rate", (count / seconds).round());
            d.set("queue", count);
            d.set("served_200", served);
            d.set("wrk_200", ok200);
            d.verdict("drained", emptied);
            let connections = self.tools.connections as f64;
            let pass = emptied
                && count == events
                && ok200 <= served
                && served <= count
                && count <= ok200 + connections
                && run.get("dup") == 0.0
                && dedup == 0.0;
            d.verdict("accounting", pass);
            drained = Some(d);
        }
        self.tools.delete(&exchange, &queue);
        Ok((run, drained))
    }

    /// The minimal confirmed publisher for `seconds` on a fresh exchange and
    /// queue, with the broker's CPU per message and the machine's busy share.
    pub fn broker_ceiling_run(&self, kind: &str, seconds: u64) -> Fallible<Run> {
        let Topology {
            exchange, queue, ..
        } = self.tools.declare_fresh()?;
        let (machine0, broker0) = (MachineTicks::now(), self.broker_ticks());
        let mut run = self.tools.broker_ceiling(&exchange, seconds)?;
        let (machine1, broker1) = (MachineTicks::now(), self.broker_ticks());
        run.kind = kind.to_owned();
        run.set("queue", self.tools.queue_count(&queue)?);
        run.set(
            "broker_cpu_us_per_req",
            Self::per_request_us(broker1 - broker0, run.get("confirmed")),
        );
        run.set(
            "machine_busy_pct",
            machine1.busy_pct_since(machine0).round(),
        );
        self.tools.delete(&exchange, &queue);
        Ok(run)
    }

    /// The broker ceiling while wrk drives the HTTP ceiling at `delay_ms`
    /// think time: what serving HTTPS at the gateway's rate leaves of the
    /// broker on this shared machine (the co-located limit).
    pub fn beside_run(&self, seconds: u64, bodies: &Path, delay_ms: u64) -> Fallible<Run> {
        let _ceiling =
            self.tools
                .http_ceiling(self.ceiling_port, &self.setup.cert, &self.setup.key)?;
        // wrk runs 2 s longer on each side, so the broker run is inside it.
        let out = self
            .work
            .join(format!("{}.txt", unique_name("beside-http")));
        let wrk = self
            .tools
            .start_wrk(self.ceiling_port, bodies, delay_ms, seconds + 4, &out)?;
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut run = self.broker_ceiling_run("beside", seconds)?;
        let http = wrk.finish()?;
        run.set("http_rps", http.get("rps_200"));
        Ok(run)
    }

    /// The HTTP ceiling under wrk: the same TLS/HTTP stack doing no work.
    pub fn http_ceiling_run(&self, bodies: &Path, seconds: u64) -> Fallible<Run> {
        let ceiling =
            self.tools
                .http_ceiling(self.ceiling_port, &self.setup.cert, &self.setup.key)?;
        let (cpu0, machine0) = (machine::cpu_ticks(ceiling.pid()), MachineTicks::now());
        let out = self.work.join(format!("{}.txt", unique_name("http")));
        let mut run = self
            .tools
            .run_wrk(self.ceiling_port, bodies, 0, seconds, &out)?;
        let (cpu1, machine1) = (machine::cpu_ticks(ceiling.pid()), MachineTicks::now());
        run.kind = "http".to_owned();
        run.set(
            "cpu_us_per_req",
            Self::per_request_us(cpu1 - cpu0, run.get("requests")),
        );
        run.set("hwm_mib", machine::peak_rss_mib(ceiling.pid()) as f64);
        run.set(
            "machine_busy_pct",
            machine1.busy_pct_since(machine0).round(),
        );
        Ok(run)
    }
}
