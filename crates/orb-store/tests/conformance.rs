//! Runs the store conformance suite (`orb_store::testkit`) on both backends: SQLite always,
//! PostgreSQL when `ORB_TEST_POSTGRES_URL` names a server (skipped with a message otherwise,
//! required under `CI=true`). Each case is its own test: `sqlite::case` / `postgres::case`.

mod sqlite {
    orb_store::conformance_tests!(sqlite);
}

mod postgres {
    orb_store::conformance_tests!(postgres);
}
