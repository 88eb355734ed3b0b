//! Real services for the end-to-end suites: a throwaway PostgreSQL server ([`Postgres`]), a
//! cached Python virtualenv ([`PythonEnv`]) and the example app's git history
//! ([`make_alembic_repo`]).
//!
//! The suites test deploys against the real thing rather than mocks, so what they need must be
//! installed (`.ci/install-deps` does it on Debian). A test checks first and skips when a
//! service is missing, through [`require`], which turns the skip into a failure in CI:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use testkit::{Postgres, require};
//!
//! if !require("PostgreSQL", Postgres::available()) {
//!     return Ok(());
//! }
//! let pg = Postgres::start()?;
//! assert_eq!(pg.psql("select 1")?, "1");
//! # Ok(())
//! # }
//! ```

mod docker;
mod postgres;
mod python;
mod rails;
mod sha256;
mod streamlit;

use std::env;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub use docker::{
    Container, ContainerSpec, DOCKER_NEEDS, container_exists, docker_available, rootfs_image,
};
pub use postgres::Postgres;
pub use python::PythonEnv;
pub use rails::{RAILS_NEEDS, make_rails_repo, rails_available, secret_key_base};
pub use streamlit::{clone_checkout, make_streamlit_origin, make_streamlit_repo, quiet_git};

/// Whether a test may go on: true when `found`. Otherwise prints why the test is skipped and
/// returns false, except when the environment has `CI=true`: there it panics, because a CI
/// run that silently skips its end-to-end suites proves nothing.
pub fn require(what: &str, found: bool) -> bool {
    if found {
        return true;
    }
    let ci = env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if ci {
        panic!(
            "{what} is required but not available, and CI=true forbids skipping \
             (see .ci/install-deps)"
        );
    }
    eprintln!("SKIPPED: {what} is not available (install it, e.g. with .ci/install-deps)");
    false
}

/// The workspace root: the nearest directory above this crate whose `Cargo.toml` has a
/// `[workspace]` table.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|line| line.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace Cargo.toml above {}", manifest_dir.display()))
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process can take it before
/// the caller binds it, so callers that start servers should retry on "address in use".
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// The full path of `program` when it is on PATH (or in one of `extra` directories, for the
/// sbin programs that a non-login PATH may lack).
pub fn find_program(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Builds the example app's git history at `dest` (which must not exist) by running
/// `examples/alembic-app/make-repo`: tags `v1`..`v5`, work tree detached at `v1`.
pub fn make_alembic_repo(dest: &Path) -> Result<()> {
    let script = workspace_root().join("examples/alembic-app/make-repo");
    let output = Command::new("bash")
        .arg(&script)
        .arg(dest)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            script.display(),
            dest.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs `command` to completion and returns its stdout, trimmed; a non-zero exit becomes an
/// error that names `what` and carries the command's stderr.
fn run(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("{what}: cannot run {command:?}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let detail = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        bail!("{what} failed ({}): {}", output.status, detail.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("tests/testkit"), "{}", root.display());
    }

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }

    #[test]
    fn require_passes_when_found_and_skips_or_fails_when_not() {
        assert!(require("something present", true));
        let ci = env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let missing = std::panic::catch_unwind(|| require("something missing", false));
        match missing {
            Ok(go_on) => assert!(!ci && !go_on),
            Err(_) => assert!(ci, "require panicked outside CI"),
        }
    }

    #[test]
    fn make_alembic_repo_builds_the_tagged_history() {
        if !require("git", find_program("git", &[]).is_some()) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("app");
        make_alembic_repo(&repo).unwrap();

        let git = |args: &[&str]| {
            let mut command = Command::new("git");
            command.arg("-C").arg(&repo).args(args);
            run(&mut command, "git")
        };
        assert_eq!(git(&["tag", "--list"]).unwrap(), "v1\nv2\nv3\nv4\nv5");
        // v4 branches off v2: it must not contain v3, or its migrations would not be a branch.
        assert!(git(&["merge-base", "--is-ancestor", "v2", "v4"]).is_ok());
        assert!(git(&["merge-base", "--is-ancestor", "v3", "v4"]).is_err());
        assert_eq!(
            git(&["rev-parse", "HEAD"]).unwrap(),
            git(&["rev-parse", "v1^{commit}"]).unwrap()
        );
        assert_eq!(git(&["status", "--porcelain"]).unwrap(), "");
        assert!(
            repo.join("migrations/versions/0001_create_users.py")
                .is_file()
        );
        assert!(
            !repo
                .join("migrations/versions/0002_notes_and_display_name.py")
                .exists()
        );

        // A second build must refuse to overwrite.
        assert!(make_alembic_repo(&repo).is_err());
    }
}
