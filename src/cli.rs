//! The `hookgate` command line: every subcommand and flag, in the library
//! so that tests can parse the command lines the README shows with the very
//! parser the binary uses (`main.rs` only runs what this parses).
//!
//! Every command that reads a config takes it as `--config PATH` after its
//! own name, subcommands included: `hookgate spool stats --config PATH`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Webhook receiver gateway: authenticate, normalize, publish to RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "hookgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The config file a command works on.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path to the TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// hookgate's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// The config to run with.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate a config file and list every problem; exits 0 when valid.
    CheckConfig {
        /// The config to check.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the configuration reference (every key, its default and meaning) as Markdown.
    ConfigReference,
    /// Print the URL and headers a vendor would send for a body, and a curl command that sends it.
    Sign {
        /// The config whose source signs.
        #[command(flatten)]
        config: ConfigArg,
        /// The source to sign for.
        #[arg(long)]
        source: String,
        /// The body to sign; standard input when absent.
        #[arg(long)]
        body: Option<PathBuf>,
    },
    /// Push a captured webhook body through the pipeline as if the vendor had sent it.
    Send {
        /// The config naming the source and the broker.
        #[command(flatten)]
        config: ConfigArg,
        /// The source it would have arrived at.
        #[arg(long)]
        source: String,
        /// The body, exactly as the vendor sends it.
        file: PathBuf,
    },
    /// Print canonical events as they are published (a temporary queue bound to the exchange); Ctrl-C ends it.
    Tail {
        /// The config naming the broker and the exchange.
        #[command(flatten)]
        config: ConfigArg,
        /// Routing-key pattern to bind (`sticky-main.#`, `*.payment.*`); repeat for several.
        #[arg(long = "bind", value_name = "PATTERN", default_value = "#")]
        patterns: Vec<String>,
        /// Print each whole event as one JSON line instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Re-map events parked as `unmapped` (after an upgrade), publishing them with their original ids.
    Remap {
        /// The config naming the sources and the broker.
        #[command(flatten)]
        config: ConfigArg,
        /// The queue holding the parked `unmapped` events.
        #[arg(long)]
        from_queue: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Find archived events, or replay a window of them (needs `[archive]`).
    Archive {
        /// What to do with the archive.
        #[command(subcommand)]
        action: ArchiveAction,
    },
    /// Inspect or operate the local spool (stop the gateway first: one process per spool).
    Spool {
        /// What to do with the spool.
        #[command(subcommand)]
        action: SpoolAction,
    },
}

/// `hookgate archive` actions; each takes the config naming the broker and `[archive]`.
#[derive(Debug, Subcommand)]
pub enum ArchiveAction {
    /// Print each archived event whose canonical id or vendor event id is given: time archived, routing key, type, id.
    Find {
        /// The config naming the broker and `[archive]`.
        #[command(flatten)]
        config: ConfigArg,
        /// Read from this RFC 3339 time instead of the whole retention.
        #[arg(long)]
        since: Option<String>,
        /// Print each whole event as one JSON line.
        #[arg(long)]
        json: bool,
        /// Canonical event ids or vendor event ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Re-publish archived events received in a window, with their original ids, confirmed and persistent.
    Replay {
        /// The config naming the broker and `[archive]`.
        #[command(flatten)]
        config: ConfigArg,
        /// Events received at or after this RFC 3339 time.
        #[arg(long)]
        since: String,
        /// Events received before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only this source; repeat for several.
        #[arg(long = "source", value_name = "ID")]
        sources: Vec<String>,
        /// Only canonical types matching this topic pattern (`payment.*`); repeat for several.
        #[arg(long = "type", value_name = "PATTERN")]
        types: Vec<String>,
        /// Publish to this exchange instead of the configured one.
        #[arg(long)]
        to_exchange: Option<String>,
        /// Count what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `hookgate spool` actions; each takes the config naming the spool.
#[derive(Debug, Subcommand)]
pub enum SpoolAction {
    /// Events and bytes waiting.
    Stats {
        /// The config naming the spool.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The oldest entries, one per line.
    List {
        /// The config naming the spool.
        #[command(flatten)]
        config: ConfigArg,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Publish every spooled event now, with confirms.
    Replay {
        /// The config naming the spool and the broker.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete every spooled event. They are lost.
    Purge {
        /// The config naming the spool.
        #[command(flatten)]
        config: ConfigArg,
        /// Confirms that the events may be lost.
        #[arg(long)]
        yes: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn spool_actions_take_the_config_after_their_name() {
        let cli =
            Cli::try_parse_from(["hookgate", "spool", "stats", "--config", "c.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Spool { action: SpoolAction::Stats { config } } if config.config == std::path::Path::new("c.toml")
        ));
        assert!(Cli::try_parse_from(["hookgate", "spool", "stats"]).is_err());
    }

    #[test]
    fn tail_binds_everything_unless_told() {
        let cli = Cli::try_parse_from(["hookgate", "tail", "--config", "c.toml"]).unwrap();
        let Command::Tail { patterns, json, .. } = cli.command else {
            panic!("tail");
        };
        assert_eq!(patterns, ["#"]);
        assert!(!json);
        let cli = Cli::try_parse_from([
            "hookgate",
            "tail",
            "-c",
            "c.toml",
            "--bind",
            "a.#",
            "--bind",
            "*.refund.*",
            "--json",
        ])
        .unwrap();
        let Command::Tail { patterns, json, .. } = cli.command else {
            panic!("tail");
        };
        assert_eq!(patterns, ["a.#", "*.refund.*"]);
        assert!(json);
    }
}
