//! The `hookgate` command: a shell around the library that turns errors into
//! messages on stderr and exit codes (0 ok, 1 runtime failure, 2 bad config).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Webhook receiver gateway: authenticate, normalize, publish to RabbitMQ.
#[derive(Parser)]
#[command(name = "hookgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Path to the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and list every problem; exits 0 when valid.
    CheckConfig {
        /// Path to the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => match hookgate::config::load(&config) {
            Ok(settings) => {
                println!(
                    "{}: ok ({} source(s))",
                    config.display(),
                    settings.sources.iter().count()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {errors}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => {
            let settings = match hookgate::config::load(&config) {
                Ok(settings) => settings,
                Err(errors) => {
                    eprintln!("{}: {errors}", config.display());
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(settings))
        }
    }
}

async fn serve(settings: hookgate::config::Settings) -> ExitCode {
    let gateway = match hookgate::Gateway::start(settings).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    wait_for_signal().await;
    tracing::info!("Shutdown requested; draining in-flight requests.");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// JSON lines by default (for log shippers); `HOOKGATE_LOG_FORMAT=text` for
/// humans. `RUST_LOG` filters (default `info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("HOOKGATE_LOG_FORMAT").as_deref() == Ok("text") {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}
