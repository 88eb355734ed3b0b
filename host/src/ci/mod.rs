//! CI verdicts on one exact revision, for the `deploy-first` strategy: the host deployed a
//! commit before CI finished with it, and asks here, poll after poll, what CI says.
//!
//! Two sources: GitHub Actions through its REST API ([`github`]), and any program that prints
//! a status line ([`command`]). Both answer the same question with a [`CiStatus`]; only when
//! the answer is a failure are the failing jobs' names and a log excerpt looked up, because
//! that is what the rollback notification tells people.
//!
//! An error (`Err`) means "could not ask this time" (network, rate limit, a bad token): the
//! watcher records it and asks again at the next interval; it is never a verdict.

pub mod command;
pub mod github;

use crate::config::{CiConfig, CiSourceKind};
use serde::Serialize;
use std::path::Path;

/// What CI says about a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CiState {
    /// Nothing started for the revision yet.
    Pending,
    /// Started, not finished.
    Running,
    Success,
    Failure,
}

impl CiState {
    pub fn as_str(self) -> &'static str {
        match self {
            CiState::Pending => "pending",
            CiState::Running => "running",
            CiState::Success => "success",
            CiState::Failure => "failure",
        }
    }

    pub fn parse(word: &str) -> Option<CiState> {
        match word.to_ascii_lowercase().as_str() {
            "pending" | "queued" => Some(CiState::Pending),
            "running" | "in_progress" => Some(CiState::Running),
            "success" | "passed" => Some(CiState::Success),
            "failure" | "failed" => Some(CiState::Failure),
            _ => None,
        }
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CiStatus {
    pub state: CiState,
    /// One line for people: which workflows, how many done, what failed.
    pub detail: String,
    /// Where to look (a workflow run's page), when known.
    pub url: Option<String>,
    /// On failure: the failing jobs (or checks) by name, when the source says.
    pub failing_jobs: Vec<String>,
    /// On failure: the interesting part of a failing job's log.
    pub log_excerpt: Option<String>,
}

impl CiStatus {
    pub fn new(state: CiState, detail: impl Into<String>) -> CiStatus {
        CiStatus {
            state,
            detail: detail.into(),
            url: None,
            failing_jobs: Vec::new(),
            log_excerpt: None,
        }
    }
}

/// A configured source.
pub enum CiSource {
    Github(github::Github),
    Command(command::CommandSource),
}

impl CiSource {
    /// The source an environment's `[ci]` table names. Commands run in the project root.
    pub fn from_config(config: &CiConfig, root: &Path) -> Result<CiSource, String> {
        match config.source {
            CiSourceKind::Github => {
                let repo = config
                    .repo
                    .clone()
                    .ok_or("the GitHub source needs `repo = \"owner/name\"`")?;
                let token = std::env::var(&config.token_env)
                    .ok()
                    .filter(|t| !t.trim().is_empty());
                if token.is_none() {
                    tracing::warn!(
                        "${} is not set: asking GitHub without a token (public repositories only, 60 requests an hour)",
                        config.token_env
                    );
                }
                // `${GITHUB_API_URL:-https://api.github.com}` works: Actions runners set it.
                let api = crate::config::expand_env(&config.api);
                Ok(CiSource::Github(github::Github::new(
                    &api,
                    &repo,
                    token,
                    config.workflows.clone(),
                )))
            }
            CiSourceKind::Command => Ok(CiSource::Command(command::CommandSource::new(
                config.command.clone(),
                root.to_path_buf(),
            ))),
        }
    }

    /// For messages: `GitHub Actions on owner/name`, `` `./ci-status {sha}` ``.
    pub fn describe(&self) -> String {
        match self {
            CiSource::Github(g) => g.describe(),
            CiSource::Command(c) => c.describe(),
        }
    }

    pub async fn status(&self, sha: &str) -> Result<CiStatus, String> {
        match self {
            CiSource::Github(g) => g.status(sha).await,
            CiSource::Command(c) => c.status(sha).await,
        }
    }

    /// Fills in the failing jobs and a log excerpt of a failed status, as far as the source
    /// can tell; never fails (the rollback goes ahead without details).
    pub async fn explain(&self, sha: &str, status: &mut CiStatus) {
        if let CiSource::Github(g) = self {
            g.explain(sha, status).await;
        }
    }
}

/// The part of a CI log worth reading in a notification: the first error with some lines of
/// context before it, up to the last error; else the log's tail. GitHub's per-line timestamps
/// and workflow command markers are removed, and the result is capped at `max` characters
/// (the end is kept: that is where the failure is).
pub fn log_excerpt(log: &str, max: usize) -> String {
    const CONTEXT: usize = 5;
    const TAIL: usize = 15;
    let lines: Vec<String> = log
        .lines()
        .map(clean_line)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("error:") || l.contains("Error") || l.contains("FAILED"))
        .map(|(i, _)| i)
        .collect();
    let picked: &[String] = match (errors.first(), errors.last()) {
        (Some(&first), Some(&last)) => &lines[first.saturating_sub(CONTEXT)..=last.min(first + 30)],
        _ => &lines[lines.len().saturating_sub(TAIL)..],
    };
    let text = picked.join("\n");
    if text.chars().count() <= max {
        return text;
    }
    let skip = text.chars().count() - max;
    format!("…{}", text.chars().skip(skip + 1).collect::<String>())
}

fn clean_line(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    // `2024-05-01T10:00:00.1234567Z ` prefixes every line of an Actions job log.
    let line = match line.split_once(' ') {
        Some((stamp, rest))
            if stamp.len() >= 20
                && stamp.ends_with('Z')
                && stamp.as_bytes()[4] == b'-'
                && stamp.contains('T') =>
        {
            rest
        }
        _ => line,
    };
    if let Some(rest) = line.strip_prefix("##[error]") {
        return format!("error: {rest}");
    }
    for marker in [
        "##[group]",
        "##[endgroup]",
        "##[warning]",
        "##[notice]",
        "##[debug]",
    ] {
        if let Some(rest) = line.strip_prefix(marker) {
            return rest.to_string();
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_starts_a_little_before_the_first_error_without_timestamps() {
        let log = "2024-05-01T10:00:00.0000000Z ##[group]Run pytest\n\
                   2024-05-01T10:00:01.0000000Z collected 3 items\n\
                   2024-05-01T10:00:02.0000000Z tests/test_app.py::test_total FAILED\n\
                   2024-05-01T10:00:02.5000000Z E   assert 41 == 42\n\
                   2024-05-01T10:00:03.0000000Z ##[error]Process completed with exit code 1.\n\
                   2024-05-01T10:00:04.0000000Z Post job cleanup.\n";
        let excerpt = log_excerpt(log, 1000);
        assert_eq!(
            excerpt,
            "Run pytest\ncollected 3 items\ntests/test_app.py::test_total FAILED\nE   assert 41 == 42\nerror: Process completed with exit code 1."
        );
        assert!(
            log_excerpt(log, 20).ends_with("exit code 1.")
                && log_excerpt(log, 20).chars().count() <= 20
        );
    }

    #[test]
    fn without_errors_the_tail_is_kept() {
        let log: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let excerpt = log_excerpt(&log, 10_000);
        assert!(
            excerpt.starts_with("line 26") && excerpt.ends_with("line 40"),
            "{excerpt}"
        );
    }

    #[test]
    fn states_parse_with_the_usual_synonyms() {
        assert_eq!(CiState::parse("SUCCESS"), Some(CiState::Success));
        assert_eq!(CiState::parse("in_progress"), Some(CiState::Running));
        assert_eq!(CiState::parse("failed"), Some(CiState::Failure));
        assert_eq!(CiState::parse("green"), None);
    }
}
