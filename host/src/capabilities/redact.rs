//! Keeping secrets out of what is shown and recorded: granted environment values (a database
//! URL with its password) and passwords inside URLs are masked in argv and log lines.

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, replacement) pairs, longest value first so overlapping secrets mask fully.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub fn from_env(names: &[String]) -> Redactor {
        let mut secrets: Vec<(String, String)> = names
            .iter()
            .filter_map(|n| std::env::var(n).ok().map(|v| (v, format!("${n}"))))
            // Short values ("1", "true") are not secrets worth masking and would mangle text.
            .filter(|(v, _)| v.len() >= 8)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, name) in &self.secrets {
            out = out.replace(value, name);
        }
        mask_url_passwords(&out)
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon + 1]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_passwords("pg_dump --dbname postgres://app:s3cret@db:5432/app -F c"),
            "pg_dump --dbname postgres://app:***@db:5432/app -F c"
        );
        assert_eq!(mask_url_passwords("http://127.0.0.1:8000/health"), "http://127.0.0.1:8000/health");
    }

    #[test]
    fn granted_values_become_their_names() {
        let r = Redactor { secrets: vec![("tok-123456789".into(), "$RENDER_API_KEY".into())] };
        assert_eq!(r.redact("Bearer tok-123456789"), "Bearer $RENDER_API_KEY");
    }
}
