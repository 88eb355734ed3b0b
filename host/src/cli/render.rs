//! Rendering the event stream: short live lines for people, one JSON object per line for
//! machines. Both are subscribers of the same bus, so they always agree.

use crate::events::{Event, Level, Outcome, Subscriber};
use crate::lifecycle::short;
use std::io::Write;
use std::time::Duration;

/// One JSON object per line on stdout.
pub struct JsonLines;

impl Subscriber for JsonLines {
    fn event(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Short human lines on stdout, as things happen.
pub struct Human {
    pub verbose: bool,
    /// The last failed probe's detail: repeats are shortened to keep retries readable.
    last_probe: std::sync::Mutex<String>,
    /// The last CI answer: a watch polls every few seconds, only changes are printed.
    last_ci: std::sync::Mutex<String>,
}

impl Human {
    pub fn new(verbose: bool) -> Human {
        Human { verbose, last_probe: Default::default(), last_ci: Default::default() }
    }
}

fn secs(d: Duration) -> String {
    if d.as_millis() < 1000 { format!("{} ms", d.as_millis()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

impl Subscriber for Human {
    fn event(&self, event: &Event) {
        let line = match event {
            Event::RunStarted { kind, environment, requested_revision: Some(rev), .. } if kind == "watch" => {
                format!("watching CI on {} for {environment} (deploy-first)", short(rev))
            }
            Event::RunStarted { kind, environment, plugin, plugin_version, requested_revision, dry_run, .. } => format!(
                "{kind} {} to {environment} with {plugin} {plugin_version}{}",
                requested_revision.as_deref().unwrap_or("(no revision given)"),
                if *dry_run { " [dry-run: nothing will change]" } else { "" }
            ),
            Event::LockAcquired { holder, .. } => format!("  lock held by {holder}"),
            Event::PhaseStarted { phase } => format!("▸ {}", phase.as_str()),
            Event::PhaseFinished { phase, ok: true, duration, .. } => format!("  ✓ {} ({})", phase.as_str(), secs(*duration)),
            Event::PhaseFinished { phase, ok: false, duration, detail } => {
                format!("  ✗ {} failed after {}: {detail}", phase.as_str(), secs(*duration))
            }
            Event::Plan { current_revision, target_revision, current_schema, target_schema, pending_migrations, classification, rollback, changes } => {
                let mut s = format!(
                    "  code: {} -> {}\n  schema: {} -> {} ({} pending)",
                    current_revision.as_deref().map(short).unwrap_or("none"),
                    short(target_revision),
                    current_schema.as_deref().unwrap_or("none"),
                    target_schema.as_deref().unwrap_or("none"),
                    pending_migrations.len()
                );
                for m in pending_migrations {
                    s.push_str(&format!("\n    migration {m}"));
                }
                s.push_str(&format!("\n  class: {classification}; {rollback}"));
                for c in changes {
                    s.push_str(&format!("\n  will: {c}"));
                }
                s
            }
            Event::Finding { file, line, rule, severity, reason } => format!("  {severity}: {file}:{line} {rule}: {reason}"),
            Event::ApprovalRequired { reason } => format!("  ! approval required: {reason}"),
            Event::Approved { by, reason } => format!("  approved by {by} ({reason})"),
            Event::Paused { duration, reason } => format!("  ! pausing {} before going on: {reason} (Ctrl-C to stop, nothing changed yet)", secs(*duration)),
            Event::CommandStarted { argv, .. } => format!("  $ {}", argv.join(" ")),
            Event::CommandFinished { status, duration, timed_out, .. } => {
                if *timed_out {
                    format!("    killed: timed out after {}", secs(*duration))
                } else if *status != 0 {
                    format!("    exit {status} after {}", secs(*duration))
                } else if self.verbose {
                    format!("    ok ({})", secs(*duration))
                } else {
                    return;
                }
            }
            Event::Planned { step, purpose } => format!("  would run: {step}   # {purpose}"),
            Event::HttpRequest { method, url, status, planned } => {
                if *planned { format!("  would request: {method} {url}") } else { format!("  {method} {url} -> {status}") }
            }
            Event::PluginLog { level, message } => match level {
                Level::Debug if !self.verbose => return,
                Level::Warn => format!("  warning: {message}"),
                Level::Error => format!("  error: {message}"),
                _ => format!("  {message}"),
            },
            Event::BackupMade { path, size_bytes, sha256, verified } => format!(
                "  backup {path} ({} KiB, sha256 {}, {})",
                size_bytes / 1024,
                &sha256[..12.min(sha256.len())],
                if *verified { "verified" } else { "NOT verified" }
            ),
            Event::Waiting { what, status } => format!("  … {what}: {status}"),
            Event::ProbeAttempt { probe, attempt, of, ok, detail, .. } => {
                let mut last = self.last_probe.lock().unwrap();
                let line = if !*ok && *last == *detail {
                    format!("  probe {probe}: same (attempt {attempt}/{of})")
                } else {
                    format!("  probe {probe}: {detail} (attempt {attempt}/{of})")
                };
                *last = if *ok { String::new() } else { detail.clone() };
                line
            }
            Event::RollbackStarted { reason, to_revision, method } => {
                format!("↺ rolling back to {} ({method}): {reason}", short(to_revision))
            }
            Event::RollbackFinished { ok, detail } => {
                if *ok { "  ✓ rolled back".to_string() } else { format!("  ✗ rollback failed: {detail}") }
            }
            Event::Validated { revision } => format!("  ✓ {} marked validated", short(revision)),
            Event::RunFinished { outcome, detail, exit_code } => {
                let head = match outcome {
                    Outcome::Succeeded => "✓ done",
                    Outcome::DryRun => "✓ dry-run done",
                    Outcome::FailedUnchanged => "✗ failed, nothing changed",
                    Outcome::RolledBack => "✗ failed and rolled back",
                    Outcome::RollbackFailed => "✗✗ ROLLBACK FAILED, a person must act",
                    Outcome::Locked => "✗ locked",
                    Outcome::ApprovalRequired => "✗ stopped for approval",
                    Outcome::Validating => "✓ deployed, awaiting CI",
                    Outcome::Unvalidated => "! not validated",
                };
                format!("{head}: {detail} (exit {exit_code})")
            }
            Event::AwaitingValidation { revision, rollback_to, ci, timeout } => format!(
                "  ⏳ {} is live, not validated yet: {ci} decides within {} (rollback point: {})",
                short(revision),
                humantime::format_duration(*timeout),
                rollback_to.as_deref().map(short).unwrap_or("none")
            ),
            Event::WatcherStarted { environment, pid, log } => format!(
                "  CI is watched in the background (pid {pid}, log {log})\n  follow: `host status --env {environment}`, or `host watch --env {environment}` to wait here"
            ),
            Event::CiPolled { revision, state, detail, url } => {
                let line = format!("  … CI on {}: {state}{}", short(revision), if detail.is_empty() { String::new() } else { format!(": {detail}") });
                let mut last = self.last_ci.lock().unwrap();
                if *last == line && !self.verbose {
                    return;
                }
                *last = line.clone();
                match url {
                    Some(url) if self.verbose => format!("{line} ({url})"),
                    _ => line,
                }
            }
            Event::CiVerdict { revision, verdict, detail, failing_jobs, log_excerpt, url } => {
                let mut s = format!("  CI verdict on {}: {verdict}: {detail}", short(revision));
                if !failing_jobs.is_empty() {
                    s.push_str(&format!("\n    failing: {}", failing_jobs.join(", ")));
                }
                if let Some(url) = url {
                    s.push_str(&format!("\n    {url}"));
                }
                if let Some(log) = log_excerpt {
                    for l in log.lines().take(if self.verbose { 200 } else { 12 }) {
                        s.push_str(&format!("\n    | {l}"));
                    }
                }
                s
            }
            Event::EnvironmentRevisions { target_revision, environments, note } => {
                let mut s = String::new();
                for e in environments {
                    s.push_str(&format!(
                        "  {:12} runs {}, last validated {}\n",
                        format!("{}:", e.environment),
                        e.current_revision.as_deref().map(short).unwrap_or("nothing"),
                        e.last_validated_revision.as_deref().map(short).unwrap_or("none")
                    ));
                }
                s.push_str(&format!("  {:12} {}", "to deploy:", short(target_revision)));
                if let Some(note) = note {
                    s.push_str(&format!("\n  ! {note}"));
                }
                s
            }
            Event::MonitorChecked { url, ok, detail, duration, .. } => {
                format!("{} {url}: {detail} ({})", if *ok { "✓ up" } else { "✗ DOWN" }, secs(*duration))
            }
            Event::MonitorDown { .. } => "  ! it went down: the configured webhooks are told".to_string(),
            Event::MonitorRecovered { down_for, .. } => {
                format!("  it is back after {} down: the configured webhooks are told", humantime::format_duration(Duration::from_secs(down_for.as_secs())))
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
