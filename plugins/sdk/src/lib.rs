//! Guest-side SDK for stack plugins.
//!
//! It generates the bindings to the host contract (`wit/v1`, `deploy:plugin@1.0.0`) once, so
//! every plugin shares them, and adds the few helpers plugins would otherwise repeat:
//! commands built as plain data ([`cmd`]), typed settings ([`settings`]) and error plumbing.
//!
//! A plugin implements [`Guest`] and registers it with `plugin_sdk::export_plugin!(MyPlugin);`.
//! Pure logic (parsers, command builders, migration rules) stays in plain functions so it can be
//! unit-tested natively with `cargo test`; only the `Guest` methods touch host capabilities.

wit_bindgen::generate!({
    path: "../../wit/v1",
    world: "plugin",
    pub_export_macro: true,
    default_bindings_module: "plugin_sdk",
    export_macro_name: "export_plugin",
    generate_all,
});

pub mod cmd;
pub mod git;
pub mod postgres;
pub mod settings;

pub use deploy::plugin::host;
pub use deploy::plugin::types::{
    CapabilityError, Command, CommandOutput, Context, Finding, HttpMethod, HttpRequest,
    HttpResponse, LogLevel, PluginError, Probe, QueryResult, Severity,
};
pub use exports::deploy::plugin::stack::{
    BackupInfo, Description, Guest, Migration, PendingOperation, PollStatus, PreflightReport,
    RollbackMethod, RollbackPlan, RollbackRequest, StepResult, VerifyReport,
};

/// The contract version this SDK builds against, reported in `describe` by convention.
pub const CONTRACT_VERSION: &str = "1.0.0";

impl PluginError {
    pub fn new(message: impl Into<String>) -> Self {
        PluginError { message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<CapabilityError> for PluginError {
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Denied(m) => PluginError::new(format!("capability denied: {m}"))
                .with_hint("grant it in deploy.toml under [grants]"),
            CapabilityError::Failed(m) => PluginError::new(m),
            CapabilityError::TimedOut(m) => PluginError::new(format!("timed out: {m}")),
        }
    }
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Log through the host (the host decides where it goes; plugins never print).
pub fn log(level: LogLevel, message: impl AsRef<str>) {
    host::log(level, message.as_ref());
}

/// Run a command; a non-zero exit becomes an error carrying the tail of its output.
/// Under dry-run a mutating command is not run and comes back as `planned` with status 0.
pub fn run(command: &Command) -> Result<CommandOutput> {
    let out = host::run(command)?;
    if out.status != 0 {
        return Err(PluginError::new(cmd::failure_message(command, &out)));
    }
    Ok(out)
}

/// Run a command and return its trimmed standard output.
pub fn run_stdout(command: &Command) -> Result<String> {
    Ok(run(command)?.stdout.trim().to_string())
}
