//! GitHub Actions as a CI source, through the REST API (version 2022-11-28).
//!
//! For a commit SHA it reads the workflow runs (`GET /repos/{o}/{r}/actions/runs?head_sha=SHA`)
//! and the check runs (`GET /repos/{o}/{r}/commits/{sha}/check-runs`, which also covers checks
//! from other apps). Nothing yet: pending. Anything not completed: running. All completed: a
//! failure if any run or check concluded `failure`, `timed_out`, `cancelled`,
//! `action_required`, `startup_failure` or `stale`, else a success (`success`, `neutral` and
//! `skipped` pass). With `workflows` set, only those workflows count and check runs are
//! ignored (a documentation workflow failing then never rolls back the app).
//!
//! On failure, the failing jobs come from `GET /repos/{o}/{r}/actions/runs/{id}/jobs`, and a log
//! excerpt from `GET /repos/{o}/{r}/actions/jobs/{job_id}/logs`, which answers 302 with a
//! short-lived download URL on another host. The redirect is followed by hand, without the
//! `Authorization` header: the token goes to the API and nowhere else, and is never printed.

use super::{CiState, CiStatus, log_excerpt};
use serde::Deserialize;
use std::time::Duration;

const API_VERSION: &str = "2022-11-28";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Failing jobs whose logs are fetched; more would slow the rollback for little.
const LOGS_FETCHED: usize = 2;
/// Characters of log per notification: Discord caps a message at 2000.
const EXCERPT_CHARS: usize = 1200;
const FAILED: &[&str] = &[
    "failure",
    "timed_out",
    "cancelled",
    "action_required",
    "startup_failure",
    "stale",
];

pub struct Github {
    api: String,
    repo: String,
    token: Option<String>,
    workflows: Vec<String>,
    client: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct WorkflowRuns {
    workflow_runs: Vec<WorkflowRun>,
}

#[derive(Debug, Deserialize)]
struct WorkflowRun {
    id: u64,
    name: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckRuns {
    check_runs: Vec<CheckRun>,
}

#[derive(Debug, Deserialize)]
struct CheckRun {
    name: String,
    status: String,
    conclusion: Option<String>,
    html_url: Option<String>,
    app: Option<App>,
    output: Option<CheckOutput>,
}

#[derive(Debug, Deserialize)]
struct App {
    slug: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckOutput {
    title: Option<String>,
    summary: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Jobs {
    jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
struct Job {
    id: u64,
    name: String,
    conclusion: Option<String>,
    #[serde(default)]
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    name: String,
    conclusion: Option<String>,
}

/// Something that finished, or not, with a name.
struct Item<'a> {
    kind: &'static str,
    name: &'a str,
    status: &'a str,
    conclusion: Option<&'a str>,
    url: Option<&'a str>,
}

impl Github {
    pub fn new(api: &str, repo: &str, token: Option<String>, workflows: Vec<String>) -> Github {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deploy-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend available");
        Github {
            api: api.trim_end_matches('/').to_string(),
            repo: repo.to_string(),
            token,
            workflows,
            client,
        }
    }

    pub fn describe(&self) -> String {
        format!("GitHub Actions on {}", self.repo)
    }

    pub async fn status(&self, sha: &str) -> Result<CiStatus, String> {
        let runs: WorkflowRuns = self
            .get_json(&format!("actions/runs?head_sha={sha}&per_page=100"))
            .await?;
        let runs: Vec<WorkflowRun> = runs
            .workflow_runs
            .into_iter()
            .filter(|r| {
                self.workflows.is_empty()
                    || r.name
                        .as_deref()
                        .is_some_and(|n| self.workflows.iter().any(|w| w == n))
            })
            .collect();
        let checks: Vec<CheckRun> = if self.workflows.is_empty() {
            self.get_json::<CheckRuns>(&format!("commits/{sha}/check-runs?per_page=100"))
                .await?
                .check_runs
        } else {
            Vec::new()
        };
        let mut items: Vec<Item> = runs
            .iter()
            .map(|r| Item {
                kind: "workflow",
                name: r.name.as_deref().unwrap_or("workflow"),
                status: r.status.as_deref().unwrap_or("queued"),
                conclusion: r.conclusion.as_deref(),
                url: r.html_url.as_deref(),
            })
            .collect();
        // Actions jobs are check runs too; they are already counted through their workflow run.
        items.extend(
            checks
                .iter()
                .filter(|c| runs.is_empty() || !is_actions(c))
                .map(|c| Item {
                    kind: "check",
                    name: &c.name,
                    status: &c.status,
                    conclusion: c.conclusion.as_deref(),
                    url: c.html_url.as_deref(),
                }),
        );
        Ok(verdict(&items, sha))
    }

    /// Failing jobs by name (`workflow / job (step)`) and an excerpt of the first ones' logs.
    pub async fn explain(&self, sha: &str, status: &mut CiStatus) {
        let Ok(runs) = self
            .get_json::<WorkflowRuns>(&format!("actions/runs?head_sha={sha}&per_page=100"))
            .await
        else {
            return;
        };
        let mut names = Vec::new();
        let mut excerpts = Vec::new();
        for run in runs
            .workflow_runs
            .iter()
            .filter(|r| r.conclusion.as_deref().is_some_and(|c| FAILED.contains(&c)))
        {
            if !self.workflows.is_empty()
                && !run
                    .name
                    .as_deref()
                    .is_some_and(|n| self.workflows.iter().any(|w| w == n))
            {
                continue;
            }
            let Ok(jobs) = self
                .get_json::<Jobs>(&format!("actions/runs/{}/jobs?per_page=100", run.id))
                .await
            else {
                continue;
            };
            for job in jobs
                .jobs
                .iter()
                .filter(|j| j.conclusion.as_deref().is_some_and(|c| FAILED.contains(&c)))
            {
                let step = job
                    .steps
                    .iter()
                    .find(|s| s.conclusion.as_deref().is_some_and(|c| FAILED.contains(&c)));
                names.push(match step {
                    Some(step) => format!(
                        "{} / {} (step `{}`)",
                        run.name.as_deref().unwrap_or("workflow"),
                        job.name,
                        step.name
                    ),
                    None => format!(
                        "{} / {}",
                        run.name.as_deref().unwrap_or("workflow"),
                        job.name
                    ),
                });
                if excerpts.len() < LOGS_FETCHED {
                    match self.job_log(job.id).await {
                        Ok(log) => excerpts.push(format!(
                            "[{}]\n{}",
                            job.name,
                            log_excerpt(&log, EXCERPT_CHARS / LOGS_FETCHED)
                        )),
                        Err(e) => tracing::warn!("log of job {}: {e}", job.id),
                    }
                }
            }
        }
        // Checks from other apps have no job log; their output's title and summary say why.
        if self.workflows.is_empty()
            && let Ok(checks) = self
                .get_json::<CheckRuns>(&format!("commits/{sha}/check-runs?per_page=100"))
                .await
        {
            for c in checks.check_runs.iter().filter(|c| {
                !is_actions(c) && c.conclusion.as_deref().is_some_and(|x| FAILED.contains(&x))
            }) {
                names.push(format!("check {}", c.name));
                let text = c
                    .output
                    .iter()
                    .flat_map(|o| [o.title.as_deref(), o.summary.as_deref()])
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n");
                if excerpts.len() < LOGS_FETCHED && !text.is_empty() {
                    excerpts.push(format!(
                        "[{}]\n{}",
                        c.name,
                        log_excerpt(&text, EXCERPT_CHARS / LOGS_FETCHED)
                    ));
                }
            }
        }
        if !names.is_empty() {
            status.failing_jobs = names;
        }
        if !excerpts.is_empty() {
            status.log_excerpt = Some(excerpts.join("\n"));
        }
    }

    /// A job's log: the API answers 302 to a download URL, fetched without our token.
    async fn job_log(&self, job_id: u64) -> Result<String, String> {
        let response = self
            .request(&format!("actions/jobs/{job_id}/logs"))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or("GitHub redirected the log download without a Location")?
                .to_string();
            let download = self
                .client
                .get(&location)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| self.transport(e))?;
            if !download.status().is_success() {
                return Err(format!("the log download answered {}", download.status()));
            }
            return download.text().await.map_err(|e| self.transport(e));
        }
        if status.is_success() {
            return response.text().await.map_err(|e| self.transport(e));
        }
        Err(self.api_error(status, &response.text().await.unwrap_or_default()))
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/repos/{}/{path}", self.api, self.repo);
        let mut request = self
            .client
            .get(url)
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let response = self
            .request(path)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(self.api_error(status, &body));
        }
        serde_json::from_str(&body)
            .map_err(|e| format!("GitHub's answer to {path} is not what was expected: {e}"))
    }

    /// Never includes the URL's query or any header: only what went wrong.
    fn transport(&self, e: reqwest::Error) -> String {
        let e = e.without_url();
        if e.is_timeout() {
            format!(
                "GitHub did not answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            )
        } else if e.is_connect() {
            format!("cannot reach GitHub at {}: {e}", self.api)
        } else {
            format!("GitHub request failed: {e}")
        }
    }

    fn api_error(&self, status: reqwest::StatusCode, body: &str) -> String {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_default();
        let hint = match status.as_u16() {
            401 => " (check the token in the variable `token_env` names)".to_string(),
            403 | 429 if message.to_lowercase().contains("rate limit") => {
                " (rate limited: asking again later)".to_string()
            }
            403 => " (the token needs read access to Actions and checks)".to_string(),
            404 => format!(
                " (check `repo = \"{}\"` and that the token can read it)",
                self.repo
            ),
            _ => String::new(),
        };
        let message = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        format!("GitHub answered {status}{message}{hint}")
    }
}

fn is_actions(c: &CheckRun) -> bool {
    c.app.as_ref().and_then(|a| a.slug.as_deref()) == Some("github-actions")
}

fn verdict(items: &[Item], sha: &str) -> CiStatus {
    let short = &sha[..sha.len().min(10)];
    if items.is_empty() {
        return CiStatus::new(
            CiState::Pending,
            format!("no workflow run or check for {short} yet"),
        );
    }
    let unfinished: Vec<&Item> = items.iter().filter(|i| i.status != "completed").collect();
    let first_url = items.iter().find_map(|i| i.url).map(String::from);
    if !unfinished.is_empty() {
        let done = items.len() - unfinished.len();
        let names: Vec<String> = unfinished
            .iter()
            .map(|i| format!("{} {} ({})", i.kind, i.name, i.status))
            .collect();
        let mut status = CiStatus::new(
            CiState::Running,
            format!(
                "{done} of {} done; waiting for {}",
                items.len(),
                names.join(", ")
            ),
        );
        status.url = unfinished
            .iter()
            .find_map(|i| i.url)
            .map(String::from)
            .or(first_url);
        return status;
    }
    let failed: Vec<&Item> = items
        .iter()
        .filter(|i| i.conclusion.is_some_and(|c| FAILED.contains(&c)))
        .collect();
    if failed.is_empty() {
        let mut status = CiStatus::new(
            CiState::Success,
            format!(
                "{} passed",
                plural(items.len(), "workflow or check", "workflows and checks")
            ),
        );
        status.url = first_url;
        return status;
    }
    let names: Vec<String> = failed
        .iter()
        .map(|i| format!("{} {} ({})", i.kind, i.name, i.conclusion.unwrap_or("?")))
        .collect();
    let mut status = CiStatus::new(CiState::Failure, format!("failed: {}", names.join(", ")));
    status.failing_jobs = failed.iter().map(|i| i.name.to_string()).collect();
    status.url = failed
        .iter()
        .find_map(|i| i.url)
        .map(String::from)
        .or(first_url);
    status
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(name: &'a str, status: &'a str, conclusion: Option<&'a str>) -> Item<'a> {
        Item {
            kind: "workflow",
            name,
            status,
            conclusion,
            url: None,
        }
    }

    #[test]
    fn nothing_is_pending_unfinished_is_running_any_failure_fails() {
        assert_eq!(verdict(&[], "abc").state, CiState::Pending);
        let running = verdict(
            &[
                item("CI", "completed", Some("success")),
                item("Docs", "in_progress", None),
            ],
            "abc",
        );
        assert_eq!(running.state, CiState::Running);
        assert_eq!(
            running.detail,
            "1 of 2 done; waiting for workflow Docs (in_progress)"
        );
        let green = verdict(
            &[
                item("CI", "completed", Some("success")),
                item("Lint", "completed", Some("skipped")),
            ],
            "abc",
        );
        assert_eq!(
            (green.state, green.detail.as_str()),
            (CiState::Success, "2 workflows and checks passed")
        );
        let red = verdict(
            &[
                item("CI", "completed", Some("failure")),
                item("Lint", "completed", Some("success")),
            ],
            "abc",
        );
        assert_eq!(red.state, CiState::Failure);
        assert_eq!(red.failing_jobs, vec!["CI"]);
        assert_eq!(
            verdict(&[item("CI", "completed", Some("timed_out"))], "abc").state,
            CiState::Failure
        );
    }

    #[test]
    fn the_real_response_shapes_parse() {
        // Trimmed from GitHub's documented examples: unknown fields are ignored.
        let runs: WorkflowRuns = serde_json::from_str(r#"{"total_count":1,"workflow_runs":[{"id":30433642,"name":"Build","node_id":"MDEyOldvcmtmbG93IFJ1bjI2OTI4OQ==","head_branch":"master","head_sha":"acb5820ced9479c074f688cc328bf03f341a511d","run_number":562,"event":"push","status":"queued","conclusion":null,"workflow_id":159038,"check_suite_id":42,"html_url":"https://github.com/octo-org/octo-repo/actions/runs/30433642","run_attempt":1}]}"#).unwrap();
        assert_eq!(runs.workflow_runs[0].status.as_deref(), Some("queued"));
        let checks: CheckRuns = serde_json::from_str(r#"{"total_count":1,"check_runs":[{"id":4,"head_sha":"ce587453ced02b1526dfb4cb910479d431683101","name":"mighty_readme","status":"completed","conclusion":"neutral","started_at":"2018-05-04T01:14:52Z","output":{"title":"Mighty Readme report","summary":"There are 0 failures","text":null,"annotations_count":2},"app":{"id":1,"slug":"octoapp"},"check_suite":{"id":5}}]}"#).unwrap();
        assert_eq!(checks.check_runs[0].conclusion.as_deref(), Some("neutral"));
        let jobs: Jobs = serde_json::from_str(r#"{"total_count":1,"jobs":[{"id":399444496,"run_id":29679449,"status":"completed","conclusion":"failure","name":"build","steps":[{"name":"Set up job","status":"completed","conclusion":"success","number":1},{"name":"Run tests","status":"completed","conclusion":"failure","number":2}]}]}"#).unwrap();
        assert_eq!(jobs.jobs[0].steps[1].name, "Run tests");
    }
}
