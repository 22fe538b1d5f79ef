//! The `portcullis` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// A security gateway for HTTP backends.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (SIGHUP reloads the configuration, SIGTERM drains and stops).
    Run {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and report problems.
    Check {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage API keys for machine clients (kept in the `[state] store`).
    Apikey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key and print it once on stdout.
    Create {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// A label for the key (who or what uses it).
        #[arg(long)]
        name: String,
        /// A role the key's callers get (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Lifetime, such as 90d or 12h (default: no expiry).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List keys (never their secrets).
    List {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The key's id (the 16 hex digits after `pcl_`).
        id: String,
    },
}

fn main() -> ExitCode {
    // clap exits with status 2 on bad usage.
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => portcullis::app::run(&config),
        Command::Check { config } => portcullis::app::check(&config),
        Command::Apikey { command } => match command {
            ApiKeyCommand::Create { config, name, roles, expires } => {
                portcullis::cli_apikey::create(&config, &name, &roles, expires)
            }
            ApiKeyCommand::List { config, json } => portcullis::cli_apikey::list(&config, json),
            ApiKeyCommand::Revoke { config, id } => portcullis::cli_apikey::revoke(&config, &id),
        },
    }
}
