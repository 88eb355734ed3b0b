//! Every command the plugin asks the host to run, built as plain data (argv, intent, purpose).
//!
//! `read` commands run for real under `--dry-run` (preflight must see the true state); `change`
//! commands are only listed. Nothing goes through a shell, so values are single argv items.
//! Rails commands go through the `runner` prefix (`docker exec web bin/rails ...`) when one is
//! set; git, pg_dump, pg_restore and psql always run here.

use crate::settings::Settings;
use plugin_sdk::{Command, cmd};
use std::time::Duration;

// Git and PostgreSQL backups are the same for every stack that uses them: they live in the SDK.
pub use plugin_sdk::git::{
    checkout as git_checkout, dirty as git_dirty, dirty_count, head as git_head,
    ls_tree as git_list_migrations, resolve as git_resolve, short, show as git_show,
};
pub use plugin_sdk::postgres::{
    RESET_PUBLIC_SCHEMA, backup_path, is_archive_listing, libpq_url, mkdir_backups, pg_dump,
    pg_restore, pg_restore_list, psql_reset_schema,
};

/// `[runner...] <rails...> <args>` with `vars` (and `RAILS_ENV` when the settings name one).
/// Variables reach Rails as the command's environment, or through `docker exec -e` /
/// `podman exec -e` when that is the runner: a container does not inherit the caller's.
fn rails(
    s: &Settings,
    args: &[&str],
    vars: &[(&str, &str)],
    purpose: &str,
    mutates: bool,
) -> Command {
    let mut vars: Vec<(&str, &str)> = vars.to_vec();
    if let Some(env) = &s.rails_env {
        vars.insert(0, ("RAILS_ENV", env));
    }
    let container = s.runner.len() >= 2
        && matches!(s.runner[0].rsplit('/').next(), Some("docker" | "podman"))
        && s.runner[1] == "exec";
    let mut argv: Vec<String> = s.runner.clone();
    if container {
        let flags = vars
            .iter()
            .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")]);
        argv.splice(2..2, flags);
    }
    argv.extend(s.rails.iter().cloned());
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut command = cmd::from_argv(&argv, purpose, mutates)
        .expect("settings check that `rails` names a program");
    if !container {
        for (k, v) in vars {
            command = command.env(k, v);
        }
    }
    command
}

/// Read-only: boots the app and lists every migration as up, down or `NO FILE`.
pub fn migrate_status(s: &Settings) -> Command {
    rails(
        s,
        &["db:migrate:status"],
        &[],
        "read which migrations the database has applied",
        false,
    )
}

/// `db:migrate`, killed after the migration timeout. `app_name` tags its database session
/// (libpq's PGAPPNAME) so a rollback can end it if the server is still running its query.
pub fn migrate(s: &Settings, timeout: Duration, app_name: &str) -> Command {
    rails(
        s,
        &["db:migrate"],
        &[("PGAPPNAME", app_name)],
        "apply pending migrations",
        true,
    )
    .timeout_ms(timeout.as_millis() as u64)
}

/// `db:rollback STEP=n`: reverts the newest `n` migrations (by file), with the code that
/// holds their `down`/`change` still checked out.
pub fn rollback(s: &Settings, steps: usize, timeout: Duration, app_name: &str) -> Command {
    let step = format!("STEP={steps}");
    rails(
        s,
        &["db:rollback", &step],
        &[("PGAPPNAME", app_name)],
        "revert this deployment's migrations",
        true,
    )
    .timeout_ms(timeout.as_millis() as u64)
}

pub fn restart(s: &Settings) -> Option<Command> {
    cmd::from_argv(
        s.restart.as_deref()?,
        "restart the app on the new code",
        true,
    )
}

/// The `application_name` of this deployment's migration sessions (at most 63 bytes, as
/// PostgreSQL keeps).
pub fn app_name(deployment_id: &str) -> String {
    let id: String = deployment_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!("host-deploy-{id}")
}

/// A killed `db:migrate` leaves its server session running the statement (PostgreSQL only
/// notices the client is gone when it next writes to it), holding its locks and Rails'
/// migration advisory lock: end it before reverting or restoring.
pub fn psql_end_migration_sessions(url: &str, app_name: &str) -> Command {
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{}' AND pid <> pg_backend_pid()",
        app_name.replace('\'', "")
    );
    cmd::change(
        "psql",
        &[
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "--dbname",
            url,
            "-c",
            &sql,
        ],
        "end this deployment's migration sessions still running on the server",
    )
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
            argv(&git_resolve("v2")),
            [
                "git",
                "rev-parse",
                "--verify",
                "--end-of-options",
                "v2^{commit}"
            ]
        );
        assert_eq!(
            argv(&git_list_migrations("abc", "db/migrate")),
            ["git", "ls-tree", "--name-only", "abc", "--", "db/migrate/"]
        );
        assert_eq!(
            argv(&git_show("abc", "db/migrate/1_a.rb")),
            ["git", "show", "abc:./db/migrate/1_a.rb"]
        );
        let checkout = git_checkout("5d6e7f8");
        assert_eq!(
            argv(&checkout),
            ["git", "checkout", "--force", "--detach", "5d6e7f8"]
        );
        assert!(checkout.mutates && !git_head().mutates && !git_dirty().mutates);
    }

    #[test]
    fn rails_commands_run_here_or_through_the_runner() {
        let s = Settings {
            rails_env: Some("production".into()),
            ..Settings::default()
        };
        let status = migrate_status(&s);
        assert_eq!(argv(&status), ["bin/rails", "db:migrate:status"]);
        assert!(!status.mutates);
        assert_eq!(
            status.env,
            [("RAILS_ENV".to_string(), "production".to_string())]
        );

        // A container does not inherit the caller's environment: variables go in as -e.
        let s = Settings {
            runner: vec!["docker".into(), "exec".into(), "myapp-web".into()],
            rails_env: Some("production".into()),
            ..Settings::default()
        };
        let up = migrate(&s, Duration::from_secs(600), "host-deploy-abc");
        assert_eq!(
            argv(&up),
            [
                "docker",
                "exec",
                "-e",
                "RAILS_ENV=production",
                "-e",
                "PGAPPNAME=host-deploy-abc",
                "myapp-web",
                "bin/rails",
                "db:migrate"
            ]
        );
        assert!(up.mutates && up.env.is_empty());
        assert_eq!(up.timeout_ms, Some(600_000));
        let back = rollback(&s, 2, Duration::from_secs(3), "host-deploy-abc");
        assert_eq!(
            &argv(&back)[6..],
            ["myapp-web", "bin/rails", "db:rollback", "STEP=2"]
        );
        assert_eq!(back.timeout_ms, Some(3_000));

        // Any other runner (ssh, kubectl exec ...) gets them as its own environment.
        let s = Settings {
            runner: vec!["ssh".into(), "app@web1".into()],
            ..Settings::default()
        };
        let up = migrate(&s, Duration::from_secs(60), "host-deploy-abc");
        assert_eq!(argv(&up), ["ssh", "app@web1", "bin/rails", "db:migrate"]);
        assert_eq!(
            up.env,
            [("PGAPPNAME".to_string(), "host-deploy-abc".to_string())]
        );

        let s = Settings {
            rails: vec!["bundle".into(), "exec".into(), "rails".into()],
            ..Settings::default()
        };
        assert_eq!(
            argv(&migrate_status(&s)),
            ["bundle", "exec", "rails", "db:migrate:status"]
        );
    }

    #[test]
    fn restart_is_optional() {
        assert!(restart(&Settings::default()).is_none());
        let s = Settings {
            restart: Some(vec!["bin/restart".into()]),
            ..Settings::default()
        };
        let r = restart(&s).unwrap();
        assert_eq!(argv(&r), ["bin/restart"]);
        assert!(r.mutates);
    }

    #[test]
    fn migration_sessions_are_named_and_ended() {
        let name = app_name("0f3a9c'; DROP");
        assert_eq!(name, "host-deploy-0f3a9cDROP");
        let end = psql_end_migration_sessions("postgresql://h/app", &name);
        assert!(end.mutates);
        assert!(
            argv(&end)
                .last()
                .unwrap()
                .contains("application_name = 'host-deploy-0f3a9cDROP'")
        );
    }

    #[test]
    fn backup_and_restore_commands() {
        let url = "postgresql://app:pw@db:5432/app";
        let file = backup_path("backups", "production", "dep 42/x");
        assert_eq!(file, "backups/production-dep_42_x.dump");
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
        assert!(!pg_restore_list(&file).mutates);
        assert_eq!(
            argv(&psql_reset_schema(url)).last().unwrap(),
            RESET_PUBLIC_SCHEMA
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
        assert_eq!(libpq_url("postgres://u:p@h/db"), "postgres://u:p@h/db");
        assert_eq!(
            libpq_url("postgres://u@h/db?pool=10&sslmode=require&prepared_statements=false"),
            "postgres://u@h/db?sslmode=require"
        );
        assert_eq!(libpq_url("postgis://u@h/db"), "postgresql://u@h/db");
        assert_eq!(libpq_url("sqlite3:db/x.sqlite3"), "sqlite3:db/x.sqlite3");
    }

    #[test]
    fn output_readers() {
        assert!(is_archive_listing(
            ";\n; Archive created at 2026-02-22 10:00:00 UTC\n"
        ));
        assert!(!is_archive_listing(
            "pg_restore: error: input file does not appear to be a valid archive\n"
        ));
        assert_eq!(dirty_count(" M app/models/user.rb\nM  deploy.toml\n"), 2);
        assert_eq!(short("5d6e7f8a9b"), "5d6e7f8");
    }
}
