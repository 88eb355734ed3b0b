//! The Rails example app (`examples/rails-app`) as a git checkout that runs: Ruby, Rails, pg
//! and WEBrick come from the machine (Debian's `ruby-rails ruby-pg ruby-webrick`, see
//! `.ci/install-deps`), resolved offline with `bundle install --local`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{find_program, run, workspace_root};

/// What the Rails suites need, for [`crate::require`]'s message.
pub const RAILS_NEEDS: &str = "Ruby on Rails (ruby, bundle, and the rails, pg and webrick gems: apt-get install ruby-rails ruby-pg ruby-webrick)";

/// Whether `ruby` and `bundle` are on PATH and load the gems the example app uses.
pub fn rails_available() -> bool {
    find_program("ruby", &[]).is_some()
        && find_program("bundle", &[]).is_some()
        && Command::new("ruby")
            .args([
                "-e",
                "require 'rails'; require 'active_record'; require 'pg'; require 'webrick'",
            ])
            .output()
            .is_ok_and(|out| out.status.success())
}

/// Builds the example app's git history at `dest` (which must not exist) with
/// `examples/rails-app/make-repo` (tags `v1`..`v4`, work tree detached at `v1`), then resolves
/// its Gemfile against the installed gems (`bundle install --local`, which writes the
/// uncommitted Gemfile.lock), so the first `bin/rails` of a test does not do it.
pub fn make_rails_repo(dest: &Path) -> Result<()> {
    let script = workspace_root().join("examples/rails-app/make-repo");
    run(
        Command::new("bash").arg(&script).arg(dest),
        &format!("{} {}", script.display(), dest.display()),
    )?;
    let mut bundle = Command::new("bundle");
    bundle
        .args(["install", "--local", "--quiet"])
        .current_dir(dest)
        // A developer's bundler config must not send gems elsewhere or require a frozen lock.
        .env("BUNDLE_IGNORE_CONFIG", "1")
        .env("BUNDLE_GEMFILE", dest.join("Gemfile"));
    run(
        &mut bundle,
        "bundle install --local (the gems come from ruby-rails, ruby-pg, ruby-webrick)",
    )
    .context("resolving the example app's Gemfile offline")?;
    if !dest.join("Gemfile.lock").is_file() {
        bail!(
            "bundle install --local wrote no Gemfile.lock in {}",
            dest.display()
        );
    }
    Ok(())
}

/// A `SECRET_KEY_BASE` for the app's production environment: 64 hex digits, different per call.
pub fn secret_key_base() -> String {
    let seed = format!(
        "{:?}{}{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    let first = crate::sha256::hex(seed.as_bytes());
    first.clone() + &crate::sha256::hex(first.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require;

    #[test]
    fn make_rails_repo_builds_the_tagged_history_and_resolves_the_gems() {
        if !require(RAILS_NEEDS, rails_available()) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("app");
        make_rails_repo(&repo).unwrap();
        let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(&repo).args(args), "git");
        assert_eq!(git(&["tag", "--list"]).unwrap(), "v1\nv2\nv3\nv4");
        // v4 branches off v2: it must not contain v3's migration.
        assert!(git(&["merge-base", "--is-ancestor", "v3", "v4"]).is_err());
        assert_eq!(
            git(&["rev-parse", "HEAD"]).unwrap(),
            git(&["rev-parse", "v1^{commit}"]).unwrap()
        );
        // Gemfile.lock is ignored: the checkout stays clean for `git checkout --force`.
        assert_eq!(git(&["status", "--porcelain"]).unwrap(), "");
        assert!(
            repo.join("db/migrate/20250106090000_create_users.rb")
                .is_file()
        );
        assert_eq!(secret_key_base().len(), 128);
        assert!(
            make_rails_repo(&repo).is_err(),
            "a second build must refuse to overwrite"
        );
    }
}
