//! Recovering a run that died: its lock lease expired, its record still says `running`.
//!
//! The journal says how far it got (DESIGN.md, "A journal makes crashes recoverable"): before
//! any change it is simply marked aborted; during deploy, verify or rollback it is rolled back
//! the way it would have rolled itself back (its recorded classification, schema and backup),
//! then verified. Only then does the new run go on.

use super::classify::Classification;
use super::{Run, short};
use crate::events::Outcome;
use crate::runtime::{BackupInfo, RollbackRequest};
use crate::state::{DeploymentRecord, DeploymentStatus};

/// Phases after which the environment may have changed.
const CHANGING: &[&str] = &["deploy", "verify", "rollback", "rollback-verify"];

impl Run<'_> {
    pub(super) async fn recover(&self, stale: Vec<DeploymentRecord>) -> Result<(), (Outcome, String)> {
        let store = &self.setup.store;
        for d in stale {
            let last = d.phases.iter().max_by_key(|p| p.seq).map(|p| p.phase.clone());
            let Some(phase) = last.filter(|p| CHANGING.contains(&p.as_str())) else {
                let why = "interrupted before it changed anything (its lock lease expired)";
                let _ = store.finish_deployment(&d.id, DeploymentStatus::Aborted, Some(why)).await;
                continue;
            };
            let state = store.environment(self.env()).await.ok();
            let Some(to) = state.and_then(|s| s.last_validated_revision).or(d.previous_revision.clone()) else {
                let why = format!("run {} was interrupted during {phase} and there is no earlier revision to go back to", short(&d.id));
                let _ = store.finish_deployment(&d.id, DeploymentStatus::RollbackFailed, Some(&why)).await;
                return Err((Outcome::RollbackFailed, why));
            };
            let class = d.classification.as_deref().and_then(Classification::parse).unwrap_or(Classification::DestructiveMigrations);
            let request = RollbackRequest {
                to_revision: to,
                method: class.rollback_method(),
                downgrade_target: self.recorded_current_schema(&d.id).await,
                backup: d.backup.as_ref().map(|b| BackupInfo { path: b.path.clone(), format: b.format.clone(), verified: b.verified }),
            };
            let reason = format!("recovering run {} ({}), interrupted during {phase}", &d.id[..8], d.actor);
            let (outcome, detail) = self.roll_back(&reason, request).await;
            let status = if outcome == Outcome::RolledBack { DeploymentStatus::RolledBack } else { DeploymentStatus::RollbackFailed };
            let _ = store.finish_deployment(&d.id, status, Some(&format!("recovered by run {}: {detail}", &self.id[..8]))).await;
            if outcome != Outcome::RolledBack {
                return Err((Outcome::RollbackFailed, detail));
            }
        }
        Ok(())
    }

    /// The schema a run started from (its downgrade target), from its recorded plan.
    async fn recorded_current_schema(&self, deployment_id: &str) -> Option<String> {
        let events = self.setup.store.events(deployment_id).await.ok()?;
        let plan = events.iter().find(|e| e.kind == "plan")?;
        plan.payload["current_schema"].as_str().map(String::from)
    }
}
