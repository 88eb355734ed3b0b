//! The watch phase of `deploy-first`: wait for CI's verdict on the exact revision that went
//! live, then validate it, or roll back to the environment's last validated revision.
//!
//! A watch belongs to the deployment it follows: its phases and events go into that
//! deployment's journal, and its progress (polls, last CI state, who watches) into the state
//! store's `watches` row, so `host status` shows it and a watcher killed halfway is resumed by
//! running `host watch` again (DESIGN.md: "watch: resume watching the same revision").
//! Deadlines count from the end of the deploy, not from the watcher's start, so a resumed
//! watch does not wait longer than configured; it still looks at CI once before it gives up.
//!
//! Only one watcher acts on a watch (a lease in the `watches` row, renewed while it lives; a
//! watcher on this machine whose process is gone is replaced at once). The environment lock is
//! taken for the verdict only: deploy-first exists so deploys do not wait on CI, and a deploy
//! landing during the wait supersedes the watch, which then ends without acting.

use super::classify::Classification;
use super::{Run, Setup, short};
use crate::ci::{CiSource, CiState, CiStatus};
use crate::config::{CiConfig, OnTimeout};
use crate::events::{Event, Outcome, Phase};
use crate::runtime::{BackupInfo, RollbackRequest};
use crate::state::{
    DeploymentKind, LockOutcome, PhaseOutcome, WatchRecord, WatchStatus, Watcher, now_ms,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the verdict waits for the environment lock (a deploy or rollback in progress).
const LOCK_WAIT_EXTRA: Duration = Duration::from_secs(60);

/// How the wait for CI ended.
enum Verdict {
    Passed(CiStatus),
    Failed(CiStatus),
    /// No verdict in time: why, and the last thing CI said.
    Absent(String, Option<CiStatus>),
    /// A newer deployment (or a manual rollback) replaced the revision.
    Superseded(String),
}

/// How a watcher's run ends: with a verdict recorded on the deployment, or stopped without
/// one (another watcher holds it, the lock never came), leaving the watch for a later run.
enum Ending {
    Final(Result<(Outcome, String), (Outcome, String)>),
    Stopped(Outcome, String),
}

impl<'a> Setup<'a> {
    /// Watch the environment's deployment awaiting CI, to its verdict. `None` when no
    /// deployment of the environment awaits validation.
    pub async fn watch(&self) -> Option<super::RunResult> {
        let record = match self.store.latest_watch(&self.env.name).await {
            Ok(Some(w)) if w.status == WatchStatus::Validating => w,
            _ => return None,
        };
        let mut run = Run::new(self, DeploymentKind::Deploy, false);
        run.id = record.deployment_id.clone();
        run.holder = format!(
            "{} (pid {}, watch of run {})",
            self.actor,
            std::process::id(),
            &run.id[..8.min(run.id.len())]
        );
        let ending = run.watch(&record).await;
        Some(run.end_watch(ending).await)
    }
}

impl Run<'_> {
    async fn watch(&mut self, record: &WatchRecord) -> Ending {
        let env = self.setup.env.clone();
        let Some(ci) = env.ci.clone() else {
            return Ending::Stopped(
                Outcome::FailedUnchanged,
                format!(
                    "environment `{}` has no [ci] table any more: nothing to watch with",
                    env.name
                ),
            );
        };
        let source = match CiSource::from_config(&ci, &self.setup.config.root) {
            Ok(s) => s,
            Err(e) => return Ending::Stopped(Outcome::FailedUnchanged, e),
        };
        match self.calls.describe().await {
            Ok(d) => self.description = Some(d),
            Err(e) => return Ending::Stopped(Outcome::FailedUnchanged, e.to_string()),
        }
        if let Err(stop) = self.claim(record).await {
            return stop;
        }
        let recorder = Arc::new(super::recorder::StoreRecorder::start(
            self.setup.store.clone(),
            self.id.clone(),
        ));
        self.setup.events.subscribe(recorder.clone());
        self.recorder = Some(recorder);
        let plugin = self
            .description
            .as_ref()
            .map(|d| (d.name.clone(), d.version.clone()))
            .unwrap_or_default();
        self.emit(Event::RunStarted {
            deployment_id: self.id.clone(),
            kind: "watch".into(),
            environment: self.env().into(),
            plugin: plugin.0,
            plugin_version: plugin.1,
            requested_revision: Some(record.revision.clone()),
            dry_run: false,
        });
        let resumed = self.close_interrupted_watches(record).await;

        let renewal = self.renew_claim_while_alive();
        let inputs = serde_json::json!({
            "revision": record.revision,
            "rollback_to": record.rollback_to,
            "ci": source.describe(),
            "resumed": resumed,
        });
        let budget =
            remaining(record.started_at, ci.timeout) + ci.interval + Duration::from_secs(60);
        let verdict = std::sync::Mutex::new(None);
        let watched = self
            .phase(Phase::Watch, budget, inputs, async {
                let v = self.poll_ci(record, &ci, &source).await;
                let failed = match &v {
                    Verdict::Passed(_) | Verdict::Superseded(_) => None,
                    Verdict::Failed(s) => Some(format!("CI failed: {}", s.detail)),
                    Verdict::Absent(why, _) => Some(why.clone()),
                };
                *verdict.lock().unwrap() = Some(v);
                match failed {
                    Some(why) => Err(why),
                    None => Ok(()),
                }
            })
            .await;
        renewal.abort();
        let verdict = match verdict.into_inner().unwrap() {
            Some(v) => v,
            // The phase's own deadline passed (CI or the store hung): no verdict.
            None => Verdict::Absent(watched.err().map(|f| f.0).unwrap_or_default(), None),
        };
        if let Verdict::Superseded(why) = &verdict {
            let _ = self
                .setup
                .store
                .finish_watch(&self.id, WatchStatus::Superseded, why)
                .await;
            return Ending::Final(Ok((Outcome::Unvalidated, why.clone())));
        }
        self.act_on(record, &ci, &source, verdict).await
    }

    /// Take the watch: free, its lease ran out, or its watcher's process is gone.
    async fn claim(&self, record: &WatchRecord) -> Result<(), Ending> {
        let host = hostname();
        let me = Watcher {
            holder: &self.holder,
            pid: std::process::id(),
            host: &host,
        };
        let store = &self.setup.store;
        let lease = self.setup.env.timeouts.lock_lease;
        let claimed = store
            .claim_watch(&self.id, &me, lease, None)
            .await
            .map_err(|e| {
                Ending::Stopped(Outcome::FailedUnchanged, format!("state store: {e:#}"))
            })?;
        if claimed {
            return Ok(());
        }
        let current = store.watch(&self.id).await.ok().flatten();
        if let Some(w) = &current {
            let dead = w.watcher_host.as_deref() == Some(host.as_str())
                && w.watcher_pid.is_some_and(|p| !process_alive(p));
            if dead
                && let Some(old) = &w.watcher
                && store
                    .claim_watch(&self.id, &me, lease, Some(old))
                    .await
                    .unwrap_or(false)
            {
                return Ok(());
            }
        }
        let who = current
            .and_then(|w| {
                w.watcher.map(|h| {
                    format!(
                        "{h}{}",
                        w.watcher_host
                            .map(|x| format!(" on {x}"))
                            .unwrap_or_default()
                    )
                })
            })
            .unwrap_or_else(|| "another watcher".into());
        Err(Ending::Stopped(
            Outcome::Locked,
            format!(
                "{} on {} is already watched by {who}; `host status --env {}` shows its progress",
                short(&record.revision),
                self.env(),
                self.env()
            ),
        ))
    }

    /// Phases a killed watcher left `running` are closed as failed, saying who took over.
    /// Returns whether this is a resumption.
    async fn close_interrupted_watches(&self, record: &WatchRecord) -> bool {
        let Ok(Some(deployment)) = self.setup.store.deployment(&self.id).await else {
            return false;
        };
        let mut resumed = record.polls > 0;
        for p in deployment
            .phases
            .iter()
            .filter(|p| p.phase == Phase::Watch.as_str() && p.outcome == PhaseOutcome::Running)
        {
            resumed = true;
            let detail = format!(
                "the watcher stopped before a verdict{}; resumed by pid {}",
                record
                    .watcher_pid
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                std::process::id()
            );
            let _ = self
                .setup
                .store
                .phase_finished(&self.id, p.seq, PhaseOutcome::Failed, Some(&detail))
                .await;
        }
        resumed
    }

    fn renew_claim_while_alive(&self) -> tokio::task::JoinHandle<()> {
        let (store, id, holder) = (
            self.setup.store.clone(),
            self.id.clone(),
            self.holder.clone(),
        );
        let every = self.setup.env.timeouts.lock_lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Ok(false) = store.renew_watch(&id, &holder).await {
                    return;
                }
            }
        })
    }

    /// Ask CI every interval until it answers, the time is up, or the watch is superseded.
    async fn poll_ci(&self, record: &WatchRecord, ci: &CiConfig, source: &CiSource) -> Verdict {
        let sha = &record.revision;
        let start_deadline = record.started_at + ci.start_timeout.as_millis() as i64;
        let deadline = record.started_at + ci.timeout.as_millis() as i64;
        let mut seen = record.ci_seen_at.is_some();
        let mut last: Option<CiStatus> = None;
        loop {
            let answer = source.status(sha).await;
            let (state, detail) = match &answer {
                Ok(s) => (s.state.as_str().to_string(), s.detail.clone()),
                Err(e) => ("error".to_string(), e.clone()),
            };
            let is_seen = matches!(&answer, Ok(s) if s.state != CiState::Pending);
            seen |= is_seen;
            match self
                .setup
                .store
                .record_poll(&self.id, &self.holder, &state, &detail, is_seen)
                .await
            {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    if let Some(why) = self.superseded(record).await {
                        return Verdict::Superseded(why);
                    }
                }
            }
            self.emit(Event::CiPolled {
                revision: sha.clone(),
                state,
                detail,
                url: answer.as_ref().ok().and_then(|s| s.url.clone()),
            });
            if let Ok(status) = answer {
                match status.state {
                    CiState::Success => return Verdict::Passed(status),
                    CiState::Failure => {
                        let mut status = status;
                        source.explain(sha, &mut status).await;
                        return Verdict::Failed(status);
                    }
                    CiState::Pending if !seen && now_ms() >= start_deadline => {
                        return Verdict::Absent(
                            format!(
                                "CI never started for {} within {}",
                                short(sha),
                                humantime::format_duration(ci.start_timeout)
                            ),
                            Some(status),
                        );
                    }
                    _ => last = Some(status),
                }
            }
            if now_ms() >= deadline {
                let state = last
                    .as_ref()
                    .map(|s| format!(": CI still says `{} {}`", s.state.as_str(), s.detail))
                    .unwrap_or_default();
                return Verdict::Absent(
                    format!(
                        "no CI verdict on {} within {}{state}",
                        short(sha),
                        humantime::format_duration(ci.timeout)
                    ),
                    last,
                );
            }
            if let Some(why) = self.superseded(record).await {
                return Verdict::Superseded(why);
            }
            let until_deadline = Duration::from_millis((deadline - now_ms()).max(0) as u64);
            tokio::time::sleep(
                ci.interval
                    .min(until_deadline.max(Duration::from_millis(100))),
            )
            .await;
        }
    }

    /// `Some(why)` when the watched revision is no longer what the environment runs.
    async fn superseded(&self, record: &WatchRecord) -> Option<String> {
        let store = &self.setup.store;
        if let Ok(Some(w)) = store.watch(&self.id).await
            && w.status == WatchStatus::Superseded
        {
            return Some(
                w.verdict
                    .unwrap_or_else(|| "superseded by a newer deployment".into()),
            );
        }
        let state = store.environment(self.env()).await.ok()?;
        match state.current_revision {
            Some(current) if current != record.revision => Some(format!(
                "superseded: {} now runs {} instead of {}",
                self.env(),
                short(&current),
                short(&record.revision)
            )),
            _ => None,
        }
    }

    /// The verdict, under the environment lock.
    async fn act_on(
        &mut self,
        record: &WatchRecord,
        ci: &CiConfig,
        source: &CiSource,
        verdict: Verdict,
    ) -> Ending {
        let sha = record.revision.clone();
        let (ci_verdict, status) = match &verdict {
            Verdict::Passed(s) => ("success", Some(s)),
            Verdict::Failed(s) => ("failure", Some(s)),
            Verdict::Absent(_, s) => ("no-verdict", s.as_ref()),
            Verdict::Superseded(_) => unreachable!("handled before"),
        };
        self.emit(Event::CiVerdict {
            revision: sha.clone(),
            verdict: ci_verdict.into(),
            detail: match &verdict {
                Verdict::Absent(why, _) => why.clone(),
                _ => status.map(|s| s.detail.clone()).unwrap_or_default(),
            },
            failing_jobs: status.map(|s| s.failing_jobs.clone()).unwrap_or_default(),
            log_excerpt: status.and_then(|s| s.log_excerpt.clone()),
            url: status.and_then(|s| s.url.clone()),
        });
        if let Err(stop) = self.lock_for_verdict(&sha).await {
            return stop;
        }
        if let Some(why) = self.superseded(record).await {
            let _ = self
                .setup
                .store
                .finish_watch(&self.id, WatchStatus::Superseded, &why)
                .await;
            return Ending::Final(Ok((Outcome::Unvalidated, why)));
        }
        let store = self.setup.store.clone();
        let reason = match verdict {
            Verdict::Passed(s) => {
                if let Err(e) = store.set_validated_revision(self.env(), &sha).await {
                    return Ending::Stopped(
                        Outcome::FailedUnchanged,
                        format!("CI passed but the state store refused the verdict: {e:#}"),
                    );
                }
                self.emit(Event::Validated {
                    revision: sha.clone(),
                });
                let detail = format!(
                    "{} validated on {}: CI passed ({}, {})",
                    short(&sha),
                    self.env(),
                    source.describe(),
                    s.detail
                );
                let _ = store
                    .finish_watch(&self.id, WatchStatus::Validated, &detail)
                    .await;
                return Ending::Final(Ok((Outcome::Succeeded, detail)));
            }
            Verdict::Absent(why, _) if ci.on_timeout == OnTimeout::Keep => {
                let keep = format!(
                    "{why}; {} stays deployed, not validated (on_timeout = \"keep\"); the rollback point is still {}",
                    short(&sha),
                    record.rollback_to.as_deref().map(short).unwrap_or("none")
                );
                let _ = store
                    .finish_watch(&self.id, WatchStatus::Unvalidated, &keep)
                    .await;
                return Ending::Final(Ok((Outcome::Unvalidated, keep)));
            }
            Verdict::Absent(why, _) => why,
            Verdict::Failed(s) => {
                let jobs = if s.failing_jobs.is_empty() {
                    s.detail.clone()
                } else {
                    format!("failing: {}", s.failing_jobs.join(", "))
                };
                format!("CI failed on {} ({jobs})", short(&sha))
            }
            Verdict::Superseded(_) => unreachable!("handled before"),
        };
        let Some(to) = record.rollback_to.clone() else {
            let detail = format!(
                "{reason}; there is no validated revision on {} to roll back to, so {} stays deployed",
                self.env(),
                short(&sha)
            );
            self.emit(Event::RollbackFinished {
                ok: false,
                detail: detail.clone(),
            });
            let _ = store
                .finish_watch(&self.id, WatchStatus::RollbackFailed, &detail)
                .await;
            return Ending::Final(Err((Outcome::RollbackFailed, detail)));
        };
        let request = self.rollback_request(&to).await;
        let (outcome, detail) = self.roll_back(&reason, request).await;
        let status = if outcome == Outcome::RolledBack {
            WatchStatus::RolledBack
        } else {
            WatchStatus::RollbackFailed
        };
        let _ = store.finish_watch(&self.id, status, &detail).await;
        Ending::Final(Err((outcome, detail)))
    }

    /// How to undo this deployment, from what preflight recorded: the class decides the
    /// method, the plan names the schema to go back to, the backup is the deployment's own.
    async fn rollback_request(&self, to: &str) -> RollbackRequest {
        let store = &self.setup.store;
        let deployment = store.deployment(&self.id).await.ok().flatten();
        let class = deployment
            .as_ref()
            .and_then(|d| d.classification.as_deref())
            .and_then(Classification::parse)
            .unwrap_or(Classification::CodeOnly);
        let backup = deployment.and_then(|d| d.backup).map(|b| BackupInfo {
            path: b.path,
            format: b.format,
            verified: b.verified,
        });
        let downgrade_target = store
            .events(&self.id)
            .await
            .ok()
            .and_then(|events| events.into_iter().find(|e| e.kind == "plan"))
            .and_then(|e| e.payload["current_schema"].as_str().map(String::from));
        RollbackRequest {
            to_revision: to.to_string(),
            method: class.rollback_method(),
            downgrade_target,
            backup,
        }
    }

    /// Wait for the environment lock (a deploy may be running); renewed until the run ends.
    async fn lock_for_verdict(&mut self, sha: &str) -> Result<(), Ending> {
        let store = self.setup.store.clone();
        let lease = self.setup.env.timeouts.lock_lease;
        let give_up = Instant::now() + self.setup.env.timeouts.deploy + LOCK_WAIT_EXTRA;
        let reason = format!("watch: CI verdict on {}", short(sha));
        loop {
            match store
                .acquire_lock(self.env(), &self.holder, &reason, lease)
                .await
            {
                Ok(LockOutcome::Acquired) => break,
                Ok(LockOutcome::Held(info))
                    if !info.is_held_until_released() && Instant::now() < give_up =>
                {
                    self.emit(Event::Waiting {
                        what: format!("the lock of {}", self.env()),
                        status: format!("held by {} ({})", info.holder, info.reason),
                    });
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(LockOutcome::Held(info)) => {
                    return Err(Ending::Stopped(
                        Outcome::Locked,
                        format!(
                            "CI has a verdict on {} but {} is locked by {} ({}); run `host watch --env {}` once it is free",
                            short(sha),
                            self.env(),
                            info.holder,
                            info.reason,
                            self.env()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(Ending::Stopped(
                        Outcome::FailedUnchanged,
                        format!("state store: {e:#}"),
                    ));
                }
            }
        }
        self.emit(Event::LockAcquired {
            environment: self.env().into(),
            holder: self.holder.clone(),
        });
        let (env, holder) = (self.env().to_string(), self.holder.clone());
        self.renewal = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if let Ok(false) = store.renew_lock(&env, &holder, lease).await {
                    tracing::warn!("lost the lock on {env}");
                }
            }
        }));
        Ok(())
    }

    async fn end_watch(mut self, ending: Ending) -> super::RunResult {
        match ending {
            Ending::Final(result) => self.finish(result).await,
            Ending::Stopped(outcome, detail) => {
                // No verdict recorded: the deployment stays `validating` for the next watcher.
                self.emit(Event::RunFinished {
                    outcome,
                    detail: detail.clone(),
                    exit_code: outcome.exit_code(),
                });
                if let Some(renewal) = self.renewal.take() {
                    renewal.abort();
                    let _ = self
                        .setup
                        .store
                        .release_lock(self.env(), &self.holder)
                        .await;
                }
                if let Some(recorder) = &self.recorder {
                    recorder.flush().await;
                    let _ = self.setup.store.release_watch(&self.id, &self.holder).await;
                }
                super::RunResult {
                    deployment_id: self.id.clone(),
                    outcome,
                    detail,
                }
            }
        }
    }
}

fn remaining(started_at: i64, timeout: Duration) -> Duration {
    let end = started_at + timeout.as_millis() as i64;
    Duration::from_millis((end - now_ms()).max(0) as u64)
}

/// This machine's name, recorded with a watcher so a dead one on the same machine can be told.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a NUL-terminated name.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether `pid` runs on this machine. A zombie (killed, not yet reaped by an init that may
/// never reap it in a container) counts as gone.
pub fn process_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(i64::from(std::process::id())));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert!(!process_alive(pid));
        assert!(!process_alive(0) && !process_alive(-1));
        assert!(!hostname().is_empty());
    }
}
