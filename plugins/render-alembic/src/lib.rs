//! Stack plugin for Python apps migrated with Alembic, deployed on this machine or on Render.
//!
//! The stack knowledge lives in plain modules, unit-tested natively: [`alembic`] (revision graph,
//! `alembic current` output), [`rules`] and [`sql`] (what a migration risks), [`commands`] and
//! [`render_api`] (what to run and send), [`plan`] (the preflight report). This file only wires
//! them to the host: it asks for commands, HTTP, files, environment and key-value state, and
//! never sleeps or retries (the host polls `poll` and owns every deadline).
//!
//! Two modes (`mode` setting): `local` checks the code out, migrates and restarts here;
//! `render` asks Render's API to deploy the commit (Render runs the migrations in its
//! pre-deploy or build command) and reports a pending operation the host polls.

pub mod alembic;
pub mod commands;
pub mod plan;
pub mod python;
pub mod render_api;
pub mod rules;
pub mod settings;
pub mod sql;

use alembic::{Graph, GraphError};
use commands::short;
use plugin_sdk::{
    BackupInfo, Context, Description, Finding, Guest, HttpResponse, LogLevel, PendingOperation,
    PluginError, PollStatus, PreflightReport, Probe, Result, RollbackMethod, RollbackRequest,
    StepResult, VerifyReport, host, run, run_stdout,
};
use render_api::{COMMIT_TOKEN, DRY_RUN_TOKEN, State};
use settings::{Mode, Settings};

/// The plugin. Public so native builds (unit tests) see the `Guest` impl as used.
pub struct RenderAlembic;

// Only for the component: the export symbols (`deploy:plugin/stack@1.0.0#...`) are not valid in a
// native linker's version script, and native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
plugin_sdk::export_plugin!(RenderAlembic);

/// How often the host should poll a Render deploy, and for how long at most.
const POLL_INTERVAL_MS: u32 = 2_000;
const POLL_DEADLINE_MS: u32 = 15 * 60 * 1_000;

impl Guest for RenderAlembic {
    fn describe() -> Description {
        Description {
            name: "render-alembic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            stack: "python-alembic".into(),
            summary: "Python + Alembic: checks migrations before they run, backs up with pg_dump, \
                      deploys here (git checkout, alembic upgrade, restart) or through Render's API, \
                      rolls back by downgrade or restore"
                .into(),
            // Settings are not known here: these are the defaults (`alembic`, `DATABASE_URL`,
            // `RENDER_API_KEY`); the `restart` program is whatever deploy.toml names.
            capabilities: [
                "run:git",
                "run:alembic",
                "run:pg_dump",
                "run:pg_restore",
                "run:psql",
                "run:mkdir",
                "env:DATABASE_URL",
                "env:RENDER_API_KEY",
                "http",
            ]
            .map(String::from)
            .to_vec(),
            default_probes: vec![Probe {
                name: "health".into(),
                path: "/health".into(),
                expect_status: 200,
                body_contains: None,
                attempts: 10,
                interval_ms: 1_000,
                timeout_ms: 2_000,
            }],
        }
    }

    fn preflight(ctx: Context) -> Result<PreflightReport> {
        let s = Settings::parse(&ctx.settings)?;
        let target = resolve_target(&ctx)?;
        let (current_code, dirty_files) = match s.mode {
            Mode::Local => (
                git_head()?,
                commands::dirty_count(&run_stdout(&commands::git_dirty())?),
            ),
            Mode::Render => {
                check_render_access(&s)?;
                (ctx.current_revision.clone(), 0)
            }
        };
        let graph = graph_at(&s, &target)?;
        let target_head = graph.head().map_err(graph_error)?;
        if s.mode == Mode::Render && database_url(&s)?.is_some() {
            require_checkout_holds(&s, &target, target_head.as_deref())?;
        }
        let db = db_revision_for_preflight(&ctx, &s)?;
        let pending = match graph.pending(db.as_deref()) {
            Ok(pending) => pending,
            Err(e @ GraphError::UnknownDbRevision { .. }) => {
                // The code in place may know the revision: then the target is simply older code.
                let current = current_code
                    .as_deref()
                    .and_then(|c| graph_at(&s, c).ok())
                    .unwrap_or_default();
                return Err(graph_error(alembic::explain_unknown(
                    e,
                    target_head.as_deref(),
                    &current,
                )));
            }
            Err(e) => return Err(graph_error(e)),
        };
        Ok(plan::report(&plan::Observed {
            settings: &s,
            current_code: current_code.as_deref(),
            target: &target,
            db_revision: db.as_deref(),
            target_head: target_head.as_deref(),
            pending: pending.iter().filter_map(|r| graph.get(r)).collect(),
            dirty_files,
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
        match s.mode {
            Mode::Local => {
                let checkout = run(&commands::git_checkout(&sha))?;
                run(&commands::alembic_upgrade(&s))?;
                let restarted = match commands::restart(&s) {
                    Some(restart) => run(&restart).map(|_| true)?,
                    None => false,
                };
                let planned = if checkout.planned { "planned: " } else { "" };
                let restarted = if restarted { ", restarted" } else { "" };
                Ok(StepResult {
                    summary: format!(
                        "{planned}checked out {}, migrated to head{restarted}",
                        short(&sha)
                    ),
                    pending: None,
                })
            }
            Mode::Render => deploy_render(&s, &sha),
        }
    }

    fn poll(ctx: Context, token: String) -> Result<PollStatus> {
        let s = Settings::parse(&ctx.settings)?;
        if s.mode == Mode::Local {
            return Err(PluginError::new(
                "nothing to poll: local mode finishes every step before returning",
            ));
        }
        if ctx.dry_run || token == DRY_RUN_TOKEN {
            return Ok(PollStatus::Succeeded(
                "dry-run: no Render deploy was started".into(),
            ));
        }
        let key = api_key(&s)?;
        let deploy = if let Some(commit) = token.strip_prefix(COMMIT_TOKEN) {
            let resp = http(&render_api::list_deploys(
                &s.render_api,
                s.service_id(),
                &key,
                20,
            ))?;
            if let Some(wait) = transient(&resp) {
                return Ok(wait);
            }
            let deploys =
                render_api::parse_deploy_list(&ok_body(&resp)?).map_err(PluginError::new)?;
            match render_api::find_by_commit(&deploys, commit, false) {
                Some(d) => d.clone(),
                None => {
                    return Ok(PollStatus::Running(format!(
                        "Render has queued the deploy of {}",
                        short(commit)
                    )));
                }
            }
        } else {
            let resp = http(&render_api::get_deploy(
                &s.render_api,
                s.service_id(),
                &token,
                &key,
            ))?;
            if let Some(wait) = transient(&resp) {
                return Ok(wait);
            }
            render_api::parse_deploy(&ok_body(&resp)?).map_err(PluginError::new)?
        };
        Ok(match render_api::state(&deploy.status) {
            State::Live => {
                // Only a deploy that went live is worth rolling back to later.
                let commit = deploy
                    .commit_id()
                    .map(str::to_string)
                    .or_else(|| host::kv_get(&inflight_key(&deploy.id)));
                if let Some(commit) = commit {
                    host::kv_set(&deploy_key(&commit), &deploy.id);
                }
                PollStatus::Succeeded(format!("Render deploy {} is live", deploy.id))
            }
            State::Failed => PollStatus::Failed(format!(
                "Render deploy {} ended with status {}",
                deploy.id, deploy.status
            )),
            State::Running => {
                PollStatus::Running(format!("Render deploy {}: {}", deploy.id, deploy.status))
            }
        })
    }

    fn verify(ctx: Context) -> Result<VerifyReport> {
        let s = Settings::parse(&ctx.settings)?;
        if s.mode == Mode::Render && database_url(&s)?.is_none() {
            let checks = vec![format!(
                "schema not checked: ${} is not set here",
                s.database_env
            )];
            return Ok(VerifyReport {
                checks,
                probes: Vec::new(),
            });
        }
        // Local: the migrations on disk are the code that runs, after a deploy or a rollback.
        // Render: the code is the target's, read from git.
        let (graph, code) = match s.mode {
            Mode::Local => (graph_checked_out(&s)?, git_head()?),
            Mode::Render => {
                let sha = resolve_target(&ctx)?;
                (graph_at(&s, &sha)?, Some(sha))
            }
        };
        let head = graph.head().map_err(graph_error)?;
        let db = db_revision(&s)?;
        let mut checks = Vec::new();
        if db == head {
            checks.push(head.map_or("no migrations, none applied".to_string(), |h| {
                format!("schema at {h} (head)")
            }));
        } else {
            let msg = format!(
                "the database is at {} but the deployed migrations' head is {}",
                db.as_deref().unwrap_or("base"),
                head.as_deref().unwrap_or("base")
            );
            if !ctx.dry_run {
                return Err(PluginError::new(msg)
                    .with_hint("a migration did not run or was reverted: `alembic current` and `alembic history` show where it stands"));
            }
            checks.push(format!("dry-run: {msg} (nothing was deployed)"));
        }
        if let Some(code) = code {
            checks.push(format!("code at {}", short(&code)));
        }
        Ok(VerifyReport {
            checks,
            probes: Vec::new(),
        })
    }

    fn rollback(ctx: Context, request: RollbackRequest) -> Result<StepResult> {
        let s = Settings::parse(&ctx.settings)?;
        let mut done = Vec::new();
        // The database goes first: `alembic downgrade` needs the newer code's downgrade()
        // functions, which are only on disk until the checkout below replaces them.
        let database_here = s.mode == Mode::Local || database_url(&s)?.is_some();
        match request.method {
            RollbackMethod::CodeOnly => {}
            _ if !database_here => {
                plugin_sdk::log(
                    LogLevel::Warn,
                    format!(
                        "${} is not set: the database is left as it is",
                        s.database_env
                    ),
                );
                done.push(format!("database left as is (${} not set)", s.database_env));
            }
            RollbackMethod::Downgrade => {
                let target = request.downgrade_target.as_deref();
                run(&commands::alembic_downgrade(&s, target)).map_err(|e| {
                    e.with_hint(
                        "the downgrade runs the checked-out code's downgrade() functions: the checkout must \
                         still hold the migrations being reversed; if it cannot, roll back by restore",
                    )
                })?;
                done.push(format!("downgraded to {}", target.unwrap_or("base")));
            }
            RollbackMethod::Restore => {
                let backup = request.backup.as_ref().ok_or_else(|| {
                    PluginError::new("restore requested but no backup was given")
                        .with_hint("the deployment record names its backup; restore it with pg_restore, or roll back by downgrade")
                })?;
                let url = require_database_url(&s, "the restore")?;
                plugin_sdk::postgres::restore(&url, &backup.path)?;
                done.push(format!("restored {}", backup.path));
            }
        }
        match s.mode {
            Mode::Local => {
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
            Mode::Render => rollback_render(&ctx, &s, &request, done),
        }
    }

    fn check_migrations(sources: Vec<(String, String)>) -> Vec<Finding> {
        sources
            .iter()
            .flat_map(|(path, content)| rules::findings(path, content))
            .collect()
    }
}

fn deploy_render(s: &Settings, sha: &str) -> Result<StepResult> {
    let key = api_key(s)?;
    let resp = http(&render_api::trigger_deploy(
        &s.render_api,
        s.service_id(),
        sha,
        &key,
    ))?;
    if resp.planned {
        return Ok(StepResult {
            summary: format!(
                "planned: Render deploy of {} on {}",
                short(sha),
                s.service_id()
            ),
            pending: Some(pending_op(
                DRY_RUN_TOKEN.into(),
                format!("Render deploy of {} (dry-run)", short(sha)),
            )),
        });
    }
    let body = ok_body(&resp)?;
    let token = match render_api::parse_deploy(&body) {
        Ok(deploy) => {
            host::kv_set(&inflight_key(&deploy.id), sha);
            deploy.id
        }
        // 202: queued behind another deploy, without an id yet; poll finds it by commit.
        Err(_) if resp.status == 202 => format!("{COMMIT_TOKEN}{sha}"),
        Err(e) => return Err(PluginError::new(e)),
    };
    Ok(StepResult {
        summary: format!(
            "Render deploy {token} of {} started on {}",
            short(sha),
            s.service_id()
        ),
        pending: Some(pending_op(
            token,
            format!("Render deploy of {}", short(sha)),
        )),
    })
}

fn rollback_render(
    ctx: &Context,
    s: &Settings,
    request: &RollbackRequest,
    mut done: Vec<String>,
) -> Result<StepResult> {
    let key = api_key(s)?;
    let marker = format!("render-rollback:{}", ctx.deployment_id);
    // Run twice (crash recovery), follow the rollback deploy the first run started.
    if let Some(started) = host::kv_get(&marker) {
        let resp = http(&render_api::get_deploy(
            &s.render_api,
            s.service_id(),
            &started,
            &key,
        ))?;
        let still_good = (200..300).contains(&resp.status)
            && render_api::parse_deploy(&resp.body)
                .is_ok_and(|d| render_api::state(&d.status) != State::Failed);
        if still_good {
            done.push(format!("Render rollback {started} already under way"));
            return Ok(StepResult {
                summary: done.join(", "),
                pending: Some(pending_op(started, rollback_description(request))),
            });
        }
    }
    let deploy_id = match host::kv_get(&deploy_key(&request.to_revision)) {
        Some(id) => id,
        None => {
            // Deployed before this plugin kept track: look for a deploy of it that went live.
            let resp = http(&render_api::list_deploys(
                &s.render_api,
                s.service_id(),
                &key,
                100,
            ))?;
            let deploys =
                render_api::parse_deploy_list(&ok_body(&resp)?).map_err(PluginError::new)?;
            render_api::find_by_commit(&deploys, &request.to_revision, true).map(|d| d.id.clone()).ok_or_else(|| {
                PluginError::new(format!("no Render deploy of {} that went live is known", short(&request.to_revision)))
                    .with_hint("roll back from the Render dashboard (Events, Rollback) and check the service")
            })?
        }
    };
    let resp = http(&render_api::rollback(
        &s.render_api,
        s.service_id(),
        &deploy_id,
        &key,
    ))?;
    if resp.planned {
        done.push(format!("planned: Render rollback to {deploy_id}"));
        return Ok(StepResult {
            summary: done.join(", "),
            pending: Some(pending_op(
                DRY_RUN_TOKEN.into(),
                rollback_description(request),
            )),
        });
    }
    let deploy = render_api::parse_deploy(&ok_body(&resp)?).map_err(PluginError::new)?;
    host::kv_set(&marker, &deploy.id);
    host::kv_set(&inflight_key(&deploy.id), &request.to_revision);
    done.push(format!(
        "Render rollback {} to {deploy_id} started",
        deploy.id
    ));
    Ok(StepResult {
        summary: done.join(", "),
        pending: Some(pending_op(deploy.id, rollback_description(request))),
    })
}

fn rollback_description(request: &RollbackRequest) -> String {
    format!("Render rollback to {}", short(&request.to_revision))
}

fn pending_op(token: String, description: String) -> PendingOperation {
    PendingOperation {
        token,
        description,
        interval_ms: POLL_INTERVAL_MS,
        deadline_ms: POLL_DEADLINE_MS,
    }
}

/// kv key: commit SHA -> the Render deploy of it that went live.
fn deploy_key(commit: &str) -> String {
    format!("render-deploy:{commit}")
}

/// kv key: Render deploy id -> the commit it deploys (for image deploys that report none).
fn inflight_key(deploy: &str) -> String {
    format!("render-inflight:{deploy}")
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
    resolve(target)
}

fn resolve(rev: &str) -> Result<String> {
    run_stdout(&commands::git_resolve(rev)).map_err(|e| {
        PluginError::new(format!(
            "cannot resolve revision {rev:?} to a commit: {}",
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

/// The database's revision per `alembic current`; none for an empty schema.
fn db_revision(s: &Settings) -> Result<Option<String>> {
    let out = run(&commands::alembic_current(s)).map_err(|e| {
        let checkout = match s.mode {
            Mode::Local => "",
            Mode::Render => {
                "; in render mode it runs from this checkout, which must also hold the migration the database is at"
            }
        };
        e.with_hint(format!(
            "alembic reads the database from its env.py: check that ${} is set and granted, and that `alembic` runs from the project root{checkout}",
            s.database_env
        ))
    })?;
    let mut revisions = alembic::parse_current(&out.stdout);
    if revisions.len() > 1 {
        return Err(PluginError::new(format!(
            "the database is at several heads at once: {}",
            revisions.join(", ")
        ))
        .with_hint(
            "merge them (`alembic merge heads`) or bring the database to one head by hand",
        ));
    }
    Ok(revisions.pop())
}

fn db_revision_for_preflight(ctx: &Context, s: &Settings) -> Result<Option<String>> {
    if s.mode == Mode::Local || database_url(s)?.is_some() {
        return db_revision(s);
    }
    // Render without database access from here: the schema is taken to be at the head of the
    // code Render runs now (its pre-deploy command migrated it).
    plugin_sdk::log(
        LogLevel::Warn,
        format!(
            "${} is not set: assuming the schema is at the head of the deployed revision",
            s.database_env
        ),
    );
    match ctx.current_revision.as_deref() {
        Some(current) => graph_at(s, &resolve(current)?)?.head().map_err(graph_error),
        None => Ok(None),
    }
}

/// The migrations of a commit, read from git without checking it out.
fn graph_at(s: &Settings, sha: &str) -> Result<Graph> {
    let listing = run(&commands::git_list_migrations(sha, &s.migrations_dir))?.stdout;
    let mut scripts = Vec::new();
    for path in commands::migration_paths(&listing) {
        let content = run(&commands::git_show(sha, &path))?.stdout;
        scripts.extend(alembic::parse_script(&path, &content));
    }
    Graph::new(scripts).map_err(graph_error)
}

/// Render mode still runs Alembic here, from the files on disk: `alembic current` (preflight,
/// verify) and `alembic downgrade` (rollback). A checkout without the target's head cannot read
/// the schema Render migrates to, so verify would fail a deploy Render finished and roll back
/// a live release: refuse before anything changes instead.
fn require_checkout_holds(s: &Settings, target: &str, head: Option<&str>) -> Result<()> {
    let Some(head) = head else { return Ok(()) };
    if graph_checked_out(s)?.get(head).is_some() {
        return Ok(());
    }
    Err(PluginError::new(format!(
        "this checkout has no migration {head}, the head of {}: in render mode Alembic reads and \
         downgrades the schema from the files checked out here",
        short(target)
    ))
    .with_hint(format!(
        "check out {} (or a later commit) before deploying it, as a CI job deploying that commit does",
        short(target)
    )))
}

/// The migrations on disk (the code that runs, in local mode).
fn graph_checked_out(s: &Settings) -> Result<Graph> {
    let mut scripts = Vec::new();
    for name in host::list_dir(&s.migrations_dir)? {
        if !name.ends_with(".py") || name == "__init__.py" {
            continue;
        }
        let path = format!("{}/{name}", s.migrations_dir);
        let content = host::read_file(&path)?;
        scripts.extend(alembic::parse_script(&path, &content));
    }
    Graph::new(scripts).map_err(graph_error)
}

fn graph_error(e: GraphError) -> PluginError {
    PluginError::new(e.to_string()).with_hint(e.hint())
}

fn env_var(name: &str) -> Result<Option<String>> {
    Ok(host::get_env(name)?.filter(|v| !v.trim().is_empty()))
}

/// The database URL in a form libpq tools accept; none when `database_env` is empty or unset.
fn database_url(s: &Settings) -> Result<Option<String>> {
    if s.database_env.is_empty() {
        return Ok(None);
    }
    Ok(env_var(&s.database_env)?.map(|url| commands::libpq_url(&url)))
}

fn require_database_url(s: &Settings, what: &str) -> Result<String> {
    database_url(s)?.ok_or_else(|| {
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
    })
}

fn api_key(s: &Settings) -> Result<String> {
    env_var(&s.render_api_key_env)?.ok_or_else(|| {
        let name = &s.render_api_key_env;
        PluginError::new(format!("the Render API key is missing: ${name} is not set"))
            .with_hint(format!("create a key in Render's account settings, set {name} and grant it: [grants] env = [\"{name}\"]"))
    })
}

/// Before anything changes: the key works and the service exists.
fn check_render_access(s: &Settings) -> Result<()> {
    let key = api_key(s)?;
    let resp = http(&render_api::get_service(
        &s.render_api,
        s.service_id(),
        &key,
    ))?;
    ok_body(&resp).map(|_| ())
}

fn http(request: &plugin_sdk::HttpRequest) -> Result<HttpResponse> {
    Ok(host::http(request)?)
}

/// The body of a 2xx answer, or Render's error message.
fn ok_body(resp: &HttpResponse) -> Result<String> {
    if (200..300).contains(&resp.status) {
        return Ok(resp.body.clone());
    }
    let err = PluginError::new(render_api::error_message(resp.status, &resp.body));
    Err(match render_api::error_hint(resp.status) {
        Some(hint) => err.with_hint(hint),
        None => err,
    })
}

/// A rate limit or server error while following a deploy: say so and let the host ask again.
fn transient(resp: &HttpResponse) -> Option<PollStatus> {
    render_api::is_transient(resp.status).then(|| {
        PollStatus::Running(format!(
            "{}; asking again",
            render_api::error_message(resp.status, &resp.body)
        ))
    })
}
