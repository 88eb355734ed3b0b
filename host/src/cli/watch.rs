//! `host deploy` on a `deploy-first` environment, `host watch` and `host monitor`, and what
//! `host status` adds about them.
//!
//! A deploy-first deploy returns once the revision is live and quick-checked; the wait for CI
//! goes on in a detached `host watch` (its own session, output to `.host/watch-ENV.log`), or in
//! the foreground with `--wait`. The watch's progress is in the state store, so `host status`
//! shows it whoever runs it, and a killed watcher is resumed by running `host watch` again.

use super::commands::{Failure, load_config, open_store, subscribe_output, with_setup};
use super::{Cli, Output, exit};
use crate::config::{Config, EnvironmentConfig, Strategy};
use crate::events::{Bus, Event, Outcome};
use crate::lifecycle::monitor::{self, Target};
use crate::lifecycle::watch::{hostname, process_alive};
use crate::lifecycle::{DeployOptions, RunResult, Setup, short};
use crate::notify::{self, Notifier};
use crate::state::{Store, WatchRecord, WatchStatus, now_ms};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

/// What `host deploy` was asked.
pub(super) struct DeployArgs<'a> {
    pub plugin: Option<&'a str>,
    pub env: &'a str,
    pub rev: Option<String>,
    pub dry_run: bool,
    pub approve: bool,
    pub confirm: Option<String>,
    pub wait: bool,
}

/// The messages' context for an environment.
pub(super) fn notify_context(config: &Config, env: &EnvironmentConfig) -> notify::Context {
    notify::Context {
        project: config.project_name(),
        environment: env.name.clone(),
        url: env.health.base_url.clone(),
        deploy_first: env.strategy == Strategy::DeployFirst,
        promote_from: env.promote_from.clone(),
    }
}

pub(super) async fn deploy(cli: &Cli, args: DeployArgs<'_>) -> Result<i32, Failure> {
    let revision = match args.rev {
        Some(rev) => Some(rev),
        None => promoted_revision(cli, args.env).await?,
    };
    let options = DeployOptions {
        revision,
        dry_run: args.dry_run,
        approve: args.approve,
        confirm: args.confirm,
    };
    let (plugin, wait) = (args.plugin, args.wait);
    let result = with_setup(cli, plugin, args.env, async |setup: &Setup<'_>| {
        let result = setup.deploy(options).await;
        if result.outcome != Outcome::Validating {
            return result;
        }
        if wait {
            return setup.watch().await.unwrap_or(result);
        }
        match spawn_watcher(cli, plugin, setup) {
            Ok((pid, log)) => setup.events.emit(Event::WatcherStarted { environment: setup.env.name.clone(), pid, log }),
            Err(e) => eprintln!(
                "warning: could not start the background watcher ({e}); run `host watch --env {}` to wait for CI",
                setup.env.name
            ),
        }
        result
    })
    .await?;
    Ok(result.outcome.exit_code())
}

/// Without `--rev`, an environment promoted from another deploys that one's last validated
/// revision.
async fn promoted_revision(cli: &Cli, env: &str) -> Result<Option<String>, Failure> {
    let config = load_config(cli)?;
    let env_config = config.environment(env).map_err(Failure::usage)?;
    let Some(from) = env_config.promote_from else {
        return Ok(None);
    };
    let store = open_store(&config).await?;
    let state = store
        .environment(&from)
        .await
        .map_err(|e| Failure::other(format!("{e:#}")))?;
    match state.last_validated_revision {
        Some(rev) => Ok(Some(rev)),
        None => Err(Failure::usage(format!(
            "no --rev given and nothing was ever validated on {from} to promote to {env}"
        ))),
    }
}

/// `host watch ENV` in its own session, so it outlives this process and the terminal.
fn spawn_watcher(
    cli: &Cli,
    plugin: Option<&str>,
    setup: &Setup<'_>,
) -> Result<(u32, String), String> {
    let env = &setup.env.name;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the host binary: {e}"))?;
    let log_rel = format!(".host/watch-{env}.log");
    let log_path = setup.config.root.join(&log_rel);
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let config = std::fs::canonicalize(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("watch")
        .arg("--env")
        .arg(env)
        .arg("--config")
        .arg(config);
    if let Some(p) = plugin {
        cmd.arg("--plugin").arg(p);
    }
    if let Some(dir) = &cli.plugin_dir {
        cmd.arg("--plugin-dir").arg(dir);
    }
    if cli.locked {
        cmd.arg("--locked");
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe and only affects the child: a new session, so the
    // watcher has no controlling terminal and survives the shell or CI step that started it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    Ok((child.id(), log_rel))
}

pub(super) async fn watch(cli: &Cli, plugin: Option<&str>, env: &str) -> Result<i32, Failure> {
    let output = cli.output;
    let result = with_setup(cli, plugin, env, async |setup: &Setup<'_>| match setup.watch().await {
        Some(result) => result,
        None => {
            let last = setup.store.latest_watch(env).await.ok().flatten();
            let detail = match &last {
                Some(w) => format!("nothing to watch on {env}: the last deploy-first deployment ({}) is {}", short(&w.revision), w.status.as_str()),
                None => format!("nothing to watch on {env}: no deployment awaits CI"),
            };
            if output == Output::Json {
                println!("{}", serde_json::json!({ "type": "nothing_to_watch", "environment": env, "detail": detail, "exit_code": 0 }));
            } else {
                println!("{detail}");
            }
            RunResult { deployment_id: String::new(), outcome: Outcome::Succeeded, detail }
        }
    })
    .await?;
    Ok(result.outcome.exit_code())
}

pub(super) async fn monitor(cli: &Cli, env: &str, every: Option<Duration>) -> Result<i32, Failure> {
    let config = load_config(cli)?;
    let env_config = config.environment(env).map_err(Failure::usage)?;
    let target = Target::of(&env_config).map_err(Failure::usage)?;
    let store = open_store(&config).await?;
    let bus = Bus::default();
    subscribe_output(cli, &bus);
    let notifier = Notifier::with_context(
        notify_context(&config, &env_config),
        &config.file.notifications.webhooks,
    )
    .map(Arc::new);
    if let Some(n) = &notifier {
        bus.subscribe(n.clone());
    }
    loop {
        let checked = monitor::check(&store, env, &target, &bus).await;
        if let Some(n) = &notifier {
            n.flush().await;
        }
        let code = match checked {
            Ok(c) if c.ok => exit::OK,
            Ok(_) => exit::DOWN,
            Err(e) => return Err(Failure::other(format!("state store: {e:#}"))),
        };
        match every {
            None => return Ok(code),
            Some(every) => tokio::time::sleep(every).await,
        }
    }
}

/// Adds `validation` (the latest deploy-first watch, with whether its watcher still runs) and
/// `monitor` (the last checks, newest first) to `host status --output json`.
pub(super) async fn add_status_json(doc: &mut serde_json::Value, store: &Store, env: &str) {
    let watch = store.latest_watch(env).await.ok().flatten();
    doc["validation"] = watch
        .map(|w| {
            let alive = watcher_alive(&w);
            let mut v = serde_json::to_value(&w).unwrap_or_default();
            v["watcher_running"] = serde_json::json!(alive);
            v
        })
        .unwrap_or_default();
    doc["monitor"] = serde_json::json!(store.monitor_checks(env, 10).await.unwrap_or_default());
}

/// The watch and monitor lines of `host status`.
pub(super) async fn status_lines(store: &Store, env: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(w) = store.latest_watch(env).await.ok().flatten() {
        let ago = |at: i64| {
            humantime::format_duration(Duration::from_secs(((now_ms() - at).max(0) / 1000) as u64))
                .to_string()
        };
        let back = w.rollback_to.as_deref().map(short).unwrap_or("none");
        lines.push(match w.status {
            WatchStatus::Validating => format!(
                "  validation:     {} validating (CI: {}; rollback point {back})",
                short(&w.revision),
                w.ci["source"].as_str().unwrap_or("?")
            ),
            other => format!(
                "  validation:     {} {}: {}",
                short(&w.revision),
                other.as_str(),
                w.verdict.as_deref().unwrap_or("")
            ),
        });
        if w.status == WatchStatus::Validating {
            let watcher = match (w.watcher_pid, watcher_alive(&w)) {
                (Some(pid), Some(true)) => format!(
                    "running (pid {pid}{})",
                    w.watcher_host
                        .map(|h| format!(" on {h}"))
                        .unwrap_or_default()
                ),
                (Some(pid), Some(false)) => {
                    format!("NOT running (pid {pid} is gone): resume with `host watch --env {env}`")
                }
                (Some(pid), None) => format!(
                    "pid {pid} on {} (heartbeat {} ago)",
                    w.watcher_host.unwrap_or_default(),
                    w.heartbeat_at.map(ago).unwrap_or_default()
                ),
                (None, _) => format!("none: start it with `host watch --env {env}`"),
            };
            lines.push(format!("  watcher:        {watcher}"));
            let last = match (w.last_poll_at, &w.last_ci_state) {
                (Some(at), Some(state)) => {
                    let detail = w
                        .last_ci_detail
                        .filter(|d| !d.is_empty())
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    format!("{state}{detail} ({} ago, {} polls)", ago(at), w.polls)
                }
                _ => "not asked yet".into(),
            };
            lines.push(format!("  last CI poll:   {last}"));
        }
    }
    if let Some(c) = store
        .monitor_checks(env, 1)
        .await
        .ok()
        .and_then(|c| c.into_iter().next())
    {
        let since = (now_ms() - c.at).max(0) / 1000;
        lines.push(format!(
            "  monitor:        {} {} ({}s ago: {})",
            if c.ok { "up" } else { "DOWN" },
            c.url,
            since,
            c.detail
        ));
    }
    lines
}

/// Whether the watcher process still runs, when that can be told from here (same machine).
fn watcher_alive(w: &WatchRecord) -> Option<bool> {
    let pid = w.watcher_pid?;
    (w.watcher_host.as_deref() == Some(hostname().as_str())).then(|| process_alive(pid))
}
