//! A run's report: every figure as JSON, and the summary text rendered from
//! that JSON alone (so BENCHMARKS.md's block can be rebuilt from its file).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::knobs::{Knobs, Mode};
use crate::results::{max, median, of, pct, range, trim, verdicts, Run};
use crate::{log, Fallible};

const BEGIN: &str = "<!-- bench:begin";
const END: &str = "<!-- bench:end -->";

/// Everything one benchmark run measured, and what it ran on.
#[derive(Serialize, Deserialize, Default)]
pub struct Report {
    /// Which measurement this is; decides how it renders.
    pub mode: Mode,
    /// When the run started (UTC, to the minute).
    pub when: String,
    /// The commit measured, marked when `src/` had changes on top.
    pub git: String,
    /// CPU model, cores and memory of the machine.
    pub machine: String,
    /// The compiler the binaries were built with.
    pub rustc: String,
    /// The command line (with its `BENCH_*` knobs) that reruns this.
    pub command: String,
    /// Load average before waiting for the machine to settle.
    pub load_before_wait: String,
    /// Load average when measuring began.
    pub load_start: String,
    /// Load average when measuring ended.
    pub load_end: String,
    /// Seconds of load per measured run.
    pub seconds: u64,
    /// wrk's connections.
    pub connections: u64,
    /// wrk's threads.
    pub threads: u64,
    /// Rounds of each kind of run; figures are medians over them.
    pub rounds: u64,
    /// The benchmark queue's type (`quorum` or `classic`).
    pub queue_type: String,
    /// Distinct signed bodies wrk cycles through.
    pub bodies: u64,
    /// Seconds of load of the spool run (broker away).
    pub spool_seconds: u64,
    /// Distinct bodies of the spool run.
    pub spool_bodies: u64,
    /// The beside mode's pause between HTTP requests, if it paced them.
    pub beside_delay_ms: Option<u64>,
    /// Variant A's binary in an A/B run.
    pub a_bin: Option<String>,
    /// What variant B changes in an A/B run.
    pub b_desc: Option<String>,
    /// criterion's in-process figures, as it printed them.
    pub criterion: Option<String>,
    /// (requests so far, RSS MiB) after each step of the growth run.
    pub growth_rss: Vec<(u64, u64)>,
    /// Every measured run, in the order it ran.
    pub runs: Vec<Run>,
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Report {
    /// An empty report of this machine, tree and knobs.
    pub fn new(knobs: &Knobs) -> Self {
        let dirty = !Command::new("git")
            .args(["diff", "--quiet", "HEAD", "--", "src"])
            .status()
            .is_ok_and(|s| s.success());
        let when = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]Z"
            ))
            .unwrap_or_default();
        Self {
            mode: knobs.mode,
            when,
            git: format!(
                "{}{}",
                output("git", &["rev-parse", "--short", "HEAD"]),
                if dirty { " (src modified)" } else { "" }
            ),
            machine: crate::machine::describe(),
            rustc: output("rustc", &["--version"]),
            command: Knobs::command(),
            seconds: knobs.seconds,
            connections: knobs.connections,
            threads: knobs.threads,
            rounds: knobs.runs,
            queue_type: knobs.queue_type.clone(),
            ..Self::default()
        }
    }

    /// Adds a run, and shows it on stderr as it lands.
    pub fn push(&mut self, run: Run) {
        log(&format!("  {}", run.line()));
        self.runs.push(run);
    }

    /// Writes the JSON, prints the summary, and for a full run with
    /// `BENCH_WRITE=1` rewrites BENCHMARKS.md's block and
    /// `benches/results/latest.json`.
    pub fn finish(&self, root: &Path, write: bool) -> Fallible<()> {
        let json = serde_json::to_string_pretty(self)?;
        let dir = root.join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!(
            "{}-{}.json",
            self.mode.name(),
            self.when.replace(':', "")
        ));
        std::fs::write(&file, &json)?;
        println!("\n==================== summary ====================\n{}\n=================================================", self.render());
        log(&format!("figures in {}", file.display()));
        if write {
            let latest = root.join("benches/results/latest.json");
            std::fs::create_dir_all(latest.parent().unwrap_or(root))?;
            std::fs::write(&latest, &json)?;
            write_block(root, self)?;
            log("summary written to BENCHMARKS.md and benches/results/latest.json");
        }
        Ok(())
    }

    /// The summary text of this report's mode.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = match self.mode {
            Mode::Ab => self.render_ab(&mut out),
            Mode::Beside => self.render_beside(&mut out),
            Mode::Cluster => self.render_cluster(&mut out),
            Mode::Full => self.render_full(&mut out),
        };
        out.push_str("\nraw results:\n");
        for run in &self.runs {
            let _ = writeln!(out, "  {}", run.line());
        }
        out
    }

    fn header(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "hookgate benchmark ({} mode), {}, git {}",
            self.mode.name(),
            self.when,
            self.git
        )?;
        writeln!(out, "machine: {}; {}", self.machine, self.rustc)?;
        writeln!(
            out,
            "load average: before wait {}; at start {}; at end {}",
            self.load_before_wait, self.load_start, self.load_end
        )?;
        writeln!(
            out,
            "shape: wrk {} threads, {} keep-alive TLS connections, {} s per run, {} rounds (medians, min..max);\n       one USAePay source (HMAC-SHA256 + Basic), INFO request logs to a file, {} unique signed bodies;\n       a durable {} queue bound to the exchange (as deploy/rabbitmq/definitions.json declares)\n",
            self.threads, self.connections, self.seconds, self.rounds, self.bodies, self.queue_type
        )
    }

    fn gateway_lines(&self, out: &mut String, label: &str, runs: &[&Run]) -> std::fmt::Result {
        writeln!(
            out,
            "{label:<9} {}/s ({}), p50 {} ms, p99 {} ms ({}), p99.9 {} ms",
            trim(median(runs, "rps_200").round()),
            range(runs, "rps_200"),
            trim(median(runs, "p50_ms")),
            trim(median(runs, "p99_ms")),
            range(runs, "p99_ms"),
            trim(median(runs, "p999_ms")),
        )?;
        writeln!(
            out,
            "          CPU per request: gateway {:.1} µs, RabbitMQ {:.1} µs; machine {}% busy; peak RSS {} MiB; accounting {}",
            median(runs, "cpu_us_per_req"),
            median(runs, "broker_cpu_us_per_req"),
            trim(median(runs, "machine_busy_pct")),
            trim(max(runs, "hwm_mib")),
            verdicts(runs, "accounting"),
        )
    }

    fn render_full(&self, out: &mut String) -> std::fmt::Result {
        self.header(out)?;
        let gateway = of(&self.runs, "gateway");
        let (http, broker, beside) = (
            of(&self.runs, "http"),
            of(&self.runs, "broker"),
            of(&self.runs, "beside"),
        );
        let gw = median(&gateway, "rps_200");
        writeln!(out, "[spool] + dedup on (the production default)")?;
        self.gateway_lines(out, "gateway", &gateway)?;
        let sum = |key: &str| gateway.iter().map(|r| r.get(key)).sum::<f64>();
        writeln!(
            out,
            "          statuses: 200 x {}, other {}; socket errors {}; duplicate answers {}; body reuse {}",
            trim(sum("status_200")),
            trim(gateway.iter().map(|r| r.other_statuses(&["status_200"])).sum()),
            trim(sum("socket_errors")),
            trim(sum("dup")),
            trim(sum("wraps")),
        )?;
        writeln!(out, "          accounting: wrk's 200s <= gateway's 200s <= messages on the queue <= wrk's 200s + {} cut off in flight", self.connections)?;
        let broker_rate = median(&broker, "rate");
        let beside_rate = median(&beside, "rate");
        writeln!(
            out,
            "HTTP ceiling    {}/s ({}), p99 {} ms, {:.1} µs CPU per request -> gateway = {} of it",
            trim(median(&http, "rps_200").round()),
            range(&http, "rps_200"),
            trim(median(&http, "p99_ms")),
            median(&http, "cpu_us_per_req"),
            pct(gw, median(&http, "rps_200")),
        )?;
        writeln!(
            out,
            "broker alone    {}/s confirmed ({}), confirm p99 {} ms, RabbitMQ {:.1} µs CPU per message -> gateway = {} of it (target >= 70%)",
            trim(broker_rate.round()),
            range(&broker, "rate"),
            trim(median(&broker, "p99_ms")),
            median(&broker, "broker_cpu_us_per_req"),
            pct(gw, broker_rate),
        )?;
        writeln!(
            out,
            "broker beside   {}/s confirmed ({}) while HTTP is served at {}/s ({} ms think time) -> gateway = {} of this co-located limit",
            trim(beside_rate.round()),
            range(&beside, "rate"),
            trim(median(&beside, "http_rps").round()),
            self.beside_delay_ms.unwrap_or(0),
            pct(gw, beside_rate),
        )?;
        let half = of(&self.runs, "half");
        if !half.is_empty() {
            writeln!(
                out,
                "half load (think time {} ms, target {}/s)",
                trim(median(&half, "delay_ms")),
                trim(median(&half, "target_rps"))
            )?;
            self.gateway_lines(out, "  gateway", &half)?;
        }
        if let Some(g) = of(&self.runs, "growth").first() {
            let steps: Vec<String> = self
                .growth_rss
                .iter()
                .map(|(n, mib)| format!("{n}:{mib}"))
                .collect();
            writeln!(
                out,
                "memory growth   RSS MiB after each step (requests:MiB) {}",
                steps.join(" ")
            )?;
            writeln!(
                out,
                "                growth {}% from the first step to the last (target <= 10%); peak RSS {} MiB; accounting {}",
                trim(g.get("growth_pct")),
                trim(g.get("hwm_mib")),
                verdicts(&[g], "accounting"),
            )?;
        }
        let spool = of(&self.runs, "spool");
        if !spool.is_empty() {
            writeln!(
                out,
                "spool path      {}/s accepted over {} s, p50 {} ms, p99 {} ms, {:.1} µs CPU per request, peak RSS {} MiB; spool/confirmed = {:.2} (target >= 0.33)",
                trim(median(&spool, "rps_200").round()),
                self.spool_seconds,
                trim(median(&spool, "p50_ms")),
                trim(median(&spool, "p99_ms")),
                median(&spool, "cpu_us_per_req"),
                trim(max(&spool, "hwm_mib")),
                median(&spool, "rps_200") / gw.max(1.0),
            )?;
        }
        if let Some(d) = of(&self.runs, "drain").first() {
            writeln!(
                out,
                "spool drain     {} events in {} s ({}/s), drained {}, accounting {}",
                trim(d.get("queue")),
                trim(d.get("drain_seconds")),
                trim(d.get("drain_rate")),
                verdicts(&[d], "drained"),
                verdicts(&[d], "accounting"),
            )?;
        }
        if let Some(c) = &self.criterion {
            writeln!(
                out,
                "criterion       request_path/usaepay_hmac_basic: {c} (target median <= 10 µs)"
            )?;
        }
        Ok(())
    }

    fn render_ab(&self, out: &mut String) -> std::fmt::Result {
        self.header(out)?;
        writeln!(
            out,
            "A = {}\nB = {}",
            self.a_bin.as_deref().unwrap_or("?"),
            self.b_desc.as_deref().unwrap_or("?")
        )?;
        for which in ["A", "B"] {
            self.gateway_lines(out, which, &of(&self.runs, which))?;
        }
        let (a, b) = (of(&self.runs, "A"), of(&self.runs, "B"));
        writeln!(
            out,
            "B / A: throughput {}, gateway CPU per request {}, p99 {}",
            pct(median(&b, "rps_200"), median(&a, "rps_200")),
            pct(median(&b, "cpu_us_per_req"), median(&a, "cpu_us_per_req")),
            pct(median(&b, "p99_ms"), median(&a, "p99_ms")),
        )
    }

    fn render_beside(&self, out: &mut String) -> std::fmt::Result {
        self.header(out)?;
        for kind in ["alone", "beside"] {
            let runs = of(&self.runs, kind);
            writeln!(
                out,
                "{kind:<7} {}/s confirmed ({}), confirm p50 {} ms, p99 {} ms, RabbitMQ {:.1} µs CPU per message, machine {}% busy{}",
                trim(median(&runs, "rate").round()),
                range(&runs, "rate"),
                trim(median(&runs, "p50_ms")),
                trim(median(&runs, "p99_ms")),
                median(&runs, "broker_cpu_us_per_req"),
                trim(median(&runs, "machine_busy_pct")),
                if kind == "beside" { format!("; HTTP {}/s at {} ms think time", trim(median(&runs, "http_rps").round()), self.beside_delay_ms.unwrap_or(0)) } else { String::new() },
            )?;
        }
        writeln!(
            out,
            "beside / alone: {}",
            pct(
                median(&of(&self.runs, "beside"), "rate"),
                median(&of(&self.runs, "alone"), "rate")
            )
        )
    }

    fn render_cluster(&self, out: &mut String) -> std::fmt::Result {
        self.header(out)?;
        writeln!(out, "3-node loopback cluster, quorum queue; the gateway's broker.urls names all three nodes")?;
        let gateway = of(&self.runs, "gateway");
        self.gateway_lines(out, "gateway", &gateway)?;
        let broker = of(&self.runs, "broker");
        writeln!(
            out,
            "ceiling   {}/s confirmed ({}), confirm p50 {} ms, RabbitMQ {:.1} µs CPU per message (all nodes)",
            trim(median(&broker, "rate").round()),
            range(&broker, "rate"),
            trim(median(&broker, "p50_ms")),
            median(&broker, "broker_cpu_us_per_req"),
        )?;
        writeln!(
            out,
            "gateway / ceiling: {}",
            pct(median(&gateway, "rps_200"), median(&broker, "rate"))
        )
    }
}

/// Replaces BENCHMARKS.md's block with this report's summary.
fn write_block(root: &Path, report: &Report) -> Fallible<()> {
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path)?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        return Err(format!("{} has no {BEGIN} ... {END} markers", path.display()).into());
    };
    let block = format!(
        "{BEGIN} (written by the benchmark; figures in benches/results/latest.json) -->\nCommand: `{}`\n\n```text\n{}```\n{END}",
        report.command,
        report.render()
    );
    let rewritten = format!("{}{block}{}", &text[..begin], &text[end + END.len()..]);
    std::fs::write(&path, rewritten)?;
    Ok(())
}

/// `bench render <results.json>`: rebuilds BENCHMARKS.md's block from a file.
pub fn render_into_benchmarks(json: &Path, root: &Path) -> Fallible<()> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let report: Report =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    write_block(root, &report)?;
    log(&format!(
        "BENCHMARKS.md's block rendered from {}",
        json.display()
    ));
    Ok(())
}
