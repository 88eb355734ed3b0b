//! What a statement of SQL handed to `execute` does, as far as the migration rules care:
//! drops, truncates, deletes or updates every row.
//!
//! Statements are split at `;` outside quotes, comments and dollar quotes; words inside string
//! literals never count (`INSERT INTO audit VALUES ('DROP TABLE x')` drops nothing). Ruby
//! interpolation (`#{table}`) is kept as a word.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlAction {
    /// `DROP TABLE/SCHEMA/VIEW/...`, `ALTER TABLE ... DROP [COLUMN] c`.
    Drop,
    /// `DROP INDEX`.
    DropIndex,
    Truncate,
    /// `DELETE` without `WHERE`.
    DeleteAll,
    /// `UPDATE` without `WHERE`.
    UpdateAll,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqlFact {
    pub action: SqlAction,
    /// The statement, whitespace collapsed and shortened, for messages.
    pub statement: String,
}

/// The facts of every statement in `sql`.
pub fn analyze(sql: &str) -> Vec<SqlFact> {
    statements(sql)
        .into_iter()
        .filter_map(|(text, words)| {
            classify(&words).map(|action| SqlFact {
                action,
                statement: crate::ruby::shorten(
                    &text.split_whitespace().collect::<Vec<_>>().join(" "),
                    80,
                ),
            })
        })
        .collect()
}

fn classify(words: &[String]) -> Option<SqlAction> {
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let has = |w: &str| words.iter().any(|x| x == w);
    match word(0) {
        "DROP" => match word(1) {
            "INDEX" => Some(SqlAction::DropIndex),
            _ => Some(SqlAction::Drop),
        },
        "TRUNCATE" => Some(SqlAction::Truncate),
        "DELETE" if !has("WHERE") => Some(SqlAction::DeleteAll),
        "UPDATE" if !has("WHERE") => Some(SqlAction::UpdateAll),
        "ALTER" if word(1) == "TABLE" => {
            // `DROP COLUMN c`, `DROP c`, `DROP IF EXISTS c` lose data; `DROP DEFAULT`,
            // `DROP NOT NULL`, `DROP CONSTRAINT`, `DROP IDENTITY` do not.
            let drops_data = words.windows(2).any(|w| {
                w[0] == "DROP"
                    && !matches!(
                        w[1].as_str(),
                        "DEFAULT" | "NOT" | "CONSTRAINT" | "IDENTITY" | "EXPRESSION"
                    )
            }) || words.last().is_some_and(|w| w == "DROP");
            drops_data.then_some(SqlAction::Drop)
        }
        _ => None,
    }
}

/// Statements with their words, uppercased, literals and comments left out.
fn statements(sql: &str) -> Vec<(String, Vec<String>)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut flush = |start: usize, end: usize, words: &mut Vec<String>| {
        if !words.is_empty() {
            out.push((sql[start..end].trim().to_string(), std::mem::take(words)));
        }
    };
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            }
            q @ (b'\'' | b'"') => {
                // '' inside a literal is an escaped quote: scanning on finds the real end.
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == q {
                        if b.get(j + 1) == Some(&q) {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                if q == b'"' {
                    words.push(sql[i + 1..j.min(b.len())].to_uppercase());
                }
                i = j + 1;
            }
            b'$' => {
                // $tag$ ... $tag$: a dollar-quoted body (a function's source) is a literal.
                let tag_len = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                if b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &sql[i..i + tag_len + 2];
                    i = sql[i + tag.len()..]
                        .find(tag)
                        .map_or(b.len(), |p| i + tag.len() + p + tag.len());
                } else {
                    i += 1;
                }
            }
            b';' => {
                flush(start, i, &mut words);
                start = i + 1;
                i += 1;
            }
            b'#' if b.get(i + 1) == Some(&b'{') => {
                let end = sql[i..].find('}').map_or(b.len(), |p| i + p + 1);
                words.push(sql[i..end].to_string());
                i = end;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let end = i + b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'.')
                    .count();
                words.push(sql[i..end].to_uppercase());
                i = end;
            }
            _ => i += 1,
        }
    }
    flush(start, b.len(), &mut words);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(sql: &str) -> Vec<SqlAction> {
        analyze(sql).into_iter().map(|f| f.action).collect()
    }

    #[test]
    fn drops_truncates_and_unbounded_deletes() {
        use SqlAction::*;
        assert_eq!(actions("DROP TABLE legacy"), [Drop]);
        assert_eq!(actions("drop schema archive cascade"), [Drop]);
        assert_eq!(actions("ALTER TABLE users DROP COLUMN nickname"), [Drop]);
        assert_eq!(actions("ALTER TABLE users DROP nickname"), [Drop]);
        assert_eq!(actions("TRUNCATE audit_log"), [Truncate]);
        assert_eq!(actions("DELETE FROM sessions"), [DeleteAll]);
        assert_eq!(actions("DELETE FROM #{table}"), [DeleteAll]);
        assert_eq!(actions("UPDATE users SET active = true"), [UpdateAll]);
        assert_eq!(
            actions("DROP INDEX IF EXISTS index_users_on_email"),
            [DropIndex]
        );
        assert_eq!(
            actions("TRUNCATE a; -- then\nDROP TABLE b;"),
            [Truncate, Drop]
        );
    }

    #[test]
    fn what_is_not_flagged() {
        for sql in [
            "DELETE FROM sessions WHERE expires_at < now()",
            "UPDATE users SET nickname = split_part(email, '@', 1) WHERE nickname IS NULL",
            "INSERT INTO audit (action) VALUES ('DROP TABLE x; TRUNCATE y')",
            "ALTER TABLE users ALTER COLUMN email DROP NOT NULL",
            "ALTER TABLE users ALTER COLUMN email DROP DEFAULT",
            "ALTER TABLE users DROP CONSTRAINT users_email_key",
            "-- DROP TABLE users\nSELECT 1",
            "/* TRUNCATE x */ SELECT pg_sleep(60)",
            "CREATE FUNCTION f() RETURNS void AS $$ DELETE FROM x $$ LANGUAGE sql",
        ] {
            assert!(actions(sql).is_empty(), "{sql}");
        }
    }
}
