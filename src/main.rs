//! The `hookgate` command: a shell around the library that turns errors into
//! messages on stderr and exit codes (0 ok, 1 runtime failure, 2 bad config).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hookgate::cli::{Cli, Command, ConfigArg, SpoolAction};

/// jemalloc instead of glibc's malloc: about a tenth less CPU per request
/// and a shorter tail under load (BENCHMARKS.md, "Allocator"). It returns
/// freed memory within a second, as `.cargo/config.toml` configures it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The async runtime a command runs on, or a message and exit 1.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Loads a config for a command, or prints every problem and exits 2.
fn load(config: &std::path::Path) -> Result<hookgate::config::Settings, ExitCode> {
    hookgate::config::load(config).map_err(|errors| {
        eprintln!("{}: {errors}", config.display());
        ExitCode::from(2)
    })
}

/// `hookgate archive find` and `replay`: exit 0 when done, 1 when stopped
/// (with where to resume) or failed, 2 for bad arguments.
fn archive(action: hookgate::cli::ArchiveAction) -> Result<ExitCode, ExitCode> {
    use hookgate::archive::{parse_time, ReplayFilter};
    use hookgate::cli::ArchiveAction;
    let bad = |message: String| {
        eprintln!("{message}");
        ExitCode::from(2)
    };
    match action {
        ArchiveAction::Find {
            config,
            since,
            json,
            ids,
        } => {
            let since = since
                .map(|t| parse_time("--since", &t))
                .transpose()
                .map_err(bad)?;
            let settings = load(&config.config)?;
            let runtime = runtime()?;
            let found = runtime.block_on(hookgate::archive::find(
                &settings,
                &ids,
                since,
                json,
                std::io::stdout().lock(),
            ));
            Ok(match found {
                Ok(n) => {
                    eprintln!("{n} archived event(s) found");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            })
        }
        ArchiveAction::Replay {
            config,
            since,
            until,
            sources,
            types,
            to_exchange,
            dry_run,
        } => {
            let filter = ReplayFilter {
                since: parse_time("--since", &since).map_err(bad)?,
                until: until
                    .map(|t| parse_time("--until", &t))
                    .transpose()
                    .map_err(bad)?,
                sources,
                types,
            };
            let settings = load(&config.config)?;
            let runtime = runtime()?;
            let replayed = runtime.block_on(hookgate::archive::replay(
                &settings,
                &filter,
                to_exchange.as_deref(),
                dry_run,
            ));
            Ok(match replayed {
                Ok(Ok(done)) if dry_run => {
                    println!("{} matched; dry run, nothing published", done.matched);
                    ExitCode::SUCCESS
                }
                Ok(Ok(done)) => {
                    println!("{} matched, {} confirmed", done.matched, done.confirmed);
                    ExitCode::SUCCESS
                }
                Ok(Err(stopped)) => {
                    eprintln!("replay {stopped}");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            })
        }
    }
}

fn report<T>(result: Result<T, hookgate::tools::ToolError>, print: impl FnOnce(T)) -> ExitCode {
    match result {
        Ok(value) => {
            print(value);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command other than `serve` and `check-config`; `Err` carries the
/// exit code of a failure already reported on stderr.
fn run_tool(command: Command) -> Result<ExitCode, ExitCode> {
    Ok(match command {
        Command::Sign {
            config: ConfigArg { config },
            source,
            body,
        } => {
            let settings = load(&config)?;
            let (bytes, path) = match &body {
                Some(path) => match std::fs::read(path) {
                    // Absolute, so the printed curl works from any directory.
                    Ok(bytes) => (
                        bytes,
                        std::path::absolute(path)
                            .unwrap_or_else(|_| path.clone())
                            .display()
                            .to_string(),
                    ),
                    Err(e) => {
                        eprintln!("--body {}: {e}", path.display());
                        return Err(ExitCode::from(2));
                    }
                },
                None => {
                    let mut bytes = Vec::new();
                    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes) {
                        eprintln!("stdin: {e}");
                        return Err(ExitCode::from(2));
                    }
                    (bytes, "body.json".to_owned())
                }
            };
            report(
                hookgate::tools::sign(&settings, &source, &bytes, &path),
                |out| print!("{out}"),
            )
        }
        Command::Archive { action } => archive(action)?,
        Command::Spool { action } => {
            let config = match &action {
                SpoolAction::Stats { config }
                | SpoolAction::List { config, .. }
                | SpoolAction::Replay { config }
                | SpoolAction::Purge { config, .. } => &config.config,
            };
            let settings = load(config)?;
            let runtime = runtime()?;
            match action {
                SpoolAction::Stats { .. } => {
                    report(hookgate::tools::spool_stats(&settings), |out| {
                        print!("{out}")
                    })
                }
                SpoolAction::List { limit, .. } => {
                    report(hookgate::tools::spool_list(&settings, limit), |out| {
                        print!("{out}")
                    })
                }
                SpoolAction::Replay { .. } => report(
                    runtime.block_on(hookgate::tools::spool_replay(&settings)),
                    |n| println!("{n} event(s) published and removed from the spool"),
                ),
                SpoolAction::Purge { yes: false, .. } => {
                    eprintln!("purge deletes every spooled event; run again with --yes to confirm");
                    ExitCode::from(2)
                }
                SpoolAction::Purge { yes: true, .. } => report(
                    runtime.block_on(hookgate::tools::spool_purge(&settings)),
                    |n| println!("{n} event(s) deleted"),
                ),
            }
        }
        Command::Send {
            config: ConfigArg { config },
            source,
            file,
        } => {
            let settings = load(&config)?;
            let body = match std::fs::read(&file) {
                Ok(body) => body,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return Err(ExitCode::from(2));
                }
            };
            let runtime = runtime()?;
            report(
                runtime.block_on(hookgate::tools::send(&settings, &source, body)),
                |sent| println!("{} {}", sent.id, sent.event_type),
            )
        }
        Command::Tail {
            config: ConfigArg { config },
            patterns,
            json,
        } => {
            let settings = load(&config)?;
            let runtime = runtime()?;
            let until_ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let format = if json {
                hookgate::tail::Format::Json
            } else {
                hookgate::tail::Format::Summary
            };
            report(
                runtime.block_on(hookgate::tail::tail(
                    &settings,
                    &patterns,
                    format,
                    std::io::stdout(),
                    until_ctrl_c,
                )),
                |n| eprintln!("tail: {n} event(s) seen"),
            )
        }
        Command::Remap {
            config: ConfigArg { config },
            from_queue,
        } => {
            let settings = load(&config)?;
            let runtime = runtime()?;
            report(
                runtime.block_on(hookgate::tools::remap(&settings, &from_queue)),
                |r| {
                    println!(
                        "{} remapped, {} still unmapped, {} skipped (left on {from_queue})",
                        r.remapped, r.still_unmapped, r.skipped
                    )
                },
            )
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "hookgate",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Serve { .. } | Command::CheckConfig { .. } | Command::ConfigReference => {
            unreachable!("handled in main")
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::ConfigReference => {
            print!("{}", hookgate::config::reference::markdown());
            ExitCode::SUCCESS
        }
        Command::CheckConfig {
            config: ConfigArg { config },
        } => match hookgate::config::load(&config) {
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
        Command::Serve {
            config: ConfigArg { config },
        } => {
            let settings = match hookgate::config::load(&config) {
                Ok(settings) => settings,
                Err(errors) => {
                    eprintln!("{}: {errors}", config.display());
                    return ExitCode::from(2);
                }
            };
            match runtime() {
                Ok(runtime) => runtime.block_on(serve(settings, config)),
                Err(code) => code,
            }
        }
        other => run_tool(other).unwrap_or_else(|code| code),
    }
}

async fn serve(settings: hookgate::config::Settings, path: PathBuf) -> ExitCode {
    let gateway = match hookgate::Gateway::start_from_file(settings, path).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // A dead core task (logged by the watchdog) ends the process like a
    // signal does, but with exit 1 so the service manager restarts it.
    let fault = tokio::select! {
        () = wait_for_shutdown(&gateway) => None,
        fault = gateway.fault() => Some(fault),
    };
    if fault.is_none() {
        tracing::info!("Shutdown requested; draining in-flight requests.");
    }
    gateway.shutdown().await;
    match fault {
        None => ExitCode::SUCCESS,
        Some(fault) => {
            eprintln!("hookgate stopped because {fault}; restart it");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or Ctrl-C; SIGHUP meanwhile reloads the config file.
async fn wait_for_shutdown(gateway: &hookgate::Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler can be installed");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    // The outcome is logged and counted by reload itself.
                    let _ = gateway.control().reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = gateway;
        let _ = tokio::signal::ctrl_c().await;
    }
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
