//! The `portcullis` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: per-request allocation (the WAF engine
/// most of all) costs about half as much (`cargo bench --bench waf_mimalloc`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Evaluate the routing and authorization policy without traffic.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage API keys for machine clients (kept in the `[state] store`).
    Apikey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Manage the built-in accounts (kept in the `[state] store`).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Create single-use invite codes for account registration.
    Invite {
        #[command(subcommand)]
        command: InviteCommand,
    },
    /// List, add and lift client bans of a running deployment.
    Ban {
        #[command(subcommand)]
        command: BanCommand,
    },
    /// Verify and list the audit trail of administrators' actions (kept in the `[state] store`).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 0 when intact (prints the head to record
    /// elsewhere), 1 naming each edited, inserted or deleted row.
    Verify {
        /// The configuration file (its `[state] store` and audit key are used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// A head hash recorded earlier (by `verify`, or an `audit.appended`
        /// event): rows cut off the end are found only against it.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List rows, newest first.
    List {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many rows (1 to 1000).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
        /// Only this action (`ban.add`), or a prefix ending in `*` (`user.*`).
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// Only this actor (`cli:alice`), or a prefix ending in `*` (`admin-api:*`).
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Only rows before this sequence number (the next page).
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run a table of cases (CASES.toml: [[case]] method, path, identity, expect);
    /// exit 1 when any fails.
    Test {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The cases.
        cases: PathBuf,
    },
    /// Show how one request is decided, step by step.
    Explain {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The request method.
        method: String,
        /// The request path (as sent, before normalization).
        path: String,
        /// The request's host.
        #[arg(long)]
        host: Option<String>,
        /// The caller's roles (comma-separated); omit --roles, --subject and
        /// --scopes for an anonymous caller.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        /// The caller's subject.
        #[arg(long)]
        subject: Option<String>,
        /// The caller's scopes (comma-separated).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// How the caller authenticated: jwt, session, api_key, mtls.
        #[arg(long = "auth", default_value = "jwt")]
        auth: String,
        /// The client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum BanCommand {
    /// List the bans in force.
    List {
        /// The configuration file (its `[state] shared` Redis, else its `[admin]` API).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ban an address (or an IPv6 /64) by hand.
    Add {
        /// The configuration file (its `[state] shared` Redis, else its `[admin]` API).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// How long, such as 30m or 24h.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The address, or an IPv6 /64 such as 2001:db8:1:2::/64.
        target: String,
    },
    /// Lift the ban on an address (or an IPv6 /64).
    Lift {
        /// The configuration file (its `[state] shared` Redis, else its `[admin]` API).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The address, or an IPv6 /64.
        target: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account; its password is read from stdin, or from a prompt
    /// without echo on a terminal (never from an argument).
    Add {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username (folded: case and compatibility forms do not count).
        name: String,
        /// The account's email (a second login name).
        #[arg(long)]
        email: Option<String>,
        /// Its roles (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "ROLES")]
        roles: Vec<String>,
        /// Create it without a password (it cannot log in with one).
        #[arg(long)]
        no_password: bool,
    },
    /// List accounts (never a password hash).
    List {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replace an account's roles; its sessions end.
    SetRoles {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username or email.
        name: String,
        /// The new roles, comma-separated ("" for none).
        #[arg(value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// Disable an account; its sessions end.
    Disable {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username or email.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username or email.
        name: String,
    },
    /// Remove every second factor (TOTP, recovery codes, passkeys); its sessions end.
    ResetMfa {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username or email.
        name: String,
    },
    /// Clear the login-failure counts of an account under every [login.NAME]:
    /// in Redis with `[state] shared = "redis://…"`, else in the running
    /// gateway's memory through its admin API (`[admin]`); without either,
    /// the counts live only in the running gateway and expire after their window.
    Unlock {
        /// The configuration file (its `[state] shared` Redis, else its `[admin]` API).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username or email.
        name: String,
    },
    /// Delete an account, its sessions and second factors.
    Delete {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The username or email.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum InviteCommand {
    /// Create a single-use invite and print its code once on stdout.
    Create {
        /// The configuration file (its `[state] store` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Roles the account registered with it gets (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "ROLES")]
        roles: Vec<String>,
        /// How long the code works, such as 7d or 12h.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "7d")]
        expires: Duration,
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
        Command::Policy { command } => match command {
            PolicyCommand::Test { config, cases } => portcullis::policy_cli::test(&config, &cases),
            PolicyCommand::Explain { config, method, path, host, roles, subject, scopes, auth, ip } => {
                let identity = (roles.is_some() || subject.is_some() || scopes.is_some()).then(|| {
                    portcullis::policy_cli::Identity {
                        method: auth,
                        subject: subject.unwrap_or_else(|| "test-subject".into()),
                        roles: roles.unwrap_or_default(),
                        scopes: scopes.unwrap_or_default(),
                    }
                });
                portcullis::policy_cli::explain(&config, &method, &path, host.as_deref(), identity.as_ref(), ip)
            }
        },
        Command::Ban { command } => match command {
            BanCommand::List { config, json } => portcullis::cli_ban::list(&config, json),
            BanCommand::Add { config, duration, target } => portcullis::cli_ban::add(&config, &target, duration),
            BanCommand::Lift { config, target } => portcullis::cli_ban::lift(&config, &target),
        },
        Command::User { command } => match command {
            UserCommand::Add { config, name, email, roles, no_password } => {
                let roles: Vec<String> = roles.into_iter().filter(|r| !r.is_empty()).collect();
                portcullis::cli_user::add(&config, &name, email.as_deref(), &roles, no_password)
            }
            UserCommand::List { config, json } => portcullis::cli_user::list(&config, json),
            UserCommand::SetRoles { config, name, roles } => {
                let roles: Vec<String> = roles.into_iter().filter(|r| !r.is_empty()).collect();
                portcullis::cli_user::set_roles(&config, &name, &roles)
            }
            UserCommand::Disable { config, name } => portcullis::cli_user::disable(&config, &name),
            UserCommand::Enable { config, name } => portcullis::cli_user::enable(&config, &name),
            UserCommand::ResetMfa { config, name } => portcullis::cli_user::reset_mfa(&config, &name),
            UserCommand::Unlock { config, name } => portcullis::cli_user::unlock(&config, &name),
            UserCommand::Delete { config, name } => portcullis::cli_user::delete(&config, &name),
        },
        Command::Invite { command } => match command {
            InviteCommand::Create { config, roles, expires } => {
                portcullis::cli_user::create_invite(&config, &roles, expires)
            }
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify { config, head, json } => {
                portcullis::cli_audit::verify(&config, head.as_deref(), json)
            }
            AuditCommand::List { config, json, limit, action, actor, before } => portcullis::cli_audit::list(
                &config,
                portcullis::store::audit::Filter { action, actor },
                portcullis::store::audit::Page { before, limit },
                json,
            ),
        },
        Command::Apikey { command } => match command {
            ApiKeyCommand::Create { config, name, roles, expires } => {
                portcullis::cli_apikey::create(&config, &name, &roles, expires)
            }
            ApiKeyCommand::List { config, json } => portcullis::cli_apikey::list(&config, json),
            ApiKeyCommand::Revoke { config, id } => portcullis::cli_apikey::revoke(&config, &id),
        },
    }
}
