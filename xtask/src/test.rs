//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! The end-to-end suites load the real plugin components, so they are built first; then every
//! workspace test runs (with cargo-nextest when installed, which runs each test in its own
//! process, else `cargo test`). Extra arguments go to the test runner.

use anyhow::{Result, bail};
use std::path::Path;
use std::process::Command;

pub fn run(root: &Path, extra: &[String]) -> Result<()> {
    crate::plugins::build_plugins(&crate::plugins::Options::all(root))?;
    let cargo = env!("CARGO");
    // Doc examples first: nextest does not run them.
    let doc = Command::new(cargo)
        .args(["test", "--workspace", "--doc"])
        .current_dir(root)
        .status()?;
    if !doc.success() {
        bail!("doc tests failed");
    }
    let nextest = Command::new(cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = Command::new(cargo);
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    let status = cmd.args(extra).current_dir(root).status()?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}
