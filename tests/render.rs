//! End to end on the render-alembic plugin's Render mode: the real `host` binary, the real
//! `render-alembic` component, real git, real Alembic and a throwaway real PostgreSQL per test,
//! with Render itself replaced by [`FakeRender`], a small HTTP/1.1 server on 127.0.0.1 speaking
//! the part of Render's public REST API v1 the plugin uses, in Render's wire shapes.
//!
//! The fake behaves like a Render web service built from the app's repository: a deploy of a
//! commit goes `created -> build_in_progress -> update_in_progress -> live`, one step each time
//! the deploy is read; on the way into `update_in_progress` it runs the service's pre-deploy
//! command (`alembic upgrade head` on that commit's files, against the test's database), as
//! Render does. The app's `GET /health` is served by the fake too and answers 200 only while a
//! good commit is live, which is how Render switching traffic looks from the outside.
//!
//! Each deploy first checks the revision out in the app checkout, as a CI job deploying a
//! commit does: render mode never checks code out itself, but it runs `alembic current` and
//! `alembic downgrade` from the checkout, so the checkout must hold the migrations involved.

mod common;

use common::{AlembicApp, Run};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const SERVICE: &str = "srv-test";
const KEY: &str = "rnd_Zq8xT4mWcH2vLp9sKe7B";

macro_rules! render_app {
    () => {
        match RenderApp::start() {
            Some(app) => app,
            None => return,
        }
    };
}

#[test]
fn a_render_deploy_triggers_the_commit_follows_it_to_live_and_validates() {
    let t = render_app!();
    let run = t.deploy("v2");
    assert_eq!(run.code, 0, "{}", run.text());
    let v2 = t.app.sha("v2");

    // Exactly one deploy was asked for: that commit, with the key as a bearer token.
    let posts = t
        .render
        .requests_to("POST", "/v1/services/srv-test/deploys");
    assert_eq!(posts.len(), 1, "{:#?}", t.render.requests());
    assert_eq!(
        posts[0].json(),
        json!({ "clearCache": "do_not_clear", "commitId": v2 })
    );
    let api = t.render.api_requests();
    assert!(
        api.iter()
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {KEY}"))),
        "{api:#?}"
    );

    // The host polled the deploy until Render said live, and not once more.
    let deploy = t.render.deploy_of(&v2).expect("a deploy of v2");
    assert_eq!(deploy.status, "live");
    let polls = t.render.requests_to(
        "GET",
        &format!("/v1/services/srv-test/deploys/{}", deploy.id),
    );
    assert_eq!(
        polls.len(),
        3,
        "created -> build_in_progress -> update_in_progress -> live"
    );
    let waited: Vec<String> = run
        .events_of("waiting")
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        waited,
        vec![
            format!("Render deploy {}: build_in_progress", deploy.id),
            format!("Render deploy {}: update_in_progress", deploy.id)
        ]
    );
    // Render's pre-deploy command migrated the database, and the plugin's verify saw it.
    assert_eq!(t.app.alembic_version(), "0002");
    assert!(
        run.events_of("probe_attempt")
            .iter()
            .any(|p| p["ok"] == true),
        "{}",
        run.text()
    );

    let status = t.app.status("staging");
    assert_eq!(status["environment"]["current_revision"], v2);
    assert_eq!(status["environment"]["last_validated_revision"], v2);
    assert!(status["lock"].is_null(), "{status}");

    // The key was sent to Render and nowhere else: not printed, not recorded.
    let history = serde_json::to_string(&t.app.history("staging")).unwrap();
    assert!(
        !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
        "the API key leaked:\n{}",
        run.text()
    );
    assert!(
        !history.contains(KEY),
        "the API key is in the history: {history}"
    );
    assert_no_file_contains(&t.app.root.join(".host"), KEY);
}

#[test]
fn b_a_failed_render_build_rolls_back_to_the_previous_live_deploy() {
    let t = render_app!();
    let first = t.deploy("v2");
    assert_eq!(first.code, 0, "{}", first.text());
    let (v2, v3) = (t.app.sha("v2"), t.app.sha("v3"));
    let v2_deploy = t.render.deploy_of(&v2).expect("a deploy of v2");
    t.render.fail(&v3, "build_failed");

    let run = t.deploy("v3");
    assert_eq!(
        run.code,
        10,
        "exit 10 = failed and rolled back:\n{}",
        run.text()
    );
    let failed: Vec<Value> = run
        .events_of("phase_finished")
        .into_iter()
        .filter(|p| p["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.text());
    assert_eq!(failed[0]["phase"], "deploy");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("build_failed"),
        "{}",
        failed[0]
    );
    let rollback = &run.events_of("rollback_started")[0];
    assert_eq!(rollback["to_revision"], v2);

    // Render was asked to roll back to the deploy of v2 that went live, with the key.
    let rollbacks = t
        .render
        .requests_to("POST", "/v1/services/srv-test/rollbacks");
    assert_eq!(rollbacks.len(), 1, "{:#?}", t.render.requests());
    assert_eq!(rollbacks[0].json(), json!({ "deployId": v2_deploy.id }));
    assert_eq!(
        rollbacks[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    let live = t.render.live().expect("something is live");
    assert_eq!(
        (live.commit.as_str(), live.trigger),
        (v2.as_str(), "rollback")
    );
    assert_eq!(
        t.render.deploys().iter().filter(|d| d.commit == v2).count(),
        2,
        "v2's deploy and the rollback to it"
    );

    let status = t.app.status("staging");
    assert_eq!(status["environment"]["current_revision"], v2);
    assert_eq!(status["environment"]["last_validated_revision"], v2);
    assert!(status["lock"].is_null(), "{status}");
    assert_eq!(t.app.history("staging")[0]["status"], "rolled_back");
    assert_eq!(
        t.app.alembic_version(),
        "0002",
        "the failed build never migrated"
    );
}

#[test]
fn c_a_missing_or_rejected_api_key_fails_before_anything_changes() {
    let t = render_app!();
    let db_before = t.app.pg.data_checksum().unwrap();

    // Not set at all: the plugin says which variable, and Render is not called.
    let run = t.deploy_with_key("v2", None);
    assert_eq!(
        run.code,
        3,
        "exit 3 = failed before any change:\n{}",
        run.text()
    );
    assert!(
        run.stdout
            .contains("the Render API key is missing: $RENDER_API_KEY is not set"),
        "{}",
        run.text()
    );
    assert!(
        t.render.api_requests().is_empty(),
        "{:#?}",
        t.render.requests()
    );

    // Set but wrong: Render's 401 and its message come through, with what to check.
    let wrong = "rnd_revoked0000000000000";
    let run = t.deploy_with_key("v2", Some(wrong));
    assert_eq!(run.code, 3, "{}", run.text());
    let detail = run.events_of("run_finished")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("Render API answered 401: unauthorized"),
        "{detail}"
    );
    assert!(detail.contains("render_api_key_env"), "{detail}");
    assert!(
        !run.stdout.contains(wrong) && !run.stderr.contains(wrong),
        "the key leaked:\n{}",
        run.text()
    );
    let api = t.render.api_requests();
    assert_eq!(api.len(), 1, "only the access check: {api:#?}");
    assert_eq!(
        (api[0].method.as_str(), api[0].path.as_str()),
        ("GET", "/v1/services/srv-test")
    );
    assert_eq!(
        api[0].authorization.as_deref(),
        Some(&*format!("Bearer {wrong}"))
    );

    assert!(t.render.deploys().is_empty());
    assert_eq!(
        t.app.pg.data_checksum().unwrap(),
        db_before,
        "the database is as it was"
    );
    let status = t.app.status("staging");
    assert!(
        status["environment"]["current_revision"].is_null(),
        "{status}"
    );
    assert!(status["lock"].is_null(), "{status}");
}

#[test]
fn d_a_deploy_failing_after_its_migrations_downgrades_then_rolls_back_on_render() {
    let t = render_app!();
    assert_eq!(t.deploy("v2").code, 0);
    let (v2, v3) = (t.app.sha("v2"), t.app.sha("v3"));
    t.render.fail(&v3, "update_failed");

    let run = t.deploy("v3");
    assert_eq!(run.code, 10, "{}", run.text());
    // Render's pre-deploy command had migrated to 0003 before the new code failed to start.
    assert!(
        t.render
            .deploy_of(&v3)
            .is_some_and(|d| d.migrated && d.status == "update_failed")
    );
    let rollback = &run.events_of("rollback_started")[0];
    assert_eq!(
        (
            rollback["method"].as_str(),
            rollback["to_revision"].as_str()
        ),
        (Some("downgrade"), Some(v2.as_str()))
    );
    let downgrade = run
        .events_of("command_started")
        .into_iter()
        .find(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "downgrade")
        })
        .expect("an alembic downgrade ran");
    assert_eq!(downgrade["argv"], json!(["alembic", "downgrade", "0002"]));

    assert_eq!(t.app.alembic_version(), "0002");
    assert_eq!(
        t.app.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'pinned'"),
        "0"
    );
    assert_eq!(t.render.live().map(|d| d.commit), Some(v2.clone()));
    assert_eq!(
        t.app.status("staging")["environment"]["current_revision"],
        v2
    );
}

#[test]
fn e_a_checkout_without_the_targets_migrations_is_refused_before_render_deploys() {
    let t = render_app!();
    // The checkout stays at v1 (no 0002): Alembic could not read the schema Render migrates to.
    let run = t.deploy_from_checkout_at("v1", "v2", Some(KEY));
    assert_eq!(run.code, 3, "{}", run.text());
    let detail = run.events_of("run_finished")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("this checkout has no migration 0002"),
        "{detail}"
    );
    assert!(detail.contains("check out"), "{detail}");
    assert!(t.render.deploys().is_empty(), "{:#?}", t.render.requests());
    assert!(t.app.status("staging")["lock"].is_null());
}

/// An app checkout configured for render mode against its own [`FakeRender`].
struct RenderApp {
    app: AlembicApp,
    render: FakeRender,
}

impl RenderApp {
    fn start() -> Option<RenderApp> {
        let app = AlembicApp::start()?;
        let render = FakeRender::start(PreDeploy {
            repo: app.root.clone(),
            path: app.python.path_var(),
            database_url: app.pg.url.clone(),
        });
        std::fs::write(app.root.join("deploy.toml"), deploy_toml(render.port)).unwrap();
        Some(RenderApp { app, render })
    }

    fn deploy(&self, rev: &str) -> Run {
        self.deploy_with_key(rev, Some(KEY))
    }

    /// Check `rev` out (the tracked deploy.toml is the same in every tag, so the render-mode
    /// edit carries over) and deploy it.
    fn deploy_with_key(&self, rev: &str, key: Option<&str>) -> Run {
        self.deploy_from_checkout_at(rev, rev, key)
    }

    fn deploy_from_checkout_at(&self, checkout: &str, rev: &str, key: Option<&str>) -> Run {
        self.app.git(&["checkout", "--quiet", "--detach", checkout]);
        let mut cmd = self.app.host_cmd(&[
            "deploy", "--env", "staging", "--rev", rev, "--output", "json",
        ]);
        match key {
            Some(key) => cmd.env("RENDER_API_KEY", key),
            None => cmd.env_remove("RENDER_API_KEY"),
        };
        let out = cmd.output().expect("run host");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn deploy_toml(port: u16) -> String {
    format!(
        r#"[project]
name = "alembic-app"

[plugin]
name = "render-alembic"

[plugin.settings]
mode = "render"
render_api = "http://127.0.0.1:{port}/v1"
render_service_id = "{SERVICE}"
render_api_key_env = "RENDER_API_KEY"
database_env = "DATABASE_URL"
backup_dir = "backups"

[grants]
programs = ["git", "alembic", "pg_dump", "pg_restore", "psql", "mkdir"]
env = ["DATABASE_URL", "RENDER_API_KEY"]
http = ["127.0.0.1:{port}"]

[databases.main]
url_env = "DATABASE_URL"

# Render hosts the app: its health check goes to the service, here the fake.
[health]
base_url = "http://127.0.0.1:{port}"

[[health.probes]]
name = "health"
path = "/health"
expect_status = 200
body_contains = '"status": "ok"'
attempts = 3
interval = "200ms"
timeout = "2s"

[timeouts]
preflight = "1m"
backup = "1m"
deploy = "2m"
verify = "1m"
rollback = "2m"
call = "40s"
"#
    )
}

fn assert_no_file_contains(dir: &Path, needle: &str) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_no_file_contains(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds the API key",
                path.display()
            );
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// Path and query, as sent.
    path: String,
    body: String,
    authorization: Option<String>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method, self.path, self.body
            )
        })
    }
}

/// A deploy as the fake keeps it.
#[derive(Debug, Clone)]
struct Deploy {
    id: String,
    commit: String,
    status: &'static str,
    /// "api" or "rollback".
    trigger: &'static str,
    /// Statuses still to come, one per read of the deploy.
    next: Vec<&'static str>,
    /// The pre-deploy command ran (and succeeded) for this deploy.
    migrated: bool,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

/// What Render's pre-deploy command needs here: the repository it builds from, Alembic on PATH
/// and the database.
struct PreDeploy {
    repo: PathBuf,
    path: OsString,
    database_url: String,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Oldest first.
    deploys: Vec<Deploy>,
    /// Commit -> the failure status its deploy ends in.
    failing: HashMap<String, &'static str>,
    clock: u32,
}

/// Render's REST API v1 (`/v1/services/srv-test/...`, bearer auth) and the service's
/// `/health`, on a random port of 127.0.0.1, recording every request.
struct FakeRender {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeRender {
    fn start(predeploy: PreDeploy) -> FakeRender {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the fake Render");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2, predeploy) = (state.clone(), stop.clone(), Arc::new(predeploy));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (state, predeploy) = (state2.clone(), predeploy.clone());
                std::thread::spawn(move || serve(stream, &state, &predeploy));
            }
        });
        FakeRender { port, state, stop }
    }

    /// The deploy of `commit` ends in `status` (`build_failed`, `update_failed`).
    fn fail(&self, commit: &str, status: &'static str) {
        self.state
            .lock()
            .unwrap()
            .failing
            .insert(commit.to_string(), status);
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn api_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v1/"))
            .collect()
    }

    fn requests_to(&self, method: &str, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    fn deploys(&self) -> Vec<Deploy> {
        self.state.lock().unwrap().deploys.clone()
    }

    /// The first deploy of `commit` the API triggered (not a rollback to it).
    fn deploy_of(&self, commit: &str) -> Option<Deploy> {
        self.deploys()
            .into_iter()
            .find(|d| d.commit == commit && d.trigger == "api")
    }

    fn live(&self) -> Option<Deploy> {
        self.deploys().into_iter().find(|d| d.status == "live")
    }
}

impl Drop for FakeRender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request per connection, answered with `Connection: close`.
fn serve(stream: TcpStream, state: &Mutex<State>, predeploy: &PreDeploy) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
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
    let request = Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
        authorization: headers.get("authorization").cloned(),
    };
    let (status, body) = match health(&request, state) {
        Some(answer) => answer,
        None => {
            let (status, answer) = api(&request, state, predeploy);
            (status, answer.to_string())
        }
    };
    state.lock().unwrap().requests.push(request);
    let reason = match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The app Render serves, outside the API: healthy while a good commit is live.
fn health(r: &Request, state: &Mutex<State>) -> Option<(u16, String)> {
    if (r.method.as_str(), r.path.as_str()) != ("GET", "/health") {
        return None;
    }
    let st = state.lock().unwrap();
    Some(match st.deploys.iter().find(|d| d.status == "live") {
        Some(d) if !st.failing.contains_key(&d.commit) => (
            200,
            format!(r#"{{"status": "ok", "commit": "{}"}}"#, d.commit),
        ),
        _ => (503, r#"{"status": "unavailable"}"#.to_string()),
    })
}

/// Render's API: bearer auth, then the routes the plugin uses.
fn api(r: &Request, state: &Mutex<State>, predeploy: &PreDeploy) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    if r.authorization.as_deref() != Some(&*format!("Bearer {KEY}")) {
        return (
            401,
            json!({ "id": "unauthorized", "message": "unauthorized" }),
        );
    }
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found = |what: &str| {
        (
            404,
            json!({ "id": "not-found", "message": format!("{what} not found") }),
        )
    };
    let ["v1", "services", service, rest @ ..] = segments.as_slice() else {
        return not_found("route");
    };
    if *service != SERVICE {
        return not_found("service");
    }
    match (r.method.as_str(), rest) {
        ("GET", []) => (200, service_object()),
        ("POST", ["deploys"]) => {
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            let Some(commit) = body["commitId"].as_str() else {
                return (
                    400,
                    json!({ "id": "bad-request", "message": "commitId is required" }),
                );
            };
            let next = match st.failing.get(commit) {
                Some(&"build_failed") => vec!["build_in_progress", "build_failed"],
                Some(&failure) => vec!["build_in_progress", "update_in_progress", failure],
                None => vec!["build_in_progress", "update_in_progress", "live"],
            };
            let deploy = st.new_deploy(commit, "api", next);
            (201, deploy_object(&deploy, &predeploy.repo))
        }
        ("GET", ["deploys"]) => {
            let limit = query
                .strip_prefix("limit=")
                .and_then(|l| l.parse().ok())
                .unwrap_or(20);
            let list: Vec<Value> = st
                .deploys
                .iter()
                .rev()
                .take(limit)
                .map(|d| json!({ "deploy": deploy_object(d, &predeploy.repo), "cursor": format!("cursor-{}", d.id) }))
                .collect();
            (200, Value::Array(list))
        }
        ("GET", ["deploys", id]) => {
            let Some(i) = st.deploys.iter().position(|d| d.id == *id) else {
                return not_found("deploy");
            };
            st.advance(i, predeploy);
            (200, deploy_object(&st.deploys[i], &predeploy.repo))
        }
        ("POST", ["rollbacks"]) => {
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            let target = st
                .deploys
                .iter()
                .find(|d| Some(d.id.as_str()) == body["deployId"].as_str());
            let Some(target) = target.filter(|d| matches!(d.status, "live" | "deactivated")) else {
                return (
                    400,
                    json!({ "id": "bad-request", "message": "deployId must name a deploy that went live" }),
                );
            };
            // A rollback reuses the earlier build: no build, no pre-deploy command.
            let commit = target.commit.clone();
            let deploy = st.new_deploy(&commit, "rollback", vec!["update_in_progress", "live"]);
            (201, deploy_object(&deploy, &predeploy.repo))
        }
        _ => not_found("route"),
    }
}

impl State {
    fn now(&mut self) -> String {
        self.clock += 1;
        format!(
            "2026-02-22T10:{:02}:{:02}.000000Z",
            self.clock / 60 % 60,
            self.clock % 60
        )
    }

    fn new_deploy(
        &mut self,
        commit: &str,
        trigger: &'static str,
        next: Vec<&'static str>,
    ) -> Deploy {
        let now = self.now();
        let deploy = Deploy {
            id: format!("dep-d3fake{:014}", self.deploys.len() + 1),
            commit: commit.to_string(),
            status: "created",
            trigger,
            next,
            migrated: false,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
        };
        self.deploys.push(deploy.clone());
        deploy
    }

    /// One step on: into `update_in_progress` a triggered deploy runs the pre-deploy command;
    /// going live deactivates the deploy that was live.
    fn advance(&mut self, i: usize, predeploy: &PreDeploy) {
        if self.deploys[i].next.is_empty() {
            return;
        }
        let mut status = self.deploys[i].next.remove(0);
        if status == "update_in_progress" && self.deploys[i].trigger == "api" {
            if predeploy.run(&self.deploys[i].commit) {
                self.deploys[i].migrated = true;
            } else {
                status = "pre_deploy_failed";
                self.deploys[i].next.clear();
            }
        }
        if status == "live" {
            for d in self.deploys.iter_mut().filter(|d| d.status == "live") {
                d.status = "deactivated";
            }
        }
        let now = self.now();
        let d = &mut self.deploys[i];
        d.status = status;
        d.updated_at = now.clone();
        if d.next.is_empty() {
            d.finished_at = Some(now);
        }
    }
}

impl PreDeploy {
    /// `alembic upgrade head` on the commit's files, like a Render pre-deploy command.
    fn run(&self, commit: &str) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Command::new("git")
            .args(["archive", "--format=tar", commit])
            .current_dir(&self.repo)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let untar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(dir.path())
            .stdin(archive.stdout.take().unwrap())
            .status()
            .unwrap();
        if !archive.wait().unwrap().success() || !untar.success() {
            return false;
        }
        let out = Command::new("alembic")
            .args(["upgrade", "head"])
            .current_dir(dir.path())
            .env("PATH", &self.path)
            .env("DATABASE_URL", &self.database_url)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "fake Render: pre-deploy of {commit} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }
}

fn service_object() -> Value {
    json!({
        "id": SERVICE,
        "name": "alembic-app",
        "type": "web_service",
        "ownerId": "tea-test",
        "repo": "https://github.com/example/alembic-app",
        "branch": "main",
        "autoDeploy": "no",
        "suspended": "not_suspended",
        "createdAt": "2026-01-01T00:00:00.000000Z",
        "updatedAt": "2026-01-01T00:00:00.000000Z",
        "serviceDetails": { "env": "python", "plan": "starter", "region": "frankfurt" }
    })
}

fn deploy_object(d: &Deploy, repo: &Path) -> Value {
    let message = Command::new("git")
        .args(["log", "-1", "--format=%s", &d.commit])
        .current_dir(repo)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "id": d.id,
        "commit": { "id": d.commit, "message": message, "createdAt": "2025-01-13T10:30:00Z" },
        "status": d.status,
        "trigger": d.trigger,
        "createdAt": d.created_at,
        "updatedAt": d.updated_at,
        "finishedAt": d.finished_at,
    })
}
