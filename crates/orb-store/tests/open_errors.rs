//! `open` on a database it cannot reach or create fails fast with `Unavailable` and a message
//! naming the place, and creates a missing SQLite folder and file (owner-only, WAL mode).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orb_store::testkit::TempSqlite;
use orb_store::{StoreError, StoreUrl, open};

#[tokio::test]
async fn postgres_where_nothing_listens_is_unavailable_quickly() {
    let url = StoreUrl::parse("postgres://orb:hunter2@127.0.0.1:1/orb").unwrap();
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&url)).await.expect("open gave up within 10 s");
    let Err(StoreError::Unavailable(message)) = opened else { panic!("expected Unavailable") };
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn sqlite_under_a_file_is_unavailable() {
    let temp = TempSqlite::new();
    let file = temp.dir().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let url = StoreUrl::Sqlite(file.join("orb.db"));
    let Err(StoreError::Unavailable(message)) = open(&url).await else { panic!("expected Unavailable") };
    assert!(message.contains("not-a-folder"), "{message}");
}

#[tokio::test]
async fn sqlite_creates_its_folder_and_a_private_file() {
    let temp = TempSqlite::new();
    let path = temp.dir().join("deep").join("er").join("orb.db");
    let store = open(&StoreUrl::Sqlite(path.clone())).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let device = orb_store::testkit::new_device("dev");
    store.add_device(device).await.unwrap();
    assert!(path.with_file_name("orb.db-wal").exists(), "the database is in WAL mode");
    store.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
