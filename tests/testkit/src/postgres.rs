//! A throwaway PostgreSQL server per test: its own data directory in a tempdir, its own port,
//! trust authentication, a database named `app`; stopped and deleted on drop.
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root. Then the kit runs the
//! server-side programs (`initdb`, `pg_ctl`) as an unprivileged system user, `pgtest`
//! (created on first use; `nobody` if that fails), through `runuser`, and hands it the
//! tempdir. Client programs (`psql`, `pg_dump`) connect over TCP and run as the caller.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tempfile::TempDir;

use crate::{find_program, free_port, run, sha256};

/// The user the server runs as when the tests run as root.
const SERVER_USER: &str = "pgtest";
/// Where `runuser` and `useradd` live on Debian; a non-login root PATH may lack them.
const SBIN: &[&str] = &["/usr/sbin", "/sbin"];
/// Tries at finding a free port the server can bind; another test may take it meanwhile.
const START_ATTEMPTS: u32 = 5;

/// A running PostgreSQL server with an empty database `app`, owned by this value.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/app`: superuser `postgres`, no password.
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    run_as: Option<String>,
    // Dropped after `Drop::drop` has stopped the server, which removes the directory.
    dir: TempDir,
}

impl Postgres {
    /// Whether [`Postgres::start`] can work here: the server and client programs exist (and,
    /// as root, `runuser` to leave root with).
    pub fn available() -> bool {
        let Some(bin) = server_bin_dir() else {
            return false;
        };
        let clients = ["psql", "pg_dump"]
            .iter()
            .all(|p| client(&bin, p).is_some());
        clients && (!is_root() || find_program("runuser", SBIN).is_some())
    }

    /// Initialises a cluster in a new tempdir, starts it on 127.0.0.1 with a free port (its
    /// socket also in the tempdir, so nothing touches /var/run/postgresql) and creates `app`.
    pub fn start() -> Result<Postgres> {
        let bin = server_bin_dir().ok_or_else(|| {
            anyhow!(
                "PostgreSQL server programs (initdb, pg_ctl, postgres) not found \
                 under /usr/lib/postgresql/*/bin or on PATH"
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-pg-")
            .tempdir()
            .context("creating a tempdir for PostgreSQL")?;
        let run_as = if is_root() {
            Some(hand_over_to_server_user(dir.path())?)
        } else {
            None
        };
        let data = dir.path().join("data");

        let mut pg = Postgres {
            url: String::new(),
            port: 0,
            bin,
            data,
            run_as,
            dir,
        };
        pg.initdb()?;
        pg.start_server()?;
        pg.url = format!("postgres://postgres@127.0.0.1:{}/app", pg.port);
        run(
            pg.psql_command(&pg.url_for("postgres"))
                .args(["-c", "CREATE DATABASE app"]),
            "creating database app",
        )?;
        Ok(pg)
    }

    /// Runs `sql` with `psql -At` in `app` and returns its output, trimmed (rows on lines,
    /// columns separated by `|`). Stops at the first error, which becomes the `Err`.
    pub fn psql(&self, sql: &str) -> Result<String> {
        run(
            self.psql_command(&self.url).args(["-c", sql]),
            &format!("psql -c {sql:?}"),
        )
    }

    /// A fingerprint (SHA-256, hex) of schema and data of `app`, from `pg_dump --no-owner`.
    /// Equal fingerprints mean the same tables, columns, constraints, rows and sequence
    /// positions, which is what "the rollback restored the database" has to mean.
    pub fn data_checksum(&self) -> Result<String> {
        let pg_dump = client(&self.bin, "pg_dump").ok_or_else(|| anyhow!("pg_dump not found"))?;
        let dump = run(
            Command::new(pg_dump).args(["--no-owner", "--dbname", &self.url]),
            "pg_dump",
        )?;
        Ok(sha256::hex(normalize_dump(&dump).as_bytes()))
    }

    /// The URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn initdb(&self) -> Result<()> {
        let mut initdb = self.server_command("initdb");
        // --no-sync: nothing here must survive a crash, and syncing is most of initdb's time.
        initdb.arg("-D").arg(&self.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let Err(err) = run(&mut initdb, "initdb") else {
            return Ok(());
        };
        Err(match &self.run_as {
            Some(user) => err.context(format!(
                "running initdb as {user} (the tests run as root); \
                 {user} must be able to reach {}",
                self.dir.path().display()
            )),
            None => err,
        })
    }

    fn start_server(&mut self) -> Result<()> {
        let log = self.dir.path().join("postgres.log");
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port();
            // Durability is off: a test database is thrown away, and fsyncs are slow on CI disks.
            let options = format!(
                "-h 127.0.0.1 -p {} -k '{}' \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                self.port,
                self.dir.path().display()
            );
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-s", "-o", &options, "start"]);
            let started = run(&mut pg_ctl, "pg_ctl start");
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            match started {
                Ok(_) => return Ok(()),
                Err(_) if attempt < START_ATTEMPTS && log_text.contains("could not bind") => {
                    thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                }
                Err(err) => {
                    let tail: Vec<&str> = log_text.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(err.context(format!(
                        "starting PostgreSQL; server log:\n{}",
                        tail.join("\n")
                    )));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn psql_command(&self, url: &str) -> Command {
        let psql = client(&self.bin, "psql").unwrap_or_else(|| PathBuf::from("psql"));
        let mut command = Command::new(psql);
        // -X: a developer's ~/.psqlrc must not change what tests see.
        command.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "--dbname", url]);
        command
    }

    /// `initdb`/`pg_ctl` from the server's bin dir, as the server user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let runuser =
                    find_program("runuser", SBIN).unwrap_or_else(|| PathBuf::from("runuser"));
                let mut command = Command::new(runuser);
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        // The caller's cwd may be unreadable to the server user; initdb and postgres mind that.
        command.current_dir(self.dir.path()).env("LC_ALL", "C");
        command
    }
}

impl Postgres {
    /// Stop the server now, as a crash would (tests of what happens when the database goes
    /// away mid-deploy). Stopping twice is harmless.
    pub fn stop(&self) {
        // Immediate: no checkpoint, the data is about to be deleted anyway.
        let mut stop = self.server_command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-s", "stop"]);
        let _ = stop.output();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bin dir with initdb, pg_ctl and postgres: the highest version under
/// /usr/lib/postgresql (Debian's layout, not on PATH), else the directory of `initdb` on PATH.
fn server_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let initdb = find_program("initdb", &[])?;
    let dir = initdb.parent()?.to_path_buf();
    has_server(&dir).then_some(dir)
}

/// A client program, preferring the server's own version (pg_dump refuses newer servers).
fn client(bin: &Path, program: &str) -> Option<PathBuf> {
    let own = bin.join(program);
    if own.is_file() {
        Some(own)
    } else {
        find_program(program, &[])
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid; `id -u` covers systems without /proc.
    match fs::metadata("/proc/self") {
        Ok(meta) => meta.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0"),
    }
}

/// Makes `dir` owned by the unprivileged server user and returns that user's name.
fn hand_over_to_server_user(dir: &Path) -> Result<String> {
    let (name, uid, gid) = server_user()?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to user {name}", dir.display()))?;
    Ok(name)
}

/// `pgtest`, created as a system user if missing; `nobody` where users cannot be added.
///
/// Creation is serialised through a lock file shared by all test processes: concurrent
/// `useradd`s do not just fail, one can briefly show a user in /etc/passwd that it then
/// rolls back, and a server started as that uid dies with "user does not exist".
fn server_user() -> Result<(String, u32, u32)> {
    if let Some((uid, gid)) = lookup_user(SERVER_USER) {
        return Ok((SERVER_USER.to_owned(), uid, gid));
    }
    let lock_path = std::env::temp_dir().join("testkit-useradd.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let mut failure = String::from("useradd not found");
    for attempt in 1..=3u64 {
        if let Some((uid, gid)) = lookup_user(SERVER_USER) {
            return Ok((SERVER_USER.to_owned(), uid, gid));
        }
        let Some(useradd) = find_program("useradd", SBIN) else {
            break;
        };
        let mut command = Command::new(useradd);
        command
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
            ])
            .args(["--shell", "/usr/sbin/nologin", SERVER_USER]);
        match run(&mut command, "useradd") {
            Ok(_) => failure.clear(),
            // Someone outside the kit may be editing /etc/passwd: wait and look again.
            Err(err) => {
                failure = format!("{err:#}");
                thread::sleep(Duration::from_millis(200 * attempt));
            }
        }
    }
    if let Some((uid, gid)) = lookup_user(SERVER_USER) {
        return Ok((SERVER_USER.to_owned(), uid, gid));
    }
    let (uid, gid) = lookup_user("nobody").ok_or_else(|| {
        anyhow!(
            "running as root, and neither user {SERVER_USER} ({failure}) \
             nor nobody exists to run PostgreSQL as"
        )
    })?;
    eprintln!(
        "testkit: cannot create user {SERVER_USER} ({failure}); running PostgreSQL as nobody"
    );
    Ok(("nobody".to_owned(), uid, gid))
}

/// uid and gid of `name` from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// What of a plain-format dump the fingerprint covers. Two things vary between dumps of
/// equal databases and are taken out: the random `\restrict` key that pg_dump writes since
/// 17.6/16.10/15.14, and the order of rows inside a `COPY` block, which follows their
/// physical position (an UPDATE, or a restore, moves rows without changing the table).
fn normalize_dump(dump: &str) -> String {
    let mut out = String::with_capacity(dump.len());
    let mut rows: Option<Vec<&str>> = None;
    for line in dump.lines() {
        if let Some(block) = rows.as_mut() {
            if line == "\\." {
                block.sort_unstable();
                for row in block.iter() {
                    out.push_str(row);
                    out.push('\n');
                }
                rows = None;
            } else {
                block.push(line);
                continue;
            }
        } else if line.starts_with("\\restrict ") || line.starts_with("\\unrestrict ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("COPY ") && line.ends_with(" FROM stdin;") {
            rows = Some(Vec::new());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require;

    const NEEDS: &str = "PostgreSQL (initdb, pg_ctl, postgres, psql, pg_dump)";

    #[test]
    fn starts_answers_and_fingerprints_its_data() {
        if !require(NEEDS, Postgres::available()) {
            return;
        }
        let pg = Postgres::start().unwrap();
        assert_eq!(
            pg.url,
            format!("postgres://postgres@127.0.0.1:{}/app", pg.port)
        );
        assert_eq!(pg.psql("select 1").unwrap(), "1");
        assert_eq!(pg.psql("select current_database()").unwrap(), "app");

        pg.psql("create table t (id serial primary key, v text)")
            .unwrap();
        let empty = pg.data_checksum().unwrap();
        assert_eq!(
            pg.data_checksum().unwrap(),
            empty,
            "nothing changed, same fingerprint"
        );

        pg.psql("insert into t (v) values ('a'), ('b')").unwrap();
        let two_rows = pg.data_checksum().unwrap();
        assert_ne!(two_rows, empty);
        assert_eq!(pg.data_checksum().unwrap(), two_rows);

        // An update that writes back the same values moves rows physically, not logically.
        pg.psql("update t set v = v where id = 1").unwrap();
        assert_eq!(pg.data_checksum().unwrap(), two_rows);

        pg.psql("update t set v = 'c' where id = 1").unwrap();
        assert_ne!(pg.data_checksum().unwrap(), two_rows);
    }

    #[test]
    fn reports_sql_errors() {
        if !require(NEEDS, Postgres::available()) {
            return;
        }
        let pg = Postgres::start().unwrap();
        let err = pg
            .psql("select * from no_such_table")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_table"), "{err}");
    }

    #[test]
    fn drop_stops_the_server_and_removes_its_files() {
        if !require(NEEDS, Postgres::available()) {
            return;
        }
        let pg = Postgres::start().unwrap();
        let (dir, port) = (pg.dir.path().to_path_buf(), pg.port);
        let second = Postgres::start().unwrap();
        assert_ne!(second.port, port);
        drop(pg);
        assert!(!dir.exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert_eq!(
            second.psql("select 1").unwrap(),
            "1",
            "the other server is untouched"
        );
    }

    #[test]
    fn normalized_dumps_ignore_row_order_and_restrict_keys() {
        let a = "\\restrict abc\nCOPY public.t (id) FROM stdin;\n1\n2\n\\.\n\\unrestrict abc\n";
        let b = "\\restrict xyz\nCOPY public.t (id) FROM stdin;\n2\n1\n\\.\n\\unrestrict xyz\n";
        assert_eq!(normalize_dump(a), normalize_dump(b));
        assert_eq!(
            normalize_dump(a),
            "COPY public.t (id) FROM stdin;\n1\n2\n\\.\n"
        );
        let c = "COPY public.t (id) FROM stdin;\n1\n3\n\\.\n";
        assert_ne!(normalize_dump(a), normalize_dump(c));
    }
}
