//! The host's overhead on a real deploy: `host deploy --env staging --rev v2` of the example
//! Alembic app against a plain bash script that runs the same commands in the same order, on
//! the same checkout, PostgreSQL and virtualenv, alternating the two in one run.
//!
//!     cargo xtask build-plugins                 # builds target/plugins/render-alembic.wasm
//!     cargo bench -p host --bench deploy        # prints the comparison, writes target/bench/deploy.json
//!
//! Needs what the end-to-end suites need (PostgreSQL server binaries, python3 with venv, git,
//! curl): `.ci/install-deps` installs them. `BENCH_ROUNDS=N` changes the number of timed
//! rounds (default 8, about a minute). Only the forward deploy v1 -> v2 is timed; between
//! rounds both sides are put back at v1 (the host with `host rollback --to v1`, the script
//! with its reverse).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::AlembicApp;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the host runs for this deploy (render-alembic, local mode), as a script. Keep it in
/// step with the plugin: the bench checks that both run the same number of commands.
const FORWARD: &str = r#"#!/usr/bin/env bash
# deploy.sh REV BACKUP_FILE: what `host deploy --rev REV` runs for examples/alembic-app.
set -euo pipefail
rev=$1 backup=$2
# preflight: resolve, look at the work tree, read the target's migrations, read the schema.
sha=$(git rev-parse --verify --end-of-options "$rev^{commit}")
git rev-parse HEAD >/dev/null
git status --porcelain --untracked-files=no >/dev/null
for f in $(git ls-tree --name-only "$sha" -- migrations/versions/); do
    git show "$sha:./$f" >/dev/null
done
alembic current >/dev/null 2>&1
# backup: dump, then prove the dump is readable.
mkdir -p backups
pg_dump --format=custom --no-owner --file "$backup" --dbname "$DATABASE_URL"
pg_restore --list "$backup" >/dev/null
# deploy: check out, migrate, restart.
sha=$(git rev-parse --verify --end-of-options "$rev^{commit}")
git checkout --quiet --force --detach "$sha"
alembic upgrade head >/dev/null 2>&1
python bin/restart 2>/dev/null
# verify: code and schema where they should be, then the health probe (10 tries, 500 ms apart).
git rev-parse HEAD >/dev/null
alembic current >/dev/null 2>&1
probe_started=$EPOCHREALTIME
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" | grep -q '"status": "ok"'; then
        # For the bench's breakdown: how long the probe took (bash builtin clock, no fork).
        echo "probe_us=$(( (${EPOCHREALTIME/./} - ${probe_started/./}) ))"
        exit 0
    fi
    sleep 0.5
done
echo "health probe failed" >&2
exit 1
"#;

/// Commands the script runs through the deploy, health probe excluded: 5 + one `git show` per
/// migration file of the target + 3 + 4 + 2.
fn script_commands(migrations_at_target: usize) -> usize {
    5 + migrations_at_target + 3 + 4 + 2
}

/// Puts the script's deploy back: schema to v1's head, code to v1, app restarted.
const REVERSE: &str = r#"#!/usr/bin/env bash
set -euo pipefail
alembic downgrade "$1" >/dev/null 2>&1
git checkout --quiet --force --detach "$2"
python bin/restart 2>/dev/null
"#;

struct HostRun {
    wall: Duration,
    /// Sum of the durations of the commands the host ran (its `command_finished` events).
    in_commands: Duration,
    commands: Vec<String>,
    /// Per phase (and `outside phases`): the time not spent in commands.
    own_by_phase: Vec<(String, Duration)>,
}

/// Splits the host's own time (wall minus commands) by phase, from its event stream.
/// Event durations are whole milliseconds (truncated), so each figure may be a few ms high.
fn own_time_by_phase(events: &[serde_json::Value], wall: Duration) -> Vec<(String, Duration)> {
    let ms = |e: &serde_json::Value| Duration::from_millis(e["duration"].as_u64().unwrap_or(0));
    let mut out = Vec::new();
    let mut in_phases = Duration::ZERO;
    let mut in_commands = Duration::ZERO;
    for e in events {
        match e["type"].as_str() {
            Some("phase_started") => in_commands = Duration::ZERO,
            Some("command_finished") => in_commands += ms(e),
            Some("phase_finished") => {
                let phase = e["phase"].as_str().unwrap_or("?").to_string();
                in_phases += ms(e);
                out.push((phase, ms(e).saturating_sub(in_commands)));
            }
            _ => {}
        }
    }
    out.push(("outside phases".to_string(), wall.saturating_sub(in_phases)));
    out
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    if !testkit::require("curl", testkit::find_program("curl", &[]).is_some()) {
        std::process::exit(1);
    }
    let setup_started = Instant::now();
    let Some(app) = AlembicApp::start() else {
        eprintln!("the deploy bench needs PostgreSQL and python3 with venv (see .ci/install-deps)");
        std::process::exit(1);
    };
    let scripts = tempfile::tempdir().unwrap();
    let forward = write_script(scripts.path(), "deploy.sh", FORWARD);
    let reverse = write_script(scripts.path(), "reverse.sh", REVERSE);
    let v1 = app.sha("v1");
    let v2 = app.sha("v2");
    let migrations_at_v2 = app
        .git(&["ls-tree", "--name-only", &v2, "--", "migrations/versions/"])
        .lines()
        .count();

    // v1 deployed by the host, as in the e2e suites; this also fills the compiled-plugin cache.
    let first = app.deploy("staging", "v1", &[]);
    assert_eq!(first.code, 0, "deploy v1:\n{}", first.text());
    let at_v1 = || {
        assert_eq!(app.head(), v1);
        assert_eq!(app.alembic_version(), "0001");
    };
    let at_v2 = || {
        assert_eq!(app.head(), v2);
        assert_eq!(app.alembic_version(), "0002");
        assert_eq!(app.get("/health").0, 200);
    };
    at_v1();
    println!(
        "setup (PostgreSQL, venv, app repo, host deploy v1): {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );

    let mut host_runs: Vec<HostRun> = Vec::new();
    let mut script_runs: Vec<Duration> = Vec::new();
    let mut script_probes: Vec<Duration> = Vec::new();
    let mut backup_n = 0;
    let mut script = || {
        backup_n += 1;
        let backup = format!("backups/script-{backup_n}.dump");
        let mut cmd = app_command(&app, &forward);
        cmd.args(["v2", &backup]);
        let started = Instant::now();
        let out_forward = cmd.output().expect("run deploy.sh");
        let took = started.elapsed();
        assert!(
            out_forward.status.success(),
            "deploy.sh failed: {}",
            String::from_utf8_lossy(&out_forward.stderr)
        );
        at_v2();
        let mut back = app_command(&app, &reverse);
        back.args(["0001", &v1]);
        let out = back.output().expect("run reverse.sh");
        assert!(
            out.status.success(),
            "reverse.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        at_v1();
        let probe_us = String::from_utf8_lossy(&out_forward.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("probe_us=")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .expect("deploy.sh prints probe_us=");
        (took, Duration::from_micros(probe_us))
    };
    let host = || {
        let started = Instant::now();
        let run = app.deploy("staging", "v2", &[]);
        let wall = started.elapsed();
        assert_eq!(run.code, 0, "host deploy v2:\n{}", run.text());
        at_v2();
        let finished = run.events_of("command_finished");
        let in_commands = finished
            .iter()
            .map(|e| e["duration"].as_u64().unwrap_or(0))
            .sum::<u64>();
        let commands = run
            .events_of("command_started")
            .iter()
            .map(|e| {
                let argv: Vec<&str> = e["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|a| a.as_str())
                    .collect();
                argv.join(" ")
            })
            .collect();
        let back = app.host(&[
            "rollback", "--env", "staging", "--to", "v1", "--output", "json",
        ]);
        assert_eq!(back.code, 0, "host rollback --to v1:\n{}", back.text());
        at_v1();
        HostRun {
            wall,
            in_commands: Duration::from_millis(in_commands),
            commands,
            own_by_phase: own_time_by_phase(&run.events(), wall),
        }
    };

    // One untimed round of each (page cache, PostgreSQL's catalog cache, Python's bytecode).
    let warm = host();
    script();
    let expected = script_commands(migrations_at_v2);
    println!(
        "commands the host ran for deploy v2 ({}; the script runs {expected}):",
        warm.commands.len()
    );
    for c in &warm.commands {
        println!("    {c}");
    }
    if warm.commands.len() != expected {
        eprintln!(
            "warning: the host ran {} commands and the script runs {expected}: update FORWARD in host/benches/deploy.rs",
            warm.commands.len()
        );
    }

    // Alternate, so drift (a warming cache, a busy neighbour) hits both sides alike.
    let timed_started = Instant::now();
    for round in 1..=rounds {
        let h = host();
        let (s, probe) = script();
        println!(
            "round {round}/{rounds}: host {:>6.0} ms (commands {:>5.0} ms)   script {:>6.0} ms (probe {:>3.0} ms)",
            ms(h.wall),
            ms(h.in_commands),
            ms(s),
            ms(probe)
        );
        host_runs.push(h);
        script_runs.push(s);
        script_probes.push(probe);
    }

    let host_wall: Vec<Duration> = host_runs.iter().map(|h| h.wall).collect();
    let host_cmds: Vec<Duration> = host_runs.iter().map(|h| h.in_commands).collect();
    let host_own: Vec<Duration> = host_runs
        .iter()
        .map(|h| h.wall.saturating_sub(h.in_commands))
        .collect();
    let (h_med, h_p90) = (median(&host_wall), p90(&host_wall));
    let (s_med, s_p90) = (median(&script_runs), p90(&script_runs));
    let ratio = h_med.as_secs_f64() / s_med.as_secs_f64();
    let overhead_ms = ms(h_med) - ms(s_med);
    // Per round, host minus the script run right after it: drift between rounds cancels out.
    let mut paired: Vec<f64> = host_runs
        .iter()
        .zip(&script_runs)
        .map(|(h, s)| ms(h.wall) - ms(*s))
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_ms = paired[paired.len().div_ceil(2) - 1];
    let phases: Vec<(String, Duration)> = warm
        .own_by_phase
        .iter()
        .map(|(phase, _)| {
            let v: Vec<Duration> = host_runs
                .iter()
                .filter_map(|h| {
                    h.own_by_phase
                        .iter()
                        .find(|(p, _)| p == phase)
                        .map(|(_, d)| *d)
                })
                .collect();
            (phase.clone(), median(&v))
        })
        .collect();

    println!(
        "\ndeploy benchmark: examples/alembic-app v1 -> v2 (1 migration), {rounds} alternating rounds\n"
    );
    println!(
        "{:<34} {:>6} {:>10} {:>10}",
        "name", "iters", "median", "p90"
    );
    println!("{}", "-".repeat(63));
    let line = |name: &str, v: &[Duration]| {
        println!(
            "{name:<34} {:>6} {:>7.0} ms {:>7.0} ms",
            v.len(),
            ms(median(v)),
            ms(p90(v))
        );
    };
    line("host deploy (wall)", &host_wall);
    line("script deploy (wall)", &script_runs);
    line("host: inside commands", &host_cmds);
    line("host: outside commands", &host_own);
    line("script: health probe (curl)", &script_probes);
    println!();
    println!("ratio host / script (medians)      {ratio:>10.2}x");
    println!("host overhead (median difference)  {overhead_ms:>7.0} ms");
    println!("host overhead (median paired diff) {paired_ms:>7.0} ms");
    println!("\nhost's own time by phase (phase duration minus its commands, median):");
    for (phase, d) in &phases {
        println!("    {phase:<16} {:>5.0} ms", ms(*d));
    }
    println!(
        "\nwhat each line measures:\n\
         \x20 host deploy          the `host` process from start to exit: config, state store, lock, \
         cached plugin load, {} commands, backup checksum, health probe, history\n\
         \x20 script deploy        `bash deploy.sh`: the same commands in the same order, curl for the probe\n\
         \x20 inside commands      sum of the host's command_finished durations (whole ms)\n\
         \x20 outside commands     host wall time minus that: process start, plugin calls, state \
         store, the health probe (the app's first request), event output\n\
         \x20 health probe (curl)  the script's probe, for comparison with the host's `verify` line below it\n\
         \x20 paired diff          median over rounds of (host - the script run right after it)\n\
         Python starts (~0.5 s each, 5 per deploy) dominate both sides: expect +-10% noise per run on \
         a busy machine, so read the ratio with the p90 column.",
        warm.commands.len()
    );
    let load = load_average();
    println!(
        "timed part took {:.1} s; load average at the end: {load}",
        timed_started.elapsed().as_secs_f64()
    );

    let to_ms = |v: &[Duration]| {
        v.iter()
            .map(|d| (ms(*d) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    };
    let doc = serde_json::json!({
        "benchmark": "deploy",
        "app": "examples/alembic-app",
        "deploy": "staging v1 -> v2 (one reversible migration)",
        "rounds": rounds,
        "load_average_at_end": load,
        "host_median_ms": (ms(h_med) * 10.0).round() / 10.0,
        "host_p90_ms": (ms(h_p90) * 10.0).round() / 10.0,
        "script_median_ms": (ms(s_med) * 10.0).round() / 10.0,
        "script_p90_ms": (ms(s_p90) * 10.0).round() / 10.0,
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "overhead_ms": (overhead_ms * 10.0).round() / 10.0,
        "overhead_paired_median_ms": (paired_ms * 10.0).round() / 10.0,
        "host_own_ms_by_phase": phases.iter().map(|(p, d)| (p.clone(), serde_json::json!(ms(*d).round()))).collect::<serde_json::Map<_, _>>(),
        "script_probe_median_ms": (ms(median(&script_probes)) * 10.0).round() / 10.0,
        "host_in_commands_median_ms": (ms(median(&host_cmds)) * 10.0).round() / 10.0,
        "host_outside_commands_median_ms": (ms(median(&host_own)) * 10.0).round() / 10.0,
        "host_samples_ms": to_ms(&host_wall),
        "script_samples_ms": to_ms(&script_runs),
        "host_commands": warm.commands,
        "script_commands": expected,
    });
    let path = testkit::target_dir().join("bench/deploy.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!("written to {}", path.display());
}

fn write_script(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `bash SCRIPT` in the checkout with the environment the host gives its commands: a cleared
/// environment with the host's base variables and the granted ones (DATABASE_URL, PORT). An
/// inherited PYTHONDONTWRITEBYTECODE, say, would make every Python start of the script slower.
fn app_command(app: &AlembicApp, script: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(&app.root).env_clear();
    for key in ["HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("PATH", app.python.path_var())
        .env("DATABASE_URL", &app.pg.url)
        .env("PORT", app.port.to_string());
    cmd
}

/// The 1-minute load average, to judge how noisy the run was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    percentile(v, 50)
}

fn p90(v: &[Duration]) -> Duration {
    percentile(v, 90)
}

/// Nearest-rank percentile.
fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[(p * s.len()).div_ceil(100).max(1) - 1]
}
