//! Conformance cases for the commands held for devices (jobs sent with a TTL): order per
//! device, limits per device, delivery attempts, settling, expiry, restarts. Run per backend by
//! `conformance_tests!`.

use super::{Harness, t};
use crate::{DeliveryCount, Enqueued, HeldOutcome, NewQueued, QueueCounts, QueueLimits, StoreError, TargetOutcome};

const ROOMY: QueueLimits = QueueLimits { max_commands: 100, max_bytes: 1 << 20 };

fn held(job: &str, device: &str, expires_ms: i64) -> NewQueued {
    NewQueued {
        job_id: job.to_owned(),
        device: device.to_owned(),
        command: "ping".to_owned(),
        args: Some(format!(r#"{{"job":"{job}"}}"#)),
        sender: "op-1".to_owned(),
        credential: Some("token:ops".to_owned()),
        wait_ms: 5_000,
        queued_at: t(1_000),
        expires_at: t(expires_ms),
        handed_over: false,
    }
}

/// Settles held command `id` (of `job`, for `device`) with `ok`.
fn answered(id: i64, job: &str, device: &str, result: &str) -> HeldOutcome {
    let outcome = TargetOutcome {
        job: job.to_owned(),
        device: device.to_owned(),
        status: orb_proto::Status::Ok,
        result: Some(result.to_owned()),
        error: None,
        elapsed_ms: Some(5),
        at: t(2_000),
        late: false,
    };
    HeldOutcome { id, outcome }
}

fn ids(out: &[Enqueued]) -> Vec<i64> {
    out.iter()
        .map(|e| match e {
            Enqueued::Queued(id) => *id,
            Enqueued::Full(why) => panic!("refused: {why}"),
        })
        .collect()
}

/// Commands come back per device, oldest first, exactly as queued; counts per device.
pub async fn queue_keeps_order_per_device(h: &Harness) {
    let s = h.store();
    let first = ids(&s.enqueue(vec![held("j1", "a", 9_000), held("j1", "b", 9_000)], ROOMY).await.unwrap());
    let more = ids(&s.enqueue(vec![held("j2", "a", 9_000), held("j3", "a", 9_000)], ROOMY).await.unwrap());
    assert!(first[0] < more[0] && more[0] < more[1], "ids grow: {first:?} {more:?}");
    let a = s.queued_for("a", 10).await.unwrap();
    let jobs: Vec<&str> = a.iter().map(|q| q.command.job_id.as_str()).collect();
    assert_eq!(jobs, ["j1", "j2", "j3"]);
    assert_eq!(a[0].command, held("j1", "a", 9_000), "stored as given");
    assert_eq!((a[0].attempts, a[0].delivered_at), (0, None));
    assert_eq!(s.queued_for("a", 2).await.unwrap().len(), 2, "the limit holds");
    assert!(s.queued_for("nobody", 10).await.unwrap().is_empty());
    let counts = s.queue_counts().await.unwrap();
    let bytes = held("j1", "a", 0).bytes();
    assert_eq!(counts["a"], QueueCounts { queued: 3, in_flight: 0, bytes: 3 * bytes });
    assert_eq!(counts["b"].queued, 1);
    assert_eq!(counts.len(), 2);
    // The same job twice for one device is refused, and nothing of that call is stored.
    let again = s.enqueue(vec![held("j9", "c", 9_000), held("j1", "a", 9_000)], ROOMY).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(s.queued_for("c", 10).await.unwrap().is_empty());
}

/// A device's queue is bounded in commands and bytes; a full one refuses that command only.
pub async fn queue_limits_refuse_per_device(h: &Harness) {
    let s = h.store();
    let limits = QueueLimits { max_commands: 2, max_bytes: 1 << 20 };
    let out = s
        .enqueue(
            vec![held("j1", "a", 9_000), held("j2", "a", 9_000), held("j3", "a", 9_000), held("j3", "b", 9_000)],
            limits,
        )
        .await
        .unwrap();
    assert!(matches!(out[0], Enqueued::Queued(_)) && matches!(out[1], Enqueued::Queued(_)), "{out:?}");
    assert!(matches!(&out[2], Enqueued::Full(why) if why.contains("device a")), "{out:?}");
    assert!(matches!(out[3], Enqueued::Queued(_)), "another device is not affected: {out:?}");
    let out = s.enqueue(vec![held("j4", "a", 9_000)], limits).await.unwrap();
    assert!(matches!(out[0], Enqueued::Full(_)), "still full in a later call: {out:?}");
    assert_eq!(s.queued_for("a", 10).await.unwrap().len(), 2);
    // Bytes: room for one command of this size, not two.
    let size = held("j1", "c", 0).bytes();
    let limits = QueueLimits { max_commands: 100, max_bytes: size + size / 2 };
    let out = s.enqueue(vec![held("j1", "c", 9_000), held("j2", "c", 9_000)], limits).await.unwrap();
    assert!(matches!(out[0], Enqueued::Queued(_)), "{out:?}");
    assert!(matches!(&out[1], Enqueued::Full(why) if why.contains("bytes")), "{out:?}");
}

/// Handing a command over counts attempts and makes it in flight; settling forgets it.
pub async fn queue_delivery_and_settling(h: &Harness) {
    let s = h.store();
    s.add_device(super::new_device("a")).await.unwrap();
    let id = ids(&s.enqueue(vec![held("j1", "a", 9_000)], ROOMY).await.unwrap())[0];
    assert_eq!(s.delivered(id, t(2_000), false).await.unwrap(), 1);
    assert!(matches!(s.delivered(id, t(2_500), false).await, Err(StoreError::NotFound(_))), "claimed once");
    assert!(s.undelivered(id).await.unwrap(), "a claim that never reached the device is given back");
    assert_eq!(s.delivered(id, t(3_000), false).await.unwrap(), 1, "the first never reached it: attempt 1 again");
    let q = &s.queued_for("a", 10).await.unwrap()[0];
    assert_eq!((q.attempts, q.delivered_at), (1, Some(t(3_000))));
    assert_eq!(s.queue_counts().await.unwrap()["a"], QueueCounts { queued: 0, in_flight: 1, bytes: q.command.bytes() });
    // Redelivery to a device with a journal: claimed again, even past the TTL, attempt 2.
    assert_eq!(s.delivered(id, t(9_500), true).await.unwrap(), 2);
    assert_eq!(s.queued_for("a", 10).await.unwrap()[0].delivered_at, Some(t(9_500)));
    assert_eq!(s.settle_held(vec![answered(id, "j1", "a", "1")]).await.unwrap(), [true]);
    assert_eq!(s.settle_held(vec![answered(id, "j1", "a", "1")]).await.unwrap(), [false], "settled once");
    assert!(matches!(s.delivered(id, t(4_000), true).await, Err(StoreError::NotFound(_))));
    assert!(s.queue_counts().await.unwrap().is_empty());
    // A command whose TTL passed is not claimed, even before the sweep removed it.
    let late = ids(&s.enqueue(vec![held("j2", "a", 5_000)], ROOMY).await.unwrap())[0];
    assert!(matches!(s.delivered(late, t(5_000), true).await, Err(StoreError::NotFound(_))));
}

/// Commands held as handed over already (for connected devices) are stored claimed, attempt 1,
/// in the same commit; many settle together, each once.
pub async fn queue_holds_handed_over_and_settles_in_bulk(h: &Harness) {
    let s = h.store();
    for d in ["a", "b", "c"] {
        s.add_device(super::new_device(d)).await.unwrap();
    }
    let handed = |job: &str, device: &str| NewQueued { handed_over: true, ..held(job, device, 9_000) };
    let out = ids(&s
        .enqueue(vec![handed("j1", "a"), handed("j1", "b"), held("j1", "c", 3_000), held("j2", "a", 9_000)], ROOMY)
        .await
        .unwrap());
    let a = s.queued_for("a", 10).await.unwrap();
    assert_eq!((a[0].attempts, a[0].delivered_at, a[0].command.handed_over), (1, Some(t(1_000)), true));
    assert_eq!((a[1].attempts, a[1].delivered_at, a[1].command.handed_over), (0, None, false));
    assert!(matches!(s.delivered(out[0], t(2_000), false).await, Err(StoreError::NotFound(_))), "claimed already");
    assert_eq!(s.queue_counts().await.unwrap()["b"].in_flight, 1);
    s.delivered(out[3], t(2_000), false).await.unwrap();

    let held_now = s
        .settle_held(vec![
            answered(out[0], "j1", "a", "1"),
            answered(out[1], "j1", "b", "2"),
            answered(out[3], "j2", "a", "3"),
        ])
        .await;
    assert_eq!(held_now.unwrap(), [true, true, true]);
    let mut left = Vec::new();
    for d in ["a", "b", "c"] {
        left.extend(s.queued_for(d, 10).await.unwrap().iter().map(|q| q.id));
    }
    assert_eq!(left, [out[2]], "only c's command, never handed over, still waits");
    assert!(s.settle_held(Vec::new()).await.unwrap().is_empty());
}

/// Delivery counts add up per device (a claim given back subtracts); a device that is not
/// registered is skipped.
pub async fn delivery_counts_add_up(h: &Harness) {
    let s = h.store();
    s.add_device(super::new_device("a")).await.unwrap();
    let count = |device: &str, delivered: i64, acknowledged: i64| DeliveryCount {
        device: device.to_owned(),
        delivered,
        acknowledged,
    };
    s.count_deliveries(vec![count("a", 3, 1), count("gone", 1, 1)]).await.unwrap();
    s.count_deliveries(vec![count("a", -1, 0)]).await.unwrap();
    s.count_deliveries(Vec::new()).await.unwrap();
    let a = s.device("a").await.unwrap().unwrap();
    assert_eq!((a.delivered, a.acknowledged), (2, 1), "{a:?}");
    assert!(s.device("gone").await.unwrap().is_none());
    let s = h.reopen().await;
    let a = s.device("a").await.unwrap().unwrap();
    assert_eq!((a.delivered, a.acknowledged), (2, 1), "committed");
}

/// Expiry removes the commands still waiting whose TTL passed, and those handed over whose
/// answer cannot come any more (a minute past their deadline); at most `limit` at a time.
pub async fn queue_expiry_takes_what_is_over(h: &Harness) {
    let s = h.store();
    let out = ids(&s
        .enqueue(
            vec![held("j1", "a", 5_000), held("j2", "a", 8_000), held("j3", "b", 5_000), held("j4", "c", 5_000)],
            ROOMY,
        )
        .await
        .unwrap());
    s.delivered(out[2], t(4_000), false).await.unwrap();
    assert!(s.expire_queued(t(4_999), 100).await.unwrap().is_empty(), "nothing is due yet");
    let expired = s.expire_queued(t(5_000), 1).await.unwrap();
    assert_eq!(expired.len(), 1, "the limit holds");
    let expired = s.expire_queued(t(5_000), 100).await.unwrap();
    let jobs: Vec<&str> = expired.iter().map(|q| q.command.job_id.as_str()).collect();
    assert_eq!(jobs, ["j4"], "j3 was handed over: its deadline and a minute bound it, not its TTL");
    assert!(s.expire_queued(t(5_000), 100).await.unwrap().is_empty(), "expired once");
    let left: Vec<i64> = s.queued_for("a", 10).await.unwrap().iter().map(|q| q.id).collect();
    assert_eq!(left, [out[1]]);
    // Handed over at 4 s with a 5 s deadline: over at 4 + 5 + 60 s.
    assert!(s.expire_queued(t(68_999), 100).await.unwrap().iter().all(|q| q.id != out[2]));
    let over = s.expire_queued(t(69_000), 100).await.unwrap();
    assert!(over.iter().any(|q| q.id == out[2] && q.delivered_at == Some(t(4_000))), "{over:?}");
    // Handed over, with a TTL beyond deadline + a minute: kept until the TTL (a device with a
    // journal may come back and answer a redelivery).
    let long = ids(&s.enqueue(vec![held("j5", "d", 200_000)], ROOMY).await.unwrap())[0];
    s.delivered(long, t(70_000), false).await.unwrap();
    assert!(s.expire_queued(t(199_999), 100).await.unwrap().iter().all(|q| q.id != long));
    let over = s.expire_queued(t(200_000), 100).await.unwrap();
    assert!(over.iter().any(|q| q.id == long), "{over:?}");
}

/// What is queued is committed: a restarted store still holds it, in order.
pub async fn queue_survives_a_restart(h: &Harness) {
    let s = h.store();
    ids(&s.enqueue(vec![held("j1", "a", 9_000), held("j2", "a", 9_000)], ROOMY).await.unwrap());
    let s = h.reopen().await;
    let jobs: Vec<String> = s.queued_for("a", 10).await.unwrap().into_iter().map(|q| q.command.job_id).collect();
    assert_eq!(jobs, ["j1", "j2"]);
}

/// A job whose command is held for a device stays running after its live part ends (and after
/// a restart's recovery); the held command's outcome replaces `queued`, and the job is done when
/// the last held command settles.
pub async fn a_job_with_held_commands_ends_when_they_settle(h: &Harness) {
    use orb_proto::Status;
    use orb_proto::history::JobPhase;

    use super::devices::{NODE, job};
    use crate::{JobEnd, NewJob, NewTarget, Record, TargetOutcome};

    let s = h.store();
    let rec = s.recorder();
    let target = |d: &str| NewTarget { device: d.to_owned(), status: None, error: None };
    let settled = |d: &str, status: Status, result: Option<&str>| TargetOutcome {
        job: "held-1".to_owned(),
        device: d.to_owned(),
        status,
        result: result.map(str::to_owned),
        error: None,
        elapsed_ms: None,
        at: t(2_000),
        late: false,
    };
    rec.record(Record::JobCreated(NewJob { targets: vec![target("a"), target("b"), target("c")], ..job("held-1", 0) }))
        .await;
    let held_b = ids(&s.enqueue(vec![held("held-1", "b", 90_000)], ROOMY).await.unwrap())[0];
    // `b`'s `queued` comes with the job's batched records; here it never does (as after a
    // crash), and the job's end makes it `queued` all the same.
    rec.record(Record::TargetsSettled(vec![settled("a", Status::Ok, Some("1"))])).await;
    // The live part ends; `c` never answered (timeout), `b` is still held.
    let timeout = orb_proto::ErrorBody::new(orb_proto::ErrorCode::Timeout, "no answer");
    let end = JobEnd {
        job: "held-1".into(),
        at: t(10_000),
        state: JobPhase::Done,
        pending_become: Some((Status::Timeout, timeout)),
    };
    rec.record(Record::JobEnded(end)).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job("held-1").await.unwrap();
    assert_eq!((record.state, record.finished_at), (JobPhase::Running, None), "held commands keep it running");
    let status: Vec<Option<Status>> = targets.iter().map(|t| t.status).collect();
    assert_eq!(status, [Some(Status::Ok), Some(Status::Queued), Some(Status::Timeout)]);

    // A restart's recovery leaves it running.
    assert_eq!(s.recover_jobs(NODE, t(20_000), "server restarted").await.unwrap(), 1);
    assert_eq!(s.job("held-1").await.unwrap().0.state, JobPhase::Running);

    // The held command is delivered and answered: its outcome replaces `queued`, the job ends.
    assert_eq!(s.settle_held(vec![answered(held_b, "held-1", "b", "2")]).await.unwrap(), [true]);
    let (record, targets) = s.job("held-1").await.unwrap();
    assert_eq!(record.state, JobPhase::Done);
    assert!(record.finished_at.is_some());
    assert_eq!(targets[1].status, Some(Status::Ok));
    assert_eq!(targets[1].result.as_deref(), Some("2"));
    // A final status is never replaced by a late `queued`.
    rec.record(Record::TargetsSettled(vec![settled("b", Status::Queued, None)])).await;
    s.flush().await.unwrap();
    assert_eq!(s.job("held-1").await.unwrap().1[1].status, Some(Status::Ok));
}

/// A held command whose TTL passes settles its target `expired`, also when the target has no
/// row yet; a `queued` written afterwards does not replace it.
pub async fn an_expired_command_settles_its_target(h: &Harness) {
    use orb_proto::Status;

    use super::devices::job;
    use crate::{NewJob, NewTarget, Record};

    let s = h.store();
    let target = NewTarget { device: "a".to_owned(), status: None, error: None };
    s.recorder().record(Record::JobCreated(NewJob { targets: vec![target], ..job("held-3", 0) })).await;
    ids(&s.enqueue(vec![held("held-3", "a", 5_000)], ROOMY).await.unwrap());
    assert_eq!(s.expire_queued(t(5_000), 100).await.unwrap().len(), 1);
    let status = || async { s.job("held-3").await.unwrap().1[0].status };
    assert_eq!(status().await, Some(Status::Expired));
    let queued = TargetOutcome {
        job: "held-3".to_owned(),
        device: "a".to_owned(),
        status: Status::Queued,
        result: None,
        error: None,
        elapsed_ms: None,
        at: t(2_000),
        late: false,
    };
    s.recorder().record(Record::TargetsSettled(vec![queued])).await;
    s.flush().await.unwrap();
    assert_eq!(status().await, Some(Status::Expired));
}

/// Cancelling a job drops the commands it still holds for devices: their targets are
/// `cancelled`, nothing is delivered later, and the job ends `cancelled`.
pub async fn cancelling_a_job_drops_its_waiting_held_commands(h: &Harness) {
    use orb_proto::Status;
    use orb_proto::history::JobPhase;

    use super::devices::job;
    use crate::{NewJob, NewTarget, Record};

    let s = h.store();
    let target = |d: &str| NewTarget { device: d.to_owned(), status: None, error: None };
    s.recorder()
        .record(Record::JobCreated(NewJob { targets: vec![target("a"), target("b")], ..job("held-2", 0) }))
        .await;
    ids(&s.enqueue(vec![held("held-2", "a", 90_000), held("held-2", "b", 90_000)], ROOMY).await.unwrap());
    let cancelled = s.cancel_job("held-2", t(5_000)).await.unwrap();
    assert_eq!(cancelled, ["a", "b"]);
    assert!(s.queued_for("a", 10).await.unwrap().is_empty() && s.queued_for("b", 10).await.unwrap().is_empty());
    let (record, targets) = s.job("held-2").await.unwrap();
    assert_eq!(record.state, JobPhase::Cancelled);
    assert!(targets.iter().all(|t| t.status == Some(Status::Cancelled)), "{targets:?}");
}

/// Device messages are stored once per (device, msg), in order, survive a restart, and each
/// device keeps its newest `keep`.
pub async fn device_messages_are_stored_once_and_trimmed(h: &Harness) {
    use crate::{MessageLimits, NewMessage};
    let msg = |device: &str, id: &str| NewMessage {
        device: device.to_owned(),
        msg: id.to_owned(),
        command: "reading".to_owned(),
        body: Some(format!(r#"{{"n":"{id}"}}"#)),
        sent_at: t(1_000),
        received_at: t(2_000),
    };
    let three = MessageLimits { max_messages: 3, max_bytes: 1 << 20 };
    let s = h.store();
    let fresh =
        s.store_messages(vec![msg("a", "m1"), msg("a", "m2"), msg("b", "m1"), msg("a", "m1")], three).await.unwrap();
    assert_eq!(fresh, [true, true, true, false], "a resend in the same batch is a duplicate");
    assert_eq!(s.store_messages(vec![msg("a", "m2"), msg("a", "m3")], three).await.unwrap(), [false, true]);
    let s = h.reopen().await;
    let stored: Vec<String> = s.messages_for("a", 10).await.unwrap().into_iter().map(|m| m.message.msg).collect();
    assert_eq!(stored, ["m1", "m2", "m3"], "oldest first, each once");
    assert_eq!(s.messages_for("a", 10).await.unwrap()[0].message, msg("a", "m1"));
    assert_eq!(s.store_messages(vec![msg("a", "m4")], three).await.unwrap(), [true]);
    let stored: Vec<String> = s.messages_for("a", 10).await.unwrap().into_iter().map(|m| m.message.msg).collect();
    assert_eq!(stored, ["m2", "m3", "m4"], "the newest 3 are kept");
    let newest: Vec<String> = s.messages_for("a", 2).await.unwrap().into_iter().map(|m| m.message.msg).collect();
    assert_eq!(newest, ["m3", "m4"]);
    assert_eq!(s.messages_for("b", 10).await.unwrap().len(), 1, "another device is not trimmed");
    // Bytes: room for two messages of this size, not three.
    let size = msg("c", "m1").bytes();
    let two = MessageLimits { max_messages: 100, max_bytes: 2 * size + size / 2 };
    let fresh = s.store_messages(vec![msg("c", "m1"), msg("c", "m2"), msg("c", "m3")], two).await.unwrap();
    assert_eq!(fresh, [true, true, true]);
    let stored: Vec<String> = s.messages_for("c", 10).await.unwrap().into_iter().map(|m| m.message.msg).collect();
    assert_eq!(stored, ["m2", "m3"], "the newest within the bytes bound are kept");
}
