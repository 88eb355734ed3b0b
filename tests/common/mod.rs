//! What the end-to-end suites share: running the real `host` binary against a real app
//! checkout, a real PostgreSQL and the real plugin components built by `cargo xtask build-plugins`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `host` binary cargo built for this test run.
pub fn host_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host"))
}

/// The directory `cargo xtask build-plugins` writes to; fails loudly when a plugin is missing,
/// because a stale or absent component would make every result meaningless.
pub fn plugin_dir(required: &[&str]) -> PathBuf {
    let dir = testkit::target_dir().join("plugins");
    for name in required {
        let path = dir.join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: run `cargo xtask build-plugins` first (`cargo xtask test` does)",
            path.display()
        );
    }
    dir
}

/// The result of one `host` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `--output json` event stream, one object per line.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events().into_iter().filter(|e| e["type"] == kind).collect()
    }

    /// Everything it printed, for assertion messages.
    pub fn text(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A fresh checkout of `examples/alembic-app` (tags v1..v4), its own PostgreSQL, its own port.
pub struct AlembicApp {
    pub pg: testkit::Postgres,
    pub python: testkit::PythonEnv,
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub port: u16,
    plugins: PathBuf,
}

impl AlembicApp {
    /// `None` when PostgreSQL or Python is missing on a developer machine (a clear skip);
    /// under `CI=true` a missing service fails the test instead.
    pub fn start() -> Option<AlembicApp> {
        if !testkit::require("PostgreSQL server binaries", testkit::Postgres::available())
            || !testkit::require("python3 with venv", testkit::PythonEnv::available())
        {
            return None;
        }
        let plugins = plugin_dir(&["render-alembic"]);
        let requirements = testkit::workspace_root().join("examples/alembic-app/base/requirements.txt");
        let python = testkit::PythonEnv::ensure(&requirements).expect("python venv");
        let pg = testkit::Postgres::start().expect("start PostgreSQL");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("alembic-app");
        testkit::make_alembic_repo(&root).expect("make the app repo");
        Some(AlembicApp { pg, python, _dir: dir, root: root.canonicalize().unwrap(), port: testkit::free_port(), plugins })
    }

    /// Run `host` in the app checkout with the environment a deploy machine would have.
    pub fn host(&self, args: &[&str]) -> Run {
        self.host_cmd(args).output().map(Run::from).expect("run host")
    }

    pub fn host_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(host_bin());
        cmd.args(args)
            .current_dir(&self.root)
            .env("PATH", self.python.path_var())
            .env("DATABASE_URL", &self.pg.url)
            .env("PORT", self.port.to_string())
            .env("HOST_PLUGIN_DIR", &self.plugins)
            .env("HOST_CACHE_DIR", testkit::target_dir().join("testkit/component-cache"))
            .env_remove("HOST_STATE_URL")
            .env_remove("CI");
        cmd
    }

    pub fn deploy(&self, env: &str, rev: &str, extra: &[&str]) -> Run {
        let mut args = vec!["deploy", "--env", env, "--rev", rev, "--output", "json"];
        args.extend_from_slice(extra);
        self.host(&args)
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.root, args)
    }

    pub fn sha(&self, rev: &str) -> String {
        self.git(&["rev-parse", &format!("{rev}^{{commit}}")])
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(sql).expect("psql")
    }

    pub fn alembic_version(&self) -> String {
        self.sql("SELECT string_agg(version_num, ',') FROM alembic_version")
    }

    /// `GET path` on the app; (status, body), status 0 when nothing answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    /// `host status --output json`.
    pub fn status(&self, env: &str) -> serde_json::Value {
        let run = self.host(&["status", "--env", env, "--output", "json"]);
        assert_eq!(run.code, 0, "{}", run.text());
        serde_json::from_str(&run.stdout).expect("status JSON")
    }

    pub fn history(&self, env: &str) -> Vec<serde_json::Value> {
        let run = self.host(&["history", "--env", env, "--output", "json", "--limit", "100"]);
        assert_eq!(run.code, 0, "{}", run.text());
        serde_json::from_str(&run.stdout).expect("history JSON")
    }

    /// Files of the checkout (tracked or not, ignoring .git), with their content digests.
    pub fn tree_digest(&self) -> String {
        let mut entries = Vec::new();
        walk(&self.root, &self.root, &mut entries);
        entries.sort();
        sha256_hex(entries.join("\n").as_bytes())
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        // The running app writes its log; the state store has its own assertions.
        if rel == ".git" || rel.starts_with(".run") || rel.starts_with(".host") || rel.contains("__pycache__") {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.push(format!("{rel} {}", sha256_hex(&bytes)));
        }
    }
}

impl Drop for AlembicApp {
    /// Stop the app the deploys started (its pid is in .run/app.pid).
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.root.join(".run/app.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// Run git in `dir`; its trimmed stdout. A failure fails the test with git's message.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A minimal HTTP/1.0 GET, so the suites need no HTTP client crate.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
