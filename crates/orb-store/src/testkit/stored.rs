//! Conformance cases for what is already stored: a database written by an older version
//! upgrades in place and stays readable, and damaged rows (raw SQL under the store) never fail a
//! whole read. Run per backend by `conformance_tests!`.

use std::borrow::Cow;

use orb_proto::history::JobPhase;
use orb_proto::{ErrorBody, ErrorCode, Status};
use sqlx::migrate::Migrator;

use super::{Harness, TempPostgres, TempSqlite, exec, raw_at, t};
use crate::backend::{Backend, migrations};
use crate::rows::ms;
use crate::{LateAnswer, StoreUrl};

/// A database of its own (the harness's is at the current schema already) on the harness's
/// backend, schema'd by the migrations up to `version` only, with a raw connection to fill it.
struct Older {
    backend: Backend,
    url: StoreUrl,
    conn: sqlx::AnyConnection,
    /// Dropped by the case when it is done.
    postgres: Option<TempPostgres>,
    _sqlite: Option<TempSqlite>,
}

async fn older(h: &Harness, version: i64) -> Older {
    let (backend, sqlite, postgres) = match h.url() {
        StoreUrl::Sqlite(_) => (Backend::Sqlite, Some(TempSqlite::new()), None),
        StoreUrl::Postgres(_) => (Backend::Postgres, None, TempPostgres::create().await),
    };
    let url = match (&sqlite, &postgres) {
        (Some(temp), _) => {
            let url = temp.url();
            if let StoreUrl::Sqlite(path) = &url {
                std::fs::File::create(path).unwrap();
            }
            url
        }
        (_, Some(temp)) => temp.url(),
        _ => unreachable!("the harness's backend has a temporary database"),
    };
    let mut conn = raw_at(&url).await;
    let all = migrations(backend);
    let old = Migrator {
        migrations: Cow::Owned(all.migrations.iter().filter(|m| m.version <= version).cloned().collect()),
        ..Migrator::DEFAULT
    };
    old.run(&mut conn).await.unwrap();
    Older { backend, url, conn, postgres, _sqlite: sqlite }
}

/// The last migration of the version before jobs had nodes and late answers had columns.
const BEFORE_NODES: i64 = 3;

/// A database schema'd by migrations 1 to 3 only, holding what that version wrote: a device, a
/// running job with a target list (one target answered), a running job from before target lists
/// (pending rows with a NULL status), and a finished job whose timeout a late answer replaced
/// (`late` set). Opening it migrates it in place; everything reads back, the old jobs without a
/// node (so any node's `recover_jobs` ends them).
pub async fn an_old_database_upgrades_in_place(h: &Harness) {
    let Older { backend, url, mut conn, postgres, _sqlite } = older(h, BEFORE_NODES).await;

    let (at, answered) = (ms(t(0)), ms(t(31_000)));
    let revoked = if backend == Backend::Sqlite { "0" } else { "FALSE" };
    exec(
        &mut conn,
        &format!(
            "INSERT INTO devices (id, revoked, reported_tags, operator_tags, commands, registered_at, connections) \
             VALUES ('dev', {revoked}, '{{\"os\":\"linux\"}}', '{{}}', '[\"ping\"]', {at}, 2); \
             INSERT INTO jobs (id, requester, selector, command, args, created_at, deadline_at, state, target_count, \
             targets) VALUES ('old-listed', 'cli', 'all', 'ping', NULL, {at}, {at} + 30000, 'running', 2, \
             '[\"a\",\"b\"]'); \
             INSERT INTO job_targets (job_id, device_id, status, result, elapsed_ms, answered_at) \
             VALUES ('old-listed', 'a', 'ok', '1', 5, {at} + 5); \
             INSERT INTO jobs (id, requester, selector, command, args, created_at, deadline_at, state, target_count) \
             VALUES ('old-rows', 'cli', 'all', 'ping', NULL, {at} + 1, {at} + 30001, 'running', 2); \
             INSERT INTO job_targets (job_id, device_id, status) \
             VALUES ('old-rows', 'a', NULL), ('old-rows', 'b', NULL); \
             INSERT INTO jobs (id, requester, selector, command, args, created_at, deadline_at, finished_at, state, \
             target_count, targets) VALUES ('old-late', 'cli', 'all', 'ping', NULL, {at} + 2, {at} + 30002, \
             {at} + 30002, 'done', 1, '[\"a\"]'); \
             INSERT INTO job_targets (job_id, device_id, status, result, elapsed_ms, answered_at, late) \
             VALUES ('old-late', 'a', 'ok', '2', 31000, {answered}, {});",
            if backend == Backend::Sqlite { "1" } else { "TRUE" }
        ),
    )
    .await;
    sqlx::Connection::close(conn).await.unwrap();

    let s = crate::open(&url).await.unwrap();
    let device = s.device("dev").await.unwrap().unwrap();
    assert_eq!((device.commands, device.connections), (vec!["ping".to_owned()], 2));
    let jobs = s.jobs(10).await.unwrap();
    let listed: Vec<_> = jobs.iter().map(|j| (j.id.as_str(), j.node.as_deref(), j.state)).collect();
    assert_eq!(
        listed,
        [
            ("old-late", None, JobPhase::Done),
            ("old-rows", None, JobPhase::Running),
            ("old-listed", None, JobPhase::Running)
        ]
    );
    let (_, targets) = s.job("old-late").await.unwrap();
    let late = LateAnswer { status: Status::Ok, result: Some("2".into()), error: None, at: t(31_000) };
    assert_eq!((targets[0].status, targets[0].late.as_ref()), (Some(Status::Ok), Some(&late)));

    assert_eq!(s.recover_jobs("any-node", t(60_000), "the server restarted").await.unwrap(), 2);
    let timeout = ErrorBody::new(ErrorCode::Timeout, "the server restarted");
    for id in ["old-listed", "old-rows"] {
        let (record, targets) = s.job(id).await.unwrap();
        assert_eq!(record.state, JobPhase::Done, "{id}");
        assert_eq!((targets[1].status, targets[1].error.as_ref()), (Some(Status::Timeout), Some(&timeout)), "{id}");
    }
    s.close().await;
    if let Some(pg) = postgres {
        pg.drop_db().await;
    }
}

/// The last migration with delivery counts in `devices` (0011 moves them to their own table).
const COUNTS_IN_DEVICES: i64 = 10;

/// A database at migration 10 with delivery counts in its devices' rows: opening it moves them to
/// `device_deliveries`, they read back unchanged and keep counting; removing a device drops them.
pub async fn delivery_counts_move_to_their_own_table(h: &Harness) {
    let Older { backend, url, mut conn, postgres, _sqlite } = older(h, COUNTS_IN_DEVICES).await;
    let at = ms(t(0));
    let revoked = if backend == Backend::Sqlite { "0" } else { "FALSE" };
    exec(
        &mut conn,
        &format!(
            "INSERT INTO devices (id, revoked, reported_tags, operator_tags, commands, registered_at, delivered, \
             acknowledged) VALUES ('busy', {revoked}, '{{}}', '{{}}', '[]', {at}, 7, 5), \
             ('idle', {revoked}, '{{}}', '{{}}', '[]', {at}, 0, 0);"
        ),
    )
    .await;
    sqlx::Connection::close(conn).await.unwrap();

    let s = crate::open(&url).await.unwrap();
    let counts = |d: crate::Device| (d.delivered, d.acknowledged);
    assert_eq!(counts(s.device("busy").await.unwrap().unwrap()), (7, 5));
    assert_eq!(counts(s.device("idle").await.unwrap().unwrap()), (0, 0));
    let listed: Vec<(String, u64)> = s.devices().await.unwrap().into_iter().map(|d| (d.id, d.delivered)).collect();
    assert_eq!(listed, [("busy".to_owned(), 7), ("idle".to_owned(), 0)]);
    s.remove_device("busy").await.unwrap();
    s.add_device(super::new_device("busy")).await.unwrap();
    assert_eq!(counts(s.device("busy").await.unwrap().unwrap()), (0, 0), "a removed device's counts go with it");
    s.close().await;
    if let Some(pg) = postgres {
        pg.drop_db().await;
    }
}

/// One damaged row (or a value a newer version wrote) never fails a whole read: values that
/// cannot be read (unknown status or state, malformed tags, commands or target list, a secret
/// hash of the wrong length, times out of range, negative counts) read as a stated fallback,
/// with a warning, and `devices`, `device`, `jobs` and `job` return every row. A damaged
/// credential fails closed (revoked). Writes over damaged rows go on: recovery ends a job whose
/// target list cannot be read, and operator tags can be set over unreadable ones.
pub async fn damaged_rows_never_fail_a_whole_read(h: &Harness) {
    use crate::testkit::{new_device, raw, tags};
    use crate::{NewDevice, NewJob, NewTarget, Record, TargetOutcome};

    let s = h.store();
    let rec = s.recorder();
    let sqlite = matches!(h.url(), StoreUrl::Sqlite(_));
    let ids = ["d-commands", "d-count", "d-ok", "d-secret", "d-tags", "d-time"];
    for id in ids {
        s.add_device(NewDevice { secret_hash: Some([7; 32]), operator_tags: tags(&[("k", "v")]), ..new_device(id) })
            .await
            .unwrap();
    }
    let d_ok = s.device("d-ok").await.unwrap().unwrap();
    let pending = |d: &str| NewTarget { device: d.to_owned(), status: None, error: None };
    let settled = |job: &str, device: &str, status: Status, late: bool| TargetOutcome {
        job: job.to_owned(),
        device: device.to_owned(),
        status,
        result: None,
        error: Some(ErrorBody::new(ErrorCode::HandlerError, "failed")),
        elapsed_ms: Some(3),
        at: t(40_000),
        late,
    };
    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer");
    for (i, id) in ["job-ok", "job-state", "job-list", "job-status", "job-late", "job-time"].into_iter().enumerate() {
        let job =
            NewJob { targets: vec![pending("a"), pending("b")], ..super::devices::job(id, i64::try_from(i).unwrap()) };
        rec.record(Record::JobCreated(job)).await;
        rec.record(Record::TargetsSettled(vec![settled(id, "a", Status::Error, false)])).await;
        if id != "job-list" {
            rec.record(Record::JobEnded(crate::JobEnd {
                job: id.to_owned(),
                at: t(30_000),
                state: JobPhase::Done,
                pending_become: Some((Status::Timeout, timeout.clone())),
            }))
            .await;
        }
    }
    rec.record(Record::TargetsSettled(vec![settled("job-late", "b", Status::Error, true)])).await;
    s.flush().await.unwrap();
    let job_ok = s.job("job-ok").await.unwrap();

    let mut conn = raw(h).await;
    let short_hash = if sqlite { "X'010203'" } else { "'\\x010203'::bytea" };
    let (never, before_time) = (i64::MAX, i64::MIN);
    exec(
        &mut conn,
        &format!(
            "UPDATE devices SET reported_tags = 'not json', operator_tags = '[1]' WHERE id = 'd-tags'; \
             UPDATE devices SET commands = '{{\"ping\":1}}' WHERE id = 'd-commands'; \
             UPDATE devices SET secret_hash = {short_hash} WHERE id = 'd-secret'; \
             UPDATE devices SET registered_at = {never}, last_seen = {before_time} WHERE id = 'd-time'; \
             UPDATE devices SET connections = -5 WHERE id = 'd-count'; \
             UPDATE jobs SET state = 'exploded' WHERE id = 'job-state'; \
             UPDATE jobs SET targets = 'not json', target_count = -1 WHERE id = 'job-list'; \
             UPDATE job_targets SET status = 'weird', elapsed_ms = -3 WHERE job_id = 'job-status' AND device_id = 'a'; \
             UPDATE job_targets SET late_status = 'later' WHERE job_id = 'job-late' AND device_id = 'b'; \
             UPDATE jobs SET created_at = {never}, deadline_at = {before_time} WHERE id = 'job-time';"
        ),
    )
    .await;
    if sqlite {
        // SQLite keeps any type in any column: text where a number belongs, a BLOB for a text id.
        exec(
            &mut conn,
            "UPDATE devices SET revoked = 'maybe', last_disconnect = 'yesterday' WHERE id = 'd-ok'; \
             INSERT INTO devices (id, registered_at) VALUES (X'FF00', 0); \
             UPDATE jobs SET finished_at = 'soon' WHERE id = 'job-ok'; \
             INSERT INTO jobs (id, requester, selector, command, created_at, deadline_at, state, target_count) \
             VALUES (X'FF01', 'cli', 'all', 'ping', 0, 0, 'done', 0);",
        )
        .await;
    }
    sqlx::Connection::close(conn).await.unwrap();

    // Devices: every one is listed and found, damaged values read as their fallbacks.
    let devices = s.devices().await.unwrap();
    assert_eq!(devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ids, "every readable device");
    let by_id = |id: &str| devices.iter().find(|d| d.id == id).unwrap().clone();
    for id in ids {
        assert_eq!(s.device(id).await.unwrap().as_ref(), Some(&by_id(id)), "{id}");
    }
    let d = by_id("d-tags");
    assert!(d.reported_tags.is_empty() && d.operator_tags.is_empty());
    assert!(by_id("d-commands").commands.is_empty());
    let d = by_id("d-secret");
    assert_eq!((d.secret_hash, d.revoked), (None, true), "a damaged credential fails closed");
    let d = by_id("d-time");
    assert_eq!((d.registered_at, d.last_seen), (chrono::DateTime::UNIX_EPOCH, None));
    assert_eq!(by_id("d-count").connections, 0);
    if sqlite {
        let d = by_id("d-ok");
        assert_eq!(
            (d.revoked, d.secret_hash, d.last_disconnect),
            (true, None, None),
            "an unreadable flag fails closed"
        );
    } else {
        assert_eq!(by_id("d-ok"), d_ok);
    }
    let d = s.set_operator_tags("d-tags", &tags(&[("site", "x")]), &[]).await.unwrap();
    assert_eq!(d.operator_tags, tags(&[("site", "x")]), "set over tags that cannot be read");

    // Jobs: every one is listed, with its summary, and found.
    let jobs = s.jobs(100).await.unwrap();
    let mut listed: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["job-late", "job-list", "job-ok", "job-state", "job-status", "job-time"]);
    for job in &jobs {
        let (record, _) = s.job(&job.id).await.unwrap();
        assert_eq!(&record, job, "the list and the detail agree");
    }
    if sqlite {
        assert_eq!(s.job("job-ok").await.unwrap().0.finished_at, None);
    } else {
        assert_eq!(s.job("job-ok").await.unwrap(), job_ok);
    }
    assert_eq!(s.job("job-state").await.unwrap().0.state, JobPhase::Done, "an unknown state reads as ended");
    let (record, targets) = s.job("job-list").await.unwrap();
    assert_eq!((record.targets, record.state), (0, JobPhase::Running));
    assert_eq!(targets.iter().map(|t| t.device.as_str()).collect::<Vec<_>>(), ["a"], "the targets with a row");
    let (record, targets) = s.job("job-status").await.unwrap();
    assert_eq!(record.summary, [(Status::Timeout, 1)].into_iter().collect(), "an unreadable status is not counted");
    assert_eq!((targets[0].status, targets[0].elapsed_ms, targets[1].status), (None, None, Some(Status::Timeout)));
    let (_, targets) = s.job("job-late").await.unwrap();
    assert_eq!((targets[1].status, &targets[1].late), (Some(Status::Timeout), &None));
    let (record, _) = s.job("job-time").await.unwrap();
    assert_eq!((record.created_at, record.deadline_at), (chrono::DateTime::UNIX_EPOCH, chrono::DateTime::UNIX_EPOCH));

    // Recovery ends the running job whose list cannot be read (its rows settle; it ends).
    assert_eq!(s.recover_jobs(super::NODE, t(50_000), "restarted").await.unwrap(), 1);
    assert_eq!(s.job("job-list").await.unwrap().0.state, JobPhase::Done);
}
