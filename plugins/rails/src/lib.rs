//! Stack plugin for Ruby on Rails apps on PostgreSQL.
//!
//! The stack knowledge lives in plain modules, unit-tested natively: [`ruby`] (a small lexer
//! that blanks comments, strings and heredocs), [`rules`] and [`sql`] (what a migration risks,
//! whether it has a way back), [`schema`] (pending and unknown versions, `db:migrate:status`,
//! rollback steps), [`commands`] (what to run), [`plan`] (the preflight report). This file only
//! wires them to the host: it asks for commands, queries, files and environment variables, and
//! never sleeps or retries (the host owns every deadline, including the migration timeout it
//! enforces by killing `db:migrate`).
//!
//! Pending migrations come from the database (`schema_migrations`, read through the host's
//! query capability when the `database` setting names one, else from `bin/rails
//! db:migrate:status` where the app runs), compared with the *target's* `db/migrate/*.rb`
//! read from git: a deploy whose code is already up to date still applies, and gates, what the
//! database has not run.

pub mod commands;
pub mod plan;
pub mod ruby;
pub mod rules;
pub mod schema;
pub mod settings;
pub mod sql;

use commands::short;
use plugin_sdk::{
    BackupInfo, CommandOutput, Context, Description, Finding, Guest, LogLevel, PluginError,
    PollStatus, PreflightReport, Probe, Result, RollbackMethod, RollbackRequest, StepResult,
    VerifyReport, host, run, run_stdout,
};
use schema::MigrationFile;
use settings::Settings;
use std::collections::BTreeSet;

/// The plugin. Public so native builds (unit tests) see the `Guest` impl as used.
pub struct Rails;

// Only for the component: the export symbols are not valid in a native linker's version
// script, and native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
plugin_sdk::export_plugin!(Rails);

impl Guest for Rails {
    fn describe() -> Description {
        Description {
            name: "rails".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            stack: "ruby-rails".into(),
            summary: "Ruby on Rails + PostgreSQL: pending migrations read from the database (even when the code is \
                      up to date), destructive ones classified per line, pg_dump backup, db:migrate under a timeout, \
                      rollback by db:rollback STEP=n or restore"
                .into(),
            // The defaults; `rails`, `runner`, `restart` and `database` come from deploy.toml.
            capabilities: ["run:git", "run:bin/rails", "run:pg_dump", "run:pg_restore", "run:psql", "run:mkdir", "env:DATABASE_URL"]
                .map(String::from)
                .to_vec(),
            default_probes: vec![up_probe("/up")],
        }
    }

    fn preflight(ctx: Context) -> Result<PreflightReport> {
        let s = Settings::parse(&ctx.settings)?;
        let target = resolve_target(&ctx)?;
        let current = git_head()?;
        let dirty = commands::dirty_count(&run_stdout(&commands::git_dirty())?);
        let files = files_at(&s, &target)?;
        let applied = applied_versions(&s)?;
        let mut pending = Vec::new();
        for file in schema::pending(&applied, &files) {
            let content = run(&commands::git_show(&target, &file.path))?.stdout;
            pending.push(plan::Script {
                file: file.clone(),
                analysis: rules::analyze(&content),
            });
        }
        Ok(plan::report(&plan::Observed {
            settings: &s,
            environment: &ctx.environment,
            current_code: current.as_deref(),
            target: &target,
            applied: &applied,
            target_files: &files,
            pending,
            dirty_files: dirty,
        }))
    }

    fn backup(ctx: Context) -> Result<BackupInfo> {
        let s = Settings::parse(&ctx.settings)?;
        let url = require_database_url(&s, "the backup")?;
        plugin_sdk::postgres::backup(&url, &s.backup_dir, &ctx.environment, &ctx.deployment_id)
    }

    fn deploy(ctx: Context) -> Result<StepResult> {
        let s = Settings::parse(&ctx.settings)?;
        let sha = resolve_target(&ctx)?;
        let checkout = run(&commands::git_checkout(&sha))?;
        let timeout = s.migration_timeout(&ctx.environment);
        // Always run: what is pending is the database's business, not the diff's.
        let migrate = commands::migrate(&s, timeout, &commands::app_name(&ctx.deployment_id));
        let migrated = host::run(&migrate)?;
        if migrated.status != 0 {
            let error = PluginError::new(plugin_sdk::cmd::failure_message(&migrate, &migrated));
            return Err(error.with_hint(if migrated.timed_out {
                format!(
                    "the migration timeout is {} (`migration_timeout` in the environment's settings); \
                     make the migration faster, or raise it for this environment",
                    plan::human(timeout)
                )
            } else {
                "`bin/rails db:migrate:status` shows where the database stands; a failed migration's \
                 transaction is rolled back (unless it disables DDL transactions)"
                    .to_string()
            }));
        }
        let applied = schema::parse_migrated(&migrated.stdout, "migrated");
        let restarted = match commands::restart(&s) {
            Some(restart) => run(&restart).map(|_| true)?,
            None => false,
        };
        let planned = if checkout.planned { "planned: " } else { "" };
        let migrations = match applied.len() {
            0 if checkout.planned => "db:migrate".to_string(),
            0 => "no migration pending".to_string(),
            n => format!(
                "applied {n} migration{} ({})",
                if n == 1 { "" } else { "s" },
                join(&applied)
            ),
        };
        let restarted = if restarted { ", restarted" } else { "" };
        Ok(StepResult {
            summary: format!(
                "{planned}checked out {}, {migrations}{restarted}",
                short(&sha)
            ),
            pending: None,
        })
    }

    fn poll(_ctx: Context, _token: String) -> Result<PollStatus> {
        Err(PluginError::new(
            "nothing to poll: every step of this plugin finishes before it returns",
        ))
    }

    fn verify(ctx: Context) -> Result<VerifyReport> {
        let s = Settings::parse(&ctx.settings)?;
        // The migrations of the code now checked out, against the database.
        let files = files_checked_out(&s)?;
        let applied = applied_versions(&s)?;
        let pending = schema::pending(&applied, &files);
        let mut checks = Vec::new();
        if pending.is_empty() {
            let at = applied
                .iter()
                .next_back()
                .map_or("empty".to_string(), u64::to_string);
            checks.push(format!("0 pending migrations (schema at {at})"));
        } else {
            let list: Vec<String> = pending
                .iter()
                .map(|f| format!("{} {}", f.version, f.name))
                .collect();
            let msg = format!(
                "{} migration(s) of the deployed code are not applied: {}",
                pending.len(),
                list.join(", ")
            );
            if !ctx.dry_run {
                return Err(PluginError::new(msg)
                    .with_hint("`bin/rails db:migrate:status` lists them; a migration may have been reverted by hand"));
            }
            checks.push(format!("dry-run: {msg} (nothing was deployed)"));
        }
        if let Some(code) = git_head()? {
            checks.push(format!("code at {}", short(&code)));
        }
        let mut probes = Vec::new();
        if !s.up_path.is_empty() {
            probes.push(up_probe(&s.up_path));
        }
        if !s.health_path.is_empty() {
            probes.push(health_probe(
                "health-migrations",
                &s.health_path,
                "\"pending_migrations\":0",
            ));
            probes.push(health_probe(
                "health-database",
                &s.health_path,
                "\"database\":\"connected\"",
            ));
        }
        Ok(VerifyReport { checks, probes })
    }

    fn rollback(ctx: Context, request: RollbackRequest) -> Result<StepResult> {
        let s = Settings::parse(&ctx.settings)?;
        let mut done = Vec::new();
        let url = database_url(&s)?;
        let app_name = commands::app_name(&ctx.deployment_id);
        if request.method != RollbackMethod::CodeOnly {
            // A killed migration may still run on the server, holding its locks.
            if let Some(url) = &url {
                let ended = run(&commands::psql_end_migration_sessions(url, &app_name))?;
                if !ended.planned && ended.stdout.trim() != "0" {
                    let what = format!(
                        "ended {} migration session(s) still running on the server",
                        ended.stdout.trim()
                    );
                    plugin_sdk::log(LogLevel::Warn, &what);
                    done.push(what);
                }
            }
        }
        // The database goes first: `db:rollback` runs the `down`/`change` of the migrations
        // being reverted, which only the newer code (still checked out) has.
        match request.method {
            RollbackMethod::CodeOnly => {}
            RollbackMethod::Downgrade => {
                let target = match request.downgrade_target.as_deref() {
                    None => 0,
                    Some(v) => v.trim().parse::<u64>().map_err(|_| {
                        PluginError::new(format!(
                            "cannot roll back to {v:?}: not a migration version"
                        ))
                        .with_hint("roll back by restore instead")
                    })?,
                };
                let files = files_checked_out(&s)?;
                let applied = applied_versions(&s)?;
                let steps = schema::rollback_steps(&applied, &files, target).map_err(|m| {
                    PluginError::new(m)
                        .with_hint("the host restores the backup when the deployment has one")
                })?;
                match steps {
                    Some(n) => {
                        let timeout = s.migration_timeout(&ctx.environment);
                        let out = run(&commands::rollback(&s, n, timeout, &app_name))?;
                        let reverted = schema::parse_migrated(&out.stdout, "reverted");
                        done.push(match reverted.is_empty() {
                            true => format!("db:rollback STEP={n}"),
                            false => format!("db:rollback STEP={n} reverted {}", join(&reverted)),
                        });
                    }
                    None => done.push(format!("nothing to revert above {target}")),
                }
            }
            RollbackMethod::Restore => {
                let backup = request.backup.as_ref().ok_or_else(|| {
                    PluginError::new("restore requested but no backup was given").with_hint(
                        "the deployment record names its backup; restore it with pg_restore",
                    )
                })?;
                let url = url.ok_or_else(|| missing_url(&s, "the restore"))?;
                plugin_sdk::postgres::restore(&url, &backup.path)?;
                done.push(format!("restored {}", backup.path));
            }
        }
        let checkout = run(&commands::git_checkout(&request.to_revision))?;
        done.push(format!("checked out {}", short(&request.to_revision)));
        if let Some(restart) = commands::restart(&s) {
            run(&restart)?;
            done.push("restarted".into());
        }
        let planned = if checkout.planned { "planned: " } else { "" };
        Ok(StepResult {
            summary: format!("{planned}{}", done.join(", ")),
            pending: None,
        })
    }

    fn check_migrations(sources: Vec<(String, String)>) -> Vec<Finding> {
        sources
            .iter()
            .filter(|(path, _)| path.ends_with(".rb"))
            .flat_map(|(path, content)| rules::findings(path, content))
            .collect()
    }
}

fn up_probe(path: &str) -> Probe {
    Probe {
        name: "up".into(),
        path: path.into(),
        expect_status: 200,
        body_contains: None,
        attempts: 30,
        interval_ms: 500,
        timeout_ms: 5_000,
    }
}

fn health_probe(name: &str, path: &str, contains: &str) -> Probe {
    Probe {
        name: name.into(),
        path: path.into(),
        expect_status: 200,
        body_contains: Some(contains.into()),
        attempts: 30,
        interval_ms: 500,
        timeout_ms: 5_000,
    }
}

fn join(versions: &[u64]) -> String {
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Versions in `schema_migrations`: through the query capability when `database` names a
/// `[databases.X]`, else from `db:migrate:status` (where the app runs). An empty database
/// (no table yet) has applied nothing.
fn applied_versions(s: &Settings) -> Result<BTreeSet<u64>> {
    if let Some(db) = &s.database {
        let exists = host::query(
            db,
            "SELECT to_regclass('schema_migrations') IS NOT NULL AS present",
            &[],
        )?;
        if exists
            .rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .as_deref()
            != Some("true")
        {
            return Ok(BTreeSet::new());
        }
        let rows = host::query(db, "SELECT version FROM schema_migrations", &[])?;
        let values: Vec<String> = rows
            .rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        return schema::parse_versions(values.iter().map(String::as_str)).map_err(PluginError::new);
    }
    let status = commands::migrate_status(s);
    let out: CommandOutput = host::run(&status)?;
    if out.status != 0 {
        if schema::schema_table_missing(&out.stdout) || schema::schema_table_missing(&out.stderr) {
            plugin_sdk::log(
                LogLevel::Info,
                "no schema_migrations table yet: the database has applied no migration",
            );
            return Ok(BTreeSet::new());
        }
        return Err(PluginError::new(plugin_sdk::cmd::failure_message(&status, &out)).with_hint(format!(
            "`db:migrate:status` boots the app: check that ${} is set and granted, that the database exists \
             (`bin/rails db:create`), and that {} runs from the project root; or set `database` to a \
             [databases] entry to read schema_migrations without booting the app",
            s.database_env,
            s.runner.iter().chain(s.rails.iter()).cloned().collect::<Vec<_>>().join(" ")
        )));
    }
    Ok(schema::parse_status(&out.stdout)
        .into_iter()
        .filter(|l| l.up)
        .map(|l| l.version)
        .collect())
}

/// The migration files of a commit, read from git without checking it out.
fn files_at(s: &Settings, sha: &str) -> Result<Vec<MigrationFile>> {
    let listing = run(&commands::git_list_migrations(sha, &s.migrations_dir))?.stdout;
    schema::migration_files(listing.lines().map(str::trim)).map_err(PluginError::new)
}

/// The migration files on disk: the code that runs.
fn files_checked_out(s: &Settings) -> Result<Vec<MigrationFile>> {
    let names = match host::list_dir(&s.migrations_dir) {
        Ok(names) => names,
        // No folder yet: an app without migrations.
        Err(plugin_sdk::CapabilityError::Failed(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let paths: Vec<String> = names
        .iter()
        .map(|n| format!("{}/{n}", s.migrations_dir))
        .collect();
    schema::migration_files(paths.iter().map(String::as_str)).map_err(PluginError::new)
}

fn resolve_target(ctx: &Context) -> Result<String> {
    let target = ctx
        .target_revision
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            PluginError::new("no target revision: this plugin deploys a git revision")
                .with_hint("give the revision to deploy (a tag, branch or commit SHA)")
        })?;
    run_stdout(&commands::git_resolve(target)).map_err(|e| {
        PluginError::new(format!(
            "cannot resolve revision {target:?} to a commit: {}",
            e.message
        ))
        .with_hint("check the name; if it was pushed from elsewhere, `git fetch` it first")
    })
}

/// The checked-out commit; none in a repository without commits.
fn git_head() -> Result<Option<String>> {
    let out = host::run(&commands::git_head())?;
    Ok((out.status == 0)
        .then(|| out.stdout.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// The database URL in a form libpq tools accept; none when unset.
fn database_url(s: &Settings) -> Result<Option<String>> {
    if s.database_env.is_empty() {
        return Ok(None);
    }
    let value = host::get_env(&s.database_env)?.filter(|v| !v.trim().is_empty());
    if value.is_none() {
        plugin_sdk::log(LogLevel::Debug, format!("${} is not set", s.database_env));
    }
    Ok(value.map(|url| commands::libpq_url(&url)))
}

fn require_database_url(s: &Settings, what: &str) -> Result<String> {
    database_url(s)?.ok_or_else(|| missing_url(s, what))
}

fn missing_url(s: &Settings, what: &str) -> PluginError {
    let name = if s.database_env.is_empty() {
        "DATABASE_URL"
    } else {
        &s.database_env
    };
    PluginError::new(format!(
        "{what} needs the database URL, and ${name} is not set"
    ))
    .with_hint(format!(
        "set {name} and grant it in deploy.toml: [grants] env = [\"{name}\"]"
    ))
}
