//! Health probes: the host, not the plugin, owns attempts, intervals, timeouts and the overall
//! deadline. A probe passes on the expected status and, if given, a text in the body.

use crate::events::{Bus, Event};
use crate::runtime::Probe;
use std::time::{Duration, Instant};

/// Run every probe in order; the first that exhausts its attempts fails the check.
pub async fn run_all(
    base_url: &str,
    probes: &[Probe],
    deadline: Duration,
    events: &Bus,
) -> Result<Vec<String>, String> {
    let client = reqwest::Client::new();
    let stop_at = Instant::now() + deadline;
    let mut passed = Vec::new();
    for probe in probes {
        let url = format!("{}{}", base_url.trim_end_matches('/'), probe.path);
        let mut last = String::new();
        let mut ok = false;
        for attempt in 1..=probe.attempts.max(1) {
            let left = stop_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = format!("overall deadline of {} passed", humantime::format_duration(deadline));
                break;
            }
            let timeout = Duration::from_millis(probe.timeout_ms as u64).min(left);
            let (pass, detail) = check(&client, &url, probe, timeout).await;
            events.emit(Event::ProbeAttempt {
                probe: probe.name.clone(),
                url: url.clone(),
                attempt,
                of: probe.attempts,
                ok: pass,
                detail: detail.clone(),
            });
            last = detail;
            if pass {
                ok = true;
                break;
            }
            if attempt < probe.attempts {
                let pause = Duration::from_millis(probe.interval_ms as u64)
                    .min(stop_at.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
        if !ok {
            return Err(format!("probe `{}` ({url}) failed: {last}", probe.name));
        }
        passed.push(format!("{} {} ok", probe.name, probe.path));
    }
    Ok(passed)
}

async fn check(client: &reqwest::Client, url: &str, probe: &Probe, timeout: Duration) -> (bool, String) {
    let response = match client.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return (false, format!("no answer within {} ms", timeout.as_millis())),
        Err(e) if e.is_connect() => return (false, "connection refused".into()),
        Err(e) => return (false, e.to_string()),
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != probe.expect_status {
        let excerpt: String = body.chars().take(200).collect();
        return (false, format!("status {status}, expected {}: {}", probe.expect_status, excerpt.trim()));
    }
    if let Some(text) = &probe.body_contains
        && !body.contains(text.as_str())
    {
        return (false, format!("status {status} but the body lacks `{text}`"));
    }
    (true, format!("status {status}"))
}
