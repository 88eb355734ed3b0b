//! Tests of the state store. Each behaviour is one scenario function run against SQLite here
//! and against PostgreSQL in `postgres` below, so both backends are held to the same contract.
//! Scenarios use unique ids and environment names so they can share a database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn new_deployment(environment: &str) -> NewDeployment {
    NewDeployment {
        id: unique("dep"),
        environment: environment.to_string(),
        kind: DeploymentKind::Deploy,
        plugin: "alembic".to_string(),
        plugin_digest: "sha256:abc".to_string(),
        requested_revision: Some("main".to_string()),
        strategy: "recreate".to_string(),
        actor: "alice".to_string(),
        dry_run: false,
    }
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::open_default(dir.path())
        .await
        .expect("open SQLite store")
}

// ---- scenarios ---------------------------------------------------------------------------

async fn environments_round_trip(store: &Store) {
    let env = unique("env");
    let empty = store.environment(&env).await.unwrap();
    assert_eq!(empty.name, env);
    assert_eq!(empty.current_revision, None);
    assert_eq!(empty.last_validated_revision, None);
    assert_eq!(empty.updated_at, None);

    store.set_current_revision(&env, "r1").await.unwrap();
    let state = store.environment(&env).await.unwrap();
    assert_eq!(state.current_revision.as_deref(), Some("r1"));
    assert_eq!(state.last_validated_revision, None);
    assert!(state.updated_at.is_some());

    store.set_validated_revision(&env, "r1").await.unwrap();
    store.set_current_revision(&env, "r2").await.unwrap();
    let state = store.environment(&env).await.unwrap();
    assert_eq!(state.current_revision.as_deref(), Some("r2"));
    assert_eq!(state.last_validated_revision.as_deref(), Some("r1"));
}

async fn deployment_round_trip(store: &Store) {
    let env = unique("env");
    let new = new_deployment(&env);
    store.begin_deployment(&new).await.unwrap();

    let unfinished = store.unfinished(&env).await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].id, new.id);
    assert_eq!(unfinished[0].status, DeploymentStatus::Running);

    store
        .update_deployment_target(&new.id, "r2", Some("r1"), "code_and_reversible_migrations")
        .await
        .unwrap();

    let preflight = store
        .phase_started(&new.id, "preflight", &json!({ "revision": "r2" }))
        .await
        .unwrap();
    store
        .phase_finished(&new.id, preflight, PhaseOutcome::Ok, None)
        .await
        .unwrap();
    let backup_phase = store
        .phase_started(&new.id, "backup", &json!({}))
        .await
        .unwrap();
    assert_eq!((preflight, backup_phase), (1, 2));

    let backup = BackupRecord {
        id: unique("bak"),
        deployment_id: new.id.clone(),
        environment: env.clone(),
        path: "/var/backups/app 1.dump".to_string(),
        format: "pg_dump-custom".to_string(),
        size_bytes: 5_000_000_000,
        sha256: "deadbeef".to_string(),
        verified: true,
        created_at: now_ms(),
    };
    store.record_backup(&backup).await.unwrap();
    store
        .phase_finished(
            &new.id,
            backup_phase,
            PhaseOutcome::Failed,
            Some("disk full"),
        )
        .await
        .unwrap();

    assert_eq!(
        store
            .record_event(&new.id, "phase_started", &json!({ "phase": "preflight" }))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_event(&new.id, "backup_made", &json!({ "id": backup.id }))
            .await
            .unwrap(),
        2
    );

    store
        .finish_deployment(&new.id, DeploymentStatus::RolledBack, Some("verify failed"))
        .await
        .unwrap();
    assert!(store.unfinished(&env).await.unwrap().is_empty());

    let record = store.deployment(&new.id).await.unwrap().expect("stored");
    assert_eq!(record.id, new.id);
    assert_eq!(record.environment, env);
    assert_eq!(record.kind, DeploymentKind::Deploy);
    assert_eq!(record.plugin, "alembic");
    assert_eq!(record.plugin_digest, "sha256:abc");
    assert_eq!(record.requested_revision.as_deref(), Some("main"));
    assert_eq!(record.target_revision.as_deref(), Some("r2"));
    assert_eq!(record.previous_revision.as_deref(), Some("r1"));
    assert_eq!(record.strategy, "recreate");
    assert_eq!(record.actor, "alice");
    assert!(!record.dry_run);
    assert_eq!(record.status, DeploymentStatus::RolledBack);
    assert_eq!(
        record.classification.as_deref(),
        Some("code_and_reversible_migrations")
    );
    assert_eq!(record.detail.as_deref(), Some("verify failed"));
    assert!(record.finished_at.unwrap() >= record.started_at);
    assert_eq!(record.backup.as_ref(), Some(&backup));

    let phases: Vec<_> = record
        .phases
        .iter()
        .map(|p| (p.seq, p.phase.as_str(), p.outcome, p.detail.as_deref()))
        .collect();
    assert_eq!(
        phases,
        [
            (1, "preflight", PhaseOutcome::Ok, None),
            (2, "backup", PhaseOutcome::Failed, Some("disk full")),
        ]
    );
    assert_eq!(record.phases[0].inputs, json!({ "revision": "r2" }));
    assert!(record.phases.iter().all(|p| p.finished_at.is_some()));

    let events = store.events(&new.id).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, "backup_made");
    assert_eq!(events[1].payload, json!({ "id": backup.id }));

    assert_eq!(
        store.backup_of(&new.id).await.unwrap(),
        Some(backup.clone())
    );
    assert_eq!(store.latest_backup(&env).await.unwrap(), Some(backup));
    assert_eq!(store.deployment("no-such-id").await.unwrap(), None);
    assert!(
        store
            .finish_deployment("no-such-id", DeploymentStatus::Failed, None)
            .await
            .is_err()
    );

    // The record is what `host history --output json` prints.
    let printed = serde_json::to_value(&record).unwrap();
    assert_eq!(printed["status"], "rolled_back");
    assert_eq!(printed["phases"][1]["outcome"], "failed");
}

/// Several tasks recording events of one deployment at once still get distinct, gapless
/// sequence numbers (on PostgreSQL this goes through the retry on a taken number).
async fn concurrent_events_get_distinct_seqs(store: &Store) {
    let new = new_deployment(&unique("env"));
    store.begin_deployment(&new).await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (store, id) = (store.clone(), new.id.clone());
            tokio::spawn(async move {
                for n in 0..5 {
                    store
                        .record_event(&id, "tick", &json!({ "writer": writer, "n": n }))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seqs: Vec<i64> = store
        .events(&new.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<i64>>());
}

async fn history_newest_first(store: &Store) {
    let env = unique("env");
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut new = new_deployment(&env);
        new.dry_run = n == 1;
        store.begin_deployment(&new).await.unwrap();
        let seq = store
            .phase_started(&new.id, "lock", &json!({ "n": n }))
            .await
            .unwrap();
        store
            .phase_finished(&new.id, seq, PhaseOutcome::Ok, None)
            .await
            .unwrap();
        ids.push(new.id);
        // Distinct start times so the order is not left to the id tie-break.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Another environment's runs stay out of this one's history.
    store
        .begin_deployment(&new_deployment(&unique("other")))
        .await
        .unwrap();

    let history = store.history(&env, 10).await.unwrap();
    let got: Vec<_> = history.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert!(history[1].dry_run);
    for (record, n) in history.iter().zip([2, 1, 0]) {
        assert_eq!(record.phases.len(), 1);
        assert_eq!(record.phases[0].inputs, json!({ "n": n }));
        assert_eq!(record.backup, None);
    }

    let limited = store.history(&env, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].id, ids[2]);
}

async fn lock_lifecycle(store: &Store) {
    let env = unique("env");
    let lease = Duration::from_secs(60);

    assert_eq!(store.lock_info(&env).await.unwrap(), None);
    assert_eq!(
        store
            .acquire_lock(&env, "alice", "deploy d1", lease)
            .await
            .unwrap(),
        LockOutcome::Acquired
    );
    match store
        .acquire_lock(&env, "bob", "deploy d2", lease)
        .await
        .unwrap()
    {
        LockOutcome::Held(info) => {
            assert_eq!(info.holder, "alice");
            assert_eq!(info.reason, "deploy d1");
            assert!(!info.is_expired(now_ms()));
        }
        LockOutcome::Acquired => panic!("bob took alice's live lock"),
    }
    // Not re-entrant: a second acquire by the same holder is refused too.
    assert!(matches!(
        store
            .acquire_lock(&env, "alice", "again", lease)
            .await
            .unwrap(),
        LockOutcome::Held(_)
    ));

    assert!(store.renew_lock(&env, "alice", lease).await.unwrap());
    assert!(!store.renew_lock(&env, "bob", lease).await.unwrap());
    assert!(!store.release_lock(&env, "bob").await.unwrap());
    assert_eq!(
        store.lock_info(&env).await.unwrap().unwrap().holder,
        "alice"
    );
    assert!(store.release_lock(&env, "alice").await.unwrap());
    assert_eq!(store.lock_info(&env).await.unwrap(), None);

    // A crashed holder's lease runs out and the next run takes over.
    assert_eq!(
        store
            .acquire_lock(&env, "crashed", "deploy d3", Duration::from_millis(1))
            .await
            .unwrap(),
        LockOutcome::Acquired
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        store
            .lock_info(&env)
            .await
            .unwrap()
            .unwrap()
            .is_expired(now_ms())
    );
    assert_eq!(
        store
            .acquire_lock(&env, "bob", "recover d3", lease)
            .await
            .unwrap(),
        LockOutcome::Acquired
    );
    let info = store.lock_info(&env).await.unwrap().unwrap();
    assert_eq!(
        (info.holder.as_str(), info.reason.as_str()),
        ("bob", "recover d3")
    );
    assert!(!store.renew_lock(&env, "crashed", lease).await.unwrap());
    assert!(store.release_lock(&env, "bob").await.unwrap());
}

async fn lock_held_for_a_person(store: &Store) {
    let env = unique("env");
    let lease = Duration::from_millis(1);
    store
        .acquire_lock(&env, "alice", "deploy d1", lease)
        .await
        .unwrap();
    assert!(
        store
            .hold_lock_with_reason(&env, "alice", "rollback failed: restore /b/1.dump")
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;

    let info = store.lock_info(&env).await.unwrap().unwrap();
    assert!(info.is_held_until_released());
    assert!(!info.is_expired(now_ms()));
    assert_eq!(info.reason, "rollback failed: restore /b/1.dump");
    // Neither a new run nor a late renewal of the old one undoes it.
    assert!(matches!(
        store
            .acquire_lock(&env, "bob", "deploy d2", Duration::from_secs(60))
            .await
            .unwrap(),
        LockOutcome::Held(_)
    ));
    assert!(
        store
            .renew_lock(&env, "alice", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .lock_info(&env)
            .await
            .unwrap()
            .unwrap()
            .is_held_until_released()
    );
    assert!(
        !store
            .hold_lock_with_reason(&env, "bob", "mine")
            .await
            .unwrap()
    );

    let removed = store.force_release(&env).await.unwrap().unwrap();
    assert_eq!(removed.holder, "alice");
    assert_eq!(store.force_release(&env).await.unwrap(), None);
    assert_eq!(
        store
            .acquire_lock(&env, "bob", "deploy d2", Duration::from_secs(60))
            .await
            .unwrap(),
        LockOutcome::Acquired
    );
}

/// Two stores (as two host processes would have) race for the same locks; every time exactly
/// one wins. Also races takeovers of an expired lease, the subtler path.
async fn concurrent_acquire(first: Store, second: Store) {
    for round in 0..10 {
        let env = unique("race");
        if round % 2 == 1 {
            first
                .acquire_lock(&env, "crashed", "old run", Duration::from_millis(1))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let race = |store: Store, holder: &'static str| {
            let env = env.clone();
            tokio::spawn(async move {
                store
                    .acquire_lock(&env, holder, "race", Duration::from_secs(60))
                    .await
                    .unwrap()
            })
        };
        let (a, b) = tokio::join!(race(first.clone(), "a"), race(second.clone(), "b"));
        let outcomes = [a.unwrap(), b.unwrap()];
        let winners = outcomes
            .iter()
            .filter(|o| **o == LockOutcome::Acquired)
            .count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        let holder = first.lock_info(&env).await.unwrap().unwrap().holder;
        for outcome in &outcomes {
            if let LockOutcome::Held(info) = outcome {
                assert_eq!(info.holder, holder, "the loser names the winner");
            }
        }
    }
}

async fn kv_round_trip(store: &Store) {
    let env = unique("env");
    assert_eq!(store.kv_get("alembic", &env, "head").await.unwrap(), None);
    store
        .kv_set("alembic", &env, "head", "abc123")
        .await
        .unwrap();
    store
        .kv_set("alembic", &env, "head", "def456")
        .await
        .unwrap();
    store
        .kv_set("django", &env, "head", "other plugin")
        .await
        .unwrap();
    assert_eq!(
        store
            .kv_get("alembic", &env, "head")
            .await
            .unwrap()
            .as_deref(),
        Some("def456")
    );
    assert_eq!(
        store
            .kv_get("django", &env, "head")
            .await
            .unwrap()
            .as_deref(),
        Some("other plugin")
    );
    assert_eq!(
        store.kv_get("alembic", "elsewhere", "head").await.unwrap(),
        None
    );
}

// ---- SQLite ------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_open_default_creates_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    assert_eq!(store.backend_name(), "sqlite");
    assert!(dir.path().join(".host/state.db").is_file());
}

#[tokio::test]
async fn sqlite_url_creates_parent_folders_and_keeps_odd_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b c/state #1.db");
    let options = SqliteConnectOptions::new().filename(&path);
    // An explicit read-write mode means "this file must exist": nothing is created.
    let existing_only = options.to_url_lossy();
    assert!(existing_only.as_str().contains("mode=rw&"));
    assert!(Store::open(existing_only.as_str()).await.is_err());
    assert!(!path.exists());

    let url = options.create_if_missing(true).to_url_lossy();
    let store = Store::open(url.as_str()).await.unwrap();
    store.kv_set("p", "e", "k", "v").await.unwrap();
    assert!(path.is_file());

    let plain = dir.path().join("x/y/state.db");
    Store::open(&format!("sqlite://{}", plain.display()))
        .await
        .unwrap();
    assert!(plain.is_file());
}

#[tokio::test]
async fn unsupported_url_is_refused_without_its_password() {
    let err = Store::open("mysql://root:hunter2@db/app")
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("unsupported state store URL"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn sqlite_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_migrations_run_twice_are_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    store.set_validated_revision("prod", "r1").await.unwrap();
    store.initialise().await.unwrap();
    drop(store);

    let reopened = sqlite_store(&dir).await;
    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
        .fetch_one(&reopened.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64);
    let state = reopened.environment("prod").await.unwrap();
    assert_eq!(state.last_validated_revision.as_deref(), Some("r1"));
}

#[tokio::test]
async fn sqlite_concurrent_first_open_of_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/fresh.db", dir.path().display());
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every concurrent open succeeds");
    }
}

#[tokio::test]
async fn sqlite_environments_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    environments_round_trip(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_deployment_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    deployment_round_trip(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_history_newest_first_with_phases() {
    let dir = tempfile::tempdir().unwrap();
    history_newest_first(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_lock_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    lock_lifecycle(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_lock_held_for_a_person() {
    let dir = tempfile::tempdir().unwrap();
    lock_held_for_a_person(&sqlite_store(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_acquire_from_two_stores() {
    let dir = tempfile::tempdir().unwrap();
    let first = sqlite_store(&dir).await;
    let second = sqlite_store(&dir).await;
    concurrent_acquire(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_events_get_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_events_get_distinct_seqs(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_kv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    kv_round_trip(&sqlite_store(&dir).await).await;
}

// ---- PostgreSQL --------------------------------------------------------------------------

/// The same scenarios against a throwaway PostgreSQL server per test (skipped when PostgreSQL
/// is not installed, a failure under `CI=true`; see `testkit::require`).
mod postgres {
    use testkit::{Postgres, require};

    use super::*;

    fn start() -> Option<Postgres> {
        if !require("PostgreSQL", Postgres::available()) {
            return None;
        }
        Some(Postgres::start().expect("starting PostgreSQL"))
    }

    #[tokio::test]
    async fn postgres_round_trips() {
        let Some(pg) = start() else { return };
        let store = Store::open(&pg.url).await.unwrap();
        assert_eq!(store.backend_name(), "postgres");

        // Migrations twice: on the same pool and through a second open.
        store.initialise().await.unwrap();
        let again = Store::open(&pg.url).await.unwrap();
        let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
            .fetch_one(&again.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);

        environments_round_trip(&store).await;
        deployment_round_trip(&store).await;
        history_newest_first(&store).await;
        kv_round_trip(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_writers() {
        let Some(pg) = start() else { return };
        // Fresh database: the migrations race too (PostgreSQL serialises them with an
        // advisory lock).
        let (first, second) = tokio::join!(Store::open(&pg.url), Store::open(&pg.url));
        let (first, second) = (first.unwrap(), second.unwrap());
        concurrent_events_get_distinct_seqs(&first).await;
        concurrent_acquire(first, second).await;
    }

    #[tokio::test]
    async fn postgres_locks() {
        let Some(pg) = start() else { return };
        let store = Store::open(&pg.url).await.unwrap();
        lock_lifecycle(&store).await;
        lock_held_for_a_person(&store).await;
    }
}
