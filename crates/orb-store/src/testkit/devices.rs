//! Conformance cases for the device registry, inventory records and the writer itself (flush,
//! group commit, failure isolation, restart, close). Run per backend by `conformance_tests!`.

use std::sync::Arc;

use orb_proto::history::JobPhase;

use super::{Harness, new_device, t, tags};
use crate::model::FLAP_WINDOW_MS;
use crate::{Connection, JobEnd, NewDevice, NewJob, NewTarget, Record, Store, StoreError, TargetOutcome};

fn connection(id: &str, at: i64) -> Connection {
    Connection {
        id: id.to_owned(),
        at: t(at),
        remote_addr: "10.0.0.7:51000".to_owned(),
        user_agent: Some("orb-agent/0.1".to_owned()),
        agent_version: Some("0.1.0".to_owned()),
        commands: vec!["ping".to_owned(), "uptime".to_owned()],
        schemas: [("uptime".to_owned(), serde_json::json!({"type": "null"}))].into(),
        reported_tags: tags(&[("os", "linux")]),
        transport: "tcp".to_owned(),
    }
}

/// Registration, lookup, listing in byte order, tags by source and effective tags.
pub async fn devices_add_get_list(h: &Harness) {
    let s = h.store();
    assert!(s.devices().await.unwrap().is_empty());
    let b = NewDevice {
        secret_hash: Some([7; 32]),
        operator_tags: tags(&[("site", "paris")]),
        registered_at: t(5),
        ..new_device("b-dev")
    };
    let added = s.add_device(b).await.unwrap();
    assert_eq!(added.id, "b-dev");
    assert_eq!(added.secret_hash, Some([7; 32]));
    assert_eq!(added.operator_tags, tags(&[("site", "paris")]));
    assert_eq!(added.registered_at, t(5));
    assert!(!added.revoked);
    assert_eq!((added.connections, added.flaps, added.first_seen, added.last_seen), (0, 0, None, None));
    s.add_device(new_device("a-dev")).await.unwrap();
    s.add_device(new_device("Zed")).await.unwrap();
    s.add_device(new_device("a_dev")).await.unwrap();

    let ids: Vec<_> = s.devices().await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["Zed", "a-dev", "a_dev", "b-dev"], "byte order, whatever the collation");
    assert_eq!(s.device("b-dev").await.unwrap(), Some(added));
    assert_eq!(s.device("nobody").await.unwrap(), None);

    s.recorder()
        .record(Record::Connected(Connection {
            reported_tags: tags(&[("site", "lyon"), ("os", "linux")]),
            ..connection("b-dev", 100)
        }))
        .await;
    s.flush().await.unwrap();
    let b = s.device("b-dev").await.unwrap().unwrap();
    assert_eq!(b.reported_tags, tags(&[("site", "lyon"), ("os", "linux")]));
    assert_eq!(b.operator_tags, tags(&[("site", "paris")]));
    assert_eq!(b.tags(), tags(&[("site", "paris"), ("os", "linux")]), "operator tags win");
}

/// Adding an id twice is a conflict and leaves the first registration as it was.
pub async fn duplicate_add_conflicts(h: &Harness) {
    let s = h.store();
    let first = NewDevice { secret_hash: Some([1; 32]), operator_tags: tags(&[("a", "1")]), ..new_device("dup") };
    let first = s.add_device(first).await.unwrap();
    let again = NewDevice { secret_hash: Some([2; 32]), registered_at: t(99), ..new_device("dup") };
    let err = s.add_device(again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("dup")), "{err:?}");
    assert_eq!(s.devices().await.unwrap(), vec![first]);
}

/// Writes to an unknown id are `NotFound` and change nothing.
pub async fn unknown_device_is_not_found(h: &Harness) {
    let s = h.store();
    let known = s.add_device(new_device("known")).await.unwrap();
    let not_found = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NotFound(m)) if m.contains("ghost"));
    assert!(not_found(s.set_secret("ghost", [3; 32]).await));
    assert!(not_found(s.revoke_device("ghost").await.map(drop)));
    assert!(not_found(s.remove_device("ghost").await));
    assert!(not_found(s.set_operator_tags("ghost", &tags(&[("a", "b")]), &[]).await.map(drop)));
    assert_eq!(s.devices().await.unwrap(), vec![known]);
}

/// Revocation erases the secret for good; removal forgets the device (the id is free again).
pub async fn revoke_erases_secret_and_remove_forgets(h: &Harness) {
    let s = h.store();
    s.add_device(new_device("dev")).await.unwrap();
    s.set_secret("dev", [9; 32]).await.unwrap();
    assert_eq!(s.device("dev").await.unwrap().unwrap().secret_hash, Some([9; 32]));
    let revoked = s.revoke_device("dev").await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(revoked.secret_hash, None);
    assert_eq!(s.device("dev").await.unwrap(), Some(revoked));

    s.remove_device("dev").await.unwrap();
    assert_eq!(s.device("dev").await.unwrap(), None);
    assert!(matches!(s.remove_device("dev").await, Err(StoreError::NotFound(_))));
    let back = s.add_device(new_device("dev")).await.unwrap();
    assert!(!back.revoked);
}

/// Operator tags: removal first, then `set`; stored, and other fields untouched.
pub async fn operator_tags_set_and_remove(h: &Harness) {
    let s = h.store();
    let new =
        NewDevice { operator_tags: tags(&[("a", "1"), ("b", "2")]), secret_hash: Some([4; 32]), ..new_device("d") };
    s.add_device(new).await.unwrap();
    let d =
        s.set_operator_tags("d", &tags(&[("b", "3"), ("c", "4")]), &["a".to_owned(), "b".to_owned()]).await.unwrap();
    assert_eq!(d.operator_tags, tags(&[("b", "3"), ("c", "4")]));
    let d = s.set_operator_tags("d", &tags(&[]), &["c".to_owned(), "absent".to_owned()]).await.unwrap();
    assert_eq!(d.operator_tags, tags(&[("b", "3")]));
    assert_eq!(d.secret_hash, Some([4; 32]));
    assert_eq!(s.device("d").await.unwrap(), Some(d));
}

/// Connected/Disconnected/Seen: counts, flaps inside the window only, first_seen kept,
/// last_seen forward only, unknown ids ignored.
pub async fn connection_records_update_inventory(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    s.add_device(new_device("dev")).await.unwrap();
    rec.record(Record::Connected(connection("dev", 1_000))).await;
    s.flush().await.unwrap();
    let d = s.device("dev").await.unwrap().unwrap();
    assert_eq!((d.first_seen, d.last_seen, d.connections, d.flaps), (Some(t(1_000)), Some(t(1_000)), 1, 0));
    assert_eq!(d.last_remote_addr.as_deref(), Some("10.0.0.7:51000"));
    assert_eq!(d.user_agent.as_deref(), Some("orb-agent/0.1"));
    assert_eq!(d.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(d.commands, ["ping", "uptime"]);
    assert_eq!(d.schemas, [("uptime".to_owned(), serde_json::json!({"type": "null"}))].into());
    assert_eq!(d.transport.as_deref(), Some("tcp"));

    // Reconnect just inside the window: a flap.
    rec.record(Record::Disconnected { id: "dev".into(), at: t(5_000) }).await;
    rec.record(Record::Connected(connection("dev", 5_000 + FLAP_WINDOW_MS - 1))).await;
    // Reconnect exactly one window later: not a flap.
    rec.record(Record::Disconnected { id: "dev".into(), at: t(100_000) }).await;
    let later = Connection {
        remote_addr: "10.0.0.8:40000".into(),
        user_agent: None,
        agent_version: Some("0.2.0".into()),
        commands: vec![],
        schemas: Default::default(),
        reported_tags: tags(&[("arch", "arm64")]),
        transport: "ws".into(),
        ..connection("dev", 100_000 + FLAP_WINDOW_MS)
    };
    rec.record(Record::Connected(later)).await;
    rec.record(Record::Seen { id: "dev".into(), at: t(500_000) }).await;
    rec.record(Record::Seen { id: "dev".into(), at: t(400_000) }).await;
    rec.record(Record::Disconnected { id: "dev".into(), at: t(300_000) }).await;
    rec.record(Record::Connected(connection("ghost", 1))).await;
    s.flush().await.unwrap();

    let d = s.device("dev").await.unwrap().unwrap();
    assert_eq!((d.connections, d.flaps), (3, 1));
    assert_eq!(d.first_seen, Some(t(1_000)), "first_seen stays the first");
    assert_eq!(d.last_seen, Some(t(500_000)), "last_seen moves forward only");
    assert_eq!(d.last_disconnect, Some(t(300_000)));
    assert_eq!(d.last_remote_addr.as_deref(), Some("10.0.0.8:40000"));
    assert_eq!(d.user_agent, None);
    assert_eq!(d.agent_version.as_deref(), Some("0.2.0"));
    assert!(d.commands.is_empty());
    assert!(d.schemas.is_empty(), "schemas are replaced with the commands");
    assert_eq!(d.reported_tags, tags(&[("arch", "arm64")]), "reported tags are replaced");
    assert_eq!(d.transport.as_deref(), Some("ws"));
    assert_eq!(s.device("ghost").await.unwrap(), None, "a record does not register a device");
    assert_eq!(s.devices().await.unwrap().len(), 1);
}

/// The store reads back, from its own connection, that a commit is on disk when it returns:
/// SQLite in WAL with `synchronous=FULL`; PostgreSQL with `synchronous_commit=on` (set by the
/// store on every connection, whatever the database's default).
pub async fn commits_are_durable(h: &Harness) {
    let s = h.store();
    let want = match s.backend() {
        "sqlite" => "journal_mode=wal synchronous=FULL",
        _ => "synchronous_commit=on fsync=",
    };
    assert!(s.durability().starts_with(want), "{} durability: {}", s.backend(), s.durability());
    if let Some(pg) = &h.postgres {
        // A database whose default is `off`: the store's connections still commit with `on`.
        let mut conn = super::raw(h).await;
        let sql = format!("ALTER DATABASE {} SET synchronous_commit = off", pg.name());
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        let s = h.reopen().await;
        assert!(s.durability().starts_with(want), "postgres durability: {}", s.durability());
    }
}

/// Records become visible after `flush`, applied in order.
pub async fn flush_makes_records_visible(h: &Harness) {
    let s = h.store();
    s.add_device(new_device("dev")).await.unwrap();
    let rec = s.recorder();
    for i in 1..=1_000 {
        rec.record(Record::Seen { id: "dev".into(), at: t(i) }).await;
    }
    rec.record(Record::JobCreated(NewJob {
        targets: vec![NewTarget { device: "dev".into(), status: None, error: None }],
        ..job("job-flush", 1)
    }))
    .await;
    s.flush().await.unwrap();
    assert_eq!(s.device("dev").await.unwrap().unwrap().last_seen, Some(t(1_000)));
    let (record, targets) = s.job("job-flush").await.unwrap();
    assert_eq!((record.state, targets.len()), (JobPhase::Running, 1));
}

/// Many concurrent awaited writes: each caller gets its own answer, all are stored.
pub async fn group_commit_concurrent_writes(h: &Harness) {
    let s = h.store();
    let mut tasks = Vec::new();
    for i in 0..250 {
        let s: Arc<dyn Store> = s.clone();
        // 200 distinct ids, 50 of them twice: exactly one of each pair may win.
        tasks.push(tokio::spawn(async move { s.add_device(new_device(&format!("dev-{:03}", i % 200))).await }));
    }
    let (mut ok, mut conflict) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => conflict += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflict), (200, 50));
    let devices = s.devices().await.unwrap();
    assert_eq!(devices.len(), 200);
    assert_eq!(devices[199].id, "dev-199");
}

/// A failing record (a duplicate job) is skipped; the writes around it still commit.
pub async fn failing_record_does_not_sink_its_batch(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let target = |d: &str| NewTarget { device: d.into(), status: None, error: None };
    rec.record(Record::JobCreated(NewJob { targets: vec![target("a")], ..job("job-dup", 1) })).await;
    rec.record(Record::JobCreated(NewJob { command: "other".into(), targets: vec![target("b")], ..job("job-dup", 2) }))
        .await;
    let added = s.add_device(new_device("after")).await;
    rec.record(Record::JobEnded(JobEnd {
        job: "job-dup".into(),
        at: t(3),
        state: JobPhase::Done,
        pending_become: None,
    }))
    .await;
    s.flush().await.unwrap();
    assert!(added.is_ok(), "{added:?}");
    let (record, targets) = s.job("job-dup").await.unwrap();
    assert_eq!((record.command.as_str(), record.state, targets.len()), ("uptime", JobPhase::Done, 1));
    assert_eq!(targets[0].device, "a");
}

/// Close and open again: devices (with secrets), jobs and results are all there.
pub async fn restart_keeps_everything(h: &Harness) {
    let s = h.store();
    let d = NewDevice { secret_hash: Some([0xAB; 32]), operator_tags: tags(&[("k", "v")]), ..new_device("dev") };
    s.add_device(d).await.unwrap();
    s.add_device(new_device("revoked")).await.unwrap();
    s.revoke_device("revoked").await.unwrap();
    let rec = s.recorder();
    rec.record(Record::Connected(connection("dev", 10))).await;
    let targets = vec![NewTarget { device: "dev".into(), status: None, error: None }];
    rec.record(Record::JobCreated(NewJob { targets, ..job("job-restart", 20) })).await;
    rec.record(Record::TargetsSettled(vec![TargetOutcome {
        job: "job-restart".into(),
        device: "dev".into(),
        status: orb_proto::Status::Ok,
        result: Some(r#"{"up":42}"#.into()),
        error: None,
        elapsed_ms: Some(7),
        at: t(30),
        late: false,
    }]))
    .await;
    rec.record(Record::JobEnded(JobEnd {
        job: "job-restart".into(),
        at: t(31),
        state: JobPhase::Done,
        pending_become: None,
    }))
    .await;
    s.flush().await.unwrap();
    let devices = s.devices().await.unwrap();
    let job_before = s.job("job-restart").await.unwrap();
    let jobs_before = s.jobs(10).await.unwrap();

    let s = h.reopen().await;
    assert_eq!(s.devices().await.unwrap(), devices);
    assert_eq!(s.device("dev").await.unwrap().unwrap().secret_hash, Some([0xAB; 32]));
    assert_eq!(s.job("job-restart").await.unwrap(), job_before);
    assert_eq!(s.jobs(10).await.unwrap(), jobs_before);
    // The old recorder outlives its store: recording into it is dropped, not a panic.
    rec.record(Record::Seen { id: "dev".into(), at: t(99) }).await;
}

/// After `close`, calls fail with `Unavailable` (no panic); closing twice is fine.
pub async fn calls_after_close_are_unavailable(h: &Harness) {
    let s = h.store();
    s.add_device(new_device("dev")).await.unwrap();
    s.close().await;
    let unavailable = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
    assert!(unavailable(s.devices().await.map(drop)));
    assert!(unavailable(s.device("dev").await.map(drop)));
    assert!(unavailable(s.add_device(new_device("other")).await.map(drop)));
    assert!(unavailable(s.set_secret("dev", [1; 32]).await));
    assert!(unavailable(s.flush().await));
    assert!(unavailable(s.jobs(5).await.map(drop)));
    assert!(unavailable(s.job("x").await.map(drop)));
    assert!(unavailable(s.cancel_job("x", t(1)).await.map(drop)));
    assert!(unavailable(s.recover_jobs(NODE, t(1), "restart").await.map(drop)));
    assert!(unavailable(s.prune_jobs(t(1), 1).await.map(drop)));
    s.recorder().record(Record::Seen { id: "dev".into(), at: t(1) }).await;
    s.close().await;
}

/// A SQLite database has one store at a time: a second `open` is `Locked` (naming the database
/// and its lock file) until the first store is closed or dropped. A PostgreSQL database is
/// shared by the nodes: a second store opens beside the first and sees its writes.
pub async fn one_store_per_sqlite_database(h: &Harness) {
    let s = h.store();
    s.add_device(new_device("dev")).await.unwrap();
    let second = crate::open(h.url()).await;
    let crate::StoreUrl::Sqlite(path) = h.url() else {
        let second = second.unwrap();
        assert!(second.device("dev").await.unwrap().is_some());
        second.add_device(new_device("from-the-second")).await.unwrap();
        assert!(s.device("from-the-second").await.unwrap().is_some());
        second.close().await;
        return;
    };
    let real = std::fs::canonicalize(path).unwrap();
    match second {
        Err(StoreError::Locked { path: locked }) => assert_eq!(locked, real),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second store opened the database"),
    }
    let message = crate::open(h.url()).await.err().map(|e| e.to_string()).unwrap_or_default();
    let db = real.display();
    assert_eq!(message, format!("another orb server is using the database {db} (its lock {db}.lock is held)"));
    assert!(real.with_file_name("orb.db.lock").exists());
    // The folder named another way (through a symbolic link) leads to the same lock.
    #[cfg(unix)]
    {
        let link = path.with_file_name("linked");
        std::os::unix::fs::symlink(path.parent().unwrap(), &link).unwrap();
        let other_name = crate::StoreUrl::Sqlite(link.join("orb.db"));
        assert!(matches!(crate::open(&other_name).await, Err(StoreError::Locked { .. })));
    }
    assert_eq!(s.device("dev").await.unwrap().map(|d| d.id), Some("dev".to_owned()), "the first store goes on");

    // Closing releases the lock; so does dropping a store that was not closed.
    s.close().await;
    let reopened = crate::open(h.url()).await.unwrap();
    assert!(reopened.device("dev").await.unwrap().is_some());
    assert!(matches!(crate::open(h.url()).await, Err(StoreError::Locked { .. })));
    drop(reopened);
    let again = crate::open(h.url()).await.unwrap();
    again.close().await;
}

/// No `Debug` output shows a secret hash: not a device to register, not a stored device.
pub async fn debug_output_hides_secrets(h: &Harness) {
    let s = h.store();
    let new = NewDevice { secret_hash: Some([0xAB; 32]), ..new_device("secret-dev") };
    let added = s.add_device(new.clone()).await.unwrap();
    s.add_device(new_device("plain-dev")).await.unwrap();
    let plain = s.device("plain-dev").await.unwrap().unwrap();
    for text in [format!("{new:?}"), format!("{added:?}"), format!("{:?}", s.devices().await.unwrap())] {
        assert!(!text.contains("171") && !text.contains("0xab") && !text.contains("AB"), "{text}");
        assert!(text.contains("secret-dev") && text.contains("Some(<redacted>)"), "{text}");
    }
    assert!(format!("{plain:?}").contains("secret_hash: None"), "{plain:?}");
}

/// Runs `sql` on `conn`.
async fn run(conn: &mut sqlx::AnyConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(conn).await.map(drop)
}

/// The writer tells a failure of the database or connection (busy, locked, terminated) from a
/// failing statement: the first fails the transaction (retried once as a whole), the second
/// only its op. Checked on real errors of each backend.
pub async fn failures_are_told_apart(h: &Harness) {
    use sqlx::{AnyConnection, ConnectOptions as _, Connection as _};

    use crate::writer::is_environmental;

    let text = match h.url() {
        crate::StoreUrl::Sqlite(path) => {
            sqlx::sqlite::SqliteConnectOptions::new().filename(path).to_url_lossy().to_string()
        }
        crate::StoreUrl::Postgres(url) => url.clone(),
    };
    let sqlite = matches!(h.url(), crate::StoreUrl::Sqlite(_));
    let connect = || async { AnyConnection::connect(&text).await.unwrap() };
    let (mut holder, mut other) = (connect().await, connect().await);

    // The database (or table) is held by another connection.
    if sqlite {
        run(&mut holder, "BEGIN IMMEDIATE").await.unwrap();
        run(&mut other, "PRAGMA busy_timeout = 0").await.unwrap();
        let busy = run(&mut other, "BEGIN IMMEDIATE").await.unwrap_err();
        assert!(is_environmental(&busy), "{busy}");
    } else {
        run(&mut holder, "BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE").await.unwrap();
        run(&mut other, "SET lock_timeout = '20ms'").await.unwrap();
        let locked = run(&mut other, "SELECT id FROM jobs").await.unwrap_err();
        assert!(is_environmental(&locked), "{locked}");
    }
    run(&mut holder, "ROLLBACK").await.unwrap();

    // Statement failures: a constraint, a missing table, a syntax error.
    for sql in ["INSERT INTO jobs (id) VALUES ('x')", "SELECT * FROM no_such_table", "SELEC 1"] {
        let e = run(&mut other, sql).await.unwrap_err();
        assert!(!is_environmental(&e), "{sql}: {e}");
    }
    let fk = "INSERT INTO job_targets (job_id, device_id) VALUES ('no-job', 'd')";
    if sqlite {
        run(&mut other, "PRAGMA foreign_keys = ON").await.unwrap();
    }
    let e = run(&mut other, fk).await.unwrap_err();
    assert!(!is_environmental(&e), "{e}");

    // The connection is ended under it.
    if !sqlite {
        let e = run(&mut other, "SELECT pg_terminate_backend(pg_backend_pid())").await.unwrap_err();
        assert!(is_environmental(&e), "{e}");
    }
    drop(holder.close().await);
}

/// The node that runs the jobs of [`job`].
pub const NODE: &str = "node-a";

/// A job of [`NODE`] with no targets, created at `t(at)` with a deadline 30 s later.
pub(crate) fn job(id: &str, at: i64) -> NewJob {
    NewJob {
        id: id.to_owned(),
        node: NODE.to_owned(),
        requester: "cli-1".to_owned(),
        selector: "all".to_owned(),
        command: "uptime".to_owned(),
        args: Some(r#"{"v":true}"#.to_owned()),
        created_at: t(at),
        deadline_at: t(at + 30_000),
        targets: Vec::new(),
        skipped: 0,
        schedule: None,
        rollout: None,
    }
}
