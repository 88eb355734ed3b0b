//! A Python virtualenv with a requirements file installed, built once and shared.
//!
//! Installing takes seconds to minutes and needs the package index, so a venv is cached under
//! `<target>/testkit/venv-<hash of the requirements file>`: editing the file makes a new one,
//! `cargo clean` removes them all. Test binaries run in parallel, so creation happens under
//! an exclusive file lock, and a marker file written last tells a finished venv from one whose
//! creator died halfway.

use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{find_program, run, sha256, target_dir};

const READY_MARKER: &str = ".testkit-ready";

/// A virtualenv with some requirements installed.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// The venv's root directory.
    pub dir: PathBuf,
}

impl PythonEnv {
    /// Whether `python3` is on PATH and can create virtualenvs (Debian splits `venv`'s
    /// `ensurepip` into the python3-venv package).
    pub fn available() -> bool {
        find_program("python3", &[]).is_some()
            && Command::new("python3")
                .args(["-c", "import ensurepip, venv"])
                .output()
                .is_ok_and(|out| out.status.success())
    }

    /// The venv for `requirements`, created (`python3 -m venv`, `pip install -r`) if no
    /// finished one is cached yet.
    pub fn ensure(requirements: &Path) -> Result<PythonEnv> {
        let content = fs::read(requirements)
            .with_context(|| format!("reading {}", requirements.display()))?;
        let key = &sha256::hex(&content)[..16];
        let cache = target_dir().join("testkit");
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let env = PythonEnv {
            dir: cache.join(format!("venv-{key}")),
        };
        if env.is_ready() {
            return Ok(env);
        }

        let lock_path = cache.join(format!("venv-{key}.lock"));
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        // Blocks while another test process builds this venv; released when `lock` drops.
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if env.is_ready() {
            return Ok(env);
        }
        env.create(requirements, &content).with_context(|| {
            format!(
                "creating a virtualenv at {} for {}",
                env.dir.display(),
                requirements.display()
            )
        })?;
        Ok(env)
    }

    /// The venv's `bin` directory, to put first on PATH.
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The venv's interpreter.
    pub fn python(&self) -> PathBuf {
        self.bin().join("python")
    }

    /// `$PATH` with [`bin`](Self::bin) in front, for `Command::env("PATH", ..)`.
    pub fn path_var(&self) -> OsString {
        let rest = env::var_os("PATH").unwrap_or_default();
        env::join_paths(std::iter::once(self.bin()).chain(env::split_paths(&rest)))
            .expect("PATH entries contain no ':'")
    }

    fn is_ready(&self) -> bool {
        self.dir.join(READY_MARKER).is_file()
    }

    fn create(&self, requirements: &Path, content: &[u8]) -> Result<()> {
        // Whatever is there was left by a creator that did not finish.
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing the unfinished {}", self.dir.display()))?;
        }
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&self.dir),
            "python3 -m venv",
        )?;
        run(
            Command::new(self.python())
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(requirements)
                .env("PIP_NO_INPUT", "1"),
            "pip install",
        )?;
        fs::write(self.dir.join(READY_MARKER), content).context("writing the ready marker")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_var_puts_the_venv_first() {
        let env = PythonEnv {
            dir: PathBuf::from("/opt/venv"),
        };
        let path = env.path_var();
        assert_eq!(
            env::split_paths(&path).next(),
            Some(PathBuf::from("/opt/venv/bin"))
        );
    }
}
