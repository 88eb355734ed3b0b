//! The command line: arguments, output and exit codes. The only layer that prints.

mod commands;
mod plugins;
mod render;
mod watch;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit codes (documented in the README). Run outcomes map through `events::Outcome`.
pub mod exit {
    pub const OK: i32 = 0;
    /// `migrations check` found destructive migrations.
    pub const FINDINGS: i32 = 1;
    pub const USAGE: i32 = 2;
    /// `host monitor`: the app is down (same code as a check finding a problem).
    pub const DOWN: i32 = 1;
    /// A plugin was refused by policy before it ran: not pinned, digest or signature mismatch.
    pub const REFUSED: i32 = 6;
}

#[derive(Parser, Debug)]
#[command(name = "host", version, about = "Deploy host: drives sandboxed WebAssembly stack plugins through one lifecycle")]
pub struct Cli {
    /// The deploy file; its directory is the project root.
    #[arg(long, global = true, default_value = "deploy.toml", env = "HOST_CONFIG")]
    pub config: PathBuf,
    /// Human lines, or a stable stream of JSON events (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Where plugins given by name are found (default: plugin.dir, then target/plugins next to
    /// the host binary).
    #[arg(long, global = true, env = "HOST_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Run only plugins pinned in ./host.lock with the same digest (the default when CI=true).
    #[arg(long, global = true)]
    pub locked: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Deploy a revision to an environment: preflight, approval, backup, deploy, verify.
    Deploy {
        /// Plugin name (looked up in the plugin directory) or path to a component.
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        env: String,
        /// Revision to deploy (tag, branch or commit).
        #[arg(long)]
        rev: Option<String>,
        /// Run read-only steps only and print what would change.
        #[arg(long)]
        dry_run: bool,
        /// Approve destructive changes up front (never implied, not even in CI).
        #[arg(long, visible_alias = "approve-destructive")]
        approve: bool,
        /// The word an environment with `confirm` asks for (e.g. DEPLOY), where no terminal can
        /// type it. Never implied, not even in CI.
        #[arg(long, value_name = "WORD")]
        confirm: Option<String>,
        /// deploy-first: stay in the foreground until CI's verdict (exit 0 validated, 10 rolled
        /// back) instead of leaving it to a background `host watch`.
        #[arg(long)]
        wait: bool,
    },
    /// deploy-first: wait for CI's verdict on the environment's deployment awaiting it, then
    /// mark it validated or roll back. Resumes a watch whose watcher stopped.
    Watch {
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        env: String,
    },
    /// Check the deployed app (status, body text, timeout); alert when it goes down or comes
    /// back; exit 1 while it is down.
    Monitor {
        #[arg(long)]
        env: String,
        /// Check again every DURATION (e.g. 1h) instead of once.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        every: Option<std::time::Duration>,
    },
    /// Roll an environment back to its previous validated revision (or `--to`).
    Rollback {
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        env: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Current and last validated revision, lock and last run of an environment.
    Status {
        #[arg(long)]
        env: String,
    },
    /// Past runs of an environment with their phases.
    History {
        #[arg(long)]
        env: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Release an environment's lock (after a failed rollback was dealt with by hand).
    Unlock {
        #[arg(long)]
        env: String,
    },
    /// List or inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Migration checks.
    Migrations {
        #[command(subcommand)]
        command: MigrationsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Plugins in the plugin directory.
    List,
    /// What a plugin is, what it asks for and what deploy.toml grants it (for `--env`).
    Inspect {
        plugin: String,
        #[arg(long)]
        env: Option<String>,
    },
    /// Pin plugins (their sha256 and contract version) in ./host.lock.
    Lock { plugins: Vec<String> },
    /// Sign a plugin with an ed25519 secret key: writes PLUGIN.wasm.sig next to it.
    Sign {
        #[arg(long)]
        key: PathBuf,
        plugin: String,
    },
    /// Check a plugin's signature against deploy.toml's trusted keys (or `--key PUBLIC_KEY`).
    Verify {
        plugin: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Make a signing key: the secret goes to `--out`, the public key is printed.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Which plugin contract versions this host loads.
    Contract,
}

#[derive(Subcommand, Debug)]
pub enum MigrationsCommand {
    /// Classify migration files (destructive / risky / info) with file and line.
    Check {
        #[arg(long)]
        plugin: String,
        /// Files or directories (default: the plugin's migrations directory from settings).
        paths: Vec<PathBuf>,
    },
}

/// Parse arguments, run, return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HOST_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(commands::run(cli))
}
