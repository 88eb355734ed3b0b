//! Just enough Ruby lexing to read a Rails migration.
//!
//! The rules must not fire on `remove_column` written in a comment, a string or a heredoc, yet
//! they must read the SQL handed to `execute`. So a file is split once into a *masked* copy,
//! where every comment, `=begin`/`=end` block, string, heredoc body, percent literal and regexp
//! is blanked (byte offsets and newlines kept, so positions and line numbers are shared with
//! the original), and the list of string literals with their values. Everything else here
//! (method definitions, `do`/`{` blocks, calls with or without parentheses, their arguments)
//! works on the masked copy.

use std::ops::Range;

/// A Ruby source file, lexed.
pub struct Source<'a> {
    pub text: &'a str,
    /// `text` with comments and literals replaced by spaces (newlines kept).
    pub code: String,
    /// Every string-like literal, in source order.
    pub strings: Vec<StrLit>,
    /// What was blanked for literals (not comments): newlines in there do not end a line of code.
    literal_spans: Vec<Range<usize>>,
    line_starts: Vec<usize>,
}

/// One string literal.
#[derive(Debug, Clone, PartialEq)]
pub struct StrLit {
    /// Where it is written: the literal itself, or a heredoc's `<<~ID` opener.
    pub at: Range<usize>,
    /// Its text (escapes resolved for the common cases, `#{...}` kept as written).
    pub value: String,
}

/// `def NAME ... end`.
#[derive(Debug, Clone, PartialEq)]
pub struct Def {
    /// `change`, `up`, `down` (`self.` dropped).
    pub name: String,
    /// Offset of `def`.
    pub start: usize,
    /// From the end of the signature to the `end`.
    pub body: Range<usize>,
}

/// A `do ... end` or `{ ... }` block, with what it is attached to.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The code of the statement before `do`/`{`, trimmed: `reversible`, `dir.down`,
    /// `change_table :users, bulk: true`.
    pub owner: String,
    /// Offset where the owner starts.
    pub owner_start: usize,
    /// Block parameters (`|t|` gives `["t"]`).
    pub params: Vec<String>,
    /// Inside the block, after its parameters.
    pub body: Range<usize>,
}

/// A call: `remove_column :users, :name`, `execute(<<~SQL)`, `t.remove :name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    /// The word before the `.` (`t`, `dir`, `connection`); empty without a receiver.
    pub receiver: String,
    /// Where the call (its receiver, if any) starts.
    pub start: usize,
    /// The arguments, without parentheses.
    pub args: Range<usize>,
    /// Just after the arguments (after `)` when there are parentheses).
    pub end: usize,
    /// A `do` or `{` block follows.
    pub has_block: bool,
}

/// One argument of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A positional value: a symbol's or string's name (`users` for `:users` or `"users"`),
    /// or the code as written (`false`, `:string` gives `string`).
    Positional(String),
    /// `key: value` or `:key => value`.
    Keyword(String, String),
    /// `*args`, `**options`, `&block`: unknown content.
    Splat,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Keywords after which an expression starts (so `/` is a regexp, `if` opens a block...).
const EXPR_KEYWORDS: &[&str] = &[
    "if", "unless", "while", "until", "when", "and", "or", "not", "return", "then", "else",
    "elsif", "do", "begin", "in", "case", "puts", "raise",
];

fn blank(code: &mut [u8], range: Range<usize>) {
    for c in &mut code[range] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// A heredoc whose body starts on the next line.
struct PendingHeredoc {
    id: String,
    /// `<<~` or `<<-`: the terminator may be indented.
    indented: bool,
    squiggly: bool,
    opener: Range<usize>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Self {
        let b = text.as_bytes();
        let mut code = b.to_vec();
        let mut strings = Vec::new();
        let mut literal_spans = Vec::new();
        let mut heredocs: Vec<PendingHeredoc> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let line_start = i == 0 || b[i - 1] == b'\n';
            if line_start
                && b[i..].starts_with(b"=begin")
                && b.get(i + 6).is_none_or(|c| c.is_ascii_whitespace())
            {
                let end = find_line_starting(b, i + 6, b"=end").map_or(b.len(), |p| line_end(b, p));
                blank(&mut code, i..end);
                i = end;
                continue;
            }
            if line_start
                && b[i..].starts_with(b"__END__")
                && b.get(i + 7).is_none_or(|&c| c == b'\n' || c == b'\r')
            {
                blank(&mut code, i..b.len());
                break;
            }
            match b[i] {
                b'#' => {
                    let end = line_end(b, i);
                    blank(&mut code, i..end);
                    i = end;
                }
                b'\n' if !heredocs.is_empty() => {
                    let mut pos = i + 1;
                    for h in heredocs.drain(..) {
                        let body_start = pos;
                        let mut body_end = b.len();
                        let mut after = b.len();
                        while pos < b.len() {
                            let end = line_end(b, pos);
                            let line = text[pos..end].trim_end_matches('\r');
                            let line = if h.indented { line.trim_start() } else { line };
                            if line == h.id {
                                body_end = pos;
                                after = (end + 1).min(b.len());
                                break;
                            }
                            pos = (end + 1).min(b.len());
                        }
                        let raw = &text[body_start..body_end.max(body_start)];
                        let value = if h.squiggly {
                            dedent(raw)
                        } else {
                            raw.to_string()
                        };
                        strings.push(StrLit {
                            at: h.opener.clone(),
                            value,
                        });
                        blank(&mut code, body_start..after);
                        literal_spans.push(body_start..after);
                        pos = after;
                    }
                    i = pos;
                }
                q @ (b'"' | b'`') => {
                    let (body_end, end) = scan_quoted(b, i + 1, q, None, true);
                    push_literal(
                        text,
                        &mut code,
                        &mut strings,
                        &mut literal_spans,
                        i..end,
                        i + 1..body_end,
                        true,
                    );
                    i = end.max(i + 1);
                }
                b'\'' => {
                    let (body_end, end) = scan_quoted(b, i + 1, b'\'', None, false);
                    push_literal(
                        text,
                        &mut code,
                        &mut strings,
                        &mut literal_spans,
                        i..end,
                        i + 1..body_end,
                        false,
                    );
                    i = end.max(i + 1);
                }
                b'%' => match percent_literal(b, i) {
                    Some((body_start, close, open, interp)) => {
                        let (body_end, end) = scan_quoted(b, body_start, close, open, interp);
                        push_literal(
                            text,
                            &mut code,
                            &mut strings,
                            &mut literal_spans,
                            i..end,
                            body_start..body_end,
                            interp,
                        );
                        i = end.max(i + 1);
                    }
                    None => i += 1,
                },
                b'<' if b.get(i + 1) == Some(&b'<') => match heredoc_opener(b, i) {
                    Some((h, end)) => {
                        blank(&mut code, i..end);
                        literal_spans.push(i..end);
                        heredocs.push(PendingHeredoc {
                            opener: i..end,
                            ..h
                        });
                        i = end;
                    }
                    None => i += 2,
                },
                b'/' if operand_position(b, i) => {
                    let (_, end) = scan_quoted(b, i + 1, b'/', None, true);
                    // A regexp is not a string anyone executes: blanked, not recorded.
                    blank(&mut code, i..end);
                    literal_spans.push(i..end);
                    i = end.max(i + 1);
                }
                b'?' if is_char_literal(b, i) => {
                    let end = if b[i + 1] == b'\\' { i + 3 } else { i + 2 };
                    blank(&mut code, i..end.min(b.len()));
                    i = end;
                }
                // `$"`, `$'`, `` $` ``: global variables, not quotes.
                b'$' if b.get(i + 1).is_some_and(|c| !is_ident(*c)) => i += 2,
                c if is_ident_start(c) => {
                    // Whole words, so `foo?` or `x%` never look like a literal's start.
                    while i < b.len() && is_ident(b[i]) {
                        i += 1;
                    }
                    if i < b.len() && (b[i] == b'?' || b[i] == b'!') && b.get(i + 1) != Some(&b'=')
                    {
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        // Only whole literals and comments were blanked: every multi-byte character inside
        // them became spaces, the ones outside are intact.
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
            literal_spans,
            line_starts,
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> u32 {
        self.line_starts.partition_point(|&s| s <= offset) as u32
    }

    /// String literals written inside `range`.
    pub fn strings_in(&self, range: Range<usize>) -> impl Iterator<Item = &StrLit> {
        self.strings
            .iter()
            .filter(move |s| s.at.start >= range.start && s.at.start < range.end)
    }

    fn in_literal(&self, offset: usize) -> bool {
        self.literal_spans.iter().any(|s| s.contains(&offset))
    }

    /// The original text of `range` on one line, whitespace collapsed, for messages.
    pub fn snippet(&self, range: Range<usize>) -> String {
        shorten(
            &self.text[range]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            90,
        )
    }

    /// Every `def` with its body, outermost and nested alike.
    pub fn defs(&self) -> Vec<Def> {
        self.structure().0
    }

    /// Every `do ... end` and `{ ... }` block attached to a call.
    pub fn blocks(&self) -> Vec<Block> {
        self.structure().1
    }

    /// One pass over the masked code matching `def`/`class`/`do`/`if`/... with their `end`,
    /// and braces with theirs.
    fn structure(&self) -> (Vec<Def>, Vec<Block>) {
        enum Open {
            Def {
                name: String,
                start: usize,
                body: usize,
            },
            Block {
                owner: Range<usize>,
                params: Vec<String>,
                body: usize,
            },
            Keyword,
            Hash,
        }
        let code = self.code.as_bytes();
        let mut stack: Vec<Open> = Vec::new();
        let mut defs = Vec::new();
        let mut blocks = Vec::new();
        let mut stmt_start = 0usize;
        // `while x do`: the `do` belongs to the loop, it opens nothing.
        let mut loop_do = false;
        let mut i = 0;
        while i < code.len() {
            let c = code[i];
            if c == b'\n' && !self.in_literal(i) && !continues(code, i) {
                stmt_start = i + 1;
                loop_do = false;
                i += 1;
                continue;
            }
            if c == b';' {
                stmt_start = i + 1;
                loop_do = false;
                i += 1;
                continue;
            }
            if c == b'{' {
                if brace_is_block(code, i) {
                    let (params, body) = block_params(code, i + 1);
                    stack.push(Open::Block {
                        owner: stmt_start..i,
                        params,
                        body,
                    });
                } else {
                    stack.push(Open::Hash);
                }
                stmt_start = i + 1;
                i += 1;
                continue;
            }
            if c == b'}' {
                while let Some(open) = stack.pop() {
                    match open {
                        Open::Hash => break,
                        Open::Block {
                            owner,
                            params,
                            body,
                        } => {
                            blocks.push(self.block(owner, params, body..i));
                            break;
                        }
                        _ => {}
                    }
                }
                i += 1;
                continue;
            }
            if !is_ident_start(c) || (i > 0 && is_ident(code[i - 1])) {
                i += 1;
                continue;
            }
            let end = word_end(code, i);
            let word = &self.code[i..end];
            let is_keyword = !preceded_by_dot_or_colon(code, i) && !is_label(code, end);
            if !is_keyword {
                i = end;
                continue;
            }
            match word {
                "def" => {
                    let (name, sig_end, endless) = def_signature(code, end);
                    if !endless {
                        let body = line_end(code, sig_end).min(code.len());
                        stack.push(Open::Def {
                            name,
                            start: i,
                            body,
                        });
                    }
                    i = sig_end;
                    continue;
                }
                "class" | "module" | "begin" | "case" => stack.push(Open::Keyword),
                "if" | "unless" | "while" | "until" | "for"
                    if starts_expression(code, i, stmt_start) =>
                {
                    stack.push(Open::Keyword);
                    loop_do = matches!(word, "while" | "until" | "for");
                }
                "do" if loop_do => loop_do = false,
                "do" => {
                    let (params, body) = block_params(code, end);
                    stack.push(Open::Block {
                        owner: stmt_start..i,
                        params,
                        body,
                    });
                    stmt_start = body;
                }
                "end" => {
                    while let Some(open) = stack.pop() {
                        match open {
                            Open::Hash => continue,
                            Open::Def { name, start, body } => {
                                defs.push(Def {
                                    name,
                                    start,
                                    body: body..i,
                                });
                                break;
                            }
                            Open::Block {
                                owner,
                                params,
                                body,
                            } => {
                                blocks.push(self.block(owner, params, body..i));
                                break;
                            }
                            Open::Keyword => break,
                        }
                    }
                }
                _ => {}
            }
            i = end;
        }
        defs.sort_by_key(|d| d.start);
        blocks.sort_by_key(|b| b.body.start);
        (defs, blocks)
    }

    fn block(&self, owner: Range<usize>, params: Vec<String>, body: Range<usize>) -> Block {
        let raw = &self.code[owner.clone()];
        let trimmed_start = owner.start + (raw.len() - raw.trim_start().len());
        Block {
            owner: raw.split_whitespace().collect::<Vec<_>>().join(" "),
            owner_start: trimmed_start,
            params,
            body,
        }
    }

    /// Calls to `methods` inside `range`, at a place where a call can start (beginning of a
    /// statement, after `=` or an opening bracket, or after `receiver.`).
    pub fn calls(&self, range: Range<usize>, methods: &[&str]) -> Vec<Call> {
        let code = self.code.as_bytes();
        let mut out = Vec::new();
        let mut i = range.start;
        while i < range.end {
            let c = code[i];
            if !is_ident_start(c) || (i > 0 && is_ident(code[i - 1])) {
                i += 1;
                continue;
            }
            let end = word_end(code, i);
            let word = &self.code[i..end];
            if !methods.contains(&word) || is_label(code, end) || is_assignment(code, end) {
                i = end;
                continue;
            }
            let before = prev_non_space(code, i);
            let (receiver, start) = match before {
                Some(p) if code[p] == b'.' && !(p > 0 && code[p - 1] == b'.') => {
                    receiver_before(code, p)
                }
                Some(p) if matches!(code[p], b':' | b'@' | b'$') => {
                    i = end;
                    continue;
                }
                Some(p) if !call_can_start_after(code, p, &self.code) => {
                    i = end;
                    continue;
                }
                _ => (String::new(), i),
            };
            let (args, args_end) = self.call_args(end);
            let has_block = {
                let rest = self.code[args_end..].trim_start_matches([' ', '\t']);
                rest.starts_with('{')
                    || (rest.starts_with("do")
                        && rest.as_bytes().get(2).is_none_or(|c| !is_ident(*c)))
            };
            out.push(Call {
                method: word.to_string(),
                receiver,
                start,
                args,
                end: args_end,
                has_block,
            });
            i = end;
        }
        out
    }

    /// The arguments after a method name ending at `name_end`: in parentheses, or to the end
    /// of the line (a command call), stopping before a `do` block or a modifier `if`.
    fn call_args(&self, name_end: usize) -> (Range<usize>, usize) {
        let code = self.code.as_bytes();
        if code.get(name_end) == Some(&b'(') {
            let close = self.matching_close(name_end);
            return (name_end + 1..close, (close + 1).min(code.len()));
        }
        // Blanked literals are spaces too: the first character that is neither (or a newline
        // after a heredoc opener) says whether arguments follow at all.
        let first = name_end
            + self.code[name_end..]
                .bytes()
                .take_while(|c| *c == b' ' || *c == b'\t')
                .count();
        let literal_first = (name_end..first).any(|p| self.in_literal(p));
        if first == name_end
            || (!literal_first
                && (first >= code.len()
                    || matches!(
                        code[first],
                        b'\n' | b';' | b'.' | b')' | b']' | b'}' | b'=' | b'?' | b'{'
                    )))
        {
            return (name_end..name_end, name_end);
        }
        let start = name_end + 1;
        let mut depth = 0i32;
        let mut j = start;
        while j < code.len() {
            match code[j] {
                b'(' | b'[' | b'{' if depth == 0 && code[j] == b'{' && brace_is_block(code, j) => {
                    break;
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                b';' if depth == 0 => break,
                b'\n' if depth == 0 && !self.in_literal(j) && !continues(code, j) => break,
                c if depth == 0 && is_ident_start(c) && !is_ident(code[j - 1]) => {
                    let end = word_end(code, j);
                    let w = &self.code[j..end];
                    let standalone = !preceded_by_dot_or_colon(code, j) && !is_label(code, end);
                    if standalone
                        && matches!(w, "do" | "if" | "unless" | "while" | "until" | "rescue")
                    {
                        break;
                    }
                    j = end;
                    continue;
                }
                _ => {}
            }
            j += 1;
        }
        let mut end = j;
        while end > start && code[end - 1].is_ascii_whitespace() && !self.in_literal(end - 1) {
            end -= 1;
        }
        (start..end, end)
    }

    /// Offset of the bracket closing the one at `open` (or the end of the code).
    pub fn matching_close(&self, open: usize) -> usize {
        let code = self.code.as_bytes();
        let mut depth = 0i32;
        for (j, &c) in code.iter().enumerate().skip(open) {
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return j;
                    }
                }
                _ => {}
            }
        }
        code.len()
    }

    /// A call's arguments, split at top-level commas.
    pub fn args(&self, call: &Call) -> Vec<Arg> {
        let code = self.code.as_bytes();
        let mut parts = Vec::new();
        let mut depth = 0i32;
        let mut from = call.args.start;
        for j in call.args.clone() {
            match code[j] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b',' if depth == 0 => {
                    parts.push(from..j);
                    from = j + 1;
                }
                _ => {}
            }
        }
        if call.args.end > from {
            parts.push(from..call.args.end);
        }
        parts.into_iter().filter_map(|r| self.arg(r)).collect()
    }

    fn arg(&self, range: Range<usize>) -> Option<Arg> {
        let masked = self.code[range.clone()].trim();
        if masked.starts_with('*') || masked.starts_with('&') {
            return Some(Arg::Splat);
        }
        let literal = || {
            self.strings_in(range.clone())
                .map(|s| s.value.clone())
                .collect::<Vec<_>>()
                .join("")
        };
        if masked.is_empty() {
            let value = literal();
            return (!value.is_empty() || self.strings_in(range.clone()).next().is_some())
                .then_some(Arg::Positional(value));
        }
        // `key: value`, `:key => value`, `"key" => value` (the quoted key is blank here).
        let key_len = masked.bytes().take_while(|c| is_ident(*c)).count();
        if key_len > 0 && masked[key_len..].starts_with(':') && !masked[key_len..].starts_with("::")
        {
            let value = masked[key_len + 1..].trim();
            return Some(Arg::Keyword(
                masked[..key_len].to_string(),
                self.value_text(value, &range),
            ));
        }
        if let Some((key, value)) = masked.split_once("=>") {
            let key = key.trim().trim_start_matches(':');
            return Some(Arg::Keyword(
                key.to_string(),
                self.value_text(value.trim(), &range),
            ));
        }
        Some(Arg::Positional(self.value_text(masked, &range)))
    }

    fn value_text(&self, masked: &str, range: &Range<usize>) -> String {
        if masked.is_empty() {
            return self
                .strings_in(range.clone())
                .map(|s| s.value.clone())
                .collect::<Vec<_>>()
                .join("");
        }
        masked
            .strip_prefix(':')
            .filter(|s| !s.is_empty())
            .unwrap_or(masked)
            .to_string()
    }

    /// The strings a call passes (its string arguments and heredocs), joined per argument.
    pub fn string_args(&self, call: &Call) -> Vec<String> {
        self.strings_in(call.args.start..call.end.max(call.args.end))
            .map(|s| s.value.clone())
            .collect()
    }

    /// The strings last assigned to local variable `name` before `before` (`sql = <<~SQL`).
    pub fn assigned_strings(&self, name: &str, range: Range<usize>) -> Vec<String> {
        if name.is_empty() || !name.bytes().all(is_ident) {
            return Vec::new();
        }
        let code = self.code.as_bytes();
        let mut found = None;
        let mut from = range.start;
        while let Some(p) = self.code[from..range.end].find(name).map(|p| from + p) {
            from = p + name.len();
            let boundary = p == 0 || !is_ident(code[p - 1]) && code[p - 1] != b'.';
            if boundary && from < code.len() && !is_ident(code[from]) && is_assignment(code, from) {
                found = Some(from);
            }
        }
        let Some(at) = found else { return Vec::new() };
        let eq = at + self.code[at..].find('=').unwrap_or(0);
        let mut end = eq + 1;
        while end < code.len()
            && (code[end] != b'\n' || self.in_literal(end) || continues(code, end))
        {
            end += 1;
        }
        self.strings_in(eq..end).map(|s| s.value.clone()).collect()
    }
}

fn push_literal(
    text: &str,
    code: &mut [u8],
    strings: &mut Vec<StrLit>,
    spans: &mut Vec<Range<usize>>,
    whole: Range<usize>,
    body: Range<usize>,
    interp: bool,
) {
    let raw = &text[body.start..body.end.max(body.start)];
    let value = if interp {
        unescape(raw)
    } else {
        raw.replace("\\'", "'").replace("\\\\", "\\")
    };
    strings.push(StrLit {
        at: whole.clone(),
        value,
    });
    blank(code, whole.clone());
    spans.push(whole);
}

/// Offset of the newline ending the line at `from` (or the end).
fn line_end(b: &[u8], from: usize) -> usize {
    b[from.min(b.len())..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| from + p)
}

fn find_line_starting(b: &[u8], from: usize, prefix: &[u8]) -> Option<usize> {
    let mut pos = line_end(b, from) + 1;
    while pos < b.len() {
        if b[pos..].starts_with(prefix) {
            return Some(pos);
        }
        pos = line_end(b, pos) + 1;
    }
    None
}

/// Scans a quoted body from `start` to its closing `close`, minding escapes, nested pairs of
/// `open`/`close` (percent literals) and `#{...}` interpolation (which may hold quotes).
/// Returns (end of the body, end of the literal). Unterminated: both at the end of the text.
fn scan_quoted(
    b: &[u8],
    start: usize,
    close: u8,
    open: Option<u8>,
    interp: bool,
) -> (usize, usize) {
    let mut depth = 0;
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'#' if interp && b.get(j + 1) == Some(&b'{') => j = skip_interpolation(b, j + 2),
            c if Some(c) == open => {
                depth += 1;
                j += 1;
            }
            c if c == close => {
                if depth == 0 {
                    return (j, j + 1);
                }
                depth -= 1;
                j += 1;
            }
            _ => j += 1,
        }
    }
    (b.len(), b.len())
}

/// From just inside `#{` to just after its `}`.
fn skip_interpolation(b: &[u8], start: usize) -> usize {
    let mut depth = 1;
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            q @ (b'"' | b'\'' | b'`') => {
                j = scan_quoted(b, j + 1, q, None, q != b'\'').1;
                continue;
            }
            b'\\' => j += 1,
            _ => {}
        }
        j += 1;
    }
    b.len()
}

/// `%q(...)`, `%Q[...]`, `%w{...}`, `%(...)`, ...: (body start, closing delimiter, opening
/// delimiter when it nests, interpolates). None for the modulo operator.
fn percent_literal(b: &[u8], i: usize) -> Option<(usize, u8, Option<u8>, bool)> {
    let next = *b.get(i + 1)?;
    let (kind, delim_at) = if b"qQwWiIrsx".contains(&next)
        && b.get(i + 2)
            .is_some_and(|d| !d.is_ascii_alphanumeric() && !d.is_ascii_whitespace())
    {
        (Some(next), i + 2)
    } else if b"([{<|!/^".contains(&next) && (operand_position(b, i) || command_argument(b, i)) {
        (None, i + 1)
    } else {
        return None;
    };
    let d = b[delim_at];
    let (close, open) = match d {
        b'(' => (b')', Some(b'(')),
        b'[' => (b']', Some(b'[')),
        b'{' => (b'}', Some(b'{')),
        b'<' => (b'>', Some(b'<')),
        other => (other, None),
    };
    let interp = !matches!(kind, Some(b'q' | b'w' | b'i' | b's'));
    Some((delim_at + 1, close, open, interp))
}

/// `<<~SQL`, `<<-EOS`, `<<SQL`, `<<~'SQL'`: the pending heredoc and the end of its opener.
fn heredoc_opener(b: &[u8], i: usize) -> Option<(PendingHeredoc, usize)> {
    let mut j = i + 2;
    let marker = b.get(j).copied();
    let (indented, squiggly) = match marker {
        Some(b'~') => (true, true),
        Some(b'-') => (true, false),
        _ => (false, false),
    };
    if indented {
        j += 1;
    }
    let (id, end) = match b.get(j).copied()? {
        q @ (b'\'' | b'"' | b'`') => {
            let close = b[j + 1..].iter().position(|&c| c == q || c == b'\n')? + j + 1;
            if b[close] != q {
                return None;
            }
            (
                String::from_utf8_lossy(&b[j + 1..close]).into_owned(),
                close + 1,
            )
        }
        c if is_ident_start(c) => {
            // A bare lowercase id after `<<` is more likely a shift or an append.
            if !indented && !c.is_ascii_uppercase() {
                return None;
            }
            let end = j + b[j..].iter().take_while(|c| is_ident(**c)).count();
            (String::from_utf8_lossy(&b[j..end]).into_owned(), end)
        }
        _ => return None,
    };
    // `x <<~EOS` yes; `class << self` (space) never reaches here.
    Some((
        PendingHeredoc {
            id,
            indented,
            squiggly,
            opener: i..end,
        },
        end,
    ))
}

/// Whether an operand (not an operator) is expected at `i`: after an opening bracket, an
/// operator, a comma, the start of a line, or a keyword such as `when`.
fn operand_position(b: &[u8], i: usize) -> bool {
    let mut p = i;
    while p > 0 && (b[p - 1] == b' ' || b[p - 1] == b'\t') {
        p -= 1;
    }
    if p == 0 {
        return true;
    }
    let c = b[p - 1];
    if b"(,=!~|&{[;:?+-*<>%^\n".contains(&c) {
        return true;
    }
    if is_ident(c) {
        let start = (0..p)
            .rev()
            .take_while(|&k| is_ident(b[k]))
            .last()
            .unwrap_or(p);
        let word = std::str::from_utf8(&b[start..p]).unwrap_or("");
        return EXPR_KEYWORDS.contains(&word);
    }
    false
}

/// `execute %(...)`: a word, a space, then the literal with no space after its delimiter.
fn command_argument(b: &[u8], i: usize) -> bool {
    i >= 2
        && b[i - 1] == b' '
        && is_ident(b[i - 2])
        && b.get(i + 2).is_some_and(|c| !c.is_ascii_whitespace())
}

/// `?a`, `?'`: a one-character string, not the ternary operator.
fn is_char_literal(b: &[u8], i: usize) -> bool {
    let (Some(&next), prev) = (b.get(i + 1), if i > 0 { b[i - 1] } else { b'\n' }) else {
        return false;
    };
    let after = b.get(if next == b'\\' { i + 3 } else { i + 2 }).copied();
    !next.is_ascii_whitespace()
        && (prev.is_ascii_whitespace() || b"(,[=".contains(&prev))
        && after.is_none_or(|c| !is_ident(c))
}

fn word_end(code: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < code.len() && is_ident(code[end]) {
        end += 1;
    }
    if end < code.len()
        && (code[end] == b'?' || code[end] == b'!')
        && code.get(end + 1) != Some(&b'=')
    {
        end += 1;
    }
    end
}

fn prev_non_space(code: &[u8], i: usize) -> Option<usize> {
    (0..i).rev().find(|&p| code[p] != b' ' && code[p] != b'\t')
}

/// `x.if`, `Foo::end`, `:if`: a method or a symbol, not a keyword.
fn preceded_by_dot_or_colon(code: &[u8], i: usize) -> bool {
    i > 0
        && (code[i - 1] == b'.'
            || code[i - 1] == b':'
            || code[i - 1] == b'@'
            || code[i - 1] == b'$')
}

/// `if: ...`, `end:`: a hash key (`::` is a constant path instead).
fn is_label(code: &[u8], end: usize) -> bool {
    code.get(end) == Some(&b':') && code.get(end + 1) != Some(&b':')
}

/// `name = ...` (not `==`, `=~`, `=>`).
fn is_assignment(code: &[u8], end: usize) -> bool {
    let mut j = end;
    while j < code.len() && (code[j] == b' ' || code[j] == b'\t') {
        j += 1;
    }
    code.get(j) == Some(&b'=') && !matches!(code.get(j + 1), Some(b'=' | b'~' | b'>'))
}

/// Whether a line break at `nl` continues the statement: a trailing comma, backslash,
/// operator or open bracket before it, or a leading `.` on the next line.
fn continues(code: &[u8], nl: usize) -> bool {
    if let Some(p) = prev_non_space(code, nl).filter(|&p| b",\\([{|&+-*/=<>".contains(&code[p])) {
        // `|t|` ends block parameters, not an expression.
        let params_end = code[p] == b'|'
            && code[..p]
                .iter()
                .rev()
                .take_while(|&&c| c != b'\n')
                .any(|&c| c == b'|');
        if !params_end {
            return true;
        }
    }
    let next = code[nl + 1..]
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .map(|p| nl + 1 + p);
    next.is_some_and(|p| {
        code[p] == b'.' && code.get(p + 1) != Some(&b'.') || code[p..].starts_with(b"&.")
    })
}

/// Whether `if`/`while`/... at `i` starts an expression (opens a block), rather than being a
/// modifier after one (`x if y`).
fn starts_expression(code: &[u8], i: usize, stmt_start: usize) -> bool {
    if code[stmt_start.min(i)..i]
        .iter()
        .all(|c| c.is_ascii_whitespace())
    {
        return true;
    }
    operand_position(code, i)
}

/// Whether a call may start after the character at `p`: a statement or argument boundary.
fn call_can_start_after(code: &[u8], p: usize, text: &str) -> bool {
    if b"\n;{|(=,[".contains(&code[p]) {
        return true;
    }
    if is_ident(code[p]) {
        let start = (0..=p)
            .rev()
            .take_while(|&k| is_ident(code[k]))
            .last()
            .unwrap_or(p);
        return matches!(
            &text[start..=p],
            "do" | "then" | "else" | "begin" | "ensure"
        );
    }
    false
}

/// The word before `.` at `dot` (the receiver) and where the whole chain starts.
fn receiver_before(code: &[u8], dot: usize) -> (String, usize) {
    let end = prev_non_space(code, dot).map_or(0, |p| p + 1);
    let start = (0..end)
        .rev()
        .take_while(|&k| is_ident(code[k]))
        .last()
        .unwrap_or(end);
    let receiver = String::from_utf8_lossy(&code[start..end]).into_owned();
    // Walk back over the rest of the chain (`ActiveRecord::Base.connection`) for the start.
    let mut chain = start;
    while chain > 0 && (is_ident(code[chain - 1]) || matches!(code[chain - 1], b'.' | b':')) {
        chain -= 1;
    }
    (receiver, chain)
}

/// `{` opens a block after a method name or a closing bracket; elsewhere it is a hash.
fn brace_is_block(code: &[u8], i: usize) -> bool {
    match prev_non_space(code, i) {
        Some(p) if code[p] == b')' || code[p] == b']' => true,
        Some(p) if is_ident(code[p]) || code[p] == b'?' || code[p] == b'!' => {
            let start = (0..=p)
                .rev()
                .take_while(|&k| is_ident(code[k]) || code[k] == b'?' || code[k] == b'!')
                .last()
                .unwrap_or(p);
            let word = std::str::from_utf8(&code[start..=p]).unwrap_or("");
            // `return {`, `when {`...: an expression (a hash) follows a keyword.
            !EXPR_KEYWORDS.contains(&word)
        }
        Some(p) => code[p] == b'>' && p > 0 && code[p - 1] == b'-', // `-> {`
        None => false,
    }
}

/// `|a, b|` right after a block opener: the names and where the body starts.
fn block_params(code: &[u8], from: usize) -> (Vec<String>, usize) {
    let mut j = from;
    while j < code.len() && (code[j] == b' ' || code[j] == b'\t') {
        j += 1;
    }
    if code.get(j) != Some(&b'|') {
        return (Vec::new(), from);
    }
    let Some(close) = code[j + 1..]
        .iter()
        .position(|&c| c == b'|' || c == b'\n')
        .map(|p| j + 1 + p)
    else {
        return (Vec::new(), from);
    };
    if code[close] != b'|' {
        return (Vec::new(), from);
    }
    let params = String::from_utf8_lossy(&code[j + 1..close])
        .split(',')
        .map(|p| p.trim().trim_start_matches(['*', '&']).to_string())
        .filter(|p| !p.is_empty())
        .collect();
    (params, close + 1)
}

/// `def name`, `def self.name`, `def name(args)`, `def name = expr` (endless: no `end`).
/// Returns (name, end of the signature, endless).
fn def_signature(code: &[u8], after_def: usize) -> (String, usize, bool) {
    let mut j = after_def;
    while j < code.len() && (code[j] == b' ' || code[j] == b'\t') {
        j += 1;
    }
    if code[j..].starts_with(b"self.") {
        j += 5;
    }
    let name_start = j;
    j = word_end(code, j);
    if j == name_start {
        // An operator method (`def ==(other)`): take up to the parameters.
        while j < code.len() && !code[j].is_ascii_whitespace() && code[j] != b'(' {
            j += 1;
        }
    }
    let name = String::from_utf8_lossy(&code[name_start..j]).into_owned();
    if code.get(j) == Some(&b'(') {
        let mut depth = 0;
        while j < code.len() {
            match code[j] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
    }
    let endless = is_assignment(code, j);
    (name, j, endless)
}

/// Removes the common leading indentation (what `<<~` does).
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// At most `max` characters, with `...` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(text: &str) -> String {
        Source::new(text).code
    }

    #[test]
    fn comments_strings_and_heredocs_are_blanked_with_lines_kept() {
        let text = "a # remove_column :x\nb \"drop_table :y\"\nexecute <<~SQL\n  DROP TABLE z\nSQL\nc\n=begin\nremove_column\n=end\nd 'it''s'\n";
        let src = Source::new(text);
        assert_eq!(src.code.len(), text.len());
        assert_eq!(src.code.lines().count(), text.lines().count());
        assert!(!src.code.contains("remove_column"), "{}", src.code);
        assert!(!src.code.contains("drop_table"));
        assert!(!src.code.contains("DROP"));
        assert!(src.code.contains("execute"));
        assert_eq!(src.line_of(text.find("\nc\n").unwrap() + 1), 6);
        let values: Vec<&str> = src.strings.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(values, ["drop_table :y", "DROP TABLE z", "it", "s"]);
        // The heredoc's value is anchored at its opener, on the `execute` line.
        assert_eq!(src.line_of(src.strings[1].at.start), 3);
    }

    #[test]
    fn interpolation_may_hold_quotes() {
        let src = Source::new("x = \"a #{b.join(\", \")} c\"\nremove_column :t, :c\n");
        assert_eq!(src.strings.len(), 1);
        assert_eq!(src.strings[0].value, "a #{b.join(\", \")} c");
        assert!(src.code.contains("remove_column :t, :c"));
    }

    #[test]
    fn percent_literals_and_modulo() {
        assert!(!masked("execute %q(DROP TABLE x)").contains("DROP"));
        assert!(!masked("execute %Q{DELETE FROM #{t}}").contains("DELETE"));
        assert!(!masked("execute %(TRUNCATE x)").contains("TRUNCATE"));
        assert!(!masked("cols = %w[a b]").contains('a'));
        assert!(masked("x = a % b").contains("a % b"));
        assert!(masked("x = a %(b)").contains("x = a"));
    }

    #[test]
    fn regexps_chars_and_divisions() {
        assert!(!masked("x = y =~ /remove_column/").contains("remove_column"));
        assert!(masked("z = a / b / c").contains("a / b / c"));
        assert!(!masked("c = ?' ; remove_column").contains("?'"));
        assert!(masked("ok = valid? ? 1 : 2").contains("valid? ? 1 : 2"));
    }

    #[test]
    fn heredoc_variants() {
        for text in [
            "execute <<-SQL\n  DELETE FROM x\n  SQL\n",
            "execute <<SQL\nDELETE FROM x\nSQL\n",
            "execute(<<~'SQL')\n  DELETE FROM x\nSQL\n",
        ] {
            let src = Source::new(text);
            assert_eq!(src.strings.len(), 1, "{text}");
            assert_eq!(src.strings[0].value.trim(), "DELETE FROM x", "{text}");
            assert!(!src.code.contains("DELETE"), "{text}");
        }
        // Two heredocs on one line: bodies in order.
        let src = Source::new("f(<<~A, <<~B)\n  one\nA\n  two\nB\ng\n");
        let values: Vec<&str> = src.strings.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(values, ["one", "two"]);
        assert!(src.code.ends_with("g\n"));
        assert!(masked("class << self\n  def x; end\nend\n").contains("<< self"));
    }

    #[test]
    fn defs_and_blocks() {
        let text = "class M < ActiveRecord::Migration[6.1]\n  def change\n    reversible do |dir|\n      dir.up { execute \"x\" }\n      dir.down do\n        execute \"y\" if true\n      end\n    end\n    add_column :t, :c, :string unless column_exists?(:t, :c)\n  end\n\n  def self.down\n    remove_column :t, :c\n  end\nend\n";
        let src = Source::new(text);
        let defs = src.defs();
        assert_eq!(
            defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["change", "down"]
        );
        let change = &src.code[defs[0].body.clone()];
        assert!(change.contains("add_column") && !change.contains("remove_column"));
        let owners: Vec<(String, Vec<String>)> = src
            .blocks()
            .into_iter()
            .map(|b| (b.owner, b.params))
            .collect();
        assert_eq!(
            owners,
            [
                ("reversible".to_string(), vec!["dir".to_string()]),
                ("dir.up".to_string(), vec![]),
                ("dir.down".to_string(), vec![])
            ]
        );
    }

    #[test]
    fn calls_with_and_without_parentheses() {
        let text = "def change\n  remove_column :users, :name, :string\n  remove_index(:users, column: :email)\n  t.remove :x\n  connection.execute(\"DROP TABLE y\")\n  drop_table :z do |t|\n    t.string :a\n  end\n  x = change_column_null :a, :b, false\n  add_column :a, :remove_column, :string\nend\n";
        let src = Source::new(text);
        let calls = src.calls(
            0..text.len(),
            &[
                "remove_column",
                "remove_index",
                "remove",
                "execute",
                "drop_table",
                "change_column_null",
            ],
        );
        let seen: Vec<(&str, &str, u32, bool)> = calls
            .iter()
            .map(|c| {
                (
                    c.method.as_str(),
                    c.receiver.as_str(),
                    src.line_of(c.start),
                    c.has_block,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("remove_column", "", 2, false),
                ("remove_index", "", 3, false),
                ("remove", "t", 4, false),
                ("execute", "connection", 5, false),
                ("drop_table", "", 6, true),
                ("change_column_null", "", 9, false)
            ]
        );
        assert_eq!(
            src.args(&calls[0]),
            [
                Arg::Positional("users".into()),
                Arg::Positional("name".into()),
                Arg::Positional("string".into())
            ]
        );
        assert_eq!(
            src.args(&calls[1]),
            [
                Arg::Positional("users".into()),
                Arg::Keyword("column".into(), "email".into())
            ]
        );
        assert_eq!(src.string_args(&calls[3]), ["DROP TABLE y"]);
        assert_eq!(src.args(&calls[4]), [Arg::Positional("z".into())]);
        assert_eq!(src.args(&calls[5])[2], Arg::Positional("false".into()));
    }

    #[test]
    fn a_call_continues_over_lines_after_a_comma() {
        let text = "remove_column :users,\n  :nickname,\n  :string\nadd_column :a, :b, :c\n";
        let src = Source::new(text);
        let calls = src.calls(0..text.len(), &["remove_column"]);
        assert_eq!(src.args(&calls[0]).len(), 3);
    }

    #[test]
    fn assigned_heredoc_is_found() {
        let text = "def up\n  sql = <<~SQL\n    DELETE FROM sessions\n  SQL\n  execute sql\nend\n";
        let src = Source::new(text);
        assert_eq!(
            src.assigned_strings("sql", 0..text.find("execute").unwrap()),
            ["DELETE FROM sessions"]
        );
    }
}
