//! The preflight report, assembled from what preflight observed.
//!
//! Everything the operator is told before approving (what changes, what the pending migrations
//! risk, which versions the database has that no file has, how a rollback would go and what it
//! would drop) is computed here from plain inputs, so it is unit-tested without a host.

use crate::commands::short;
use crate::rules::Analysis;
use crate::schema::{self, MigrationFile};
use crate::settings::Settings;
use plugin_sdk::{Finding, Migration, PreflightReport, RollbackPlan, Severity};
use std::collections::BTreeSet;
use std::time::Duration;

/// The finding for a version the database has applied and no file of the target has.
pub const NO_FILE: &str = "no-file";

/// A pending migration of the target, read and analysed.
pub struct Script {
    pub file: MigrationFile,
    pub analysis: Analysis,
}

/// What preflight found out, in the plugin's own terms.
pub struct Observed<'a> {
    pub settings: &'a Settings,
    pub environment: &'a str,
    /// The commit checked out now.
    pub current_code: Option<&'a str>,
    /// The target, resolved to a full SHA.
    pub target: &'a str,
    /// Versions in `schema_migrations`.
    pub applied: &'a BTreeSet<u64>,
    /// The target's migration files.
    pub target_files: &'a [MigrationFile],
    /// The target's migrations the database has not applied, oldest first.
    pub pending: Vec<Script>,
    /// Tracked files with local edits that `checkout --force` would discard.
    pub dirty_files: usize,
}

pub fn report(o: &Observed) -> PreflightReport {
    let mut findings: Vec<Finding> = o
        .pending
        .iter()
        .flat_map(|s| {
            s.analysis
                .hits
                .iter()
                .cloned()
                .map(|h| h.into_finding(&s.file.path))
        })
        .collect();
    let unknown = schema::unknown(o.applied, o.target_files);
    for v in &unknown {
        findings.push(Finding {
            file: o.settings.migrations_dir.clone(),
            line: 0,
            rule: NO_FILE.into(),
            severity: Severity::Risky,
            reason: format!(
                "version {v} is applied in schema_migrations but no file in {} at {} has it (a migration from another branch, or a deleted file): Rails cannot revert it",
                o.settings.migrations_dir,
                short(o.target)
            ),
        });
    }
    let current_schema = o.applied.iter().next_back().copied();
    let target_schema = current_schema
        .into_iter()
        .chain(o.target_files.iter().map(|f| f.version))
        .max();
    let destructive = findings.iter().any(|f| f.severity == Severity::Destructive);
    let out_of_order: Vec<u64> = o
        .pending
        .iter()
        .map(|s| s.file.version)
        .filter(|v| current_schema.is_some_and(|c| *v < c))
        .collect();
    let mut would_drop: Vec<String> = Vec::new();
    for drop in o
        .pending
        .iter()
        .rev()
        .flat_map(|s| s.analysis.would_drop.iter())
    {
        if !would_drop.contains(drop) {
            would_drop.push(drop.clone());
        }
    }
    let by_downgrade = !destructive
        && out_of_order.is_empty()
        && o.pending
            .iter()
            .all(|s| s.analysis.reversible && s.analysis.transactional);
    PreflightReport {
        current_revision: o.current_code.map(str::to_string),
        target_revision: o.target.to_string(),
        current_schema: current_schema.map(|v| v.to_string()),
        target_schema: target_schema.map(|v| v.to_string()),
        pending_migrations: o
            .pending
            .iter()
            .map(|s| Migration {
                id: s.file.version.to_string(),
                file: s.file.path.clone(),
                description: s.file.description(),
                reversible: s.analysis.reversible,
            })
            .collect(),
        findings,
        rollback: RollbackPlan {
            by_downgrade,
            downgrade_target: current_schema.map(|v| v.to_string()),
            would_drop,
        },
        needs_backup: !o.pending.is_empty(),
        changes: changes(o, &unknown, &out_of_order),
    }
}

/// Short lines saying what the deployment will do, in order.
fn changes(o: &Observed, unknown: &[u64], out_of_order: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    let target = short(o.target);
    if o.dirty_files > 0 {
        let n = o.dirty_files;
        out.push(format!(
            "discard local edits to {n} tracked file{}",
            plural(n)
        ));
    }
    let unchanged = o.current_code == Some(o.target);
    out.push(match o.current_code {
        Some(_) if unchanged => format!("code already at {target}"),
        Some(c) => format!("checkout {} -> {target}", short(c)),
        None => format!("checkout {target}"),
    });
    let n = o.pending.len();
    if n > 0 {
        let ids: Vec<String> = o
            .pending
            .iter()
            .map(|s| format!("{} {}", s.file.version, s.file.name))
            .collect();
        let why = if unchanged {
            ", pending in the database although the code is up to date"
        } else {
            ""
        };
        out.push(format!(
            "db:migrate: {n} pending migration{}{why}: {} (timeout {})",
            plural(n),
            ids.join(", "),
            human(o.settings.migration_timeout(o.environment))
        ));
    } else {
        out.push("db:migrate: nothing pending".into());
    }
    if !out_of_order.is_empty() {
        let list: Vec<String> = out_of_order.iter().map(u64::to_string).collect();
        out.push(format!(
            "pending {} older than the database's newest version: a rollback restores the backup",
            list.join(", ")
        ));
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(u64::to_string).collect();
        out.push(format!(
            "schema_migrations has {} version{} with no file: {}",
            list.len(),
            plural(list.len()),
            list.join(", ")
        ));
    }
    if let Some(restart) = &o.settings.restart {
        out.push(format!("restart: {}", restart.join(" ")));
    }
    if !o.settings.runner.is_empty() {
        out.push(format!(
            "rails runs through: {}",
            o.settings.runner.join(" ")
        ));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `10m`, `3s`, `1m30s`, `500ms`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let (m, s) = (ms / 60_000, ms / 1000 % 60);
    match (m, s) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use crate::schema::migration_file;

    const ADD: &str = "class AddNickname < ActiveRecord::Migration[6.1]\n  def change\n    add_column :users, :nickname, :string\n  end\nend\n";
    const REMOVE: &str = "class RemoveNickname < ActiveRecord::Migration[6.1]\n  def change\n    remove_column :users, :nickname, :string\n  end\nend\n";

    fn file(path: &str) -> MigrationFile {
        migration_file(path).unwrap()
    }

    fn script(path: &str, content: &str) -> Script {
        Script {
            file: file(path),
            analysis: rules::analyze(content),
        }
    }

    struct Case {
        settings: Settings,
        applied: BTreeSet<u64>,
        files: Vec<MigrationFile>,
    }

    impl Case {
        fn new(applied: &[u64], files: &[&str]) -> Case {
            Case {
                settings: Settings {
                    restart: Some(vec!["bin/restart".into()]),
                    ..Settings::default()
                },
                applied: applied.iter().copied().collect(),
                files: files.iter().map(|p| file(p)).collect(),
            }
        }

        fn observed(&self, current: &'static str, pending: Vec<Script>) -> Observed<'_> {
            Observed {
                settings: &self.settings,
                environment: "production",
                current_code: Some(current),
                target: "5d6e7f8a9b0c",
                applied: &self.applied,
                target_files: &self.files,
                pending,
                dirty_files: 0,
            }
        }
    }

    #[test]
    fn code_up_to_date_but_a_migration_pending() {
        let case = Case::new(
            &[1],
            &[
                "db/migrate/1_create_users.rb",
                "db/migrate/2_add_nickname.rb",
            ],
        );
        let r = report(&case.observed(
            "5d6e7f8a9b0c",
            vec![script("db/migrate/2_add_nickname.rb", ADD)],
        ));
        assert_eq!(
            r.changes,
            [
                "code already at 5d6e7f8",
                "db:migrate: 1 pending migration, pending in the database although the code is up to date: 2 add_nickname (timeout 10m)",
                "restart: bin/restart"
            ]
        );
        assert_eq!(r.pending_migrations[0].id, "2");
        assert_eq!(r.pending_migrations[0].description, "Add nickname");
        assert!(r.needs_backup && r.rollback.by_downgrade && r.findings.is_empty());
        assert_eq!(r.rollback.downgrade_target.as_deref(), Some("1"));
        assert_eq!(r.rollback.would_drop, ["column users.nickname"]);
        assert_eq!(
            (r.current_schema.as_deref(), r.target_schema.as_deref()),
            (Some("1"), Some("2"))
        );
    }

    #[test]
    fn a_destructive_migration_rolls_back_by_restore() {
        let case = Case::new(
            &[1, 2],
            &[
                "db/migrate/1_a.rb",
                "db/migrate/2_b.rb",
                "db/migrate/3_remove_nickname.rb",
            ],
        );
        let r = report(&case.observed(
            "1a2b3c4d",
            vec![script("db/migrate/3_remove_nickname.rb", REMOVE)],
        ));
        assert_eq!(r.findings.len(), 1);
        let f = &r.findings[0];
        assert_eq!(
            (f.file.as_str(), f.line, f.rule.as_str(), f.severity),
            (
                "db/migrate/3_remove_nickname.rb",
                3,
                "remove-column",
                Severity::Destructive
            )
        );
        assert!(!r.rollback.by_downgrade);
        assert_eq!(r.changes[0], "checkout 1a2b3c4 -> 5d6e7f8");
    }

    #[test]
    fn versions_without_a_file_are_reported() {
        let case = Case::new(&[1, 20241231000000], &["db/migrate/1_a.rb"]);
        let r = report(&case.observed("5d6e7f8a9b0c", vec![]));
        assert!(!r.needs_backup);
        let f = &r.findings[0];
        assert_eq!(
            (f.rule.as_str(), f.file.as_str(), f.severity),
            (NO_FILE, "db/migrate", Severity::Risky)
        );
        assert!(f.reason.contains("version 20241231000000"), "{}", f.reason);
        assert!(
            r.changes.contains(
                &"schema_migrations has 1 version with no file: 20241231000000".to_string()
            ),
            "{:?}",
            r.changes
        );
        assert_eq!(r.changes[1], "db:migrate: nothing pending");
    }

    #[test]
    fn an_out_of_order_migration_cannot_be_rolled_back_by_steps() {
        let case = Case::new(
            &[1, 3],
            &[
                "db/migrate/1_a.rb",
                "db/migrate/2_add_nickname.rb",
                "db/migrate/3_c.rb",
            ],
        );
        let r = report(&case.observed(
            "1a2b3c4d",
            vec![script("db/migrate/2_add_nickname.rb", ADD)],
        ));
        assert!(!r.rollback.by_downgrade);
        assert!(
            r.changes
                .iter()
                .any(|c| c.contains("pending 2 older than the database's newest version")),
            "{:?}",
            r.changes
        );
    }

    #[test]
    fn a_first_deploy_on_an_empty_database() {
        let case = Case::new(&[], &["db/migrate/1_add_nickname.rb"]);
        let mut o = case.observed("x", vec![script("db/migrate/1_add_nickname.rb", ADD)]);
        o.current_code = None;
        o.environment = "staging";
        let r = report(&o);
        assert_eq!(r.current_schema, None);
        assert_eq!(r.rollback.downgrade_target, None);
        assert_eq!(r.changes[0], "checkout 5d6e7f8");
        assert!(r.changes[1].ends_with("(timeout 5m)"), "{}", r.changes[1]);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(3)), "3s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }
}
