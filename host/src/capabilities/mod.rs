//! What a plugin may ask the host to do: run a program, make an HTTP request, query a
//! database, read a file under the project root, read a granted environment variable, log,
//! and keep small state.
//!
//! Every call passes through here and is checked against the operator's grants; a refusal is
//! an error value naming the plugin, the call and the missing grant (never a trap), so the
//! plugin can report it and the phase fails cleanly. Every call also carries intent: under
//! `--dry-run` mutating calls are recorded as planned steps instead of being performed.

mod db;
mod exec;
mod fs;
mod http;
mod redact;

pub use redact::Redactor;

use crate::config::{Database, Grants};
use crate::events::{Bus, Event, Level};
use crate::runtime::bindings::deploy::plugin::{host, types};
use crate::runtime::{
    CapabilityError, Command, CommandOutput, HttpRequest, HttpResponse, LogLevel, QueryResult,
};
use crate::state::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the capabilities need to know about the run; shared by every call of a run.
pub struct CapabilityContext {
    pub plugin: String,
    pub environment: String,
    /// Canonical project root: files, working directories and relative programs stay under it.
    pub root: PathBuf,
    pub grants: Grants,
    pub databases: BTreeMap<String, Database>,
    pub dry_run: bool,
    /// Cap on captured output per stream and on HTTP response bodies.
    pub output_limit: usize,
    pub events: Bus,
    pub store: Option<Store>,
    /// Commands without their own timeout stop at the current phase's deadline.
    pub phase_deadline: Mutex<Option<Instant>>,
    pub redactor: Redactor,
    http: reqwest::Client,
    pools: db::Pools,
}

impl CapabilityContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plugin: &str,
        environment: &str,
        root: PathBuf,
        grants: Grants,
        databases: BTreeMap<String, Database>,
        dry_run: bool,
        output_limit: usize,
        events: Bus,
        store: Option<Store>,
    ) -> Arc<CapabilityContext> {
        let redactor = Redactor::from_env(&grants.env);
        Arc::new(CapabilityContext {
            plugin: plugin.to_string(),
            environment: environment.to_string(),
            root,
            grants,
            databases,
            dry_run,
            output_limit,
            events,
            store,
            phase_deadline: Mutex::new(None),
            redactor,
            http: reqwest::Client::builder().build().expect("TLS backend available"),
            pools: db::Pools::default(),
        })
    }

    /// A context that grants nothing: for `describe` and `check-migrations`, which are pure.
    pub fn deny_all(plugin: &str, root: PathBuf) -> Arc<CapabilityContext> {
        CapabilityContext::new(
            plugin,
            "",
            root,
            Grants::default(),
            BTreeMap::new(),
            true,
            1 << 20,
            Bus::default(),
            None,
        )
    }

    pub fn set_phase_deadline(&self, deadline: Option<Instant>) {
        *self.phase_deadline.lock().unwrap() = deadline;
    }

    fn denied(&self, call: &str, what: &str, grant: &str) -> CapabilityError {
        CapabilityError::Denied(format!(
            "plugin `{}` may not {call} `{what}`: not granted (add it to {grant} in deploy.toml)",
            self.plugin
        ))
    }
}

/// The per-store face of the capabilities: the shared context plus this call's accounting.
pub struct CapabilityHost {
    pub ctx: Arc<CapabilityContext>,
    /// Time spent inside host calls during the current plugin call: it does not count
    /// against the plugin's Wasm execution deadline.
    pub time_in_host: Duration,
}

impl CapabilityHost {
    pub fn new(ctx: Arc<CapabilityContext>) -> Self {
        CapabilityHost { ctx, time_in_host: Duration::ZERO }
    }
}

impl types::Host for CapabilityHost {}

impl host::Host for CapabilityHost {
    async fn run(
        &mut self,
        cmd: Command,
    ) -> wasmtime::Result<Result<CommandOutput, CapabilityError>> {
        let started = Instant::now();
        let out = exec::run(&self.ctx, cmd).await;
        self.time_in_host += started.elapsed();
        Ok(out)
    }

    async fn http(
        &mut self,
        req: HttpRequest,
    ) -> wasmtime::Result<Result<HttpResponse, CapabilityError>> {
        let started = Instant::now();
        let out = http::request(&self.ctx, req).await;
        self.time_in_host += started.elapsed();
        Ok(out)
    }

    async fn query(
        &mut self,
        database: String,
        sql: String,
        params: Vec<String>,
    ) -> wasmtime::Result<Result<QueryResult, CapabilityError>> {
        let started = Instant::now();
        let out = db::query(&self.ctx, &database, &sql, &params).await;
        self.time_in_host += started.elapsed();
        Ok(out)
    }

    async fn read_file(&mut self, path: String) -> wasmtime::Result<Result<String, CapabilityError>> {
        Ok(fs::read_file(&self.ctx, &path))
    }

    async fn list_dir(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<String>, CapabilityError>> {
        Ok(fs::list_dir(&self.ctx, &path))
    }

    async fn get_env(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, CapabilityError>> {
        if !self.ctx.grants.env.iter().any(|g| g == &name) {
            return Ok(Err(self.ctx.denied("read environment variable", &name, "grants.env")));
        }
        Ok(Ok(std::env::var(&name).ok()))
    }

    async fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warn,
            LogLevel::Error => Level::Error,
        };
        let message = truncate(self.ctx.redactor.redact(&message), 4096);
        self.ctx.events.emit(Event::PluginLog { level, message });
        Ok(())
    }

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let Some(store) = &self.ctx.store else { return Ok(None) };
        let started = Instant::now();
        let value = store.kv_get(&self.ctx.plugin, &self.ctx.environment, &key).await;
        self.time_in_host += started.elapsed();
        value.map_err(|e| wasmtime::Error::msg(format!("state store: {e:#}")))
    }

    async fn kv_set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        let Some(store) = &self.ctx.store else { return Ok(()) };
        if self.ctx.dry_run {
            return Ok(());
        }
        let started = Instant::now();
        let done = store.kv_set(&self.ctx.plugin, &self.ctx.environment, &key, &value).await;
        self.time_in_host += started.elapsed();
        done.map_err(|e| wasmtime::Error::msg(format!("state store: {e:#}")))
    }
}

/// Cut text at `max` bytes (on a char boundary), saying how much was cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("\n[... {} bytes truncated]", total - cut));
    text
}

#[cfg(test)]
mod tests;
