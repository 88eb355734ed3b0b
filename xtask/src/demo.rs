//! `cargo xtask demo`: the main job, on the example app, start to finish.
//!
//! Builds the host and the plugins, starts a throwaway PostgreSQL and the app's Python venv,
//! makes a fresh checkout of `examples/alembic-app` (tags v1..v4) under `target/demo/`, then
//! runs the real `host` on it: a first deploy of v1, a deploy of v2 that succeeds, and a deploy
//! of v3 whose health check fails, which the host rolls back. The host's own output is shown
//! as it happens. PostgreSQL and the app are stopped at the end.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(root: &Path) -> Result<()> {
    banner("building the host");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "host"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build -p host failed");
    }
    banner("building the plugins");
    crate::plugins::build_plugins(&crate::plugins::Options::all(root))?;

    banner("starting a throwaway PostgreSQL and the app's Python venv");
    let pg = testkit::Postgres::start()
        .context("starting PostgreSQL (install it with .ci/install-deps)")?;
    let requirements = root.join("examples/alembic-app/base/requirements.txt");
    let python = testkit::PythonEnv::ensure(&requirements).context("creating the venv")?;
    let demo = root.join("target/demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("clearing {}", demo.display()))?;
    }
    std::fs::create_dir_all(&demo)?;
    let app = demo.join("alembic-app");
    testkit::make_alembic_repo(&app)?;
    let port = testkit::free_port();
    println!(
        "app checkout: {}\ndatabase:     {}\napp port:     {port}",
        app.display(),
        pg.url
    );

    let demo = Demo {
        root: root.to_path_buf(),
        app: app.clone(),
        python,
        url: pg.url.clone(),
        port,
    };
    let result = demo.scenario(&pg);
    demo.stop_app();
    result
}

struct Demo {
    root: PathBuf,
    app: PathBuf,
    python: testkit::PythonEnv,
    url: String,
    port: u16,
}

impl Demo {
    fn scenario(&self, pg: &testkit::Postgres) -> Result<()> {
        banner("1/3  host deploy --env staging --rev v1      (first deploy: creates the schema)");
        self.expect(&["deploy", "--env", "staging", "--rev", "v1"], 0)?;

        banner(
            "2/3  host deploy --env staging --rev v2      (new table + column, reversible: succeeds)",
        );
        self.expect(&["deploy", "--env", "staging", "--rev", "v2"], 0)?;
        pg.psql(
            "INSERT INTO users (email, name, display_name) VALUES ('ada@example.org', 'Ada', 'ada');
             INSERT INTO notes (user_id, body) SELECT id, 'written on v2' FROM users",
        )?;
        println!("(wrote a user and a note through v2's schema)");

        banner(
            "3/3  host deploy --env staging --rev v3      (its /health answers 503: rolled back)",
        );
        self.expect(&["deploy", "--env", "staging", "--rev", "v3"], 10)?;

        banner("host history --env staging");
        self.expect(&["history", "--env", "staging"], 0)?;
        banner("host status --env staging");
        self.expect(&["status", "--env", "staging"], 0)?;
        let notes = pg.psql("SELECT count(*) FROM notes")?;
        let schema = pg.psql("SELECT version_num FROM alembic_version")?;
        println!(
            "\nafter the rollback: schema at {schema}, {notes} note(s) kept; the checkout stays in {}",
            self.app.display()
        );
        Ok(())
    }

    /// Run `host` in the checkout, showing its output, and check its exit code.
    fn expect(&self, args: &[&str], code: i32) -> Result<()> {
        let status = Command::new(self.root.join("target/debug/host"))
            .args(args)
            .current_dir(&self.app)
            .env("PATH", self.python.path_var())
            .env("DATABASE_URL", &self.url)
            .env("PORT", self.port.to_string())
            .env("HOST_PLUGIN_DIR", self.root.join("target/plugins"))
            .status()
            .context("running target/debug/host")?;
        match status.code() {
            Some(c) if c == code => Ok(()),
            other => bail!(
                "`host {}` exited {other:?}, expected {code}",
                args.join(" ")
            ),
        }
    }

    fn stop_app(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.app.join(".run/app.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn banner(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}
