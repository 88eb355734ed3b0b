//! Finding where a key sits in the TOML text, for errors found after deserialization.

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// Byte offset of a dotted key path such as `environments.staging.probes[0].path`:
/// the deepest part of the path that exists in the document.
pub fn key_offset(text: &str, path: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut best = None;
    for part in split_path(path) {
        let next = match &part {
            Part::Key(k) => item.get(k.as_str()),
            Part::Index(i) => item.get(*i),
        };
        let Some(next) = next else { break };
        best = next.span().map(|s| s.start).or(best);
        // Prefer the key itself: that is the line a person looks for.
        if let (Part::Key(k), Some(table)) = (&part, item.as_table_like())
            && let Some((key, _)) = table.get_key_value(k)
        {
            best = key.span().map(|s| s.start).or(best);
        }
        item = next;
    }
    best
}

enum Part {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    for segment in path.split('.') {
        let mut rest = segment;
        if let Some(open) = rest.find('[') {
            parts.push(Part::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    parts.push(Part::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else if !rest.is_empty() {
            parts.push(Part::Key(rest.to_string()));
        }
    }
    parts
}
