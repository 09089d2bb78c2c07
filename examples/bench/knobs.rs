//! The benchmark's knobs: `BENCH_*` environment variables, each with its
//! default, read once at start. A value that does not parse stops the run
//! with the variable's name.

use std::path::PathBuf;
use std::str::FromStr;

use crate::Fallible;

/// Which measurement the run makes; in a report's JSON as its lowercase name.
#[derive(Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The gateway, its HTTP ceiling and its broker ceiling (alone and
    /// beside HTTP), half load, memory growth, the spool path, criterion.
    #[default]
    Full,
    /// Two builds or settings, in the order A B B A.
    Ab,
    /// The broker ceiling alone and beside HTTP served at the gateway's rate.
    Beside,
    /// The gateway and the broker ceiling on the 3-node loopback cluster.
    Cluster,
}

impl Mode {
    /// The name reports and their file names use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Ab => "ab",
            Self::Beside => "beside",
            Self::Cluster => "cluster",
        }
    }
}

/// What variant B of an A/B run changes besides its binary.
#[derive(Clone, Default)]
pub struct VariantB {
    /// B's binary (`BENCH_AB_BIN`).
    pub bin: PathBuf,
    /// No `[spool]`, and so no dedup (`BENCH_AB_NO_SPOOL=1`).
    pub no_spool: bool,
    /// `[dedup] backend = "redis"` (`BENCH_AB_DEDUP_REDIS=1`).
    pub redis: bool,
    /// An `[archive]` stream (`BENCH_AB_ARCHIVE=1`).
    pub archive: bool,
}

/// Every knob of a run.
pub struct Knobs {
    pub mode: Mode,
    pub seconds: u64,
    pub connections: u64,
    pub threads: u64,
    pub runs: u64,
    pub port: u16,
    pub admin_port: u16,
    pub ceiling_port: u16,
    pub dead_port: u16,
    pub redis_port: u16,
    pub max_load: f64,
    pub load_wait_secs: u64,
    pub spool: bool,
    pub spool_seconds: u64,
    pub half: bool,
    pub growth: bool,
    pub growth_requests: u64,
    pub growth_steps: u64,
    pub criterion: bool,
    pub write: bool,
    pub keep: bool,
    pub rust_log: String,
    pub queue_type: String,
    pub b: Option<VariantB>,
}

fn var<T: FromStr>(name: &str, default: T) -> Fallible<T> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        _ => Ok(default),
    }
}

fn flag(name: &str, default: bool) -> Fallible<bool> {
    match var::<String>(name, String::new())?.as_str() {
        "" => Ok(default),
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(format!("{name}={other:?}: use 1 or 0").into()),
    }
}

impl Knobs {
    /// Reads every `BENCH_*` variable (BENCHMARKS.md lists them).
    pub fn from_env() -> Fallible<Self> {
        let b = match var::<String>("BENCH_AB_BIN", String::new())? {
            bin if bin.is_empty() => None,
            bin => Some(VariantB {
                bin: PathBuf::from(bin),
                no_spool: flag("BENCH_AB_NO_SPOOL", false)?,
                redis: flag("BENCH_AB_DEDUP_REDIS", false)?,
                archive: flag("BENCH_AB_ARCHIVE", false)?,
            }),
        };
        let mode = if flag("BENCH_CLUSTER", false)? {
            Mode::Cluster
        } else if flag("BENCH_BESIDE", false)? {
            Mode::Beside
        } else if b.is_some() {
            Mode::Ab
        } else {
            Mode::Full
        };
        let queue_type = var("BENCH_QUEUE_TYPE", "quorum".to_owned())?;
        if !matches!(queue_type.as_str(), "quorum" | "classic") {
            return Err(format!("BENCH_QUEUE_TYPE={queue_type:?}: use quorum or classic").into());
        }
        Ok(Self {
            mode,
            seconds: var("BENCH_SECONDS", 30)?,
            connections: var("BENCH_CONNECTIONS", 64)?,
            threads: var("BENCH_THREADS", 2)?,
            runs: var("BENCH_RUNS", 3)?,
            port: var("BENCH_PORT", 18443)?,
            admin_port: var("BENCH_ADMIN_PORT", 19090)?,
            ceiling_port: var("BENCH_CEILING_PORT", 18444)?,
            dead_port: var("BENCH_DEAD_PORT", 5999)?,
            redis_port: var("BENCH_REDIS_PORT", 16379)?,
            max_load: var("BENCH_MAX_LOAD", 1.0)?,
            load_wait_secs: var("BENCH_LOAD_WAIT", 600)?,
            spool: flag("BENCH_SPOOL", true)?,
            spool_seconds: var("BENCH_SPOOL_SECONDS", 10)?,
            half: flag("BENCH_HALF", true)?,
            growth: flag("BENCH_GROWTH", true)?,
            growth_requests: var("BENCH_GROWTH_REQUESTS", 1_000_000)?,
            growth_steps: var("BENCH_GROWTH_STEPS", 10)?,
            criterion: flag("BENCH_CRITERION", true)?,
            write: flag("BENCH_WRITE", true)?,
            keep: flag("BENCH_KEEP", false)?,
            rust_log: var("BENCH_RUST_LOG", "info".to_owned())?,
            queue_type,
            b,
        })
    }

    /// The knobs set in the environment, as a command prefix to rerun with.
    pub fn command() -> String {
        let mut parts: Vec<String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("BENCH_") && k != "BENCH_AMQP_URL")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.sort();
        parts.push("scripts/bench".to_owned());
        parts.join(" ")
    }
}
