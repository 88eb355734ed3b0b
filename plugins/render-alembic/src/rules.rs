//! Which migration operations are destructive, risky or worth a note, as one table of rules.
//!
//! Rules look only inside `upgrade()` (and `upgrade_*()` helpers): a drop in `downgrade()` is the
//! way back, not a risk of going forward. A rule fires on an `op.<method>(...)` call whose
//! arguments pass a test, on a statement of SQL the migration executes (`op.execute`,
//! `connection.execute(text(...))`, ...), or on the file having no working `downgrade()`.
//! Comments and string literals never match a call; only the SQL handed to `execute` is read.
//! Adding a rule is one line in [`RULES`].

use crate::python::{Call, Source};
use crate::sql::{self, SqlAction, SqlFact};
use plugin_sdk::{Finding, Severity};
use std::ops::Range;

/// One rule: its name (stable, used in reports and configs), severity, why it matters, and the
/// operations that trigger it.
pub struct Rule {
    pub name: &'static str,
    pub severity: Severity,
    pub reason: &'static str,
    pub on: &'static [Trigger],
}

/// What makes a rule fire.
pub enum Trigger {
    /// `op.<method>(...)`, or the same method on a `batch_alter_table` receiver, when its
    /// arguments pass the test.
    Op(&'static str, Args),
    /// A statement of SQL the migration executes.
    Sql(SqlAction),
    /// The migration changes something and has no `downgrade()` that undoes it.
    Irreversible,
}

/// A test on a call's keyword arguments (nested calls included: `sa.Column(..., nullable=False)`).
pub enum Args {
    Any,
    /// The keyword is given.
    Has(&'static str),
    /// The keyword is given with this value.
    Is(&'static str, &'static str),
    /// The first keyword has this value and the second is absent (or `None`).
    IsWithout(&'static str, &'static str, &'static str),
}

use Args::*;
use Severity::{Destructive, Info, Risky};
use Trigger::{Irreversible, Op, Sql};

/// Every rule, one per line. Order is the order findings on the same line are listed in.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { name: "drop-table", severity: Destructive, reason: "drops a table and all its rows", on: &[Op("drop_table", Any)] },
    Rule { name: "drop-column", severity: Destructive, reason: "drops a column and its data", on: &[Op("drop_column", Any)] },
    Rule { name: "execute-drop", severity: Destructive, reason: "executed SQL drops a table, column or schema", on: &[Sql(SqlAction::DropTable), Sql(SqlAction::DropColumn), Sql(SqlAction::DropSchema)] },
    Rule { name: "execute-truncate", severity: Destructive, reason: "executed SQL empties a table", on: &[Sql(SqlAction::Truncate)] },
    Rule { name: "execute-delete-all", severity: Destructive, reason: "executed DELETE has no WHERE: every row goes", on: &[Sql(SqlAction::DeleteAll)] },
    Rule { name: "execute-update-all", severity: Risky, reason: "executed UPDATE has no WHERE: every row is rewritten", on: &[Sql(SqlAction::UpdateAll)] },
    Rule { name: "rename-table", severity: Risky, reason: "renames a table: old code still running during rollout breaks", on: &[Op("rename_table", Any), Sql(SqlAction::RenameTable)] },
    Rule { name: "rename-column", severity: Risky, reason: "renames a column: old code still running during rollout breaks", on: &[Op("alter_column", Has("new_column_name")), Sql(SqlAction::RenameColumn)] },
    Rule { name: "type-change", severity: Risky, reason: "changes a column type: may rewrite the table under lock or fail on existing values", on: &[Op("alter_column", Has("type_")), Sql(SqlAction::TypeChange)] },
    Rule { name: "set-not-null", severity: Risky, reason: "makes a column NOT NULL: fails on existing NULLs and breaks old code that writes none", on: &[Op("alter_column", Is("nullable", "False")), Sql(SqlAction::SetNotNull)] },
    Rule { name: "add-not-null-without-default", severity: Risky, reason: "adds a NOT NULL column without server_default: fails on a non-empty table, breaks old code's inserts", on: &[Op("add_column", IsWithout("nullable", "False", "server_default")), Sql(SqlAction::AddNotNullNoDefault)] },
    Rule { name: "drop-index", severity: Info, reason: "drops an index: queries using it may slow down", on: &[Op("drop_index", Any), Sql(SqlAction::DropIndex)] },
    Rule { name: "drop-constraint", severity: Info, reason: "drops a constraint: data the old code relied on is no longer checked", on: &[Op("drop_constraint", Any), Sql(SqlAction::DropConstraint)] },
    Rule { name: "irreversible", severity: Risky, reason: "no working downgrade(): rolling back means restoring the backup", on: &[Irreversible] },
];

/// A rule that fired on a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub rule: &'static str,
    pub severity: Severity,
    /// 1-based line where the call starts.
    pub line: u32,
    pub reason: String,
}

impl Hit {
    pub fn into_finding(self, file: &str) -> Finding {
        Finding {
            file: file.to_string(),
            line: self.line,
            rule: self.rule.to_string(),
            severity: self.severity,
            reason: self.reason,
        }
    }
}

/// Findings for one migration file (none when it has no `upgrade()`: not a migration).
pub fn findings(path: &str, content: &str) -> Vec<Finding> {
    check(content)
        .into_iter()
        .map(|h| h.into_finding(path))
        .collect()
}

/// The rules that fire on a migration file, by line.
pub fn check(content: &str) -> Vec<Hit> {
    let src = Source::new(content);
    let functions = src.functions();
    let upgrades: Vec<_> = functions
        .iter()
        .filter(|f| is_side(&f.name, "upgrade"))
        .collect();
    if upgrades.is_empty() {
        return Vec::new();
    }
    let mut hits = Vec::new();
    for f in &upgrades {
        for (start, op) in operations(&src, f.body.clone()) {
            for rule in RULES {
                if rule.on.iter().any(|t| triggers(&src, t, &op)) {
                    let detail = match &op {
                        Operation::Op { call, .. } => src.snippet(call.start..call.end),
                        Operation::Sql(fact) => fact.statement.clone(),
                    };
                    hits.push(Hit {
                        rule: rule.name,
                        severity: rule.severity,
                        line: src.line_of(start),
                        reason: format!("{} (`{detail}`)", rule.reason),
                    });
                }
            }
        }
    }
    let reversibility = reversibility(&src);
    if reversibility != Reversibility::Reversible {
        let downgrade = functions.iter().find(|f| is_side(&f.name, "downgrade"));
        let at = downgrade
            .or(upgrades.first().copied())
            .map_or(0, |f| f.start);
        let why = if reversibility == Reversibility::Missing {
            "downgrade() is missing"
        } else {
            "downgrade() only passes or raises"
        };
        for rule in RULES
            .iter()
            .filter(|r| r.on.iter().any(|t| matches!(t, Irreversible)))
        {
            hits.push(Hit {
                rule: rule.name,
                severity: rule.severity,
                line: src.line_of(at),
                reason: format!("{} ({why})", rule.reason),
            });
        }
    }
    // One finding per rule and line: `op.execute("TRUNCATE a; TRUNCATE b")` is one place to look.
    let order = |h: &Hit| RULES.iter().position(|r| r.name == h.rule);
    hits.sort_by_key(|h| (h.line, order(h)));
    hits.dedup_by(|a, b| a.line == b.line && a.rule == b.rule);
    hits
}

/// `upgrade`, `upgrade_data`, ... (the multi-database template splits by engine name).
fn is_side(name: &str, side: &str) -> bool {
    name == side
        || name
            .strip_prefix(side)
            .is_some_and(|rest| rest.starts_with('_'))
}

/// One thing a migration function does.
pub enum Operation {
    /// An `op.*` call (or a call on a `batch_alter_table` receiver, with that batch's table).
    Op { call: Call, table: Option<String> },
    /// A statement of SQL it executes.
    Sql(SqlFact),
}

/// The operations in a function body, each with the offset of the call it comes from.
pub fn operations(src: &Source, body: Range<usize>) -> Vec<(usize, Operation)> {
    let calls = src.calls(body.clone());
    // `with op.batch_alter_table("users") as batch_op:` makes `batch_op` an `op` for "users".
    let mut receivers: Vec<(String, Option<String>)> = vec![("op".to_string(), None)];
    for call in calls.iter().filter(|c| c.name == "op.batch_alter_table") {
        let after = src.code[call.end..body.end].trim_start();
        if let Some(rest) = after
            .strip_prefix("as")
            .filter(|r| r.starts_with(char::is_whitespace))
        {
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let table = src
                .strings_in(call.args.clone())
                .next()
                .map(|s| s.value.clone());
            receivers.push((name, table));
        }
    }
    let mut out = Vec::new();
    for call in calls {
        if matches!(call.method(), "execute" | "exec_driver_sql") {
            let mut sql = src.string_groups(call.args.clone());
            if sql.is_empty() {
                sql = assigned_strings(src, src.code[call.args.clone()].trim(), call.start);
            }
            for fact in sql.iter().flat_map(|s| sql::analyze(s)) {
                out.push((call.start, Operation::Sql(fact)));
            }
        } else if let Some((_, table)) = receivers.iter().find(|(r, _)| r == call.receiver()) {
            let table = table.clone();
            out.push((call.start, Operation::Op { call, table }));
        }
    }
    out
}

/// The strings assigned to `name` before `before` (`sql = """..."""` then `op.execute(sql)`).
fn assigned_strings(src: &Source, name: &str, before: usize) -> Vec<String> {
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Vec::new();
    }
    let code = &src.code[..before];
    let mut at = None;
    let mut from = 0;
    while let Some(p) = code[from..].find(name).map(|p| from + p) {
        from = p + name.len();
        let boundary = code[..p]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        let rest = code[from..].trim_start_matches([' ', '\t']);
        let assigns = rest.starts_with('=') && !rest.starts_with("==");
        if boundary && assigns {
            at = Some(from + (code[from..].len() - rest.len()) + 1);
        }
    }
    let Some(start) = at else { return Vec::new() };
    src.string_groups(start..logical_line_end(src, start))
}

/// End of the logical line containing `from`: the first newline outside brackets and literals.
fn logical_line_end(src: &Source, from: usize) -> usize {
    let code = src.code.as_bytes();
    let mut depth = 0i32;
    for (i, &c) in code.iter().enumerate().skip(from) {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'\n' if depth <= 0 && !src.strings.iter().any(|s| s.span.contains(&i)) => return i,
            _ => {}
        }
    }
    code.len()
}

fn triggers(src: &Source, trigger: &Trigger, op: &Operation) -> bool {
    match (trigger, op) {
        (Trigger::Op(method, args), Operation::Op { call, .. }) => {
            call.method() == *method && args_pass(src, call, args)
        }
        (Trigger::Sql(action), Operation::Sql(fact)) => fact.action == *action,
        _ => false,
    }
}

fn args_pass(src: &Source, call: &Call, args: &Args) -> bool {
    let kw = |name| src.kwarg(call.args.clone(), name);
    match args {
        Any => true,
        Has(k) => kw(k).is_some(),
        Is(k, v) => kw(k).as_deref() == Some(*v),
        IsWithout(k, v, absent) => {
            kw(k).as_deref() == Some(*v) && kw(absent).is_none_or(|d| d == "None")
        }
    }
}

/// Whether a migration has a way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversibility {
    Reversible,
    /// No `downgrade()` at all.
    Missing,
    /// `downgrade()` only passes, returns or raises.
    NoOp,
}

/// A migration whose `upgrade()` does nothing (a merge point) reverses trivially.
pub fn reversibility(src: &Source) -> Reversibility {
    let functions = src.functions();
    let noop = |side: &str| {
        functions
            .iter()
            .filter(|f| is_side(&f.name, side))
            .all(|f| is_noop(src, f.body.clone()))
    };
    let has_downgrade = functions.iter().any(|f| is_side(&f.name, "downgrade"));
    if noop("upgrade") {
        Reversibility::Reversible
    } else if !has_downgrade {
        Reversibility::Missing
    } else if noop("downgrade") {
        Reversibility::NoOp
    } else {
        Reversibility::Reversible
    }
}

fn is_noop(src: &Source, body: Range<usize>) -> bool {
    src.statements(body).into_iter().all(|s| {
        let keyword = |k: &str| {
            s.strip_prefix(k).is_some_and(|r| {
                r.is_empty() || !r.starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        };
        matches!(s, "pass" | "..." | "return" | "return None") || keyword("raise")
    })
}

/// What the `downgrade()` of a migration drops ("table notes", "column users.display_name"),
/// in the order it runs.
pub fn downgrade_drops(content: &str) -> Vec<String> {
    let src = Source::new(content);
    let mut out = Vec::new();
    for f in src
        .functions()
        .iter()
        .filter(|f| is_side(&f.name, "downgrade"))
    {
        for (_, op) in operations(&src, f.body.clone()) {
            match op {
                Operation::Op { call, table } => {
                    let mut names = src.strings_in(call.args.clone()).map(|s| s.value.clone());
                    let expr = || src.code[call.args.clone()].trim().to_string();
                    match call.method() {
                        "drop_table" => {
                            out.push(format!("table {}", names.next().unwrap_or_else(expr)))
                        }
                        "drop_column" => {
                            let table =
                                table.or_else(|| names.next()).unwrap_or_else(|| "?".into());
                            out.push(format!(
                                "column {table}.{}",
                                names.next().unwrap_or_else(expr)
                            ));
                        }
                        _ => {}
                    }
                }
                Operation::Sql(fact) => match fact.action {
                    SqlAction::DropTable => out.push(format!("table {}", fact.object)),
                    SqlAction::DropColumn => out.push(format!("column {}", fact.object)),
                    SqlAction::DropSchema => out.push(format!("schema {}", fact.object)),
                    _ => {}
                },
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration file around the given upgrade body (and a real downgrade, so `irreversible`
    /// stays quiet unless a test wants it).
    fn migration(upgrade: &str) -> String {
        format!(
            "\"\"\"test\n\nRevision ID: 0002\nRevises: 0001\n\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = \"0002\"\ndown_revision = \"0001\"\n\n\ndef upgrade() -> None:\n{upgrade}\n\n\ndef downgrade() -> None:\n    op.drop_table(\"x\")\n"
        )
    }

    /// Line of the first line of the upgrade body in `migration`.
    const BODY: u32 = 14;

    fn hits(content: &str) -> Vec<(&'static str, u32)> {
        check(content)
            .into_iter()
            .map(|h| (h.rule, h.line))
            .collect()
    }

    #[test]
    fn every_op_rule_fires_on_its_call() {
        let cases = [
            ("    op.drop_table(\"notes\")", "drop-table"),
            (
                "    op.drop_column(\"users\", \"display_name\")",
                "drop-column",
            ),
            ("    op.rename_table(\"notes\", \"memos\")", "rename-table"),
            (
                "    op.alter_column(\"users\", \"name\", new_column_name=\"full_name\")",
                "rename-column",
            ),
            (
                "    op.alter_column(\"users\", \"age\", type_=sa.BigInteger(), existing_type=sa.Integer())",
                "type-change",
            ),
            (
                "    op.alter_column(\"users\", \"email\", nullable=False, existing_nullable=True)",
                "set-not-null",
            ),
            (
                "    op.add_column(\"users\", sa.Column(\"age\", sa.Integer(), nullable=False))",
                "add-not-null-without-default",
            ),
            (
                "    op.drop_index(op.f(\"ix_notes_user_id\"), table_name=\"notes\")",
                "drop-index",
            ),
            (
                "    op.drop_constraint(\"uq_users_email\", \"users\", type_=\"unique\")",
                "drop-constraint",
            ),
        ];
        for (body, rule) in cases {
            assert_eq!(hits(&migration(body)), vec![(rule, BODY)], "{body}");
        }
    }

    #[test]
    fn every_sql_rule_fires_on_executed_sql() {
        let cases = [
            (
                "    op.execute(\"DROP TABLE legacy_notes\")",
                "execute-drop",
            ),
            (
                "    op.execute(\"ALTER TABLE users DROP COLUMN nickname\")",
                "execute-drop",
            ),
            (
                "    op.execute('DROP SCHEMA archive CASCADE')",
                "execute-drop",
            ),
            (
                "    op.execute(sa.text(\"TRUNCATE audit\"))",
                "execute-truncate",
            ),
            (
                "    op.get_bind().execute(sa.text(\"DELETE FROM sessions\"))",
                "execute-delete-all",
            ),
            (
                "    connection = op.get_bind()\n    connection.execute(text(\"UPDATE users SET active = true\"))",
                "execute-update-all",
            ),
        ];
        for (body, rule) in cases {
            let found = hits(&migration(body));
            assert_eq!(found.len(), 1, "{body}: {found:?}");
            assert_eq!(found[0].0, rule, "{body}");
        }
    }

    #[test]
    fn irreversible_when_downgrade_is_missing_or_a_no_op() {
        let missing = "revision = '0003'\ndown_revision = '0002'\n\ndef upgrade():\n    op.add_column('t', sa.Column('c', sa.Integer()))\n";
        assert_eq!(hits(missing), vec![("irreversible", 4)]);
        let raises = "def upgrade():\n    op.add_column('t', sa.Column('c', sa.Integer()))\n\n\ndef downgrade():\n    \"\"\"No way back.\"\"\"\n    raise NotImplementedError(\n        'irreversible'\n    )\n";
        assert_eq!(hits(raises), vec![("irreversible", 5)]);
        let passes = "def upgrade():\n    op.add_column('t', sa.Column('c', sa.Integer()))\n\ndef downgrade():\n    # nothing\n    pass\n";
        assert_eq!(hits(passes), vec![("irreversible", 4)]);
    }

    #[test]
    fn merge_migrations_are_not_irreversible() {
        let merge = "revision = '0005'\ndown_revision = ('0004a', '0004b')\n\ndef upgrade():\n    pass\n\ndef downgrade():\n    pass\n";
        assert!(hits(merge).is_empty());
    }

    #[test]
    fn drops_in_downgrade_are_the_way_back_not_a_finding() {
        let content = migration(
            "    op.create_table(\"notes\", sa.Column(\"id\", sa.Integer(), primary_key=True))",
        );
        assert!(hits(&content).is_empty());
    }

    #[test]
    fn comments_strings_and_docstrings_are_not_calls() {
        let body = "    \"\"\"Replaces op.drop_table('notes') from the old plan.\"\"\"\n    # op.drop_table(\"notes\")\n    log = \"op.drop_column('users', 'name')\"\n    op.create_table(\"notes\", sa.Column(\"id\", sa.Integer()))";
        assert!(hits(&migration(body)).is_empty());
    }

    #[test]
    fn safe_operations_are_not_flagged() {
        let cases = [
            "    op.add_column(\"notes\", sa.Column(\"pinned\", sa.Boolean(), nullable=True))",
            "    op.add_column(\"users\", sa.Column(\"age\", sa.Integer(), nullable=False, server_default=\"0\"))",
            "    op.alter_column(\"users\", \"email\", nullable=True, existing_nullable=False)",
            "    op.execute(\"DELETE FROM sessions WHERE expires_at < now()\")",
            "    op.execute(\"INSERT INTO audit (action) VALUES ('DROP TABLE x')\")",
            "    op.create_index(\"ix_a\", \"notes\", [\"a\"])",
        ];
        for body in cases {
            assert!(hits(&migration(body)).is_empty(), "{body}");
        }
    }

    #[test]
    fn multi_line_execute_is_flagged_at_the_call_start() {
        let body = "    op.create_table(\"t\", sa.Column(\"id\", sa.Integer()))\n    op.execute(\n        \"\"\"\n        -- clean up\n        TRUNCATE audit_log;\n        \"\"\"\n    )";
        assert_eq!(hits(&migration(body)), vec![("execute-truncate", BODY + 1)]);
    }

    #[test]
    fn multi_line_op_call_keeps_its_first_line() {
        let body = "    op.add_column(\n        \"users\",\n        sa.Column(\"age\", sa.Integer(), nullable=False),\n    )";
        assert_eq!(
            hits(&migration(body)),
            vec![("add-not-null-without-default", BODY)]
        );
    }

    #[test]
    fn sql_held_in_a_variable_is_read() {
        let body = "    sql = \"\"\"\n        DELETE FROM notes\n    \"\"\"\n    op.execute(sql)";
        assert_eq!(
            hits(&migration(body)),
            vec![("execute-delete-all", BODY + 3)]
        );
    }

    #[test]
    fn batch_operations_count_as_op_calls() {
        let body = "    with op.batch_alter_table(\"users\", schema=None) as batch_op:\n        batch_op.drop_column(\"nickname\")";
        assert_eq!(hits(&migration(body)), vec![("drop-column", BODY + 1)]);
    }

    #[test]
    fn reason_quotes_the_call() {
        let found = check(&migration("    op.drop_table(\n        \"notes\"\n    )"));
        assert_eq!(
            found[0].reason,
            "drops a table and all its rows (`op.drop_table( \"notes\" )`)"
        );
        assert_eq!(found[0].severity, Severity::Destructive);
    }

    #[test]
    fn files_without_upgrade_are_not_migrations() {
        assert!(hits("from alembic import context\n\nop.drop_table('x')\n").is_empty());
    }

    #[test]
    fn downgrade_drops_lists_tables_and_columns() {
        let content = "def upgrade():\n    pass\n\ndef downgrade():\n    op.drop_column(\"users\", \"display_name\")\n    op.drop_index(op.f(\"ix_notes_user_id\"), table_name=\"notes\")\n    op.drop_table(\"notes\")\n    with op.batch_alter_table('tags') as b:\n        b.drop_column('color')\n    op.execute('DROP TABLE IF EXISTS legacy')\n";
        assert_eq!(
            downgrade_drops(content),
            vec![
                "column users.display_name",
                "table notes",
                "column tags.color",
                "table legacy"
            ]
        );
    }

    #[test]
    fn example_backfill_migration_is_clean() {
        // examples/alembic-app v4's 0004: a bulk insert and an INSERT ... SELECT split over two
        // implicitly concatenated literals. Nothing is lost going forward.
        let body = "    audit = op.create_table(\"audit\", sa.Column(\"id\", sa.Integer(), nullable=False))\n    op.bulk_insert(audit, [{\"action\": \"audit.enabled\", \"detail\": \"migration 0004\"}])\n    op.execute(\n        \"INSERT INTO audit (action, detail, at) \"\n        \"SELECT kind, payload, created_at FROM user_events\"\n    )";
        assert!(hits(&migration(body)).is_empty());
    }

    #[test]
    fn dropping_an_index_in_sql_is_only_info() {
        let found = check(&migration(
            "    op.execute(\"DROP INDEX IF EXISTS ix_notes_user_id\")",
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].rule, found[0].severity),
            ("drop-index", Severity::Info)
        );
    }

    #[test]
    fn one_line_functions() {
        let text = "def upgrade(): op.drop_column('users', 'age')\ndef downgrade() -> None: ...\n";
        assert_eq!(hits(text), vec![("drop-column", 1), ("irreversible", 2)]);
    }

    #[test]
    fn each_rule_name_is_unique() {
        let mut names: Vec<_> = RULES.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
    }
}
