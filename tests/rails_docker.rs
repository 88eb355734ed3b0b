//! End to end on the Rails stack when the app runs in a container: the `runner` setting
//! (`docker exec <container>`) and a `docker restart` restart, against a real Docker engine.
//!
//! No image is pulled: the container is `testkit::rootfs_image()` (a few kilobytes of /etc and
//! merged-/usr symlinks) with this machine's /usr bind-mounted read-only, so it runs Debian's
//! own Ruby and Rails 6.1. The app checkout is bind-mounted at the same path and is the
//! container's working directory; `--network host` lets it reach the test's PostgreSQL on
//! 127.0.0.1 and serve on its port. Its main process is `bin/rails server`.
//!
//! The container alone knows how the app reaches the database: its `DATABASE_URL` logs in as
//! `rails_in_container`, while the host's (for pg_dump and the schema_migrations query) is the
//! `postgres` superuser, and an event trigger records who ran each DDL statement under which
//! `application_name`. So "the migration ran inside the container" is read from the database,
//! not inferred from argv. The environment grants neither `bin/rails` nor `bin/restart`: any
//! attempt to run the app here instead of there would be refused.
//!
//! The extra environment is written to an untracked `deploy.container.toml` in the checkout
//! (the tracked deploy.toml stays as every tag has it; `git checkout --force` keeps untracked
//! files), used through `HOST_CONFIG`.

mod common;

use common::Run;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The database role only the container's `DATABASE_URL` uses.
const APP_ROLE: &str = "rails_in_container";
const V2: &str = "20250113103000";
const V3_FILE: &str = "db/migrate/20250120140500_remove_nickname_from_users.rb";

/// Who ran which DDL, under which application_name: filled by an event trigger, in a schema of
/// its own (`audit`) so the app's migrations never touch it.
const AUDIT_SQL: &str = r#"
CREATE ROLE rails_in_container LOGIN;
GRANT CREATE, USAGE ON SCHEMA public TO rails_in_container;
CREATE SCHEMA audit;
CREATE TABLE audit.ddl (
  id bigserial PRIMARY KEY,
  usr text NOT NULL,
  app text NOT NULL,
  tag text NOT NULL,
  object text
);
GRANT USAGE ON SCHEMA audit TO PUBLIC;
GRANT INSERT ON audit.ddl TO PUBLIC;
GRANT USAGE ON SEQUENCE audit.ddl_id_seq TO PUBLIC;
CREATE FUNCTION audit.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    INSERT INTO audit.ddl (usr, app, tag, object)
    VALUES (session_user, current_setting('application_name'), r.command_tag, r.object_identity);
  END LOOP;
END
$fn$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION audit.log_ddl();
"#;

/// A fresh checkout of `examples/rails-app`, its own PostgreSQL, and a container running the
/// app's server from that checkout.
struct ContainerApp {
    // Fields drop in order: the container goes before the checkout it mounts and the database
    // it uses.
    container: testkit::Container,
    pg: testkit::Postgres,
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    port: u16,
    plugins: PathBuf,
}

macro_rules! app {
    () => {
        match ContainerApp::start() {
            Some(app) => app,
            None => return,
        }
    };
}

impl ContainerApp {
    /// `None` when PostgreSQL, Rails or Docker is missing on a developer machine (a clear
    /// skip); under `CI=true` a missing one fails the test instead.
    fn start() -> Option<ContainerApp> {
        if !testkit::require("PostgreSQL server binaries", testkit::Postgres::available())
            || !testkit::require(testkit::RAILS_NEEDS, testkit::rails_available())
            || !testkit::require(testkit::DOCKER_NEEDS, testkit::docker_available())
        {
            return None;
        }
        let plugins = common::plugin_dir(&["rails"]);

        let started = Instant::now();
        let image = testkit::rootfs_image().expect("the test image");
        eprintln!("timing: rootfs image ready: {:?}", started.elapsed());

        let pg = testkit::Postgres::start().expect("start PostgreSQL");
        pg.psql(AUDIT_SQL).expect("the app role and the DDL audit");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rails-app");
        testkit::make_rails_repo(&root).expect("make the app repo");
        let root = root.canonicalize().unwrap();
        let port = testkit::free_port();
        let app_url = format!("postgres://{APP_ROLE}@127.0.0.1:{}/app", pg.port);

        let port_arg = port.to_string();
        let spec = testkit::ContainerSpec::with_host_userland(&image, "host-test-rails")
            .workdir_shared(&root)
            .env("DATABASE_URL", &app_url)
            .env("RAILS_ENV", "production")
            .env("SECRET_KEY_BASE", &testkit::secret_key_base())
            .env("PORT", &port_arg)
            // The pid file on the container's tmpfs /run, fresh on every (re)start: a server
            // killed by `docker restart`'s timeout never leaves one in the way.
            .command(&[
                "bin/rails",
                "server",
                "-b",
                "127.0.0.1",
                "-p",
                &port_arg,
                "-e",
                "production",
                "-P",
                "/run/rails-server.pid",
            ]);
        let name = spec.name().to_string();

        let config = root.join("deploy.container.toml");
        let base = std::fs::read_to_string(root.join("deploy.toml")).expect("deploy.toml");
        std::fs::write(&config, base + &container_environment(&name)).unwrap();

        let started = Instant::now();
        let container = spec.start().expect("start the app container");
        let app = ContainerApp {
            container,
            pg,
            _dir: dir,
            root,
            config,
            port,
            plugins,
        };
        app.wait_until_up(Duration::from_secs(90));
        eprintln!(
            "timing: container started and serving /up: {:?}",
            started.elapsed()
        );
        Some(app)
    }

    /// Until the server in the container answers /up; fails with its log if it stops or never
    /// does.
    fn wait_until_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.get("/up").0 == 200 {
                return;
            }
            if !self.container.running() || Instant::now() > deadline {
                panic!(
                    "the app container {} never served /up on port {} (running: {}):\n{}",
                    self.name(),
                    self.port,
                    self.container.running(),
                    self.container.logs(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn name(&self) -> &str {
        self.container.name()
    }

    /// The deploy machine: the host's own database URL (superuser `postgres`, for pg_dump and
    /// the schema_migrations query), the app's port for the probes. No SECRET_KEY_BASE: the
    /// app's secrets live in the container.
    fn host(&self, args: &[&str]) -> Run {
        let out = Command::new(common::host_bin())
            .args(args)
            .current_dir(&self.root)
            .env("HOST_CONFIG", &self.config)
            .env("DATABASE_URL", &self.pg.url)
            .env("PORT", self.port.to_string())
            .env("HOST_PLUGIN_DIR", &self.plugins)
            .env(
                "HOST_CACHE_DIR",
                testkit::target_dir().join("testkit/component-cache"),
            )
            .env_remove("SECRET_KEY_BASE")
            .env_remove("RAILS_ENV")
            .env_remove("HOST_STATE_URL")
            .env_remove("CI")
            .output()
            .expect("run host");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn deploy(&self, rev: &str) -> Run {
        self.host(&[
            "deploy",
            "--env",
            "container",
            "--rev",
            rev,
            "--output",
            "json",
        ])
    }

    fn deployed(&self, rev: &str) -> Run {
        let run = self.deploy(rev);
        assert_eq!(
            run.code,
            0,
            "deploy {rev} through {} should succeed:\n{}\n--- container log\n{}",
            self.name(),
            run.text(),
            self.container.logs(30)
        );
        run
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

    fn has_nickname_column(&self) -> bool {
        self.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'") == "1"
    }

    /// `user|application_name` of each DDL statement on `object`, oldest first.
    fn ddl_on(&self, tag: &str, object: &str) -> Vec<String> {
        let rows = self.sql(&format!(
            "SELECT usr || '|' || app FROM audit.ddl WHERE tag = '{tag}' AND object = '{object}' ORDER BY id"
        ));
        rows.lines().map(String::from).collect()
    }

    fn get(&self, path: &str) -> (u16, String) {
        common::http_get(self.port, path)
    }
}

/// The environment the tests deploy to, appended to the checkout's deploy.toml.
fn container_environment(container: &str) -> String {
    format!(
        r#"
# --- added by tests/rails_docker.rs ---
# The app runs in the container `{container}`: every Rails command goes through `docker exec`
# (RAILS_ENV and the migration's PGAPPNAME as `-e`), the restart is `docker restart`; git and
# pg_dump run here, on the checkout the container shares. Applied versions are read with
# `db:migrate:status`, inside the container. Destructive migrations need an approval.
[environments.container]
on_destructive = "require-approval"

[environments.container.settings]
runner = ["docker", "exec", "{container}"]
restart = ["docker", "restart", "{container}"]

[environments.container.grants]
# Neither bin/rails nor bin/restart: nothing of the app may run on this machine.
programs = ["git", "docker", "pg_dump", "pg_restore", "psql", "mkdir"]
env = ["DATABASE_URL", "PORT"]
"#
    )
}

fn argvs(run: &Run, kind: &str) -> Vec<Vec<String>> {
    run.events_of(kind)
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// The `docker exec ... <container> bin/rails <task>` commands a run started, whole.
fn rails_through_container(run: &Run, container: &str, task: &str) -> Vec<Vec<String>> {
    argvs(run, "command_started")
        .into_iter()
        .filter(|argv| {
            argv.len() >= 5
                && argv[..2] == ["docker", "exec"]
                && argv.iter().any(|a| a == container)
                && argv.ends_with(&["bin/rails".to_string(), task.to_string()])
        })
        .collect()
}

/// The value of `-e NAME=value` in a `docker exec` argv, before the container name.
fn exec_env<'a>(argv: &'a [String], container: &str, name: &str) -> Option<&'a str> {
    let end = argv.iter().position(|a| a == container)?;
    argv[..end]
        .windows(2)
        .filter(|w| w[0] == "-e")
        .find_map(|w| w[1].strip_prefix(&format!("{name}=")))
}

#[test]
fn a_migrations_run_inside_the_container_and_docker_restart_serves_the_new_code() {
    let app = app!();
    let name = app.name().to_string();
    // The server of the container, not one started here: PID 1 inside it is `bin/rails server`.
    let pid1 = app
        .container
        .main_process()
        .expect("read /proc/1/cmdline inside");
    assert!(
        pid1.iter().any(|a| a.ends_with("bin/rails")) && pid1.contains(&"server".to_string()),
        "{pid1:?}"
    );
    assert!(pid1.contains(&app.port.to_string()), "{pid1:?}");

    // v1 on an empty database: status is read inside the container (no table yet), the
    // migration creates `users` as the container's role.
    let run = app.deployed("v1");
    // Read before migrating (preflight) and again after (validate): both inside.
    let status = rails_through_container(&run, &name, "db:migrate:status");
    assert_eq!(status.len(), 2, "{:?}", argvs(&run, "command_started"));
    assert_eq!(
        exec_env(&status[0], &name, "RAILS_ENV"),
        Some("production"),
        "{:?}",
        status[0]
    );
    assert_eq!(
        app.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'users'"),
        APP_ROLE,
        "the migration logged in with the container's DATABASE_URL"
    );

    let before_restart = app.container.started_at().unwrap();
    let started = Instant::now();
    let run = app.deployed("v2");
    let took = started.elapsed();
    eprintln!("timing: deploy v1 -> v2 through the container: {took:?}");

    // Every Rails command went through `docker exec <container>`, none ran here.
    let started_cmds = argvs(&run, "command_started");
    assert!(
        started_cmds
            .iter()
            .all(|argv| !matches!(argv[0].as_str(), "bin/rails" | "bin/restart" | "ruby")),
        "{started_cmds:?}"
    );
    let position = |argv: &Vec<String>| started_cmds.iter().position(|c| c == argv).unwrap();
    let status = rails_through_container(&run, &name, "db:migrate:status");
    assert_eq!(status.len(), 2, "{started_cmds:?}");
    let migrate = rails_through_container(&run, &name, "db:migrate");
    assert_eq!(migrate.len(), 1, "{started_cmds:?}");
    let restart = vec!["docker".to_string(), "restart".into(), name.clone()];
    assert!(
        position(&status[0]) < position(&migrate[0])
            && position(&migrate[0]) < position(&restart)
            && started_cmds.iter().rposition(|c| *c == status[1]).unwrap() > position(&restart),
        "status, migrate, restart, status: {started_cmds:?}"
    );
    let migrate = &migrate[0];
    assert_eq!(
        exec_env(migrate, &name, "RAILS_ENV"),
        Some("production"),
        "{migrate:?}"
    );
    let app_name = exec_env(migrate, &name, "PGAPPNAME")
        .unwrap_or_else(|| panic!("db:migrate gets its session name as -e: {migrate:?}"))
        .to_string();
    assert!(app_name.starts_with("host-deploy-"), "{migrate:?}");
    let finished = run
        .events_of("command_finished")
        .into_iter()
        .find(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "db:migrate")
        })
        .expect("db:migrate finished");
    assert_eq!(finished["status"], 0, "{finished}");
    assert_eq!(run.events_of("backup_made").len(), 1, "{}", run.text());
    assert_eq!(run.events_of("validated")[0]["revision"], app.sha("v2"));

    // The schema changed, and the statement that changed it ran in a session of the
    // container's role, named with the PGAPPNAME given to `docker exec -e`: it ran there.
    assert!(app.has_nickname_column());
    assert_eq!(
        app.ddl_on("ALTER TABLE", "public.users"),
        [format!("{APP_ROLE}|{app_name}")],
        "who added users.nickname, under which application_name"
    );
    assert_eq!(
        app.sql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations"),
        format!("20250106090000,{V2}")
    );

    // `docker restart` ran: the container's server was started again, on v2's code.
    let after_restart = app.container.started_at().unwrap();
    assert_ne!(before_restart, after_restart, "docker restart restarts it");
    assert!(app.container.running());
    assert_eq!(app.head(), app.sha("v2"));
    let (code, body) = app.get("/health");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"pending_migrations\":0") && body.contains("\"database\":\"connected\""),
        "{body}"
    );
    app.sql("INSERT INTO users (email, name, nickname, created_at, updated_at) VALUES ('ada@example.org', 'Ada', 'ada', now(), now())");
    let (code, body) = app.get("/users");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"nickname\":\"ada\""),
        "v2's controller serves nickname: {body}"
    );
    assert!(
        !app.root.join(".run/app.pid").exists(),
        "bin/restart never ran here"
    );

    // Dropping the fixture removes its container.
    drop(app);
    assert!(
        !testkit::container_exists(&name),
        "{name} is removed when the test ends"
    );
}

#[test]
fn b_a_destructive_migration_through_the_container_waits_for_approval() {
    let app = app!();
    let name = app.name().to_string();
    app.deployed("v1");
    app.deployed("v2");
    app.sql("INSERT INTO users (email, name, nickname, created_at, updated_at) VALUES ('ada@example.org', 'Ada', 'ada', now(), now())");
    let before = app.pg.data_checksum().unwrap();
    let started_at = app.container.started_at().unwrap();

    let run = app.deploy("v3");
    assert_eq!(run.code, 4, "exit 4 = approval required:\n{}", run.text());
    let finding = &run.events_of("finding")[0];
    assert_eq!(finding["rule"], "remove-column", "{finding}");
    assert_eq!(finding["severity"], "destructive");
    assert_eq!(finding["file"], V3_FILE);
    assert_eq!(
        run.events_of("plan")[0]["classification"],
        "destructive-migrations"
    );
    // What was applied was read inside the container; nothing that changes anything ran.
    assert_eq!(
        rails_through_container(&run, &name, "db:migrate:status").len(),
        1,
        "{:?}",
        argvs(&run, "command_started")
    );
    assert!(
        run.events_of("command_started")
            .iter()
            .all(|c| c["mutates"] == false),
        "{}",
        run.text()
    );
    assert!(run.events_of("backup_made").is_empty(), "{}", run.text());

    assert_eq!(
        app.pg.data_checksum().unwrap(),
        before,
        "the database (and the DDL audit) is untouched"
    );
    assert!(app.has_nickname_column());
    assert_eq!(app.head(), app.sha("v2"), "the code is untouched");
    assert_eq!(
        app.container.started_at().unwrap(),
        started_at,
        "the container was not restarted"
    );
    let (code, body) = app.get("/health");
    assert_eq!(code, 200, "{body}");
}
