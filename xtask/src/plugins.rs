//! `build-plugins`: find the plugin crates, compile them for wasm32, wrap them into components.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use wit_component::{ComponentEncoder, DecodedWasm};

const TARGET: &str = "wasm32-unknown-unknown";
/// Where Debian's `rustc-web` lives; its std sources come from `rust-web-src`.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Installed by `rust-web-llvm` as a symlink to `lld-<llvm version>`, a separate package.
const DEBIAN_RUST_LLD: &str = "/usr/bin/rust-lld";
const LINKER_VAR: &str = "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER";
const INSTALL_HINT: &str = "install Debian's wasm-capable Rust (`apt-get install -y rustc-web rust-web-src rust-web-llvm lld-22`) \
     or add the target to the rustup toolchain (`rustup target add wasm32-unknown-unknown`)";

pub struct Options {
    /// Package names to build; empty means every plugin.
    pub names: Vec<String>,
    pub debug: bool,
    pub toolchain: ToolchainChoice,
    /// Workspace root: holds `plugins/` and `target/`.
    pub root: PathBuf,
}

#[derive(Clone, Copy)]
pub enum ToolchainChoice {
    Auto,
    Rustup,
    Debian,
}

struct Plugin {
    name: String,
    dir: PathBuf,
    /// `target/plugins` for shipped plugins, `target/test-plugins` for the test suite's own
    /// (adversarial) plugins under `tests/plugins/`, which must never be installed by mistake.
    out_dir: PathBuf,
}

impl Options {
    /// Every plugin, release build, toolchain detected.
    pub fn all(root: &Path) -> Options {
        Options {
            names: Vec::new(),
            debug: false,
            toolchain: ToolchainChoice::Auto,
            root: root.to_path_buf(),
        }
    }
}

pub fn build_plugins(opts: &Options) -> Result<()> {
    let plugins = select(discover(&opts.root)?, &opts.names)?;
    if plugins.is_empty() {
        println!(
            "no plugin crates under {}",
            opts.root.join("plugins").display()
        );
        return Ok(());
    }
    let toolchain = Toolchain::detect(opts.toolchain)?;
    eprintln!("toolchain: {}", toolchain.describe());

    let (profile, profile_dir) = if opts.debug {
        ("dev", "debug")
    } else {
        ("plugin", "plugin")
    };
    let target_dir = opts.root.join("target").join("wasm");

    let modules_dir = target_dir.join(TARGET).join(profile_dir);
    if matches!(toolchain, Toolchain::Debian { .. }) && !has_lib(&modules_dir.join("deps"), "std") {
        eprintln!(
            "note: first build with Debian's toolchain compiles std for {TARGET} (a minute or two)"
        );
    }

    for plugin in &plugins {
        let started = Instant::now();
        let status = toolchain
            .cargo_build(&plugin.name, profile, &target_dir)
            .current_dir(&opts.root)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!(
                "plugin `{}` ({}) failed to compile ({status})",
                plugin.name,
                plugin.dir.display()
            );
        }

        let module_path = modules_dir.join(format!("{}.wasm", plugin.name.replace('-', "_")));
        let module = fs::read(&module_path).with_context(|| {
            format!(
                "plugin `{}`: reading {}",
                plugin.name,
                module_path.display()
            )
        })?;
        let component = componentize(&plugin.name, &module)?;
        let exports = exported_interfaces(&plugin.name, &component)?;
        fs::create_dir_all(&plugin.out_dir)
            .with_context(|| format!("creating {}", plugin.out_dir.display()))?;
        let out = plugin.out_dir.join(format!("{}.wasm", plugin.name));
        fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;

        println!(
            "{:<24} {:>8.1} KB {:>6.1}s  exports {}",
            plugin.name,
            component.len() as f64 / 1024.0,
            started.elapsed().as_secs_f64(),
            exports.join(", "),
        );
    }
    println!(
        "wrote {} component(s) to {}",
        plugins.len(),
        opts.root.join("target").join("{plugins,test-plugins}").display()
    );
    Ok(())
}

/// Every `plugins/<dir>/Cargo.toml` (but `plugins/sdk`) and `tests/plugins/<dir>/Cargo.toml`
/// whose lib is a `cdylib`, by name.
fn discover(root: &Path) -> Result<Vec<Plugin>> {
    let mut plugins = discover_in(&root.join("plugins"), &root.join("target/plugins"))?;
    let test_plugins = root.join("tests/plugins");
    if test_plugins.is_dir() {
        plugins.extend(discover_in(&test_plugins, &root.join("target/test-plugins"))?);
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plugins)
}

fn discover_in(plugins_dir: &Path, out_dir: &Path) -> Result<Vec<Plugin>> {
    let mut plugins = Vec::new();
    let entries =
        fs::read_dir(&plugins_dir).with_context(|| format!("reading {}", plugins_dir.display()))?;
    for entry in entries {
        let dir = entry?.path();
        let manifest_path = dir.join("Cargo.toml");
        if dir.file_name().is_some_and(|n| n == "sdk") || !manifest_path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&manifest_path)?;
        let manifest: toml::Table = text
            .parse()
            .with_context(|| format!("parsing {}", manifest_path.display()))?;
        let is_cdylib = manifest
            .get("lib")
            .and_then(|lib| lib.get("crate-type"))
            .and_then(|types| types.as_array())
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
        if !is_cdylib {
            continue;
        }
        let name = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{} has no package name", manifest_path.display()))?;
        plugins.push(Plugin {
            name: name.to_string(),
            dir,
            out_dir: out_dir.to_path_buf(),
        });
    }
    Ok(plugins)
}

fn select(plugins: Vec<Plugin>, names: &[String]) -> Result<Vec<Plugin>> {
    if names.is_empty() {
        return Ok(plugins);
    }
    if let Some(unknown) = names
        .iter()
        .find(|n| !plugins.iter().any(|p| &p.name == *n))
    {
        let known: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no plugin named `{unknown}` (plugins: {})",
            known.join(", ")
        );
    }
    Ok(plugins
        .into_iter()
        .filter(|p| names.contains(&p.name))
        .collect())
}

enum Toolchain {
    /// The rustup toolchain running this xtask, which has the wasm32 std.
    Rustup,
    /// Debian's rustc-web, building std from source. `linker` is None when the user set
    /// `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER` themselves.
    Debian {
        rustc: PathBuf,
        linker: Option<PathBuf>,
    },
}

impl Toolchain {
    fn detect(choice: ToolchainChoice) -> Result<Self> {
        match choice {
            ToolchainChoice::Rustup if rustup_has_target() => Ok(Self::Rustup),
            ToolchainChoice::Rustup => {
                bail!("the rustup toolchain has no {TARGET} std; run `rustup target add {TARGET}`")
            }
            ToolchainChoice::Debian => Self::debian(),
            ToolchainChoice::Auto if rustup_has_target() || rustup_add_target() => Ok(Self::Rustup),
            ToolchainChoice::Auto => Self::debian(),
        }
    }

    fn debian() -> Result<Self> {
        let rustc = PathBuf::from(DEBIAN_RUSTC);
        if !rustc.is_file() {
            bail!("no Rust toolchain with the {TARGET} target: {INSTALL_HINT}");
        }
        let sysroot = capture(Command::new(&rustc).args(["--print", "sysroot"]))
            .context("asking /usr/bin/rustc for its sysroot")?;
        let std_sources = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/Cargo.lock");
        if !std_sources.is_file() {
            bail!(
                "{} is missing, so std cannot be built for {TARGET}: {INSTALL_HINT}",
                std_sources.display()
            );
        }
        let linker = if std::env::var_os(LINKER_VAR).is_some() {
            None
        } else {
            Some(find_wasm_linker()?)
        };
        Ok(Self::Debian { rustc, linker })
    }

    fn describe(&self) -> String {
        match self {
            Self::Rustup => format!("rustup toolchain with the {TARGET} target"),
            Self::Debian { rustc, linker } => {
                let linker = match linker {
                    Some(path) => path.display().to_string(),
                    None => format!("${LINKER_VAR}"),
                };
                format!("{} with -Zbuild-std, linker {linker}", rustc.display())
            }
        }
    }

    fn cargo_build(&self, package: &str, profile: &str, target_dir: &Path) -> Command {
        let mut cmd = Command::new(cargo());
        cmd.args([
            "build",
            "-p",
            package,
            "--target",
            TARGET,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir);
        if let Self::Debian { rustc, linker } = self {
            // The linker is part of every unit's fingerprint: keep the choice stable
            // between runs or std gets rebuilt.
            cmd.arg("-Zbuild-std=std,panic_abort")
                .env("RUSTC", rustc)
                .env("RUSTC_BOOTSTRAP", "1");
            if let Some(linker) = linker {
                cmd.env(LINKER_VAR, linker);
            }
        }
        cmd
    }
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn rustc() -> OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// Whether the active rustc has a prebuilt std for the wasm target.
fn rustup_has_target() -> bool {
    capture(Command::new(rustc()).args(["--print", "target-libdir", "--target", TARGET]))
        .is_ok_and(|dir| has_lib(Path::new(dir.trim()), "std"))
}

fn rustup_add_target() -> bool {
    eprintln!("the rustup toolchain has no {TARGET} std; trying `rustup target add {TARGET}`");
    let output = Command::new("rustup")
        .args(["target", "add", TARGET])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output();
    let added = match output {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            // rustup is chatty on failure: keep its one `error:` line.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr.lines().find(|l| l.starts_with("error:"));
            eprintln!(
                "rustup could not add the target ({})",
                reason.unwrap_or("no reason given")
            );
            false
        }
        Err(err) => {
            eprintln!("rustup is not available ({err})");
            false
        }
    };
    added && rustup_has_target()
}

/// Whether `dir` holds `lib<name>-*.rlib`.
fn has_lib(dir: &Path, name: &str) -> bool {
    let prefix = format!("lib{name}-");
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.starts_with(&prefix) && file.ends_with(".rlib")
        })
    })
}

/// A `wasm-ld` flavoured linker: Debian's `rust-lld` (needs its `lld-NN` package), else
/// the one shipped in the rustup toolchain, else `wasm-ld` on PATH.
fn find_wasm_linker() -> Result<PathBuf> {
    let debian = Path::new(DEBIAN_RUST_LLD);
    // `exists` follows the symlink, so a dangling `rust-lld -> lld-22` does not count.
    if debian.exists() {
        return Ok(debian.to_path_buf());
    }
    if let Ok(sysroot) = capture(Command::new(rustc()).args(["--print", "sysroot"])) {
        let rustlib = Path::new(sysroot.trim()).join("lib/rustlib");
        let bundled = fs::read_dir(rustlib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|host| host.path().join("bin/rust-lld"))
            .find(|lld| lld.is_file());
        if let Some(lld) = bundled {
            return Ok(lld);
        }
    }
    if let Some(wasm_ld) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("wasm-ld"))
        .find(|p| p.is_file())
    {
        return Ok(wasm_ld);
    }
    let package = fs::read_link(debian)
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "lld-22".into());
    bail!(
        "no wasm linker: {DEBIAN_RUST_LLD} is missing or points to an uninstalled `{package}`; \
         run `apt-get install -y {package}` (or set {LINKER_VAR} to a wasm-ld)"
    )
}

/// Run a command and return its stdout, failing on a non-zero exit.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Turn a wit-bindgen core module into a validated component. Plugins import only the
/// `deploy:plugin` host interface, so no WASI adapter is involved.
fn componentize(name: &str, module: &[u8]) -> Result<Vec<u8>> {
    let wasi = wasi_imports(module)
        .with_context(|| format!("plugin `{name}`: reading the core module"))?;
    if !wasi.is_empty() {
        bail!(
            "plugin `{name}` imports WASI ({}): plugins run without WASI, so they must not use \
             std APIs that need it (files, environment, clocks, randomness, stdout); use the \
             host capabilities (read-file, get-env, log, ...) instead",
            wasi.join(", ")
        );
    }
    ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .with_context(|| format!("plugin `{name}`: turning the core module into a component"))
}

/// The `module::name` of every import from a WASI module.
fn wasi_imports(module: &[u8]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(imports) = payload? {
            for import in imports.into_imports() {
                let import = import?;
                if import.module.starts_with("wasi") {
                    found.push(format!("{}::{}", import.module, import.name));
                }
            }
        }
    }
    Ok(found)
}

/// Names of the interfaces the component's world exports; an error when there are none.
fn exported_interfaces(name: &str, component: &[u8]) -> Result<Vec<String>> {
    let DecodedWasm::Component(resolve, world) = wit_component::decode(component)
        .with_context(|| format!("plugin `{name}`: decoding the component"))?
    else {
        bail!("plugin `{name}`: the output is a WIT package, not a component");
    };
    let exports: Vec<String> = resolve.worlds[world]
        .exports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .collect();
    if exports.is_empty() {
        bail!(
            "plugin `{name}` exports nothing: it must implement the plugin world's exports \
             (wit_bindgen::generate! plus export!)"
        );
    }
    Ok(exports)
}
