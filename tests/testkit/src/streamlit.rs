//! The Streamlit example's git history, as a deploy machine sees it: a bare `origin` that CI
//! and developers push to, and checkouts cloned from it that the deploy host moves with
//! `git fetch` + `git reset --hard SHA`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{run, workspace_root};

/// Builds `examples/streamlit-app`'s history at `dest` (which must not exist) with its
/// `make-repo`: tags `v1`..`v4` on `main`, work tree detached at `v1`. With `config`, that file
/// is committed as `deploy.toml` instead of the example's.
pub fn make_streamlit_repo(dest: &Path, config: Option<&Path>) -> Result<()> {
    let script = workspace_root().join("examples/streamlit-app/make-repo");
    let output = Command::new("bash")
        .arg(&script)
        .arg(dest)
        .args(config)
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

/// `origin` as a bare clone of the example's history (see [`make_streamlit_repo`]), at `dest`.
pub fn make_streamlit_origin(dest: &Path, config: Option<&Path>) -> Result<()> {
    let work = dest.with_extension("src");
    make_streamlit_repo(&work, config)?;
    run(
        Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(&work)
            .arg(dest)
            .envs(quiet_git()),
        "git clone --bare",
    )?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(())
}

/// A checkout of `origin` at `dest`, detached at `rev`, as set up once on a deploy machine.
pub fn clone_checkout(origin: &Path, dest: &Path, rev: &str) -> Result<()> {
    run(
        Command::new("git")
            .args(["clone", "--quiet"])
            .arg(origin)
            .arg(dest)
            .envs(quiet_git()),
        "git clone",
    )?;
    run(
        Command::new("git")
            .arg("-C")
            .arg(dest)
            .args(["checkout", "--quiet", "--detach", rev])
            .envs(quiet_git()),
        "git checkout",
    )?;
    Ok(())
}

/// No user or system git config: the same behaviour on every machine.
pub fn quiet_git() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_AUTHOR_NAME", "Example Author"),
        ("GIT_AUTHOR_EMAIL", "author@example.invalid"),
        ("GIT_COMMITTER_NAME", "Example Author"),
        ("GIT_COMMITTER_EMAIL", "author@example.invalid"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{find_program, require};

    #[test]
    fn a_checkout_of_origin_sits_at_the_asked_revision_with_every_tag() {
        if !require("git", find_program("git", &[]).is_some()) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let origin = tmp.path().join("origin.git");
        let config = tmp.path().join("test.toml");
        std::fs::write(&config, "[project]\nname = \"t\"\n").unwrap();
        make_streamlit_origin(&origin, Some(&config)).unwrap();
        let checkout = tmp.path().join("preprod");
        clone_checkout(&origin, &checkout, "v2").unwrap();
        let git = |args: &[&str]| {
            let mut c = Command::new("git");
            c.arg("-C").arg(&checkout).args(args);
            run(&mut c, "git").unwrap()
        };
        assert_eq!(git(&["tag", "--list"]), "v1\nv2\nv3\nv4");
        assert_eq!(
            git(&["rev-parse", "HEAD"]),
            git(&["rev-parse", "v2^{commit}"])
        );
        assert_eq!(git(&["remote"]), "origin");
        assert!(checkout.join("bin/restart").is_file() && checkout.join("deploy.toml").is_file());
        assert!(!tmp.path().join("origin.src").exists());
        assert_eq!(
            std::fs::read_to_string(checkout.join("deploy.toml")).unwrap(),
            "[project]\nname = \"t\"\n"
        );
    }
}
