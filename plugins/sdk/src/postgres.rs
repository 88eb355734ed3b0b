//! PostgreSQL backups and restores, shared by every stack whose database is PostgreSQL.
//!
//! A backup is `pg_dump --format=custom`, checked with `pg_restore --list` before anything
//! migrates; a restore empties `public` (recreating it exactly as it was) and restores the dump
//! in one transaction, so the database comes back equal to the moment of the backup.

use crate::{BackupInfo, Command, PluginError, Result, cmd, run};

pub fn mkdir_backups(dir: &str) -> Command {
    cmd::change("mkdir", &["-p", dir], "make the backup folder")
}

pub fn pg_dump(url: &str, file: &str) -> Command {
    cmd::change(
        "pg_dump",
        &["--format=custom", "--no-owner", "--file", file, "--dbname", url],
        "back the database up before migrating",
    )
}

pub fn pg_restore_list(file: &str) -> Command {
    cmd::read("pg_restore", &["--list", file], "check the backup is readable")
}

/// Whether `pg_restore --list` printed an archive's header (it does for any readable dump,
/// even one of an empty database, which has no entries).
pub fn is_archive_listing(listing: &str) -> bool {
    listing.lines().any(|l| l.starts_with("; Archive created at"))
}

/// Empties `public` so the backup restores into exactly what it was taken from, including
/// objects created after it. The schema itself is recreated as it was (owner, grants, comment:
/// PostgreSQL 15 gives `public` to `pg_database_owner` with USAGE for everyone), or a restored
/// database would differ from the original and the app's role could lose access.
pub const RESET_PUBLIC_SCHEMA: &str = r#"DO $reset$
DECLARE
  owner_name text;
  comment_text text;
  grants text;
BEGIN
  SELECT n.nspowner::regrole::text, obj_description(n.oid, 'pg_namespace')
    INTO owner_name, comment_text FROM pg_namespace n WHERE n.nspname = 'public';
  SELECT string_agg(format('GRANT %s ON SCHEMA public TO %s;', a.privilege_type,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END), ' ')
    INTO grants FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'public';
  DROP SCHEMA public CASCADE;
  EXECUTE format('CREATE SCHEMA public AUTHORIZATION %s', owner_name);
  IF grants IS NOT NULL THEN EXECUTE grants; END IF;
  IF comment_text IS NOT NULL THEN EXECUTE format('COMMENT ON SCHEMA public IS %L', comment_text); END IF;
END
$reset$;"#;

/// `-X`: ignore any `~/.psqlrc`, which could change what the statement does.
pub fn psql_reset_schema(url: &str) -> Command {
    cmd::change(
        "psql",
        &["-X", "-v", "ON_ERROR_STOP=1", "--dbname", url, "-c", RESET_PUBLIC_SCHEMA],
        "empty the schema before restoring the backup",
    )
}

pub fn pg_restore(url: &str, file: &str) -> Command {
    cmd::change(
        "pg_restore",
        &["--no-owner", "--single-transaction", "--exit-on-error", "--dbname", url, file],
        "restore the database from the backup",
    )
}

/// Back up with `pg_dump -F c` into `<dir>/<environment>-<deployment-id>.dump` and check it
/// reads back. Under dry-run the dump is only planned, so it is not checked (`verified: false`).
pub fn backup(url: &str, dir: &str, environment: &str, deployment_id: &str) -> Result<BackupInfo> {
    let path = backup_path(dir, environment, deployment_id);
    run(&mkdir_backups(dir))?;
    let dump = run(&pg_dump(url, &path))?;
    let verified = !dump.planned && {
        let listing = run(&pg_restore_list(&path))?;
        if !is_archive_listing(&listing.stdout) {
            return Err(PluginError::new(format!("backup {path} was written but `pg_restore --list` cannot read it"))
                .with_hint("check that pg_dump's major version matches the server's"));
        }
        true
    };
    Ok(BackupInfo { path, format: "pg_dump-custom".into(), verified })
}

/// Put the database back as it was when `file` was dumped.
pub fn restore(url: &str, file: &str) -> Result<()> {
    run(&psql_reset_schema(url))?;
    run(&pg_restore(url, file))?;
    Ok(())
}

/// `<backup_dir>/<environment>-<deployment-id>.dump`, both ids reduced to file-name-safe
/// characters (they come from the operator and the host).
pub fn backup_path(dir: &str, environment: &str, deployment_id: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
    };
    format!("{dir}/{}-{}.dump", safe(environment), safe(deployment_id))
}

/// Parameters libpq understands in a URL's query; frameworks add their own (Rails' `pool`,
/// `prepared_statements`, ...), which pg_dump would refuse.
const LIBPQ_PARAMS: &[&str] = &[
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "connect_timeout",
    "client_encoding", "options", "application_name", "sslmode", "sslcert", "sslkey",
    "sslrootcert", "sslcrl", "sslpassword", "target_session_attrs", "keepalives", "gssencmode",
    "channel_binding", "service",
];

/// A URL libpq tools accept, from the one an app framework reads: SQLAlchemy's
/// `postgresql+psycopg2://` and Rails' `postgis://` become `postgresql://`, and query
/// parameters libpq does not know are dropped.
pub fn libpq_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let base_scheme = scheme.split('+').next().unwrap_or(scheme);
    let scheme = match base_scheme {
        "postgres" | "postgresql" => base_scheme,
        "postgis" => "postgresql",
        _ => return url.to_string(),
    };
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && LIBPQ_PARAMS.contains(&p.split('=').next().unwrap_or("")))
        .collect();
    if kept.is_empty() { format!("{scheme}://{base}") } else { format!("{scheme}://{base}?{}", kept.join("&")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_what_libpq_accepts() {
        assert_eq!(libpq_url("postgresql+psycopg2://u:p@h/db"), "postgresql://u:p@h/db");
        assert_eq!(libpq_url("postgis://u@h/db?pool=5&sslmode=require"), "postgresql://u@h/db?sslmode=require");
        assert_eq!(libpq_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(libpq_url("mysql://h/db"), "mysql://h/db");
    }

    #[test]
    fn backups_are_checked_by_their_header() {
        assert!(is_archive_listing(";\n; Archive created at 2026-02-22 10:00:00 UTC\n;\n"));
        assert!(!is_archive_listing("pg_restore: error: input file does not appear to be a valid archive\n"));
        assert_eq!(backup_path("backups", "prod uction", "dep/1"), "backups/prod_uction-dep_1.dump");
        assert_eq!(pg_restore_list("f").argv(), ["pg_restore", "--list", "f"]);
        assert!(!pg_restore_list("f").mutates && pg_dump("u", "f").mutates);
    }
}
