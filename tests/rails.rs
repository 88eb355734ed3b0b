//! End to end on the Rails stack: the real `host` binary, the real `rails` component, real git,
//! real Rails 6.1 (`bin/rails db:migrate`, WEBrick) and a throwaway real PostgreSQL per test.
//!
//! The app (`examples/rails-app`) has tags v1 (users), v2 (users.nickname, reversible), v3
//! (removes users.nickname: destructive) and v4 (branched from v2: an irreversible backfill that
//! runs for a minute). `deploy.toml` has `staging` (pause 2 s on destructive migrations,
//! applied versions read with `db:migrate:status`), `production` (approval required, read from
//! `schema_migrations` through the query capability) and `qa` (migration timeout 8 s).

mod common;

use common::Run;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A fresh checkout of `examples/rails-app`, its own PostgreSQL, its own port.
struct RailsApp {
    pg: testkit::Postgres,
    _dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    secret: String,
    plugins: PathBuf,
}

macro_rules! app {
    () => {
        match RailsApp::start() {
            Some(app) => app,
            None => return,
        }
    };
}

impl RailsApp {
    /// `None` when PostgreSQL or Rails is missing on a developer machine (a clear skip); under
    /// `CI=true` a missing one fails the test instead.
    fn start() -> Option<RailsApp> {
        if !testkit::require("PostgreSQL server binaries", testkit::Postgres::available())
            || !testkit::require(testkit::RAILS_NEEDS, testkit::rails_available())
        {
            return None;
        }
        let plugins = common::plugin_dir(&["rails"]);
        let pg = testkit::Postgres::start().expect("start PostgreSQL");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rails-app");
        testkit::make_rails_repo(&root).expect("make the app repo");
        Some(RailsApp {
            pg,
            _dir: dir,
            root: root.canonicalize().unwrap(),
            port: testkit::free_port(),
            secret: testkit::secret_key_base(),
            plugins,
        })
    }

    /// The environment a deploy machine would have: the database, the app's secret, its port.
    fn with_env(&self, cmd: &mut Command) {
        cmd.current_dir(&self.root)
            .env("DATABASE_URL", &self.pg.url)
            .env("SECRET_KEY_BASE", &self.secret)
            .env("PORT", self.port.to_string())
            .env("HOST_PLUGIN_DIR", &self.plugins)
            .env(
                "HOST_CACHE_DIR",
                testkit::target_dir().join("testkit/component-cache"),
            )
            .env_remove("HOST_STATE_URL")
            .env_remove("CI");
    }

    fn host_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(common::host_bin());
        cmd.args(args);
        self.with_env(&mut cmd);
        cmd
    }

    fn host(&self, args: &[&str]) -> Run {
        let out = self.host_cmd(args).output().expect("run host");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn deploy(&self, env: &str, rev: &str, extra: &[&str]) -> Run {
        let mut args = vec!["deploy", "--env", env, "--rev", rev, "--output", "json"];
        args.extend_from_slice(extra);
        self.host(&args)
    }

    fn deployed(&self, env: &str, rev: &str) {
        let run = self.deploy(env, rev, &[]);
        assert_eq!(
            run.code,
            0,
            "deploy {rev} to {env} should succeed:\n{}",
            run.text()
        );
    }

    /// `bin/rails <args>` by hand in the checkout, as an operator would.
    fn rails(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("bin/rails");
        cmd.args(args).env("RAILS_ENV", "production");
        self.with_env(&mut cmd);
        let out = cmd.output().expect("bin/rails");
        assert!(
            out.status.success(),
            "bin/rails {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

    fn sql(&self, sql: &str) -> String {
        self.pg.psql(sql).expect("psql")
    }

    fn versions(&self) -> String {
        self.sql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations")
    }

    fn has_nickname_column(&self) -> bool {
        self.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'") == "1"
    }

    fn get(&self, path: &str) -> (u16, String) {
        common::http_get(self.port, path)
    }

    fn status(&self, env: &str) -> serde_json::Value {
        let run = self.host(&["status", "--env", env, "--output", "json"]);
        assert_eq!(run.code, 0, "{}", run.text());
        serde_json::from_str(&run.stdout).expect("status JSON")
    }

    fn history(&self, env: &str) -> Vec<serde_json::Value> {
        let run = self.host(&[
            "history", "--env", env, "--output", "json", "--limit", "100",
        ]);
        assert_eq!(run.code, 0, "{}", run.text());
        serde_json::from_str(&run.stdout).expect("history JSON")
    }
}

impl Drop for RailsApp {
    /// Stop the server the deploys started (its pid is in .run/app.pid).
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.root.join(".run/app.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

const V2: &str = "20250113103000";
const V3_FILE: &str = "db/migrate/20250120140500_remove_nickname_from_users.rb";

fn commands_run(run: &Run) -> Vec<String> {
    run.events_of("command_started")
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn a_code_unchanged_but_a_migration_pending_is_applied() {
    let app = app!();
    app.deployed("staging", "v1");
    app.deployed("staging", "v2");
    assert!(app.has_nickname_column());

    // The database falls behind the code (a restored backup, a migration reverted by hand):
    // the app itself says so, and so does `host status`.
    app.rails(&["db:rollback"]);
    assert!(!app.has_nickname_column());
    let (code, body) = app.get("/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"pending_migrations\":1"), "{body}");
    let status = app.status("staging");
    assert_eq!(status["pending_migrations"], 1, "{status}");
    assert!(
        status["pending_migration_ids"][0]
            .as_str()
            .unwrap()
            .starts_with(V2),
        "{status}"
    );
    let human = app.host(&["status", "--env", "staging"]);
    assert!(
        human.stdout.contains(&format!(
            "pending migrations: 1 ({V2} Add nickname to users)"
        )),
        "{}",
        human.text()
    );

    // Deploying the revision already checked out still finds it, backs up, applies it.
    let started = Instant::now();
    let run = app.deploy("staging", "v2", &[]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.text());
    let plan = &run.events_of("plan")[0];
    assert_eq!(plan["current_revision"], app.sha("v2"));
    assert_eq!(plan["target_revision"], app.sha("v2"));
    assert_eq!(
        plan["pending_migrations"],
        serde_json::json!([format!("{V2} Add nickname to users")]),
        "{plan}"
    );
    assert_eq!(plan["classification"], "reversible-migrations");
    let changes: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes.iter().any(|c| c.starts_with("code already at")),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.contains("pending in the database although the code is up to date")),
        "{changes:?}"
    );
    assert_eq!(run.events_of("backup_made").len(), 1);
    assert!(
        commands_run(&run)
            .iter()
            .any(|c| c == "bin/rails db:migrate"),
        "{:?}",
        commands_run(&run)
    );
    assert_eq!(run.events_of("validated")[0]["revision"], app.sha("v2"));
    eprintln!("timing: deploy of an unchanged revision with 1 pending migration: {took:?}");

    assert!(app.has_nickname_column());
    assert_eq!(app.head(), app.sha("v2"));
    let (code, body) = app.get("/health");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"pending_migrations\":0") && body.contains("\"database\":\"connected\""),
        "{body}"
    );
    assert_eq!(app.status("staging")["pending_migrations"], 0);
}

#[test]
fn b_a_destructive_migration_waits_for_approval_in_production() {
    let app = app!();
    app.deployed("production", "v1");
    app.deployed("production", "v2");
    app.sql("INSERT INTO users (email, name, nickname, created_at, updated_at) VALUES ('ada@example.org', 'Ada', 'ada', now(), now()), ('bob@example.org', 'Bob', NULL, now(), now())");
    let before = app.pg.data_checksum().unwrap();

    // No approval: stops before any change and says where the destructive step is.
    let run = app.deploy("production", "v3", &[]);
    assert_eq!(run.code, 4, "exit 4 = approval required:\n{}", run.text());
    let finding = &run.events_of("finding")[0];
    assert_eq!(finding["rule"], "remove-column");
    assert_eq!(finding["severity"], "destructive");
    assert_eq!(finding["file"], V3_FILE);
    assert_eq!(finding["line"], 5);
    assert!(
        finding["reason"]
            .as_str()
            .unwrap()
            .contains("remove_column :users, :nickname, :string"),
        "{finding}"
    );
    assert_eq!(
        run.events_of("plan")[0]["classification"],
        "destructive-migrations"
    );
    assert!(run.events_of("backup_made").is_empty(), "{}", run.text());
    assert!(
        run.events_of("command_started")
            .iter()
            .all(|c| c["mutates"] == false),
        "{}",
        run.text()
    );
    // production reads schema_migrations with a query, not by booting Rails.
    assert!(
        !commands_run(&run)
            .iter()
            .any(|c| c.contains("db:migrate:status")),
        "{:?}",
        commands_run(&run)
    );
    assert_eq!(
        app.pg.data_checksum().unwrap(),
        before,
        "the database is untouched"
    );
    assert_eq!(app.head(), app.sha("v2"), "the code is untouched");
    assert_eq!(app.history("production")[0]["status"], "aborted");
    assert!(app.status("production")["lock"].is_null());

    // Approved: backed up, migrated, validated; the decision and who made it are recorded.
    let out = app
        .host_cmd(&[
            "deploy",
            "--env",
            "production",
            "--rev",
            "v3",
            "--approve-destructive",
            "--output",
            "json",
        ])
        .env("HOST_ACTOR", "carol@ops")
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(run.events_of("approved")[0]["by"], "carol@ops");
    let backup = &run.events_of("backup_made")[0];
    assert!(
        backup["verified"] == true && backup["size_bytes"].as_u64().unwrap() > 0,
        "{backup}"
    );
    assert!(app.root.join(backup["path"].as_str().unwrap()).is_file());
    let kinds: Vec<String> = run
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(pos("approved") < pos("backup_made") && pos("backup_made") < pos("validated"));
    assert!(!app.has_nickname_column());
    assert_eq!(app.head(), app.sha("v3"));
    assert_eq!(app.get("/health").0, 200);
    let approval = app.history("production")[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "approval")
        .cloned()
        .unwrap();
    assert_eq!(approval["outcome"], "ok");
    assert_eq!(approval["detail"], "approved by carol@ops: --approve");
}

#[test]
fn c_staging_pauses_before_a_destructive_migration_then_goes_on() {
    let app = app!();
    app.deployed("staging", "v1");
    app.deployed("staging", "v2");
    let started = Instant::now();
    let run = app.deploy("staging", "v3", &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let paused = &run.events_of("paused")[0];
    assert_eq!(
        paused["duration"], 2000,
        "deploy.toml sets pause = \"2s\" for staging"
    );
    assert!(
        paused["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("{V3_FILE}:5 remove-column")),
        "{paused}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let kinds: Vec<String> = run
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(
        pos("paused") < pos("backup_made"),
        "the pause comes before anything changes"
    );
    assert!(!app.has_nickname_column());
}

#[test]
fn d_a_migration_past_its_timeout_is_killed_and_the_database_restored() {
    let app = app!();
    app.deployed("qa", "v1");
    app.deployed("qa", "v2");
    app.sql("INSERT INTO users (email, name, created_at, updated_at) VALUES ('ada@example.org', 'Ada', now(), now())");
    let before = app.pg.data_checksum().unwrap();

    let run = app.deploy("qa", "v4", &[]);
    assert_eq!(
        run.code,
        10,
        "exit 10 = failed and rolled back:\n{}",
        run.text()
    );
    let migrate = run
        .events_of("command_finished")
        .into_iter()
        .find(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "db:migrate")
        })
        .expect("db:migrate ran");
    assert_eq!(migrate["timed_out"], true, "{migrate}");
    let killed_after = migrate["duration"].as_u64().unwrap();
    assert!(
        (8_000..30_000).contains(&killed_after),
        "killed at the 8 s migration timeout of qa, not at {killed_after} ms"
    );
    // Irreversible (no `down`): the rollback restores the backup taken before it.
    let rollback = &run.events_of("rollback_started")[0];
    assert_eq!(rollback["method"], "restore", "{rollback}");
    assert_eq!(rollback["to_revision"], app.sha("v2"));
    assert_eq!(
        run.events_of("rollback_finished")[0]["ok"],
        true,
        "{}",
        run.text()
    );

    // The server-side session of the killed migration was ended too: nothing still sleeps.
    let logs = run.events_of("plugin_log");
    assert!(
        logs.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .starts_with("ended 1 migration session(s) still running")),
        "the migration was killed mid-query, so its session was still there:\n{}",
        run.text()
    );
    assert_eq!(
        app.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'host-deploy-%'"
        ),
        "0"
    );
    assert_eq!(
        app.pg.data_checksum().unwrap(),
        before,
        "the database is as before the deploy"
    );
    assert_eq!(
        app.sql("SELECT coalesce(nickname, '-') FROM users"),
        "-",
        "the backfill did not stay"
    );
    assert_eq!(app.head(), app.sha("v2"), "the previous code is back");
    assert_eq!(app.get("/health").0, 200);
    assert_eq!(app.history("qa")[0]["status"], "rolled_back");
}

#[test]
fn e_a_version_the_database_has_and_no_file_has_is_reported() {
    let app = app!();
    app.deployed("staging", "v1");
    // Migrated from a branch that was never merged: the table knows a version no file has.
    app.sql("INSERT INTO schema_migrations (version) VALUES ('20241231000000')");
    let status = app.rails(&["db:migrate:status"]);
    assert!(
        status.contains("20241231000000  ********** NO FILE **********"),
        "{status}"
    );

    let run = app.deploy("staging", "v2", &[]);
    assert_eq!(
        run.code,
        0,
        "a version without a file is reported, it does not stop the deploy:\n{}",
        run.text()
    );
    let finding = run
        .events_of("finding")
        .into_iter()
        .find(|f| f["rule"] == "no-file")
        .expect("a no-file finding");
    assert_eq!(finding["severity"], "risky");
    assert!(
        finding["reason"]
            .as_str()
            .unwrap()
            .contains("version 20241231000000"),
        "{finding}"
    );
    let changes = run.events_of("plan")[0]["changes"].to_string();
    assert!(
        changes.contains("schema_migrations has 1 version with no file: 20241231000000"),
        "{changes}"
    );
    assert_eq!(
        app.versions(),
        format!("20241231000000,20250106090000,{V2}")
    );

    // When the plugin cannot answer, `host status` says why and still succeeds.
    app.pg.stop();
    let status = app.status("staging");
    assert!(status["pending_migrations"].is_null(), "{status}");
    assert!(
        !status["pending_migrations_error"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{status}"
    );
    let human = app.host(&["status", "--env", "staging"]);
    assert_eq!(human.code, 0, "{}", human.text());
    assert!(
        human.stdout.contains("pending migrations: unknown ("),
        "{}",
        human.text()
    );
}

#[test]
fn f_migrations_check_lists_findings_and_fails_on_destructive_ones() {
    let app = app!();
    let check = || {
        app.host(&[
            "migrations",
            "check",
            "--plugin",
            "rails",
            "db/migrate",
            "--output",
            "json",
        ])
    };

    app.git(&["checkout", "--quiet", "v2"]);
    let run = check();
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap(),
        serde_json::json!([])
    );

    app.git(&["checkout", "--quiet", "v3"]);
    let run = check();
    assert_eq!(
        run.code,
        1,
        "exit 1 = destructive findings:\n{}",
        run.text()
    );
    let findings: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["file"], V3_FILE);
    assert_eq!(findings[0]["line"], 5);
    assert_eq!(findings[0]["rule"], "remove-column");
    assert_eq!(findings[0]["severity"], "destructive");
    let human = app.host(&["migrations", "check", "--plugin", "rails", "db/migrate"]);
    assert_eq!(human.code, 1, "{}", human.text());
    assert!(
        human.stdout.contains(&format!(
            "{V3_FILE}:5: destructive: remove-column: drops a column"
        )),
        "{}",
        human.text()
    );

    app.git(&["checkout", "--quiet", "v4"]);
    let run = check();
    assert_eq!(
        run.code,
        0,
        "irreversible is risky, not destructive:\n{}",
        run.text()
    );
    let findings: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(findings[0]["rule"], "irreversible");
    assert!(
        findings[0]["reason"]
            .as_str()
            .unwrap()
            .contains("`up` without `down`"),
        "{findings:?}"
    );
}

#[test]
fn g_a_manual_rollback_reverts_reversible_migrations_with_db_rollback() {
    let app = app!();
    app.deployed("staging", "v1");
    app.deployed("staging", "v2");
    app.sql("INSERT INTO users (email, name, nickname, created_at, updated_at) VALUES ('ada@example.org', 'Ada', 'ada', now(), now())");

    let run = app.host(&["rollback", "--env", "staging", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let rollback = &run.events_of("rollback_started")[0];
    assert_eq!(rollback["method"], "downgrade", "{rollback}");
    assert_eq!(rollback["to_revision"], app.sha("v1"));
    // One step back, run while v2's migration file is still checked out, then v1's code.
    let commands = commands_run(&run);
    let step = commands
        .iter()
        .position(|c| c == "bin/rails db:rollback STEP=1")
        .expect("db:rollback STEP=1");
    let checkout = commands
        .iter()
        .position(|c| c.starts_with("git checkout --force --detach"))
        .unwrap();
    assert!(step < checkout, "{commands:?}");

    assert_eq!(app.versions(), "20250106090000");
    assert!(!app.has_nickname_column());
    assert_eq!(
        app.sql("SELECT email FROM users"),
        "ada@example.org",
        "the rows stay, only the column goes"
    );
    assert_eq!(app.head(), app.sha("v1"));
    assert_eq!(app.get("/health").0, 200);
    assert_eq!(
        app.status("staging")["environment"]["current_revision"],
        app.sha("v1")
    );
}
