//! What a piece of SQL executed by a migration does, statement by statement.
//!
//! Migrations written as raw SQL (`op.execute("ALTER TABLE ...")`) carry the same risks as the
//! `op.*` helpers, so the SQL is tokenized (comments and quoted literals skipped, so a `'DROP
//! TABLE'` string value is not a drop) and each statement classified from its leading keywords.
//! Dollar-quoted bodies (`DO $$ ... $$`) are read as SQL, since a `DO` block really runs them.

/// One thing a statement does that a rule may care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlAction {
    DropTable,
    DropColumn,
    DropSchema,
    Truncate,
    DeleteAll,
    UpdateAll,
    RenameTable,
    RenameColumn,
    TypeChange,
    SetNotNull,
    AddNotNullNoDefault,
    DropIndex,
    DropConstraint,
}

/// An action, the object it applies to (`users`, `users.email`) and the statement, shortened.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFact {
    pub action: SqlAction,
    pub object: String,
    pub statement: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A keyword or identifier: upper-cased for keywords, as written for quoted identifiers.
    Word {
        upper: String,
        text: String,
    },
    Open,
    Close,
    Comma,
    Dot,
    Other,
}

/// A token and its parenthesis depth within the statement.
type Toks = Vec<(Tok, i32)>;

/// Classify every statement of `sql`.
pub fn analyze(sql: &str) -> Vec<SqlFact> {
    let mut facts = Vec::new();
    for (toks, text) in statements(sql) {
        let statement = crate::python::shorten(&text, 100);
        for (action, object) in classify(&toks) {
            facts.push(SqlFact {
                action,
                object,
                statement: statement.clone(),
            });
        }
    }
    facts
}

fn statements(sql: &str) -> Vec<(Toks, String)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut cur: Toks = Vec::new();
    let mut depth = 0;
    let mut stmt_start: Option<usize> = None;
    let mut i = 0;
    let mut flush = |cur: &mut Toks, start: &mut Option<usize>, end: usize| {
        if !cur.is_empty() {
            out.push((
                std::mem::take(cur),
                sql[start.unwrap_or(0)..end].to_string(),
            ));
        }
        *start = None;
    };
    while i < b.len() {
        let c = b[i];
        let tok_start = i;
        let tok = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
                continue;
            }
            b'$' => {
                // `$$` or `$tag$`: the quoted body is SQL too (DO blocks, functions), read on.
                let tag_len = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                if b.get(i + 1 + tag_len) == Some(&b'$')
                    && !b[i + 1..i + 1 + tag_len]
                        .first()
                        .is_some_and(u8::is_ascii_digit)
                {
                    i += tag_len + 2;
                    continue;
                }
                i += 1 + tag_len;
                Tok::Other
            }
            b'\'' => {
                i = skip_quoted(b, i, b'\'');
                Tok::Other
            }
            b'"' => {
                let end = skip_quoted(b, i, b'"');
                let text = sql[i + 1..end.saturating_sub(1).max(i + 1)].replace("\"\"", "\"");
                i = end;
                Tok::Word {
                    upper: text.clone(),
                    text,
                }
            }
            b'(' => {
                i += 1;
                depth += 1;
                Tok::Open
            }
            b')' => {
                i += 1;
                depth -= 1;
                Tok::Close
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'.' => {
                i += 1;
                Tok::Dot
            }
            b';' => {
                i += 1;
                flush(&mut cur, &mut stmt_start, tok_start);
                depth = 0;
                continue;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let len = sql[i..]
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
                    .unwrap_or(sql.len() - i);
                let text = &sql[i..i + len];
                i += len;
                Tok::Word {
                    upper: text.to_ascii_uppercase(),
                    text: text.to_string(),
                }
            }
            _ => {
                i += sql[i..].chars().next().map_or(1, char::len_utf8);
                Tok::Other
            }
        };
        stmt_start.get_or_insert(tok_start);
        let d = if tok == Tok::Open { depth - 1 } else { depth };
        cur.push((tok, d));
    }
    flush(&mut cur, &mut stmt_start, sql.len());
    out
}

/// Index just past the literal opened at `i` (doubled quotes and backslashes stay inside).
fn skip_quoted(b: &[u8], i: usize, q: u8) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
        } else if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

fn word(t: &(Tok, i32)) -> Option<&str> {
    match &t.0 {
        Tok::Word { upper, .. } => Some(upper),
        _ => None,
    }
}

fn is_word(t: Option<&(Tok, i32)>, w: &str) -> bool {
    t.and_then(word) == Some(w)
}

/// Drop the PL/pgSQL control words in front of a statement inside a `DO` block
/// (`DO BEGIN`, `IF ... THEN`, `ELSE`, ...) so the statement itself is classified.
fn strip_control(mut t: &[(Tok, i32)]) -> &[(Tok, i32)] {
    loop {
        match t.first().and_then(word) {
            Some("DO" | "BEGIN" | "END" | "ELSE" | "LOOP" | "EXCEPTION" | "DECLARE") => t = &t[1..],
            Some("IF" | "ELSIF" | "WHEN" | "WHILE" | "FOR") => {
                let stop = t
                    .iter()
                    .position(|x| x.1 == 0 && matches!(word(x), Some("THEN" | "LOOP")));
                match stop {
                    Some(p) => t = &t[p + 1..],
                    None => return &[],
                }
            }
            _ => return t,
        }
    }
}

/// A possibly qualified, possibly quoted name at the start of `t`, and how many tokens it used.
fn name(t: &[(Tok, i32)]) -> Option<(String, usize)> {
    let mut parts = Vec::new();
    let mut n = 0;
    while let Some((Tok::Word { text, .. }, _)) = t.get(n) {
        parts.push(text.clone());
        n += 1;
        if matches!(t.get(n), Some((Tok::Dot, _))) {
            n += 1;
        } else {
            break;
        }
    }
    (!parts.is_empty()).then(|| (parts.join("."), n))
}

/// Skip the given optional keywords, in order, where present.
fn skip<'t>(mut t: &'t [(Tok, i32)], words: &[&str]) -> &'t [(Tok, i32)] {
    for w in words {
        if is_word(t.first(), w) {
            t = &t[1..];
        }
    }
    t
}

fn skip_if_exists(t: &[(Tok, i32)]) -> &[(Tok, i32)] {
    if is_word(t.first(), "IF") && is_word(t.get(1), "EXISTS") {
        &t[2..]
    } else if is_word(t.first(), "IF") && is_word(t.get(1), "NOT") && is_word(t.get(2), "EXISTS") {
        &t[3..]
    } else {
        t
    }
}

/// Names separated by commas at depth 0 (`DROP TABLE a, b CASCADE`).
fn name_list(mut t: &[(Tok, i32)]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((n, used)) = name(t) {
        if matches!(word(&t[0]), Some("CASCADE" | "RESTRICT")) {
            break;
        }
        out.push(n);
        t = &t[used..];
        if matches!(t.first(), Some((Tok::Comma, 0))) {
            t = &t[1..];
        } else {
            break;
        }
    }
    out
}

fn has_top_level(t: &[(Tok, i32)], w: &str) -> bool {
    t.iter().any(|x| x.1 == 0 && word(x) == Some(w))
}

fn has_sequence(t: &[(Tok, i32)], seq: &[&str]) -> bool {
    t.windows(seq.len())
        .any(|win| win.iter().zip(seq).all(|(x, w)| word(x) == Some(*w)))
}

fn classify(toks: &[(Tok, i32)]) -> Vec<(SqlAction, String)> {
    let mut t = strip_control(toks);
    if is_word(t.first(), "WITH") {
        // The statement's verb follows the CTEs, whose bodies sit in parentheses.
        match t.iter().position(|x| {
            x.1 == 0
                && matches!(
                    word(x),
                    Some("DELETE" | "UPDATE" | "INSERT" | "SELECT" | "MERGE")
                )
        }) {
            Some(p) => t = &t[p..],
            None => return Vec::new(),
        }
    }
    let Some(verb) = t.first().and_then(word) else {
        return Vec::new();
    };
    let rest = &t[1..];
    use SqlAction::*;
    match verb {
        "DROP" => {
            let what = rest.first().and_then(word);
            let after = skip_if_exists(skip(&rest[rest.len().min(1)..], &["CONCURRENTLY"]));
            let action = match what {
                Some("TABLE") => DropTable,
                Some("SCHEMA") => DropSchema,
                Some("INDEX") => DropIndex,
                _ => return Vec::new(),
            };
            name_list(after).into_iter().map(|n| (action, n)).collect()
        }
        "TRUNCATE" => name_list(skip(rest, &["TABLE", "ONLY"]))
            .into_iter()
            .map(|n| (Truncate, n))
            .collect(),
        "DELETE" => {
            let after = skip(skip(rest, &["FROM"]), &["ONLY"]);
            match name(after) {
                Some((n, _)) if !has_top_level(after, "WHERE") => vec![(DeleteAll, n)],
                _ => Vec::new(),
            }
        }
        "UPDATE" => {
            let after = skip(rest, &["ONLY"]);
            match name(after) {
                Some((n, _)) if !has_top_level(after, "WHERE") => vec![(UpdateAll, n)],
                _ => Vec::new(),
            }
        }
        "ALTER" if is_word(rest.first(), "TABLE") => {
            let after = skip(skip_if_exists(&rest[1..]), &["ONLY"]);
            let Some((table, used)) = name(after) else {
                return Vec::new();
            };
            after[used..]
                .split(|x| x.0 == Tok::Comma && x.1 == 0)
                .filter_map(|action| alter_action(&table, action))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// One action of `ALTER TABLE <table> <action>, <action>`.
fn alter_action(table: &str, a: &[(Tok, i32)]) -> Option<(SqlAction, String)> {
    use SqlAction::*;
    let rest = a.get(1..).unwrap_or(&[]);
    match a.first().and_then(word)? {
        "DROP" => match rest.first().and_then(word)? {
            "CONSTRAINT" | "PRIMARY" => Some((DropConstraint, table.to_string())),
            // `DROP [COLUMN] [IF EXISTS] name`: COLUMN is optional in PostgreSQL.
            _ => {
                let (col, _) = name(skip_if_exists(skip(rest, &["COLUMN"])))?;
                Some((DropColumn, format!("{table}.{col}")))
            }
        },
        "ALTER" => {
            let (col, used) = name(skip(rest, &["COLUMN"]))?;
            let tail = &skip(rest, &["COLUMN"])[used..];
            let object = format!("{table}.{col}");
            if has_sequence(tail, &["SET", "NOT", "NULL"]) {
                Some((SetNotNull, object))
            } else if is_word(tail.first(), "TYPE") || has_sequence(tail, &["SET", "DATA", "TYPE"])
            {
                Some((TypeChange, object))
            } else {
                None
            }
        }
        "RENAME" => match rest.first().and_then(word)? {
            "TO" => Some((RenameTable, table.to_string())),
            "CONSTRAINT" => None,
            _ => {
                let (col, _) = name(skip(rest, &["COLUMN"]))?;
                Some((RenameColumn, format!("{table}.{col}")))
            }
        },
        "ADD" => {
            let first = rest.first().and_then(word)?;
            if matches!(
                first,
                "CONSTRAINT" | "PRIMARY" | "UNIQUE" | "FOREIGN" | "CHECK" | "EXCLUDE" | "INDEX"
            ) {
                return None;
            }
            let after = skip_if_exists(skip(rest, &["COLUMN"]));
            let (col, _) = name(after)?;
            let not_null = has_sequence(after, &["NOT", "NULL"]);
            let defaulted = has_top_level(after, "DEFAULT") || has_top_level(after, "GENERATED");
            (not_null && !defaulted).then(|| (AddNotNullNoDefault, format!("{table}.{col}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SqlAction::*;

    fn actions(sql: &str) -> Vec<(SqlAction, String)> {
        analyze(sql)
            .into_iter()
            .map(|f| (f.action, f.object))
            .collect()
    }

    #[test]
    fn drops() {
        assert_eq!(
            actions("DROP TABLE IF EXISTS legacy, public.old CASCADE"),
            vec![
                (DropTable, "legacy".into()),
                (DropTable, "public.old".into())
            ]
        );
        assert_eq!(
            actions("drop schema archive cascade;"),
            vec![(DropSchema, "archive".into())]
        );
        assert_eq!(
            actions("ALTER TABLE users DROP COLUMN IF EXISTS name"),
            vec![(DropColumn, "users.name".into())]
        );
        assert_eq!(
            actions("ALTER TABLE users DROP name"),
            vec![(DropColumn, "users.name".into())]
        );
        assert_eq!(
            actions("ALTER TABLE users DROP CONSTRAINT uq_email"),
            vec![(DropConstraint, "users".into())]
        );
        assert_eq!(
            actions("DROP INDEX CONCURRENTLY IF EXISTS ix_a"),
            vec![(DropIndex, "ix_a".into())]
        );
    }

    #[test]
    fn delete_and_update_need_a_top_level_where() {
        assert_eq!(
            actions("DELETE FROM sessions"),
            vec![(DeleteAll, "sessions".into())]
        );
        assert!(actions("DELETE FROM sessions WHERE expires_at < now()").is_empty());
        assert_eq!(
            actions("UPDATE users SET role = (SELECT r FROM roles WHERE id = 1)"),
            vec![(UpdateAll, "users".into())]
        );
        assert!(actions("UPDATE users SET role = 'x' WHERE role IS NULL").is_empty());
        assert_eq!(
            actions("WITH old AS (SELECT id FROM t WHERE x) DELETE FROM t"),
            vec![(DeleteAll, "t".into())]
        );
        // ON CONFLICT ... DO UPDATE belongs to an INSERT.
        assert!(
            actions("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 1").is_empty()
        );
    }

    #[test]
    fn literals_and_comments_are_not_sql() {
        assert!(
            actions("INSERT INTO audit (action) VALUES ('DROP TABLE users; TRUNCATE x')")
                .is_empty()
        );
        assert!(actions("-- TRUNCATE users\n/* DELETE FROM users */ SELECT 1").is_empty());
    }

    #[test]
    fn do_blocks_are_read() {
        let sql = "DO $$ BEGIN IF EXISTS (SELECT 1) THEN TRUNCATE audit; END IF; END $$;";
        assert_eq!(actions(sql), vec![(Truncate, "audit".into())]);
    }

    #[test]
    fn alter_actions() {
        assert_eq!(
            actions(
                "ALTER TABLE users ALTER COLUMN email SET NOT NULL, ALTER COLUMN age TYPE bigint"
            ),
            vec![
                (SetNotNull, "users.email".into()),
                (TypeChange, "users.age".into())
            ]
        );
        assert_eq!(
            actions("ALTER TABLE users RENAME COLUMN a TO b"),
            vec![(RenameColumn, "users.a".into())]
        );
        assert_eq!(
            actions("ALTER TABLE users RENAME TO people"),
            vec![(RenameTable, "users".into())]
        );
        assert_eq!(
            actions("ALTER TABLE users ADD COLUMN age int NOT NULL"),
            vec![(AddNotNullNoDefault, "users.age".into())]
        );
        assert!(
            actions("ALTER TABLE users ADD COLUMN IF NOT EXISTS age int NOT NULL DEFAULT 0")
                .is_empty()
        );
        assert!(
            actions(
                "ALTER TABLE users ALTER COLUMN email DROP NOT NULL, ALTER COLUMN x DROP DEFAULT"
            )
            .is_empty()
        );
        assert!(actions("ALTER TABLE users ADD CONSTRAINT c CHECK (a IS NOT NULL)").is_empty());
    }
}
