//! Migration versions: which files a revision has, which versions the database has applied
//! (`schema_migrations`, or `bin/rails db:migrate:status`), and what follows from comparing
//! them: what is pending, what the database knows that no file has (`NO FILE`), and how many
//! steps `db:rollback` needs to go back to a version.
//!
//! Pending is computed from the database, never from the git history: code that is already up
//! to date may still have migrations the database never ran.

use std::collections::BTreeSet;

/// A migration file: `db/migrate/20250113103000_add_nickname_to_users.rb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    pub version: u64,
    pub path: String,
    /// `add_nickname_to_users`.
    pub name: String,
}

impl MigrationFile {
    /// `Add nickname to users`, as `db:migrate:status` shows it.
    pub fn description(&self) -> String {
        let mut words = self.name.replace('_', " ");
        if let Some(first) = words.get(..1) {
            words = first.to_uppercase() + &words[1..];
        }
        words
    }
}

/// The migration a path names, when its file name is `<digits>_<name>.rb`.
pub fn migration_file(path: &str) -> Option<MigrationFile> {
    let file = path.rsplit('/').next()?;
    let stem = file.strip_suffix(".rb")?;
    let (digits, name) = stem.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some(MigrationFile {
        version: digits.parse().ok()?,
        path: path.to_string(),
        name: name.to_string(),
    })
}

/// Migration files among paths (anything else in the folder is left out), oldest first.
/// Two files with one version is an error Rails refuses too (DuplicateMigrationVersionError).
pub fn migration_files<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<MigrationFile>, String> {
    let mut files: Vec<MigrationFile> = paths.into_iter().filter_map(migration_file).collect();
    files.sort_by_key(|f| f.version);
    if let Some(w) = files.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(format!(
            "two migrations have version {}: {} and {}",
            w[0].version, w[0].path, w[1].path
        ));
    }
    Ok(files)
}

/// One line of `bin/rails db:migrate:status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub up: bool,
    pub version: u64,
    /// `Add nickname to users`, or `********** NO FILE **********`.
    pub name: String,
}

impl StatusLine {
    pub fn no_file(&self) -> bool {
        self.name.contains("NO FILE")
    }
}

/// The `up`/`down` lines of `db:migrate:status` (headers and blank lines are skipped).
pub fn parse_status(stdout: &str) -> Vec<StatusLine> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let up = match parts.next()? {
                "up" => true,
                "down" => false,
                _ => return None,
            };
            let version = parts.next()?.parse().ok()?;
            Some(StatusLine {
                up,
                version,
                name: parts.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// What `db:migrate:status` says on a database where nothing ever ran.
pub fn schema_table_missing(output: &str) -> bool {
    output.contains("Schema migrations table does not exist yet")
}

/// Versions from `schema_migrations.version` values (text in the table).
pub fn parse_versions<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<u64>, String> {
    values
        .into_iter()
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                format!("schema_migrations holds {v:?}, which is not a migration version")
            })
        })
        .collect()
}

/// Files whose version the database has not applied, oldest first.
pub fn pending<'a>(applied: &BTreeSet<u64>, files: &'a [MigrationFile]) -> Vec<&'a MigrationFile> {
    files
        .iter()
        .filter(|f| !applied.contains(&f.version))
        .collect()
}

/// Applied versions no file has (`NO FILE` in `db:migrate:status`).
pub fn unknown(applied: &BTreeSet<u64>, files: &[MigrationFile]) -> Vec<u64> {
    applied
        .iter()
        .copied()
        .filter(|v| !files.iter().any(|f| f.version == *v))
        .collect()
}

/// The `STEP` for `bin/rails db:rollback STEP=n` that takes the database back to `target`
/// (every applied version above it reverted), with the migration files of the code checked
/// out. None when there is nothing to revert.
///
/// Rails counts steps over the *files*, from the newest applied one down: the step lands on
/// the file below it, and every applied migration above that one is reverted. So `n` is the
/// number of files between `target` (excluded) and the newest applied version (included);
/// the newest applied version must have a file, or Rails refuses to start.
pub fn rollback_steps(
    applied: &BTreeSet<u64>,
    files: &[MigrationFile],
    target: u64,
) -> Result<Option<usize>, String> {
    let has_file = |v: u64| files.iter().any(|f| f.version == v);
    let to_revert: Vec<u64> = applied
        .iter()
        .copied()
        .filter(|v| *v > target && has_file(*v))
        .collect();
    if to_revert.is_empty() {
        return Ok(None);
    }
    let newest = *applied.iter().next_back().expect("not empty");
    if !has_file(newest) {
        return Err(format!(
            "the newest applied version, {newest}, has no file in this checkout: `db:rollback` cannot count steps from it"
        ));
    }
    Ok(Some(
        files
            .iter()
            .filter(|f| f.version > target && f.version <= newest)
            .count(),
    ))
}

/// Versions `db:migrate` (or `db:rollback`) reports as done: `== 20250113103000 AddX: migrated`.
pub fn parse_migrated(stdout: &str, verb: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("== ")?;
            let (version, rest) = rest.split_once(' ')?;
            rest.contains(&format!(": {verb} ("))
                .then(|| version.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\ndatabase: app\n\n Status   Migration ID    Migration Name\n--------------------------------------------------\n   up     20241231000000  ********** NO FILE **********\n   up     20250106090000  Create users\n  down    20250113103000  Add nickname to users\n\n";

    fn files(versions: &[u64]) -> Vec<MigrationFile> {
        versions
            .iter()
            .map(|v| MigrationFile {
                version: *v,
                path: format!("db/migrate/{v}_m{v}.rb"),
                name: format!("m{v}"),
            })
            .collect()
    }

    #[test]
    fn file_names() {
        let f = migration_file("db/migrate/20250113103000_add_nickname_to_users.rb").unwrap();
        assert_eq!(
            (f.version, f.name.as_str()),
            (20250113103000, "add_nickname_to_users")
        );
        assert_eq!(f.description(), "Add nickname to users");
        assert_eq!(
            migration_file("db/migrate/001_legacy.rb").unwrap().version,
            1
        );
        for not in [
            "db/migrate/README.md",
            "db/migrate/helpers.rb",
            "db/migrate/2025_.rb",
            "db/migrate/x_y.rb",
        ] {
            assert!(migration_file(not).is_none(), "{not}");
        }
        let sorted =
            migration_files(["db/migrate/3_c.rb", "db/migrate/1_a.rb", "db/migrate/.keep"])
                .unwrap();
        assert_eq!(sorted.iter().map(|f| f.version).collect::<Vec<_>>(), [1, 3]);
        assert!(
            migration_files(["db/migrate/1_a.rb", "db/migrate/1_b.rb"])
                .unwrap_err()
                .contains("two migrations have version 1")
        );
    }

    #[test]
    fn status_lines() {
        let lines = parse_status(STATUS);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].up && lines[0].no_file());
        assert_eq!(
            lines[2],
            StatusLine {
                up: false,
                version: 20250113103000,
                name: "Add nickname to users".into()
            }
        );
        assert!(schema_table_missing(
            "Schema migrations table does not exist yet.\n"
        ));
        assert!(parse_status("Schema migrations table does not exist yet.").is_empty());
    }

    #[test]
    fn pending_and_unknown_come_from_the_database() {
        let applied: BTreeSet<u64> = parse_status(STATUS)
            .iter()
            .filter(|l| l.up)
            .map(|l| l.version)
            .collect();
        let target = files(&[20250106090000, 20250113103000]);
        let pending: Vec<u64> = pending(&applied, &target)
            .iter()
            .map(|f| f.version)
            .collect();
        assert_eq!(pending, [20250113103000]);
        assert_eq!(unknown(&applied, &target), [20241231000000]);
        assert_eq!(parse_versions(["20250106090000", " 1 "]).unwrap().len(), 2);
        assert!(parse_versions(["abc"]).is_err());
    }

    #[test]
    fn rollback_counts_files_from_the_newest_applied() {
        let f = files(&[1, 2, 3, 4]);
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        // The deploy applied 3 and 4 on top of 2.
        assert_eq!(rollback_steps(&set(&[1, 2, 3, 4]), &f, 2), Ok(Some(2)));
        // It stopped after 3 (4 failed): one step.
        assert_eq!(rollback_steps(&set(&[1, 2, 3]), &f, 2), Ok(Some(1)));
        // Nothing above the target: nothing to do.
        assert_eq!(rollback_steps(&set(&[1, 2]), &f, 2), Ok(None));
        // Back to an empty schema.
        assert_eq!(rollback_steps(&set(&[1, 2]), &f, 0), Ok(Some(2)));
        // 3 never ran (out of order) but counts as a step: Rails lands on the file below it.
        assert_eq!(rollback_steps(&set(&[1, 2, 4]), &f, 2), Ok(Some(2)));
        // The newest applied version has no file: Rails cannot start counting.
        assert!(
            rollback_steps(&set(&[1, 2, 3, 9]), &f, 2)
                .unwrap_err()
                .contains("9")
        );
    }

    #[test]
    fn migrate_output() {
        let out = "== 20250113103000 AddNicknameToUsers: migrating =====\n-- add_column(:users, :nickname, :string)\n   -> 0.0007s\n== 20250113103000 AddNicknameToUsers: migrated (0.0008s) =====\n";
        assert_eq!(parse_migrated(out, "migrated"), [20250113103000]);
        assert!(parse_migrated(out, "reverted").is_empty());
    }
}
