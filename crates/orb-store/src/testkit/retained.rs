//! Conformance cases for retained publications: set, replaced, cleared in order, kept across a
//! restart; a damaged row is left out of the read, never failing it. Run per backend by
//! `conformance_tests!`.

use super::{Harness, exec, raw, t};
use crate::{Retained, RetainedChange};

fn retained(topic: &str, body: &str, at: i64) -> Retained {
    Retained { topic: topic.into(), body: body.into(), sender: "gw-1".into(), at: t(at) }
}

/// Set, replaced, cleared in order; kept across a restart; a damaged row left out.
pub async fn retained_messages_are_set_replaced_cleared_and_kept(h: &Harness) {
    let store = h.store();
    assert!(store.retained().await.unwrap().is_empty());
    store
        .retain(vec![
            RetainedChange::Set(retained("status.gw-1", r#""up""#, 1)),
            RetainedChange::Set(retained("status.gw-2", r#"{"up":true}"#, 2)),
            RetainedChange::Set(retained("status.gw-1", r#""down""#, 3)),
            RetainedChange::Set(retained("config.a", "[1,2]", 4)),
            RetainedChange::Clear("config.a".into()),
            RetainedChange::Clear("never.set".into()),
        ])
        .await
        .unwrap();
    let want = vec![retained("status.gw-1", r#""down""#, 3), retained("status.gw-2", r#"{"up":true}"#, 2)];
    assert_eq!(store.retained().await.unwrap(), want, "in order: the last set wins, a clear forgets");
    let store = h.reopen().await;
    assert_eq!(store.retained().await.unwrap(), want, "committed, kept across a restart");

    // A row damaged under the store is left out; the others are read.
    let mut conn = raw(h).await;
    exec(&mut conn, "INSERT INTO retained (topic, body, sender, at) VALUES ('bad.time', '1', 'x', 99999999999999999)")
        .await;
    assert_eq!(store.retained().await.unwrap(), want);
}
