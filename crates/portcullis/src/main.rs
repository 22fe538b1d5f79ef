//! The `portcullis` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    // clap exits with status 2 on bad usage.
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => portcullis::app::run(&config),
        Command::Check { config } => portcullis::app::check(&config),
    }
}
