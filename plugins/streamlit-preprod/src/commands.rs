//! Every command the plugin runs, built as plain data and unit-tested by comparing argv.
//!
//! What runs must be exactly what CI tested, so the code moves with `git reset --hard <SHA>` to
//! a full commit id, never with `git pull` (which takes whatever the branch holds by then).

use plugin_sdk::Command;
use plugin_sdk::cmd::{change, from_argv, read};

/// Fetching can be slow on a big repository; it is still bounded.
const FETCH_TIMEOUT_MS: u64 = 120_000;

/// Exits 0 with the URL when the checkout has `remote`, non-zero otherwise.
pub fn git_remote_url(remote: &str) -> Command {
    read(
        "git",
        &["remote", "get-url", remote],
        "does the checkout have a remote to fetch from",
    )
}

/// Updates the remote-tracking refs only: what runs does not change, so it runs under
/// `--dry-run` too, and the target resolves against what the remote has now.
pub fn git_fetch(remote: &str) -> Command {
    read(
        "git",
        &["fetch", "--quiet", "--prune", "--tags", remote],
        "fetch the commits to deploy (never pull)",
    )
    .timeout_ms(FETCH_TIMEOUT_MS)
}

/// Prints the commit a remote-tracking branch points to, or nothing (exit 0) when the remote
/// has no such branch.
pub fn git_remote_branch(remote: &str, branch: &str) -> Command {
    let pattern = format!("refs/remotes/{remote}/{branch}");
    read(
        "git",
        &["for-each-ref", "--format=%(objectname)", &pattern],
        "the remote's branch, as just fetched",
    )
}

/// Prints the full commit id of `rev`, or fails quietly when it names no commit.
pub fn git_verify(rev: &str) -> Command {
    let spec = format!("{rev}^{{commit}}");
    read(
        "git",
        &["rev-parse", "--verify", "--quiet", &spec],
        "resolve the revision to an exact commit",
    )
}

pub fn git_head() -> Command {
    read(
        "git",
        &["rev-parse", "--verify", "--quiet", "HEAD"],
        "the commit checked out now",
    )
}

/// `subject<TAB>author` of a commit, for the plan and the notifications.
pub fn git_subject(sha: &str) -> Command {
    read(
        "git",
        &["log", "-1", "--format=%s%x09%an", sha],
        "describe the commit",
    )
}

/// Tracked files changed in the checkout: `git reset --hard` discards them.
pub fn git_dirty() -> Command {
    read(
        "git",
        &["status", "--porcelain", "--untracked-files=no"],
        "look for local changes reset would discard",
    )
}

pub fn git_reset(sha: &str) -> Command {
    change(
        "git",
        &["reset", "--hard", "--quiet", sha],
        "check out the exact commit (git reset --hard SHA)",
    )
}

pub fn restart(argv: &[String], timeout_ms: Option<u64>) -> Option<Command> {
    let cmd = from_argv(argv, "restart the app on the new code", true)?;
    Some(match timeout_ms {
        Some(ms) => cmd.timeout_ms(ms),
        None => cmd,
    })
}

pub fn mkdir(dir: &str) -> Command {
    change("mkdir", &["-p", dir], "create the backup directory")
}

/// `backups/preprod-<run>.tar.gz`: one archive per deployment, named by environment and run.
pub fn backup_path(dir: &str, environment: &str, deployment_id: &str) -> String {
    let run: String = deployment_id.chars().take(12).collect();
    format!("{dir}/{environment}-{run}.tar.gz")
}

pub fn tar_create(archive: &str, paths: &[String]) -> Command {
    let mut args = vec!["-czf", archive, "--"];
    args.extend(paths.iter().map(String::as_str));
    change(
        "tar",
        &args,
        "archive what the settings name before anything changes",
    )
}

/// Lists the archive: proof it was written whole and can be read back.
pub fn tar_list(archive: &str) -> Command {
    read("tar", &["-tzf", archive], "check the backup reads back")
}

pub fn tar_extract(archive: &str) -> Command {
    change("tar", &["-xzf", archive], "restore the backed-up paths")
}

/// `abcdef1234` for a full SHA; anything else unchanged.
pub fn short(rev: &str) -> &str {
    if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        &rev[..10]
    } else {
        rev
    }
}

/// Counts `git status --porcelain` lines.
pub fn dirty_count(porcelain: &str) -> usize {
    porcelain.lines().filter(|l| !l.trim().is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_moves_by_reset_to_an_exact_commit_and_only_that_mutates() {
        assert_eq!(
            git_reset("abc").argv(),
            ["git", "reset", "--hard", "--quiet", "abc"]
        );
        assert!(git_reset("abc").mutates);
        assert_eq!(
            git_fetch("origin").argv(),
            ["git", "fetch", "--quiet", "--prune", "--tags", "origin"]
        );
        assert!(
            !git_fetch("origin").mutates,
            "fetching does not change what runs"
        );
        assert_eq!(
            git_verify("v2").argv(),
            ["git", "rev-parse", "--verify", "--quiet", "v2^{commit}"]
        );
        assert_eq!(
            git_remote_branch("origin", "main").argv(),
            [
                "git",
                "for-each-ref",
                "--format=%(objectname)",
                "refs/remotes/origin/main"
            ]
        );
        for c in [
            git_remote_url("origin"),
            git_verify("x"),
            git_head(),
            git_subject("x"),
            git_dirty(),
            tar_list("a"),
        ] {
            assert!(!c.mutates, "{:?}", c.argv());
        }
    }

    #[test]
    fn restart_and_backup_commands() {
        let argv: Vec<String> = [
            "docker",
            "compose",
            "-f",
            "docker-compose-preprod.yml",
            "restart",
            "app",
        ]
        .map(String::from)
        .to_vec();
        let r = restart(&argv, Some(30_000)).unwrap();
        assert_eq!(r.argv(), argv);
        assert!(r.mutates && r.timeout_ms == Some(30_000));
        assert!(restart(&[], None).is_none());
        let path = backup_path("backups", "production", "0123456789abcdef0123");
        assert_eq!(path, "backups/production-0123456789ab.tar.gz");
        assert_eq!(
            tar_create(&path, &["data".into(), ".streamlit/secrets.toml".into()]).argv(),
            [
                "tar",
                "-czf",
                &path,
                "--",
                "data",
                ".streamlit/secrets.toml"
            ]
        );
        assert_eq!(tar_extract(&path).argv(), ["tar", "-xzf", &path]);
    }

    #[test]
    fn helpers() {
        assert_eq!(
            short("0123456789abcdef0123456789abcdef01234567"),
            "0123456789"
        );
        assert_eq!(short("v2"), "v2");
        assert_eq!(dirty_count(" M app.py\n M README.md\n"), 2);
        assert_eq!(dirty_count(""), 0);
    }
}
