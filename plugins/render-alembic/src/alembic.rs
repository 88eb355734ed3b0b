//! Alembic knowledge: reading `alembic current` output and migration scripts, and the revision
//! graph they form (heads, ancestors, what is pending between the database and a target).
//!
//! The graph is followed through `down_revision`, never through file names or revision ids:
//! real chains are not in name order (`20260205 -> 20260222 -> 20260206`).

use crate::python::Source;
use crate::rules::{self, Reversibility};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Revisions printed by `alembic current` (or `alembic heads`): lines like `0002 (head)`,
/// `ae1027a6acf (mybranch) (effective head)` or a bare `0002`. Log lines (`INFO  [alembic...]`)
/// and headers are skipped. Empty when the database has no revision yet.
pub fn parse_current(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (id, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            let id_ok = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let tags_ok = rest.is_empty() || (rest.starts_with('(') && rest.ends_with(')'));
            (id_ok && tags_ok).then(|| id.to_string())
        })
        .collect()
}

/// One migration script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Path relative to the project root.
    pub path: String,
    pub revision: String,
    /// Parents: none for the first migration, two or more for a merge.
    pub down_revisions: Vec<String>,
    /// First line of the docstring (Alembic puts the `-m` message there).
    pub message: String,
    pub reversible: bool,
    pub content: String,
}

/// Parse a migration script; `None` when the file has no `revision` (not a migration: `env.py`,
/// `__init__.py`, a helper module).
pub fn parse_script(path: &str, content: &str) -> Option<Script> {
    let src = Source::new(content);
    let docstring = module_docstring(&src);
    let revision = assignment(&src, "revision")
        .and_then(|v| v.into_iter().next())
        .or_else(|| {
            docstring_field(docstring.as_deref()?, "Revision ID:").filter(|v| !v.is_empty())
        })?;
    let down_revisions = match assignment(&src, "down_revision") {
        Some(values) => values,
        None => docstring
            .as_deref()
            .and_then(|d| docstring_field(d, "Revises:"))
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let message = docstring
        .as_deref()
        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("")
        .to_string();
    Some(Script {
        path: path.to_string(),
        revision,
        down_revisions,
        message,
        reversible: rules::reversibility(&src) == Reversibility::Reversible,
        content: content.to_string(),
    })
}

/// The module docstring: the first statement, when it is a string literal.
fn module_docstring(src: &Source) -> Option<String> {
    let first_code = src
        .code
        .find(|c: char| !c.is_whitespace())
        .unwrap_or(src.code.len());
    src.strings
        .first()
        .filter(|s| s.span.start <= first_code)
        .map(|s| s.value.clone())
}

fn docstring_field(doc: &str, key: &str) -> Option<String> {
    doc.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().to_string())
}

/// The string values of a top-level `name = ...` / `name: T = ...` assignment: one string, a
/// tuple of them (a merge), or none for `None`. `None` when there is no such assignment.
fn assignment(src: &Source, name: &str) -> Option<Vec<String>> {
    let code = src.code.as_str();
    let mut line_start = 0;
    for line in code.split_inclusive('\n') {
        let start = line_start;
        line_start += line.len();
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest_trimmed = rest.trim_start();
        let value_at = if rest_trimmed.starts_with('=') && !rest_trimmed.starts_with("==") {
            start + name.len() + (rest.len() - rest_trimmed.len()) + 1
        } else if rest_trimmed.starts_with(':') {
            // An annotation: `revision: str = "0001"`. The `=` follows it on the same line.
            let eq = rest.find('=')?;
            start + name.len() + eq + 1
        } else {
            continue;
        };
        // Up to the end of the statement: a tuple may span lines.
        let end = statement_end(src, value_at);
        return Some(
            src.strings_in(value_at..end)
                .map(|s| s.value.clone())
                .collect(),
        );
    }
    None
}

fn statement_end(src: &Source, from: usize) -> usize {
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

/// Why a set of scripts does not make a usable graph, or why the database cannot get to the
/// target by upgrading.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphError {
    DuplicateRevision {
        revision: String,
        files: [String; 2],
    },
    MissingParent {
        revision: String,
        parent: String,
    },
    MultipleHeads(Vec<String>),
    /// The database is at a revision the target's migrations do not know.
    UnknownDbRevision {
        db: String,
    },
    /// The database is ahead of (or beside) the target head: deploying it would need downgrades.
    DbNotBehind {
        db: String,
        head: Option<String>,
    },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::DuplicateRevision { revision, files } => {
                write!(
                    f,
                    "revision {revision} is defined twice: {} and {}",
                    files[0], files[1]
                )
            }
            GraphError::MissingParent { revision, parent } => {
                write!(
                    f,
                    "revision {revision} revises {parent}, which no migration file defines"
                )
            }
            GraphError::MultipleHeads(heads) => {
                write!(
                    f,
                    "the target's migrations have {} heads ({}); `alembic upgrade head` would refuse",
                    heads.len(),
                    heads.join(", ")
                )
            }
            GraphError::UnknownDbRevision { db } => {
                write!(
                    f,
                    "the database is at revision {db}, which the target's migrations do not contain (it was made by newer or other code)"
                )
            }
            GraphError::DbNotBehind { db, head } => write!(
                f,
                "the database is at revision {db}, ahead of the target's head {}: this deploys older code over a newer schema",
                head.as_deref().unwrap_or("(no migrations)")
            ),
        }
    }
}

impl GraphError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            GraphError::DuplicateRevision { .. } | GraphError::MissingParent { .. } => {
                "fix the migration files; `alembic history` shows the same problem"
            }
            GraphError::MultipleHeads(_) => {
                "merge them (`alembic merge heads -m merge`) and deploy the merge commit"
            }
            GraphError::UnknownDbRevision { .. } | GraphError::DbNotBehind { .. } => {
                "going back to older code means downgrading the schema first: use `host rollback`, which downgrades with the newer code still in place"
            }
        }
    }
}

/// Sharpen an [`GraphError::UnknownDbRevision`] with the migrations of the code in place: when
/// they know the database revision and it descends from the target's head, the target is
/// simply older code.
pub fn explain_unknown(err: GraphError, target_head: Option<&str>, current: &Graph) -> GraphError {
    match err {
        GraphError::UnknownDbRevision { db } if current.get(&db).is_some() => {
            let above = target_head.is_none_or(|h| current.ancestors(&db).contains(h));
            if above {
                GraphError::DbNotBehind {
                    db,
                    head: target_head.map(str::to_string),
                }
            } else {
                GraphError::UnknownDbRevision { db }
            }
        }
        other => other,
    }
}

/// The revision graph of one set of migration scripts.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    scripts: BTreeMap<String, Script>,
}

impl Graph {
    pub fn new(scripts: Vec<Script>) -> Result<Graph, GraphError> {
        let mut map: BTreeMap<String, Script> = BTreeMap::new();
        for script in scripts {
            if let Some(other) = map.get(&script.revision) {
                return Err(GraphError::DuplicateRevision {
                    revision: script.revision.clone(),
                    files: [other.path.clone(), script.path.clone()],
                });
            }
            map.insert(script.revision.clone(), script);
        }
        for script in map.values() {
            if let Some(parent) = script.down_revisions.iter().find(|p| !map.contains_key(*p)) {
                return Err(GraphError::MissingParent {
                    revision: script.revision.clone(),
                    parent: parent.clone(),
                });
            }
        }
        Ok(Graph { scripts: map })
    }

    pub fn get(&self, revision: &str) -> Option<&Script> {
        self.scripts.get(revision)
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    /// Revisions no other revision revises.
    pub fn heads(&self) -> Vec<String> {
        let parents: BTreeSet<&String> = self
            .scripts
            .values()
            .flat_map(|s| &s.down_revisions)
            .collect();
        self.scripts
            .keys()
            .filter(|r| !parents.contains(r))
            .cloned()
            .collect()
    }

    /// The single head (`None` when there are no migrations at all).
    pub fn head(&self) -> Result<Option<String>, GraphError> {
        let mut heads = self.heads();
        match heads.len() {
            0 => Ok(None),
            1 => Ok(heads.pop()),
            _ => Err(GraphError::MultipleHeads(heads)),
        }
    }

    /// `revision` and everything it descends from.
    pub fn ancestors(&self, revision: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![revision.to_string()];
        while let Some(r) = stack.pop() {
            if let Some(s) = self.scripts.get(&r)
                && seen.insert(r)
            {
                stack.extend(s.down_revisions.iter().cloned());
            }
        }
        seen
    }

    /// What `alembic upgrade head` applies to a database at `db` (none = empty), oldest first.
    pub fn pending(&self, db: Option<&str>) -> Result<Vec<String>, GraphError> {
        let head = self.head()?;
        let Some(head) = head else {
            return match db {
                Some(db) => Err(GraphError::UnknownDbRevision { db: db.to_string() }),
                None => Ok(Vec::new()),
            };
        };
        let below = match db {
            None => BTreeSet::new(),
            Some(db) if !self.scripts.contains_key(db) => {
                return Err(GraphError::UnknownDbRevision { db: db.to_string() });
            }
            Some(db) => {
                let below = self.ancestors(db);
                if !self.ancestors(&head).contains(db) {
                    return Err(GraphError::DbNotBehind {
                        db: db.to_string(),
                        head: Some(head),
                    });
                }
                below
            }
        };
        Ok(self
            .apply_order(&head)
            .into_iter()
            .filter(|r| !below.contains(r))
            .collect())
    }

    /// Every ancestor of `head` in an order Alembic could apply them: parents before children.
    fn apply_order(&self, head: &str) -> Vec<String> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        // Depth-first post-order without recursion (long chains), parents visited in file order.
        let mut stack = vec![(head.to_string(), false)];
        while let Some((r, expanded)) = stack.pop() {
            if done.contains(&r) {
                continue;
            }
            if expanded {
                done.insert(r.clone());
                order.push(r);
                continue;
            }
            let Some(script) = self.scripts.get(&r) else {
                continue;
            };
            stack.push((r, true));
            for parent in script.down_revisions.iter().rev() {
                if !done.contains(parent) {
                    stack.push((parent.clone(), false));
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0001: &str = r#""""create users

Revision ID: 0001
Revises:
Create Date: 2025-01-06 09:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )


def downgrade() -> None:
    op.drop_table("users")
"#;

    fn script(rev: &str, down: &[&str]) -> Script {
        Script {
            path: format!("migrations/versions/{rev}.py"),
            revision: rev.into(),
            down_revisions: down.iter().map(|s| s.to_string()).collect(),
            message: String::new(),
            reversible: true,
            content: String::new(),
        }
    }

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        Graph::new(edges.iter().map(|(r, d)| script(r, d)).collect()).unwrap()
    }

    #[test]
    fn current_output_with_logs_tags_and_nothing() {
        let out = "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\nINFO  [alembic.runtime.migration] Will assume transactional DDL.\n0002 (head)\n";
        assert_eq!(parse_current(out), vec!["0002"]);
        assert_eq!(parse_current("0002\n"), vec!["0002"]);
        assert_eq!(
            parse_current("ae1027a6acf (mybranch) (effective head)\n"),
            vec!["ae1027a6acf"]
        );
        assert_eq!(
            parse_current("0003a (head)\n0003b (head)\n"),
            vec!["0003a", "0003b"]
        );
        assert!(parse_current("").is_empty());
        assert!(
            parse_current("INFO  [alembic.runtime.migration] Context impl SQLiteImpl.\n")
                .is_empty()
        );
        assert!(parse_current("Current revision(s) for postgresql://u:***@db/app:\n").is_empty());
    }

    #[test]
    fn script_fields_from_a_real_generated_file() {
        let s = parse_script("migrations/versions/0001_create_users.py", V0001).unwrap();
        assert_eq!(s.revision, "0001");
        assert!(s.down_revisions.is_empty());
        assert_eq!(s.message, "create users");
        assert!(s.reversible);
    }

    #[test]
    fn script_old_style_merge_and_irreversible() {
        let text = "\"\"\"merge heads\"\"\"\nrevision = 'ae10'\ndown_revision = (\n    '0003a',\n    '0003b',\n)\n\ndef upgrade():\n    op.execute('UPDATE t SET a = 1')\n\ndef downgrade():\n    pass\n";
        let s = parse_script("m.py", text).unwrap();
        assert_eq!(s.revision, "ae10");
        assert_eq!(s.down_revisions, vec!["0003a", "0003b"]);
        assert_eq!(s.message, "merge heads");
        assert!(!s.reversible);
    }

    #[test]
    fn revision_from_docstring_when_not_assigned() {
        let text =
            "\"\"\"x\n\nRevision ID: 0009\nRevises: 0008\n\"\"\"\ndef upgrade():\n    pass\n";
        let s = parse_script("m.py", text).unwrap();
        assert_eq!(
            (s.revision.as_str(), s.down_revisions.clone()),
            ("0009", vec!["0008".to_string()])
        );
    }

    #[test]
    fn non_migrations_are_skipped() {
        assert!(
            parse_script(
                "migrations/env.py",
                "from alembic import context\nconfig = context.config\n"
            )
            .is_none()
        );
        // `revision` inside a docstring or comment is not an assignment.
        assert!(
            parse_script("x.py", "\"\"\"\nrevision = '1'\n\"\"\"\n# revision = '2'\n").is_none()
        );
    }

    #[test]
    fn pending_on_a_linear_chain() {
        let g = graph(&[("0001", &[]), ("0002", &["0001"]), ("0003", &["0002"])]);
        assert_eq!(g.head().unwrap().as_deref(), Some("0003"));
        assert_eq!(g.pending(Some("0001")).unwrap(), vec!["0002", "0003"]);
        assert_eq!(g.pending(None).unwrap(), vec!["0001", "0002", "0003"]);
        assert!(g.pending(Some("0003")).unwrap().is_empty());
    }

    #[test]
    fn chain_out_of_name_order_follows_down_revision() {
        let g = graph(&[
            ("20260205", &[]),
            ("20260222", &["20260205"]),
            ("20260206", &["20260222"]),
        ]);
        assert_eq!(
            g.pending(Some("20260205")).unwrap(),
            vec!["20260222", "20260206"]
        );
    }

    #[test]
    fn branch_from_v2_is_two_heads() {
        let g = graph(&[
            ("0001", &[]),
            ("0002", &["0001"]),
            ("0003", &["0002"]),
            ("0003b", &["0002"]),
        ]);
        assert_eq!(
            g.head(),
            Err(GraphError::MultipleHeads(vec![
                "0003".into(),
                "0003b".into()
            ]))
        );
        assert!(matches!(
            g.pending(Some("0002")),
            Err(GraphError::MultipleHeads(_))
        ));
    }

    #[test]
    fn branch_from_v2_merged_applies_the_other_side() {
        let g = graph(&[
            ("0001", &[]),
            ("0002", &["0001"]),
            ("0003", &["0002"]),
            ("0003b", &["0002"]),
            ("0004", &["0003", "0003b"]),
        ]);
        assert_eq!(g.pending(Some("0003")).unwrap(), vec!["0003b", "0004"]);
        assert_eq!(
            g.pending(Some("0002")).unwrap(),
            vec!["0003", "0003b", "0004"]
        );
    }

    #[test]
    fn unknown_database_revision_needs_a_rollback() {
        let target = graph(&[("0001", &[]), ("0002", &["0001"])]);
        let err = target.pending(Some("0003b")).unwrap_err();
        assert_eq!(err, GraphError::UnknownDbRevision { db: "0003b".into() });
        assert!(err.hint().contains("host rollback"));
        // The code in place does not know it either: it stays "unknown".
        let current = graph(&[("0001", &[]), ("0002", &["0001"]), ("0003", &["0002"])]);
        assert_eq!(
            explain_unknown(err, Some("0002"), &current),
            GraphError::UnknownDbRevision { db: "0003b".into() }
        );
    }

    #[test]
    fn database_ahead_of_the_target_is_older_code() {
        let target = graph(&[("0001", &[]), ("0002", &["0001"])]);
        let current = graph(&[("0001", &[]), ("0002", &["0001"]), ("0003", &["0002"])]);
        let err = target.pending(Some("0003")).unwrap_err();
        let explained = explain_unknown(err, Some("0002"), &current);
        assert_eq!(
            explained,
            GraphError::DbNotBehind {
                db: "0003".into(),
                head: Some("0002".into())
            }
        );
        assert!(
            explained
                .to_string()
                .contains("ahead of the target's head 0002")
        );
    }

    #[test]
    fn broken_graphs_are_refused() {
        let dup = Graph::new(vec![script("0001", &[]), script("0001", &[])]).unwrap_err();
        assert!(matches!(dup, GraphError::DuplicateRevision { .. }));
        let missing = Graph::new(vec![script("0002", &["0001"])]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "revision 0002 revises 0001, which no migration file defines"
        );
    }

    #[test]
    fn no_migrations_at_all() {
        let g = Graph::new(Vec::new()).unwrap();
        assert_eq!(g.head().unwrap(), None);
        assert!(g.pending(None).unwrap().is_empty());
        assert!(matches!(
            g.pending(Some("0001")),
            Err(GraphError::UnknownDbRevision { .. })
        ));
    }
}
