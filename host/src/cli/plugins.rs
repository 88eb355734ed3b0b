//! `host plugins ...`: list, inspect, pin (`lock`), sign, verify, and make signing keys.

use super::commands::{
    Failure, find_plugin, installed_plugins, load_plugin, optional_config, plugin_dirs, pure_calls,
    runtime, trust_policy,
};
use super::{Cli, Output, exit};
use crate::runtime::CONTRACT_MAJOR;
use crate::trust::{self, KeyPair, LockEntry, LockFile};
use std::path::Path;

pub(super) async fn list(cli: &Cli) -> Result<i32, Failure> {
    let config = optional_config(cli)?;
    let runtime = runtime()?;
    let mut rows = Vec::new();
    let policy = trust_policy(cli, config.as_ref())?;
    for (name, path) in installed_plugins(&plugin_dirs(cli, config.as_ref())) {
        let vetted = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| trust::vet(&name, &path, &b, &policy));
        if let Err(refused) = vetted {
            rows.push(serde_json::json!({ "name": name, "path": path, "error": refused }));
            continue;
        }
        let row = match runtime.load(&path) {
            Ok(plugin) => match pure_calls(&runtime, &plugin, &name).describe().await {
                Ok(d) => serde_json::json!({
                    "name": d.name, "version": d.version, "stack": d.stack, "summary": d.summary,
                    "contract": plugin.contract_version, "digest": plugin.digest, "path": path,
                }),
                Err(e) => serde_json::json!({ "name": name, "path": path, "error": e.to_string() }),
            },
            Err(e) => serde_json::json!({ "name": name, "path": path, "error": e.to_string() }),
        };
        rows.push(row);
    }
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else if rows.is_empty() {
        println!("no plugins found (build them with `cargo xtask build-plugins`)");
    } else {
        for r in rows {
            match r.get("error") {
                Some(e) => println!("{:16} ERROR {}", r["name"].as_str().unwrap_or(""), e.as_str().unwrap_or("")),
                None => println!(
                    "{:16} {:8} {:16} contract {}  sha256 {}  {}",
                    r["name"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or(""),
                    r["stack"].as_str().unwrap_or(""),
                    r["contract"].as_str().unwrap_or(""),
                    &r["digest"].as_str().unwrap_or("")[..12],
                    r["summary"].as_str().unwrap_or("")
                ),
            }
        }
    }
    Ok(exit::OK)
}

pub(super) async fn inspect(cli: &Cli, plugin: &str, env: Option<&str>) -> Result<i32, Failure> {
    let config = optional_config(cli)?;
    let (name, path) = find_plugin(cli, config.as_ref(), Some(plugin))?;
    let runtime = runtime()?;
    let loaded = load_plugin(cli, config.as_ref(), &runtime, &name, &path)?;
    let d = pure_calls(&runtime, &loaded, &name).describe().await.map_err(|e| Failure::other(e.to_string()))?;
    // An environment's grants when one is named: production may grant less than staging.
    let grants = match (&config, env) {
        (Some(c), Some(e)) => c.environment(e).map_err(Failure::usage)?.grants,
        (Some(c), None) => c.file.grants.clone(),
        (None, _) => Default::default(),
    };
    let capabilities: Vec<serde_json::Value> = d
        .capabilities
        .iter()
        .map(|c| serde_json::json!({ "capability": c, "granted": is_granted(c, &grants) }))
        .collect();
    if cli.output == Output::Json {
        let doc = serde_json::json!({
            "name": d.name, "version": d.version, "stack": d.stack, "summary": d.summary,
            "contract": loaded.contract_version, "digest": loaded.digest, "path": path,
            "capabilities": capabilities, "default_probes": d.default_probes,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(exit::OK);
    }
    println!("{} {} ({})", d.name, d.version, d.stack);
    println!("  {}", d.summary);
    println!("  file:     {}", path.display());
    println!("  sha256:   {}", loaded.digest);
    println!("  contract: deploy:plugin@{}", loaded.contract_version);
    println!("  capabilities (requested -> granted by {}):", config.as_ref().map(|c| c.path.display().to_string()).unwrap_or("no deploy.toml".into()));
    for c in &capabilities {
        println!("    {:24} {}", c["capability"].as_str().unwrap_or(""), if c["granted"] == true { "granted" } else { "NOT granted" });
    }
    for p in &d.default_probes {
        println!("  default probe: {} GET {} expect {} ({} attempts)", p.name, p.path, p.expect_status, p.attempts);
    }
    Ok(exit::OK)
}

/// `run:NAME`, `env:NAME`, `http[:HOST]`, `db:NAME` against the grants in deploy.toml.
fn is_granted(capability: &str, grants: &crate::config::Grants) -> bool {
    match capability.split_once(':') {
        Some(("run", p)) => grants.programs.iter().any(|g| g == p),
        Some(("env", v)) => grants.env.iter().any(|g| g == v),
        Some(("http", h)) => grants.http.iter().any(|g| g == h || g.starts_with(&format!("{h}:"))),
        None if capability == "http" => !grants.http.is_empty(),
        _ => false,
    }
}


/// Pin plugins in ./host.lock: the named ones, else deploy.toml's, else every installed one.
pub(super) async fn lock(cli: &Cli, names: &[String]) -> Result<i32, Failure> {
    let config = optional_config(cli)?;
    let dir = std::env::current_dir().map_err(|e| Failure::usage(e.to_string()))?;
    let mut lock = LockFile::read_or_new(&dir).map_err(Failure::usage)?;
    let wanted: Vec<(String, std::path::PathBuf)> = if !names.is_empty() {
        names.iter().map(|n| find_plugin(cli, config.as_ref(), Some(n))).collect::<Result<_, _>>()?
    } else if config.as_ref().is_some_and(|c| c.file.plugin.name.is_some() || c.file.plugin.path.is_some()) {
        vec![find_plugin(cli, config.as_ref(), None)?]
    } else {
        installed_plugins(&plugin_dirs(cli, config.as_ref()))
    };
    let runtime = runtime()?;
    let mut pinned = Vec::new();
    for (name, path) in wanted {
        // Loading checks it is a plugin of a contract this host runs before it is pinned.
        let plugin = runtime.load(&path).map_err(|e| Failure::usage(e.to_string()))?;
        let entry = LockEntry { sha256: plugin.digest.clone(), contract: plugin.contract_version.clone() };
        pinned.push(serde_json::json!({ "name": name, "sha256": entry.sha256, "contract": entry.contract }));
        lock.plugins.insert(name, entry);
    }
    lock.write().map_err(|e| Failure::other(format!("{}: {e}", lock.path.display())))?;
    if cli.output == Output::Json {
        println!("{}", serde_json::json!({ "lock_file": lock.path, "pinned": pinned }));
    } else {
        for p in &pinned {
            println!("pinned {} sha256 {} (deploy:plugin@{})", p["name"].as_str().unwrap_or(""), p["sha256"].as_str().unwrap_or(""), p["contract"].as_str().unwrap_or(""));
        }
        println!("wrote {}", lock.path.display());
    }
    Ok(exit::OK)
}

pub(super) fn keygen(cli: &Cli, out: &Path) -> Result<i32, Failure> {
    let key = KeyPair::generate().map_err(|e| Failure::other(e.to_string()))?;
    key.write(out).map_err(|e| Failure::usage(format!("{}: {e}", out.display())))?;
    if cli.output == Output::Json {
        println!("{}", serde_json::json!({ "secret_key_file": out, "public_key": key.public_hex() }));
    } else {
        println!("secret key written to {} (keep it private)", out.display());
        println!("public key: {}\nadd it to deploy.toml:\n[trust]\nkeys = [\"{}\"]", key.public_hex(), key.public_hex());
    }
    Ok(exit::OK)
}

pub(super) fn sign(cli: &Cli, key: &Path, plugin: &str) -> Result<i32, Failure> {
    let config = optional_config(cli)?;
    let (_, path) = find_plugin(cli, config.as_ref(), Some(plugin))?;
    let key = KeyPair::read(key).map_err(Failure::usage)?;
    let bytes = std::fs::read(&path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    let sig_path = trust::signature_path(&path);
    trust::sign(&key, &bytes).write(&sig_path).map_err(|e| Failure::other(format!("{}: {e}", sig_path.display())))?;
    if cli.output == Output::Json {
        println!("{}", serde_json::json!({ "signature": sig_path, "public_key": key.public_hex(), "sha256": trust::digest(&bytes) }));
    } else {
        println!("signed {} (sha256 {}) with {}\nwrote {}", path.display(), trust::digest(&bytes), key.public_hex(), sig_path.display());
    }
    Ok(exit::OK)
}

/// Check a plugin's signature against the trusted keys (deploy.toml's `[trust]`, or `--key`).
pub(super) fn verify(cli: &Cli, plugin: &str, key: Option<&str>) -> Result<i32, Failure> {
    let config = optional_config(cli)?;
    let (name, path) = find_plugin(cli, config.as_ref(), Some(plugin))?;
    let mut keys = config.as_ref().map(|c| c.file.trust.keys.clone()).unwrap_or_default();
    keys.extend(key.map(String::from));
    if keys.is_empty() {
        return Err(Failure::usage("no trusted keys: add [trust] keys to deploy.toml or pass --key PUBLIC_KEY"));
    }
    let bytes = std::fs::read(&path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    let policy = trust::Policy { locked: None, trusted_keys: keys, require_signature: true };
    let vetted = trust::vet(&name, &path, &bytes, &policy).map_err(|m| Failure { message: m, code: exit::REFUSED })?;
    let signer = vetted.signed_by.unwrap_or_default();
    if cli.output == Output::Json {
        println!("{}", serde_json::json!({ "plugin": name, "sha256": vetted.digest, "signed_by": signer, "valid": true }));
    } else {
        println!("{name}: valid signature by trusted key {signer} (sha256 {})", vetted.digest);
    }
    Ok(exit::OK)
}

/// What this host loads, for `host plugins contract`.
pub(super) fn contract(cli: &Cli) -> i32 {
    let text = format!("deploy:plugin@{CONTRACT_MAJOR}.x");
    if cli.output == Output::Json {
        println!("{}", serde_json::json!({ "package": "deploy:plugin", "major": CONTRACT_MAJOR, "wit": format!("wit/v{CONTRACT_MAJOR}") }));
    } else {
        println!("this host loads plugins built against {text} (wit/v{CONTRACT_MAJOR}/plugin.wit)");
    }
    exit::OK
}
