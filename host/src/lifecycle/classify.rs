//! Rollback decides by what changed: preflight's report classifies a deployment before
//! anything runs, and that class picks the rollback method (see DESIGN.md's table).

use crate::runtime::{PreflightReport, RollbackMethod, Severity};

/// What a deployment changes, as recorded in the state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    CodeOnly,
    ReversibleMigrations,
    /// Destructive or irreversible migrations: only a backup brings the data back.
    DestructiveMigrations,
}

impl Classification {
    pub fn of(report: &PreflightReport) -> Classification {
        let destructive = report.findings.iter().any(|f| f.severity == Severity::Destructive);
        if report.pending_migrations.is_empty() {
            Classification::CodeOnly
        } else if destructive || !report.rollback.by_downgrade {
            Classification::DestructiveMigrations
        } else {
            Classification::ReversibleMigrations
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Classification::CodeOnly => "code-only",
            Classification::ReversibleMigrations => "reversible-migrations",
            Classification::DestructiveMigrations => "destructive-migrations",
        }
    }

    pub fn parse(text: &str) -> Option<Classification> {
        [Self::CodeOnly, Self::ReversibleMigrations, Self::DestructiveMigrations]
            .into_iter()
            .find(|c| c.as_str() == text)
    }

    /// The first rollback method to try; a failed downgrade falls back to the backup.
    pub fn rollback_method(self) -> RollbackMethod {
        match self {
            Classification::CodeOnly => RollbackMethod::CodeOnly,
            Classification::ReversibleMigrations => RollbackMethod::Downgrade,
            Classification::DestructiveMigrations => RollbackMethod::Restore,
        }
    }

    /// What the operator must know before going on, per DESIGN.md.
    pub fn consequence(self, report: &PreflightReport) -> String {
        match self {
            Classification::CodeOnly => "rollback: previous code, nothing lost".into(),
            Classification::ReversibleMigrations => {
                let drops = if report.rollback.would_drop.is_empty() {
                    String::new()
                } else {
                    format!("; it drops {} and what was written to them since", report.rollback.would_drop.join(", "))
                };
                format!(
                    "rollback: previous code, then downgrade to {}{drops}",
                    report.rollback.downgrade_target.as_deref().unwrap_or("base")
                )
            }
            Classification::DestructiveMigrations => {
                "rollback: previous code, then restore this deployment's backup; writes made after the backup are lost".into()
            }
        }
    }
}

pub fn method_name(m: RollbackMethod) -> &'static str {
    match m {
        RollbackMethod::Downgrade => "downgrade",
        RollbackMethod::Restore => "restore",
        RollbackMethod::CodeOnly => "code-only",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Finding, Migration, RollbackPlan};

    fn report(pending: usize, by_downgrade: bool, destructive: bool) -> PreflightReport {
        PreflightReport {
            current_revision: Some("a".into()),
            target_revision: "b".into(),
            current_schema: None,
            target_schema: None,
            pending_migrations: (0..pending)
                .map(|i| Migration { id: i.to_string(), file: String::new(), description: String::new(), reversible: by_downgrade })
                .collect(),
            findings: if destructive {
                vec![Finding { file: "m.py".into(), line: 3, rule: "drop-table".into(), severity: Severity::Destructive, reason: String::new() }]
            } else {
                vec![]
            },
            rollback: RollbackPlan { by_downgrade, downgrade_target: Some("0002".into()), would_drop: vec!["table notes".into()] },
            needs_backup: pending > 0,
            changes: vec![],
        }
    }

    #[test]
    fn the_class_picks_the_rollback() {
        assert_eq!(Classification::of(&report(0, true, false)), Classification::CodeOnly);
        assert_eq!(Classification::of(&report(2, true, false)), Classification::ReversibleMigrations);
        assert_eq!(Classification::of(&report(2, false, false)), Classification::DestructiveMigrations);
        assert_eq!(Classification::of(&report(1, true, true)), Classification::DestructiveMigrations);
        assert_eq!(Classification::ReversibleMigrations.rollback_method(), RollbackMethod::Downgrade);
        let r = report(2, true, false);
        assert!(Classification::of(&r).consequence(&r).contains("downgrade to 0002; it drops table notes"));
    }
}
