//! The preflight report, assembled from what preflight observed.
//!
//! Everything the operator is told before approving (what changes, what the migrations risk,
//! how a rollback would go and what it would drop) is computed here from plain inputs, so the
//! whole classification is unit-tested without a host.

use crate::alembic::Script;
use crate::commands::short;
use crate::rules;
use crate::settings::{Mode, Settings};
use plugin_sdk::{Migration, PreflightReport, RollbackPlan, Severity};

/// What preflight found out, in the plugin's own terms.
pub struct Observed<'a> {
    pub settings: &'a Settings,
    /// Commit running now (local checkout, or per the state store in render mode).
    pub current_code: Option<&'a str>,
    /// The target, resolved to a full SHA.
    pub target: &'a str,
    /// The database's Alembic revision (none = empty schema).
    pub db_revision: Option<&'a str>,
    /// Head of the target's migrations (none = no migrations).
    pub target_head: Option<&'a str>,
    /// Migrations `upgrade head` will apply, oldest first.
    pub pending: Vec<&'a Script>,
    /// Tracked files with local edits that `checkout --force` would discard (local mode).
    pub dirty_files: usize,
}

pub fn report(o: &Observed) -> PreflightReport {
    let findings: Vec<_> = o
        .pending
        .iter()
        .flat_map(|s| rules::findings(&s.path, &s.content))
        .collect();
    let pending_migrations = o
        .pending
        .iter()
        .map(|s| Migration {
            id: s.revision.clone(),
            file: s.path.clone(),
            description: s.message.clone(),
            reversible: s.reversible,
        })
        .collect();
    let destructive = findings.iter().any(|f| f.severity == Severity::Destructive);
    let mut would_drop: Vec<String> = Vec::new();
    // Downgrades run newest first.
    for drop in o
        .pending
        .iter()
        .rev()
        .flat_map(|s| rules::downgrade_drops(&s.content))
    {
        if !would_drop.contains(&drop) {
            would_drop.push(drop);
        }
    }
    PreflightReport {
        current_revision: o.current_code.map(str::to_string),
        target_revision: o.target.to_string(),
        current_schema: o.db_revision.map(str::to_string),
        target_schema: o.target_head.map(str::to_string),
        pending_migrations,
        findings,
        rollback: RollbackPlan {
            by_downgrade: o.pending.iter().all(|s| s.reversible) && !destructive,
            downgrade_target: o.db_revision.map(str::to_string),
            would_drop,
        },
        needs_backup: !o.pending.is_empty(),
        changes: changes(o),
    }
}

/// Short lines saying what the deployment will do, in order.
pub fn changes(o: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let target = short(o.target);
    let migrate = (!o.pending.is_empty()).then(|| {
        let n = o.pending.len();
        format!(
            "migrate {} -> {} ({n} migration{})",
            o.db_revision.unwrap_or("base"),
            o.target_head.unwrap_or("base"),
            if n == 1 { "" } else { "s" }
        )
    });
    match o.settings.mode {
        Mode::Local => {
            if o.dirty_files > 0 {
                let n = o.dirty_files;
                out.push(format!(
                    "discard local edits to {n} tracked file{}",
                    if n == 1 { "" } else { "s" }
                ));
            }
            out.push(match o.current_code {
                Some(c) if c == o.target => format!("code already at {target}"),
                Some(c) => format!("checkout {} -> {target}", short(c)),
                None => format!("checkout {target}"),
            });
            out.extend(migrate);
            if let Some(restart) = &o.settings.restart {
                out.push(format!("restart: {}", restart.join(" ")));
            }
        }
        Mode::Render => {
            let from = o
                .current_code
                .map(|c| format!("{} -> ", short(c)))
                .unwrap_or_default();
            out.push(format!(
                "render deploy {from}{target} on {}",
                o.settings.service_id()
            ));
            out.extend(migrate.map(|m| format!("{m}, run by Render before the new code starts")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alembic::parse_script;

    const V2: &str = "\"\"\"notes table and users.display_name\"\"\"\nrevision = \"0002\"\ndown_revision = \"0001\"\n\ndef upgrade():\n    op.create_table(\"notes\", sa.Column(\"id\", sa.Integer()))\n    op.add_column(\"users\", sa.Column(\"display_name\", sa.String(), nullable=True))\n\ndef downgrade():\n    op.drop_column(\"users\", \"display_name\")\n    op.drop_table(\"notes\")\n";
    const V3: &str = "\"\"\"notes.pinned\"\"\"\nrevision = \"0003\"\ndown_revision = \"0002\"\n\ndef upgrade():\n    op.add_column(\"notes\", sa.Column(\"pinned\", sa.Boolean(), nullable=True))\n\ndef downgrade():\n    op.drop_column(\"notes\", \"pinned\")\n";
    const V3_DESTRUCTIVE: &str = "\"\"\"drop legacy\"\"\"\nrevision = \"0003\"\ndown_revision = \"0002\"\n\ndef upgrade():\n    op.drop_table(\"legacy\")\n\ndef downgrade():\n    op.create_table(\"legacy\", sa.Column(\"id\", sa.Integer()))\n";

    fn scripts(files: &[(&str, &str)]) -> Vec<Script> {
        files
            .iter()
            .map(|(p, c)| parse_script(p, c).unwrap())
            .collect()
    }

    fn observed<'a>(
        settings: &'a Settings,
        pending: &'a [Script],
        db: Option<&'a str>,
    ) -> Observed<'a> {
        Observed {
            settings,
            current_code: Some("1a2b3c4d5e6f"),
            target: "5d6e7f8a9b0c",
            db_revision: db,
            target_head: pending.last().map(|s| s.revision.as_str()).or(db),
            pending: pending.iter().collect(),
            dirty_files: 0,
        }
    }

    #[test]
    fn reversible_migrations_roll_back_by_downgrade() {
        let s = Settings {
            restart: Some(vec!["python".into(), "bin/restart".into()]),
            ..Settings::default()
        };
        let pending = scripts(&[("m/0002.py", V2), ("m/0003.py", V3)]);
        let r = report(&observed(&s, &pending, Some("0001")));
        assert_eq!(
            r.changes,
            vec![
                "checkout 1a2b3c4 -> 5d6e7f8",
                "migrate 0001 -> 0003 (2 migrations)",
                "restart: python bin/restart"
            ]
        );
        assert!(r.findings.is_empty());
        assert!(r.rollback.by_downgrade);
        assert_eq!(r.rollback.downgrade_target.as_deref(), Some("0001"));
        assert_eq!(
            r.rollback.would_drop,
            vec![
                "column notes.pinned",
                "column users.display_name",
                "table notes"
            ]
        );
        assert!(r.needs_backup);
        assert_eq!(
            r.pending_migrations
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["0002", "0003"]
        );
        assert_eq!(
            r.pending_migrations[0].description,
            "notes table and users.display_name"
        );
        assert_eq!(r.current_schema.as_deref(), Some("0001"));
        assert_eq!(r.target_schema.as_deref(), Some("0003"));
    }

    #[test]
    fn destructive_migration_needs_a_restore() {
        let s = Settings::default();
        let pending = scripts(&[("m/0003.py", V3_DESTRUCTIVE)]);
        let r = report(&observed(&s, &pending, Some("0002")));
        assert_eq!(r.findings.len(), 1);
        assert_eq!(
            (
                r.findings[0].file.as_str(),
                r.findings[0].line,
                r.findings[0].rule.as_str()
            ),
            ("m/0003.py", 6, "drop-table")
        );
        assert!(!r.rollback.by_downgrade);
        assert_eq!(r.changes[1], "migrate 0002 -> 0003 (1 migration)");
    }

    #[test]
    fn code_only_deploy() {
        let s = Settings::default();
        let mut o = observed(&s, &[], Some("0003"));
        o.dirty_files = 1;
        let r = report(&o);
        assert!(!r.needs_backup);
        assert!(r.rollback.by_downgrade && r.rollback.would_drop.is_empty());
        assert_eq!(
            r.changes,
            vec![
                "discard local edits to 1 tracked file",
                "checkout 1a2b3c4 -> 5d6e7f8"
            ]
        );
    }

    #[test]
    fn first_deploy_on_an_empty_database() {
        let s = Settings {
            mode: Mode::Render,
            render_service_id: Some("srv-abc".into()),
            ..Settings::default()
        };
        let pending = scripts(&[("m/0002.py", V2)]);
        let mut o = observed(&s, &pending, None);
        o.current_code = None;
        let r = report(&o);
        assert_eq!(r.rollback.downgrade_target, None);
        assert_eq!(
            r.changes,
            vec![
                "render deploy 5d6e7f8 on srv-abc",
                "migrate base -> 0002 (1 migration), run by Render before the new code starts"
            ]
        );
    }
}
