//! The command line on bad input and on the documented exit codes, with the real binary and the
//! real plugin component (no database needed).

mod common;

use common::{host_bin, plugin_dir};
use std::process::Command;

fn host_in(dir: &std::path::Path, args: &[&str]) -> common::Run {
    let out = Command::new(host_bin())
        .args(args)
        .current_dir(dir)
        .env("HOST_PLUGIN_DIR", plugin_dir(&["render-alembic"]))
        .env("HOST_CACHE_DIR", testkit::target_dir().join("testkit/component-cache"))
        .env_remove("CI")
        .output()
        .unwrap();
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_malformed_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        "[plugin]\nname = \"render-alembic\"\n\n[grants]\nprograms = [\"git\"]\nhttp_hosts = [\"x\"]\n",
    )
    .unwrap();
    let run = host_in(dir.path(), &["deploy", "--env", "staging", "--rev", "v1"]);
    assert_eq!(run.code, 2, "exit 2 = bad config or usage:\n{}", run.text());
    assert!(run.stderr.contains("deploy.toml:6:1: grants.http_hosts: unknown field `http_hosts`"), "{}", run.stderr);
    // Nothing was created next to it: not even the state store.
    assert!(!dir.path().join(".host").exists());
}

#[test]
fn a_bad_value_is_located_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        "[plugin]\nname = \"render-alembic\"\n\n[timeouts]\ndeploy = \"forever\"\n",
    )
    .unwrap();
    let run = host_in(dir.path(), &["status", "--env", "staging"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("deploy.toml:5:"), "{}", run.stderr);
    assert!(run.stderr.contains("timeouts.deploy"), "{}", run.stderr);
}

#[test]
fn an_unknown_plugin_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.toml"), "[plugin]\nname = \"nope\"\n").unwrap();
    let run = host_in(dir.path(), &["deploy", "--env", "staging", "--rev", "v1"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("unknown plugin `nope`"), "{}", run.stderr);
    // Every built plugin is listed (in name order), whichever others exist beside it.
    let installed = run.stderr.split("installed: ").nth(1).unwrap_or_default();
    assert!(installed.contains("render-alembic"), "{}", run.stderr);

    let run = host_in(dir.path(), &["deploy", "--plugin", "./missing.wasm", "--env", "staging"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("missing.wasm does not exist"), "{}", run.stderr);
}

#[test]
fn a_file_that_is_not_a_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bogus.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let run = host_in(dir.path(), &["plugins", "inspect", "./bogus.wasm"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("not a deploy plugin") || run.stderr.contains("not a valid component"), "{}", run.stderr);
}

#[test]
fn an_unknown_environment_is_named_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.toml"), "[plugin]\nname = \"render-alembic\"\n[environments.staging]\n[environments.production]\n").unwrap();
    let run = host_in(dir.path(), &["deploy", "--env", "prod", "--rev", "v1"]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("no environment `prod` (known: production, staging)"), "{}", run.stderr);
}

#[test]
fn plugins_inspect_shows_requested_against_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.toml"), "[plugin]\nname = \"render-alembic\"\n[grants]\nprograms = [\"git\"]\n").unwrap();
    let run = host_in(dir.path(), &["plugins", "inspect", "render-alembic", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["name"], "render-alembic");
    assert_eq!(doc["contract"], "1.0.0");
    assert_eq!(doc["digest"].as_str().unwrap().len(), 64);
    let caps = doc["capabilities"].as_array().unwrap();
    let granted = |name: &str| caps.iter().find(|c| c["capability"] == name).map(|c| c["granted"] == true);
    assert_eq!(granted("run:git"), Some(true));
    assert_eq!(granted("run:alembic"), Some(false));
}

#[test]
fn migrations_check_reports_findings_as_json_and_fails_on_destructive() {
    let dir = tempfile::tempdir().unwrap();
    let versions = dir.path().join("versions");
    std::fs::create_dir(&versions).unwrap();
    std::fs::write(
        versions.join("0007_drop_legacy.py"),
        r#""""drop legacy table"""
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade():
    # op.drop_table("only_a_comment")
    op.drop_table("legacy_events")
    op.execute("DELETE FROM sessions")


def downgrade():
    op.drop_column("users", "rolled_back_column")
"#,
    )
    .unwrap();
    std::fs::write(
        versions.join("0008_add_column.py"),
        "revision = \"0008\"\ndown_revision = \"0007\"\nfrom alembic import op\nimport sqlalchemy as sa\n\ndef upgrade():\n    op.add_column(\"users\", sa.Column(\"nick\", sa.String(), nullable=True))\n\ndef downgrade():\n    op.drop_column(\"users\", \"nick\")\n",
    )
    .unwrap();
    let run = host_in(dir.path(), &["migrations", "check", "--plugin", "render-alembic", "versions", "--output", "json"]);
    assert_eq!(run.code, 1, "exit 1 = destructive findings:\n{}", run.text());
    let findings: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let destructive: Vec<(String, u64, String)> = findings
        .iter()
        .filter(|f| f["severity"] == "destructive")
        .map(|f| (f["file"].as_str().unwrap().to_string(), f["line"].as_u64().unwrap(), f["rule"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        destructive,
        vec![
            ("versions/0007_drop_legacy.py".to_string(), 10, "drop-table".to_string()),
            ("versions/0007_drop_legacy.py".to_string(), 11, "execute-delete-all".to_string()),
        ]
    );
    assert!(findings.iter().all(|f| f["reason"].as_str().is_some_and(|r| !r.is_empty())));
    assert!(!findings.iter().any(|f| f["file"].as_str().unwrap().contains("0008") && f["severity"] != "info"));

    // A clean migration alone: exit 0.
    let run = host_in(dir.path(), &["migrations", "check", "--plugin", "render-alembic", "versions/0008_add_column.py"]);
    assert_eq!(run.code, 0, "{}", run.text());
}
