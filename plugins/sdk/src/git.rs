//! Git, for stacks whose code is a git checkout: resolve a revision to the exact commit, read
//! the target's files without checking it out, check it out.

use crate::{Command, cmd};

/// `git rev-parse --verify <rev>^{commit}`: a tag, branch or short SHA to the full commit SHA.
/// `--end-of-options` keeps a revision named like an option from being read as one.
pub fn resolve(rev: &str) -> Command {
    let spec = format!("{rev}^{{commit}}");
    cmd::read("git", &["rev-parse", "--verify", "--end-of-options", &spec], "resolve the revision to a commit")
}

pub fn head() -> Command {
    cmd::read("git", &["rev-parse", "HEAD"], "find the checked-out commit")
}

/// Tracked files with local edits: `checkout --force` would discard them.
pub fn dirty() -> Command {
    cmd::read("git", &["status", "--porcelain", "--untracked-files=no"], "look for local edits the checkout would discard")
}

/// Files under `dir` in a commit that is not checked out (paths relative to the project root).
pub fn ls_tree(sha: &str, dir: &str) -> Command {
    let dir = format!("{dir}/");
    cmd::read("git", &["ls-tree", "--name-only", sha, "--", &dir], "list the target's migration files")
}

/// `git show <sha>:./<path>`: the `./` makes the path relative to the project root, which may
/// be a subfolder of the repository.
pub fn show(sha: &str, path: &str) -> Command {
    let spec = format!("{sha}:./{path}");
    cmd::read("git", &["show", &spec], "read a migration file of the target")
}

pub fn checkout(sha: &str) -> Command {
    cmd::change("git", &["checkout", "--force", "--detach", sha], "check out the revision")
}

/// Number of tracked files `git status --porcelain` reports as edited.
pub fn dirty_count(porcelain: &str) -> usize {
    porcelain.lines().filter(|l| !l.trim().is_empty()).count()
}

/// First 7 characters of a SHA, for messages.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_only_except_checkout() {
        assert_eq!(resolve("v2").argv(), ["git", "rev-parse", "--verify", "--end-of-options", "v2^{commit}"]);
        assert_eq!(show("abc", "db/m.rb").argv(), ["git", "show", "abc:./db/m.rb"]);
        assert!(![resolve("x"), head(), dirty(), ls_tree("a", "b"), show("a", "b")].iter().any(|c| c.mutates));
        assert!(checkout("abc").mutates);
        assert_eq!(dirty_count(" M a.py\nM  b.py\n"), 2);
        assert_eq!(short("0123456789"), "0123456");
    }
}
