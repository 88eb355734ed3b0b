//! The sandbox, end to end: an adversarial plugin (`tests/plugins/adversary`, built by
//! `cargo xtask build-plugins`) run against a real deploy on a real PostgreSQL. It makes a real
//! change after a real backup, then tries what a plugin must never get away with. Each test
//! checks the exact error, that the state store recorded the failure, and that the database and
//! the project's files are as before.
//!
//! Plus the vetting of plugins before they run: pins (`host.lock`, `--locked`, CI=true),
//! signatures, and contract versions.

mod common;

use common::{Run, host_bin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn test_plugin(name: &str) -> PathBuf {
    let path = testkit::target_dir().join(format!("test-plugins/{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask build-plugins` first", path.display());
    path
}

/// A project whose plugin is the adversary, told what to try.
struct Project {
    pg: testkit::Postgres,
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Project {
    fn start() -> Option<Project> {
        if !testkit::require("PostgreSQL server binaries", testkit::Postgres::available()) {
            return None;
        }
        let pg = testkit::Postgres::start().expect("PostgreSQL");
        pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, owner text); INSERT INTO accounts VALUES (1, 'ada'), (2, 'bob')").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("plugins")).unwrap();
        std::fs::copy(test_plugin("adversary"), root.join("plugins/adversary.wasm")).unwrap();
        std::fs::write(root.join("README"), "a project file\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        Some(Project { pg, _dir: dir, root })
    }

    fn configure(&self, misbehave: &str, phase: &str, extra: &str) {
        let text = format!(
            r#"[plugin]
path = "plugins/adversary.wasm"
[plugin.settings]
misbehave = "{misbehave}"
phase = "{phase}"
[grants]
programs = ["psql", "pg_dump", "pg_restore", "mkdir"]
env = ["DATABASE_URL"]
[timeouts]
call = "2s"
[limits]
memory_mb = 32
{extra}"#
        );
        std::fs::write(self.root.join("deploy.toml"), text).unwrap();
    }

    fn host(&self, args: &[&str]) -> Run {
        self.host_with(args, |_| {})
    }

    fn host_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Run {
        let mut cmd = Command::new(host_bin());
        cmd.args(args)
            .current_dir(&self.root)
            .env("DATABASE_URL", &self.pg.url)
            .env("HOST_TEST_SECRET", "s3cr3t-value-never-shown")
            .env("HOST_CACHE_DIR", testkit::target_dir().join("testkit/component-cache"))
            .env_remove("CI");
        adjust(&mut cmd);
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn deploy(&self) -> Run {
        self.host(&["deploy", "--env", "staging", "--rev", "r1", "--output", "json"])
    }

    /// Project files and their contents, except what a deploy legitimately writes
    /// (the backup, the state store).
    fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "backups" || name == ".host" || e.path().is_dir() {
                continue;
            }
            out.push((name, std::fs::read(e.path()).unwrap_or_default()));
        }
        out.sort();
        out
    }
}

/// Deploy with a misbehaviour after the backup and a real change; return the run and the
/// deploy phase's error. Asserts what holds for every case: rolled back (exit 10), the
/// failure recorded in the state store, database and files as before.
fn misbehaving_deploy(what: &str) -> Option<(Run, String)> {
    let p = Project::start()?;
    p.configure(what, "deploy", "");
    let db = p.pg.data_checksum().unwrap();
    let files = p.files();
    let run = p.deploy();
    assert_eq!(run.code, 10, "exit 10 = failed and rolled back:\n{}", run.text());
    let failed = run.events_of("phase_finished").into_iter().find(|e| e["ok"] == false).expect("a failed phase");
    assert_eq!(failed["phase"], "deploy", "{}", run.text());
    let detail = failed["detail"].as_str().unwrap().to_string();

    assert_eq!(p.pg.data_checksum().unwrap(), db, "the database is as before (the marker table is gone)");
    assert_eq!(p.files(), files, "project files are as before");
    assert!(run.events_of("backup_made").len() == 1, "the backup came first");
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&p.host(&["history", "--env", "staging", "--output", "json"]).stdout).unwrap();
    assert_eq!(history[0]["status"], "rolled_back");
    let deploy_phase = history[0]["phases"].as_array().unwrap().iter().find(|ph| ph["phase"] == "deploy").unwrap();
    assert_eq!(deploy_phase["outcome"], "failed");
    assert_eq!(deploy_phase["detail"].as_str().unwrap(), detail, "the store records the same error");
    assert!(run.events_of("rollback_finished").iter().any(|e| e["ok"] == true));
    assert!(!run.stdout.contains("s3cr3t-value-never-shown") && !run.stderr.contains("s3cr3t-value-never-shown"));
    Some((run, detail))
}

#[test]
fn a_well_behaved_run_of_the_same_plugin_succeeds() {
    let Some(p) = Project::start() else { return };
    p.configure("", "deploy", "");
    let run = p.deploy();
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(p.pg.psql("SELECT count(*) FROM adversary_marker").unwrap(), "1");
}

#[test]
fn an_infinite_loop_hits_the_call_deadline() {
    let started = Instant::now();
    let Some((run, detail)) = misbehaving_deploy("loop") else { return };
    assert_eq!(detail, "plugin `adversary` exceeded its 2s execution deadline in `deploy`");
    let deploy = run.events_of("phase_finished").into_iter().find(|e| e["phase"] == "deploy").unwrap();
    let took = deploy["duration"].as_u64().unwrap();
    // The deadline counts Wasm time only; the psql before the loop is host time.
    let psql: u64 = run.events_of("command_finished").iter().filter(|c| c["argv"][0] == "psql").map(|c| c["duration"].as_u64().unwrap()).take(1).sum();
    let overshoot = took.saturating_sub(2000 + psql);
    println!("deadline overshoot: {overshoot} ms (phase {took} ms, psql {psql} ms)");
    assert!(overshoot < 500, "the deadline fired {overshoot} ms late");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let Some((_, detail)) = misbehaving_deploy("memory") else { return };
    assert_eq!(detail, "plugin `adversary` exceeded its memory limit of 32 MiB in `deploy`");
}

#[test]
fn an_ungranted_program_is_refused() {
    let Some((_, detail)) = misbehaving_deploy("run-ungranted") else { return };
    assert_eq!(
        detail,
        "capability denied: plugin `adversary` may not run `curl`: not granted (add it to grants.programs in deploy.toml) (hint: grant it in deploy.toml under [grants])"
    );
}

#[test]
fn an_ungranted_host_is_refused() {
    let Some((_, detail)) = misbehaving_deploy("http-ungranted") else { return };
    assert!(detail.contains("plugin `adversary` may not reach `127.0.0.1:9`: not granted (add it to grants.http in deploy.toml)"), "{detail}");
}

#[test]
fn reading_outside_the_project_is_refused() {
    let Some((_, detail)) = misbehaving_deploy("read-passwd") else { return };
    assert!(detail.contains("plugin `adversary` may not read `../../etc/passwd`: it leaves the project root (`..`)"), "{detail}");
    let Some((_, detail)) = misbehaving_deploy("read-symlink") else { return };
    assert!(detail.contains("plugin `adversary` may not read `escape`: it resolves outside the project root (a symlink to /etc/passwd)"), "{detail}");
    assert!(!detail.contains("root:x:0:0"));
}

#[test]
fn an_ungranted_secret_is_not_handed_over() {
    let Some((run, detail)) = misbehaving_deploy("secret-env") else { return };
    assert!(detail.contains("plugin `adversary` may not read environment variable `HOST_TEST_SECRET`: not granted (add it to grants.env in deploy.toml)"), "{detail}");
    assert!(!run.stdout.contains("got the secret"));
}

#[test]
fn a_huge_return_value_is_refused() {
    let Some((run, detail)) = misbehaving_deploy("huge-string") else { return };
    assert!(detail.starts_with("plugin `adversary` returned 83886"), "{detail}");
    assert!(detail.ends_with("bytes from `deploy`; the limit is 1048576 bytes (limits.output_kb)"), "{detail}");
    assert!(run.stdout.len() < 200_000, "nothing huge reached the output ({} bytes)", run.stdout.len());
}

#[test]
fn a_trap_after_the_backup_is_rolled_back_in_a_fresh_instance() {
    let Some((_, detail)) = misbehaving_deploy("trap") else { return };
    assert!(detail.starts_with("plugin `adversary` crashed in `deploy`:"), "{detail}");
}

#[test]
fn a_refusal_in_preflight_changes_nothing_and_takes_no_backup() {
    let Some(p) = Project::start() else { return };
    p.configure("run-ungranted", "preflight", "");
    let db = p.pg.data_checksum().unwrap();
    let run = p.deploy();
    assert_eq!(run.code, 3, "exit 3 = failed before any change:\n{}", run.text());
    assert!(run.events_of("backup_made").is_empty());
    assert!(!p.root.join("backups").exists());
    assert_eq!(p.pg.data_checksum().unwrap(), db);
}

// --- Vetting before anything runs ---

#[test]
fn an_unpinned_plugin_is_refused_under_locked_and_in_ci() {
    let Some(p) = Project::start() else { return };
    p.configure("", "deploy", "");
    let run = p.host(&["deploy", "--env", "staging", "--rev", "r1", "--locked"]);
    assert_eq!(run.code, 6, "exit 6 = plugin refused:\n{}", run.text());
    assert!(run.stderr.contains("--locked needs") && run.stderr.contains("host.lock"), "{}", run.stderr);

    // Pinned, it runs; under CI=true --locked is implied.
    let lock = p.host(&["plugins", "lock"]);
    assert_eq!(lock.code, 0, "{}", lock.text());
    let text = std::fs::read_to_string(p.root.join("host.lock")).unwrap();
    let digest = testkit_sha256(&std::fs::read(p.root.join("plugins/adversary.wasm")).unwrap());
    assert!(text.contains(&format!("sha256 = \"{digest}\"")) && text.contains("contract = \"1.0.0\""), "{text}");
    let run = p.host_with(&["deploy", "--env", "staging", "--rev", "r1"], |c| {
        c.env("CI", "true");
    });
    assert_eq!(run.code, 0, "{}", run.text());

    // Another plugin name, not in the lock: refused in CI before it runs.
    std::fs::copy(p.root.join("plugins/adversary.wasm"), p.root.join("plugins/other.wasm")).unwrap();
    let run = p.host_with(&["deploy", "--plugin", "plugins/other.wasm", "--env", "staging", "--rev", "r2"], |c| {
        c.env("CI", "true");
    });
    assert_eq!(run.code, 6, "{}", run.text());
    assert!(run.stderr.contains("plugin `other` is not pinned") && run.stderr.contains("because CI=true"), "{}", run.stderr);
}

#[test]
fn a_plugin_whose_digest_changed_is_refused() {
    let Some(p) = Project::start() else { return };
    p.configure("", "deploy", "");
    assert_eq!(p.host(&["plugins", "lock", "plugins/adversary.wasm"]).code, 0);
    tamper(&p.root.join("plugins/adversary.wasm"));
    let db = p.pg.data_checksum().unwrap();
    let run = p.host(&["deploy", "--env", "staging", "--rev", "r1", "--locked"]);
    assert_eq!(run.code, 6, "{}", run.text());
    assert!(run.stderr.contains("refusing to run a plugin that changed since it was vetted"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    assert_eq!(p.pg.data_checksum().unwrap(), db);
    assert!(!p.root.join(".host").exists(), "refused before even opening the state store");
}

#[test]
fn a_bad_signature_is_refused_and_a_good_one_accepted() {
    let Some(p) = Project::start() else { return };
    let key = p.root.join("signing.key");
    let keygen = p.host(&["plugins", "keygen", "--out", key.to_str().unwrap(), "--output", "json"]);
    assert_eq!(keygen.code, 0, "{}", keygen.text());
    let public: serde_json::Value = serde_json::from_str(&keygen.stdout).unwrap();
    let public = public["public_key"].as_str().unwrap().to_string();
    p.configure("", "deploy", &format!("[trust]\nkeys = [\"{public}\"]\nrequire_signature = true\n"));

    let unsigned = p.deploy();
    assert_eq!(unsigned.code, 6, "{}", unsigned.text());
    assert!(unsigned.stderr.contains("has no signature"), "{}", unsigned.stderr);

    let sign = p.host(&["plugins", "sign", "--key", key.to_str().unwrap(), "plugins/adversary.wasm"]);
    assert_eq!(sign.code, 0, "{}", sign.text());
    let verify = p.host(&["plugins", "verify", "plugins/adversary.wasm"]);
    assert_eq!(verify.code, 0, "{}", verify.text());
    assert!(verify.stdout.contains(&format!("valid signature by trusted key {public}")));
    let files = p.files();
    assert_eq!(p.deploy().code, 0, "a good signature is accepted");

    tamper(&p.root.join("plugins/adversary.wasm"));
    let run = p.deploy();
    assert_eq!(run.code, 6, "{}", run.text());
    assert!(run.stderr.contains("bad signature: the signature does not match the file"), "{}", run.stderr);
    let _ = files;
}

#[test]
fn a_plugin_for_an_unknown_contract_major_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(test_plugin("future-major"), dir.path().join("future.wasm")).unwrap();
    let out = Command::new(host_bin())
        .args(["plugins", "inspect", "./future.wasm"])
        .current_dir(dir.path())
        .env("HOST_CACHE_DIR", testkit::target_dir().join("testkit/component-cache"))
        .env_remove("CI")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plugin is built for deploy:plugin@2.0.0; this host loads deploy:plugin@1.x"), "{stderr}");
}

/// Flip one byte in the middle of a file.
fn tamper(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn testkit_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
