//! Stack plugin for an app that runs from a git checkout and is restarted by one command:
//! Streamlit by default (its health endpoint is the default probe), under Docker Compose, a
//! systemd unit or a script.
//!
//! Deploy = `git fetch` (when the checkout has the remote) + `git reset --hard <exact SHA>` +
//! the restart command; rollback = the same to the given revision; backup = a `tar` archive of
//! the paths the settings name, if any. It is built for the host's `deploy-first` strategy
//! (preprod live in seconds, validated by CI afterwards) but knows nothing of it: the host owns
//! CI, timing and the decision to roll back. Command builders live in [`commands`] and are
//! unit-tested natively; this file wires them to the host's capabilities.

pub mod commands;
pub mod settings;

use commands::short;
use plugin_sdk::{
    BackupInfo, Context, Description, Finding, Guest, LogLevel, PluginError, PollStatus,
    PreflightReport, Probe, Result, RollbackMethod, RollbackPlan, RollbackRequest, Severity,
    StepResult, VerifyReport, host, run, run_stdout,
};
use settings::Settings;

/// The plugin. Public so native builds (unit tests) see the `Guest` impl as used.
pub struct StreamlitPreprod;

// Only for the component: the export symbols are not valid in a native linker's version script.
#[cfg(target_arch = "wasm32")]
plugin_sdk::export_plugin!(StreamlitPreprod);

impl Guest for StreamlitPreprod {
    fn describe() -> Description {
        Description {
            name: "streamlit-preprod".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            stack: "git-checkout".into(),
            summary: "An app run from a git checkout (Streamlit by default): git fetch, git reset --hard to the exact \
                      SHA, restart; optional tar backup; rollback by reset + restart"
                .into(),
            // The restart program is whatever deploy.toml names; grant it too.
            capabilities: ["run:git", "run:tar", "run:mkdir"].map(String::from).to_vec(),
            default_probes: vec![Probe {
                name: "streamlit-health".into(),
                path: "/_stcore/health".into(),
                expect_status: 200,
                body_contains: Some("ok".into()),
                attempts: 3,
                interval_ms: 1_000,
                timeout_ms: 2_000,
            }],
        }
    }

    fn preflight(ctx: Context) -> Result<PreflightReport> {
        let s = Settings::parse(&ctx.settings)?;
        let fetched = fetch(&s)?;
        let target = resolve_target(&ctx, &s, fetched)?;
        let current = head()?;
        let subject = run_stdout(&commands::git_subject(&target)).unwrap_or_default();
        let dirty = commands::dirty_count(&run_stdout(&commands::git_dirty())?);

        let mut findings = Vec::new();
        if dirty > 0 {
            findings.push(Finding {
                file: ".".into(),
                line: 0,
                rule: "local-changes".into(),
                severity: Severity::Risky,
                reason: format!("{dirty} tracked file(s) changed in the checkout: `git reset --hard` discards them"),
            });
        }
        let mut changes = Vec::new();
        if let Some((what, who)) = subject.split_once('\t') {
            changes.push(format!("commit {}: {what} ({who})", short(&target)));
        }
        changes.push(match &current {
            Some(c) if *c == target => {
                format!("git reset --hard {} (already checked out)", short(&target))
            }
            Some(c) => format!("git reset --hard {} (from {})", short(&target), short(c)),
            None => format!("git reset --hard {}", short(&target)),
        });
        changes.push(format!("restart: {}", s.restart.join(" ")));
        let (present, missing): (Vec<String>, Vec<String>) =
            s.backup_paths.iter().cloned().partition(|p| exists(p));
        if !present.is_empty() {
            changes.push(format!(
                "back up {} into {}/ first",
                present.join(", "),
                s.backup_dir
            ));
        }
        if !missing.is_empty() {
            changes.push(format!(
                "nothing to back up at {} (not there yet)",
                missing.join(", ")
            ));
        }
        Ok(PreflightReport {
            current_revision: current,
            target_revision: target,
            current_schema: None,
            target_schema: None,
            pending_migrations: Vec::new(),
            findings,
            rollback: RollbackPlan {
                by_downgrade: false,
                downgrade_target: None,
                would_drop: Vec::new(),
            },
            needs_backup: !present.is_empty(),
            changes,
        })
    }

    fn backup(ctx: Context) -> Result<BackupInfo> {
        let s = Settings::parse(&ctx.settings)?;
        let present: Vec<String> = s
            .backup_paths
            .iter()
            .filter(|p| exists(p))
            .cloned()
            .collect();
        if present.is_empty() {
            return Err(
                PluginError::new("nothing to back up: none of backup_paths exists")
                    .with_hint("name what to archive in [plugin.settings] backup_paths"),
            );
        }
        let path = commands::backup_path(&s.backup_dir, &ctx.environment, &ctx.deployment_id);
        run(&commands::mkdir(&s.backup_dir))?;
        let written = run(&commands::tar_create(&path, &present)).map_err(|e| {
            e.with_hint("every path in backup_paths must exist under the project root")
        })?;
        let verified = !written.planned && {
            let listing = run(&commands::tar_list(&path))?;
            if listing.stdout.trim().is_empty() {
                return Err(PluginError::new(format!(
                    "backup {path} was written but lists no entry"
                )));
            }
            true
        };
        Ok(BackupInfo {
            path,
            format: "tar.gz".into(),
            verified,
        })
    }

    fn deploy(ctx: Context) -> Result<StepResult> {
        let s = Settings::parse(&ctx.settings)?;
        // Preflight resolved (and fetched) it; the engine passes the exact SHA back.
        let sha = resolve_target(&ctx, &s, false)?;
        let reset = run(&commands::git_reset(&sha))?;
        run(&restart(&s)?)?;
        let planned = if reset.planned { "planned: " } else { "" };
        Ok(StepResult {
            summary: format!("{planned}reset to {}, restarted", short(&sha)),
            pending: None,
        })
    }

    fn poll(_ctx: Context, _token: String) -> Result<PollStatus> {
        Err(PluginError::new(
            "nothing to poll: every step finishes before returning",
        ))
    }

    fn verify(ctx: Context) -> Result<VerifyReport> {
        let s = Settings::parse(&ctx.settings)?;
        let want = resolve_target(&ctx, &s, false)?;
        let head = head()?;
        if head.as_deref() != Some(want.as_str()) && !ctx.dry_run {
            return Err(PluginError::new(format!(
                "the checkout is at {}, not at {}",
                head.as_deref().map(short).unwrap_or("no commit"),
                short(&want)
            ))
            .with_hint("something moved the checkout during the deploy (a `git pull` by hand, another tool)"));
        }
        Ok(VerifyReport {
            checks: vec![format!("code at {}", short(&want))],
            probes: Vec::new(),
        })
    }

    fn rollback(ctx: Context, request: RollbackRequest) -> Result<StepResult> {
        let s = Settings::parse(&ctx.settings)?;
        let mut done = Vec::new();
        match request.method {
            RollbackMethod::Restore => {
                let backup = request.backup.as_ref().ok_or_else(|| {
                    PluginError::new("restore requested but no backup was given")
                        .with_hint("`host history` names each deployment's backup")
                })?;
                run(&commands::tar_extract(&backup.path))?;
                done.push(format!("restored {}", backup.path));
            }
            RollbackMethod::Downgrade => {
                plugin_sdk::log(
                    LogLevel::Warn,
                    "this stack has no migrations to downgrade: rolling back the code only",
                );
            }
            RollbackMethod::CodeOnly => {}
        }
        let sha = resolve(&request.to_revision)?;
        let reset = run(&commands::git_reset(&sha))?;
        done.push(format!("reset to {}", short(&sha)));
        run(&restart(&s)?)?;
        done.push("restarted".into());
        let planned = if reset.planned { "planned: " } else { "" };
        Ok(StepResult {
            summary: format!("{planned}{}", done.join(", ")),
            pending: None,
        })
    }

    fn check_migrations(_sources: Vec<(String, String)>) -> Vec<Finding> {
        Vec::new()
    }
}

fn restart(s: &Settings) -> Result<plugin_sdk::Command> {
    commands::restart(&s.restart, s.restart_timeout_ms)
        .ok_or_else(|| PluginError::new("`restart` is empty"))
}

/// `git fetch` when the checkout has the configured remote; whether it fetched.
fn fetch(s: &Settings) -> Result<bool> {
    if s.remote.is_empty() {
        return Ok(false);
    }
    let has_remote = host::run(&commands::git_remote_url(&s.remote))?.status == 0;
    if !has_remote {
        return Ok(false);
    }
    run(&commands::git_fetch(&s.remote)).map_err(|e| {
        e.with_hint(format!(
            "check that `{}` is reachable from here and the checkout may fetch from it",
            s.remote
        ))
    })?;
    Ok(true)
}

/// The exact commit to deploy. After a fetch, a branch name means the remote's branch (what
/// was just fetched), never a local branch that may be behind.
fn resolve_target(ctx: &Context, s: &Settings, fetched: bool) -> Result<String> {
    let target = ctx.target_revision.as_deref().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        PluginError::new("no target revision: this plugin deploys an exact git commit")
            .with_hint("pass --rev SHA (in CI: the commit that triggered the pipeline, e.g. $GITHUB_SHA)")
    })?;
    if fetched && !looks_like_sha(target) {
        let sha = run_stdout(&commands::git_remote_branch(&s.remote, target))?;
        if sha.len() == 40 {
            return Ok(sha);
        }
    }
    resolve(target)
}

fn resolve(rev: &str) -> Result<String> {
    let out = host::run(&commands::git_verify(rev))?;
    let sha = out.stdout.trim();
    if out.status != 0 || sha.is_empty() {
        return Err(PluginError::new(format!("`{rev}` names no commit in this checkout"))
            .with_hint("check the name; a commit pushed since the last fetch needs the remote (setting `remote`) to be reachable"));
    }
    Ok(sha.to_string())
}

fn head() -> Result<Option<String>> {
    let out = host::run(&commands::git_head())?;
    Ok((out.status == 0)
        .then(|| out.stdout.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// Whether a path under the project root exists (a fresh checkout has no data yet).
fn exists(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
    host::list_dir(dir).is_ok_and(|entries| entries.iter().any(|e| e.trim_end_matches('/') == name))
}

fn looks_like_sha(rev: &str) -> bool {
    rev.len() >= 7 && rev.len() <= 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}
