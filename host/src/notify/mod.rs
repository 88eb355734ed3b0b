//! Notifications: a subscriber that posts the moments people care about (a run started, a
//! deploy validated, a rollback, a failure) to Slack or Discord webhooks, or as raw JSON.
//!
//! A webhook never fails a deploy: errors are logged and dropped, and each post has a short
//! timeout. Webhook URLs are secrets: they come from environment variables and are never
//! printed, not even in errors.

use crate::config::{Webhook, WebhookFormat};
use crate::events::{Event, Outcome, Subscriber};
use crate::lifecycle::short;
use std::sync::Mutex;
use std::time::Duration;

const POST_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Notifier {
    project: String,
    environment: String,
    targets: Vec<(WebhookFormat, String)>,
    client: reqwest::Client,
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Notifier {
    /// `None` when no webhook is configured (or none of their variables is set).
    pub fn new(project: &str, environment: &str, hooks: &[Webhook]) -> Option<Notifier> {
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
            project: project.into(),
            environment: environment.into(),
            targets,
            client: reqwest::Client::new(),
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

/// The one-line message for an event, or `None` for events nobody is paged about.
pub fn message(project: &str, environment: &str, event: &Event) -> Option<String> {
    let text = match event {
        Event::RunStarted { kind, requested_revision, dry_run: false, .. } => format!(
            "{kind} of {project} to {environment} started ({})",
            requested_revision.as_deref().unwrap_or("no revision")
        ),
        Event::Validated { revision } => format!("{project} {} is live and validated on {environment}", short(revision)),
        Event::RollbackStarted { reason, to_revision, .. } => {
            format!("{project} on {environment}: rolling back to {}: {reason}", short(to_revision))
        }
        Event::RunFinished { outcome, detail, .. } => match outcome {
            Outcome::RolledBack => format!("{project} on {environment}: deploy failed and was rolled back: {detail}"),
            Outcome::RollbackFailed => format!(
                "{project} on {environment}: ROLLBACK FAILED, a person must act: {detail}. The environment stays locked; `host unlock --env {environment}` once fixed."
            ),
            Outcome::FailedUnchanged => format!("{project} on {environment}: deploy failed before any change: {detail}"),
            Outcome::ApprovalRequired => format!("{project} on {environment}: waiting for approval: {detail}"),
            _ => return None,
        },
        _ => return None,
    };
    Some(text)
}

/// The request body for one webhook format.
pub fn body(format: WebhookFormat, text: &str, event: &Event) -> serde_json::Value {
    match format {
        WebhookFormat::Slack => serde_json::json!({ "text": text }),
        // Discord caps content at 2000 characters.
        WebhookFormat::Discord => serde_json::json!({ "content": text.chars().take(2000).collect::<String>() }),
        WebhookFormat::Json => serde_json::json!({ "text": text, "event": event }),
    }
}

impl Subscriber for Notifier {
    fn event(&self, event: &Event) {
        let Some(text) = message(&self.project, &self.environment, event) else { return };
        for (format, url) in &self.targets {
            let request = self.client.post(url).timeout(POST_TIMEOUT).json(&body(*format, &text, event));
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
    use std::io::{Read, Write};

    #[test]
    fn messages_say_what_happened_and_what_to_do() {
        let e = Event::RunFinished { outcome: Outcome::RollbackFailed, detail: "restore failed".into(), exit_code: 11 };
        let m = message("shop", "production", &e).unwrap();
        assert!(m.contains("ROLLBACK FAILED") && m.contains("host unlock --env production"), "{m}");
        let ok = Event::RunFinished { outcome: Outcome::Succeeded, detail: String::new(), exit_code: 0 };
        assert_eq!(message("shop", "production", &ok), None, "success is told by `validated`");
        assert_eq!(body(WebhookFormat::Slack, "hi", &ok), serde_json::json!({ "text": "hi" }));
        assert_eq!(body(WebhookFormat::Discord, "hi", &ok), serde_json::json!({ "content": "hi" }));
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
            std::env::set_var("HOST_TEST_DISCORD", format!("http://127.0.0.1:{port}/api/webhooks/1/secret"));
            std::env::set_var("HOST_TEST_DEAD_HOOK", "http://127.0.0.1:9/nothing-listens");
        }
        let hooks = vec![
            Webhook { format: WebhookFormat::Discord, url_env: "HOST_TEST_DISCORD".into() },
            Webhook { format: WebhookFormat::Slack, url_env: "HOST_TEST_DEAD_HOOK".into() },
        ];
        let n = Notifier::new("shop", "staging", &hooks).unwrap();
        n.event(&Event::Validated { revision: "0123456789abcdef0123456789abcdef01234567".into() });
        n.flush().await;
        let request = receiver.join().unwrap();
        assert!(request.starts_with("POST /api/webhooks/1/secret"), "{request}");
        assert!(request.contains(r#"{"content":"shop 0123456789 is live and validated on staging"}"#), "{request}");
    }
}
