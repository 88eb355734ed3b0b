//! `host monitor`: is the deployed app up? One GET with a deadline, an expected status and a
//! text the page must hold (the app's name, say: a proxy's error page answers 200 too).
//!
//! Every check is recorded in the state store; an alert goes out only when the state changes
//! (it went down, or it came back), so a cron job running this every hour pages once per
//! outage, not once per hour.

use crate::config::{EnvironmentConfig, MonitorConfig};
use crate::events::{Bus, Event};
use crate::state::{MonitorCheck, NewMonitorCheck, Store, now_ms};
use std::time::{Duration, Instant};

/// What to check: the URL and the expectations.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub expect_status: u16,
    pub body_contains: Option<String>,
    pub timeout: Duration,
}

impl Target {
    /// The environment's `[monitor]` (or defaults: `/`, 200, 10 s) on `health.base_url`.
    pub fn of(env: &EnvironmentConfig) -> Result<Target, String> {
        let m = env.monitor.clone().unwrap_or(MonitorConfig {
            url: None,
            path: "/".into(),
            expect_status: 200,
            body_contains: None,
            timeout: Duration::from_secs(10),
        });
        let url = match (&m.url, &env.health.base_url) {
            (Some(url), _) => crate::config::expand_env(url),
            (None, Some(base)) => format!("{}{}", base.trim_end_matches('/'), m.path),
            (None, None) => {
                return Err(format!(
                    "nothing to monitor on `{}`: set [environments.{}.monitor] url, or health.base_url",
                    env.name, env.name
                ));
            }
        };
        Ok(Target {
            url,
            expect_status: m.expect_status,
            body_contains: m.body_contains,
            timeout: m.timeout,
        })
    }
}

/// Check once, record it, and emit the check plus `monitor_down` / `monitor_recovered` when
/// the state changed since the previous check (a first check that is down counts as a change).
pub async fn check(
    store: &Store,
    environment: &str,
    target: &Target,
    events: &Bus,
) -> anyhow::Result<MonitorCheck> {
    let started = Instant::now();
    let (ok, status, detail) = probe(target).await;
    let duration = started.elapsed();
    let previous = store
        .monitor_checks(environment, 1)
        .await?
        .into_iter()
        .next();
    let changed = match &previous {
        Some(p) => p.ok != ok,
        None => !ok,
    };
    let down_since = if changed && ok {
        store.monitor_down_since(environment).await?
    } else {
        None
    };
    let record = store
        .record_monitor_check(&NewMonitorCheck {
            environment: environment.into(),
            url: target.url.clone(),
            ok,
            status,
            detail: detail.clone(),
            duration_ms: duration.as_millis() as u64,
            changed,
        })
        .await?;
    events.emit(Event::MonitorChecked {
        url: target.url.clone(),
        ok,
        status,
        detail: detail.clone(),
        duration,
    });
    if changed && !ok {
        events.emit(Event::MonitorDown {
            url: target.url.clone(),
            detail,
        });
    } else if changed {
        let down_for = down_since
            .map(|at| Duration::from_millis((now_ms() - at).max(0) as u64))
            .unwrap_or_default();
        events.emit(Event::MonitorRecovered {
            url: target.url.clone(),
            down_for,
        });
    }
    Ok(record)
}

async fn probe(target: &Target) -> (bool, u16, String) {
    let client = reqwest::Client::new();
    let response = match client.get(&target.url).timeout(target.timeout).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return (
                false,
                0,
                format!(
                    "no answer within {}",
                    humantime::format_duration(target.timeout)
                ),
            );
        }
        Err(e) if e.is_connect() => return (false, 0, "connection refused".into()),
        Err(e) => return (false, 0, e.without_url().to_string()),
    };
    let status = response.status().as_u16();
    let body = match tokio::time::timeout(target.timeout, response.text()).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return (
                false,
                status,
                format!("status {status}, body unreadable: {}", e.without_url()),
            );
        }
        Err(_) => {
            return (
                false,
                status,
                format!(
                    "status {status}, body not received within {}",
                    humantime::format_duration(target.timeout)
                ),
            );
        }
    };
    if status != target.expect_status {
        let excerpt: String = body.chars().take(120).collect();
        return (
            false,
            status,
            format!(
                "status {status}, expected {}: {}",
                target.expect_status,
                excerpt.trim()
            ),
        );
    }
    match &target.body_contains {
        Some(text) if !body.contains(text.as_str()) => (
            false,
            status,
            format!("status {status} but the page lacks `{text}`"),
        ),
        Some(text) => (true, status, format!("status {status}, `{text}` found")),
        None => (true, status, format!("status {status}")),
    }
}
