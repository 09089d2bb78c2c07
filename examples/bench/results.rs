//! One measured run as named figures, and the medians over repeated runs.
//!
//! The load generators print one `PREFIX key=value ...` line (wrk's script
//! `BENCH ...`, the broker ceiling `BROKER ...`); a run adds what the
//! benchmark read beside it (CPU, memory, accounting).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One run's figures, by name.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Run {
    /// What was measured: `gateway`, `http`, `broker`, `beside`, `A`, ...
    pub kind: String,
    /// Its figures.
    pub figures: BTreeMap<String, f64>,
    /// Verdicts (`accounting` PASS or FAIL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verdicts: BTreeMap<String, String>,
}

impl Run {
    /// Reads the first `prefix k=v ...` line of a tool's output.
    pub fn parse(kind: &str, prefix: &str, output: &str) -> Option<Self> {
        let line = output.lines().find(|l| l.starts_with(prefix))?;
        let figures = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Some(Self {
            kind: kind.to_owned(),
            figures,
            verdicts: BTreeMap::new(),
        })
    }

    /// A figure, 0 when the run has none of that name.
    pub fn get(&self, key: &str) -> f64 {
        self.figures.get(key).copied().unwrap_or(0.0)
    }

    /// Sets a figure.
    pub fn set(&mut self, key: &str, value: f64) {
        self.figures.insert(key.to_owned(), value);
    }

    /// Sets a verdict.
    pub fn verdict(&mut self, key: &str, pass: bool) {
        let word = if pass { "PASS" } else { "FAIL" };
        self.verdicts.insert(key.to_owned(), word.to_owned());
    }

    /// The sum of `status_<code>` figures other than the ones named.
    pub fn other_statuses(&self, except: &[&str]) -> f64 {
        self.figures
            .iter()
            .filter(|(k, _)| k.starts_with("status_") && !except.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    }

    /// One line: the kind, then every figure and verdict as `k=v`.
    pub fn line(&self) -> String {
        let mut out = self.kind.clone();
        for (k, v) in &self.figures {
            out.push_str(&format!(" {k}={}", trim(*v)));
        }
        for (k, v) in &self.verdicts {
            out.push_str(&format!(" {k}={v}"));
        }
        out
    }
}

/// A number as short as it reads: no decimals from 100 up (or for an
/// integer), one from 10 up, three below.
pub fn trim(v: f64) -> String {
    let v = v + 0.0; // -0.0 (an empty sum) reads as 0
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The runs of one kind.
pub fn of<'a>(runs: &'a [Run], kind: &str) -> Vec<&'a Run> {
    runs.iter().filter(|r| r.kind == kind).collect()
}

/// The median of a figure over runs (the mean of the middle two for an even count).
pub fn median(runs: &[&Run], key: &str) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(|r| r.get(key)).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `min..max` of a figure over runs.
pub fn range(runs: &[&Run], key: &str) -> String {
    let v: Vec<f64> = runs.iter().map(|r| r.get(key)).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "n/a".to_owned()
    } else {
        format!("{}..{}", trim(lo), trim(hi))
    }
}

/// The largest value of a figure over runs.
pub fn max(runs: &[&Run], key: &str) -> f64 {
    runs.iter().map(|r| r.get(key)).fold(0.0, f64::max)
}

/// Every distinct verdict of that name over runs, e.g. `PASS` or `FAIL PASS`.
pub fn verdicts(runs: &[&Run], key: &str) -> String {
    let mut all: Vec<&str> = runs
        .iter()
        .filter_map(|r| r.verdicts.get(key).map(String::as_str))
        .collect();
    all.sort_unstable();
    all.dedup();
    all.join(" ")
}

/// `a` as a percentage of `b`.
pub fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}%", 100.0 * a / b)
    } else {
        "n/a".to_owned()
    }
}
