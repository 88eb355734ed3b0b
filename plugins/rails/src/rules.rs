//! Which migration operations are destructive, risky or worth a note, as one table of rules,
//! and whether a migration has a way back.
//!
//! Only what runs forward counts: the body of `change` (minus the `dir.down` blocks of a
//! `reversible`) or of `up`. A `remove_column` in `down` is the way back, not a risk; in
//! `change` it runs forward and is one. A rule fires on a migration method (`remove_column`,
//! or `t.remove` inside `change_table`), on a statement of SQL handed to `execute`, or on the
//! migration having no way back. Comments, strings and heredocs never match a call (see
//! [`crate::ruby`]); only the SQL given to `execute` is read. Adding a rule is one line in
//! [`RULES`].

use crate::ruby::{Arg, Block, Call, Source};
use crate::sql::{self, SqlAction};
use plugin_sdk::{Finding, Severity};
use std::ops::Range;

pub struct Rule {
    /// Stable name, used in reports and scripts.
    pub name: &'static str,
    pub severity: Severity,
    pub reason: &'static str,
    pub on: &'static [Trigger],
}

pub enum Trigger {
    /// A migration method called with no receiver (or on `connection`), when the arguments pass.
    Call(&'static str, Cond),
    /// A method of the table object inside `change_table :t do |t| ... end`.
    Table(&'static str, Cond),
    /// A statement of SQL the migration executes.
    Sql(SqlAction),
}

pub enum Cond {
    Any,
    /// The positional argument at this index (0-based) is written as this.
    ArgIs(usize, &'static str),
}

use Cond::*;
use Severity::{Destructive, Risky};
use Trigger::{Call as C, Sql, Table as T};

/// Every rule, one per line. Order is the order findings on the same line are listed in.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { name: "drop-table", severity: Destructive, reason: "drops a table and all its rows", on: &[C("drop_table", Any), C("drop_join_table", Any)] },
    Rule { name: "remove-column", severity: Destructive, reason: "drops a column and its data", on: &[C("remove_column", Any), C("remove_columns", Any), T("remove", Any)] },
    Rule { name: "remove-reference", severity: Destructive, reason: "drops a reference column (with its index and foreign key) and its data", on: &[C("remove_reference", Any), C("remove_belongs_to", Any), T("remove_references", Any), T("remove_reference", Any), T("remove_belongs_to", Any)] },
    Rule { name: "remove-timestamps", severity: Destructive, reason: "drops created_at and updated_at and their data", on: &[C("remove_timestamps", Any), T("remove_timestamps", Any)] },
    Rule { name: "execute-drop", severity: Destructive, reason: "executed SQL drops a table, a column or another object", on: &[Sql(SqlAction::Drop)] },
    Rule { name: "execute-truncate", severity: Destructive, reason: "executed SQL empties a table", on: &[Sql(SqlAction::Truncate)] },
    Rule { name: "execute-delete-all", severity: Destructive, reason: "executed DELETE has no WHERE: every row goes", on: &[Sql(SqlAction::DeleteAll)] },
    Rule { name: "execute-update-all", severity: Risky, reason: "executed UPDATE has no WHERE: every row is rewritten", on: &[Sql(SqlAction::UpdateAll)] },
    Rule { name: "rename-table", severity: Risky, reason: "renames a table: the code still running during the deploy breaks", on: &[C("rename_table", Any)] },
    Rule { name: "rename-column", severity: Risky, reason: "renames a column: the code still running during the deploy breaks", on: &[C("rename_column", Any), T("rename", Any)] },
    Rule { name: "change-column", severity: Risky, reason: "changes a column's type: may rewrite the table under lock, and existing values may not convert", on: &[C("change_column", Any), T("change", Any)] },
    Rule { name: "set-not-null", severity: Risky, reason: "makes a column NOT NULL: fails on existing NULLs, and code that writes none breaks", on: &[C("change_column_null", ArgIs(2, "false")), T("change_null", ArgIs(1, "false"))] },
    Rule { name: "remove-index", severity: Risky, reason: "drops an index: queries that used it slow down, and a unique one stops enforcing uniqueness", on: &[C("remove_index", Any), T("remove_index", Any), Sql(SqlAction::DropIndex)] },
];

/// Migrations with no way back: `raise ActiveRecord::IrreversibleMigration`, `up` without
/// `down`, or an operation `change` cannot reverse. Rolling them back means restoring the backup.
pub const IRREVERSIBLE: &str = "irreversible";
/// `disable_ddl_transaction!`: a failure or a timeout halfway leaves the migration half applied.
pub const NO_TRANSACTION: &str = "no-transaction";

/// Methods whose SQL argument is read.
const EXECUTE: &[&str] = &[
    "execute",
    "exec_query",
    "exec_update",
    "exec_delete",
    "exec_insert",
];

/// A rule that fired, by line.
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

/// How a migration is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `def change`: Rails reverses it by inverting each operation.
    Change,
    /// `def up` (and, one hopes, `def down`).
    UpDown,
    /// Neither: not a migration (a helper file in the folder).
    None,
}

/// What a migration file does and risks.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub style: Style,
    pub hits: Vec<Hit>,
    /// `db:rollback` can undo it.
    pub reversible: bool,
    /// Runs inside a transaction (no `disable_ddl_transaction!`).
    pub transactional: bool,
    /// What undoing it drops ("table notes", "column users.nickname"), in the order it runs.
    pub would_drop: Vec<String>,
}

/// Findings for one migration file.
pub fn findings(path: &str, content: &str) -> Vec<Finding> {
    analyze(content)
        .hits
        .into_iter()
        .map(|h| h.into_finding(path))
        .collect()
}

pub fn analyze(content: &str) -> Analysis {
    let src = Source::new(content);
    let defs = src.defs();
    let blocks = src.blocks();
    let def = |name: &str| defs.iter().find(|d| d.name == name);
    let mut hits = Vec::new();
    let mut reversible = true;
    let mut irreversible = |hits: &mut Vec<Hit>, line: u32, why: String| {
        reversible = false;
        hits.push(Hit {
            rule: IRREVERSIBLE,
            severity: Risky,
            line,
            reason: format!("no way back: {why}; rolling back means restoring the backup"),
        });
    };

    // Rails runs `change` when it is defined, whatever else is; `up`/`down` otherwise.
    let (style, forward, back): (Style, Vec<Range<usize>>, Vec<Range<usize>>) =
        match (def("change"), def("up")) {
            (Some(change), _) => {
                let downs: Vec<Range<usize>> = blocks
                    .iter()
                    .filter(|b| {
                        within(&b.body, &change.body) && is_reversible_side(&blocks, b, "down")
                    })
                    .map(|b| b.body.clone())
                    .collect();
                (Style::Change, subtract(change.body.clone(), &downs), downs)
            }
            (None, Some(up)) => (
                Style::UpDown,
                vec![up.body.clone()],
                def("down")
                    .map(|d| vec![d.body.clone()])
                    .unwrap_or_default(),
            ),
            (None, None) => {
                return Analysis {
                    style: Style::None,
                    hits,
                    reversible: true,
                    transactional: true,
                    would_drop: Vec::new(),
                };
            }
        };

    let mut methods: Vec<&str> = RULES
        .iter()
        .flat_map(|r| r.on.iter())
        .filter_map(|t| match t {
            C(m, _) | T(m, _) => Some(*m),
            Sql(_) => None,
        })
        .collect();
    methods.extend_from_slice(EXECUTE);
    methods.extend_from_slice(CHANGE_IRREVERSIBLE_ONLY);

    for range in &forward {
        for call in src.calls(range.clone(), &methods) {
            let table_block = change_table_of(&blocks, &call);
            let args = src.args(&call);
            for op in operations(&src, &call, table_block.is_some(), range.start) {
                for rule in RULES {
                    if rule
                        .on
                        .iter()
                        .any(|t| fires(t, &op, &call, &args, table_block.is_some()))
                    {
                        let detail = match &op {
                            Op::Method => src.snippet(call.start..call.end),
                            Op::Sql(fact) => fact.statement.clone(),
                        };
                        hits.push(Hit {
                            rule: rule.name,
                            severity: rule.severity,
                            line: src.line_of(call.start),
                            reason: format!("{} (`{detail}`)", rule.reason),
                        });
                    }
                }
            }
            let why = (style == Style::Change && !inside_reversible_or_up_only(&blocks, &call))
                .then(|| change_cannot_reverse(&call, &args, table_block.is_some()))
                .flatten();
            if let Some(why) = why {
                let line = src.line_of(call.start);
                irreversible(
                    &mut hits,
                    line,
                    format!(
                        "`change` cannot reverse `{}` ({why})",
                        src.snippet(call.start..call.end)
                    ),
                );
            }
        }
    }

    // `raise ActiveRecord::IrreversibleMigration` anywhere a direction runs.
    for range in forward.iter().chain(back.iter()) {
        for call in src.calls(range.clone(), &["raise"]) {
            let raised = src.code[call.args.clone()]
                .trim_start()
                .trim_start_matches("::");
            if raised.starts_with("ActiveRecord::IrreversibleMigration")
                || raised.starts_with("IrreversibleMigration")
            {
                let line = src.line_of(call.start);
                irreversible(
                    &mut hits,
                    line,
                    "`raise ActiveRecord::IrreversibleMigration`".into(),
                );
            }
        }
    }
    if style == Style::UpDown {
        match def("down") {
            None => {
                let line = src.line_of(def("up").map_or(0, |d| d.start));
                irreversible(&mut hits, line, "`up` without `down`".into());
            }
            Some(down) if src.code[down.body.clone()].trim().is_empty() => {
                let line = src.line_of(down.start);
                irreversible(&mut hits, line, "`down` does nothing".into());
            }
            Some(_) => {}
        }
    }

    let outside_transaction = src.calls(0..src.code.len(), &["disable_ddl_transaction!"]);
    for c in &outside_transaction {
        hits.push(Hit {
            rule: NO_TRANSACTION,
            severity: Risky,
            line: src.line_of(c.start),
            reason: "`disable_ddl_transaction!`: runs outside a transaction, so a failure or a timeout halfway leaves it half applied; rolling back means restoring the backup".into(),
        });
    }
    let transactional = outside_transaction.is_empty();

    let order = |h: &Hit| {
        RULES
            .iter()
            .position(|r| r.name == h.rule)
            .unwrap_or(RULES.len())
    };
    hits.sort_by_key(|h| (h.line, order(h)));
    hits.dedup_by(|a, b| a.line == b.line && a.rule == b.rule);
    let would_drop = would_drop(&src, style, &forward, &back, &blocks);
    Analysis {
        style,
        hits,
        reversible,
        transactional,
        would_drop,
    }
}

/// What one call does, for the rules.
enum Op {
    /// The migration method itself.
    Method,
    /// One statement of the SQL it executes.
    Sql(sql::SqlFact),
}

fn operations(src: &Source, call: &Call, in_table_block: bool, region_start: usize) -> Vec<Op> {
    if !EXECUTE.contains(&call.method.as_str()) {
        let plain = call.receiver.is_empty() || call.receiver == "connection";
        return if plain || in_table_block {
            vec![Op::Method]
        } else {
            Vec::new()
        };
    }
    let mut sql = src.string_args(call);
    if sql.is_empty() {
        // `execute sql` after `sql = <<~SQL ... SQL`.
        let name = src.code[call.args.clone()].trim();
        sql = src.assigned_strings(name, region_start..call.start);
    }
    sql.iter()
        .flat_map(|s| sql::analyze(s))
        .map(Op::Sql)
        .collect()
}

fn fires(trigger: &Trigger, op: &Op, call: &Call, args: &[Arg], in_table_block: bool) -> bool {
    match (trigger, op) {
        (C(method, cond), Op::Method) => {
            !in_table_block && call.method == *method && holds(cond, args)
        }
        (T(method, cond), Op::Method) => {
            in_table_block && call.method == *method && holds(cond, args)
        }
        (Sql(action), Op::Sql(fact)) => fact.action == *action,
        _ => false,
    }
}

fn holds(cond: &Cond, args: &[Arg]) -> bool {
    match cond {
        Any => true,
        ArgIs(index, value) => positional(args).get(*index).is_some_and(|v| v == value),
    }
}

fn positional(args: &[Arg]) -> Vec<&str> {
    args.iter()
        .filter_map(|a| match a {
            Arg::Positional(v) => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

fn keyword<'a>(args: &'a [Arg], key: &str) -> Option<&'a str> {
    args.iter().find_map(|a| match a {
        Arg::Keyword(k, v) if k == key => Some(v.as_str()),
        _ => None,
    })
}

fn has_options(args: &[Arg]) -> bool {
    args.iter()
        .any(|a| matches!(a, Arg::Keyword(..) | Arg::Splat))
}

/// Methods only read for reversibility (they are not risky going forward).
const CHANGE_IRREVERSIBLE_ONLY: &[&str] = &[
    "change_column_default",
    "remove_foreign_key",
    "remove_check_constraint",
    "change_default",
];

/// Why Rails' `change` cannot invert this call (its CommandRecorder raises
/// IrreversibleMigration on `db:rollback`), or None when it can.
fn change_cannot_reverse(call: &Call, args: &[Arg], in_table_block: bool) -> Option<&'static str> {
    let pos = positional(args);
    let method = call.method.as_str();
    if EXECUTE.contains(&method) {
        return Some(
            "raw SQL has no inverse; put it in `reversible` with a `dir.down`, or write `up` and `down`",
        );
    }
    if !(in_table_block || call.receiver.is_empty() || call.receiver == "connection") {
        return None;
    }
    match (in_table_block, method) {
        (false, "change_column") | (true, "change") => Some("the previous type is not known"),
        (false, "remove_column") if pos.len() < 3 && !has_options(args) => {
            Some("no column type is given")
        }
        (false, "remove_columns") | (true, "remove") if keyword(args, "type").is_none() => {
            Some("no `type:` is given")
        }
        (false, "drop_table") if !call.has_block && !has_options(args) => {
            Some("no block or options describe the table")
        }
        (false, "remove_index") if pos.len() < 2 && keyword(args, "column").is_none() => {
            Some("no column is given")
        }
        (true, "remove_index") if pos.is_empty() && keyword(args, "column").is_none() => {
            Some("no column is given")
        }
        (false, "change_column_default") | (true, "change_default")
            if keyword(args, "from").is_none() || keyword(args, "to").is_none() =>
        {
            Some("no `from:` and `to:` are given")
        }
        (false, "remove_foreign_key") if pos.len() < 2 && keyword(args, "to_table").is_none() => {
            Some("no target table is given")
        }
        (false, "remove_check_constraint") if pos.len() < 2 => Some("no expression is given"),
        _ => None,
    }
}

/// The `change_table` block a `t.method` call belongs to (its receiver is the block's parameter).
fn change_table_of<'a>(blocks: &'a [Block], call: &Call) -> Option<&'a Block> {
    if call.receiver.is_empty() {
        return None;
    }
    blocks
        .iter()
        .rev()
        .filter(|b| b.body.contains(&call.start) && owner_method(b) == "change_table")
        .find(|b| b.params.first().is_some_and(|p| *p == call.receiver))
}

/// The method a block is attached to: `change_table` for `change_table :users, bulk: true`,
/// `down` for `dir.down`.
fn owner_method(b: &Block) -> &str {
    let head = b
        .owner
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    head.rsplit('.').next().unwrap_or(head)
}

/// A `dir.up`/`dir.down` block inside `reversible do |dir|`.
fn is_reversible_side(blocks: &[Block], b: &Block, side: &str) -> bool {
    let Some((receiver, method)) = b.owner.split_once('.') else {
        return false;
    };
    method.trim() == side
        && blocks.iter().any(|r| {
            owner_method(r) == "reversible"
                && within(&b.body, &r.body)
                && r.params.first().is_some_and(|p| p == receiver.trim())
        })
}

fn inside_reversible_or_up_only(blocks: &[Block], call: &Call) -> bool {
    blocks.iter().any(|b| {
        b.body.contains(&call.start) && matches!(owner_method(b), "reversible" | "up_only")
    })
}

fn within(inner: &Range<usize>, outer: &Range<usize>) -> bool {
    inner.start >= outer.start && inner.end <= outer.end
}

/// `range` without the `holes` (sorted, inside it).
fn subtract(range: Range<usize>, holes: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut from = range.start;
    for h in holes {
        if h.start > from {
            out.push(from..h.start);
        }
        from = from.max(h.end);
    }
    if from < range.end {
        out.push(from..range.end);
    }
    out
}

/// What undoing the migration drops, in the order the undo runs.
fn would_drop(
    src: &Source,
    style: Style,
    forward: &[Range<usize>],
    back: &[Range<usize>],
    blocks: &[Block],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let name = |args: &[Arg], i: usize| {
        positional(args)
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into())
    };
    match style {
        Style::Change => {
            // Rails inverts `change` bottom-up: creations become drops.
            let creators = [
                "create_table",
                "create_join_table",
                "add_column",
                "add_reference",
                "add_belongs_to",
                "add_timestamps",
            ];
            let mut calls: Vec<(Call, Vec<Arg>)> = Vec::new();
            for range in forward {
                for call in src.calls(range.clone(), &creators) {
                    if !inside_reversible_or_up_only(blocks, &call) && call.receiver.is_empty() {
                        let args = src.args(&call);
                        calls.push((call, args));
                    }
                }
            }
            for (call, args) in calls.iter().rev() {
                out.extend(match call.method.as_str() {
                    "create_table" => vec![format!("table {}", name(args, 0))],
                    "create_join_table" => {
                        let mut tables = [name(args, 0), name(args, 1)];
                        tables.sort();
                        vec![format!(
                            "table {}",
                            keyword(args, "table_name")
                                .map(str::to_string)
                                .unwrap_or_else(|| tables.join("_"))
                        )]
                    }
                    "add_column" => vec![format!("column {}.{}", name(args, 0), name(args, 1))],
                    "add_reference" | "add_belongs_to" => {
                        vec![format!("column {}.{}_id", name(args, 0), name(args, 1))]
                    }
                    "add_timestamps" => vec![format!(
                        "columns {0}.created_at, {0}.updated_at",
                        name(args, 0)
                    )],
                    _ => vec![],
                });
            }
        }
        Style::UpDown => {
            for range in back {
                for call in src.calls(
                    range.clone(),
                    &[
                        "drop_table",
                        "remove_column",
                        "remove_reference",
                        "remove_belongs_to",
                        "remove_timestamps",
                    ],
                ) {
                    let args = src.args(&call);
                    out.push(match call.method.as_str() {
                        "drop_table" => format!("table {}", name(&args, 0)),
                        "remove_column" => format!("column {}.{}", name(&args, 0), name(&args, 1)),
                        "remove_timestamps" => {
                            format!("columns {0}.created_at, {0}.updated_at", name(&args, 0))
                        }
                        _ => format!("column {}.{}_id", name(&args, 0), name(&args, 1)),
                    });
                }
            }
        }
        Style::None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration class around a `change` body.
    fn change(body: &str) -> String {
        format!("class M < ActiveRecord::Migration[6.1]\n  def change\n{body}\n  end\nend\n")
    }

    /// Line of the first line of the body in `change`.
    const BODY: u32 = 3;

    fn hits(content: &str) -> Vec<(&'static str, u32)> {
        analyze(content)
            .hits
            .into_iter()
            .map(|h| (h.rule, h.line))
            .collect()
    }

    /// Rules other than `irreversible`, which some destructive calls also trigger in `change`.
    fn risks(content: &str) -> Vec<(&'static str, u32)> {
        hits(content)
            .into_iter()
            .filter(|(r, _)| *r != IRREVERSIBLE)
            .collect()
    }

    #[test]
    fn every_method_rule_fires_on_its_call() {
        let cases = [
            (
                "    drop_table :legacy_events, if_exists: true",
                "drop-table",
            ),
            ("    drop_join_table :users, :groups", "drop-table"),
            (
                "    remove_column :users, :nickname, :string",
                "remove-column",
            ),
            (
                "    remove_columns :users, :a, :b, type: :string",
                "remove-column",
            ),
            (
                "    remove_reference :notes, :user, foreign_key: true, index: true",
                "remove-reference",
            ),
            ("    remove_belongs_to :notes, :user", "remove-reference"),
            (
                "    remove_timestamps :users, null: false",
                "remove-timestamps",
            ),
            ("    remove_index :users, :email", "remove-index"),
            ("    rename_table :notes, :memos", "rename-table"),
            (
                "    rename_column :users, :name, :full_name",
                "rename-column",
            ),
            ("    change_column :users, :age, :bigint", "change-column"),
            (
                "    change_column_null :users, :email, false",
                "set-not-null",
            ),
            (
                "    change_column_null(:users, :email, false, \"unknown@example.org\")",
                "set-not-null",
            ),
        ];
        for (body, rule) in cases {
            assert_eq!(risks(&change(body)), vec![(rule, BODY)], "{body}");
        }
    }

    #[test]
    fn change_table_operations_are_read_through_its_parameter() {
        let body = "    change_table :users, bulk: true do |t|\n      t.remove :nickname, type: :string\n      t.remove_references :team\n      t.remove_timestamps\n      t.rename :name, :full_name\n      t.change :age, :bigint\n      t.remove_index :email\n      t.string :kept\n    end";
        assert_eq!(
            risks(&change(body)),
            vec![
                ("remove-column", 4),
                ("remove-reference", 5),
                ("remove-timestamps", 6),
                ("rename-column", 7),
                ("change-column", 8),
                ("remove-index", 9)
            ]
        );
        // Outside change_table, `t.remove` is some other object's method.
        assert!(hits(&change("    t.remove :x\n    list.remove(1)")).is_empty());
    }

    #[test]
    fn every_sql_rule_fires_on_executed_sql() {
        let cases = [
            ("    execute \"DROP TABLE legacy_notes\"", "execute-drop"),
            (
                "    execute(\"ALTER TABLE users DROP COLUMN nickname\")",
                "execute-drop",
            ),
            ("    execute 'TRUNCATE audit_log'", "execute-truncate"),
            (
                "    execute <<~SQL\n      DELETE FROM sessions\n    SQL",
                "execute-delete-all",
            ),
            (
                "    ActiveRecord::Base.connection.execute(%q(DELETE FROM sessions))",
                "execute-delete-all",
            ),
            (
                "    execute \"UPDATE users SET active = true\"",
                "execute-update-all",
            ),
            (
                "    execute \"DROP INDEX index_users_on_email\"",
                "remove-index",
            ),
        ];
        for (body, rule) in cases {
            assert_eq!(risks(&change(body)), vec![(rule, BODY)], "{body}");
        }
    }

    #[test]
    fn sql_held_in_a_variable_is_read() {
        let text = "class M < ActiveRecord::Migration[6.1]\n  def up\n    sql = <<~SQL\n      TRUNCATE audit_log\n    SQL\n    execute sql\n  end\n\n  def down\n  end\nend\n";
        assert_eq!(hits(text), vec![("execute-truncate", 6), (IRREVERSIBLE, 9)]);
    }

    #[test]
    fn irreversible_migrations() {
        let raise = "class M < ActiveRecord::Migration[6.1]\n  def up\n    add_column :users, :x, :string\n  end\n\n  def down\n    raise ActiveRecord::IrreversibleMigration, \"no\"\n  end\nend\n";
        assert_eq!(hits(raise), vec![(IRREVERSIBLE, 7)]);
        assert!(!analyze(raise).reversible);

        let up_only = "class M < ActiveRecord::Migration[6.1]\n  def up\n    execute \"UPDATE users SET x = 1 WHERE x IS NULL\"\n  end\nend\n";
        assert_eq!(hits(up_only), vec![(IRREVERSIBLE, 2)]);
        let reason = &analyze(up_only).hits[0].reason;
        assert!(reason.contains("`up` without `down`"), "{reason}");

        let in_change = change(
            "    reversible do |dir|\n      dir.up { execute \"SELECT 1\" }\n      dir.down { raise ActiveRecord::IrreversibleMigration }\n    end",
        );
        assert_eq!(hits(&in_change), vec![(IRREVERSIBLE, 5)]);
    }

    #[test]
    fn change_reverses_only_what_rails_can_invert() {
        let reversible = [
            "    create_table :notes do |t|\n      t.string :body\n    end",
            "    add_column :users, :nickname, :string\n    add_index :users, :nickname",
            "    remove_column :users, :nickname, :string",
            "    drop_table :legacy do |t|\n      t.string :name\n    end",
            "    change_column_null :users, :email, false",
            "    change_column_default :users, :role, from: nil, to: \"member\"",
            "    rename_column :users, :name, :full_name",
            "    remove_index :users, column: :email",
            "    reversible do |dir|\n      dir.up { execute \"UPDATE users SET role = 'member'\" }\n      dir.down { execute \"UPDATE users SET role = NULL\" }\n    end",
            "    up_only { execute \"UPDATE users SET role = 'member'\" }",
        ];
        for body in reversible {
            let a = analyze(&change(body));
            assert!(a.reversible, "{body}: {:?}", a.hits);
        }
        let irreversible = [
            ("    execute \"SELECT pg_sleep(1)\"", "raw SQL"),
            ("    change_column :users, :age, :bigint", "previous type"),
            ("    remove_column :users, :nickname", "no column type"),
            ("    drop_table :legacy", "no block or options"),
            (
                "    remove_index :users, name: \"index_users_on_email\"",
                "no column",
            ),
            (
                "    change_column_default :users, :role, \"member\"",
                "`from:` and `to:`",
            ),
        ];
        for (body, why) in irreversible {
            let a = analyze(&change(body));
            assert!(!a.reversible, "{body}");
            let reason = &a
                .hits
                .iter()
                .find(|h| h.rule == IRREVERSIBLE)
                .unwrap()
                .reason;
            assert!(reason.contains(why), "{body}: {reason}");
        }
    }

    #[test]
    fn drops_in_down_or_in_a_reversible_down_are_the_way_back() {
        let up_down = "class M < ActiveRecord::Migration[6.1]\n  def up\n    add_column :users, :nickname, :string\n  end\n\n  def down\n    remove_column :users, :nickname\n    drop_table :notes\n  end\nend\n";
        let a = analyze(up_down);
        assert!(a.hits.is_empty(), "{:?}", a.hits);
        assert!(a.reversible);
        assert_eq!(a.would_drop, ["column users.nickname", "table notes"]);
        let reversible = change(
            "    reversible do |dir|\n      dir.up { add_column :users, :x, :string }\n      dir.down { remove_column :users, :x }\n    end",
        );
        assert!(hits(&reversible).is_empty());
    }

    #[test]
    fn comments_strings_and_heredocs_are_not_calls() {
        let body = "    # remove_column :users, :nickname\n    say \"remove_column :users, :nickname\"\n    note = 'drop_table :users'\n    description = <<~TEXT\n      remove_column :users, :email\n      DELETE FROM users\n    TEXT\n=begin\n    drop_table :users\n=end\n    add_column :users, :bio, :text";
        let a = analyze(&change(body));
        assert!(a.hits.is_empty(), "{:?}", a.hits);
        assert!(a.reversible);
    }

    #[test]
    fn safe_operations_are_not_flagged() {
        for body in [
            "    add_column :users, :nickname, :string",
            "    add_column :users, :remove_column, :string",
            "    create_table :notes do |t|\n      t.references :user, foreign_key: true\n      t.string :body, null: false\n      t.timestamps\n    end",
            "    add_index :users, :email, unique: true",
            "    add_reference :notes, :user, index: true",
            "    change_column_null :users, :email, true",
            "    change_column_default :users, :role, from: nil, to: \"member\"",
            "    up_only { execute \"DELETE FROM sessions WHERE expires_at < now()\" }",
            "    up_only { execute \"INSERT INTO audit (action) VALUES ('DROP TABLE x')\" }",
        ] {
            assert!(
                hits(&change(body)).is_empty(),
                "{body}: {:?}",
                hits(&change(body))
            );
        }
    }

    #[test]
    fn no_transaction_is_noted() {
        let text = "class M < ActiveRecord::Migration[6.1]\n  disable_ddl_transaction!\n\n  def change\n    add_index :users, :email, algorithm: :concurrently\n  end\nend\n";
        let a = analyze(text);
        assert_eq!(hits(text), vec![(NO_TRANSACTION, 2)]);
        assert!(!a.transactional && a.reversible);
    }

    #[test]
    fn reason_quotes_the_call_and_severity_is_set() {
        let a = analyze(&change(
            "    remove_column :users,\n                  :nickname, :string",
        ));
        assert_eq!(
            a.hits[0].reason,
            "drops a column and its data (`remove_column :users, :nickname, :string`)"
        );
        assert_eq!(a.hits[0].severity, Severity::Destructive);
    }

    #[test]
    fn change_would_drop_what_it_created_newest_first() {
        let a = analyze(&change(
            "    create_table :notes do |t|\n      t.string :body\n    end\n    add_column :users, :nickname, :string\n    add_reference :notes, :user\n    create_join_table :users, :groups\n    add_timestamps :tags",
        ));
        assert_eq!(
            a.would_drop,
            [
                "columns tags.created_at, tags.updated_at",
                "table groups_users",
                "column notes.user_id",
                "column users.nickname",
                "table notes"
            ]
        );
    }

    #[test]
    fn files_without_change_or_up_are_not_migrations() {
        let a = analyze("module Helpers\n  def self.cleanup\n    drop_table :x\n  end\nend\n");
        assert_eq!(a.style, Style::None);
        assert!(a.hits.is_empty());
    }

    #[test]
    fn the_example_apps_migrations() {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/rails-app/revisions"
        );
        let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).unwrap();
        let v1 = analyze(&read("v1/db/migrate/20250106090000_create_users.rb"));
        assert!(v1.hits.is_empty() && v1.reversible);
        let v2 = analyze(&read(
            "v2/db/migrate/20250113103000_add_nickname_to_users.rb",
        ));
        assert!(v2.hits.is_empty() && v2.reversible);
        assert_eq!(v2.would_drop, ["column users.nickname"]);
        let v3 = read("v3/db/migrate/20250120140500_remove_nickname_from_users.rb");
        assert_eq!(hits(&v3), vec![("remove-column", 5)]);
        let v4 = analyze(&read("v4/db/migrate/20250122164000_backfill_nicknames.rb"));
        assert_eq!(
            v4.hits.iter().map(|h| (h.rule, h.line)).collect::<Vec<_>>(),
            vec![(IRREVERSIBLE, 7)]
        );
        assert!(!v4.reversible);
    }
}
