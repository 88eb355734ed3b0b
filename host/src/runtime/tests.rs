//! Loading the real render-alembic component: the compile cache, describe, contract checks.

use super::*;
use crate::capabilities::CapabilityContext;

fn component() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/render-alembic.wasm");
    testkit::require("target/plugins/render-alembic.wasm (cargo xtask build-plugins)", path.exists()).then_some(path)
}

fn calls<'a>(runtime: &'a Runtime, plugin: &'a LoadedPlugin) -> PluginCalls<'a> {
    let caps = CapabilityContext::deny_all("render-alembic", std::env::temp_dir());
    PluginCalls::new(runtime, plugin, "render-alembic", CallLimits::default(), Arc::new(move || CapabilityHost::new(caps.clone())))
}

#[tokio::test]
async fn the_second_load_comes_from_the_cache_and_behaves_the_same() {
    let Some(path) = component() else { return };
    let cache = tempfile::tempdir().unwrap();
    let first = Runtime::new(Some(cache.path().to_path_buf())).unwrap();
    let cold = first.load(&path).unwrap();
    assert!(!cold.from_cache);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1, "one compiled artefact written");

    let second = Runtime::new(Some(cache.path().to_path_buf())).unwrap();
    let warm = second.load(&path).unwrap();
    assert!(warm.from_cache);
    assert_eq!(warm.digest, cold.digest);
    assert_eq!(warm.contract_version, "1.0.0");
    assert!(warm.load_time < cold.load_time, "cached {:?} vs cold {:?}", warm.load_time, cold.load_time);

    let d = calls(&second, &warm).describe().await.unwrap();
    assert_eq!(d.name, "render-alembic");
    assert!(d.default_probes.iter().any(|p| p.path == "/health"));
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled() {
    let Some(path) = component() else { return };
    let cache = tempfile::tempdir().unwrap();
    Runtime::new(Some(cache.path().to_path_buf())).unwrap().load(&path).unwrap();
    let entry = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&entry, b"garbage").unwrap();
    let plugin = Runtime::new(Some(cache.path().to_path_buf())).unwrap().load(&path).unwrap();
    assert!(!plugin.from_cache);
}

#[tokio::test]
async fn a_denied_capability_comes_back_as_the_plugins_error_not_a_trap() {
    let Some(path) = component() else { return };
    let runtime = Runtime::new(None).unwrap();
    let plugin = runtime.load(&path).unwrap();
    let ctx = Context {
        deployment_id: "t".into(),
        environment: "staging".into(),
        project_root: "/tmp".into(),
        settings: "{}".into(),
        target_revision: Some("v1".into()),
        current_revision: None,
        last_validated_revision: None,
        dry_run: false,
    };
    let err = calls(&runtime, &plugin).preflight(&ctx).await.unwrap_err();
    let CallError::Plugin(e) = err else { panic!("expected a plugin error, got {err}") };
    assert!(e.message.contains("may not run `git`"), "{}", e.message);
}

#[test]
fn a_module_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let err = Runtime::new(None).unwrap().load(&path).err().unwrap();
    assert!(err.to_string().contains("not a valid component"), "{err}");
}
