//! One function per subcommand: load what it needs, call the layer below, print the result.

use super::plugins;
use super::render::{Human, JsonLines};
use super::{Cli, Command, MigrationsCommand, Output, PluginsCommand, exit};
use crate::capabilities::{CapabilityContext, CapabilityHost};
use crate::config::{self, Config};
use crate::events::Bus;
use crate::lifecycle::approval::Approver;
use crate::notify::Notifier;
use crate::lifecycle::{RunResult, Setup, severity_name, short};
use crate::runtime::{CallLimits, LoadedPlugin, PluginCalls, Runtime};
use crate::state::Store;
use crate::trust;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An error for the user: message, and the exit code it maps to.
pub(super) struct Failure {
    pub(super) message: String,
    pub(super) code: i32,
}

impl Failure {
    pub(super) fn usage(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code: exit::USAGE }
    }
    pub(super) fn other(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code: 3 }
    }
}

pub async fn run(cli: Cli) -> i32 {
    let output = cli.output;
    match dispatch(cli).await {
        Ok(code) => code,
        Err(Failure { message, code }) => {
            if output == Output::Json {
                let doc = serde_json::json!({ "type": "error", "message": message, "exit_code": code });
                println!("{doc}");
            }
            eprintln!("error: {message}");
            code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    match &cli.command {
        Command::Deploy { plugin, env, rev, dry_run, approve, confirm, wait } => {
            let args = super::watch::DeployArgs {
                plugin: plugin.as_deref(),
                env,
                rev: rev.clone(),
                dry_run: *dry_run,
                approve: *approve,
                confirm: confirm.clone(),
                wait: *wait,
            };
            super::watch::deploy(&cli, args).await
        }
        Command::Watch { plugin, env } => super::watch::watch(&cli, plugin.as_deref(), env).await,
        Command::Monitor { env, every } => super::watch::monitor(&cli, env, *every).await,
        Command::Rollback { plugin, env, to } => {
            let to = to.clone();
            let result = with_setup(&cli, plugin.as_deref(), env, async |setup: &Setup<'_>| setup.rollback(to).await).await?;
            Ok(result.outcome.exit_code())
        }
        Command::Status { env } => status(&cli, env).await,
        Command::History { env, limit } => history(&cli, env, *limit).await,
        Command::Unlock { env } => unlock(&cli, env).await,
        Command::Plugins { command } => match command {
            PluginsCommand::List => plugins::list(&cli).await,
            PluginsCommand::Inspect { plugin, env } => plugins::inspect(&cli, plugin, env.as_deref()).await,
            PluginsCommand::Lock { plugins: names } => plugins::lock(&cli, names).await,
            PluginsCommand::Sign { key, plugin } => plugins::sign(&cli, key, plugin),
            PluginsCommand::Verify { plugin, key } => plugins::verify(&cli, plugin, key.as_deref()),
            PluginsCommand::Keygen { out } => plugins::keygen(&cli, out),
            PluginsCommand::Contract => Ok(plugins::contract(&cli)),
        },
        Command::Migrations { command: MigrationsCommand::Check { plugin, paths } } => migrations_check(&cli, plugin, paths).await,
    }
}

pub(super) fn load_config(cli: &Cli) -> Result<Config, Failure> {
    config::load(&cli.config).map_err(|e| Failure::usage(e.to_string()))
}

/// The config when there is one; commands that do not need it still use its grants and dirs.
pub(super) fn optional_config(cli: &Cli) -> Result<Option<Config>, Failure> {
    if cli.config.exists() { load_config(cli).map(Some) } else { Ok(None) }
}

pub(super) async fn open_store(config: &Config) -> Result<Store, Failure> {
    let url = std::env::var("HOST_STATE_URL").ok().or_else(|| config.file.state.url.clone());
    let opened = match url {
        Some(url) => {
            // A relative SQLite path is relative to the project root, not the shell's cwd.
            let url = match url.strip_prefix("sqlite://") {
                Some(p) if !p.starts_with('/') => format!("sqlite://{}", config.root.join(p).display()),
                _ => url,
            };
            Store::open(&url).await
        }
        None => Store::open_default(&config.root).await,
    };
    opened.map_err(|e| Failure::other(format!("state store: {e:#}")))
}

pub(super) fn runtime() -> Result<Runtime, Failure> {
    Runtime::new(Runtime::default_cache_dir()).map_err(|e| Failure::other(format!("wasm runtime: {e:#}")))
}

/// Directories searched for plugins given by name, in order.
pub(super) fn plugin_dirs(cli: &Cli, config: Option<&Config>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = &cli.plugin_dir {
        dirs.push(d.clone());
    }
    if let Some(d) = config.and_then(|c| c.file.plugin.dir.as_ref().map(|d| c.resolve(d))) {
        dirs.push(d);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(bin_dir) = exe.parent()
    {
        // target/debug/host -> target/plugins (what `cargo xtask build-plugins` writes).
        dirs.push(bin_dir.join("../plugins"));
        dirs.push(bin_dir.join("plugins"));
    }
    dirs
}

/// `--plugin` as given, else deploy.toml's `[plugin]`: a path, or a name in the plugin dirs.
pub(super) fn find_plugin(cli: &Cli, config: Option<&Config>, given: Option<&str>) -> Result<(String, PathBuf), Failure> {
    let by_path = |p: PathBuf| {
        let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        (name, p)
    };
    let wanted = match (given, config) {
        (Some(g), _) => g.to_string(),
        (None, Some(c)) => match (&c.file.plugin.name, &c.file.plugin.path) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => return Ok(by_path(c.resolve(p))),
            (None, None) => return Err(Failure::usage(format!("no plugin: pass --plugin NAME|PATH or set [plugin] name in {}", c.path.display()))),
        },
        (None, None) => return Err(Failure::usage("no plugin: pass --plugin NAME|PATH")),
    };
    if wanted.contains('/') || wanted.ends_with(".wasm") {
        let path = PathBuf::from(&wanted);
        if !path.exists() {
            return Err(Failure::usage(format!("plugin file {wanted} does not exist")));
        }
        return Ok(by_path(path));
    }
    let dirs = plugin_dirs(cli, config);
    for dir in &dirs {
        let candidate = dir.join(format!("{wanted}.wasm"));
        if candidate.exists() {
            return Ok((wanted, candidate.canonicalize().unwrap_or(candidate)));
        }
    }
    let known: Vec<String> = installed_plugins(&dirs).into_iter().map(|(n, _)| n).collect();
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(Failure::usage(format!(
        "unknown plugin `{wanted}`: no {wanted}.wasm in {} (installed: {}; build them with `cargo xtask build-plugins`)",
        searched.join(", "),
        if known.is_empty() { "none".into() } else { known.join(", ") }
    )))
}

pub(super) fn installed_plugins(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "wasm") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                if !found.iter().any(|(n, _)| n == &name) {
                    found.push((name, path));
                }
            }
        }
    }
    found.sort();
    found
}

/// Vet a plugin (pins, signatures) on its bytes, then load it: a refused plugin never runs.
pub(super) fn load_plugin(
    cli: &Cli,
    config: Option<&Config>,
    runtime: &Runtime,
    name: &str,
    path: &Path,
) -> Result<LoadedPlugin, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read plugin {}: {e}", path.display())))?;
    let policy = trust_policy(cli, config)?;
    trust::vet(name, path, &bytes, &policy).map_err(|m| Failure { message: m, code: exit::REFUSED })?;
    runtime.load(path).map_err(|e| Failure::usage(e.to_string()))
}

/// `--locked` (or CI=true) pins plugins to host.lock in the current directory; deploy.toml's
/// `[trust]` names the keys whose signatures count.
pub(super) fn trust_policy(cli: &Cli, config: Option<&Config>) -> Result<trust::Policy, Failure> {
    let locked = if cli.locked || trust::ci() {
        let dir = std::env::current_dir().map_err(|e| Failure::usage(e.to_string()))?;
        Some(trust::LockFile::read(&dir).map_err(|m| Failure { message: m, code: exit::REFUSED })?)
    } else {
        None
    };
    let t = config.map(|c| c.file.trust.clone()).unwrap_or_default();
    Ok(trust::Policy { locked, trusted_keys: t.keys, require_signature: t.require_signature })
}

/// Answers the approval gate on a terminal; nobody answers in CI or without a terminal.
struct TerminalApprover;

impl Approver for TerminalApprover {
    fn confirm(&self, question: &str, expected: &str) -> Option<bool> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if ci || !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!("{question}: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line.trim() == expected)
    }
}

/// `user@host`, recorded with each run and shown as the lock holder (`HOST_ACTOR` overrides,
/// e.g. with a CI job's name).
fn actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| login_name());
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    std::env::var("HOST_ACTOR").unwrap_or(format!("{user}@{host}"))
}

/// The name of the user running us, from the password database.
fn login_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage (or null), read once right away.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return format!("uid{}", libc::getuid());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}

pub(super) fn subscribe_output(cli: &Cli, bus: &Bus) {
    match cli.output {
        Output::Json => bus.subscribe(Arc::new(JsonLines)),
        Output::Human => bus.subscribe(Arc::new(Human::new(std::env::var_os("HOST_VERBOSE").is_some()))),
    }
}

/// Load config, plugin, store; run `f` on the assembled setup.
pub(super) async fn with_setup<F>(cli: &Cli, plugin: Option<&str>, env: &str, f: F) -> Result<RunResult, Failure>
where
    F: AsyncFnOnce(&Setup<'_>) -> RunResult,
{
    let config = load_config(cli)?;
    let env_config = config.environment(env).map_err(Failure::usage)?;
    let (name, path) = find_plugin(cli, Some(&config), plugin)?;
    let runtime = runtime()?;
    let loaded = load_plugin(cli, Some(&config), &runtime, &name, &path)?;
    let store = open_store(&config).await?;
    let bus = Bus::default();
    subscribe_output(cli, &bus);
    let context = super::watch::notify_context(&config, &env_config);
    let notifier = Notifier::with_context(context, &config.file.notifications.webhooks).map(Arc::new);
    if let Some(n) = &notifier {
        bus.subscribe(n.clone());
    }
    let setup = Setup {
        config: &config,
        env: env_config,
        runtime: &runtime,
        plugin: &loaded,
        plugin_name: name,
        store,
        events: bus,
        approver: Arc::new(TerminalApprover),
        actor: actor(),
    };
    let result = f(&setup).await;
    if let Some(n) = notifier {
        n.flush().await;
    }
    Ok(result)
}

async fn status(cli: &Cli, env: &str) -> Result<i32, Failure> {
    let config = load_config(cli)?;
    config.environment(env).map_err(Failure::usage)?;
    let store = open_store(&config).await?;
    let state = store.environment(env).await.map_err(|e| Failure::other(format!("{e:#}")))?;
    let lock = store.lock_info(env).await.map_err(|e| Failure::other(format!("{e:#}")))?;
    let last = store.history(env, 1).await.map_err(|e| Failure::other(format!("{e:#}")))?.into_iter().next();
    let pending = match &lock {
        // A run is changing things (or a person must act first): a count would be stale.
        Some(l) if !l.is_expired(crate::state::now_ms()) => Err(format!("locked by {}: {}", l.holder, l.reason)),
        _ => {
            let revision = state.current_revision.as_deref().unwrap_or("HEAD");
            pending_migrations(cli, &config, env, &store, revision).await
        }
    };
    if cli.output == Output::Json {
        let mut doc = serde_json::json!({ "environment": state, "lock": lock, "last_run": last });
        doc["pending_migrations"] = pending.as_ref().map(|p| p.len().into()).unwrap_or_default();
        doc["pending_migration_ids"] = pending.as_ref().map(|p| serde_json::json!(p)).unwrap_or_default();
        doc["pending_migrations_error"] = pending.as_ref().err().map(|e| e.as_str().into()).unwrap_or_default();
        super::watch::add_status_json(&mut doc, &store, env).await;
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(exit::OK);
    }
    println!("environment {env} (state: {})", store.backend_name());
    println!("  current:        {}", state.current_revision.as_deref().map(short).unwrap_or("none"));
    println!("  last validated: {}", state.last_validated_revision.as_deref().map(short).unwrap_or("none"));
    match &pending {
        Ok(p) if p.is_empty() => println!("  pending migrations: 0"),
        Ok(p) => println!("  pending migrations: {} ({})", p.len(), p.join(", ")),
        Err(why) => println!("  pending migrations: unknown ({why})"),
    }
    match lock {
        Some(l) if l.is_expired(crate::state::now_ms()) => {
            println!("  lock:           free (the lease of {} expired: that run stopped)", l.holder)
        }
        Some(l) => println!("  lock:           held by {} ({})", l.holder, l.reason),
        None => println!("  lock:           free"),
    }
    if let Some(d) = last {
        println!(
            "  last run:       {} {} -> {} ({}){}",
            d.kind,
            d.requested_revision.as_deref().unwrap_or("-"),
            d.status,
            d.target_revision.as_deref().map(short).unwrap_or("-"),
            d.detail.map(|x| format!(": {x}")).unwrap_or_default()
        );
    }
    for line in super::watch::status_lines(&store, env).await {
        println!("{line}");
    }
    Ok(exit::OK)
}

/// For `host status`: the migrations the database has not applied for `revision`, from the
/// plugin's preflight run as a dry-run (read-only commands only). A failure is a reason to
/// show, never a failure of `status`.
async fn pending_migrations(cli: &Cli, config: &Config, env: &str, store: &Store, revision: &str) -> Result<Vec<String>, String> {
    let env_config = config.environment(env)?;
    let (name, path) = find_plugin(cli, Some(config), None).map_err(|f| f.message)?;
    let runtime = runtime().map_err(|f| f.message)?;
    let loaded = load_plugin(cli, Some(config), &runtime, &name, &path).map_err(|f| f.message)?;
    let setup = Setup {
        config,
        env: env_config,
        runtime: &runtime,
        plugin: &loaded,
        plugin_name: name,
        store: store.clone(),
        // Nobody listens: the commands preflight runs are not status's output.
        events: Bus::default(),
        approver: Arc::new(crate::lifecycle::approval::NoApprover),
        actor: actor(),
    };
    let report = setup.inspect(revision).await?;
    Ok(report
        .pending_migrations
        .iter()
        .map(|m| if m.description.is_empty() { m.id.clone() } else { format!("{} {}", m.id, m.description) })
        .collect())
}

async fn history(cli: &Cli, env: &str, limit: u32) -> Result<i32, Failure> {
    let config = load_config(cli)?;
    let store = open_store(&config).await?;
    let runs = store.history(env, limit).await.map_err(|e| Failure::other(format!("{e:#}")))?;
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&runs).unwrap_or_default());
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        println!("no runs on {env} yet");
    }
    for d in runs {
        let phases: Vec<String> = d.phases.iter().map(|p| format!("{}:{}", p.phase, p.outcome)).collect();
        println!(
            "{}  {:8} {:10} {:15} {:12} {}  [{}]",
            &d.id[..8],
            d.kind.as_str(),
            d.requested_revision.as_deref().unwrap_or("-"),
            d.status.as_str(),
            d.target_revision.as_deref().map(short).unwrap_or("-"),
            d.actor,
            phases.join(" ")
        );
        if let Some(b) = &d.backup {
            println!("          backup {} ({} bytes, sha256 {})", b.path, b.size_bytes, &b.sha256[..12.min(b.sha256.len())]);
        }
    }
    Ok(exit::OK)
}

async fn unlock(cli: &Cli, env: &str) -> Result<i32, Failure> {
    let config = load_config(cli)?;
    let store = open_store(&config).await?;
    let released = store.force_release(env).await.map_err(|e| Failure::other(format!("{e:#}")))?;
    if cli.output == Output::Json {
        println!("{}", serde_json::json!({ "environment": env, "released": released }));
        return Ok(exit::OK);
    }
    match released {
        Some(lock) => println!("released the lock on {env} held by {} ({})", lock.holder, lock.reason),
        None => println!("{env} was not locked"),
    }
    Ok(exit::OK)
}

/// Calls to a plugin outside a run: nothing granted, nothing recorded.
pub(super) fn pure_calls<'a>(runtime: &'a Runtime, plugin: &'a LoadedPlugin, name: &str) -> PluginCalls<'a> {
    let caps = CapabilityContext::deny_all(name, std::env::current_dir().unwrap_or_default());
    PluginCalls::new(runtime, plugin, name, CallLimits::default(), Arc::new(move || CapabilityHost::new(caps.clone())))
}

async fn migrations_check(cli: &Cli, plugin: &str, paths: &[PathBuf]) -> Result<i32, Failure> {
    let config = optional_config(cli)?;
    let (name, path) = find_plugin(cli, config.as_ref(), Some(plugin))?;
    let runtime = runtime()?;
    let loaded = load_plugin(cli, config.as_ref(), &runtime, &name, &path)?;
    let mut sources = Vec::new();
    for p in paths {
        collect_sources(p, &mut sources).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?;
    }
    if sources.is_empty() {
        return Err(Failure::usage("no migration files given (pass files or directories)"));
    }
    let findings = pure_calls(&runtime, &loaded, &name).check_migrations(&sources).await.map_err(|e| Failure::other(e.to_string()))?;
    let destructive = findings.iter().filter(|f| severity_name(f.severity) == "destructive").count();
    if cli.output == Output::Json {
        let doc: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| serde_json::json!({ "file": f.file, "line": f.line, "rule": f.rule, "severity": severity_name(f.severity), "reason": f.reason }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for f in &findings {
            println!("{}:{}: {}: {}: {}", f.file, f.line, severity_name(f.severity), f.rule, f.reason);
        }
        println!("{} file(s), {} finding(s), {} destructive", sources.len(), findings.len(), destructive);
    }
    Ok(if destructive > 0 { exit::FINDINGS } else { exit::OK })
}

fn collect_sources(path: &Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "py" || x == "rb" || x == "sql") {
                collect_sources(&e, out)?;
            }
        }
    } else {
        out.push((path.display().to_string(), std::fs::read_to_string(path)?));
    }
    Ok(())
}
