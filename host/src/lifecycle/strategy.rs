//! Environment-level rules around the phases: the deploy strategy and the typed confirmation.
//!
//! - `strategy = "deploy-first"`: once the quick verify passes, the revision is not validated
//!   yet. The engine records it as `validating` with the environment's rollback point (its last
//!   validated revision) in the state store and returns; `host watch` (see [`super::watch`])
//!   waits for CI on that exact revision and validates it or rolls back.
//! - `confirm = "DEPLOY"`: before anything changes, the revisions of this environment (and of
//!   the one it is promoted from) are shown and the operator types the word on a terminal, or
//!   passes `--confirm WORD` where there is none. Nothing implies it, not even CI=true.

use super::{DeployOptions, Run, short};
use crate::ci::CiSource;
use crate::config::{OnTimeout, Strategy};
use crate::events::{EnvironmentRevision, Event, Outcome, Phase};
use crate::runtime::{PreflightReport, Probe};
use crate::state::{DeploymentStatus, NewWatch, PhaseOutcome, WatchStatus};
use std::time::Instant;

type Ending = Result<(Outcome, String), (Outcome, String)>;

impl Run<'_> {
    /// After a passing verify: `None` for environments validated by verify alone; for
    /// `deploy-first`, records the revision as awaiting CI and ends the run as `validating`.
    pub(super) async fn hand_over(&self, report: &PreflightReport) -> Option<Ending> {
        let env = &self.setup.env;
        if env.strategy != Strategy::DeployFirst {
            return None;
        }
        let Some(ci) = &env.ci else {
            return Some(Err((
                Outcome::FailedUnchanged,
                format!(
                    "environment `{}` is deploy-first but has no [ci] table",
                    env.name
                ),
            )));
        };
        let source = match CiSource::from_config(ci, &self.setup.config.root) {
            Ok(s) => s.describe(),
            Err(e) => return Some(Err((Outcome::FailedUnchanged, e))),
        };
        let revision = report.target_revision.clone();
        if self.dry_run {
            self.emit(Event::Planned {
                step: format!(
                    "watch CI ({source}) on {} for up to {}",
                    short(&revision),
                    humantime::format_duration(ci.timeout)
                ),
                purpose: "deploy-first: validate or roll back once CI answers".into(),
            });
            return None;
        }
        let store = &self.setup.store;
        let state = store.environment(self.env()).await.ok();
        let rollback_to = state.and_then(|s| s.last_validated_revision);
        // A deploy landing while an older one awaits CI replaces it: that one can no longer
        // be validated (it no longer runs), and its watcher stops at its next look.
        let replaced = store
            .latest_watch(self.env())
            .await
            .ok()
            .flatten()
            .filter(|w| w.status == WatchStatus::Validating);
        let watch = NewWatch {
            deployment_id: self.id.clone(),
            environment: self.env().into(),
            revision: revision.clone(),
            rollback_to: rollback_to.clone(),
            ci: serde_json::json!({
                "source": source,
                "start_timeout_ms": ci.start_timeout.as_millis() as u64,
                "interval_ms": ci.interval.as_millis() as u64,
                "timeout_ms": ci.timeout.as_millis() as u64,
                "on_timeout": match ci.on_timeout { OnTimeout::Rollback => "rollback", OnTimeout::Keep => "keep" },
            }),
        };
        if let Err(e) = self.setup.store.begin_watch(&watch).await {
            // Without the record nobody could watch: undo now, while we hold the lock.
            let reason = format!("cannot record the watch in the state store: {e:#}");
            return Some(Err(self
                .auto_rollback(&reason, report, super::Classification::of(report), None)
                .await));
        }
        if let Some(old) = replaced {
            let why = format!(
                "superseded by run {} ({}) before CI answered on {}",
                &self.id[..8],
                short(&revision),
                short(&old.revision)
            );
            let _ = store
                .finish_deployment(
                    &old.deployment_id,
                    DeploymentStatus::Unvalidated,
                    Some(&why),
                )
                .await;
        }
        self.emit(Event::AwaitingValidation {
            revision: revision.clone(),
            rollback_to: rollback_to.clone(),
            ci: source.clone(),
            timeout: ci.timeout,
        });
        let back = match &rollback_to {
            Some(to) => format!("rolled back to {}", short(to)),
            None => "left in place (there is no validated revision to go back to)".into(),
        };
        Some(Ok((
            Outcome::Validating,
            format!(
                "{} is live on {}; {source} decides within {}: validated, or {back}",
                short(&revision),
                self.env(),
                humantime::format_duration(ci.timeout)
            ),
        )))
    }

    /// `confirm = "WORD"`: show what runs where, then ask for the word. `Some(stop)` when the
    /// run must stop here, nothing changed.
    pub(super) async fn confirmation_gate(
        &self,
        report: &PreflightReport,
        options: &DeployOptions,
    ) -> Option<(Outcome, String)> {
        let env = &self.setup.env;
        let word = env.confirm.as_deref()?;
        self.show_revisions(report).await;
        let reason = format!(
            "environment `{}` requires typing `{word}` to deploy {}",
            env.name,
            short(&report.target_revision)
        );
        if self.dry_run {
            self.emit(Event::ApprovalRequired {
                reason: format!("(dry-run) a real deploy would stop here: {reason}"),
            });
            return None;
        }
        let seq = self
            .setup
            .store
            .phase_started(
                &self.id,
                Phase::Approval.as_str(),
                &serde_json::json!({ "reason": reason }),
            )
            .await
            .ok();
        self.emit(Event::PhaseStarted {
            phase: Phase::Approval,
        });
        let started = Instant::now();
        self.emit(Event::ApprovalRequired {
            reason: reason.clone(),
        });
        let decision = match options.confirm.as_deref() {
            Some(given) if given == word => Ok(format!("--confirm {word}")),
            Some(given) => Err((
                Outcome::ApprovalRequired,
                format!("`--confirm {given}` is not `{word}`; nothing was changed"),
            )),
            None => {
                let question = format!(
                    "Type {word} to deploy {} to {}",
                    short(&report.target_revision),
                    env.name
                );
                match self.setup.approver.confirm(&question, word) {
                    Some(true) => Ok(format!("typed {word}")),
                    Some(false) => Err((
                        Outcome::ApprovalRequired,
                        format!("not confirmed: {word} was not typed; nothing was changed"),
                    )),
                    None => Err((
                        Outcome::ApprovalRequired,
                        format!(
                            "approval required: {reason}; nothing was changed (run it from a terminal, or pass --confirm {word})"
                        ),
                    )),
                }
            }
        };
        if let Ok(how) = &decision {
            self.emit(Event::Approved {
                by: self.setup.actor.clone(),
                reason: how.clone(),
            });
        }
        let (ok, detail) = match &decision {
            Ok(how) => (true, format!("confirmed by {}: {how}", self.setup.actor)),
            Err((_, why)) => (false, why.clone()),
        };
        self.emit(Event::PhaseFinished {
            phase: Phase::Approval,
            ok,
            duration: started.elapsed(),
            detail: detail.clone(),
        });
        if let Some(seq) = seq {
            let outcome = if ok {
                PhaseOutcome::Ok
            } else {
                PhaseOutcome::Failed
            };
            let _ = self
                .setup
                .store
                .phase_finished(&self.id, seq, outcome, Some(&detail))
                .await;
        }
        decision.err()
    }

    /// The revisions of the upstream environment (if any) and of this one, with the target.
    async fn show_revisions(&self, report: &PreflightReport) {
        let env = &self.setup.env;
        let mut names: Vec<&str> = env.promote_from.iter().map(String::as_str).collect();
        names.push(&env.name);
        let mut rows = Vec::new();
        for name in names {
            let state = self.setup.store.environment(name).await.ok();
            rows.push(EnvironmentRevision {
                environment: name.to_string(),
                current_revision: state.as_ref().and_then(|s| s.current_revision.clone()),
                last_validated_revision: state.and_then(|s| s.last_validated_revision),
            });
        }
        let note = match (&env.promote_from, rows.first()) {
            (Some(from), Some(upstream)) => match &upstream.last_validated_revision {
                Some(v) if *v == report.target_revision => None,
                Some(v) => Some(format!(
                    "{} is not the revision validated on {from} ({}); deploying it skips that check",
                    short(&report.target_revision),
                    short(v)
                )),
                None => Some(format!("nothing was ever validated on {from}")),
            },
            _ => None,
        };
        self.emit(Event::EnvironmentRevisions {
            target_revision: report.target_revision.clone(),
            environments: rows,
            note,
        });
    }

    /// `health.attempts` overrides every probe's attempts (configured or the plugin's).
    pub(super) fn with_configured_attempts(&self, mut probes: Vec<Probe>) -> Vec<Probe> {
        if let Some(n) = self.setup.env.health.attempts {
            for p in &mut probes {
                p.attempts = n;
            }
        }
        probes
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{self, CiSourceKind, OnTimeout, Strategy};
    use std::path::Path;
    use std::time::Duration;

    fn parse(text: &str) -> Result<config::Config, config::ConfigError> {
        config::parse(Path::new("deploy.toml"), text)
    }

    #[test]
    fn deploy_first_reads_its_ci_table_with_the_documented_defaults() {
        let c = parse(
            "[environments.preprod]\nstrategy = \"deploy-first\"\n[environments.preprod.ci]\nsource = \"github\"\nrepo = \"o/app\"\n\
             [environments.production]\nconfirm = \"DEPLOY\"\npromote_from = \"preprod\"\n[environments.production.health]\nattempts = 5\n",
        )
        .unwrap();
        let pre = c.environment("preprod").unwrap();
        assert_eq!(pre.strategy, Strategy::DeployFirst);
        let ci = pre.ci.unwrap();
        assert_eq!(ci.source, CiSourceKind::Github);
        assert_eq!(
            (ci.api.as_str(), ci.token_env.as_str()),
            ("https://api.github.com", "GITHUB_TOKEN")
        );
        assert_eq!(
            (ci.start_timeout, ci.interval, ci.timeout),
            (
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(300)
            )
        );
        assert_eq!(ci.on_timeout, OnTimeout::Rollback);
        let prod = c.environment("production").unwrap();
        assert_eq!(
            (prod.strategy, prod.confirm.as_deref(), prod.health.attempts),
            (Strategy::DeployThenVerify, Some("DEPLOY"), Some(5))
        );
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let e = parse("[environments.preprod]\nstrategy = \"deploy-first\"\n").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.line),
            ("environments.preprod.strategy", 2),
            "{e}"
        );
        let e =
            parse("[environments.preprod.ci]\nsource = \"github\"\nrepo = \"app\"\n").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.line),
            ("environments.preprod.ci.repo", 3),
            "{e}"
        );
        let e = parse("[environments.preprod.ci]\nsource = \"command\"\n").unwrap_err();
        assert_eq!(e.key, "environments.preprod.ci.command", "{e}");
        let e = parse("[environments.preprod.ci]\nsource = \"command\"\ncommand = [\"x\"]\ninterval = \"1m\"\ntimeout = \"10s\"\n").unwrap_err();
        assert_eq!(e.key, "environments.preprod.ci.timeout", "{e}");
        let e = parse("[environments.production]\npromote_from = \"preprd\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("`preprd` is not another environment"),
            "{e}"
        );
        let e = parse("[environments.p.ci]\nsource = \"jenkins\"\n").unwrap_err();
        assert!(e.to_string().contains("jenkins"), "{e}");
    }
}
