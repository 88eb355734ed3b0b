//! The one stream of typed events a run produces.
//!
//! The engine and the capabilities emit; the human renderer, the JSON renderer, the state
//! store and the notifier subscribe. Because they all read the same stream they never disagree,
//! and nothing below the CLI prints.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Severity of a finding or a plugin log line, as rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What happened. Serialized with a `type` tag, this is the `--output json` event stream:
/// add fields and variants freely, never rename or remove them (scripts read it).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        deployment_id: String,
        kind: String,
        environment: String,
        plugin: String,
        plugin_version: String,
        requested_revision: Option<String>,
        dry_run: bool,
    },
    LockAcquired { environment: String, holder: String },
    PhaseStarted { phase: Phase },
    PhaseFinished {
        phase: Phase,
        ok: bool,
        #[serde(with = "millis")]
        duration: Duration,
        detail: String,
    },
    /// Preflight's view of what will change.
    Plan {
        current_revision: Option<String>,
        target_revision: String,
        current_schema: Option<String>,
        target_schema: Option<String>,
        pending_migrations: Vec<String>,
        classification: String,
        rollback: String,
        changes: Vec<String>,
    },
    Finding {
        file: String,
        line: u32,
        rule: String,
        severity: String,
        reason: String,
    },
    ApprovalRequired { reason: String },
    Approved { by: String, reason: String },
    Paused {
        #[serde(with = "millis")]
        duration: Duration,
        reason: String,
    },
    CommandStarted { argv: Vec<String>, purpose: String, mutates: bool },
    CommandFinished {
        argv: Vec<String>,
        status: i32,
        #[serde(with = "millis")]
        duration: Duration,
        timed_out: bool,
    },
    /// A mutating step a dry-run did not perform.
    Planned { step: String, purpose: String },
    HttpRequest { method: String, url: String, status: u16, planned: bool },
    PluginLog { level: Level, message: String },
    BackupMade { path: String, size_bytes: u64, sha256: String, verified: bool },
    Waiting { what: String, status: String },
    ProbeAttempt {
        probe: String,
        url: String,
        attempt: u32,
        of: u32,
        ok: bool,
        detail: String,
    },
    RollbackStarted { reason: String, to_revision: String, method: String },
    RollbackFinished { ok: bool, detail: String },
    Validated { revision: String },
    RunFinished { outcome: Outcome, detail: String, exit_code: i32 },
    /// `deploy-first`: the revision is live and awaits CI; until the verdict, rollbacks go to
    /// `rollback_to` (the last validated revision).
    AwaitingValidation {
        revision: String,
        rollback_to: Option<String>,
        /// Where the verdict comes from, e.g. `GitHub Actions owner/app`.
        ci: String,
        #[serde(with = "millis")]
        timeout: Duration,
    },
    /// A detached `host watch` took over the wait for CI.
    WatcherStarted { environment: String, pid: u32, log: String },
    /// One look at CI for the watched revision.
    CiPolled {
        revision: String,
        /// `pending` (nothing started yet), `running`, `success` or `failure`.
        state: String,
        detail: String,
        url: Option<String>,
    },
    /// How the wait for CI ended: `success`, `failure` or `no-verdict`.
    CiVerdict {
        revision: String,
        verdict: String,
        detail: String,
        failing_jobs: Vec<String>,
        log_excerpt: Option<String>,
        url: Option<String>,
    },
    /// Before a confirmation: what runs where, and what would run here after.
    EnvironmentRevisions {
        target_revision: String,
        environments: Vec<EnvironmentRevision>,
        /// A warning about the target, e.g. not the revision validated upstream.
        note: Option<String>,
    },
    /// `host monitor`: one check.
    MonitorChecked {
        url: String,
        ok: bool,
        status: u16,
        detail: String,
        #[serde(with = "millis")]
        duration: Duration,
    },
    /// `host monitor`: it was up (or never checked) and is down now.
    MonitorDown { url: String, detail: String },
    /// `host monitor`: it was down and answers again.
    MonitorRecovered {
        url: String,
        #[serde(with = "millis")]
        down_for: Duration,
    },
}

/// One environment's revisions, as shown before a promotion.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentRevision {
    pub environment: String,
    pub current_revision: Option<String>,
    pub last_validated_revision: Option<String>,
}

/// The lifecycle phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Lock,
    Preflight,
    Approval,
    Backup,
    Deploy,
    Verify,
    Watch,
    Rollback,
    RollbackVerify,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lock => "lock",
            Phase::Preflight => "preflight",
            Phase::Approval => "approval",
            Phase::Backup => "backup",
            Phase::Deploy => "deploy",
            Phase::Verify => "verify",
            Phase::Watch => "watch",
            Phase::Rollback => "rollback",
            Phase::RollbackVerify => "rollback-verify",
        }
    }
}

/// How a run ended; each maps to one exit code (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    DryRun,
    /// Failed before anything changed.
    FailedUnchanged,
    RolledBack,
    /// Rollback failed too: a person must act; the lock is kept with the reason.
    RollbackFailed,
    Locked,
    ApprovalRequired,
    /// `deploy-first`: deployed and quick-checked; CI's verdict is awaited by `host watch`.
    Validating,
    /// Not validated and final: CI gave no verdict in time and the revision was kept
    /// (`on_timeout = "keep"`), or a newer deployment replaced it first.
    Unvalidated,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Succeeded | Outcome::DryRun | Outcome::Validating => 0,
            Outcome::FailedUnchanged => 3,
            Outcome::ApprovalRequired => 4,
            Outcome::Locked => 5,
            Outcome::Unvalidated => 7,
            Outcome::RolledBack => 10,
            Outcome::RollbackFailed => 11,
        }
    }
}

mod millis {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Something that wants to see every event.
pub trait Subscriber: Send + Sync {
    fn event(&self, event: &Event);
}

/// Fan-out to subscribers, in order. Cheap to clone.
#[derive(Clone, Default)]
pub struct Bus {
    subscribers: Arc<Mutex<Vec<Arc<dyn Subscriber>>>>,
}

impl Bus {
    pub fn subscribe(&self, s: Arc<dyn Subscriber>) {
        self.subscribers.lock().unwrap().push(s);
    }

    pub fn emit(&self, event: Event) {
        let subscribers = self.subscribers.lock().unwrap().clone();
        for s in subscribers {
            s.event(&event);
        }
    }
}

/// Keeps every event; used by tests and by the dry-run plan.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
}

impl Subscriber for Recorder {
    fn event(&self, event: &Event) {
        self.events.lock().unwrap().push(event.clone());
    }
}
