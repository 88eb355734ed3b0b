//! The on-disk cache of compiled components.
//!
//! Key: the component's sha256 and the engine's compatibility hash (wasmtime version and
//! compilation settings), so a new host version or setting never loads stale machine code.

use std::hash::{Hash, Hasher};
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Returns the component and whether it came from the cache.
pub fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    digest: &str,
    bytes: &[u8],
) -> wasmtime::Result<(Component, bool)> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let file = dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()));
    if file.exists() {
        // SAFETY: the file was written by `serialize` below for this very engine configuration
        // (the name carries the compatibility hash); the cache directory belongs to the user.
        // A truncated or foreign file fails here: then recompile and overwrite it.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &file) } {
            return Ok((component, true));
        }
    }
    let component = Component::new(engine, bytes)?;
    // The cache is an optimisation: failing to write it must not fail the load.
    if let Ok(serialized) = component.serialize()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = dir.join(format!(".{digest}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, serialized).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    Ok((component, false))
}
