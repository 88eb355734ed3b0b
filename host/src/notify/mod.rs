//! Notifications: a subscriber that posts the moments people care about to Slack or Discord
//! webhooks (or as raw JSON): a deploy started, succeeded, is live and awaiting CI, was
//! validated or rolled back (with the failing CI jobs and a log excerpt), needs approval, and
//! `host monitor` saw the app go down or recover. Each message says what happened, on which
//! environment and revision, and what to do next.
//!
//! A webhook never fails a deploy: errors are logged and dropped, and each post has a short
//! timeout. Webhook URLs are secrets: they come from environment variables and are never
//! printed, not even in errors.

use crate::config::{Webhook, WebhookFormat};
use crate::events::{Event, Outcome, Phase};
use crate::lifecycle::short;
use std::sync::Mutex;
use std::time::Duration;

const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Discord refuses messages over 2000 characters.
const DISCORD_MAX: usize = 2000;

/// What the messages may mention beyond the events themselves.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub project: String,
    pub environment: String,
    /// Where the app answers (health.base_url), shown in success messages.
    pub url: Option<String>,
    /// The environment is `deploy-first`: a started deploy is checked by CI afterwards.
    pub deploy_first: bool,
    /// The environment this one is promoted from (shown as `PREPROD ✅ → PRODUCTION ✅`).
    pub promote_from: Option<String>,
}

/// One notification: an emoji, a title and lines, rendered per webhook format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub emoji: &'static str,
    pub title: String,
    pub lines: Vec<String>,
    /// A log excerpt, shown as a code block.
    pub excerpt: Option<String>,
}

impl Message {
    fn new(emoji: &'static str, title: String) -> Message {
        Message {
            emoji,
            title,
            lines: Vec::new(),
            excerpt: None,
        }
    }

    fn line(mut self, line: impl Into<String>) -> Message {
        self.lines.push(line.into());
        self
    }

    /// Plain text (the JSON format's `text`, and the base of the others).
    pub fn text(&self) -> String {
        self.render("", DISCORD_MAX * 4)
    }

    /// `bold` wraps the title (`**` for Discord, `*` for Slack); the excerpt is cut so the
    /// whole stays within `max` characters.
    fn render(&self, bold: &str, max: usize) -> String {
        let mut text = format!("{} {bold}{}{bold}", self.emoji, self.title);
        for l in &self.lines {
            text.push('\n');
            text.push_str(l);
        }
        if let Some(excerpt) = &self.excerpt {
            let room = max.saturating_sub(text.chars().count() + 10);
            let count = excerpt.chars().count();
            let cut: String = if count > room {
                excerpt.chars().skip(count - room).collect()
            } else {
                excerpt.clone()
            };
            if !cut.trim().is_empty() {
                text.push_str(&format!("\n```\n{}\n```", cut.replace("```", "'''")));
            }
        }
        text.chars().take(max).collect()
    }
}

/// The request body for one webhook format.
pub fn body(format: WebhookFormat, message: &Message, event: &Event) -> serde_json::Value {
    match format {
        WebhookFormat::Slack => serde_json::json!({ "text": message.render("*", 4000) }),
        WebhookFormat::Discord => {
            serde_json::json!({ "content": message.render("**", DISCORD_MAX) })
        }
        WebhookFormat::Json => serde_json::json!({ "text": message.text(), "event": event }),
    }
}

/// Turns the event stream into messages. It remembers what earlier events said (the kind of
/// run, the revision, CI's failing jobs) because the message worth sending comes later.
#[derive(Debug, Default)]
pub struct Composer {
    ctx: Context,
    kind: String,
    dry_run: bool,
    revision: Option<String>,
    previous: Option<String>,
    rollback_to: Option<String>,
    ci: Option<CiSeen>,
    /// "Deploy started", held from the plan until something starts changing: a deploy stopped
    /// at an approval gate never started.
    started: Option<Message>,
}

#[derive(Debug, Clone)]
struct CiSeen {
    verdict: String,
    detail: String,
    failing_jobs: Vec<String>,
    log_excerpt: Option<String>,
    url: Option<String>,
}

impl Composer {
    pub fn new(ctx: Context) -> Composer {
        Composer {
            ctx,
            ..Composer::default()
        }
    }

    fn env(&self) -> String {
        self.ctx.environment.to_uppercase()
    }

    fn follow(&self) -> String {
        format!("Follow: `host status --env {}`", self.ctx.environment)
    }

    /// The message for an event, or `None` for events nobody is paged about.
    pub fn on(&mut self, event: &Event) -> Option<Message> {
        let env = self.env();
        match event {
            Event::RunStarted { kind, dry_run, requested_revision, .. } => {
                self.kind = kind.clone();
                self.dry_run = *dry_run;
                if kind == "watch" {
                    self.revision = requested_revision.clone();
                }
                None
            }
            Event::Plan { current_revision, target_revision, changes, .. } => {
                self.revision = Some(target_revision.clone());
                self.previous = current_revision.clone();
                if self.dry_run || self.kind != "deploy" {
                    return None;
                }
                let mut m = Message::new("🚀", format!("{env} - Deploy started")).line(format!("SHA: {}", short(target_revision)));
                if let Some(prev) = current_revision {
                    m = m.line(format!("Replacing: {}", short(prev)));
                }
                for c in changes.iter().take(3) {
                    m = m.line(c.clone());
                }
                m = m.line(format!("Project: {}", self.ctx.project));
                if self.ctx.deploy_first {
                    m = m.line("⏳ CI will be checked after the deploy");
                }
                self.started = Some(m);
                None
            }
            Event::PhaseStarted { phase: Phase::Backup | Phase::Deploy } => self.started.take(),
            Event::AwaitingValidation { revision, rollback_to, ci, timeout } => {
                self.rollback_to = rollback_to.clone();
                let back = match rollback_to {
                    Some(to) => format!("If CI fails: automatic rollback to {}", short(to)),
                    None => "If CI fails: nothing validated to roll back to; a person must act".into(),
                };
                let mut m = Message::new("✅", format!("{env} - Deployed, CI in progress"))
                    .line(format!("SHA: {}", short(revision)))
                    .line(format!("CI: {ci} (up to {})", humantime::format_duration(*timeout)))
                    .line(back);
                if let Some(url) = &self.ctx.url {
                    m = m.line(format!("URL: {url}"));
                }
                Some(m.line(self.follow()))
            }
            Event::RollbackStarted { to_revision, .. } => {
                self.rollback_to = Some(to_revision.clone());
                None
            }
            Event::CiVerdict { verdict, detail, failing_jobs, log_excerpt, url, .. } => {
                self.ci = Some(CiSeen {
                    verdict: verdict.clone(),
                    detail: detail.clone(),
                    failing_jobs: failing_jobs.clone(),
                    log_excerpt: log_excerpt.clone(),
                    url: url.clone(),
                });
                None
            }
            Event::Validated { revision } if self.kind == "watch" => {
                let mut m = Message::new("✅", format!("{env} - CI passed, {} validated", short(revision))).line(format!("SHA: {}", short(revision)));
                if let Some(ci) = &self.ci {
                    m = m.line(format!("CI: {}", ci.detail));
                }
                if let Some(url) = &self.ctx.url {
                    m = m.line(format!("URL: {url}"));
                }
                Some(m)
            }
            Event::Validated { revision } => {
                let mut m = Message::new("🎯", format!("{env} - Deploy succeeded ✅")).line(format!("SHA: {}", short(revision)));
                if let Some(from) = &self.ctx.promote_from {
                    m = m.line(format!("{} ✅ → {env} ✅", from.to_uppercase()));
                }
                if let Some(url) = &self.ctx.url {
                    m = m.line(format!("URL: {url}"));
                }
                if let Some(prev) = &self.previous {
                    m = m.line(format!("To roll back to {}: `host rollback --env {}`", short(prev), self.ctx.environment));
                }
                Some(m)
            }
            Event::RunFinished { outcome, detail, .. } => self.finished(*outcome, detail),
            Event::MonitorDown { url, detail } => Some(
                Message::new("🔴", format!("{env} - DOWN"))
                    .line(format!("URL: {url}"))
                    .line(format!("Check: {detail}"))
                    .line(format!("What to do: look at the app's logs; `host status --env {}` shows what runs", self.ctx.environment)),
            ),
            Event::MonitorRecovered { url, down_for } => Some(
                Message::new("🟢", format!("{env} - Recovered"))
                    .line(format!("URL: {url}"))
                    .line(format!("Down for {}", humantime::format_duration(Duration::from_secs(down_for.as_secs())))),
            ),
            _ => None,
        }
    }

    fn finished(&self, outcome: Outcome, detail: &str) -> Option<Message> {
        let env = self.env();
        let name = &self.ctx.environment;
        let rev = self.revision.as_deref().map(short).unwrap_or("?");
        if self.dry_run {
            return None;
        }
        let m = match outcome {
            Outcome::RolledBack if self.kind == "watch" => {
                let no_verdict = self.ci.as_ref().is_some_and(|c| c.verdict == "no-verdict");
                let title = if no_verdict {
                    format!("{env} - No CI verdict in time, rolled back")
                } else {
                    format!("{env} - CI failed, rolled back")
                };
                let mut m =
                    Message::new(if no_verdict { "⏱️" } else { "❌" }, title).line(format!(
                        "SHA: {rev} → back to {}",
                        self.rollback_to
                            .as_deref()
                            .map(short)
                            .unwrap_or("the last validated revision")
                    ));
                if let Some(ci) = &self.ci {
                    if !ci.failing_jobs.is_empty() {
                        m = m.line(format!("Failing jobs: {}", ci.failing_jobs.join(", ")));
                    } else if !ci.detail.is_empty() {
                        m = m.line(format!("CI: {}", ci.detail));
                    }
                    if let Some(url) = &ci.url {
                        m = m.line(format!("CI run: {url}"));
                    }
                    m.excerpt = ci.log_excerpt.clone();
                }
                m.line(format!("What to do: fix what CI reports and push; {name} runs the last validated revision meanwhile"))
            }
            Outcome::RolledBack => Message::new(
                "❌",
                format!("{env} - Deploy failed, rolled back"),
            )
            .line(format!("SHA: {rev}"))
            .line(detail.to_string())
            .line(format!(
                "What to do: fix it and deploy again; `host history --env {name}` shows each phase"
            )),
            Outcome::RollbackFailed => {
                Message::new("🆘", format!("{env} - ROLLBACK FAILED, a person must act"))
                    .line(format!("SHA: {rev}"))
                    .line(detail.to_string())
                    .line(format!(
                        "The environment stays locked; `host unlock --env {name}` once fixed."
                    ))
            }
            Outcome::FailedUnchanged if self.kind == "deploy" || self.kind == "rollback" => {
                Message::new("❌", format!("{env} - Deploy failed before any change"))
                    .line(detail.to_string())
            }
            Outcome::ApprovalRequired => {
                Message::new("✋", format!("{env} - Waiting for approval")).line(detail.to_string())
            }
            // Superseded watches end quietly: a newer deploy already said what runs.
            Outcome::Unvalidated if self.ci.is_some() => {
                Message::new("⚠️", format!("{env} - {rev} not validated"))
                    .line(detail.to_string())
                    .line(self.follow())
            }
            _ => return None,
        };
        Some(m)
    }
}

pub struct Notifier {
    targets: Vec<(WebhookFormat, String)>,
    client: reqwest::Client,
    composer: Mutex<Composer>,
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Notifier {
    /// `None` when no webhook is configured (or none of their variables is set).
    pub fn new(project: &str, environment: &str, hooks: &[Webhook]) -> Option<Notifier> {
        Notifier::with_context(
            Context {
                project: project.into(),
                environment: environment.into(),
                ..Context::default()
            },
            hooks,
        )
    }

    pub fn with_context(ctx: Context, hooks: &[Webhook]) -> Option<Notifier> {
        let targets: Vec<_> = hooks
            .iter()
            .filter_map(|h| match std::env::var(&h.url_env) {
                Ok(url) if !url.is_empty() => Some((h.format, url)),
                _ => {
                    tracing::warn!("webhook skipped: {} is not set", h.url_env);
                    None
                }
            })
            .collect();
        (!targets.is_empty()).then(|| Notifier {
            targets,
            client: reqwest::Client::new(),
            composer: Mutex::new(Composer::new(ctx)),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Wait for posts in flight (each bounded by its timeout), so a short-lived process
    /// does not exit before its notifications left.
    pub async fn flush(&self) {
        let pending: Vec<_> = self.pending.lock().unwrap().drain(..).collect();
        for p in pending {
            let _ = p.await;
        }
    }
}

impl crate::events::Subscriber for Notifier {
    fn event(&self, event: &Event) {
        let Some(message) = self.composer.lock().unwrap().on(event) else {
            return;
        };
        for (format, url) in &self.targets {
            let request = self
                .client
                .post(url)
                .timeout(POST_TIMEOUT)
                .json(&body(*format, &message, event));
            let task = tokio::spawn(async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => {}
                    // Say which kind failed, never where it points: the URL is a secret.
                    Ok(r) => tracing::warn!("webhook answered {}", r.status()),
                    Err(e) => tracing::warn!("webhook failed: {}", e.without_url()),
                }
            });
            self.pending.lock().unwrap().push(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Subscriber;
    use std::io::{Read, Write};

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn composer(deploy_first: bool) -> Composer {
        Composer::new(Context {
            project: "kitchen".into(),
            environment: "preprod".into(),
            url: Some("https://preprod.example.org".into()),
            deploy_first,
            promote_from: None,
        })
    }

    fn started(kind: &str) -> Event {
        Event::RunStarted {
            deployment_id: "d".into(),
            kind: kind.into(),
            environment: "preprod".into(),
            plugin: "p".into(),
            plugin_version: "1".into(),
            requested_revision: Some(SHA.into()),
            dry_run: false,
        }
    }

    fn plan() -> Event {
        Event::Plan {
            current_revision: Some(OLD.into()),
            target_revision: SHA.into(),
            current_schema: None,
            target_schema: None,
            pending_migrations: vec![],
            classification: "code-only".into(),
            rollback: String::new(),
            changes: vec!["commit 0123456789: Fix bug analysis (Ada)".into()],
        }
    }

    #[test]
    fn a_deploy_first_run_says_started_then_live_with_the_rollback_point() {
        let mut c = composer(true);
        assert_eq!(c.on(&started("deploy")), None);
        assert_eq!(
            c.on(&plan()),
            None,
            "nothing changes yet: approval may stop it"
        );
        let m = c
            .on(&Event::PhaseStarted {
                phase: Phase::Deploy,
            })
            .unwrap();
        assert_eq!(
            c.on(&Event::PhaseStarted {
                phase: Phase::Verify
            }),
            None
        );
        assert_eq!(
            m.text(),
            "🚀 PREPROD - Deploy started\nSHA: 0123456789\nReplacing: fedcba9876\ncommit 0123456789: Fix bug analysis (Ada)\nProject: kitchen\n⏳ CI will be checked after the deploy"
        );
        let live = c
            .on(&Event::AwaitingValidation {
                revision: SHA.into(),
                rollback_to: Some(OLD.into()),
                ci: "GitHub Actions on o/r".into(),
                timeout: Duration::from_secs(300),
            })
            .unwrap();
        assert!(
            live.text()
                .contains("If CI fails: automatic rollback to fedcba9876"),
            "{}",
            live.text()
        );
        assert!(live.text().contains("Follow: `host status --env preprod`"));
        let done = Event::RunFinished {
            outcome: Outcome::Validating,
            detail: String::new(),
            exit_code: 0,
        };
        assert_eq!(c.on(&done), None, "the awaiting message said it all");
    }

    #[test]
    fn a_ci_failure_names_the_failing_jobs_and_carries_the_log() {
        let mut c = composer(true);
        c.on(&started("watch"));
        c.on(&Event::AwaitingValidation {
            revision: SHA.into(),
            rollback_to: Some(OLD.into()),
            ci: "x".into(),
            timeout: Duration::from_secs(1),
        });
        c.on(&Event::CiVerdict {
            revision: SHA.into(),
            verdict: "failure".into(),
            detail: "failed: workflow CI (failure)".into(),
            failing_jobs: vec!["CI / tests (step `Run pytest`)".into()],
            log_excerpt: Some("E   assert 41 == 42".into()),
            url: Some("https://github.com/o/r/actions/runs/1".into()),
        });
        assert_eq!(
            c.on(&Event::RollbackStarted {
                reason: "r".into(),
                to_revision: OLD.into(),
                method: "code-only".into()
            }),
            None
        );
        let m = c
            .on(&Event::RunFinished {
                outcome: Outcome::RolledBack,
                detail: "d".into(),
                exit_code: 10,
            })
            .unwrap();
        let discord = body(
            WebhookFormat::Discord,
            &m,
            &Event::Validated {
                revision: SHA.into(),
            },
        );
        let content = discord["content"].as_str().unwrap();
        assert!(content.starts_with("❌ **PREPROD - CI failed, rolled back**\nSHA: 0123456789 → back to fedcba9876\nFailing jobs: CI / tests (step `Run pytest`)"), "{content}");
        assert!(
            content.contains("```\nE   assert 41 == 42\n```"),
            "{content}"
        );
        let slack = body(
            WebhookFormat::Slack,
            &m,
            &Event::Validated {
                revision: SHA.into(),
            },
        );
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .starts_with("❌ *PREPROD - CI failed, rolled back*")
        );
    }

    #[test]
    fn discord_messages_stay_under_its_cap_keeping_the_end_of_the_log() {
        let mut m = Message::new("❌", "T".into()).line("l");
        m.excerpt = Some(format!("{}THE END", "x".repeat(5000)));
        let content = body(
            WebhookFormat::Discord,
            &m,
            &Event::Validated {
                revision: SHA.into(),
            },
        )["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            content.chars().count() <= DISCORD_MAX && content.contains("THE END\n```"),
            "{}",
            content.len()
        );
    }

    #[test]
    fn production_success_failure_monitor_and_quiet_events() {
        let mut c = Composer::new(Context {
            project: "kitchen".into(),
            environment: "production".into(),
            url: Some("https://kitchen.example.org".into()),
            deploy_first: false,
            promote_from: Some("preprod".into()),
        });
        c.on(&started("deploy"));
        c.on(&plan());
        assert!(
            c.on(&Event::PhaseStarted {
                phase: Phase::Backup
            })
            .unwrap()
            .text()
            .starts_with("🚀 PRODUCTION - Deploy started")
        );
        let ok = c
            .on(&Event::Validated {
                revision: SHA.into(),
            })
            .unwrap()
            .text();
        assert_eq!(
            ok,
            "🎯 PRODUCTION - Deploy succeeded ✅\nSHA: 0123456789\nPREPROD ✅ → PRODUCTION ✅\nURL: https://kitchen.example.org\nTo roll back to fedcba9876: `host rollback --env production`"
        );
        let failed = c
            .on(&Event::RunFinished {
                outcome: Outcome::RollbackFailed,
                detail: "restore failed".into(),
                exit_code: 11,
            })
            .unwrap()
            .text();
        assert!(
            failed.contains("ROLLBACK FAILED") && failed.contains("host unlock --env production"),
            "{failed}"
        );
        assert_eq!(
            c.on(&Event::RunFinished {
                outcome: Outcome::Succeeded,
                detail: String::new(),
                exit_code: 0
            }),
            None,
            "success is told by `validated`"
        );
        let down = c
            .on(&Event::MonitorDown {
                url: "https://kitchen.example.org/".into(),
                detail: "status 502".into(),
            })
            .unwrap()
            .text();
        assert!(
            down.starts_with(
                "🔴 PRODUCTION - DOWN\nURL: https://kitchen.example.org/\nCheck: status 502"
            ),
            "{down}"
        );
        let up = c
            .on(&Event::MonitorRecovered {
                url: "u".into(),
                down_for: Duration::from_millis(125_400),
            })
            .unwrap()
            .text();
        assert_eq!(up, "🟢 PRODUCTION - Recovered\nURL: u\nDown for 2m 5s");
        let mut dry = composer(false);
        dry.on(&Event::RunStarted {
            deployment_id: "d".into(),
            kind: "deploy".into(),
            environment: "preprod".into(),
            plugin: "p".into(),
            plugin_version: "1".into(),
            requested_revision: None,
            dry_run: true,
        });
        assert_eq!(dry.on(&plan()), None, "dry runs page nobody");
    }

    #[tokio::test]
    async fn posts_reach_a_receiver_and_a_dead_one_is_harmless() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = String::new();
            while !got.contains("\"content\"") {
                let n = s.read(&mut buf).unwrap();
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            got
        });
        // SAFETY: only this test reads these variables.
        unsafe {
            std::env::set_var(
                "HOST_TEST_DISCORD",
                format!("http://127.0.0.1:{port}/api/webhooks/1/secret"),
            );
            std::env::set_var("HOST_TEST_DEAD_HOOK", "http://127.0.0.1:9/nothing-listens");
        }
        let hooks = vec![
            Webhook {
                format: WebhookFormat::Discord,
                url_env: "HOST_TEST_DISCORD".into(),
            },
            Webhook {
                format: WebhookFormat::Slack,
                url_env: "HOST_TEST_DEAD_HOOK".into(),
            },
        ];
        let n = Notifier::new("shop", "staging", &hooks).unwrap();
        n.event(&started("deploy"));
        n.event(&Event::Validated {
            revision: SHA.into(),
        });
        n.flush().await;
        let request = receiver.join().unwrap();
        assert!(
            request.starts_with("POST /api/webhooks/1/secret"),
            "{request}"
        );
        assert!(
            request
                .contains(r#"{"content":"🎯 **STAGING - Deploy succeeded ✅**\nSHA: 0123456789"}"#),
            "{request}"
        );
    }
}
