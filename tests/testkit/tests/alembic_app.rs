//! The example app (`examples/alembic-app`) against a real PostgreSQL, moved through its
//! revisions by hand the way a deploy moves it: this pins down the behaviour the end-to-end
//! deploy suites rely on (v3 fails its health check, v4 fails mid-upgrade with `0003b` left
//! applied, every migration reverses to an identical database).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{Postgres, PythonEnv, find_program, free_port, make_alembic_repo, require};

/// The checked-out example app, with the environment a deploy would give its commands.
struct App<'a> {
    repo: PathBuf,
    venv: &'a PythonEnv,
    pg: &'a Postgres,
    port: u16,
}

impl App<'_> {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .current_dir(&self.repo)
            .env("PATH", self.venv.path_var())
            .env("DATABASE_URL", &self.pg.url)
            .env("PORT", self.port.to_string())
            .output()
            .expect("spawning a command in the example app")
    }

    fn checkout(&self, tag: &str) {
        let out = self.command("git", &["checkout", "--quiet", tag]);
        assert!(out.status.success(), "git checkout {tag}: {}", stderr(&out));
    }

    fn alembic(&self, args: &[&str]) -> Output {
        self.command(self.venv.bin().join("alembic"), args)
    }

    fn migrate(&self, args: &[&str]) {
        let out = self.alembic(args);
        assert!(out.status.success(), "alembic {args:?}: {}", stderr(&out));
    }

    fn restart(&self) {
        let out = self.command(self.venv.python(), &["bin/restart"]);
        assert!(out.status.success(), "bin/restart: {}", stderr(&out));
    }

    fn db_revision(&self) -> String {
        self.pg
            .psql("select string_agg(version_num, ',') from alembic_version")
            .unwrap()
    }

    /// `GET path` over plain HTTP/1.0: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("the app listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for App<'_> {
    // The app runs detached on purpose; a failing assertion must not leave it running.
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.repo.join(".run/app.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).output();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn revisions_behave_as_the_deploy_suites_expect() {
    if !require("git", find_program("git", &[]).is_some())
        || !require("python3 with venv", PythonEnv::available())
        || !require("PostgreSQL", Postgres::available())
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("alembic-app");
    make_alembic_repo(&repo).unwrap();
    let venv = PythonEnv::ensure(&repo.join("requirements.txt")).unwrap();
    let pg = Postgres::start().unwrap();
    let app = App {
        repo,
        venv: &venv,
        pg: &pg,
        port: free_port(),
    };

    // v1: migrates, serves, reports its revision.
    app.migrate(&["upgrade", "head"]);
    app.restart();
    let (status, body) = app.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""revision": "0001""#), "{body}");
    pg.psql("insert into users (email, name) values ('ann@example.com', 'Ann')")
        .unwrap();
    let at_v1 = pg.data_checksum().unwrap();

    // v2: forward and back again leaves the database as it was.
    app.checkout("v2");
    app.migrate(&["upgrade", "head"]);
    assert_eq!(app.db_revision(), "0002");
    app.migrate(&["downgrade", "0001"]);
    assert_eq!(pg.data_checksum().unwrap(), at_v1, "0002 reverses exactly");
    app.migrate(&["upgrade", "head"]);
    app.restart();
    assert_eq!(app.get("/health").0, 200);
    assert_eq!(app.get("/notes").0, 200);
    let at_v2 = pg.data_checksum().unwrap();

    // v3: the migration works, the release does not.
    app.checkout("v3");
    app.migrate(&["upgrade", "head"]);
    app.restart();
    let (status, body) = app.get("/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("MAX_PINNED_NOTES"), "{body}");
    app.migrate(&["downgrade", "0002"]);
    assert_eq!(pg.data_checksum().unwrap(), at_v2, "0003 reverses exactly");
    app.checkout("v2");
    app.restart();
    assert_eq!(app.get("/health").0, 200);

    // v4: 0003b commits, 0004 fails and leaves nothing of its own behind.
    app.checkout("v4");
    let out = app.alembic(&["upgrade", "head"]);
    assert!(!out.status.success(), "0004 must fail");
    assert!(stderr(&out).contains("user_events"), "{}", stderr(&out));
    assert_eq!(app.db_revision(), "0003b");
    assert_eq!(
        pg.psql("select to_regclass('public.tags') is not null")
            .unwrap(),
        "t"
    );
    assert_eq!(
        pg.psql("select to_regclass('public.audit') is null")
            .unwrap(),
        "t"
    );
    app.migrate(&["downgrade", "0002"]);
    assert_eq!(pg.data_checksum().unwrap(), at_v2, "0003b reverses exactly");
    app.checkout("v2");
    app.restart();
    let (status, body) = app.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""revision": "0002""#), "{body}");
}

#[test]
fn restart_fails_clearly_when_the_app_cannot_start() {
    if !require("git", find_program("git", &[]).is_some())
        || !require("python3 with venv", PythonEnv::available())
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("alembic-app");
    make_alembic_repo(&repo).unwrap();
    let venv = PythonEnv::ensure(&repo.join("requirements.txt")).unwrap();
    let out = Command::new(venv.python())
        .arg(Path::new("bin/restart"))
        .current_dir(&repo)
        .env_remove("DATABASE_URL")
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("DATABASE_URL is not set"),
        "{}",
        stderr(&out)
    );
    assert!(!repo.join(".run/app.pid").exists());
}
