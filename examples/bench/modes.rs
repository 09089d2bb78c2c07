//! The four ways to run the benchmark (BENCHMARKS.md): the full run, A/B,
//! beside and cluster. Each sets up the same way (a certificate, the
//! broker's processes, an idle machine, a probe that sizes the request
//! files) and ends in one [`Report`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway::{Setup, Shape};
use crate::knobs::{Knobs, Mode};
use crate::load::{Tools, Topology};
use crate::report::Report;
use crate::results::{self, Run};
use crate::runs::{Bench, Variant};
use crate::{log, machine, Fallible};
use hookgate::test_util::unique_name;

const CLUSTER_PORTS: [u16; 3] = [5681, 5682, 5683];

/// Runs the mode the knobs name, prints its summary and writes its JSON
/// (and, for a full run with `BENCH_WRITE=1`, BENCHMARKS.md's block).
pub fn run(root: &Path) -> Fallible<()> {
    let knobs = Knobs::from_env()?;
    let cluster = knobs.mode == Mode::Cluster;
    let (amqp_url, broker_line, broker_ports) = if cluster {
        let urls: Vec<String> = CLUSTER_PORTS
            .iter()
            .map(|p| format!("\"amqp://guest:guest@127.0.0.1:{p}/%2f\""))
            .collect();
        (
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", CLUSTER_PORTS[0]),
            format!("urls = [{}]", urls.join(", ")),
            CLUSTER_PORTS.to_vec(),
        )
    } else {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned();
        (url.clone(), format!("url = \"{url}\""), vec![5672])
    };
    let broker_pids = broker_ports
        .iter()
        .map(|&p| machine::listener_pid(p))
        .collect::<Fallible<Vec<_>>>()?;
    let work = tempfile::Builder::new()
        .prefix("hookgate-bench.")
        .tempdir()?;
    log(&format!(
        "work dir {}; broker processes {broker_pids:?}",
        work.path().display()
    ));
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.key_pair.serialize_pem())?;
    let release = root.join("target/release");
    let bench = Bench {
        tools: Tools {
            examples: release.join("examples"),
            lua: root.join("benches/support/wrk.lua"),
            threads: knobs.threads,
            connections: knobs.connections,
            amqp_url,
            queue_type: if cluster {
                "quorum".to_owned()
            } else {
                knobs.queue_type.clone()
            },
        },
        setup: Setup {
            port: knobs.port,
            admin_port: knobs.admin_port,
            cert,
            key,
            rust_log: knobs.rust_log.clone(),
        },
        broker_line: broker_line.clone(),
        broker_pids,
        work: work.path().to_owned(),
        dead_port: knobs.dead_port,
        ceiling_port: knobs.ceiling_port,
    };
    let a = Variant {
        bin: release.join("hookgate"),
        shape: Shape {
            broker_line,
            ..Shape::default()
        },
    };

    let mut report = Report::new(&knobs);
    report.load_before_wait = machine::loadavg();
    wait_for_idle(&knobs);
    report.load_start = machine::loadavg();

    // Every request of a run carries a distinct event id (dedup is on), so
    // each run gets two and a half signed requests per request the 5 s probe
    // predicts: a probe slowed by a machine still busy (after a build, say)
    // must not leave a later run short of fresh ids.
    let probe_bodies = bench.work.join("probe");
    bench.tools.bodies(300_000, &probe_bodies)?;
    let probe = bench.gateway_run("probe", &a, &probe_bodies, 0, 5)?;
    let bodies = bench.work.join("bodies");
    report.bodies = size_for(probe.get("rps_all"), knobs.seconds);
    log(&format!(
        "probe: {:.0}/s; generating {} signed requests",
        probe.get("rps_all"),
        report.bodies
    ));
    bench.tools.bodies(report.bodies, &bodies)?;
    let think_ms =
        ((knobs.connections as f64 * 1000.0 / probe.get("rps_all").max(1.0)) as u64).max(1);
    report.runs.push(probe);

    match knobs.mode {
        Mode::Full => full(&bench, &knobs, &a, &bodies, think_ms, &mut report)?,
        Mode::Ab => ab(&bench, &knobs, &a, &bodies, &mut report)?,
        Mode::Beside => {
            report.beside_delay_ms = Some(think_ms);
            for round in 1..=knobs.runs {
                log(&format!("beside round {round}/{}: broker ceiling alone, then beside HTTP at {think_ms} ms think time", knobs.runs));
                report.push(bench.broker_ceiling_run("alone", knobs.seconds)?);
                report.push(bench.beside_run(knobs.seconds, &bodies, think_ms)?);
            }
        }
        Mode::Cluster => {
            for round in 1..=knobs.runs {
                log(&format!(
                    "cluster round {round}/{}: gateway on 3 nodes, then the broker ceiling",
                    knobs.runs
                ));
                report.push(bench.gateway_run("gateway", &a, &bodies, 0, knobs.seconds)?);
                report.push(bench.broker_ceiling_run("broker", knobs.seconds)?);
            }
        }
    }
    report.load_end = machine::loadavg();
    report.finish(root, knobs.write && knobs.mode == Mode::Full)?;
    if knobs.keep {
        log(&format!("kept {}", work.keep().display()));
    }
    Ok(())
}

/// Requests for `seconds` at `rate`, times two and a half, at least 20,000.
fn size_for(rate: f64, seconds: u64) -> u64 {
    ((rate * seconds as f64 * 2.5) as u64).max(20_000)
}

/// Waits (up to `BENCH_LOAD_WAIT`) for the 1-minute load average to drop
/// below `BENCH_MAX_LOAD`.
fn wait_for_idle(knobs: &Knobs) {
    let started = Instant::now();
    while machine::load1() >= knobs.max_load {
        if started.elapsed() >= Duration::from_secs(knobs.load_wait_secs) {
            log(&format!(
                "load average still {} after {} s; measuring anyway",
                machine::load1(),
                knobs.load_wait_secs
            ));
            return;
        }
        log(&format!(
            "waiting for the 1-min load average ({}) to drop below {}",
            machine::load1(),
            knobs.max_load
        ));
        std::thread::sleep(Duration::from_secs(15));
    }
}

/// Rounds of (gateway, HTTP ceiling, broker ceiling alone and beside HTTP),
/// then half load, memory growth, the spool path and criterion.
fn full(
    bench: &Bench,
    knobs: &Knobs,
    a: &Variant,
    bodies: &Path,
    think_ms: u64,
    report: &mut Report,
) -> Fallible<()> {
    report.beside_delay_ms = Some(think_ms);
    for round in 1..=knobs.runs {
        log(&format!(
            "round {round}/{}: gateway, HTTP ceiling, broker ceiling alone and beside",
            knobs.runs
        ));
        report.push(bench.gateway_run("gateway", a, bodies, 0, knobs.seconds)?);
        report.push(bench.http_ceiling_run(bodies, knobs.seconds)?);
        report.push(bench.broker_ceiling_run("broker", knobs.seconds)?);
        report.push(bench.beside_run(knobs.seconds, bodies, think_ms)?);
    }
    if knobs.half {
        half_load(bench, knobs, a, bodies, report)?;
    }
    if knobs.growth {
        growth(bench, knobs, a, report)?;
    }
    if knobs.spool {
        let spool_bodies = bench.work.join("spool-bodies");
        // The spool path is faster than the confirmed one: size it by 2.5x.
        report.spool_bodies = size_for(
            2.5 * results::median(&results::of(&report.runs, "gateway"), "rps_all"),
            knobs.spool_seconds,
        );
        bench.tools.bodies(report.spool_bodies, &spool_bodies)?;
        log(&format!(
            "spool path: broker url -> closed port {}, {} s",
            knobs.dead_port, knobs.spool_seconds
        ));
        let (spool, drain) =
            bench.spool_run("spool", &a.bin, &spool_bodies, knobs.spool_seconds, true)?;
        report.spool_seconds = knobs.spool_seconds;
        report.push(spool);
        report.runs.extend(drain);
    }
    if knobs.criterion {
        log("criterion: cargo bench --bench request_path -- usaepay");
        let out = Command::new("cargo")
            .args([
                "bench",
                "--locked",
                "--bench",
                "request_path",
                "--",
                "usaepay",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        report.criterion = text
            .lines()
            .skip_while(|l| !l.contains("usaepay_hmac_basic"))
            .find_map(|l| l.split_once("time:").map(|(_, t)| t.trim().to_owned()));
    }
    Ok(())
}

/// Latency at about half the measured throughput: each connection waits a
/// think time before each request (wrk's `delay()`); a 5 s calibration run
/// measures the cycle beyond the think time, which is subtracted.
fn half_load(
    bench: &Bench,
    knobs: &Knobs,
    a: &Variant,
    bodies: &Path,
    report: &mut Report,
) -> Fallible<()> {
    let target = results::median(&results::of(&report.runs, "gateway"), "rps_200") / 2.0;
    let conns = knobs.connections as f64;
    let cycle_ms = conns * 1000.0 / target.max(1.0);
    let d0 = cycle_ms.round().max(1.0) as u64;
    let calibration_bodies = bench.work.join("cal-bodies");
    bench
        .tools
        .bodies(size_for(target, 5), &calibration_bodies)?;
    let calibration = bench.gateway_run("half-calibration", a, &calibration_bodies, d0, 5)?;
    let extra_ms = conns * 1000.0 / calibration.get("rps_all").max(1.0) - d0 as f64;
    let delay = (cycle_ms - extra_ms).round().max(1.0) as u64;
    log(&format!(
        "half load: target {target:.0}/s; calibration at {d0} ms gave {:.0}/s; using {delay} ms",
        calibration.get("rps_all")
    ));
    let mut half = bench.gateway_run("half", a, bodies, delay, knobs.seconds)?;
    half.set("delay_ms", delay as f64);
    half.set("target_rps", target.round());
    report.push(half);
    Ok(())
}

/// One gateway takes `BENCH_GROWTH_REQUESTS` unique requests in equal steps
/// (wrk sends each step's file once); RSS is read after each step. The first
/// step is the baseline (allocator arenas, caches and buffers are warm by then).
fn growth(bench: &Bench, knobs: &Knobs, a: &Variant, report: &mut Report) -> Fallible<()> {
    let per = knobs.growth_requests / knobs.growth_steps.max(1);
    log(&format!(
        "memory growth: {} requests in {} steps of {per}",
        knobs.growth_requests, knobs.growth_steps
    ));
    let Topology {
        exchange, queue, ..
    } = bench.tools.declare_fresh()?;
    let dir = bench.work.join("growth");
    let shape = Shape {
        exchange: exchange.clone(),
        ..a.shape.clone()
    };
    let config = crate::gateway::write_config(&dir, &bench.setup, &shape)?;
    let mut gateway = crate::gateway::Gateway::start(
        &a.bin,
        &config,
        &bench.setup,
        crate::gateway::Await::Ready,
    )?;
    let mut total = Run {
        kind: "growth".to_owned(),
        ..Run::default()
    };
    let started = Instant::now();
    for step in 1..=knobs.growth_steps {
        let step_bodies = dir.join("bodies");
        bench.tools.bodies(per, &step_bodies)?;
        let run = bench.tools.run_once(
            &gateway,
            bench.setup.port,
            &step_bodies,
            &dir.join(format!("wrk{step}.txt")),
        )?;
        let rss = machine::rss_mib(gateway.pid());
        report.growth_rss.push((step * per, rss));
        for key in ["status_200", "extra", "dup"] {
            total.set(key, total.get(key) + run.get(key));
        }
        total.set(
            "other_statuses",
            total.get("other_statuses") + run.other_statuses(&["status_200", "status_405"]),
        );
        log(&format!(
            "  after {} requests: RSS {rss} MiB ({:.0}/s)",
            step * per,
            run.get("rps_200")
        ));
    }
    total.set("seconds", started.elapsed().as_secs_f64().round());
    total.set("hwm_mib", machine::peak_rss_mib(gateway.pid()) as f64);
    let served = gateway.served_200()?;
    gateway.stop();
    let count = bench.tools.queue_count(&queue)?;
    bench.tools.delete(&exchange, &queue);
    let (first, last) = (
        report.growth_rss.first().map_or(0, |s| s.1),
        report.growth_rss.last().map_or(0, |s| s.1),
    );
    total.set("first_rss_mib", first as f64);
    total.set("last_rss_mib", last as f64);
    total.set(
        "growth_pct",
        if first > 0 {
            (1000.0 * (last as f64 - first as f64) / first as f64).round() / 10.0
        } else {
            0.0
        },
    );
    total.set("served_200", served);
    total.set("queue", count);
    // Each step's wrk stop may cut up to one request per connection.
    let ok = total.get("status_200");
    let cut = (knobs.connections * knobs.growth_steps) as f64;
    let pass = ok <= served
        && served <= count
        && count <= ok + cut
        && total.get("dup") == 0.0
        && total.get("other_statuses") == 0.0;
    total.verdict("accounting", pass);
    report.push(total);
    Ok(())
}

/// A B B A rounds: neither variant always goes first or always follows the other.
fn ab(
    bench: &Bench,
    knobs: &Knobs,
    a: &Variant,
    bodies: &Path,
    report: &mut Report,
) -> Fallible<()> {
    let Some(b_knobs) = knobs.b.clone() else {
        return Err("A/B mode needs BENCH_AB_BIN".into());
    };
    if !b_knobs.bin.is_file() {
        return Err(format!("BENCH_AB_BIN={} is not a file", b_knobs.bin.display()).into());
    }
    let _redis = if b_knobs.redis {
        Some(Redis::start(knobs.redis_port, &bench.work)?)
    } else {
        None
    };
    let b = |archive: Option<String>| Variant {
        bin: b_knobs.bin.clone(),
        shape: Shape {
            no_spool: b_knobs.no_spool,
            redis_port: b_knobs.redis.then_some(knobs.redis_port),
            archive,
            ..a.shape.clone()
        },
    };
    report.a_bin = Some(a.bin.display().to_string());
    report.b_desc = Some(format!(
        "{}{}{}{}",
        b_knobs.bin.display(),
        if b_knobs.no_spool {
            " without [spool]"
        } else {
            ""
        },
        if b_knobs.redis {
            " with [dedup] backend = \"redis\""
        } else {
            ""
        },
        if b_knobs.archive {
            " with an [archive] stream"
        } else {
            ""
        },
    ));
    for round in 1..=knobs.runs {
        for which in ["A", "B", "B", "A"] {
            log(&format!("A/B round {round}/{}: {which}", knobs.runs));
            let variant = if which == "A" {
                a.clone()
            } else {
                b(b_knobs.archive.then(|| unique_name("bench-archive")))
            };
            let run = bench.gateway_run(which, &variant, bodies, 0, knobs.seconds)?;
            report.push(run);
        }
    }
    Ok(())
}

/// A redis-server of the benchmark's own, stopped when dropped.
struct Redis(Child);

impl Redis {
    fn start(port: u16, dir: &PathBuf) -> Fallible<Self> {
        if crate::port_answers(port) {
            return Err(format!("port {port} is in use (set BENCH_REDIS_PORT)").into());
        }
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("redis-server would not start (apt-get install redis-server): {e}")
            })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !crate::port_answers(port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self(child))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
