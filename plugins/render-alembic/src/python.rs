//! Just enough Python lexing to read an Alembic migration file.
//!
//! The migration rules must not fire on `op.drop_table` written in a comment or a docstring, yet
//! they must read the SQL inside `op.execute("...")`. So a file is split once into a *masked*
//! copy, where every comment and string literal is blanked out (byte offsets and newlines kept,
//! so positions and line numbers are shared with the original), and the list of string literals
//! with their values. Everything else here (top-level functions, calls with balanced
//! parentheses, keyword arguments, logical statements) works on the masked copy.

use std::ops::Range;

/// A Python source file, lexed.
pub struct Source<'a> {
    pub text: &'a str,
    /// `text` with comments and string literals (prefix and quotes included) replaced by spaces.
    /// Newlines are kept, so an offset means the same place in both.
    pub code: String,
    /// Every string literal, in source order.
    pub strings: Vec<StrLit>,
    line_starts: Vec<usize>,
}

/// One string literal.
#[derive(Debug, Clone, PartialEq)]
pub struct StrLit {
    /// Byte range of the whole literal, prefix and quotes included.
    pub span: Range<usize>,
    /// Its value, with the common backslash escapes resolved (raw strings are left as written).
    pub value: String,
}

/// A top-level `def`.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// Offset of `def` (or `async`).
    pub start: usize,
    /// From just after the signature's `:` to the next top-level line.
    pub body: Range<usize>,
}

/// A call found in code: `op.drop_table("notes")`, `conn.execute(...)`, `.execute(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The dotted name before the parenthesis (`op.drop_table`). A name reached through a call
    /// (`op.get_bind().execute`) keeps only its last part, with a leading dot: `.execute`.
    pub name: String,
    /// Offset of the first character of the name: where the call starts.
    pub start: usize,
    /// Between the parentheses.
    pub args: Range<usize>,
    /// Just after the closing parenthesis.
    pub end: usize,
}

impl Call {
    /// The last part of the dotted name: `drop_table` for `op.drop_table`.
    pub fn method(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// What comes before the method: `op` for `op.drop_table`, empty for `f(...)` or `.execute`.
    pub fn receiver(&self) -> &str {
        self.name.rsplit_once('.').map(|(r, _)| r).unwrap_or("")
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Self {
        let b = text.as_bytes();
        let mut code = b.to_vec();
        let mut strings = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'#' => {
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(b.len(), |p| i + p);
                    blank(&mut code, i..end);
                    i = end;
                }
                q @ (b'\'' | b'"') => {
                    let (start, raw) = string_prefix(text, i);
                    let triple = b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q;
                    let qlen = if triple { 3 } else { 1 };
                    let body_start = i + qlen;
                    let mut j = body_start;
                    let (body_end, end) = loop {
                        if j >= b.len() {
                            break (b.len(), b.len());
                        }
                        match b[j] {
                            b'\\' => j += 2,
                            // An unterminated one-line string ends at the line: keep lines intact.
                            b'\n' if !triple => break (j, j),
                            c if c == q && (!triple || b[j..].starts_with(&[q, q, q])) => {
                                break (j, j + qlen);
                            }
                            _ => j += 1,
                        }
                    };
                    let body_end = body_end.min(b.len());
                    let raw_value = &text[body_start..body_end];
                    let value = if raw {
                        raw_value.to_string()
                    } else {
                        unescape(raw_value)
                    };
                    strings.push(StrLit {
                        span: start..end,
                        value,
                    });
                    blank(&mut code, start..end);
                    i = end.max(i + 1);
                }
                _ => i += 1,
            }
        }
        // Only whole literals and comments were blanked, and they start and end on ASCII bytes.
        let code = String::from_utf8(code)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let line_starts = std::iter::once(0)
            .chain(
                text.bytes()
                    .enumerate()
                    .filter(|&(_, c)| c == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        Source {
            text,
            code,
            strings,
            line_starts,
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> u32 {
        self.line_starts.partition_point(|&s| s <= offset) as u32
    }

    /// String literals lying inside `range`.
    pub fn strings_in(&self, range: Range<usize>) -> impl Iterator<Item = &StrLit> {
        self.strings
            .iter()
            .filter(move |s| s.span.start >= range.start && s.span.end <= range.end)
    }

    /// Groups of literals that Python joins into one string: adjacent literals (implicit
    /// concatenation) and literals joined with `+`. Separate groups are separate arguments.
    pub fn string_groups(&self, range: Range<usize>) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        let mut last_end: Option<usize> = None;
        for lit in self.strings_in(range) {
            let joined = last_end.is_some_and(|end| {
                self.code[end..lit.span.start]
                    .bytes()
                    .all(|c| c.is_ascii_whitespace() || c == b'+')
            });
            match groups.last_mut() {
                Some(group) if joined => group.push_str(&lit.value),
                _ => groups.push(lit.value.clone()),
            }
            last_end = Some(lit.span.end);
        }
        groups
    }

    /// Top-level functions (`def` at column 0), in order.
    pub fn functions(&self) -> Vec<Function> {
        let code = self.code.as_bytes();
        let tops = self.top_level_lines();
        let mut out = Vec::new();
        for (n, &line) in tops.iter().enumerate() {
            let rest = &self.code[line..];
            let after_def = rest
                .strip_prefix("def ")
                .or_else(|| rest.strip_prefix("async def ").map(str::trim_start));
            let Some(after_def) = after_def else { continue };
            let name_start = line + (rest.len() - after_def.len());
            let name_len = after_def.bytes().take_while(|&c| is_ident(c)).count();
            let name = self.code[name_start..name_start + name_len].to_string();
            let next_top = tops.get(n + 1).copied().unwrap_or(code.len());
            // The signature may span lines and carry an annotation: skip to the `:` after `)`.
            let Some(open) = self.code[name_start..next_top]
                .find('(')
                .map(|p| name_start + p)
            else {
                continue;
            };
            let close = self.matching_close(open);
            let colon = self.code[close.min(next_top)..next_top]
                .find(':')
                .map_or(next_top, |p| close + p + 1);
            out.push(Function {
                name,
                start: line,
                body: colon..next_top,
            });
        }
        out
    }

    /// Offsets of lines that start at column 0 with code, outside any bracket.
    fn top_level_lines(&self) -> Vec<usize> {
        let code = self.code.as_bytes();
        let mut out = Vec::new();
        let mut depth = 0i32;
        let mut line_start = true;
        for (i, &c) in code.iter().enumerate() {
            if line_start && depth <= 0 && !c.is_ascii_whitespace() {
                out.push(i);
            }
            line_start = c == b'\n';
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                _ => {}
            }
        }
        out
    }

    /// Offset of the bracket closing the one at `open`, or the end of the file if unbalanced.
    pub fn matching_close(&self, open: usize) -> usize {
        let code = self.code.as_bytes();
        let mut depth = 0i32;
        for (i, &c) in code.iter().enumerate().skip(open) {
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return i;
                    }
                }
                _ => {}
            }
        }
        code.len()
    }

    /// Every call in `range`, outer calls before the calls nested in their arguments.
    pub fn calls(&self, range: Range<usize>) -> Vec<Call> {
        let code = self.code.as_bytes();
        let end = range.end.min(code.len());
        let mut out = Vec::new();
        let mut i = range.start;
        while i < end {
            let c = code[i];
            let at_boundary = i == 0 || !is_ident(code[i - 1]);
            if !(at_boundary && is_ident_start(c)) {
                // Skip numbers whole so `1e5` is not read as a name.
                if at_boundary && c.is_ascii_digit() {
                    while i < end && (is_ident(code[i]) || code[i] == b'.') {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
                continue;
            }
            let start = i;
            let mut j = i;
            loop {
                while j < end && is_ident(code[j]) {
                    j += 1;
                }
                if j + 1 < end && code[j] == b'.' && is_ident_start(code[j + 1]) {
                    j += 1;
                } else {
                    break;
                }
            }
            let mut k = j;
            while k < end && code[k].is_ascii_whitespace() {
                k += 1;
            }
            if k < end && code[k] == b'(' {
                let through_call = self.code[..start].trim_end().ends_with('.');
                let name = &self.code[start..j];
                let name = if through_call {
                    format!(".{name}")
                } else {
                    name.to_string()
                };
                let close = self.matching_close(k);
                out.push(Call {
                    name,
                    start,
                    args: k + 1..close,
                    end: (close + 1).min(code.len()),
                });
            }
            i = j;
        }
        out
    }

    /// The value of keyword argument `name` anywhere in `args` (nested calls included, so
    /// `sa.Column(..., nullable=False)` inside `op.add_column` counts), as masked code: a string
    /// value reads as empty. `None` when the keyword is absent.
    pub fn kwarg(&self, args: Range<usize>, name: &str) -> Option<String> {
        let code = &self.code[args.clone()];
        let bytes = code.as_bytes();
        let mut from = 0;
        while let Some(p) = code[from..].find(name).map(|p| from + p) {
            from = p + name.len();
            let before_ok = p == 0 || !is_ident(bytes[p - 1]);
            let after_ok = bytes.get(from).is_none_or(|&c| !is_ident(c));
            if !before_ok || !after_ok {
                continue;
            }
            let rest = code[from..].trim_start();
            if !rest.starts_with('=') || rest.starts_with("==") {
                continue;
            }
            let value = &rest[1..];
            let mut depth = 0i32;
            let end = value
                .bytes()
                .position(|c| {
                    match c {
                        b'(' | b'[' | b'{' => depth += 1,
                        b')' | b']' | b'}' if depth == 0 => return true,
                        b')' | b']' | b'}' => depth -= 1,
                        b',' if depth == 0 => return true,
                        _ => {}
                    }
                    false
                })
                .unwrap_or(value.len());
            return Some(value[..end].trim().to_string());
        }
        None
    }

    /// Logical statements in `range` (lines joined inside brackets, split at `;`), trimmed,
    /// as masked code; statements that were only comments or strings are left out.
    pub fn statements(&self, range: Range<usize>) -> Vec<&str> {
        let code = &self.code[range];
        let mut out = Vec::new();
        let mut depth = 0i32;
        let mut start = 0;
        let bytes = code.as_bytes();
        for (i, &c) in bytes.iter().enumerate() {
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'\n' | b';' if depth <= 0 => {
                    let continued =
                        c == b'\n' && code[..i].trim_end_matches([' ', '\t']).ends_with('\\');
                    if !continued {
                        out.push(code[start..i].trim());
                        start = i + 1;
                    }
                }
                _ => {}
            }
        }
        out.push(code[start..].trim());
        out.retain(|s| !s.is_empty());
        out
    }

    /// The original text of `range` on one line, shortened for a message.
    pub fn snippet(&self, range: Range<usize>) -> String {
        shorten(&self.text[range], 100)
    }
}

/// Collapse whitespace and cut at `max` characters.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

fn blank(code: &mut [u8], range: Range<usize>) {
    for c in &mut code[range] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// Where the literal whose opening quote is at `quote` starts (its prefix included) and
/// whether it is raw.
fn string_prefix(text: &str, quote: usize) -> (usize, bool) {
    let b = text.as_bytes();
    let mut s = quote;
    while s > 0 && quote - s < 2 && b[s - 1].is_ascii_alphabetic() {
        s -= 1;
    }
    let prefix = &text[s..quote];
    let valid = prefix.chars().all(|c| "rRbBuUfF".contains(c)) && (s == 0 || !is_ident(b[s - 1]));
    if valid {
        (s, prefix.contains(['r', 'R']))
    } else {
        (quote, false)
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\n') => {}
            Some(c @ ('\\' | '\'' | '"')) => out.push(c),
            Some(c) => {
                out.push('\\');
                out.push(c);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_strings_are_masked_with_offsets_kept() {
        let src = Source::new("x = 1  # op.drop_table('a')\ny = \"op.drop_table('b')\"\n");
        assert_eq!(src.code.len(), src.text.len());
        assert!(!src.code.contains("drop_table"));
        assert_eq!(src.strings.len(), 1);
        assert_eq!(src.strings[0].value, "op.drop_table('b')");
        assert_eq!(src.line_of(src.strings[0].span.start), 2);
    }

    #[test]
    fn triple_quoted_prefixed_and_escaped_strings() {
        let text = "a = r'''x\n'y'\n'''\nb = f\"{v}\\\"q\"\nc = b'\\n'\n";
        let src = Source::new(text);
        let values: Vec<_> = src.strings.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(values, vec!["x\n'y'\n", "{v}\"q", "\n"]);
        assert_eq!(
            src.code
                .trim_end()
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>(),
            vec!["a =", "", "", "b =", "c ="]
        );
    }

    #[test]
    fn functions_end_at_the_next_top_level_line_not_inside_strings() {
        let text = "\
def upgrade() -> None:
    op.execute(\"\"\"
DROP TABLE x;
\"\"\")

def downgrade(
    x,
) -> Union[str, None]:
    pass
";
        let src = Source::new(text);
        let fns = src.functions();
        assert_eq!(fns.len(), 2);
        assert_eq!(fns[0].name, "upgrade");
        assert!(src.text[fns[0].body.clone()].contains("DROP TABLE x"));
        assert_eq!(fns[1].name, "downgrade");
        assert_eq!(src.text[fns[1].body.clone()].trim(), "pass");
    }

    #[test]
    fn calls_nested_and_through_calls() {
        let src = Source::new("op.get_bind().execute(sa.text('DELETE FROM t'))\n");
        let names: Vec<_> = src
            .calls(0..src.code.len())
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, vec!["op.get_bind", ".execute", "sa.text"]);
    }

    #[test]
    fn kwargs_match_whole_names_at_any_depth() {
        let text = "op.add_column('t', sa.Column('c', sa.Integer(), existing_nullable=True, nullable=False, server_default='0'))";
        let src = Source::new(text);
        let call = &src.calls(0..text.len())[0];
        assert_eq!(
            src.kwarg(call.args.clone(), "nullable").as_deref(),
            Some("False")
        );
        assert_eq!(
            src.kwarg(call.args.clone(), "server_default").as_deref(),
            Some("")
        );
        assert_eq!(src.kwarg(call.args.clone(), "type_"), None);
    }

    #[test]
    fn statements_join_brackets_and_drop_docstrings() {
        let text = "\n    \"\"\"Doc.\"\"\"\n    raise NotImplementedError(\n        'no way back'\n    )\n    pass; x = 1\n";
        let src = Source::new(text);
        assert_eq!(
            src.statements(0..text.len()),
            vec![
                "raise NotImplementedError(\n                     \n    )",
                "pass",
                "x = 1"
            ]
        );
    }

    #[test]
    fn adjacent_literals_form_one_group() {
        let text = "op.execute('INSERT INTO a ' \"SELECT 1\", {'k': 'v'})";
        let src = Source::new(text);
        let call = &src.calls(0..text.len())[0];
        assert_eq!(
            src.string_groups(call.args.clone()),
            vec!["INSERT INTO a SELECT 1", "k", "v"]
        );
    }
}
