//! The phase engine: lock -> preflight -> approval gate -> backup -> deploy -> verify ->
//! mark validated, and after any failure from backup on: rollback -> verify -> record.
//!
//! The engine owns order, deadlines, gates, retries and the decision of how to roll back; the
//! plugin only answers each phase. Every phase is journaled in the state store before it starts
//! (with its inputs) and when it ends, and every step is an event on the bus. Under `--dry-run`
//! nothing is locked or recorded: read-only calls run for real and mutating ones become
//! planned steps, so the printed plan is the real sequence.

pub mod approval;
pub mod classify;
pub mod monitor;
pub mod probes;
mod recorder;
mod recover;
mod strategy;
pub mod watch;

use crate::capabilities::{CapabilityContext, CapabilityHost};
use crate::config::{Config, DestructivePolicy, EnvironmentConfig};
use crate::events::{Bus, Event, Outcome, Phase};
use crate::runtime::{
    BackupInfo, CallLimits, Context, Description, LoadedPlugin, PendingOperation,
    PluginCalls, PollStatus, PreflightReport, Probe, RollbackMethod, RollbackRequest, Runtime,
    Severity, StepResult,
};
use crate::state::{
    BackupRecord, DeploymentKind, DeploymentStatus, LockOutcome, NewDeployment, PhaseOutcome,
    Store,
};
use approval::Approver;
use classify::{Classification, method_name};
use recorder::StoreRecorder;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a run needs, assembled by the CLI.
pub struct Setup<'a> {
    pub config: &'a Config,
    pub env: EnvironmentConfig,
    pub runtime: &'a Runtime,
    pub plugin: &'a LoadedPlugin,
    pub plugin_name: String,
    pub store: Store,
    pub events: Bus,
    pub approver: Arc<dyn Approver>,
    /// Who runs this (user@host), recorded and shown as the lock holder.
    pub actor: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub revision: Option<String>,
    pub dry_run: bool,
    /// `--approve`: approval given up front for this run.
    pub approve: bool,
    /// `--confirm WORD`: the word an environment with `confirm` asks for, given up front.
    pub confirm: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub deployment_id: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// One run in progress.
struct Run<'a> {
    setup: &'a Setup<'a>,
    id: String,
    kind: DeploymentKind,
    dry_run: bool,
    holder: String,
    caps: Arc<CapabilityContext>,
    calls: PluginCalls<'a>,
    description: Option<Description>,
    recorder: Option<Arc<StoreRecorder>>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

/// A phase that failed, and whether anything may have changed by then.
struct Failure(String);

impl<'a> Setup<'a> {
    pub async fn deploy(&self, options: DeployOptions) -> RunResult {
        let mut run = Run::new(self, DeploymentKind::Deploy, options.dry_run);
        let result = run.deploy(&options).await;
        run.finish(result).await
    }

    /// Manual rollback to the previous validated revision, or to `to`.
    pub async fn rollback(&self, to: Option<String>) -> RunResult {
        let mut run = Run::new(self, DeploymentKind::Rollback, false);
        let result = run.manual_rollback(to).await;
        run.finish(result).await
    }

    /// The plugin's preflight against `revision`, as a dry-run outside any run: nothing is
    /// locked or recorded, and mutating commands are only planned. `host status` shows the
    /// pending migrations it reports.
    pub async fn inspect(&self, revision: &str) -> Result<PreflightReport, String> {
        let run = Run::new(self, DeploymentKind::Deploy, true);
        let ctx = run.context_with_state(Some(revision.to_string())).await;
        let timeout = self.env.timeouts.preflight;
        run.caps.set_phase_deadline(Some(Instant::now() + timeout));
        match tokio::time::timeout(timeout, run.calls.preflight(&ctx)).await {
            Ok(report) => report.map_err(|e| e.to_string()),
            Err(_) => Err(format!("preflight timed out after {}", humantime::format_duration(timeout))),
        }
    }
}

impl<'a> Run<'a> {
    fn new(setup: &'a Setup<'a>, kind: DeploymentKind, dry_run: bool) -> Run<'a> {
        let id = new_id();
        let holder = format!("{} (pid {}, run {})", setup.actor, std::process::id(), &id[..8]);
        let caps = CapabilityContext::new(
            &setup.plugin_name,
            &setup.env.name,
            setup.config.root.clone(),
            setup.env.grants.clone(),
            setup.config.file.databases.clone(),
            dry_run,
            (setup.config.file.limits.output_kb as usize) << 10,
            setup.events.clone(),
            Some(setup.store.clone()),
        );
        let limits = CallLimits {
            memory_bytes: (setup.config.file.limits.memory_mb as usize) << 20,
            call_budget: setup.env.timeouts.call,
            max_return_bytes: (setup.config.file.limits.output_kb as usize) << 10,
        };
        let host_caps = caps.clone();
        let calls = PluginCalls::new(
            setup.runtime,
            setup.plugin,
            &setup.plugin_name,
            limits,
            Arc::new(move || CapabilityHost::new(host_caps.clone())),
        );
        Run {
            setup,
            id,
            kind,
            dry_run,
            holder,
            caps,
            calls,
            description: None,
            recorder: None,
            renewal: None,
        }
    }

    fn emit(&self, event: Event) {
        self.setup.events.emit(event);
    }

    fn env(&self) -> &str {
        &self.setup.env.name
    }

    /// Describe the plugin, lock the environment and open the deployment record.
    async fn start(&mut self, requested: Option<&str>) -> Result<(), (Outcome, String)> {
        let description = self
            .calls
            .describe()
            .await
            .map_err(|e| (Outcome::FailedUnchanged, e.to_string()))?;
        self.emit(Event::RunStarted {
            deployment_id: self.id.clone(),
            kind: self.kind.as_str().into(),
            environment: self.env().into(),
            plugin: description.name.clone(),
            plugin_version: description.version.clone(),
            requested_revision: requested.map(String::from),
            dry_run: self.dry_run,
        });
        self.description = Some(description);
        if self.dry_run {
            return Ok(());
        }
        let store = &self.setup.store;
        let lease = self.setup.env.timeouts.lock_lease;
        let reason = match requested {
            Some(rev) => format!("{} {rev}", self.kind.as_str()),
            None => self.kind.as_str().to_string(),
        };
        let locked = store.acquire_lock(self.env(), &self.holder, &reason, lease).await;
        match locked.map_err(|e| (Outcome::FailedUnchanged, format!("state store: {e:#}")))? {
            LockOutcome::Acquired => {}
            LockOutcome::Held(info) => {
                return Err((
                    Outcome::Locked,
                    format!(
                        "environment `{}` is locked by {} ({}); try again when it finishes, or `host unlock --env {}` if that run is gone",
                        self.env(),
                        info.holder,
                        info.reason,
                        self.env()
                    ),
                ));
            }
        }
        self.emit(Event::LockAcquired { environment: self.env().into(), holder: self.holder.clone() });
        // Renew the lease while we are alive, so a crashed run frees the lock by itself.
        let (store2, env, holder) = (store.clone(), self.env().to_string(), self.holder.clone());
        self.renewal = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if let Ok(false) = store2.renew_lock(&env, &holder, lease).await {
                    tracing::warn!("lost the lock on {env}");
                }
            }
        }));

        // A run of this environment still marked running must have died: we hold its lock now.
        let stale = store.unfinished(self.env()).await.unwrap_or_default();
        let digest = self.setup.plugin.digest.clone();
        store
            .begin_deployment(&NewDeployment {
                id: self.id.clone(),
                environment: self.env().into(),
                kind: self.kind,
                plugin: self.setup.plugin_name.clone(),
                plugin_digest: digest,
                requested_revision: requested.map(String::from),
                strategy: self.setup.env.strategy.as_str().into(),
                actor: self.setup.actor.clone(),
                dry_run: false,
            })
            .await
            .map_err(|e| (Outcome::FailedUnchanged, format!("state store: {e:#}")))?;
        let recorder = Arc::new(StoreRecorder::start(store.clone(), self.id.clone()));
        self.setup.events.subscribe(recorder.clone());
        self.recorder = Some(recorder);
        self.recover(stale).await
    }

    /// Record the end, release the lock (unless a person must act), emit the last event.
    async fn finish(mut self, result: Result<(Outcome, String), (Outcome, String)>) -> RunResult {
        let (outcome, detail) = match result {
            Ok(r) | Err(r) => r,
        };
        self.emit(Event::RunFinished { outcome, detail: detail.clone(), exit_code: outcome.exit_code() });
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if let Some(recorder) = &self.recorder {
            recorder.flush().await;
            let status = match outcome {
                Outcome::Succeeded | Outcome::DryRun => DeploymentStatus::Succeeded,
                Outcome::RolledBack => DeploymentStatus::RolledBack,
                Outcome::RollbackFailed => DeploymentStatus::RollbackFailed,
                Outcome::ApprovalRequired | Outcome::Locked => DeploymentStatus::Aborted,
                Outcome::FailedUnchanged => DeploymentStatus::Failed,
                Outcome::Validating => DeploymentStatus::Validating,
                Outcome::Unvalidated => DeploymentStatus::Unvalidated,
            };
            let _ = self.setup.store.finish_deployment(&self.id, status, Some(&detail)).await;
            if outcome == Outcome::RollbackFailed {
                // Keep the environment locked with the reason: nobody deploys over a broken state.
                let reason = format!("rollback failed in run {}: {detail}", &self.id[..8]);
                let _ = self.setup.store.hold_lock_with_reason(self.env(), &self.holder, &reason).await;
            } else {
                let _ = self.setup.store.release_lock(self.env(), &self.holder).await;
            }
        }
        RunResult { deployment_id: self.id, outcome, detail }
    }

    fn context(&self, target: Option<String>) -> Context {
        Context {
            deployment_id: self.id.clone(),
            environment: self.env().into(),
            project_root: self.setup.config.root.display().to_string(),
            settings: self.setup.env.settings.to_string(),
            target_revision: target,
            current_revision: None,
            last_validated_revision: None,
            dry_run: self.dry_run,
        }
    }

    async fn context_with_state(&self, target: Option<String>) -> Context {
        let mut ctx = self.context(target);
        if let Ok(state) = self.setup.store.environment(self.env()).await {
            ctx.current_revision = state.current_revision;
            ctx.last_validated_revision = state.last_validated_revision;
        }
        ctx
    }

    /// Run one phase: journal it, give it a deadline, report how it went.
    async fn phase<T>(
        &self,
        phase: Phase,
        timeout: Duration,
        inputs: serde_json::Value,
        work: impl Future<Output = Result<T, String>>,
    ) -> Result<T, Failure> {
        let store = &self.setup.store;
        let seq = if self.dry_run { None } else { store.phase_started(&self.id, phase.as_str(), &inputs).await.ok() };
        self.emit(Event::PhaseStarted { phase });
        let started = Instant::now();
        self.caps.set_phase_deadline(Some(started + timeout));
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{} phase timed out after {}",
                phase.as_str(),
                humantime::format_duration(timeout)
            )),
        };
        self.caps.set_phase_deadline(None);
        let (ok, detail) = match &result {
            Ok(_) => (true, String::new()),
            Err(e) => (false, e.clone()),
        };
        self.emit(Event::PhaseFinished { phase, ok, duration: started.elapsed(), detail: detail.clone() });
        if let Some(seq) = seq {
            let outcome = if ok { PhaseOutcome::Ok } else { PhaseOutcome::Failed };
            let _ = store.phase_finished(&self.id, seq, outcome, (!ok).then_some(detail.as_str())).await;
        }
        result.map_err(Failure)
    }

    async fn deploy(&mut self, options: &DeployOptions) -> Result<(Outcome, String), (Outcome, String)> {
        self.start(options.revision.as_deref()).await?;
        let timeouts = self.setup.env.timeouts.clone();
        let unchanged = |f: Failure| (Outcome::FailedUnchanged, f.0);

        // Preflight: what will change, and how it would be undone.
        let mut ctx = self.context_with_state(options.revision.clone()).await;
        let report = self
            .phase(Phase::Preflight, timeouts.preflight, serde_json::json!({ "revision": options.revision }), async {
                self.calls.preflight(&ctx).await.map_err(|e| e.to_string())
            })
            .await
            .map_err(unchanged)?;
        let class = Classification::of(&report);
        self.report_plan(&report, class);
        ctx.target_revision = Some(report.target_revision.clone());
        if !self.dry_run {
            let previous = report.current_revision.as_deref().or(ctx.current_revision.as_deref());
            let _ = self
                .setup
                .store
                .update_deployment_target(&self.id, &report.target_revision, previous, class.as_str())
                .await;
        }

        // The approval gates: before anything changes.
        if let Some(stop) = self.confirmation_gate(&report, options).await {
            return Err(stop);
        }
        if let Some(stop) = self.approval_gate(&report, options).await {
            return Err(stop);
        }

        // Backup, checked before any migration runs.
        let mut backup = None;
        if report.needs_backup {
            backup = Some(self.backup(&ctx).await.map_err(unchanged)?);
        }

        // Deploy, then verify; any failure from here on rolls back.
        let deployed = self
            .phase(Phase::Deploy, timeouts.deploy, serde_json::json!({ "revision": report.target_revision }), async {
                let step = self.calls.deploy(&ctx).await.map_err(|e| e.to_string())?;
                self.follow(&ctx, step).await
            })
            .await;
        if let Err(Failure(reason)) = deployed {
            return Err(self.auto_rollback(&reason, &report, class, backup.as_ref()).await);
        }
        if !self.dry_run {
            let _ = self.setup.store.set_current_revision(self.env(), &report.target_revision).await;
        }

        let verified = self
            .phase(Phase::Verify, timeouts.verify, serde_json::json!({ "revision": report.target_revision }), async {
                self.verify(&ctx).await
            })
            .await;
        if let Err(Failure(reason)) = verified {
            return Err(self.auto_rollback(&reason, &report, class, backup.as_ref()).await);
        }

        if let Some(handed_over) = self.hand_over(&report).await {
            return handed_over;
        }
        if self.dry_run {
            return Ok((Outcome::DryRun, format!("dry-run: {} would be deployed; nothing was changed", short(&report.target_revision))));
        }
        let _ = self.setup.store.set_validated_revision(self.env(), &report.target_revision).await;
        self.emit(Event::Validated { revision: report.target_revision.clone() });
        Ok((Outcome::Succeeded, format!("{} deployed and validated on {}", short(&report.target_revision), self.env())))
    }

    fn report_plan(&self, report: &PreflightReport, class: Classification) {
        self.emit(Event::Plan {
            current_revision: report.current_revision.clone(),
            target_revision: report.target_revision.clone(),
            current_schema: report.current_schema.clone(),
            target_schema: report.target_schema.clone(),
            pending_migrations: report
                .pending_migrations
                .iter()
                .map(|m| if m.description.is_empty() { m.id.clone() } else { format!("{} {}", m.id, m.description) })
                .collect(),
            classification: class.as_str().into(),
            rollback: class.consequence(report),
            changes: report.changes.clone(),
        });
        for f in &report.findings {
            self.emit(Event::Finding {
                file: f.file.clone(),
                line: f.line,
                rule: f.rule.clone(),
                severity: severity_name(f.severity).into(),
                reason: f.reason.clone(),
            });
        }
    }

    /// `Some(stop)` when the run must stop here, nothing changed.
    async fn approval_gate(&self, report: &PreflightReport, options: &DeployOptions) -> Option<(Outcome, String)> {
        let destructive: Vec<_> = report.findings.iter().filter(|f| f.severity == Severity::Destructive).collect();
        let env = &self.setup.env;
        let reason = if env.require_approval {
            format!("environment `{}` requires approval for every deploy", env.name)
        } else if !destructive.is_empty() {
            let places: Vec<String> = destructive.iter().map(|f| format!("{}:{} {}", f.file, f.line, f.rule)).collect();
            format!("{} destructive migration step(s): {}", destructive.len(), places.join(", "))
        } else {
            return None;
        };
        let policy = if env.require_approval { DestructivePolicy::RequireApproval } else { env.on_destructive };
        if self.dry_run {
            self.emit(Event::ApprovalRequired { reason: format!("(dry-run) a real deploy would stop here: {reason}") });
            return None;
        }
        let seq = self.setup.store.phase_started(&self.id, Phase::Approval.as_str(), &serde_json::json!({ "reason": reason })).await.ok();
        self.emit(Event::PhaseStarted { phase: Phase::Approval });
        let started = Instant::now();
        let decision: Result<String, (Outcome, String)> = match policy {
            DestructivePolicy::Allow => Ok("allowed by policy (on_destructive = \"allow\")".into()),
            DestructivePolicy::Pause => {
                self.emit(Event::Paused { duration: env.pause, reason: reason.clone() });
                tokio::time::sleep(env.pause).await;
                Ok(format!("paused {} (on_destructive = \"pause\")", humantime::format_duration(env.pause)))
            }
            DestructivePolicy::RequireApproval if options.approve => Ok("--approve".into()),
            DestructivePolicy::RequireApproval => {
                self.emit(Event::ApprovalRequired { reason: reason.clone() });
                let question = format!("{reason}\nType `yes` to deploy to {}", env.name);
                match self.setup.approver.confirm(&question, "yes") {
                    Some(true) => Ok("typed confirmation".into()),
                    Some(false) => Err((Outcome::ApprovalRequired, format!("not approved: {reason}"))),
                    None => Err((
                        Outcome::ApprovalRequired,
                        format!("approval required: {reason}; nothing was changed (rerun with --approve, or from a terminal)"),
                    )),
                }
            }
        };
        let ok = decision.is_ok();
        if let Ok(how) = &decision {
            self.emit(Event::Approved { by: self.setup.actor.clone(), reason: how.clone() });
        }
        let detail = match &decision {
            Ok(how) => format!("approved by {}: {how}", self.setup.actor),
            Err((_, why)) => why.clone(),
        };
        self.emit(Event::PhaseFinished { phase: Phase::Approval, ok, duration: started.elapsed(), detail: detail.clone() });
        if let Some(seq) = seq {
            let outcome = if ok { PhaseOutcome::Ok } else { PhaseOutcome::Failed };
            let _ = self.setup.store.phase_finished(&self.id, seq, outcome, Some(&detail)).await;
        }
        decision.err()
    }

    async fn backup(&self, ctx: &Context) -> Result<BackupRecord, Failure> {
        let timeout = self.setup.env.timeouts.backup;
        let info = self
            .phase(Phase::Backup, timeout, serde_json::json!({}), async {
                let info = self.calls.backup(ctx).await.map_err(|e| e.to_string())?;
                if self.dry_run {
                    return Ok(info);
                }
                if !info.verified {
                    self.discard_partial(&info);
                    return Err(format!("backup {} was not verified by the plugin; refusing to change anything", info.path));
                }
                Ok(info)
            })
            .await?;
        if self.dry_run {
            return Ok(BackupRecord {
                id: String::new(),
                deployment_id: self.id.clone(),
                environment: self.env().into(),
                path: info.path,
                format: info.format,
                size_bytes: 0,
                sha256: String::new(),
                verified: false,
                created_at: 0,
            });
        }
        let path = self.setup.config.resolve(std::path::Path::new(&info.path));
        let bytes = std::fs::read(&path).map_err(|e| Failure(format!("backup {}: {e}", path.display())))?;
        let record = BackupRecord {
            id: new_id(),
            deployment_id: self.id.clone(),
            environment: self.env().into(),
            path: info.path.clone(),
            format: info.format.clone(),
            size_bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            verified: info.verified,
            created_at: crate::state::now_ms(),
        };
        let _ = self.setup.store.record_backup(&record).await;
        self.emit(Event::BackupMade {
            path: record.path.clone(),
            size_bytes: record.size_bytes,
            sha256: record.sha256.clone(),
            verified: record.verified,
        });
        Ok(record)
    }

    fn discard_partial(&self, info: &BackupInfo) {
        let _ = std::fs::remove_file(self.setup.config.resolve(std::path::Path::new(&info.path)));
    }

    /// Follow a remote operation the plugin started, by polling it: the host owns the clock.
    async fn follow(&self, ctx: &Context, step: StepResult) -> Result<String, String> {
        let Some(PendingOperation { token, description, interval_ms, deadline_ms }) = step.pending else {
            return Ok(step.summary);
        };
        let stop_at = Instant::now() + Duration::from_millis(deadline_ms as u64);
        loop {
            match self.calls.poll(ctx, &token).await.map_err(|e| e.to_string())? {
                PollStatus::Succeeded(s) => return Ok(s),
                PollStatus::Failed(s) => return Err(format!("{description}: {s}")),
                PollStatus::Running(s) => {
                    self.emit(Event::Waiting { what: description.clone(), status: s.clone() });
                    if Instant::now() >= stop_at {
                        return Err(format!("{description}: still `{s}` after {} ms", deadline_ms));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(interval_ms.max(100) as u64)).await;
        }
    }

    /// The plugin's own checks, then the health probes.
    async fn verify(&self, ctx: &Context) -> Result<(), String> {
        let mut probes = self.configured_probes();
        if self.dry_run {
            for p in &probes {
                self.emit(Event::Planned { step: format!("probe GET {} expect {}", p.path, p.expect_status), purpose: "health check".into() });
            }
            return Ok(());
        }
        let report = self.calls.verify(ctx).await.map_err(|e| e.to_string())?;
        // A plugin probe that repeats a configured (or default) one runs once.
        for p in report.probes {
            let same = |q: &Probe| q.path == p.path && q.expect_status == p.expect_status && q.body_contains == p.body_contains;
            if !probes.iter().any(same) {
                probes.push(p);
            }
        }
        self.run_probes(&probes).await
    }

    async fn run_probes(&self, probes: &[Probe]) -> Result<(), String> {
        if probes.is_empty() {
            return Ok(());
        }
        let health = &self.setup.env.health;
        let Some(base) = &health.base_url else {
            return Err("health probes are set but health.base_url is not (set it in deploy.toml)".into());
        };
        let deadline = health.deadline.unwrap_or(self.setup.env.timeouts.verify);
        probes::run_all(base, probes, deadline, &self.setup.events).await.map(|_| ())
    }

    /// Probes from deploy.toml, or the plugin's defaults when the file names none.
    fn configured_probes(&self) -> Vec<Probe> {
        let configured = &self.setup.env.health.probes;
        if configured.is_empty() {
            let defaults = self.description.as_ref().map(|d| d.default_probes.clone()).unwrap_or_default();
            return self.with_configured_attempts(defaults);
        }
        let probes = configured
            .iter()
            .map(|p| Probe {
                name: p.name.clone().unwrap_or_else(|| p.path.clone()),
                path: p.path.clone(),
                expect_status: p.expect_status,
                body_contains: p.body_contains.clone(),
                attempts: p.attempts,
                interval_ms: p.interval.as_millis() as u32,
                timeout_ms: p.timeout.as_millis() as u32,
            })
            .collect();
        self.with_configured_attempts(probes)
    }

    /// After a failed deploy or verify: put the last validated revision back.
    async fn auto_rollback(
        &self,
        reason: &str,
        report: &PreflightReport,
        class: Classification,
        backup: Option<&BackupRecord>,
    ) -> (Outcome, String) {
        if self.dry_run {
            return (Outcome::FailedUnchanged, format!("dry-run: {reason}"));
        }
        let state = self.setup.store.environment(self.env()).await.ok();
        let to = state
            .and_then(|s| s.last_validated_revision)
            .or_else(|| report.current_revision.clone());
        let Some(to) = to else {
            return (Outcome::RollbackFailed, format!("{reason}; and there is no previous revision to roll back to"));
        };
        let request = RollbackRequest {
            to_revision: to.clone(),
            method: class.rollback_method(),
            downgrade_target: report.rollback.downgrade_target.clone(),
            backup: backup.map(backup_info),
        };
        self.roll_back(reason, request).await
    }

    /// Roll back with `request`, falling back from a failed downgrade to the backup, then
    /// verify the result.
    async fn roll_back(&self, reason: &str, request: RollbackRequest) -> (Outcome, String) {
        let to = request.to_revision.clone();
        self.emit(Event::RollbackStarted {
            reason: reason.to_string(),
            to_revision: to.clone(),
            method: method_name(request.method).into(),
        });
        let timeout = self.setup.env.timeouts.rollback;
        let ctx = self.context_with_state(Some(to.clone())).await;
        let inputs = serde_json::json!({
            "to_revision": to,
            "method": method_name(request.method),
            "downgrade_target": request.downgrade_target,
            "backup": request.backup.as_ref().map(|b| b.path.clone()),
        });
        let mut done = self
            .phase(Phase::Rollback, timeout, inputs.clone(), async {
                let step = self.calls.rollback(&ctx, &request).await.map_err(|e| e.to_string())?;
                self.follow(&ctx, step).await
            })
            .await;
        if let Err(Failure(e)) = &done
            && request.method == RollbackMethod::Downgrade
            && request.backup.is_some()
        {
            self.emit(Event::RollbackStarted {
                reason: format!("downgrade failed ({e}); restoring the backup"),
                to_revision: to.clone(),
                method: "restore".into(),
            });
            let restore = RollbackRequest { method: RollbackMethod::Restore, ..request.clone() };
            done = self
                .phase(Phase::Rollback, timeout, inputs, async {
                    let step = self.calls.rollback(&ctx, &restore).await.map_err(|e| e.to_string())?;
                    self.follow(&ctx, step).await
                })
                .await;
        }
        if let Err(Failure(e)) = done {
            let detail = format!(
                "{reason}; rollback to {} failed: {e}{}",
                short(&to),
                request.backup.as_ref().map(|b| format!("; the backup is at {}", b.path)).unwrap_or_default()
            );
            self.emit(Event::RollbackFinished { ok: false, detail: detail.clone() });
            return (Outcome::RollbackFailed, detail);
        }
        let verified = self
            .phase(Phase::RollbackVerify, self.setup.env.timeouts.verify, serde_json::json!({ "revision": to }), async {
                let probes = self.configured_probes();
                self.run_probes(&probes).await
            })
            .await;
        if let Err(Failure(e)) = verified {
            let detail = format!("{reason}; rolled back to {} but it does not pass its checks: {e}", short(&to));
            self.emit(Event::RollbackFinished { ok: false, detail: detail.clone() });
            return (Outcome::RollbackFailed, detail);
        }
        let _ = self.setup.store.set_current_revision(self.env(), &to).await;
        let detail = format!("{reason}; rolled back to {}", short(&to));
        self.emit(Event::RollbackFinished { ok: true, detail: detail.clone() });
        (Outcome::RolledBack, detail)
    }

    /// `host rollback`: go back from the current deployment to an earlier validated one.
    async fn manual_rollback(&mut self, to: Option<String>) -> Result<(Outcome, String), (Outcome, String)> {
        self.start(to.as_deref()).await?;
        let store = &self.setup.store;
        let history = store.history(self.env(), 200).await.map_err(|e| (Outcome::FailedUnchanged, format!("{e:#}")))?;
        let validated: Vec<_> = history
            .iter()
            .filter(|d| d.kind == DeploymentKind::Deploy && d.status == DeploymentStatus::Succeeded)
            .collect();
        let state = store.environment(self.env()).await.map_err(|e| (Outcome::FailedUnchanged, format!("{e:#}")))?;
        let current = state.current_revision.clone().ok_or((Outcome::FailedUnchanged, format!("nothing is deployed on {}", self.env())))?;
        let target = match &to {
            Some(rev) => validated.iter().find(|d| {
                d.target_revision.as_deref().is_some_and(|t| t.starts_with(rev.as_str()))
                    || d.requested_revision.as_deref() == Some(rev.as_str())
            }),
            None => validated.iter().find(|d| d.target_revision.as_deref() != Some(current.as_str())),
        };
        let Some(target) = target.copied() else {
            return Err((
                Outcome::FailedUnchanged,
                match to {
                    Some(rev) => format!("`{rev}` was never validated on {}; `host history --env {}` lists what was", self.env(), self.env()),
                    None => format!("no earlier validated revision on {} to roll back to", self.env()),
                },
            ));
        };
        let to_revision = target.target_revision.clone().unwrap_or_default();
        // Every deployment newer than the target is undone: the worst of them decides how.
        let newer: Vec<_> = history
            .iter()
            .take_while(|d| d.id != target.id)
            .filter(|d| d.kind == DeploymentKind::Deploy && d.status == DeploymentStatus::Succeeded)
            .collect();
        let class = newer
            .iter()
            .filter_map(|d| d.classification.as_deref().and_then(Classification::parse))
            .max_by_key(|c| *c as u8)
            .unwrap_or(Classification::CodeOnly);
        let backup = newer.last().and_then(|d| d.backup.clone());
        let target_schema = self.recorded_schema(&target.id).await;
        let request = RollbackRequest {
            to_revision: to_revision.clone(),
            method: class.rollback_method(),
            downgrade_target: target_schema,
            backup: backup.as_ref().map(backup_info),
        };
        let _ = store.update_deployment_target(&self.id, &to_revision, Some(&current), class.as_str()).await;
        match self.roll_back(&format!("manual rollback from {}", short(&current)), request).await {
            (Outcome::RolledBack, detail) => {
                let _ = store.set_validated_revision(self.env(), &to_revision).await;
                Ok((Outcome::Succeeded, detail))
            }
            other => Err(other),
        }
    }

    /// The schema head a deployment reached, from its recorded plan.
    async fn recorded_schema(&self, deployment_id: &str) -> Option<String> {
        let events = self.setup.store.events(deployment_id).await.ok()?;
        events
            .iter()
            .find(|e| e.kind == "plan")
            .and_then(|e| e.payload["target_schema"].as_str().map(String::from))
    }
}

fn backup_info(b: &BackupRecord) -> BackupInfo {
    BackupInfo { path: b.path.clone(), format: b.format.clone(), verified: b.verified }
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Destructive => "destructive",
        Severity::Risky => "risky",
        Severity::Info => "info",
    }
}

/// Commit SHAs are shown short; anything else as is.
pub fn short(rev: &str) -> &str {
    if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) { &rev[..10] } else { rev }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
