//! Conformance cases for the audit log: entries recorded in a batch are read newest first after
//! a flush, filtered by time and limited; long text is bounded when written; retention deletes
//! by age and count; entries survive a restart; a damaged row is left out of a read. Run per
//! backend by `conformance_tests!`.

use super::{Harness, exec, raw, t};
use crate::{AUDIT_DETAIL_MAX, AUDIT_TEXT_MAX, AuditEntry, Record};

fn entry(at: i64, action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        at: t(at),
        actor: "ci".into(),
        role: "operator".into(),
        source: "tcp 127.0.0.1:40000".into(),
        action: action.into(),
        target: target.into(),
        outcome: "ok".into(),
        detail: Some(r#"{"command":"ping"}"#.into()),
    }
}

/// Appended in a batch, read newest first, by `since` and `limit`; bounded; pruned; kept.
pub async fn audit_entries_are_appended_filtered_bounded_and_pruned(h: &Harness) {
    let store = h.store();
    assert!(store.audit(None, 10).await.unwrap().is_empty());
    let recorder = store.recorder();
    for i in 0..5 {
        recorder.record(Record::Audit(entry(i * 1000, "job.submit", &format!("web-{i}")))).await;
    }
    store.flush().await.unwrap();
    let all = store.audit(None, 100).await.unwrap();
    let targets: Vec<&str> = all.iter().map(|r| r.entry.target.as_str()).collect();
    assert_eq!(targets, ["web-4", "web-3", "web-2", "web-1", "web-0"], "newest first");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "ids grow with each entry");
    assert_eq!(all[0].entry, entry(4000, "job.submit", "web-4"), "every field kept");

    let since: Vec<String> =
        store.audit(Some(t(2000)), 100).await.unwrap().into_iter().map(|r| r.entry.target).collect();
    assert_eq!(since, ["web-4", "web-3", "web-2"], "since is inclusive");
    let limited: Vec<String> = store.audit(None, 2).await.unwrap().into_iter().map(|r| r.entry.target).collect();
    assert_eq!(limited, ["web-4", "web-3"], "the newest within the limit");

    // Long text is cut (at a character boundary); a detail too long to cut is dropped.
    let long = AuditEntry {
        actor: "é".repeat(AUDIT_TEXT_MAX),
        detail: Some(format!("\"{}\"", "x".repeat(AUDIT_DETAIL_MAX))),
        ..entry(5000, "token.add", "long")
    };
    assert!(recorder.try_record(Record::Audit(long)));
    store.flush().await.unwrap();
    let newest = store.audit(None, 1).await.unwrap().remove(0).entry;
    assert_eq!(newest.target, "long");
    assert_eq!(newest.actor, "é".repeat(AUDIT_TEXT_MAX / 2), "cut to {AUDIT_TEXT_MAX} bytes");
    assert_eq!(newest.detail, None);

    let store = h.reopen().await;
    assert_eq!(store.audit(None, 100).await.unwrap().len(), 6, "committed, kept across a restart");

    // Retention: older than t(1000) goes (web-0), then all but the newest 3.
    assert_eq!(store.prune_audit(t(1000), 100).await.unwrap(), 1);
    assert_eq!(store.prune_audit(t(0), 3).await.unwrap(), 2);
    let left: Vec<String> = store.audit(None, 100).await.unwrap().into_iter().map(|r| r.entry.target).collect();
    assert_eq!(left, ["long", "web-4", "web-3"]);
    assert_eq!(store.prune_audit(t(0), 3).await.unwrap(), 0, "nothing more to prune");

    // A row damaged under the store is left out; the others are read.
    let mut conn = raw(h).await;
    exec(
        &mut conn,
        "INSERT INTO audit_log (at, actor, role, source, action, target, outcome) \
         VALUES (99999999999999999, 'x', 'admin', 'tcp', 'job.submit', 'bad', 'ok')",
    )
    .await;
    let read: Vec<String> = store.audit(None, 100).await.unwrap().into_iter().map(|r| r.entry.target).collect();
    assert_eq!(read, ["long", "web-4", "web-3"]);
}
