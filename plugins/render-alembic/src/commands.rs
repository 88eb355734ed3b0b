//! Every command the plugin asks the host to run, built as plain data (argv, intent, purpose).
//!
//! `read` commands run for real under `--dry-run` (preflight must see the true state); `change`
//! commands are only listed. Nothing here goes through a shell, so values are single argv items.

use crate::settings::Settings;
use plugin_sdk::{Command, cmd};

// Git and PostgreSQL backups are the same for every stack that uses them: they live in the SDK.
pub use plugin_sdk::git::{
    checkout as git_checkout, dirty as git_dirty, dirty_count, head as git_head,
    ls_tree as git_list_migrations, resolve as git_resolve, short, show as git_show,
};
pub use plugin_sdk::postgres::{
    RESET_PUBLIC_SCHEMA, backup_path, is_archive_listing, libpq_url, mkdir_backups, pg_dump,
    pg_restore, pg_restore_list, psql_reset_schema,
};

fn alembic(s: &Settings, args: &[&str], purpose: &str, mutates: bool) -> Command {
    let (program, prefix) = s
        .alembic
        .split_first()
        .map_or(("alembic", &[][..]), |(p, rest)| (p.as_str(), rest));
    let mut args_all: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args_all.extend_from_slice(args);
    let command = if mutates {
        cmd::change(program, &args_all, purpose)
    } else {
        cmd::read(program, &args_all, purpose)
    };
    match (mutates, s.migration_timeout_ms) {
        (true, Some(ms)) => command.timeout_ms(ms),
        _ => command,
    }
}

pub fn alembic_current(s: &Settings) -> Command {
    alembic(
        s,
        &["current"],
        "read the database's schema revision",
        false,
    )
}

pub fn alembic_upgrade(s: &Settings) -> Command {
    alembic(s, &["upgrade", "head"], "apply pending migrations", true)
}

/// Downgrade to `target`, or to an empty schema when there was no revision before.
pub fn alembic_downgrade(s: &Settings, target: Option<&str>) -> Command {
    alembic(
        s,
        &["downgrade", target.unwrap_or("base")],
        "reverse this deployment's migrations",
        true,
    )
}

pub fn restart(s: &Settings) -> Option<Command> {
    cmd::from_argv(
        s.restart.as_deref()?,
        "restart the app on the new code",
        true,
    )
}

/// `.py` migration files from `git ls-tree --name-only` output (package markers left out).
pub fn migration_paths(ls_tree: &str) -> Vec<String> {
    ls_tree
        .lines()
        .map(str::trim)
        .filter(|p| p.ends_with(".py") && !p.ends_with("/__init__.py") && *p != "__init__.py")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        c.argv()
    }

    #[test]
    fn git_commands() {
        assert_eq!(
            argv(&git_resolve("v1.2")),
            [
                "git",
                "rev-parse",
                "--verify",
                "--end-of-options",
                "v1.2^{commit}"
            ]
        );
        assert!(!git_resolve("main").mutates);
        assert_eq!(
            argv(&git_list_migrations("abc", "migrations/versions")),
            [
                "git",
                "ls-tree",
                "--name-only",
                "abc",
                "--",
                "migrations/versions/"
            ]
        );
        assert_eq!(
            argv(&git_show("abc", "migrations/versions/0001_x.py")),
            ["git", "show", "abc:./migrations/versions/0001_x.py"]
        );
        let checkout = git_checkout("5d6e7f8");
        assert_eq!(
            argv(&checkout),
            ["git", "checkout", "--force", "--detach", "5d6e7f8"]
        );
        assert!(checkout.mutates);
    }

    #[test]
    fn alembic_commands_use_the_prefix_and_the_timeout() {
        let s = Settings {
            alembic: vec!["python".into(), "-m".into(), "alembic".into()],
            migration_timeout_ms: Some(60_000),
            ..Settings::default()
        };
        let current = alembic_current(&s);
        assert_eq!(argv(&current), ["python", "-m", "alembic", "current"]);
        assert!(!current.mutates);
        assert_eq!(current.timeout_ms, None);
        let up = alembic_upgrade(&s);
        assert_eq!(argv(&up), ["python", "-m", "alembic", "upgrade", "head"]);
        assert!(up.mutates);
        assert_eq!(up.timeout_ms, Some(60_000));
        assert_eq!(
            argv(&alembic_downgrade(&s, Some("0002"))),
            ["python", "-m", "alembic", "downgrade", "0002"]
        );
        assert_eq!(
            argv(&alembic_downgrade(&Settings::default(), None)),
            ["alembic", "downgrade", "base"]
        );
    }

    #[test]
    fn restart_is_optional() {
        assert!(restart(&Settings::default()).is_none());
        let s = Settings {
            restart: Some(vec!["python".into(), "bin/restart".into()]),
            ..Settings::default()
        };
        let r = restart(&s).unwrap();
        assert_eq!(argv(&r), ["python", "bin/restart"]);
        assert!(r.mutates);
    }

    #[test]
    fn backup_and_restore_commands() {
        let url = "postgresql://app:pw@db:5432/app";
        let file = backup_path("backups", "production", "dep 42/x");
        assert_eq!(file, "backups/production-dep_42_x.dump");
        assert_eq!(argv(&mkdir_backups("backups")), ["mkdir", "-p", "backups"]);
        assert_eq!(
            argv(&pg_dump(url, &file)),
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                "--file",
                &file,
                "--dbname",
                url
            ]
        );
        let list = pg_restore_list(&file);
        assert_eq!(argv(&list), ["pg_restore", "--list", &file]);
        assert!(!list.mutates);
        assert_eq!(
            argv(&psql_reset_schema(url)),
            [
                "psql",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "--dbname",
                url,
                "-c",
                RESET_PUBLIC_SCHEMA
            ]
        );
        assert_eq!(
            argv(&pg_restore(url, &file)),
            [
                "pg_restore",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                "--dbname",
                url,
                &file
            ]
        );
    }

    #[test]
    fn urls_for_libpq() {
        assert_eq!(
            libpq_url("postgresql+psycopg2://u:p@h/db"),
            "postgresql://u:p@h/db"
        );
        assert_eq!(libpq_url("postgres://u:p@h/db"), "postgres://u:p@h/db");
        assert_eq!(libpq_url("sqlite:///x.db"), "sqlite:///x.db");
    }

    #[test]
    fn output_readers() {
        let listing = ";\n; Archive created at 2026-02-22 10:00:00 UTC\n;     dbname: app\n;\n; Selected TOC Entries:\n;\n3336; 0 0 ENCODING - ENCODING\n215; 1259 16386 TABLE public users app\n";
        assert!(is_archive_listing(listing));
        assert!(!is_archive_listing("pg_restore: error: input file does not appear to be a valid archive\n"));
        assert_eq!(dirty_count(" M app/views.py\nM  deploy.toml\n"), 2);
        assert_eq!(
            migration_paths(
                "migrations/versions/0001_create_users.py\nmigrations/versions/__init__.py\nmigrations/versions/README\n"
            ),
            vec!["migrations/versions/0001_create_users.py"]
        );
        assert_eq!(short("5d6e7f8a9b"), "5d6e7f8");
    }
}
