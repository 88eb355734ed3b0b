//! Any program as a CI source: for CI systems without a built-in source (GitLab, Jenkins, a
//! `gh` one-liner, a file a pipeline writes).
//!
//! The program is `command` from deploy.toml (argv, no shell), run in the project root with
//! the host's environment plus `HOST_CI_SHA`; `{sha}` in an argument is replaced by the
//! revision. It prints:
//!
//! ```text
//! STATE [DETAIL]          first line: pending | running | success | failure, then one line of text
//! job: NAME               on failure, zero or more lines naming the failing jobs
//! ...                     any other line: a log excerpt for the notification
//! ```
//!
//! (`queued`, `in_progress`, `passed` and `failed` are accepted as synonyms.) Its exit status
//! does not matter when the first line is valid; when it is not, the look counts as "could
//! not ask" and is retried at the next interval.

use super::{CiState, CiStatus};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A status command that takes longer than this is killed and retried later.
const TIMEOUT: Duration = Duration::from_secs(60);
const EXCERPT_LINES: usize = 30;

pub struct CommandSource {
    argv: Vec<String>,
    root: PathBuf,
}

impl CommandSource {
    pub fn new(argv: Vec<String>, root: PathBuf) -> CommandSource {
        CommandSource { argv, root }
    }

    pub fn describe(&self) -> String {
        format!("`{}`", self.argv.join(" "))
    }

    pub fn argv_for(&self, sha: &str) -> Vec<String> {
        self.argv.iter().map(|a| a.replace("{sha}", sha)).collect()
    }

    pub async fn status(&self, sha: &str) -> Result<CiStatus, String> {
        let argv = self.argv_for(sha);
        let (program, args) = argv.split_first().ok_or("the CI command is empty")?;
        let program = if program.contains('/') {
            self.root.join(program)
        } else {
            PathBuf::from(program)
        };
        let child = tokio::process::Command::new(&program)
            .args(args)
            .current_dir(&self.root)
            .env("HOST_CI_SHA", sha)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run the CI command {}: {e}", self.describe()))?;
        let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                format!(
                    "the CI command {} took more than {}s",
                    self.describe(),
                    TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("the CI command {}: {e}", self.describe()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        parse(&stdout).ok_or_else(|| {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.trim().lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
            format!(
                "the CI command {} printed no status (exit {}; expected `pending|running|success|failure [details]`){}",
                self.describe(),
                output.status.code().map_or("by signal".into(), |c| c.to_string()),
                if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" / ")) }
            )
        })
    }
}

/// Reads the command's output (see the module documentation).
pub fn parse(stdout: &str) -> Option<CiStatus> {
    let mut lines = stdout.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next()?.trim();
    let (word, detail) = first.split_once(char::is_whitespace).unwrap_or((first, ""));
    let state = CiState::parse(word)?;
    let mut status = CiStatus::new(state, detail.trim());
    let mut excerpt = Vec::new();
    for line in lines {
        if let Some(job) = line.trim().strip_prefix("job:") {
            status.failing_jobs.push(job.trim().to_string());
        } else if let Some(url) = line.trim().strip_prefix("url:") {
            status.url = Some(url.trim().to_string());
        } else {
            excerpt.push(line);
        }
    }
    while excerpt.last().is_some_and(|l| l.trim().is_empty()) {
        excerpt.pop();
    }
    if state == CiState::Failure && !excerpt.is_empty() {
        let start = excerpt.len().saturating_sub(EXCERPT_LINES);
        status.log_excerpt = Some(excerpt[start..].join("\n"));
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_state_then_jobs_and_an_excerpt() {
        let s = parse("failure 2 of 3 jobs failed\njob: tests\njob: lint\nurl: https://ci/1\nE assert 1 == 2\n\n").unwrap();
        assert_eq!(s.state, CiState::Failure);
        assert_eq!(s.detail, "2 of 3 jobs failed");
        assert_eq!(s.failing_jobs, vec!["tests", "lint"]);
        assert_eq!(s.url.as_deref(), Some("https://ci/1"));
        assert_eq!(s.log_excerpt.as_deref(), Some("E assert 1 == 2"));
        assert_eq!(parse("\nrunning\n").unwrap().state, CiState::Running);
        assert_eq!(parse("in_progress 3 jobs").unwrap().detail, "3 jobs");
        assert!(parse("").is_none() && parse("ok").is_none());
    }

    #[tokio::test]
    async fn the_sha_is_passed_and_a_silent_program_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = CommandSource::new(
            vec![
                "sh".into(),
                "-c".into(),
                "echo success built $HOST_CI_SHA {sha}".into(),
            ],
            dir.path().into(),
        );
        let s = source.status("abc123").await.unwrap();
        assert_eq!(
            (s.state, s.detail.as_str()),
            (CiState::Success, "built abc123 abc123")
        );
        let silent = CommandSource::new(
            vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            dir.path().into(),
        );
        let e = silent.status("abc").await.unwrap_err();
        assert!(
            e.contains("printed no status (exit 3") && e.contains("oops"),
            "{e}"
        );
    }
}
