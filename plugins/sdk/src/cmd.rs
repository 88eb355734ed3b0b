//! Commands as plain data.
//!
//! A plugin decides *what* to run; the host decides *how* (grants, timeouts, dry-run, records).
//! Building a [`Command`] is pure, so command builders are unit-tested by comparing argv lists.

use crate::{Command, CommandOutput};

/// A command that only reads: it runs for real under `--dry-run`.
pub fn read(program: &str, args: &[&str], purpose: &str) -> Command {
    build(program, args, purpose, false)
}

/// A command that changes something: under `--dry-run` it is listed in the plan, not run.
pub fn change(program: &str, args: &[&str], purpose: &str) -> Command {
    build(program, args, purpose, true)
}

/// Same as [`change`]/[`read`] from an argv vector (first element is the program).
pub fn from_argv(argv: &[String], purpose: &str, mutates: bool) -> Option<Command> {
    let (program, args) = argv.split_first()?;
    Some(Command {
        program: program.clone(),
        args: args.to_vec(),
        cwd: None,
        env: Vec::new(),
        timeout_ms: None,
        mutates,
        purpose: purpose.to_string(),
    })
}

fn build(program: &str, args: &[&str], purpose: &str, mutates: bool) -> Command {
    Command {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: None,
        env: Vec::new(),
        timeout_ms: None,
        mutates,
        purpose: purpose.to_string(),
    }
}

impl Command {
    pub fn in_dir(mut self, cwd: &str) -> Self {
        self.cwd = Some(cwd.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// The full argv, program first: what tests compare.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone()).chain(self.args.iter().cloned()).collect()
    }
}

/// "`alembic upgrade head` exited 1: <last lines of stderr>".
pub fn failure_message(command: &Command, out: &CommandOutput) -> String {
    let what = command.argv().join(" ");
    let text = if out.stderr.trim().is_empty() { &out.stdout } else { &out.stderr };
    let tail: Vec<&str> = text.trim().lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    if out.timed_out {
        format!("`{what}` timed out after {} ms", out.duration_ms)
    } else {
        format!("`{what}` exited {}: {}", out.status, tail.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_carry_intent_and_argv() {
        let c = change("alembic", &["upgrade", "head"], "apply migrations").in_dir("app");
        assert_eq!(c.argv(), vec!["alembic", "upgrade", "head"]);
        assert!(c.mutates);
        assert_eq!(c.cwd.as_deref(), Some("app"));
        assert!(!read("git", &["status"], "look").mutates);
    }

    #[test]
    fn failure_message_keeps_the_tail_of_stderr() {
        let c = read("git", &["rev-parse", "nope"], "resolve");
        let out = CommandOutput {
            status: 128,
            stdout: String::new(),
            stderr: "fatal: ambiguous argument 'nope'\n".into(),
            duration_ms: 3,
            timed_out: false,
            planned: false,
        };
        assert_eq!(
            failure_message(&c, &out),
            "`git rev-parse nope` exited 128: fatal: ambiguous argument 'nope'"
        );
    }
}
