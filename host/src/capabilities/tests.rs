//! The capability gate on real programs and a real PostgreSQL: grants, dry-run, timeouts that
//! kill the whole process group, capped output, read-only queries.

use super::*;
use crate::config::{Database, Grants};
use crate::events::Recorder;

fn context(dir: &std::path::Path, programs: &[&str], dry_run: bool) -> (Arc<CapabilityContext>, Arc<Recorder>) {
    let bus = Bus::default();
    let recorder = Arc::new(Recorder::default());
    bus.subscribe(recorder.clone());
    let grants = Grants {
        programs: programs.iter().map(|p| p.to_string()).collect(),
        env: vec!["HOST_TEST_GRANTED".into()],
        http: vec![],
    };
    let mut databases = BTreeMap::new();
    databases.insert("main".to_string(), Database { url_env: "HOST_TEST_DB_URL".into(), write: false });
    let ctx = CapabilityContext::new("testbed", "staging", dir.canonicalize().unwrap(), grants, databases, dry_run, 64, bus, None);
    (ctx, recorder)
}

fn command(program: &str, args: &[&str], mutates: bool) -> Command {
    Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: None,
        env: vec![],
        timeout_ms: None,
        mutates,
        purpose: "test".into(),
    }
}

#[tokio::test]
async fn an_ungranted_program_is_refused_naming_plugin_program_and_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = context(dir.path(), &["echo"], false);
    let err = exec::run(&ctx, command("rm", &["-rf", "x"], true)).await.unwrap_err();
    let CapabilityError::Denied(message) = err else { panic!("expected a denial") };
    assert_eq!(message, "plugin `testbed` may not run `rm`: not granted (add it to grants.programs in deploy.toml)");
}

#[tokio::test]
async fn dry_run_plans_mutating_commands_and_runs_read_only_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, recorder) = context(dir.path(), &["touch", "echo"], true);
    let out = exec::run(&ctx, command("touch", &["created"], true)).await.unwrap();
    assert!(out.planned);
    assert!(!dir.path().join("created").exists(), "a planned command must not run");
    let out = exec::run(&ctx, command("echo", &["hello"], false)).await.unwrap();
    assert_eq!((out.planned, out.stdout.as_str()), (false, "hello\n"));
    let events = recorder.events.lock().unwrap();
    assert!(matches!(&events[0], Event::Planned { step, .. } if step == "touch created"));
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = context(dir.path(), &["sh"], false);
    let mut cmd = command("sh", &["-c", "sleep 30 & echo $! > child.pid; wait"], true);
    cmd.timeout_ms = Some(300);
    let started = Instant::now();
    let out = exec::run(&ctx, cmd).await.unwrap();
    assert!(out.timed_out && out.status == -1);
    let took = started.elapsed();
    println!("command timeout: 300 ms limit, killed after {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid")).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
    assert!(!alive, "the grandchild {pid} must be killed with the group");
}

#[tokio::test]
async fn output_is_capped_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = context(dir.path(), &["head"], false);
    let out = exec::run(&ctx, command("head", &["-c", "100000", "/dev/zero"], false)).await.unwrap();
    assert_eq!(out.status, 0);
    assert!(out.stdout.len() < 200, "kept {} bytes", out.stdout.len());
    assert!(out.stdout.ends_with("[... 99936 bytes truncated]"), "{:?}", &out.stdout[64..]);
}

#[tokio::test]
async fn commands_see_only_base_and_granted_environment() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: tests in this module do not read these variables concurrently with the write.
    unsafe {
        std::env::set_var("HOST_TEST_GRANTED", "visible");
        std::env::set_var("HOST_TEST_SECRET", "hidden");
    }
    let (ctx, _) = context(dir.path(), &["env"], false);
    let out = exec::run(&ctx, command("env", &[], false)).await.unwrap();
    assert!(out.stdout.contains("HOST_TEST_GRANTED=visible"));
    assert!(!out.stdout.contains("HOST_TEST_SECRET"));
    let mut host = CapabilityHost::new(ctx);
    use crate::runtime::bindings::deploy::plugin::host::Host;
    let denied = host.get_env("HOST_TEST_SECRET".into()).await.unwrap().unwrap_err();
    assert!(matches!(denied, CapabilityError::Denied(m) if m.contains("grants.env")));
}

#[tokio::test]
async fn queries_return_text_and_are_read_only_unless_granted() {
    if !testkit::require("PostgreSQL server binaries", testkit::Postgres::available()) {
        return;
    }
    let pg = testkit::Postgres::start().unwrap();
    pg.psql("CREATE TABLE t (id int, name text, seen timestamptz); INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', '2026-01-02T03:04:05Z')").unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var("HOST_TEST_DB_URL", &pg.url) };
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = context(dir.path(), &[], false);

    let r = db::query(&ctx, "main", "SELECT id, name, seen FROM t WHERE id >= $1::int ORDER BY id", &["1".into()]).await.unwrap();
    assert_eq!(r.columns, vec!["id", "name", "seen"]);
    assert_eq!(r.rows[0], vec![Some("1".into()), Some("a".into()), None]);
    assert_eq!(r.rows[1][2].as_deref(), Some("2026-01-02T03:04:05+00:00"));

    // The server enforces it: neither a plain write nor a writing function gets through.
    for sql in ["DELETE FROM t", "SELECT nextval('t_seq')"] {
        pg.psql("CREATE SEQUENCE IF NOT EXISTS t_seq").unwrap();
        let write = db::query(&ctx, "main", sql, &[]).await.unwrap_err();
        assert!(matches!(&write, CapabilityError::Failed(m) if m.contains("read-only transaction")), "{sql}: {write:?}");
    }
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "2", "nothing was deleted");

    let other = db::query(&ctx, "billing", "SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(&other, CapabilityError::Denied(m) if m.contains("`billing`")));
}
