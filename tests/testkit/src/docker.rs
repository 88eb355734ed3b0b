//! Real Docker containers that run the machine's own programs, for the suites that deploy an app
//! "where it runs" (`docker exec`, `docker restart`) without pulling any image.
//!
//! No registry is needed: [`rootfs_image`] imports a tiny root filesystem made here (a few
//! directories, merged-/usr symlinks, copies of /etc/passwd, /etc/group, /etc/hosts and
//! /etc/nsswitch.conf) as `host-test-rootfs:<content hash>`, once per content, and
//! [`ContainerSpec::with_host_userland`] runs it with the machine's `/usr` bind-mounted
//! read-only. So a container has Debian's own Ruby, Rails, libpq... at the same paths as here,
//! and its own processes, mount table and writable layer.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use testkit::{ContainerSpec, DOCKER_NEEDS, docker_available, require, rootfs_image};
//!
//! if !require(DOCKER_NEEDS, docker_available()) {
//!     return Ok(());
//! }
//! let image = rootfs_image()?;
//! let web = ContainerSpec::with_host_userland(&image, "web")
//!     .command(&["sleep", "600"])
//!     .start()?;
//! assert_eq!(web.exec(&["echo", "hi"])?, "hi");
//! // Dropping `web` removes the container (`docker rm -f`).
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::{run, sha256, target_dir};

/// What the container suites need, for [`crate::require`]'s message.
pub const DOCKER_NEEDS: &str = "a Docker engine (`docker version` must reach the daemon; apt-get install docker.io) \
     on a merged-/usr machine (/bin -> usr/bin), whose /usr the test containers borrow";

/// Repository of the images [`rootfs_image`] imports; the tag is a hash of their content.
pub const ROOTFS_REPOSITORY: &str = "host-test-rootfs";

/// Label on everything this module creates, so a leftover can be told from anyone else's.
pub const LABEL: &str = "dev.host.testkit";

/// Bump when the layout below changes, so a new image is built.
const LAYOUT_VERSION: &str = "1";
const DIRS: &[(&str, u32)] = &[
    ("etc", 0o755),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("root", 0o700),
    ("usr", 0o755),
    ("var", 0o755),
    ("var/lib", 0o755),
];
/// Debian 12's merged /usr: the top-level program and library folders are links into /usr.
const SYMLINKS: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
    ("sbin", "usr/sbin"),
];
/// Copied from this machine: who is who, and how names resolve (`--network host` has Docker
/// bind the machine's own /etc/hosts and /etc/resolv.conf over the copies anyway).
const ETC_FILES: &[&str] = &["passwd", "group", "hosts", "nsswitch.conf"];
/// Bind-mounted read-only when present: the programs and libraries, Debian's alternatives
/// symlinks (/usr/bin/x -> /etc/alternatives/x -> /usr/...), and gems installed with `gem`.
const HOST_USERLAND: &[&str] = &["/usr", "/etc/alternatives", "/var/lib/gems"];

/// Whether Docker answers and the machine's /usr can stand in for an image's.
pub fn docker_available() -> bool {
    let merged_usr = SYMLINKS.iter().all(|(link, target)| {
        fs::read_link(Path::new("/").join(link)).is_ok_and(|t| t == Path::new(target))
            || !Path::new("/").join(link).exists()
    });
    merged_usr
        && Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success())
}

/// `host-test-rootfs:<hash>`, built if Docker does not have it yet: the hash covers the layout
/// and the copied /etc files, so a changed /etc/passwd makes a new image. Builds are
/// serialised across test processes by a lock file under the target directory; a build
/// takes well under a second (the image is a few kilobytes).
pub fn rootfs_image() -> Result<String> {
    let mut contents = Vec::new();
    for file in ETC_FILES {
        let path = Path::new("/etc").join(file);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        contents.push((*file, bytes));
    }
    let mut fingerprint = format!("layout {LAYOUT_VERSION}\n");
    for (dir, mode) in DIRS {
        fingerprint += &format!("dir {dir} {mode:o}\n");
    }
    for (link, to) in SYMLINKS {
        fingerprint += &format!("link {link} {to}\n");
    }
    for (file, bytes) in &contents {
        fingerprint += &format!("file etc/{file} {}\n", sha256::hex(bytes));
    }
    let image = format!(
        "{ROOTFS_REPOSITORY}:{}",
        &sha256::hex(fingerprint.as_bytes())[..16]
    );

    let lock_dir = target_dir().join("testkit");
    fs::create_dir_all(&lock_dir).with_context(|| format!("creating {}", lock_dir.display()))?;
    let lock_path = lock_dir.join("docker-rootfs.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    if image_exists(&image) {
        return Ok(image);
    }
    let stage = tempfile::Builder::new()
        .prefix("testkit-rootfs-")
        .tempdir()
        .context("creating a tempdir for the root filesystem")?;
    let root = stage.path().join("rootfs");
    fs::create_dir(&root)?;
    for (dir, mode) in DIRS {
        let path = root.join(dir);
        fs::create_dir_all(&path)?;
        set_mode(&path, *mode)?;
    }
    for (link, to) in SYMLINKS {
        symlink(to, root.join(link))?;
    }
    for (file, bytes) in &contents {
        let path = root.join("etc").join(file);
        fs::write(&path, bytes)?;
        set_mode(&path, 0o644)?;
    }
    let tarball = stage.path().join("rootfs.tar");
    run(
        Command::new("tar")
            .args(["--create", "--numeric-owner", "--owner=0", "--group=0"])
            .arg("--file")
            .arg(&tarball)
            .arg("--directory")
            .arg(&root)
            .arg("."),
        "tar (the test image's root filesystem)",
    )?;
    run(
        Command::new("docker")
            .args(["import", "--change"])
            .arg(format!("LABEL {LABEL}=rootfs"))
            .args([
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--message",
                "testkit: a root filesystem for containers that borrow the machine's /usr",
            ])
            .arg(&tarball)
            .arg(&image),
        &format!("docker import {image}"),
    )?;
    Ok(image)
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Whether a container of that name (or id) exists, running or not.
pub fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["container", "inspect", "--format", "{{.Id}}", name])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success())
}

/// How to run a container: `docker run -d` flags and the command, built up by the caller.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    image: String,
    name: String,
    flags: Vec<String>,
    command: Vec<String>,
}

impl ContainerSpec {
    /// A container of `image` (from [`rootfs_image`]) named `<prefix>-<unique>` that runs the
    /// machine's own programs: /usr, /etc/alternatives and /var/lib/gems (those that exist)
    /// bind-mounted read-only, the machine's network (`--network host`: it reaches servers on
    /// 127.0.0.1 and its own listen there), this process's uid:gid (so files it writes in a
    /// bind-mounted folder are the test's), `HOME=/tmp`, and a fresh tmpfs /run on every
    /// (re)start for pid files.
    pub fn with_host_userland(image: &str, prefix: &str) -> ContainerSpec {
        let mut spec = ContainerSpec {
            image: image.to_string(),
            name: unique_name(prefix),
            flags: Vec::new(),
            command: Vec::new(),
        };
        spec.flags.extend(
            [
                "--network",
                "host",
                "--tmpfs",
                "/run:rw,mode=1777",
                "--env",
                "HOME=/tmp",
                "--label",
            ]
            .map(String::from),
        );
        spec.flags.push(format!("{LABEL}=container"));
        let (uid, gid) = current_ids();
        spec.flags.push("--user".into());
        spec.flags.push(format!("{uid}:{gid}"));
        for dir in HOST_USERLAND {
            let path = Path::new(dir);
            let used = match fs::read_dir(path) {
                // An empty /var/lib/gems holds nothing to borrow.
                Ok(mut entries) => *dir == "/usr" || entries.next().is_some(),
                Err(_) => false,
            };
            if used {
                spec = spec.bind(path, path, true);
            }
        }
        spec
    }

    /// `-v host:container[:ro]`.
    pub fn bind(mut self, host: &Path, container: &Path, read_only: bool) -> ContainerSpec {
        self.flags.push("--volume".into());
        let mut volume = format!("{}:{}", host.display(), container.display());
        if read_only {
            volume += ":ro";
        }
        self.flags.push(volume);
        self
    }

    /// Bind-mounts `dir` at the same path, read-write, and makes it the working directory (of
    /// the command and of every `docker exec`).
    pub fn workdir_shared(self, dir: &Path) -> ContainerSpec {
        let mut spec = self.bind(dir, dir, false);
        spec.flags.push("--workdir".into());
        spec.flags.push(dir.display().to_string());
        spec
    }

    /// An environment variable of the container (inherited by every `docker exec`).
    pub fn env(mut self, key: &str, value: &str) -> ContainerSpec {
        self.flags.push("--env".into());
        self.flags.push(format!("{key}={value}"));
        self
    }

    /// The container's main process (PID 1), as argv.
    pub fn command(mut self, argv: &[&str]) -> ContainerSpec {
        self.command = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `docker run -d`: returns once the main process is started (not once it is ready).
    /// A container that fails to start is removed before the error is returned.
    pub fn start(self) -> Result<Container> {
        let mut docker = Command::new("docker");
        docker
            .args(["run", "--detach", "--name", &self.name])
            .args(&self.flags)
            .arg(&self.image)
            .args(&self.command)
            .stdin(Stdio::null());
        // From here on the container may exist: the guard removes it on any error.
        let container = Container {
            name: self.name.clone(),
        };
        let id = run(&mut docker, &format!("docker run {}", self.name))?;
        if id.is_empty() {
            bail!("docker run {} printed no container id", self.name);
        }
        Ok(container)
    }
}

/// A container started by [`ContainerSpec::start`]; dropping it removes it (`docker rm -f`,
/// volumes included). Only ever the one this value started.
#[derive(Debug)]
pub struct Container {
    name: String,
}

impl Container {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `docker exec <container> argv...`, its stdout trimmed; non-zero exit is an error.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        run(
            Command::new("docker")
                .args(["exec", &self.name])
                .args(argv)
                .stdin(Stdio::null()),
            &format!("docker exec {} {argv:?}", self.name),
        )
    }

    /// `docker inspect --format <template>`, trimmed.
    pub fn inspect(&self, template: &str) -> Result<String> {
        run(
            Command::new("docker")
                .args(["container", "inspect", "--format", template, &self.name])
                .stdin(Stdio::null()),
            &format!("docker inspect {}", self.name),
        )
    }

    /// When the main process last started (RFC 3339, nanoseconds): changes on every restart.
    pub fn started_at(&self) -> Result<String> {
        self.inspect("{{.State.StartedAt}}")
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}")
            .is_ok_and(|r| r == "true")
    }

    /// The argv of the container's PID 1, read inside it (`/proc/1/cmdline`).
    pub fn main_process(&self) -> Result<Vec<String>> {
        let raw = self.exec(&["cat", "/proc/1/cmdline"])?;
        Ok(raw
            .split('\0')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect())
    }

    /// The last `lines` of the container's output (stdout and stderr), for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        match Command::new("docker")
            .args(["logs", "--tail", &lines.to_string(), &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(docker logs failed: {e})"),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "--force", "--volumes", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `<prefix>-<pid>-<counter>-<time>`: unique across parallel tests and test processes.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// This process's effective uid and gid (the owner of its /proc entry).
fn current_ids() -> (u32, u32) {
    fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require;

    #[test]
    fn a_rootfs_container_runs_the_machines_programs_and_is_removed_on_drop() {
        if !require(DOCKER_NEEDS, docker_available()) {
            return;
        }
        let started = std::time::Instant::now();
        let image = rootfs_image().unwrap();
        eprintln!("timing: rootfs image ready in {:?}", started.elapsed());
        assert!(image.starts_with("host-test-rootfs:"), "{image}");
        assert_eq!(
            rootfs_image().unwrap(),
            image,
            "the same content, the same image"
        );
        assert!(image_exists(&image));

        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().canonicalize().unwrap();
        fs::write(shared.join("from-outside"), "hello").unwrap();
        let box_ = ContainerSpec::with_host_userland(&image, "testkit-selftest")
            .workdir_shared(&shared)
            .env("GREETING", "hi")
            .command(&["sleep", "300"])
            .start()
            .unwrap();
        let name = box_.name().to_string();
        assert!(box_.running());
        assert_eq!(box_.main_process().unwrap(), ["sleep", "300"]);
        // The machine's programs, the shared folder at the same path, the container's env.
        assert_eq!(box_.exec(&["cat", "from-outside"]).unwrap(), "hello");
        assert_eq!(
            box_.exec(&["sh", "-c", "echo $GREETING; pwd"]).unwrap(),
            format!("hi\n{}", shared.display())
        );
        box_.exec(&["sh", "-c", "echo inside > written-inside"])
            .unwrap();
        let meta = fs::metadata(shared.join("written-inside")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            current_ids(),
            "written as the test's user"
        );
        // Its own processes: PID 1 is its command, not this machine's init.
        let pid1 = fs::read_to_string("/proc/1/cmdline").unwrap_or_default();
        assert!(!pid1.starts_with("sleep\x00300"), "{pid1:?}");
        // /usr is read-only inside.
        assert!(box_.exec(&["touch", "/usr/testkit-was-here"]).is_err());
        assert!(!Path::new("/usr/testkit-was-here").exists());

        drop(box_);
        assert!(!container_exists(&name), "{name} is removed on drop");
    }
}
