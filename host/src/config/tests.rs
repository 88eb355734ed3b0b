//! Config parsing: good files load, bad ones are located precisely.

use super::*;
use std::path::Path;

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("/tmp/app/deploy.toml"), text)
}

const GOOD: &str = r#"
[plugin]
name = "render-alembic"

[plugin.settings]
restart = ["python", "bin/restart"]
mode = "local"

[grants]
programs = ["git", "alembic"]
http = ["127.0.0.1:8000"]

[health]
base_url = "http://127.0.0.1:8000"

[[health.probes]]
path = "/health"
interval = "500ms"

[environments.staging]
settings = { mode = "render" }
timeouts = { deploy = "5m" }

[environments.production]
on_destructive = "require-approval"
"#;

#[test]
fn a_good_file_loads_and_environments_override() {
    let config = parse_str(GOOD).unwrap();
    let staging = config.environment("staging").unwrap();
    assert_eq!(staging.settings["mode"], "render");
    assert_eq!(staging.settings["restart"][0], "python");
    assert_eq!(staging.timeouts.deploy, std::time::Duration::from_secs(300));
    assert_eq!(staging.timeouts.verify, Timeouts::default().verify);
    assert_eq!(staging.health.probes[0].interval.as_millis(), 500);
    let prod = config.environment("production").unwrap();
    assert_eq!(prod.settings["mode"], "local");
    assert!(config.environment("qa").unwrap_err().contains("known: production, staging"));
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let text = GOOD.replace("http = [", "htp = [");
    let e = parse_str(&text).unwrap_err();
    assert_eq!(e.key, "grants.htp");
    assert_eq!(e.line, 11);
    let shown = e.to_string();
    assert!(shown.starts_with("/tmp/app/deploy.toml:11:"), "{shown}");
    assert!(shown.contains("unknown field `htp`"), "{shown}");
}

#[test]
fn a_wrong_type_names_the_key() {
    let text = GOOD.replace("programs = [\"git\", \"alembic\"]", "programs = \"git\"");
    let e = parse_str(&text).unwrap_err();
    assert_eq!(e.key, "grants.programs");
    assert_eq!(e.line, 10);
}

#[test]
fn a_bad_duration_names_the_key() {
    let text = GOOD.replace("interval = \"500ms\"", "interval = \"soon\"");
    let e = parse_str(&text).unwrap_err();
    assert_eq!(e.key, "health.probes[0].interval");
    assert_eq!(e.line, 18);
}

#[test]
fn a_syntax_error_gives_its_line() {
    let text = GOOD.replace("[grants]", "[grants");
    let e = parse_str(&text).unwrap_err();
    assert_eq!(e.line, 9);
}

#[test]
fn semantic_errors_are_located_too() {
    let text = GOOD.replace("path = \"/health\"", "path = \"health\"");
    let e = parse_str(&text).unwrap_err();
    assert_eq!(e.key, "health.probes[0].path");
    assert_eq!(e.line, 17);
    assert!(e.message.contains("must start with /"));

    let text = GOOD.replace("timeouts = { deploy = \"5m\" }", "timeouts = { deploi = \"5m\" }");
    let e = parse_str(&text).unwrap_err();
    assert_eq!(e.key, "environments.staging.timeouts");
    assert_eq!(e.line, 22);
}

#[test]
fn an_empty_file_is_a_valid_minimal_config() {
    let config = parse_str("").unwrap();
    assert!(config.environment("anything").is_ok());
    assert_eq!(config.file.timeouts.call.as_secs(), 10);
}

#[test]
fn base_url_takes_variables_from_the_environment() {
    assert_eq!(expand_env("http://h:${HOST_TEST_SURELY_UNSET:-8000}/x"), "http://h:8000/x");
    assert_eq!(expand_env("${HOME}"), std::env::var("HOME").unwrap());
    assert_eq!(expand_env("plain"), "plain");
}

#[test]
fn an_environment_can_grant_less() {
    let text = format!("{GOOD}\n[environments.production.grants]\nprograms = [\"git\"]\n");
    let config = parse_str(&text).unwrap();
    assert_eq!(config.environment("production").unwrap().grants.programs, vec!["git"]);
    assert_eq!(config.environment("production").unwrap().grants.http, vec!["127.0.0.1:8000"]);
    assert_eq!(config.environment("staging").unwrap().grants.programs, vec!["git", "alembic"]);
}

#[test]
fn trusted_keys_are_checked() {
    let e = parse_str("[trust]\nkeys = [\"abc\"]\n").unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("trust.keys[0]", 2));
}
