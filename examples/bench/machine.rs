//! What the benchmark reads off this machine: a process's CPU time and
//! memory, the whole machine's busy time, the load average, and which
//! process listens on a port (so the broker's CPU is read off the broker
//! under test, not whichever `beam.smp` happens to be oldest).

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

use crate::Fallible;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`).
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU ticks a process has used so far (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces; fields after it are plain.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// CPU ticks summed over several processes.
pub fn cpu_ticks_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| cpu_ticks(pid)).sum()
}

/// A `/proc/<pid>/status` figure in KiB (`VmHWM`, `VmRSS`), 0 if unreadable.
fn status_kib(pid: u32, key: &str) -> u64 {
    hookgate::test_util::proc_status_kib(pid, key).unwrap_or(0)
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM") / 1024
}

/// Resident memory of a process now, in MiB.
pub fn rss_mib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS") / 1024
}

/// The whole machine's (busy, total) jiffies; idle and iowait are not busy.
#[derive(Clone, Copy)]
pub struct MachineTicks {
    busy: u64,
    total: u64,
}

impl MachineTicks {
    /// Reads `/proc/stat`'s first line.
    pub fn now() -> Self {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
        }
    }

    /// Busy share of all cores since `earlier`, in percent.
    pub fn busy_pct_since(self, earlier: Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` reads them.
pub fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The process that listens on a TCP port of this machine: found through
/// the listening socket's inode in `/proc/net/tcp{,6}` and the process whose
/// file descriptors hold it.
pub fn listener_pid(port: u16) -> Fallible<u32> {
    let inode = listening_inode(port)
        .ok_or_else(|| format!("no process listens on port {port} (read /proc/net/tcp)"))?;
    let wanted = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str()) {
                return Ok(pid);
            }
        }
    }
    Err(format!("the socket listening on port {port} belongs to no readable process").into())
}

fn listening_inode(port: u16) -> Option<String> {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f.get(1)?.rsplit(':').next()?;
                (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == LISTEN)
                    .then(|| f.get(9).map(|inode| (*inode).to_owned()))
                    .flatten()
            })
        })
}

/// One line naming the machine for the report.
pub fn describe() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(": ").map(|(_, v)| v.to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib =
        hookgate::test_util::proc_kib("/proc/meminfo", "MemTotal").unwrap_or(0) / 1024 / 1024;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {cpu}; {mem_gib} GiB RAM; kernel {}",
        kernel.trim()
    )
}
