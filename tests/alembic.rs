//! End to end on the Render + Alembic stack: the real `host` binary, the real `render-alembic`
//! component, real git, real Alembic and a throwaway real PostgreSQL per test.
//!
//! The app (`examples/alembic-app`) has tags v1 (users), v2 (notes, display_name), v3 (a
//! reversible migration and a /health that fails) and v4 (branched from v2: one good migration,
//! then one that fails halfway).

mod common;

use common::AlembicApp;
use std::process::Stdio;
use std::time::{Duration, Instant};

macro_rules! app {
    () => {
        match AlembicApp::start() {
            Some(app) => app,
            None => return,
        }
    };
}

fn deployed(app: &AlembicApp, rev: &str) {
    let run = app.deploy("staging", rev, &[]);
    assert_eq!(run.code, 0, "deploy {rev} should succeed:\n{}", run.text());
}

/// Rows that belong to v2's schema, written after v2 was deployed.
fn write_v2_rows(app: &AlembicApp) {
    app.sql(
        "INSERT INTO users (email, name, display_name) VALUES ('ada@example.org', 'Ada', 'ada'), ('bob@example.org', 'Bob', NULL);
         INSERT INTO notes (user_id, body) SELECT id, 'first note of ' || name FROM users;",
    );
}

const V2_ROWS: &str = "SELECT string_agg(u.email || ':' || n.body, '|' ORDER BY n.id) FROM notes n JOIN users u ON u.id = n.user_id";

#[test]
fn a_deploy_v1_then_v2_validates_both_and_history_shows_them() {
    let app = app!();
    deployed(&app, "v1");
    assert_eq!(app.alembic_version(), "0001");
    let (status, body) = app.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"revision\": \"0001\""), "{body}");

    let run = app.deploy("staging", "v2", &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    // The plan named the pending migration and a rollback by downgrade, and a backup was made.
    let plan = &run.events_of("plan")[0];
    assert_eq!(plan["classification"], "reversible-migrations", "{plan}");
    assert_eq!(plan["pending_migrations"].as_array().unwrap().len(), 1, "{plan}");
    let backup = &run.events_of("backup_made")[0];
    assert!(backup["size_bytes"].as_u64().unwrap() > 0 && backup["verified"] == true, "{backup}");
    assert!(app.root.join(backup["path"].as_str().unwrap()).exists());

    assert_eq!(app.head(), app.sha("v2"));
    assert_eq!(app.alembic_version(), "0002");
    assert_eq!(app.get("/health").0, 200);

    let status = app.status("staging");
    assert_eq!(status["environment"]["current_revision"], app.sha("v2"));
    assert_eq!(status["environment"]["last_validated_revision"], app.sha("v2"));
    assert!(status["lock"].is_null(), "the lock is released: {status}");

    let history = app.history("staging");
    let deploys: Vec<(String, String)> = history
        .iter()
        .map(|d| (d["target_revision"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(deploys, vec![(app.sha("v2"), "succeeded".into()), (app.sha("v1"), "succeeded".into())]);
    // Every phase is journaled with its outcome, in order.
    let phases: Vec<&str> = history[0]["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, vec!["preflight", "backup", "deploy", "verify"]);
    assert!(history[0]["phases"].as_array().unwrap().iter().all(|p| p["outcome"] == "ok"));
    assert_eq!(history[0]["backup"]["size_bytes"], backup["size_bytes"]);
}

#[test]
fn b_a_failing_health_check_rolls_back_code_and_schema_and_keeps_the_data() {
    let app = app!();
    deployed(&app, "v1");
    deployed(&app, "v2");
    write_v2_rows(&app);
    let rows_before = app.sql(V2_ROWS);
    assert!(!rows_before.is_empty());

    let run = app.deploy("staging", "v3", &[]);
    assert_eq!(run.code, 10, "exit 10 = failed and rolled back:\n{}", run.text());
    let probes = run.events_of("probe_attempt");
    assert!(probes.iter().any(|p| p["ok"] == false && p["detail"].as_str().unwrap().contains("503")), "{}", run.text());
    let rollback = &run.events_of("rollback_started")[0];
    assert_eq!(rollback["method"], "downgrade");
    assert_eq!(rollback["to_revision"], app.sha("v2"));

    // Code at v2, schema at v2's head (0003's column gone), v2's rows intact, app serving.
    assert_eq!(app.head(), app.sha("v2"));
    assert_eq!(app.alembic_version(), "0002");
    assert_eq!(app.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'pinned'"), "0");
    assert_eq!(app.sql(V2_ROWS), rows_before);
    assert_eq!(app.get("/health").0, 200);

    let status = app.status("staging");
    assert_eq!(status["environment"]["current_revision"], app.sha("v2"));
    assert_eq!(status["environment"]["last_validated_revision"], app.sha("v2"));
    let last = &app.history("staging")[0];
    assert_eq!(last["status"], "rolled_back");
    let phases: Vec<(String, String)> = last["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["phase"].as_str().unwrap().to_string(), p["outcome"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = [("preflight", "ok"), ("backup", "ok"), ("deploy", "ok"), ("verify", "failed"), ("rollback", "ok"), ("rollback-verify", "ok")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(phases, want);
}

#[test]
fn c_a_migration_failing_halfway_leaves_the_database_as_it_was() {
    let app = app!();
    deployed(&app, "v1");
    deployed(&app, "v2");
    write_v2_rows(&app);
    let before = app.pg.data_checksum().unwrap();

    let run = app.deploy("staging", "v4", &[]);
    assert_eq!(run.code, 10, "{}", run.text());
    let failed: Vec<_> = run.events_of("phase_finished").into_iter().filter(|p| p["ok"] == false).collect();
    assert_eq!(failed[0]["phase"], "deploy", "{}", run.text());
    assert!(failed[0]["detail"].as_str().unwrap().contains("alembic"), "{}", failed[0]);

    assert_eq!(app.pg.data_checksum().unwrap(), before, "schema and data equal to before the deploy");
    assert_eq!(app.alembic_version(), "0002");
    assert_eq!(app.head(), app.sha("v2"));
    assert_eq!(app.get("/health").0, 200);
}

#[test]
fn d_dry_run_changes_nothing_and_lists_what_it_would_do() {
    let app = app!();
    deployed(&app, "v1");
    deployed(&app, "v2");
    write_v2_rows(&app);
    let db_before = app.pg.data_checksum().unwrap();
    let tree_before = app.tree_digest();
    let history_before = app.history("staging");
    let status_before = app.status("staging");

    let run = app.deploy("staging", "v3", &["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let plan = &run.events_of("plan")[0];
    assert_eq!(plan["target_revision"], app.sha("v3"));
    assert_eq!(plan["current_schema"], "0002");
    assert!(plan["pending_migrations"][0].as_str().unwrap().starts_with("0003"), "{plan}");
    assert!(plan["rollback"].as_str().unwrap().contains("downgrade to 0002"), "{plan}");
    let planned: Vec<String> = run.events_of("planned").iter().map(|p| p["step"].as_str().unwrap().to_string()).collect();
    let has = |needle: &str| planned.iter().any(|s| s.contains(needle));
    assert!(has("pg_dump"), "backup listed: {planned:?}");
    assert!(has(&format!("checkout --force --detach {}", app.sha("v3"))), "{planned:?}");
    assert!(has("alembic upgrade head"), "{planned:?}");
    assert!(has("bin/restart"), "{planned:?}");
    assert!(has("probe GET /health"), "{planned:?}");
    // Read-only steps ran for real (that is how it knew the current schema); nothing else did.
    assert!(run.events_of("command_started").iter().all(|c| c["mutates"] == false));

    assert_eq!(app.pg.data_checksum().unwrap(), db_before);
    assert_eq!(app.tree_digest(), tree_before, "no file changed, no backup written");
    assert_eq!(app.history("staging"), history_before);
    assert_eq!(app.status("staging"), status_before);
}

#[test]
fn e_a_second_deploy_at_once_is_refused_naming_the_lock_holder() {
    let app = app!();
    deployed(&app, "v1");
    let mut first = app.host_cmd(&["deploy", "--env", "staging", "--rev", "v2", "--output", "json"]);
    first.env("HOST_ACTOR", "alice@ci-runner-1").stdout(Stdio::piped()).stderr(Stdio::piped());
    let first = first.spawn().unwrap();

    // Wait until the first run holds the lock, then start the second.
    let started = Instant::now();
    loop {
        let status = app.status("staging");
        if status["lock"]["holder"].as_str().is_some_and(|h| h.contains("alice@ci-runner-1")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "first deploy never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = app.host_cmd(&["deploy", "--env", "staging", "--rev", "v2"]);
    second.env("HOST_ACTOR", "bob@laptop");
    let second = second.output().unwrap();
    let first = first.wait_with_output().unwrap();

    assert_eq!(second.status.code(), Some(5), "exit 5 = environment locked");
    let said = String::from_utf8_lossy(&second.stdout).to_string() + &String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("locked by alice@ci-runner-1"), "{said}");
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stdout));
    // The refused run changed nothing and the first one finished normally.
    assert_eq!(app.head(), app.sha("v2"));
    let history = app.history("staging");
    assert_eq!(history[0]["actor"], "alice@ci-runner-1");
    assert!(history.iter().all(|d| d["actor"] != "bob@laptop" || d["status"] == "aborted"));
}

#[test]
fn f_a_revision_that_does_not_exist_fails_before_any_change() {
    let app = app!();
    deployed(&app, "v1");
    let before = app.pg.data_checksum().unwrap();
    let run = app.deploy("staging", "no-such-tag", &[]);
    assert_eq!(run.code, 3, "exit 3 = failed before any change:\n{}", run.text());
    assert!(run.stdout.contains("no-such-tag"), "{}", run.text());
    assert_eq!(app.pg.data_checksum().unwrap(), before);
    assert_eq!(app.head(), app.sha("v1"));
    assert!(app.status("staging")["lock"].is_null());
}

#[test]
fn g_manual_rollback_returns_to_the_previous_validated_revision() {
    let app = app!();
    deployed(&app, "v1");
    deployed(&app, "v2");
    let run = app.host(&["rollback", "--env", "staging", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(app.head(), app.sha("v1"));
    assert_eq!(app.alembic_version(), "0001");
    assert_eq!(app.get("/health").0, 200);
    let status = app.status("staging");
    assert_eq!(status["environment"]["current_revision"], app.sha("v1"));
}

#[test]
fn h_a_destructive_migration_waits_for_approval_in_production_and_rolls_back_by_restore() {
    let app = app!();
    let deploy = |rev: &str, extra: &[&str]| app.deploy("production", rev, extra);
    assert_eq!(deploy("v1", &[]).code, 0);
    assert_eq!(deploy("v2", &[]).code, 0);
    write_v2_rows(&app);
    let before = app.pg.data_checksum().unwrap();

    // No approval: stops before any change, says where the destructive step is.
    let run = deploy("v5", &[]);
    assert_eq!(run.code, 4, "exit 4 = approval required:\n{}", run.text());
    let finding = &run.events_of("finding")[0];
    assert_eq!(finding["rule"], "drop-column");
    assert_eq!(finding["severity"], "destructive");
    assert_eq!(finding["file"], "migrations/versions/0003d_drop_display_name.py");
    assert_eq!(finding["line"], 25);
    assert_eq!(run.events_of("plan")[0]["classification"], "destructive-migrations");
    assert!(run.events_of("backup_made").is_empty() && run.events_of("command_started").iter().all(|c| c["mutates"] == false));
    assert_eq!(app.pg.data_checksum().unwrap(), before);
    assert_eq!(app.head(), app.sha("v2"));
    assert!(app.status("production")["lock"].is_null());
    assert_eq!(app.history("production")[0]["status"], "aborted");

    // Approved: backed up, migrated, validated; the decision and who made it are recorded.
    let run = app.host_cmd(&["deploy", "--env", "production", "--rev", "v5", "--approve", "--output", "json"])
        .env("HOST_ACTOR", "carol@ops")
        .output()
        .unwrap();
    let run = common::Run { code: run.status.code().unwrap(), stdout: String::from_utf8_lossy(&run.stdout).into(), stderr: String::from_utf8_lossy(&run.stderr).into() };
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(run.events_of("approved")[0]["by"], "carol@ops");
    assert_eq!(run.events_of("backup_made").len(), 1);
    assert_eq!(app.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'display_name'"), "0");
    let approval = app.history("production")[0]["phases"].as_array().unwrap().iter().find(|p| p["phase"] == "approval").cloned().unwrap();
    assert_eq!(approval["outcome"], "ok");
    assert_eq!(approval["detail"], "approved by carol@ops: --approve");

    // Rolling it back restores the backup: the dropped column's data comes back.
    let run = app.host(&["rollback", "--env", "production", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(run.events_of("rollback_started")[0]["method"], "restore");
    assert_eq!(app.head(), app.sha("v2"));
    assert_eq!(app.sql("SELECT string_agg(coalesce(display_name, '-'), ',' ORDER BY id) FROM users"), "ada,-");
    assert_eq!(app.pg.data_checksum().unwrap(), before, "the database is as it was before v5");
    assert_eq!(app.get("/health").0, 200);
}

#[test]
fn i_staging_pauses_before_a_destructive_migration_then_goes_on() {
    let app = app!();
    deployed(&app, "v1");
    deployed(&app, "v2");
    let started = Instant::now();
    let run = app.deploy("staging", "v5", &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let paused = &run.events_of("paused")[0];
    assert_eq!(paused["duration"], 3000, "deploy.toml sets pause = \"3s\" for staging");
    assert!(paused["reason"].as_str().unwrap().contains("0003d_drop_display_name.py:25 drop-column"), "{paused}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The pause happened before anything changed: it comes before the backup.
    let kinds: Vec<String> = run.events().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(pos("paused") < pos("backup_made"));
}

#[test]
fn j_a_rollback_that_fails_keeps_the_environment_locked_for_a_person() {
    use std::io::BufRead;
    let app = app!();
    deployed(&app, "v1");
    deployed(&app, "v2");
    let mut child = app
        .host_cmd(&["deploy", "--env", "staging", "--rev", "v3", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut stopped = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        // The database dies while v3 is being verified: the rollback cannot downgrade nor restore.
        if !stopped && line.contains("\"probe_attempt\"") {
            app.pg.stop();
            stopped = true;
        }
        lines.push(line);
    }
    let code = child.wait().unwrap().code();
    let text = lines.join("\n");
    assert_eq!(code, Some(11), "exit 11 = rollback failed:\n{text}");
    assert!(text.contains("\"rollback_finished\",\"ok\":false"), "{text}");

    // The lock stays, naming why and where the backup is; nobody can deploy over it.
    let status = app.status("staging");
    let reason = status["lock"]["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("rollback failed"), "{reason}");
    assert!(reason.contains("backups/staging-"), "{reason}");
    let again = app.deploy("staging", "v2", &[]);
    assert_eq!(again.code, 5, "{}", again.text());
    assert!(again.stdout.contains("rollback failed"), "{}", again.text());

    let unlock = app.host(&["unlock", "--env", "staging"]);
    assert_eq!(unlock.code, 0, "{}", unlock.text());
    assert!(app.status("staging")["lock"].is_null());
}

#[test]
fn k_a_run_killed_mid_deploy_is_rolled_back_by_the_next_run() {
    use std::io::BufRead;
    let app = app!();
    for rev in ["v1", "v2"] {
        let run = app.deploy("qa", rev, &[]);
        assert_eq!(run.code, 0, "{}", run.text());
    }
    write_v2_rows(&app);
    let before = app.pg.data_checksum().unwrap();

    // v3 is deployed (schema 0003, code v3), then the host dies while verifying it.
    let mut child = app.host_cmd(&["deploy", "--env", "qa", "--rev", "v3", "--output", "json"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().contains("\"probe_attempt\"") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert_eq!(app.alembic_version(), "0003", "the killed run had migrated");
    assert_eq!(app.status("qa")["last_run"]["status"], "running");

    // While its lease lasts, the dead run still holds the environment.
    let early = app.deploy("qa", "v2", &[]);
    assert_eq!(early.code, 5, "{}", early.text());
    std::thread::sleep(Duration::from_millis(2500));

    // The next run rolls the dead one back first (downgrade, v2's code), then does its own work.
    let run = app.deploy("qa", "v2", &[]);
    assert_eq!(run.code, 0, "{}", run.text());
    let recovery = &run.events_of("rollback_started")[0];
    assert!(recovery["reason"].as_str().unwrap().contains("interrupted during verify"), "{recovery}");
    assert_eq!(recovery["method"], "downgrade");
    assert_eq!(app.alembic_version(), "0002");
    assert_eq!(app.head(), app.sha("v2"));
    assert_eq!(app.pg.data_checksum().unwrap(), before);
    assert_eq!(app.get("/health").0, 200);
    let killed = app.history("qa").into_iter().find(|d| d["requested_revision"] == "v3").unwrap();
    assert_eq!(killed["status"], "rolled_back");
    assert!(killed["detail"].as_str().unwrap().starts_with("recovered by run"), "{killed}");
}
