//! The approval gate's question to a person. The engine decides *whether* to ask; how to ask
//! (a terminal prompt, or nobody to ask in CI) belongs to the CLI.

pub trait Approver: Send + Sync {
    /// Ask the operator to type `expected` to go on. `None` when nobody can answer
    /// (no terminal, or CI): the gate then stops with "approval required".
    fn confirm(&self, question: &str, expected: &str) -> Option<bool>;
}

/// Nobody to ask.
pub struct NoApprover;

impl Approver for NoApprover {
    fn confirm(&self, _question: &str, _expected: &str) -> Option<bool> {
        None
    }
}
