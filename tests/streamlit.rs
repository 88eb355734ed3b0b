//! End to end on the `deploy-first` strategy with the `streamlit-preprod` plugin: the real
//! `host` binary, the real component, real git (a bare `origin` and checkouts cloned from it)
//! and a real Streamlit from PyPI serving `examples/streamlit-app`.
//!
//! Two things are fakes, small HTTP servers on 127.0.0.1 speaking the real wire formats:
//! [`FakeGithub`] answers GitHub's REST API (workflow runs for a head SHA, a run's jobs, a job's
//! log as a 302 to a download URL) in GitHub's response shapes, following a script per commit;
//! [`Receiver`] takes Discord webhook posts (`{"content": ...}`).
//!
//! Every revision of the app carries the test's deploy.toml: the example's own file with the CI
//! pointed at the fake and its clock shortened (the host resets checkouts to exact commits, so
//! the file must be committed to survive a deploy).

mod common;

use common::{Run, host_bin, http_get, plugin_dir};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = "example-org/kitchen-insights";
const TOKEN: &str = "ghp_kT3stT0kenXq9Lz2Vb7Nw4Rm8Yc1Hd6Fj0Pa";

macro_rules! kitchen {
    ($ci:expr) => {
        match Kitchen::start($ci) {
            Some(k) => k,
            None => return,
        }
    };
}

#[test]
fn a_a_good_sha_is_live_at_once_and_validated_when_ci_is_green() {
    let k = kitchen!(Ci::default());
    k.validated("v1");
    let v2 = k.sha("v2");
    // CI runs until the test lets it pass: the deploy must not wait for it.
    k.github.script(&v2, Script::never_finishes());

    let started = Instant::now();
    let run = k.deploy("preprod", "v2", &[]);
    let returned_after = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.text());
    // It returned while CI was still running: live, not validated yet.
    assert_eq!(
        run.events_of("run_finished")[0]["outcome"],
        "validating",
        "{}",
        run.text()
    );
    let awaiting = &run.events_of("awaiting_validation")[0];
    assert_eq!(awaiting["revision"], v2.as_str());
    assert_eq!(awaiting["rollback_to"], k.sha("v1").as_str());
    assert!(
        !run.events_of("watcher_started").is_empty(),
        "{}",
        run.text()
    );
    let status = k.status("preprod");
    assert_eq!(status["validation"]["status"], "validating", "{status:#}");
    assert_eq!(status["environment"]["current_revision"], v2.as_str());
    assert_eq!(
        status["environment"]["last_validated_revision"],
        k.sha("v1").as_str()
    );
    assert_eq!(k.head(), v2);
    assert!(
        k.get("/app/static/about.txt").1.contains("v2"),
        "the app serves v2 right away"
    );
    k.wait_status("preprod", |s| s["validation"]["last_ci_state"] == "running");
    k.github.script(&v2, Script::passes_after(Duration::ZERO));

    let status = k.wait_for_verdict("preprod");
    assert_eq!(status["validation"]["status"], "validated", "{status:#}");
    assert_eq!(
        status["environment"]["last_validated_revision"],
        v2.as_str(),
        "{status:#}\n{}",
        k.watch_log()
    );
    assert_eq!(status["last_run"]["status"], "succeeded");
    let phases: Vec<String> = status["last_run"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["phase"].as_str().unwrap(),
                p["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        phases,
        ["preflight:ok", "deploy:ok", "verify:ok", "watch:ok"]
    );
    assert_eq!(k.app_revision(), v2);
    // Only the `CI` workflow counts: the failing `Docs` workflow of the same commit does not.
    assert!(
        k.github
            .requests()
            .iter()
            .any(|r| r.path.contains(&format!("head_sha={v2}")))
    );

    let messages = k
        .webhook
        .wait_for(|m| m.iter().any(|c| c.contains("CI passed")));
    let texts = messages.join("\n---\n");
    assert!(
        texts.contains("🚀 **PREPROD - Deploy started**\nSHA: ")
            && texts.contains("Add recipes by season (Example Author)"),
        "{texts}"
    );
    assert!(
        texts.contains(&format!(
            "✅ **PREPROD - Deployed, CI in progress**\nSHA: {}",
            &v2[..10]
        )),
        "{texts}"
    );
    assert!(
        texts.contains(&format!(
            "If CI fails: automatic rollback to {}",
            &k.sha("v1")[..10]
        )),
        "{texts}"
    );
    assert!(
        texts.contains(&format!(
            "✅ **PREPROD - CI passed, {} validated**",
            &v2[..10]
        )),
        "{texts}"
    );
    eprintln!("deploy-first: `host deploy` returned after {returned_after:?}, before CI finished");
}

#[test]
fn b_a_red_ci_rolls_back_to_the_last_validated_sha_and_says_which_job_failed() {
    let k = kitchen!(Ci::default());
    k.validated("v2");
    let (v2, v3) = (k.sha("v2"), k.sha("v3"));
    k.github
        .script(&v3, Script::fails_after(Duration::from_secs(2)));

    let run = k.deploy("preprod", "v3", &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(k.get("/app/static/about.txt").1.contains("v3"));

    let status = k.wait_for_verdict("preprod");
    assert_eq!(status["validation"]["status"], "rolled_back", "{status:#}");
    assert!(
        status["validation"]["verdict"]
            .as_str()
            .unwrap()
            .contains("CI failed"),
        "{status:#}"
    );
    assert_eq!(status["environment"]["current_revision"], v2.as_str());
    assert_eq!(
        status["environment"]["last_validated_revision"],
        v2.as_str()
    );
    assert_eq!(status["last_run"]["status"], "rolled_back");
    // The checkout is back at v2 and the restarted app serves it.
    assert_eq!(k.head(), v2);
    assert_eq!(k.app_revision(), v2);
    let (code, about) = k.get("/app/static/about.txt");
    assert_eq!(code, 200);
    assert!(about.contains("v2"), "{about}");
    assert_eq!(k.get("/_stcore/health"), (200, "ok".to_string()));

    // The rollback message names the failing job and quotes its log.
    let messages = k
        .webhook
        .wait_for(|m| m.iter().any(|c| c.contains("rolled back")));
    let rollback = messages
        .iter()
        .find(|c| c.contains("CI failed, rolled back"))
        .expect("a rollback message");
    assert!(
        rollback.contains(&format!("SHA: {} → back to {}", &v3[..10], &v2[..10])),
        "{rollback}"
    );
    assert!(
        rollback.contains("Failing jobs: CI / tests (step `Run pytest`)"),
        "{rollback}"
    );
    assert!(
        rollback.contains("assert {'Spanish': 1} == {'Spanish': 2}"),
        "{rollback}"
    );
    assert!(
        rollback.contains(&format!("https://github.com/{REPO}/actions/runs/")),
        "{rollback}"
    );

    // The token went to the API, never to the log download host, and was printed nowhere.
    let requests = k.github.requests();
    let api: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .collect();
    assert!(
        api.iter()
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}"))),
        "{api:#?}"
    );
    assert!(
        api.iter().all(|r| r.method == "GET"),
        "a watcher only reads: {api:#?}"
    );
    assert!(api.iter().all(
        |r| r.accept.as_deref() == Some("application/vnd.github+json")
            && r.api_version.as_deref() == Some("2022-11-28")
    ));
    let downloads: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path.starts_with("/download/"))
        .collect();
    assert_eq!(downloads.len(), 1, "{requests:#?}");
    assert_eq!(
        downloads[0].authorization, None,
        "the token must not follow the redirect"
    );
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));
    assert_no_file_contains(&k.root.join(".host"), TOKEN);
    assert_no_file_contains(k.state_dir(), TOKEN);
    assert!(
        !k.watch_log().contains(TOKEN) && !k.watch_log().contains("/api/webhooks/"),
        "secrets in the watch log"
    );
}

#[test]
fn c1_no_verdict_in_time_rolls_back_when_so_configured() {
    let k = kitchen!(Ci {
        timeout: "4s",
        ..Ci::default()
    });
    k.validated("v1");
    let v2 = k.sha("v2");
    k.github.script(&v2, Script::never_finishes());

    let run = k.deploy("preprod", "v2", &["--wait"]);
    assert_eq!(
        run.code,
        10,
        "--wait exits 10 when rolled back:\n{}",
        run.text()
    );
    let verdict = &run.events_of("ci_verdict")[0];
    assert_eq!(verdict["verdict"], "no-verdict", "{verdict}");
    assert!(
        verdict["detail"]
            .as_str()
            .unwrap()
            .contains("no CI verdict"),
        "{verdict}"
    );
    assert_eq!(k.head(), k.sha("v1"));
    assert_eq!(k.app_revision(), k.sha("v1"));
    assert_eq!(k.status("preprod")["validation"]["status"], "rolled_back");
    let messages = k
        .webhook
        .wait_for(|m| m.iter().any(|c| c.contains("rolled back")));
    assert!(
        messages
            .iter()
            .any(|c| c.contains("⏱️ **PREPROD - No CI verdict in time, rolled back**")),
        "{messages:#?}"
    );
}

#[test]
fn c2_no_verdict_in_time_keeps_the_revision_when_so_configured() {
    // The command source this time: a script that always says CI is still running.
    let script = r#"if [ \"$HOST_CI_SHA\" = \"$(git rev-parse v1)\" ]; then echo success; else echo running 2 of 3 jobs done; fi"#;
    let k = kitchen!(Ci {
        timeout: "3s",
        on_timeout: "keep",
        command: Some(script)
    });
    k.validated("v1");
    let run = k.deploy("preprod", "v2", &["--wait"]);
    assert_eq!(run.code, 7, "exit 7 = not validated:\n{}", run.text());
    let polls = run.events_of("ci_polled");
    assert!(
        polls
            .iter()
            .all(|p| p["state"] == "running" && p["detail"] == "2 of 3 jobs done"),
        "{}",
        run.text()
    );
    assert!(polls.len() >= 2, "polled each interval: {}", run.text());
    assert_eq!(k.head(), k.sha("v2"), "kept");
    let status = k.status("preprod");
    assert_eq!(status["validation"]["status"], "unvalidated");
    assert_eq!(
        status["environment"]["current_revision"],
        k.sha("v2").as_str()
    );
    assert_eq!(
        status["environment"]["last_validated_revision"],
        k.sha("v1").as_str(),
        "the rollback point stays"
    );
    assert_eq!(status["last_run"]["status"], "unvalidated");
}

#[test]
fn d_a_killed_watcher_shows_in_status_and_host_watch_resumes_it() {
    let k = kitchen!(Ci {
        timeout: "60s",
        ..Ci::default()
    });
    k.validated("v1");
    let v2 = k.sha("v2");
    k.github.script(&v2, Script::never_finishes());

    let run = k.deploy("preprod", "v2", &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let status = k.wait_status("preprod", |s| {
        s["validation"]["polls"].as_i64().unwrap_or(0) >= 2
    });
    assert_eq!(status["validation"]["watcher_running"], true, "{status:#}");
    let pid = status["validation"]["watcher_pid"].as_i64().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );

    let status = k.wait_status("preprod", |s| s["validation"]["watcher_running"] == false);
    assert_eq!(
        status["validation"]["status"], "validating",
        "still awaiting CI: {status:#}"
    );
    let human = k.host(&["status", "--env", "preprod"]);
    assert!(
        human.stdout.contains(&format!(
            "NOT running (pid {pid} is gone): resume with `host watch --env preprod`"
        )),
        "{}",
        human.text()
    );

    // CI finishes while nobody watches; a new watcher picks the verdict up.
    k.github.script(&v2, Script::passes_after(Duration::ZERO));
    let resumed = k.host(&["watch", "--env", "preprod", "--output", "json"]);
    assert_eq!(resumed.code, 0, "{}", resumed.text());
    assert_eq!(resumed.events_of("validated")[0]["revision"], v2.as_str());
    let status = k.status("preprod");
    assert_eq!(status["validation"]["status"], "validated");
    assert_eq!(
        status["environment"]["last_validated_revision"],
        v2.as_str()
    );
    let watches: Vec<(String, String)> = status["last_run"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["phase"] == "watch")
        .map(|p| {
            (
                p["outcome"].as_str().unwrap().to_string(),
                p["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert_eq!(watches[0].0, "failed");
    assert!(
        watches[0]
            .1
            .contains(&format!("the watcher stopped before a verdict (pid {pid})")),
        "{watches:?}"
    );
    assert_eq!(watches[1].0, "ok");
    // Nothing left to watch.
    let again = k.host(&["watch", "--env", "preprod"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("nothing to watch on preprod"),
        "{}",
        again.text()
    );
}

#[test]
fn e_production_needs_the_typed_word_then_backs_up_and_checks_five_times() {
    let k = kitchen!(Ci::default());
    k.validated("v2");
    let prod = k.checkout("production", "v1");
    std::fs::create_dir_all(prod.root.join("data")).unwrap();
    std::fs::write(prod.root.join("data/feedback.csv"), "more soups\n").unwrap();
    let first = prod.deploy("production", "v1", &["--confirm", "DEPLOY"]);
    assert_eq!(first.code, 0, "{}", first.text());
    let before = (prod.head(), prod.app_revision(), backups(&prod.root));

    // No terminal, no --confirm, and CI=true implies nothing: refused, nothing changed. (Under
    // CI=true the host also wants its plugins pinned in host.lock.)
    let pinned = prod.host(&["plugins", "lock", "streamlit-preprod"]);
    assert_eq!(pinned.code, 0, "{}", pinned.text());
    for ci in [false, true] {
        let mut cmd = prod.host_cmd(&["deploy", "--env", "production", "--output", "json"]);
        if ci {
            cmd.env("CI", "true");
        }
        let run = run_of(cmd.stdin(Stdio::null()).output().unwrap());
        assert_eq!(run.code, 4, "exit 4 = approval required:\n{}", run.text());
        assert!(
            run.stderr.contains("approval required") || run.stdout.contains("approval required"),
            "{}",
            run.text()
        );
        assert!(run.stdout.contains("--confirm DEPLOY"), "{}", run.text());
        // It showed what runs where: production's v1, preprod's validated v2 as the target.
        let shown = &run.events_of("environment_revisions")[0];
        assert_eq!(shown["target_revision"], k.sha("v2").as_str(), "{shown}");
        assert_eq!(shown["environments"][0]["environment"], "preprod");
        assert_eq!(
            shown["environments"][1]["current_revision"],
            k.sha("v1").as_str()
        );
        assert!(run.events_of("backup_made").is_empty());
        assert_eq!(
            (prod.head(), prod.app_revision(), backups(&prod.root)),
            before
        );
    }
    let wrong = prod.deploy("production", "v2", &["--confirm", "yes"]);
    assert_eq!(wrong.code, 4, "{}", wrong.text());

    let run = prod.deploy("production", "v2", &["--confirm", "DEPLOY"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let backup = &run.events_of("backup_made")[0];
    assert_eq!(backup["verified"], true);
    let archive = prod.root.join(backup["path"].as_str().unwrap());
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("data/feedback.csv"));
    let probes = run.events_of("probe_attempt");
    assert!(
        !probes.is_empty()
            && probes
                .iter()
                .all(|p| p["of"] == 5 && p["url"].as_str().unwrap().ends_with("/_stcore/health")),
        "{probes:#?}"
    );
    assert_eq!(prod.head(), k.sha("v2"));
    assert_eq!(prod.app_revision(), k.sha("v2"));
    let status = prod.status("production");
    assert_eq!(
        status["environment"]["last_validated_revision"],
        k.sha("v2").as_str()
    );
    let messages = k.webhook.wait_for(|m| {
        m.iter()
            .any(|c| c.contains("PRODUCTION - Deploy succeeded"))
    });
    let ok = messages
        .iter()
        .find(|c| c.contains("PRODUCTION - Deploy succeeded"))
        .unwrap();
    assert!(
        ok.contains("PREPROD ✅ → PRODUCTION ✅")
            && ok.contains("`host rollback --env production`"),
        "{ok}"
    );
    // Refused runs page for approval and never say they started.
    let started = messages
        .iter()
        .filter(|c| c.contains("PRODUCTION - Deploy started"))
        .count();
    assert_eq!(started, 2, "v1, then v2: {messages:#?}");
    assert!(
        messages
            .iter()
            .any(|c| c.starts_with("✋ **PRODUCTION - Waiting for approval**")),
        "{messages:#?}"
    );
}

#[test]
fn f_monitor_alerts_once_when_down_and_once_when_back() {
    let k = kitchen!(Ci::default());
    k.validated("v1");
    let checks = |n: usize| -> Vec<Value> {
        let status = k.status("preprod");
        let recent = status["monitor"].as_array().unwrap().clone();
        assert_eq!(recent.len(), n, "{status:#}");
        recent
    };
    let up = k.host(&["monitor", "--env", "preprod"]);
    assert_eq!(up.code, 0, "{}", up.text());
    assert!(
        up.stdout.contains("✓ up") && up.stdout.contains("`Kitchen Insights` found"),
        "{}",
        up.text()
    );
    let sent = k.webhook.count();

    k.stop_app();
    let down = k.host(&["monitor", "--env", "preprod"]);
    assert_eq!(down.code, 1, "exit 1 while down:\n{}", down.text());
    let still = k.host(&["monitor", "--env", "preprod", "--output", "json"]);
    assert_eq!(still.code, 1);
    assert_eq!(still.events_of("monitor_checked")[0]["ok"], false);
    assert!(
        still.events_of("monitor_down").is_empty(),
        "no second alert"
    );

    k.restart_app();
    let back = k.host(&["monitor", "--env", "preprod"]);
    assert_eq!(back.code, 0, "{}", back.text());

    let messages = k.webhook.wait_for(|m| m.len() >= sent + 2);
    let new: Vec<&String> = messages[sent..].iter().collect();
    assert_eq!(new.len(), 2, "{new:#?}");
    assert!(
        new[0].starts_with("🔴 **PREPROD - DOWN**") && new[0].contains("connection refused"),
        "{}",
        new[0]
    );
    assert!(
        new[1].starts_with("🟢 **PREPROD - Recovered**") && new[1].contains("Down for"),
        "{}",
        new[1]
    );
    let recorded: Vec<(bool, bool)> = checks(4)
        .iter()
        .map(|c| (c["ok"].as_bool().unwrap(), c["changed"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        recorded,
        [(true, true), (false, false), (false, true), (true, false)],
        "newest first"
    );
}

#[test]
fn g_a_deploy_during_a_watch_supersedes_it_without_waiting_for_its_ci() {
    let k = kitchen!(Ci::default());
    k.validated("v1");
    let (v1, v2, v4) = (k.sha("v1"), k.sha("v2"), k.sha("v4"));
    k.github.script(&v2, Script::never_finishes());
    k.github
        .script(&v4, Script::passes_after(Duration::from_secs(1)));

    let first = k.deploy("preprod", "v2", &[]);
    assert_eq!(first.code, 0, "{}", first.text());
    let status = k.wait_status("preprod", |s| s["validation"]["watcher_running"] == true);
    let first_watcher = status["validation"]["watcher_pid"]
        .as_i64()
        .unwrap()
        .to_string();

    // The next push deploys at once: no lock held while CI runs.
    let second = k.deploy("preprod", "v4", &[]);
    assert_eq!(second.code, 0, "{}", second.text());
    let awaiting = &second.events_of("awaiting_validation")[0];
    assert_eq!(
        awaiting["rollback_to"],
        v1.as_str(),
        "v2 was never validated: the rollback point stays v1"
    );

    let status = k.wait_for_verdict("preprod");
    assert_eq!(status["validation"]["status"], "validated", "{status:#}");
    assert_eq!(
        status["environment"]["last_validated_revision"],
        v4.as_str()
    );
    assert_eq!(k.app_revision(), v4);
    let history = k.host(&["history", "--env", "preprod", "--output", "json"]);
    let runs: Vec<Value> = serde_json::from_str(&history.stdout).unwrap();
    let replaced = runs
        .iter()
        .find(|d| d["target_revision"] == v2.as_str())
        .unwrap();
    assert_eq!(replaced["status"], "unvalidated", "{replaced:#}");
    assert!(
        replaced["detail"].as_str().unwrap().contains("superseded"),
        "{replaced:#}"
    );
    // The first watcher noticed and stopped by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{first_watcher}")).exists() && !is_zombie(&first_watcher) {
        assert!(
            Instant::now() < deadline,
            "the superseded watcher is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the app, its checkouts and the host ------------------------------------------------------

/// The knobs a test turns in `[environments.preprod.ci]`.
#[derive(Clone)]
struct Ci {
    timeout: &'static str,
    on_timeout: &'static str,
    /// Use the command source with this shell line instead of GitHub.
    command: Option<&'static str>,
}

impl Default for Ci {
    fn default() -> Self {
        Ci {
            timeout: "30s",
            on_timeout: "rollback",
            command: None,
        }
    }
}

/// The origin, the preprod checkout and the fakes; more checkouts on demand.
struct Kitchen {
    // First: dropped (app and watcher stopped) before the temporary directory goes.
    preprod: Checkout,
    github: FakeGithub,
    webhook: Receiver,
    python: testkit::PythonEnv,
    plugins: PathBuf,
    tmp: tempfile::TempDir,
    origin: PathBuf,
    root: PathBuf,
}

struct Checkout {
    root: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
}

impl Kitchen {
    fn start(ci: Ci) -> Option<Kitchen> {
        if !testkit::require("python3 with venv", testkit::PythonEnv::available()) {
            return None;
        }
        let plugins = plugin_dir(&["streamlit-preprod"]);
        let example = testkit::workspace_root().join("examples/streamlit-app");
        let python = testkit::PythonEnv::ensure(&example.join("base/requirements.txt"))
            .expect("streamlit venv");
        let github = FakeGithub::start();
        let webhook = Receiver::start();
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("deploy.toml");
        std::fs::write(
            &config,
            test_config(&example.join("base/deploy.toml"), &ci, github.port),
        )
        .unwrap();
        let origin = tmp.path().join("origin.git");
        testkit::make_streamlit_origin(&origin, Some(&config)).expect("origin");
        let mut k = Kitchen {
            github,
            webhook,
            python,
            plugins,
            origin,
            preprod: Checkout {
                root: PathBuf::new(),
                port: 0,
                env: Vec::new(),
            },
            root: PathBuf::new(),
            tmp,
        };
        k.preprod = k.checkout("preprod", "v1");
        k.root = k.preprod.root.clone();
        Some(k)
    }

    fn state_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A checkout of origin for `name` at `rev`, on its own port, sharing the state store.
    fn checkout(&self, name: &str, rev: &str) -> Checkout {
        let root = self.tmp.path().join(name);
        testkit::clone_checkout(&self.origin, &root, rev).expect("checkout");
        let root = root.canonicalize().unwrap();
        let port = testkit::free_port();
        let state = format!("sqlite://{}", self.tmp.path().join("state.db").display());
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                self.python.path_var().to_string_lossy().into_owned(),
            ),
            ("PORT".into(), port.to_string()),
            ("HOST_PLUGIN_DIR".into(), self.plugins.display().to_string()),
            (
                "HOST_CACHE_DIR".into(),
                testkit::target_dir()
                    .join("testkit/component-cache")
                    .display()
                    .to_string(),
            ),
            ("HOST_STATE_URL".into(), state),
            ("GITHUB_TOKEN".into(), TOKEN.into()),
            (
                "DISCORD_WEBHOOK_URL".into(),
                format!(
                    "http://127.0.0.1:{}/api/webhooks/1234/s3cr3t",
                    self.webhook.port
                ),
            ),
        ];
        env.extend(
            testkit::quiet_git()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Checkout { root, port, env }
    }

    /// Deploys `rev` to preprod and waits for CI (green at once): the starting point.
    fn validated(&self, rev: &str) {
        let sha = self.sha(rev);
        self.github
            .script(&sha, Script::passes_after(Duration::ZERO));
        let run = self.deploy("preprod", rev, &["--wait"]);
        assert_eq!(run.code, 0, "deploy {rev} --wait:\n{}", run.text());
        assert_eq!(
            self.status("preprod")["environment"]["last_validated_revision"],
            sha.as_str()
        );
    }

    fn wait_for_verdict(&self, env: &str) -> Value {
        self.wait_status(env, |s| s["validation"]["status"] != "validating");
        // `host status` reads the environment, then the watch: read again once it is final.
        self.status(env)
    }

    fn wait_status(&self, env: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(env);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting; status:\n{status:#}\nwatch log:\n{}",
                self.watch_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn watch_log(&self) -> String {
        std::fs::read_to_string(self.root.join(".host/watch-preprod.log")).unwrap_or_default()
    }

    fn stop_app(&self) {
        self.preprod.stop_app();
    }

    fn restart_app(&self) {
        let out = Command::new("python")
            .arg("bin/restart")
            .current_dir(&self.root)
            .envs(self.preprod.env.iter().map(|(a, b)| (a, b)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl std::ops::Deref for Kitchen {
    type Target = Checkout;
    fn deref(&self) -> &Checkout {
        &self.preprod
    }
}

impl Checkout {
    fn host_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(host_bin());
        cmd.args(args)
            .current_dir(&self.root)
            .env_remove("CI")
            .env_remove("HOST_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn host(&self, args: &[&str]) -> Run {
        run_of(
            self.host_cmd(args)
                .stdin(Stdio::null())
                .output()
                .expect("run host"),
        )
    }

    fn deploy(&self, env: &str, rev: &str, extra: &[&str]) -> Run {
        let mut args = vec!["deploy", "--env", env, "--rev", rev, "--output", "json"];
        args.extend_from_slice(extra);
        self.host(&args)
    }

    fn status(&self, env: &str) -> Value {
        let run = self.host(&["status", "--env", env, "--output", "json"]);
        assert_eq!(run.code, 0, "{}", run.text());
        serde_json::from_str(&run.stdout).expect("status JSON")
    }

    fn git(&self, args: &[&str]) -> String {
        common::git(&self.root, args)
    }

    fn sha(&self, rev: &str) -> String {
        self.git(&["rev-parse", &format!("{rev}^{{commit}}")])
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// The revision the running app was started at (bin/restart records it once it listens).
    fn app_revision(&self) -> String {
        std::fs::read_to_string(self.root.join(".run/app.rev"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    fn stop_app(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.root.join(".run/app.pid")) {
            let pid = pid.trim();
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists()
                && !is_zombie(pid)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Checkout {
    /// Stop the watcher a detached deploy may have left, and the app.
    fn drop(&mut self) {
        if self.root.as_os_str().is_empty() {
            return;
        }
        for env in ["preprod", "production"] {
            let run = self.host(&["status", "--env", env, "--output", "json"]);
            if let Ok(status) = serde_json::from_str::<Value>(&run.stdout)
                && status["validation"]["watcher_running"] == true
                && let Some(pid) = status["validation"]["watcher_pid"].as_i64()
            {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        self.stop_app();
    }
}

fn run_of(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// The example's deploy.toml with the CI pointed at the fake and its clock shortened.
fn test_config(example: &Path, ci: &Ci, github_port: u16) -> String {
    let text = std::fs::read_to_string(example).unwrap();
    let mut out = Vec::new();
    let mut in_ci = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_ci = line.trim() == "[environments.preprod.ci]";
        }
        let replaced = if !in_ci {
            line.to_string()
        } else if line.starts_with("api = ") {
            format!("api = \"http://127.0.0.1:{github_port}\"")
        } else if line.starts_with("start_timeout = ") {
            "start_timeout = \"5s\"".into()
        } else if line.starts_with("interval = ") {
            "interval = \"500ms\"".into()
        } else if line.starts_with("timeout = ") {
            format!("timeout = \"{}\"", ci.timeout)
        } else if line.starts_with("on_timeout = ") {
            format!("on_timeout = \"{}\"", ci.on_timeout)
        } else if line.starts_with("source = ") {
            match ci.command {
                Some(sh) => format!("source = \"command\"\ncommand = [\"sh\", \"-c\", \"{sh}\"]"),
                None => line.to_string(),
            }
        } else {
            line.to_string()
        };
        out.push(replaced);
    }
    let config = out.join("\n") + "\n";
    for must in [
        format!("api = \"http://127.0.0.1:{github_port}\""),
        "interval = \"500ms\"".into(),
    ] {
        assert!(
            config.contains(&must),
            "the example's [environments.preprod.ci] changed shape: {must} not set"
        );
    }
    config
}

fn backups(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("backups"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn assert_no_file_contains(dir: &Path, needle: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == ".git" || n == "origin.git")
            {
                continue;
            }
            assert_no_file_contains(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret",
                path.display()
            );
        }
    }
}

// ---- a fake GitHub ----------------------------------------------------------------------------

/// What CI does for one commit, timed from when the test scripts it.
#[derive(Clone)]
struct Script {
    since: Instant,
    /// The run shows up (queued, then in progress) after this long.
    appears_after: Duration,
    /// It completes after this long; never when `None`.
    completes_after: Option<Duration>,
    conclusion: &'static str,
}

impl Script {
    fn passes_after(d: Duration) -> Script {
        Script {
            since: Instant::now(),
            appears_after: Duration::ZERO,
            completes_after: Some(d),
            conclusion: "success",
        }
    }
    fn fails_after(d: Duration) -> Script {
        Script {
            conclusion: "failure",
            ..Script::passes_after(d)
        }
    }
    fn never_finishes() -> Script {
        Script {
            completes_after: None,
            ..Script::passes_after(Duration::ZERO)
        }
    }
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
    api_version: Option<String>,
}

#[derive(Default)]
struct GithubState {
    requests: Vec<Request>,
    scripts: HashMap<String, Script>,
    /// Run id -> (commit, workflow name).
    runs: HashMap<u64, (String, &'static str)>,
}

/// GitHub's REST API for one repository, on a random port of 127.0.0.1, plus the host that
/// serves job logs (GitHub's API redirects there).
struct FakeGithub {
    port: u16,
    state: Arc<Mutex<GithubState>>,
    stop: Arc<AtomicBool>,
}

impl FakeGithub {
    fn start() -> FakeGithub {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the fake GitHub");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(GithubState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = state2.clone();
                std::thread::spawn(move || serve_github(stream, &state, port));
            }
        });
        FakeGithub { port, state, stop }
    }

    fn script(&self, sha: &str, script: Script) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(sha.to_string(), script);
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one HTTP/1.1 request: method, path, lowercase headers, body.
fn read_request(stream: &TcpStream) -> Option<(String, String, HashMap<String, String>, String)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    Some((
        method,
        path,
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

fn respond(
    mut stream: TcpStream,
    status: u16,
    extra_headers: &str,
    content_type: &str,
    body: &str,
) {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve_github(stream: TcpStream, state: &Mutex<GithubState>, port: u16) {
    let Some((method, path, headers, _)) = read_request(&stream) else {
        return;
    };
    let request = Request {
        method: method.clone(),
        path: path.clone(),
        authorization: headers.get("authorization").cloned(),
        accept: headers.get("accept").cloned(),
        api_version: headers.get("x-github-api-version").cloned(),
    };
    state.lock().unwrap().requests.push(request.clone());
    // The log download host: a pre-signed URL, no token wanted.
    if let Some(rest) = path.strip_prefix("/download/logs/") {
        let job: u64 = rest
            .split('.')
            .next()
            .and_then(|j| j.parse().ok())
            .unwrap_or(0);
        return respond(stream, 200, "", "text/plain", &job_log(job));
    }
    if request.authorization.as_deref() != Some(&*format!("Bearer {TOKEN}")) {
        let body = json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401" });
        return respond(
            stream,
            401,
            "",
            "application/json; charset=utf-8",
            &body.to_string(),
        );
    }
    let Some(route) = path.strip_prefix(&format!("/repos/{REPO}/")) else {
        return respond(
            stream,
            404,
            "",
            "application/json",
            r#"{"message":"Not Found"}"#,
        );
    };
    let (route, query) = route.split_once('?').unwrap_or((route, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(String::from)
    };
    let segments: Vec<&str> = route.split('/').collect();
    let mut st = state.lock().unwrap();
    let body = match segments.as_slice() {
        ["actions", "runs"] => {
            let sha = param("head_sha").unwrap_or_default();
            let runs: Vec<Value> = workflow_runs(&mut st, &sha);
            json!({ "total_count": runs.len(), "workflow_runs": runs })
        }
        ["commits", _sha, "check-runs"] => json!({ "total_count": 0, "check_runs": [] }),
        ["actions", "runs", id, "jobs"] => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some((sha, workflow)) = st.runs.get(&id).cloned() else {
                return respond(
                    stream,
                    404,
                    "",
                    "application/json",
                    r#"{"message":"Not Found"}"#,
                );
            };
            let conclusion = run_state(&st, &sha).and_then(|(_, c)| c);
            let jobs = jobs_of(id, &sha, workflow, conclusion);
            json!({ "total_count": jobs.len(), "jobs": jobs })
        }
        ["actions", "jobs", id, "logs"] => {
            let location = format!(
                "Location: http://127.0.0.1:{port}/download/logs/{id}.txt?sig=Zm9vYmFy&expires=3600\r\n"
            );
            drop(st);
            return respond(stream, 302, &location, "text/html", "");
        }
        _ => {
            drop(st);
            return respond(
                stream,
                404,
                "",
                "application/json",
                r#"{"message":"Not Found"}"#,
            );
        }
    };
    drop(st);
    respond(
        stream,
        200,
        "",
        "application/json; charset=utf-8",
        &body.to_string(),
    );
}

/// (status, conclusion) of the `CI` run of `sha` now, or `None` before it appears.
fn run_state(st: &GithubState, sha: &str) -> Option<(&'static str, Option<&'static str>)> {
    let script = st.scripts.get(sha)?;
    let age = script.since.elapsed();
    if age < script.appears_after {
        return None;
    }
    Some(match script.completes_after {
        Some(after) if age >= after => ("completed", Some(script.conclusion)),
        _ if age < script.appears_after + Duration::from_millis(300) => ("queued", None),
        _ => ("in_progress", None),
    })
}

/// The workflow runs for a head SHA: `CI` as scripted, and a `Docs` workflow that always
/// fails (the deploy.toml only counts `CI`).
fn workflow_runs(st: &mut GithubState, sha: &str) -> Vec<Value> {
    let Some((status, conclusion)) = run_state(st, sha) else {
        return Vec::new();
    };
    let base = 30_000_000 + (st.scripts.keys().position(|k| k == sha).unwrap_or(0) as u64) * 10;
    st.runs.insert(base + 1, (sha.to_string(), "CI"));
    st.runs.insert(base + 2, (sha.to_string(), "Docs"));
    vec![
        run_json(
            base + 1,
            "CI",
            ".github/workflows/ci.yml",
            sha,
            status,
            conclusion,
        ),
        run_json(
            base + 2,
            "Docs",
            ".github/workflows/docs.yml",
            sha,
            "completed",
            Some("failure"),
        ),
    ]
}

fn run_json(
    id: u64,
    name: &str,
    path: &str,
    sha: &str,
    status: &str,
    conclusion: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "name": name,
        "node_id": "WFR_kwLOAbCdEf8AAAAB",
        "head_branch": "main",
        "head_sha": sha,
        "path": path,
        "display_title": "Add quick recipes (ready in 30 minutes)",
        "run_number": id % 1000,
        "event": "push",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": if name == "CI" { 161335 } else { 161336 },
        "check_suite_id": id + 500,
        "check_suite_node_id": "CS_kwDOAbCdEf8AAAAB",
        "url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}"),
        "html_url": format!("https://github.com/{REPO}/actions/runs/{id}"),
        "pull_requests": [],
        "created_at": "2025-03-05T11:00:05Z",
        "updated_at": "2025-03-05T11:02:41Z",
        "actor": { "login": "example-author", "id": 1, "type": "User" },
        "run_attempt": 1,
        "run_started_at": "2025-03-05T11:00:05Z",
        "jobs_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}/jobs"),
        "logs_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}/logs"),
        "check_suite_url": format!("https://api.github.com/check-suites/{}", id + 500),
        "artifacts_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}/artifacts"),
        "cancel_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}/cancel"),
        "rerun_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{id}/rerun"),
        "workflow_url": format!("https://api.github.com/repos/{REPO}/actions/workflows/161335"),
        "head_commit": { "id": sha, "tree_id": "d23f6eedb1e1b9610bbc754ddb5197bfe7271223", "message": "Add quick recipes", "timestamp": "2025-03-05T11:00:00Z" },
        "repository": { "id": 1296269, "name": "kitchen-insights", "full_name": REPO, "private": false },
    })
}

/// A run's jobs: `lint` passes, `tests` ends as the run did (its `Run pytest` step failing).
fn jobs_of(run: u64, sha: &str, workflow: &str, conclusion: Option<&str>) -> Vec<Value> {
    let job = |id: u64, name: &str, conclusion: Option<&str>, failing_step: Option<&str>| {
        let status = if conclusion.is_some() {
            "completed"
        } else {
            "in_progress"
        };
        let steps: Vec<Value> = ["Set up job", "Run actions/checkout@v4", failing_step.unwrap_or("Run pytest")]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let c = if i == 2 { conclusion } else { Some("success") };
                json!({ "name": s, "status": if c.is_some() { "completed" } else { "in_progress" }, "conclusion": c, "number": i + 1,
                        "started_at": "2025-03-05T11:00:10Z", "completed_at": "2025-03-05T11:01:10Z" })
            })
            .collect();
        json!({
            "id": id, "run_id": run, "workflow_name": workflow, "head_branch": "main", "head_sha": sha,
            "run_url": format!("https://api.github.com/repos/{REPO}/actions/runs/{run}"),
            "node_id": "CR_kwDOAbCdEf8AAAAB", "url": format!("https://api.github.com/repos/{REPO}/actions/jobs/{id}"),
            "html_url": format!("https://github.com/{REPO}/actions/runs/{run}/job/{id}"),
            "status": status, "conclusion": conclusion, "created_at": "2025-03-05T11:00:06Z",
            "started_at": "2025-03-05T11:00:08Z", "completed_at": conclusion.map(|_| "2025-03-05T11:02:40Z"),
            "name": name, "steps": steps, "check_run_url": format!("https://api.github.com/repos/{REPO}/check-runs/{id}"),
            "labels": ["ubuntu-latest"], "runner_id": 1, "runner_name": "GitHub Actions 1", "run_attempt": 1,
        })
    };
    if workflow == "Docs" {
        return vec![job(
            run * 10 + 1,
            "build-docs",
            Some("failure"),
            Some("Build"),
        )];
    }
    vec![
        job(
            run * 10 + 1,
            "lint",
            conclusion.map(|_| "success"),
            Some("Run flake8"),
        ),
        job(run * 10 + 2, "tests", conclusion, Some("Run pytest")),
    ]
}

/// A job's log as GitHub serves it: one timestamp per line, `##[group]`/`##[error]` markers.
fn job_log(job: u64) -> String {
    [
        "2025-03-05T11:01:02.1000000Z ##[group]Run pytest tests/ -v",
        "2025-03-05T11:01:02.1000000Z pytest tests/ -v",
        "2025-03-05T11:01:02.2000000Z ##[endgroup]",
        "2025-03-05T11:01:04.0000000Z tests/test_analysis.py::test_average_rating PASSED",
        "2025-03-05T11:01:04.1000000Z tests/test_quick.py::test_quick_includes_thirty_minutes FAILED",
        "2025-03-05T11:01:04.2000000Z >       assert analysis.quick(RECIPES).to_dict() == {\"Spanish\": 2}",
        "2025-03-05T11:01:04.2000000Z E       AssertionError: assert {'Spanish': 1} == {'Spanish': 2}",
        &format!("2025-03-05T11:01:04.3000000Z =========== 1 failed, 3 passed in 0.41s =========== (job {job})"),
        "2025-03-05T11:01:04.5000000Z ##[error]Process completed with exit code 1.",
        "2025-03-05T11:01:05.0000000Z Post job cleanup.",
    ]
    .join("\n")
}

// ---- a Discord webhook receiver ---------------------------------------------------------------

/// Takes `POST /api/webhooks/ID/TOKEN` with Discord's JSON body and keeps each `content`.
struct Receiver {
    port: u16,
    contents: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the webhook receiver");
        let port = listener.local_addr().unwrap().port();
        let contents = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (contents2, stop2) = (contents.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Some((method, path, headers, body)) = read_request(&stream) else {
                    continue;
                };
                let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let ok = method == "POST"
                    && path.starts_with("/api/webhooks/")
                    && headers
                        .get("content-type")
                        .is_some_and(|c| c.starts_with("application/json"));
                match json["content"].as_str() {
                    Some(content) if ok => {
                        contents2.lock().unwrap().push(content.to_string());
                        respond(stream, 204, "", "text/plain", "");
                    }
                    _ => respond(
                        stream,
                        400,
                        "",
                        "application/json",
                        r#"{"message": "Cannot send an empty message", "code": 50006}"#,
                    ),
                }
            }
        });
        Receiver {
            port,
            contents,
            stop,
        }
    }

    fn count(&self) -> usize {
        self.contents.lock().unwrap().len()
    }

    /// The messages received, once `done` holds (webhooks are posted asynchronously).
    fn wait_for(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.contents.lock().unwrap().clone();
            if done(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
