//! `host.lock`: the plugins a project runs, pinned by sha256 and the contract version they
//! were built against. Written by `host plugins lock`, read under `--locked`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "host.lock";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    pub sha256: String,
    /// `deploy:plugin` version the plugin exports, e.g. `1.0.0`.
    pub contract: String,
}

#[derive(Debug, Clone, Default)]
pub struct LockFile {
    pub path: PathBuf,
    pub plugins: BTreeMap<String, LockEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(default)]
    plugins: BTreeMap<String, LockEntry>,
}

impl LockFile {
    /// Read `dir/host.lock`; a missing file is an error under `--locked`.
    pub fn read(dir: &Path) -> Result<LockFile, String> {
        let path = dir.join(LOCK_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!("--locked needs {}: {e} (create it with `host plugins lock`)", path.display())
        })?;
        let disk: OnDisk = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        if disk.version != 1 {
            return Err(format!("{}: lock file version {} is newer than this host understands (1)", path.display(), disk.version));
        }
        Ok(LockFile { path, plugins: disk.plugins })
    }

    /// Read it if present, else start an empty one at `dir/host.lock`.
    pub fn read_or_new(dir: &Path) -> Result<LockFile, String> {
        if dir.join(LOCK_FILE).exists() {
            LockFile::read(dir)
        } else {
            Ok(LockFile { path: dir.join(LOCK_FILE), plugins: BTreeMap::new() })
        }
    }

    pub fn write(&self) -> std::io::Result<()> {
        let disk = OnDisk { version: 1, plugins: self.plugins.clone() };
        let body = toml::to_string(&disk).expect("lock file serializes");
        let text = format!("# Plugins this project runs, pinned by digest. Written by `host plugins lock`;\n# `--locked` (the default when CI=true) refuses any plugin not listed here with this digest.\n{body}");
        let tmp = self.path.with_extension("lock.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}
