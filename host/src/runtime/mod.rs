//! Loading, limiting and calling plugin components.
//!
//! A plugin is compiled once and cached on disk (keyed by its digest and the engine's
//! compatibility hash), so a second load deserializes instead of recompiling. Every call runs
//! in a fresh store: a trapped instance cannot be entered again, and rollback must still work
//! after the deploy call trapped. Each store gets a memory cap and a deadline on Wasm
//! execution time (epoch interruption; time the plugin spends waiting on host capabilities
//! does not count, the phase timeout covers that).

mod cache;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v1",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize],
    });
}

pub use bindings::deploy::plugin::types::{
    CapabilityError, Command, CommandOutput, Context, Finding, HttpMethod, HttpRequest,
    HttpResponse, LogLevel, PluginError, Probe, QueryResult, Severity,
};
pub use bindings::exports::deploy::plugin::stack::{
    BackupInfo, Description, Migration, PendingOperation, PollStatus, PreflightReport,
    RollbackMethod, RollbackPlan, RollbackRequest, StepResult, VerifyReport,
};

use crate::capabilities::CapabilityHost;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};

/// The contract major version this host loads.
pub const CONTRACT_MAJOR: u64 = 1;
pub const CONTRACT_PACKAGE: &str = "deploy:plugin";

/// How often the epoch advances: the granularity (and worst overshoot) of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid component: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Contract { path: PathBuf, message: String },
}

/// Why a plugin call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error value: a clean, reported failure.
    #[error("{}", plugin_error_text(.0))]
    Plugin(PluginError),
    /// The plugin ran past its Wasm execution deadline.
    #[error("plugin `{plugin}` exceeded its {budget:?} execution deadline in `{call}`")]
    Deadline { plugin: String, call: String, budget: Duration },
    /// The plugin hit its memory cap.
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mb} MiB in `{call}`")]
    Memory { plugin: String, call: String, limit_mb: u64 },
    /// The plugin returned more than the host accepts from one call.
    #[error("plugin `{plugin}` returned {size} bytes from `{call}`; the limit is {limit} bytes (limits.output_kb)")]
    Oversized { plugin: String, call: String, size: usize, limit: usize },
    /// The plugin trapped (panic, unreachable, ...).
    #[error("plugin `{plugin}` crashed in `{call}`: {message}")]
    Trap { plugin: String, call: String, message: String },
}

fn plugin_error_text(e: &PluginError) -> String {
    match &e.hint {
        Some(hint) => format!("{} (hint: {hint})", e.message),
        None => e.message.clone(),
    }
}

/// Per-store limits.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub memory_bytes: usize,
    /// Wasm execution time per call, host capability time excluded.
    pub call_budget: Duration,
    /// Largest value (as JSON) a call may return: a plugin cannot flood logs, events or the
    /// state store with a giant string.
    pub max_return_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits { memory_bytes: 64 << 20, call_budget: Duration::from_secs(10), max_return_bytes: 1 << 20 }
    }
}

/// What each store holds.
pub struct HostState {
    pub host: CapabilityHost,
    limits: StoreLimits,
    call_started: Instant,
    budget: Duration,
}

/// The engine, shared by every plugin of the process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
}

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub path: PathBuf,
    /// sha256 of the component bytes, hex.
    pub digest: String,
    /// Contract version the plugin was built against, e.g. `1.0.0`.
    pub contract_version: String,
    pub component: Component,
    pre: bindings::PluginPre<HostState>,
    /// Whether the compiled form came from the on-disk cache, and how long loading took.
    pub from_cache: bool,
    pub load_time: Duration,
}

impl Runtime {
    /// `cache_dir`: where compiled plugins are kept; `None` disables the cache.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut linker = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<_, HasSelf<CapabilityHost>>(&mut linker, |s: &mut HostState| &mut s.host)
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        // The epoch clock: deadlines are counted in ticks of this thread. It holds only a weak
        // reference so it ends with the engine.
        let weak = engine.weak();
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        Ok(Runtime { engine, linker, cache_dir })
    }

    /// The default cache location: `$HOST_CACHE_DIR`, else the user's cache dir.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("HOST_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        directories::ProjectDirs::from("", "", "host").map(|d| d.cache_dir().join("components"))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load a component file: check it is a plugin of a contract version we load, compile it
    /// (or take it from the cache) and link it against the host capabilities.
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let bytes = std::fs::read(path)
            .map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let (component, from_cache) = match &self.cache_dir {
            Some(dir) => cache::load_or_compile(&self.engine, dir, &digest, &bytes).map_err(invalid)?,
            None => (Component::new(&self.engine, &bytes).map_err(invalid)?, false),
        };
        let contract_version = contract_version(&self.engine, &component)
            .map_err(|message| LoadError::Contract { path: path.to_path_buf(), message })?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Contract {
            path: path.to_path_buf(),
            message: format!("it needs something this host does not provide: {e:#}"),
        })?;
        let pre = bindings::PluginPre::new(instance_pre).map_err(invalid)?;
        Ok(LoadedPlugin {
            path: path.to_path_buf(),
            digest,
            contract_version,
            component,
            pre,
            from_cache,
            load_time: started.elapsed(),
        })
    }

    /// A fresh, limited store around the given capabilities.
    fn store(&self, host: CapabilityHost, limits: CallLimits) -> Store<HostState> {
        let state = HostState {
            host,
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            call_started: Instant::now(),
            budget: limits.call_budget,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        // Checked every tick while Wasm runs: interrupt once the plugin's own execution time
        // (wall time minus time spent in host capabilities) passes the budget. Yielding lets
        // the async runtime run timers (phase timeouts, lock renewal) during a busy plugin.
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            let own = s.call_started.elapsed().saturating_sub(s.host.time_in_host);
            if own > s.budget {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

/// Which `deploy:plugin` version the component exports, refusing unknown majors.
fn contract_version(engine: &Engine, component: &Component) -> Result<String, String> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let wanted = format!("{CONTRACT_PACKAGE}/stack@");
    let Some(export) = names.iter().find(|n| n.starts_with(&wanted)) else {
        return Err(format!(
            "not a deploy plugin: it exports no `{CONTRACT_PACKAGE}/stack` interface (exports: {})",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ));
    };
    let version = &export[wanted.len()..];
    let major: u64 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(u64::MAX);
    if major != CONTRACT_MAJOR {
        return Err(format!(
            "plugin is built for {CONTRACT_PACKAGE}@{version}; this host loads {CONTRACT_PACKAGE}@{CONTRACT_MAJOR}.x \
             (rebuild the plugin against wit/v{CONTRACT_MAJOR} or use a host that supports {version})"
        ));
    }
    Ok(version.to_string())
}

/// Calls into one loaded plugin. Each call gets a fresh store.
pub struct PluginCalls<'a> {
    runtime: &'a Runtime,
    plugin: &'a LoadedPlugin,
    name: String,
    limits: CallLimits,
    make_host: Arc<dyn Fn() -> CapabilityHost + Send + Sync>,
}

macro_rules! call {
    ($self:ident, $call:literal, |$guest:ident, $store:ident| $body:expr) => {{
        let mut $store = $self.runtime.store(($self.make_host)(), $self.limits);
        let instance = $self.plugin.pre.instantiate_async(&mut $store).await;
        let result = match instance {
            Ok(instance) => {
                let $guest = instance.deploy_plugin_stack();
                $body.await
            }
            Err(e) => Err(e),
        };
        $self.map_trap($call, result, &$store)
    }};
}

impl<'a> PluginCalls<'a> {
    pub fn new(
        runtime: &'a Runtime,
        plugin: &'a LoadedPlugin,
        name: &str,
        limits: CallLimits,
        make_host: Arc<dyn Fn() -> CapabilityHost + Send + Sync>,
    ) -> Self {
        PluginCalls { runtime, plugin, name: name.to_string(), limits, make_host }
    }

    fn map_trap<T: serde::Serialize>(
        &self,
        call: &str,
        result: wasmtime::Result<T>,
        store: &Store<HostState>,
    ) -> Result<T, CallError> {
        let e = match result {
            Ok(v) => return self.check_size(call, v),
            Err(e) => e,
        };
        let plugin = self.name.clone();
        let call = call.to_string();
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return Err(CallError::Deadline { plugin, call, budget: store.data().budget });
        }
        let message = format!("{e:#}");
        if message.contains("forcing trap when growing memory") {
            let limit_mb = (self.limits.memory_bytes >> 20) as u64;
            return Err(CallError::Memory { plugin, call, limit_mb });
        }
        Err(CallError::Trap { plugin, call, message: first_lines(&message, 6) })
    }

    fn check_size<T: serde::Serialize>(&self, call: &str, value: T) -> Result<T, CallError> {
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.limits.max_return_bytes {
            return Err(CallError::Oversized {
                plugin: self.name.clone(),
                call: call.to_string(),
                size,
                limit: self.limits.max_return_bytes,
            });
        }
        Ok(value)
    }

    pub async fn describe(&self) -> Result<Description, CallError> {
        call!(self, "describe", |g, store| g.call_describe(&mut store))
    }

    pub async fn preflight(&self, ctx: &Context) -> Result<PreflightReport, CallError> {
        flatten(call!(self, "preflight", |g, store| g.call_preflight(&mut store, ctx)))
    }

    pub async fn backup(&self, ctx: &Context) -> Result<BackupInfo, CallError> {
        flatten(call!(self, "backup", |g, store| g.call_backup(&mut store, ctx)))
    }

    pub async fn deploy(&self, ctx: &Context) -> Result<StepResult, CallError> {
        flatten(call!(self, "deploy", |g, store| g.call_deploy(&mut store, ctx)))
    }

    pub async fn poll(&self, ctx: &Context, token: &str) -> Result<PollStatus, CallError> {
        flatten(call!(self, "poll", |g, store| g.call_poll(&mut store, ctx, token)))
    }

    pub async fn verify(&self, ctx: &Context) -> Result<VerifyReport, CallError> {
        flatten(call!(self, "verify", |g, store| g.call_verify(&mut store, ctx)))
    }

    pub async fn rollback(
        &self,
        ctx: &Context,
        request: &RollbackRequest,
    ) -> Result<StepResult, CallError> {
        flatten(call!(self, "rollback", |g, store| g.call_rollback(&mut store, ctx, request)))
    }

    pub async fn check_migrations(
        &self,
        sources: &[(String, String)],
    ) -> Result<Vec<Finding>, CallError> {
        call!(self, "check-migrations", |g, store| g.call_check_migrations(&mut store, sources))
    }
}

fn flatten<T>(r: Result<Result<T, PluginError>, CallError>) -> Result<T, CallError> {
    r?.map_err(CallError::Plugin)
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests;
