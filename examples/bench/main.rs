//! hookgate's end-to-end benchmark (BENCHMARKS.md says what it measures and
//! why). `scripts/bench` builds the release binaries, starts the broker and
//! runs this; the `BENCH_*` environment variables are its knobs.
//!
//! ```sh
//! scripts/bench                                  # the full run; rewrites BENCHMARKS.md's block
//! BENCH_AB_BIN=/tmp/hookgate-b scripts/bench     # A/B: this tree's build (A) against another (B)
//! target/release/examples/bench render benches/results/latest.json   # re-render the block
//! ```
//!
//! Every run writes its figures as JSON (`target/bench/<mode>-<time>.json`;
//! the full run also `benches/results/latest.json`), and the summary text is
//! rendered from that JSON alone, so a block can be rebuilt from its file.

mod gateway;
mod knobs;
mod load;
mod machine;
mod modes;
mod report;
mod results;
mod runs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Errors of the tool: each says what failed and where.
pub type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// A progress line on stderr.
pub fn log(message: &str) {
    eprintln!("bench: {message}");
}

/// Whether something accepts connections on a loopback port.
pub fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(200),
    )
    .is_ok()
}

/// The repository root: the current directory (`scripts/bench` runs from it).
fn root() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        None | Some("run") => modes::run(&root()),
        Some("render") => match args.get(1) {
            Some(json) => report::render_into_benchmarks(Path::new(json), &root()),
            None => Err("usage: bench render <results.json>".into()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}; usage: bench [run] | bench render <results.json>"
        )
        .into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log(&format!("error: {error}"));
            ExitCode::FAILURE
        }
    }
}
